"""Collaborative anomaly detection: a coordinator routes routine sessions to a
small model and novel ones to the LLM (CoorLog / CollaborLog), with a
zero-label mode where a similarity router splits "general" from
"proprietary" sessions (FusionLog / GeneralLog).

>>> from loglm.collab import CollaborativeDetector, sessions_by_block
>>> det = CollaborativeDetector(llm=loglm.LogLM.load(threads=2))
>>> det.fit(train_sessions, train_labels)          # lists of log lines + labels
>>> df = det.predict(test_sessions)                # key, label, score, route, reason
>>> det.stats                                      # LLM calls, tokens, seconds

Pieces:

* session embedding = mean of the (cached) sentence vectors of its lines,
  re-normalised to unit length; lines are masked first (numbers, ids, IPs ->
  ``<*>``) so that lines of one template share a vector;
* coordinator = autoencoder trained in Rust (candle-nn) on the embeddings of
  known sessions; tau = ``percentile`` of its training reconstruction errors;
  a session is "novel" when its error exceeds tau and memory holds no
  near-duplicate of it (cosine >= ``known_similarity``);
* small model = KNN over labelled session embeddings, similarity-weighted vote
  (``score`` = weighted fraction of anomalous neighbours, ``uncertainty`` =
  1 - |2 score - 1|);
* LLM path = a step-by-step prompt showing the most similar known sessions and
  their labels, asking for a JSON verdict with a reason (parsed defensively),
  then classification by choice scoring (``normal`` / ``abnormal``) when the
  LLM offers ``score_choices``;
* feedback = LLM-judged sessions join the memory (as labels, or pseudo-labels
  in zero-label mode) and the coordinator is refit after each ``predict``, so
  repeated novelty stops reaching the LLM.

Any object with ``generate(prompt, max_new_tokens=..., stop=...)`` returning
an object with ``text`` (and optionally ``prompt_tokens`` /
``completion_tokens``) and/or ``score_choices(prompt, choices)`` returning an
object with ``probs`` can serve as the LLM.
"""
from __future__ import annotations

import json
import math
import re
import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from loglm import _loglm
from loglm.embed import SentenceEncoder

__all__ = [
    "CollaborativeDetector",
    "Coordinator",
    "knn_vote",
    "max_similarity",
    "mask_line",
    "parse_verdict",
    "session_embeddings",
    "sessions_by_block",
    "sessions_by_key",
    "sessions_by_window",
    "normalize_labels",
]

BLOCK_RE = re.compile(r"blk_-?\d+")
_MASKS = [
    (re.compile(r"blk_-?\d+"), "<*>"),
    (re.compile(r"(/?\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})(:\d+)?"), "<*>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<*>"),
    (re.compile(r"\b[0-9a-fA-F]{8,}\b"), "<*>"),
    (re.compile(r"(?<![A-Za-z])-?\d+(\.\d+)?(?![A-Za-z])"), "<*>"),
    (re.compile(r"(<\*>[\s:/,._-]*)+<\*>"), "<*>"),
]

Sessions = Union[Mapping[Hashable, Sequence[str]], Sequence[Sequence[str]]]
_LABEL_WORDS = {
    "normal": 0, "benign": 0, "ok": 0, "-": 0, "0": 0, "false": 0,
    "abnormal": 1, "anomaly": 1, "anomalous": 1, "1": 1, "true": 1,
}


# --------------------------------------------------------------------------- sessions


def mask_line(line: str) -> str:
    """Replace variable parts (block ids, IPs, hex, numbers) with ``<*>``."""
    for rx, rep in _MASKS:
        line = rx.sub(rep, line)
    return line.strip()


def sessions_by_block(lines: Iterable[str], pattern: Union[str, "re.Pattern[str]"] = BLOCK_RE) -> "OrderedDict[str, List[str]]":
    """Group lines by the block ids they mention (HDFS ``blk_-?\\d+``); a line
    naming several blocks joins each of them; lines naming none are dropped."""
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    out: "OrderedDict[str, List[str]]" = OrderedDict()
    for line in lines:
        for b in dict.fromkeys(rx.findall(line)):
            out.setdefault(b, []).append(line)
    return out


def sessions_by_window(lines: Sequence[str], size: int = 100, step: Optional[int] = None) -> "OrderedDict[str, List[str]]":
    """Fixed windows of ``size`` lines (the papers' 100), sliding by ``step``
    (default: ``size``, i.e. non-overlapping); keys ``"w0"``, ``"w1"``, ...
    A trailing partial window is dropped (unless it is the only one)."""
    if size < 1 or (step is not None and step < 1):
        raise ValueError("size and step must be >= 1")
    step = step or size
    lines = list(lines)
    out: "OrderedDict[str, List[str]]" = OrderedDict()
    for j, i in enumerate(range(0, max(len(lines) - size, 0) + 1, step)):
        if lines[i : i + size]:
            out[f"w{j}"] = lines[i : i + size]
    return out


def sessions_by_key(lines: Sequence[str], keys: Sequence[Hashable]) -> "OrderedDict[Hashable, List[str]]":
    """Group ``lines`` by a user key per line (same length)."""
    lines, keys = list(lines), list(keys)
    if len(lines) != len(keys):
        raise ValueError(f"length mismatch: {len(lines)} lines, {len(keys)} keys")
    out: "OrderedDict[Hashable, List[str]]" = OrderedDict()
    for line, k in zip(lines, keys):
        out.setdefault(k, []).append(line)
    return out


def _split_sessions(sessions: Sessions, keys: Optional[Sequence[Hashable]]) -> Tuple[List[Hashable], List[List[str]]]:
    if isinstance(sessions, Mapping):
        if keys is not None:
            raise ValueError("keys must not be given with a mapping of sessions")
        ks, ss = list(sessions.keys()), [list(v) for v in sessions.values()]
    else:
        if isinstance(sessions, (str, bytes)):
            raise TypeError("sessions must be a sequence of sessions (lists of lines), not a string")
        ss = [list(s) if not isinstance(s, (str, bytes)) else None for s in sessions]  # type: ignore[misc]
        if any(s is None for s in ss):
            raise TypeError("each session must be a list of lines, not a string")
        ks = list(keys) if keys is not None else list(range(len(ss)))
        if len(ks) != len(ss):
            raise ValueError(f"length mismatch: {len(ss)} sessions, {len(ks)} keys")
    if not ss:
        raise ValueError("no sessions given")
    for k, s in zip(ks, ss):
        if len(s) == 0:
            raise ValueError(f"session {k!r} is empty")
        for line in s:
            if not isinstance(line, str):
                raise TypeError(f"session {k!r} holds a {type(line).__name__}, lines must be strings")
    return ks, ss


def normalize_labels(labels: Iterable[Any]) -> np.ndarray:
    """Map labels to 0 (normal) / 1 (anomalous): bools, 0/1, or the words
    normal/abnormal/anomaly/anomalous/benign/"-" (any case). Others raise ValueError."""
    out = []
    for i, lab in enumerate(labels):
        if isinstance(lab, (bool, np.bool_)):
            out.append(int(lab))
        elif isinstance(lab, (int, np.integer)) and int(lab) in (0, 1):
            out.append(int(lab))
        elif isinstance(lab, (float, np.floating)) and float(lab) in (0.0, 1.0):
            out.append(int(lab))
        elif isinstance(lab, str) and lab.strip().lower() in _LABEL_WORDS:
            out.append(_LABEL_WORDS[lab.strip().lower()])
        else:
            raise ValueError(f"unknown label {lab!r} at position {i}; use normal/abnormal, bools or 0/1")
    return np.asarray(out, dtype=np.float32)


def session_embeddings(
    encoder: SentenceEncoder,
    sessions: Sequence[Sequence[str]],
    *,
    preprocess: Optional[Callable[[str], str]] = mask_line,
    batch_size: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """Mean of the line vectors of each session, re-normalised to unit length
    (float32, ``(len(sessions), dim)``). Distinct (preprocessed) lines are
    encoded once."""
    index: Dict[str, int] = {}
    flat: List[int] = []
    starts: List[int] = []
    for k, s in enumerate(sessions):
        if len(s) == 0:
            raise ValueError(f"session {k} is empty")
        starts.append(len(flat))
        for line in s:
            t = preprocess(line) if preprocess else line
            flat.append(index.setdefault(t, len(index)))
    uniq = list(index.keys())
    vecs = encoder.encode(uniq, batch_size=batch_size, progress=progress)
    sums = np.add.reduceat(vecs[np.asarray(flat)], np.asarray(starts), axis=0)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


# --------------------------------------------------------------------------- Rust pieces


Coordinator = _loglm.Coordinator


def _f32_2d(x: Any, name: str) -> np.ndarray:
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {a.shape}")
    return a


def knn_vote(memory: Any, labels: Any, queries: Any, *, k: int = 10, temperature: float = 0.1) -> Dict[str, np.ndarray]:
    """Similarity-weighted KNN vote (rows are unit vectors). Returns a dict of
    ``score`` (weighted anomalous fraction), ``uncertainty``, ``max_sim``,
    ``neighbours`` (q, k) and ``sims`` (q, k)."""
    m = _f32_2d(memory, "memory")
    q = _f32_2d(queries, "queries")
    lab = np.ascontiguousarray(np.asarray(labels, dtype=np.float32))
    if lab.ndim != 1 or lab.shape[0] != m.shape[0]:
        raise ValueError(f"length mismatch: {m.shape[0]} memory rows, labels of shape {lab.shape}")
    s, u, ms, nb, sims = _loglm.knn_vote(m, lab, q, k, temperature)
    return {"score": s, "uncertainty": u, "max_sim": ms, "neighbours": nb, "sims": sims}


def max_similarity(memory: Any, queries: Any) -> np.ndarray:
    """Cosine similarity of each query to its nearest memory row."""
    return _loglm.max_similarity(_f32_2d(memory, "memory"), _f32_2d(queries, "queries"))


# --------------------------------------------------------------------------- LLM verdicts

_JSON_RE = re.compile(r"\{.*?\}", re.S)


def parse_verdict(text: str) -> Tuple[Optional[int], str]:
    """Defensive parse of an LLM verdict: a JSON object with ``label`` (and
    ``reason``) if one is found, else the words abnormal/anomal(y|ous) or
    normal in the text. Returns (1 anomalous / 0 normal / None, reason)."""
    text = text or ""
    for m in _JSON_RE.finditer(text + ("}" if text.count("{") > text.count("}") else "")):
        try:
            obj = json.loads(m.group(0))
        except (ValueError, TypeError):
            continue
        if isinstance(obj, dict):
            lab = str(obj.get("label", obj.get("verdict", obj.get("answer", "")))).strip().lower()
            reason = str(obj.get("reason", obj.get("explanation", ""))).strip()
            if lab in ("abnormal", "anomaly", "anomalous", "1", "true"):
                return 1, reason
            if lab in ("normal", "0", "false"):
                return 0, reason
    low = text.lower()
    reason_m = re.search(r'"reason"\s*:\s*"([^"]*)', text)
    reason = reason_m.group(1).strip() if reason_m else text.strip()[:300]
    lab_m = re.search(r'"label"\s*:\s*"?\s*(abnormal|anomal\w*|normal)', low)
    if lab_m:
        return (0 if lab_m.group(1) == "normal" else 1), reason
    a = re.search(r"\b(abnormal|anomal\w*)\b", low)
    n = re.search(r"\bnormal\b", low)
    if a and (not n or a.start() <= n.start()):
        return 1, reason
    if n:
        return 0, reason
    return None, reason


def _session_text(lines: Sequence[str], max_lines: int) -> str:
    """Distinct lines in first-seen order with repeat counts, at most ``max_lines``."""
    counts = Counter(lines)
    out = []
    for line in dict.fromkeys(lines):
        out.append(f"{line} (x{counts[line]})" if counts[line] > 1 else line)
    if len(out) > max_lines:
        extra = len(out) - max_lines
        out = out[:max_lines] + [f"... ({extra} more distinct lines)"]
    return "\n".join(out)


# --------------------------------------------------------------------------- detector

_ORIGIN = {"train": 0, "llm": 1}


class CollaborativeDetector:
    """Small model for known sessions, LLM for novel ones, with feedback.

    Parameters
    ----------
    encoder: a :class:`~loglm.embed.SentenceEncoder` (default: all-MiniLM-L6-v2, loaded lazily).
    llm: any object with ``score_choices`` and/or ``generate`` (e.g. ``loglm.LogLM``); ``None``
        keeps everything on the small model (novel sessions are then marked ``small-fallback``).
    mode: ``"supervised"`` (autoencoder coordinator) or ``"zero_label"`` (similarity router:
        novel when the nearest memory session has cosine < ``similarity_threshold``).
    k, temperature: KNN neighbours and softmax temperature of the similarity weights.
    hidden, percentile, epochs, batch_size, lr, seed: autoencoder widths, tau percentile and training.
    known_similarity: a session with a memory neighbour at least this similar is never novel.
    uncertainty_threshold: if set, known sessions whose KNN uncertainty exceeds it also go to the LLM.
    llm_weight: 1.0 (default) takes the LLM's verdict on novel sessions as is; below 1 the score is
        ``llm_weight * p_llm + (1 - llm_weight) * knn_score``.
    feedback: add LLM verdicts to memory and refit the coordinator (``refit_epochs``) after predict.
    reasoning: ask the LLM for a JSON verdict with a reason (one generation) before choice scoring;
        ``False`` scores the choices directly (faster).
    n_examples, max_prompt_lines, max_new_tokens: prompt size and generation length.
    preprocess: per-line text normalisation before embedding (default :func:`mask_line`; ``None`` = raw).
    """

    def __init__(
        self,
        encoder: Optional[SentenceEncoder] = None,
        llm: Any = None,
        *,
        mode: str = "supervised",
        k: int = 10,
        temperature: float = 0.1,
        hidden: Sequence[int] = (64, 16),
        percentile: float = 95.0,
        epochs: int = 30,
        batch_size: int = 64,
        lr: float = 1e-3,
        seed: int = 0,
        known_similarity: float = 0.999,
        similarity_threshold: float = 0.9,
        uncertainty_threshold: Optional[float] = None,
        llm_weight: float = 1.0,
        feedback: bool = True,
        refit_epochs: int = 10,
        reasoning: bool = True,
        n_examples: int = 3,
        max_prompt_lines: int = 15,
        max_new_tokens: int = 96,
        preprocess: Optional[Callable[[str], str]] = mask_line,
        progress: bool = False,
    ) -> None:
        if not 0.0 <= llm_weight <= 1.0:
            raise ValueError("llm_weight must lie in [0, 1]")
        if mode not in ("supervised", "zero_label"):
            raise ValueError(f"mode must be 'supervised' or 'zero_label', got {mode!r}")
        if k < 1:
            raise ValueError("k must be >= 1")
        if not 0.0 <= percentile <= 100.0:
            raise ValueError("percentile must lie in [0, 100]")
        self._encoder = encoder
        self.llm = llm
        self.params: Dict[str, Any] = dict(
            mode=mode, k=int(k), temperature=float(temperature), hidden=[int(h) for h in hidden],
            percentile=float(percentile), epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
            seed=int(seed), known_similarity=float(known_similarity),
            similarity_threshold=float(similarity_threshold),
            uncertainty_threshold=None if uncertainty_threshold is None else float(uncertainty_threshold),
            llm_weight=float(llm_weight),
            feedback=bool(feedback), refit_epochs=int(refit_epochs), reasoning=bool(reasoning),
            n_examples=int(n_examples), max_prompt_lines=int(max_prompt_lines),
            max_new_tokens=int(max_new_tokens),
        )
        self.preprocess = preprocess
        self.progress = progress
        self.memory: Optional[np.ndarray] = None
        self.memory_labels: Optional[np.ndarray] = None
        self.memory_origin: Optional[np.ndarray] = None
        self.memory_text: List[str] = []
        self.coordinator: Optional[Any] = None
        self.train_losses: List[float] = []
        self.stats: Dict[str, float] = self._zero_stats()

    # ----------------------------------------------------------------- helpers

    @staticmethod
    def _zero_stats() -> Dict[str, float]:
        return {
            "sessions": 0, "routed_llm": 0, "llm_calls": 0, "llm_prompt_tokens": 0,
            "llm_completion_tokens": 0, "llm_seconds": 0.0, "small_seconds": 0.0,
            "embed_seconds": 0.0, "feedback_added": 0, "feedback_hits": 0, "refits": 0,
        }

    @property
    def encoder(self) -> SentenceEncoder:
        """The sentence encoder (loaded on first use)."""
        if self._encoder is None:
            self._encoder = SentenceEncoder.load()
        return self._encoder

    @property
    def fitted(self) -> bool:
        return self.memory is not None

    def _check_fitted(self) -> None:
        if self.memory is None:
            raise RuntimeError("the detector is not fitted; call fit() first")

    def embed(self, sessions: Sequence[Sequence[str]]) -> np.ndarray:
        """Session embeddings (see :func:`session_embeddings`)."""
        t0 = time.perf_counter()
        out = session_embeddings(self.encoder, sessions, preprocess=self.preprocess, progress=self.progress)
        self.stats["embed_seconds"] += time.perf_counter() - t0
        return out

    def _prepare(self, sessions: Optional[Sessions], keys: Optional[Sequence[Hashable]], embeddings: Any):
        if sessions is None and embeddings is None:
            raise ValueError("give sessions or embeddings")
        if sessions is not None:
            ks, ss = _split_sessions(sessions, keys)
        else:
            ks, ss = None, None
        if embeddings is not None:
            x = _f32_2d(embeddings, "embeddings")
            if ss is not None and len(ss) != x.shape[0]:
                raise ValueError(f"length mismatch: {len(ss)} sessions, {x.shape[0]} embeddings")
            if ks is None:
                ks = list(keys) if keys is not None else list(range(x.shape[0]))
                if len(ks) != x.shape[0]:
                    raise ValueError(f"length mismatch: {x.shape[0]} embeddings, {len(ks)} keys")
        else:
            x = self.embed(ss)  # type: ignore[arg-type]
        return ks, ss, x

    def _summary(self, lines: Optional[Sequence[str]]) -> str:
        if not lines:
            return ""
        pre = [self.preprocess(l) if self.preprocess else l for l in lines]
        return _session_text(pre, self.params["max_prompt_lines"])

    # ----------------------------------------------------------------- fit

    def fit(
        self,
        sessions: Optional[Sessions] = None,
        labels: Optional[Iterable[Any]] = None,
        *,
        keys: Optional[Sequence[Hashable]] = None,
        embeddings: Any = None,
    ) -> "CollaborativeDetector":
        """Store labelled sessions as the small model's memory and train the
        coordinator on them. ``labels`` follow :func:`normalize_labels`; in
        zero-label mode they are the *source* system's labels."""
        if labels is None:
            raise ValueError("fit() needs labels (of the source system in zero-label mode)")
        ks, ss, x = self._prepare(sessions, keys, embeddings)
        y = normalize_labels(labels)
        if len(y) != x.shape[0]:
            raise ValueError(f"length mismatch: {x.shape[0]} sessions, {len(y)} labels")
        self.memory = x
        self.memory_labels = y
        self.memory_origin = np.zeros(len(y), dtype=np.int8)
        self.memory_text = [self._summary(s) for s in ss] if ss is not None else [""] * len(y)
        self.stats = self._zero_stats()
        p = self.params
        if p["mode"] == "supervised":
            self.coordinator = _loglm.Coordinator(x.shape[1], p["hidden"], p["percentile"], p["seed"])
            self.train_losses = list(self.coordinator.fit(x, p["epochs"], p["batch_size"], p["lr"]))
        else:
            self.coordinator = None
            self.train_losses = []
        return self

    # ----------------------------------------------------------------- routing

    def route(
        self, sessions: Optional[Sessions] = None, *, keys: Optional[Sequence[Hashable]] = None, embeddings: Any = None
    ) -> np.ndarray:
        """``"known"`` or ``"novel"`` per session (no LLM call, no feedback)."""
        self._check_fitted()
        _, _, x = self._prepare(sessions, keys, embeddings)
        novel, _ = self._novel(x, max_similarity(self.memory, x))
        return np.where(novel, "novel", "known")

    def _novel(self, x: np.ndarray, max_sim: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        p = self.params
        if p["mode"] == "supervised":
            err = np.asarray(self.coordinator.errors(x))
            novel = err > self.coordinator.tau
        else:
            err = 1.0 - max_sim
            novel = max_sim < p["similarity_threshold"]
        novel &= max_sim < p["known_similarity"]
        return novel, err

    # ----------------------------------------------------------------- LLM

    def build_prompt(self, lines: Optional[Sequence[str]], neighbours: Sequence[Tuple[str, int, float]]) -> str:
        """The step-by-step prompt: similar known sessions with labels, then the session."""
        parts = [
            "You are an expert in log analysis. Decide whether a log session is normal or abnormal.",
            "",
        ]
        if neighbours:
            parts.append("Known sessions most similar to it, with their labels:")
            for i, (text, lab, sim) in enumerate(neighbours, 1):
                parts.append(f"Example {i} (similarity {sim:.2f}, label: {'abnormal' if lab else 'normal'}):")
                parts.append(text or "(lines not available)")
                parts.append("")
        parts.append("Session to classify:")
        parts.append(self._summary(lines) if lines else "(lines not available)")
        parts.append("")
        parts.append(
            "Think step by step: compare the session with the examples, and look for errors, exceptions, "
            "failures, or steps that are missing or repeated. Then answer with JSON only: "
            '{"reason": "<one sentence>", "label": "normal" or "abnormal"}'
        )
        return "\n".join(parts)

    def _ask_llm(self, prompt: str) -> Tuple[int, float, str]:
        llm, p = self.llm, self.params
        t0 = time.perf_counter()
        reason, label, score = "", None, None
        chat = [{"role": "user", "content": prompt}]
        if p["reasoning"] and callable(getattr(llm, "generate", None)):
            res = llm.generate(chat, max_new_tokens=p["max_new_tokens"], stop=["}"])
            text = getattr(res, "text", str(res))
            self.stats["llm_prompt_tokens"] += int(getattr(res, "prompt_tokens", 0) or 0)
            self.stats["llm_completion_tokens"] += int(getattr(res, "completion_tokens", 0) or 0)
            label, reason = parse_verdict(text if "}" in text else text + "}")
            if label is not None:
                score = float(label)
        if callable(getattr(llm, "score_choices", None)):
            q = prompt
            if reason:
                q += f"\n\nAnalysis: {reason}"
            q += "\n\nAnswer with one word, normal or abnormal."
            cs = llm.score_choices([{"role": "user", "content": q}], ["normal", "abnormal"])
            probs = list(getattr(cs, "probs"))
            score = float(probs[1])
            label = int(score >= 0.5)
            n_tok = getattr(cs, "prompt_tokens", None)
            if n_tok is None and callable(getattr(llm, "encode_prompt", None)):
                try:
                    n_tok = len(llm.encode_prompt([{"role": "user", "content": q}]))
                except Exception:  # token counting must never break a verdict
                    n_tok = 0
            self.stats["llm_prompt_tokens"] += int(n_tok or 0)
            if not reason:
                reason = f"LLM choice scoring: p(abnormal) = {score:.3f}"
        self.stats["llm_calls"] += 1
        self.stats["llm_seconds"] += time.perf_counter() - t0
        if label is None:
            return 0, 0.5, f"unparseable LLM verdict, defaulting to normal: {reason[:200]}"
        return int(label), float(score if score is not None else label), reason or "(no reason given)"

    # ----------------------------------------------------------------- predict

    def predict(
        self, sessions: Optional[Sessions] = None, *, keys: Optional[Sequence[Hashable]] = None, embeddings: Any = None
    ):
        """Label sessions. Returns a pandas DataFrame with columns ``session``,
        ``label`` ("normal"/"abnormal"), ``score`` (probability-like, 1 =
        anomalous), ``route`` (``small``, ``llm``, ``small-feedback`` when an
        earlier LLM verdict on a near-identical session was reused,
        ``small-fallback`` when novel but no LLM is set), ``novelty`` and ``reason``."""
        import pandas as pd

        self._check_fitted()
        ks, ss, x = self._prepare(sessions, keys, embeddings)
        p = self.params
        t0 = time.perf_counter()
        votes = knn_vote(self.memory, self.memory_labels, x, k=p["k"], temperature=p["temperature"])
        novel, err = self._novel(x, votes["max_sim"])
        if p["uncertainty_threshold"] is not None:
            novel |= votes["uncertainty"] > p["uncertainty_threshold"]
        self.stats["small_seconds"] += time.perf_counter() - t0
        n = x.shape[0]
        labels = (votes["score"] >= 0.5).astype(int)
        scores = votes["score"].astype(float).copy()
        routes = np.array(["small"] * n, dtype=object)
        reasons = [
            f"{len(votes['neighbours'][i])} nearest known sessions (max similarity {votes['max_sim'][i]:.3f}) "
            f"vote {votes['score'][i]:.2f} anomalous"
            for i in range(n)
        ]
        idx = np.flatnonzero(novel)
        new_rows: List[int] = []
        it: Iterable[int] = idx
        if self.progress and self.llm is not None and len(idx):
            from loglm.progress import progress_bar

            it = progress_bar(True, len(idx), "LLM", "session", iterable=idx)
        for i in it:
            if self.llm is None:
                routes[i] = "small-fallback"
                reasons[i] = "novel session but no LLM configured; " + reasons[i]
                continue
            if p["feedback"] and new_rows:
                fb = x[new_rows]
                sims = fb @ x[i]
                j = int(np.argmax(sims))
                thr = p["known_similarity"] if p["mode"] == "supervised" else p["similarity_threshold"]
                if sims[j] >= thr:
                    r = new_rows[j]
                    labels[i], scores[i] = labels[r], scores[r]
                    routes[i] = "small-feedback"
                    reasons[i] = f"near-identical to a session the LLM judged (similarity {sims[j]:.3f}): {reasons[r]}"
                    self.stats["feedback_hits"] += 1
                    continue
            nb = votes["neighbours"][i][: p["n_examples"]]
            examples = [
                (self.memory_text[j], int(self.memory_labels[j] >= 0.5), float(s))
                for j, s in zip(nb, votes["sims"][i][: p["n_examples"]])
            ]
            prompt = self.build_prompt(ss[i] if ss is not None else None, examples)
            lab, sc, why = self._ask_llm(prompt)
            w = p["llm_weight"]
            if w < 1.0:
                knn = float(votes["score"][i])
                sc = w * sc + (1.0 - w) * knn
                lab = int(sc >= 0.5)
                why = f"{why} [LLM fused with the KNN vote {knn:.2f} at weight {w:g}]"
            labels[i], scores[i], reasons[i] = lab, sc, why
            routes[i] = "llm"
            self.stats["routed_llm"] += 1
            new_rows.append(int(i))
        if p["feedback"] and self.llm is not None and new_rows:
            self._add_to_memory(
                x[new_rows], labels[new_rows].astype(np.float32),
                [self._summary(ss[i]) if ss is not None else "" for i in new_rows],
            )
        self.stats["sessions"] += n
        return pd.DataFrame(
            {
                "session": ks,
                "label": np.where(labels == 1, "abnormal", "normal"),
                "score": scores,
                "route": routes.astype(str),
                "novelty": np.asarray(err, dtype=float),
                "reason": reasons,
            }
        )

    def _add_to_memory(self, x: np.ndarray, y: np.ndarray, texts: List[str]) -> None:
        self.memory = np.concatenate([self.memory, x.astype(np.float32)], axis=0)
        self.memory_labels = np.concatenate([self.memory_labels, y])
        self.memory_origin = np.concatenate([self.memory_origin, np.full(len(y), _ORIGIN["llm"], dtype=np.int8)])
        self.memory_text.extend(texts)
        self.stats["feedback_added"] += len(y)
        p = self.params
        if p["mode"] == "supervised" and p["refit_epochs"] > 0:
            self.coordinator.fit(self.memory, p["refit_epochs"], p["batch_size"], p["lr"])
            self.stats["refits"] += 1

    def add_feedback(
        self, sessions: Optional[Sessions] = None, labels: Optional[Iterable[Any]] = None, *,
        keys: Optional[Sequence[Hashable]] = None, embeddings: Any = None,
    ) -> None:
        """Add labelled sessions (e.g. operator verdicts) to memory and refit the coordinator."""
        self._check_fitted()
        if labels is None:
            raise ValueError("add_feedback() needs labels")
        _, ss, x = self._prepare(sessions, keys, embeddings)
        y = normalize_labels(labels)
        if len(y) != x.shape[0]:
            raise ValueError(f"length mismatch: {x.shape[0]} sessions, {len(y)} labels")
        self._add_to_memory(x, y, [self._summary(s) for s in ss] if ss is not None else [""] * len(y))

    # ----------------------------------------------------------------- save / load

    def save(self, path: Union[str, Path]) -> None:
        """Write the fitted detector to folder ``path``: ``config.json``,
        ``memory.npz`` (numeric arrays only) and ``coordinator.safetensors``.
        The encoder and the LLM are not saved (the encoder's folder is recorded)."""
        self._check_fitted()
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        cfg = {
            "format": "loglm.collab/1",
            "params": self.params,
            "preprocess": "mask_line" if self.preprocess is mask_line else (None if self.preprocess is None else "custom"),
            "encoder_path": str(self._encoder.path) if self._encoder is not None else None,
            "memory_text": self.memory_text,
            "train_losses": self.train_losses,
            "stats": self.stats,
        }
        (d / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
        np.savez(d / "memory.npz", embeddings=self.memory, labels=self.memory_labels, origin=self.memory_origin)
        if self.coordinator is not None:
            self.coordinator.save(str(d / "coordinator.safetensors"))

    @classmethod
    def load(
        cls, path: Union[str, Path], *, encoder: Optional[SentenceEncoder] = None, llm: Any = None,
        preprocess: Optional[Callable[[str], str]] = None,
    ) -> "CollaborativeDetector":
        """Load a detector written by :meth:`save`. ``encoder`` defaults to the
        recorded folder (loaded lazily); a custom ``preprocess`` must be passed again."""
        d = Path(path)
        if not (d / "config.json").is_file():
            raise FileNotFoundError(f"{d / 'config.json'} not found")
        cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
        if cfg.get("format") != "loglm.collab/1":
            raise ValueError(f"{d}: not a saved CollaborativeDetector")
        pre = cfg.get("preprocess")
        if preprocess is None:
            if pre == "custom":
                raise ValueError("the detector was saved with a custom preprocess; pass it to load()")
            preprocess = mask_line if pre == "mask_line" else None
        if encoder is None and cfg.get("encoder_path") and Path(cfg["encoder_path"]).is_dir():
            encoder = SentenceEncoder.load(cfg["encoder_path"])
        det = cls(encoder, llm, preprocess=preprocess, **cfg["params"])
        with np.load(d / "memory.npz", allow_pickle=False) as z:
            det.memory = np.ascontiguousarray(z["embeddings"], dtype=np.float32)
            det.memory_labels = np.ascontiguousarray(z["labels"], dtype=np.float32)
            det.memory_origin = np.ascontiguousarray(z["origin"], dtype=np.int8)
        det.memory_text = list(cfg.get("memory_text", [""] * len(det.memory_labels)))
        det.train_losses = list(cfg.get("train_losses", []))
        det.stats.update(cfg.get("stats", {}))
        if det.params["mode"] == "supervised":
            det.coordinator = _loglm.Coordinator.load(str(d / "coordinator.safetensors"), det.params["seed"])
        return det

    def __repr__(self) -> str:
        n = 0 if self.memory is None else len(self.memory)
        return f"CollaborativeDetector(mode={self.params['mode']!r}, memory={n}, llm={type(self.llm).__name__})"
