"""Collaborative anomaly detection: a coordinator routes routine sessions to a
small model and novel ones to the LLM (CoorLog / CollaborLog), with a
zero-label mode where a similarity router splits "general" from
"proprietary" sessions (FusionLog / GeneralLog).

>>> from loglm.collab import CollaborativeDetector, sessions_by_block
>>> det = CollaborativeDetector(llm=loglm.LogLM.load(threads=2))
>>> det.fit(train_sessions, train_labels)          # lists of log lines + labels
>>> det.predict(test_sessions)                     # 0/1 labels, nothing learnt
>>> df = det.report(test_sessions)                 # SessionId, Label, Score, Route, Reason
>>> det.partial_fit(new_sessions)                  # LLM verdicts join the memory
>>> det.stats                                      # LLM calls, tokens, seconds

Pieces:

* session embedding = mean of the (cached) sentence vectors of its lines,
  re-normalised to unit length; lines are masked first by :func:`mask_line` (the
  template tree's masker: tokens holding digits -- numbers, ids, IPs -- become ``<*>``)
  so that lines of one template share a vector;
* coordinator = autoencoder trained in Rust (candle-nn) on the embeddings of
  known sessions; tau = ``percentile`` of its training reconstruction errors;
  a session is "novel" when its error exceeds tau and memory holds no
  near-duplicate of it (cosine >= ``known_similarity``);
* small model = KNN over labelled session embeddings, similarity-weighted vote
  (``score`` = weighted fraction of anomalous neighbours, ``uncertainty`` =
  1 - |2 score - 1|);
* LLM path = a step-by-step prompt showing the most similar known sessions and
  their labels, asking for a JSON verdict with a reason (by structured output,
  ``json_schema`` = :func:`loglm.answers.verdict_schema`, when the LLM's
  ``generate`` takes one, as :class:`loglm.LogLM`'s does; parsed defensively),
  then classification by choice scoring (``normal`` / ``abnormal``) when the
  LLM offers ``score_choices``;
* feedback = LLM-judged sessions join the memory (as labels, or pseudo-labels
  in zero-label mode) and the coordinator is refit when asked
  (``partial_fit(X)`` or ``report(X, feedback=True)``), so repeated novelty
  stops reaching the LLM; ``predict`` never changes the detector.

Any object with ``generate(prompt, max_new_tokens=..., stop=...)`` returning
an object with ``text`` (and optionally ``prompt_tokens`` /
``completion_tokens``) and/or ``score_choices(prompt, choices)`` returning an
object with ``probs`` can serve as the LLM.
"""
from __future__ import annotations

import inspect
import json
import math
import re
import time
import zipfile
from collections import Counter, OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from loglm import _loglm
from loglm.embed import SentenceEncoder
from loglm.errors import (InvalidInputError, InvalidTypeError, LoglmError, ModelLoadError, ModelNotFoundError,
                          NotFittedError)

if TYPE_CHECKING:
    import pandas as pd

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
    "sessions_by_time",
    "sessions_by_window",
    "normalize_labels",
]

BLOCK_RE = re.compile(r"blk_-?\d+")
Sessions = Union[Mapping[Hashable, Sequence[str]], Sequence[Sequence[str]]]
_LABEL_WORDS = {
    "normal": 0, "benign": 0, "ok": 0, "-": 0, "0": 0, "false": 0,
    "abnormal": 1, "anomaly": 1, "anomalous": 1, "1": 1, "true": 1,
}


# --------------------------------------------------------------------------- sessions


#: ``mask_line(line)``: the line with its variable parts (numbers, hex, IPs with ports,
#: block ids, paths and ids holding digits) replaced by ``<*>`` (``key=value`` keeps its
#: key), a run of masked tokens as one ``<*>``, whitespace collapsed; the default
#: ``preprocess`` of the detector. The template tree's own masker
#: (``src/parse/masking.rs``), the one masker in loglm; a non-``str`` raises
#: :class:`loglm.InvalidTypeError`.
mask_line = _loglm.mask_line


def sessions_by_block(lines: Iterable[str], pattern: Union[str, "re.Pattern[str]"] = BLOCK_RE) -> "OrderedDict[str, List[str]]":
    """Group lines by the block ids they mention (HDFS ``blk_-?\\d+``); a line
    naming several blocks joins each of them; lines naming none are dropped."""
    if isinstance(lines, (str, bytes)):
        raise InvalidTypeError("lines must be a list of log lines, not one str")
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
        raise InvalidInputError("size and step must be >= 1")
    step = step or size
    lines = list(lines)
    out: "OrderedDict[str, List[str]]" = OrderedDict()
    for j, i in enumerate(range(0, max(len(lines) - size, 0) + 1, step)):
        if lines[i : i + size]:
            out[f"w{j}"] = lines[i : i + size]
    return out


def sessions_by_time(lines: Any, timestamps: Optional[Sequence[Any]] = None, window: Any = "5min",
                     step: Any = None) -> "OrderedDict[Any, List[str]]":
    """Sessions by time window (next to the count windows of :func:`sessions_by_window`):
    ``{window start (pandas.Timestamp): lines}`` in time order, empty windows left out.

    ``lines`` is a list of lines with ``timestamps`` (datetimes or timestamp strings,
    parsed by :func:`loglm.inputs.parse_datetimes`), or a DataFrame from ``parse`` /
    ``detect_anomalies`` with a ``log_format`` naming the time (its ``Datetime`` and
    ``Content`` columns). ``window`` and ``step`` are pandas durations (``"5min"``,
    ``"1h"``, a ``timedelta``); ``step`` (default: ``window``) below ``window`` makes
    overlapping, sliding windows. A line whose time is missing or not understood belongs
    with the line before it (continuation lines); lines before the first timestamp join
    the first window. No timestamp at all raises :class:`loglm.InvalidInputError`.
    """
    import pandas as pd

    from loglm.inputs import parse_datetimes

    if timestamps is None:
        if not (hasattr(lines, "columns") and "Datetime" in lines.columns and "Content" in lines.columns):
            raise InvalidInputError("give timestamps, or a DataFrame with Datetime and Content columns "
                                    "(parse / detect_anomalies with a log_format that names the time)")
        ts = pd.Series(pd.to_datetime(lines["Datetime"], errors="coerce")).reset_index(drop=True)
        texts = [str(x) for x in lines["Content"].tolist()]
    else:
        texts = [str(x) for x in (lines.tolist() if hasattr(lines, "tolist") else lines)]
        vals = list(timestamps.tolist() if hasattr(timestamps, "tolist") else timestamps)
        if len(vals) != len(texts):
            raise InvalidInputError(f"length mismatch: {len(texts)} lines, {len(vals)} timestamps")
        if vals and all(isinstance(v, str) for v in vals):
            ts = parse_datetimes(vals).reset_index(drop=True)
        else:
            ts = pd.Series(pd.to_datetime(pd.Series(vals, dtype=object), errors="coerce")).reset_index(drop=True)
    if not texts:
        raise InvalidInputError("no lines given")
    try:
        win = pd.Timedelta(window)
        stp = pd.Timedelta(step) if step is not None else win
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"window / step must be durations such as '5min': {e}") from None
    if win <= pd.Timedelta(0) or stp <= pd.Timedelta(0):
        raise InvalidInputError("window and step must be positive")
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    filled = ts.ffill().bfill()
    if filled.isna().all():
        raise InvalidInputError("no timestamp could be read")
    ns = filled.astype("datetime64[ns]").astype("int64").to_numpy()
    w, st = int(win.value), int(stp.value)
    origin = (int(ns.min()) // st) * st
    buckets: Dict[int, List[str]] = {}
    for t, text in zip(ns.tolist(), texts):
        rel = t - origin
        k_lo = max((rel - w) // st + 1, 0)
        for k in range(int(k_lo), int(rel // st) + 1):
            buckets.setdefault(k, []).append(text)
    out: "OrderedDict[Any, List[str]]" = OrderedDict()
    for k in sorted(buckets):
        out[pd.Timestamp(origin + k * st)] = buckets[k]
    return out


def sessions_by_key(lines: Sequence[str], keys: Sequence[Hashable]) -> "OrderedDict[Hashable, List[str]]":
    """Group ``lines`` by a user key per line (same length)."""
    lines, keys = list(lines), list(keys)
    if len(lines) != len(keys):
        raise InvalidInputError(f"length mismatch: {len(lines)} lines, {len(keys)} keys")
    out: "OrderedDict[Hashable, List[str]]" = OrderedDict()
    for line, k in zip(lines, keys):
        out.setdefault(k, []).append(line)
    return out


def _split_sessions(sessions: Sessions, keys: Optional[Sequence[Hashable]]) -> Tuple[List[Hashable], List[List[str]]]:
    if isinstance(sessions, Mapping):
        if keys is not None:
            raise InvalidInputError("keys must not be given with a mapping of sessions")
        ks, ss = list(sessions.keys()), [list(v) for v in sessions.values()]
    else:
        if isinstance(sessions, (str, bytes)):
            raise InvalidTypeError("sessions must be a sequence of sessions (lists of lines), not a string")
        given = list(sessions)
        if any(isinstance(s, (str, bytes)) for s in given):
            raise InvalidTypeError("each session must be a list of lines, not a string")
        ss = [list(s) for s in given]
        ks = list(keys) if keys is not None else list(range(len(ss)))
        if len(ks) != len(ss):
            raise InvalidInputError(f"length mismatch: {len(ss)} sessions, {len(ks)} keys")
    if not ss:
        raise InvalidInputError("no sessions given")
    for k, s in zip(ks, ss):
        if len(s) == 0:
            raise InvalidInputError(f"session {k!r} is empty")
        for line in s:
            if not isinstance(line, str):
                raise InvalidTypeError(f"session {k!r} holds a {type(line).__name__}, lines must be strings")
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
            raise InvalidInputError(f"unknown label {lab!r} at position {i}; use normal/abnormal, bools or 0/1")
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
            raise InvalidInputError(f"session {k} is empty")
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

#: Default weight of the LLM's probability in a supervised detector's verdict on a novel
#: session (see ``CollaborativeDetector``'s ``llm_weight``): below 0.5, so that a unanimous
#: KNN vote (0 or 1) decides whatever the LLM says.
SUPERVISED_LLM_WEIGHT = 0.4


def _f32_2d(x: Any, name: str) -> np.ndarray:
    raw = np.asarray(x)
    if raw.dtype.kind == "c":
        raise InvalidInputError(f"Complex data not supported: {name} must be real numbers")
    try:
        a = np.ascontiguousarray(raw.astype(np.float32))
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{name} must be numbers: {e}") from None
    if a.ndim != 2:
        raise InvalidInputError(f"Expected 2D array, got {a.ndim}D array instead: {name} must be one row per "
                                "session. Reshape your data (e.g. array.reshape(1, -1) for one session)")
    if a.shape[0] == 0:
        raise InvalidInputError(f"Found array with 0 sample(s) (shape={a.shape}) while a minimum of 1 is required.")
    if a.shape[1] == 0:
        raise InvalidInputError(f"Found array with 0 feature(s) (shape={a.shape}) while a minimum of 1 is required.")
    if not np.isfinite(a).all():
        raise InvalidInputError(f"{name} contain NaN or inf")
    return a


def knn_vote(memory: Any, labels: Any, queries: Any, *, k: int = 10, temperature: float = 0.1) -> Dict[str, np.ndarray]:
    """Similarity-weighted KNN vote (rows are unit vectors). Returns a dict of
    ``score`` (weighted anomalous fraction), ``uncertainty``, ``max_sim``,
    ``neighbours`` (q, k) and ``sims`` (q, k)."""
    m = _f32_2d(memory, "memory")
    q = _f32_2d(queries, "queries")
    lab = np.ascontiguousarray(np.asarray(labels, dtype=np.float32))
    if lab.ndim != 1 or lab.shape[0] != m.shape[0]:
        raise InvalidInputError(f"length mismatch: {m.shape[0]} memory rows, labels of shape {lab.shape}")
    s, u, ms, nb, sims = _loglm.knn_vote(m, lab, q, k, temperature)
    return {"score": s, "uncertainty": u, "max_sim": ms, "neighbours": nb, "sims": sims}


def max_similarity(memory: Any, queries: Any) -> np.ndarray:
    """Cosine similarity of each query to its nearest memory row."""
    return _loglm.max_similarity(_f32_2d(memory, "memory"), _f32_2d(queries, "queries"))


# --------------------------------------------------------------------------- LLM verdicts

from loglm.answers import parse_verdict, verdict_schema  # noqa: E402  (the one verdict parser: JSON label/reason, then words)


def _takes_json_schema(fn: Any) -> bool:
    """Whether an LLM's ``generate`` offers structured output (a ``json_schema`` argument)."""
    try:
        return "json_schema" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


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
    """Small model for known sessions, LLM for novel ones, with feedback -- a
    scikit-learn style classifier (``get_params`` / ``set_params``, ``clone``, ``fit(X, y)``,
    ``predict``, ``predict_proba``, ``decision_function``, ``score``, ``partial_fit``).

    ``X`` is a list of sessions (each a list of log lines), a mapping ``{key: lines}``,
    or a 2-D float array of session embeddings. ``y`` follows :func:`normalize_labels`
    (1 = abnormal). :meth:`predict` returns 0/1 labels and changes nothing in the
    detector; :meth:`report` gives the per-session DataFrame (SessionId, Label, Score,
    Route, Novelty, Reason); LLM verdicts join the memory only through :meth:`partial_fit`
    (or ``report(..., feedback=True)``).

    Parameters
    ----------
    encoder: a :class:`~loglm.embed.SentenceEncoder` (default ``None``: all-MiniLM-L6-v2,
        loaded on first use).
    llm: any object with ``score_choices`` and/or ``generate`` (e.g. ``loglm.LogLM``); ``None``
        keeps everything on the small model (novel sessions are then marked ``small-fallback``).
    mode: ``"supervised"`` (autoencoder coordinator) or ``"zero_label"`` (similarity router:
        novel when the nearest memory session has cosine < ``similarity_threshold``).
    k, temperature: KNN neighbours and softmax temperature of the similarity weights.
    hidden, percentile, epochs, batch_size, lr, seed: autoencoder widths, tau percentile and training.
    known_similarity: a session with a memory neighbour at least this similar is never novel.
    uncertainty_threshold: if set, known sessions whose KNN uncertainty exceeds it also go to the LLM.
    llm_weight: the score of a novel session is ``llm_weight * p_llm + (1 - llm_weight) * knn_score``.
        ``None`` (default): 0.4 in ``"supervised"`` mode, where the memory holds labelled sessions
        of the same system, so a unanimous KNN vote can never be overturned and the LLM decides
        only where the neighbours disagree; 1.0 in ``"zero_label"`` mode, where the memory comes
        from another system and the LLM's verdict is taken as is.
    llm_clears: whether the LLM may clear a novel session the KNN vote flags (fused score
        below 0.5 where the KNN score is >= 0.5). ``None`` (default): no in ``"supervised"``
        mode -- the LLM is the second reviewer that catches anomalies the neighbours miss,
        and a flagged session keeps at least its KNN score, so the LLM's part never loses an
        anomaly the small model found (on HDFS_100k the 135M model cleared one the KNN had
        right); yes in ``"zero_label"`` mode.
    feedback: within one call, reuse an LLM verdict for near-identical novel sessions; and let
        :meth:`partial_fit` add LLM verdicts to memory (refitting the coordinator with
        ``refit_epochs``).
    reasoning: ask the LLM for a JSON verdict with a reason (one generation) before choice scoring;
        ``False`` scores the choices directly (faster).
    llm_verdict: how the LLM judges a novel session. ``"session"``: one prompt with the
        session's distinct lines and its labelled neighbours (``reasoning``, ``n_examples``
        apply). ``"lines"``: the LLM's own line-level anomaly score (``llm.anomaly_scores``,
        the anomaly-detection capability of a :class:`loglm.LogLM`) of each distinct line, the
        session's score being the highest; a line seen in an earlier session of the same
        call is not scored again. Needs the sessions' lines, not only their embeddings.
        ``None`` (default): ``"lines"`` in ``"zero_label"`` mode when the LLM has
        ``anomaly_scores`` -- there the neighbours come from another system and tell the
        LLM nothing about this one (HDFS -> BGL windows: F1 0.649 against 0.000 with the
        session prompt, EVALUATION.md) -- else ``"session"``.
    n_examples, max_prompt_lines, max_new_tokens: prompt size and generation length.
    preprocess: per-line text normalisation before embedding (default :func:`mask_line`; ``None`` = raw).
    progress: progress bars for embedding and LLM calls.

    Fitted attributes: ``memory_`` (embeddings), ``memory_labels_``, ``memory_origin_`` (0 =
    given, 1 = LLM), ``memory_text_``, ``coordinator_``, ``train_losses_``, ``stats_``,
    ``classes_`` (``[0, 1]``), ``n_features_in_``; the names without ``_`` stay as aliases.
    """

    _estimator_type = "classifier"
    coordinator_: Any
    memory_: np.ndarray
    memory_labels_: np.ndarray

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
        llm_weight: Optional[float] = None,
        llm_clears: Optional[bool] = None,
        feedback: bool = True,
        refit_epochs: int = 10,
        reasoning: bool = True,
        llm_verdict: Optional[str] = None,
        n_examples: int = 3,
        max_prompt_lines: int = 15,
        max_new_tokens: int = 96,
        preprocess: Optional[Callable[[str], str]] = mask_line,
        progress: bool = False,
    ) -> None:
        # scikit-learn convention: the arguments are stored as given (checked here and in fit)
        self.encoder = encoder
        self.llm = llm
        self.mode = mode
        self.k = k
        self.temperature = temperature
        self.hidden = hidden
        self.percentile = percentile
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.known_similarity = known_similarity
        self.similarity_threshold = similarity_threshold
        self.uncertainty_threshold = uncertainty_threshold
        self.llm_weight = llm_weight
        self.llm_clears = llm_clears
        self.feedback = feedback
        self.refit_epochs = refit_epochs
        self.reasoning = reasoning
        self.llm_verdict = llm_verdict
        self.n_examples = n_examples
        self.max_prompt_lines = max_prompt_lines
        self.max_new_tokens = max_new_tokens
        self.preprocess = preprocess
        self.progress = progress

    # ----------------------------------------------------------------- scikit-learn surface

    _PARAM_NAMES = (
        "encoder", "llm", "mode", "k", "temperature", "hidden", "percentile", "epochs", "batch_size", "lr",
        "seed", "known_similarity", "similarity_threshold", "uncertainty_threshold", "llm_weight", "llm_clears", "feedback",
        "refit_epochs", "reasoning", "llm_verdict", "n_examples", "max_prompt_lines", "max_new_tokens", "preprocess",
        "progress",
    )

    def get_params(self, deep: bool = True) -> Dict[str, Any]:
        """The constructor arguments (scikit-learn ``get_params``; ``deep`` has no nested
        estimators to expand)."""
        return {name: getattr(self, name) for name in self._PARAM_NAMES}

    def set_params(self, **params: Any) -> "CollaborativeDetector":
        """Set constructor arguments (scikit-learn ``set_params``); unknown names raise
        :class:`loglm.InvalidInputError`. Values are checked, and take effect, at the next
        ``fit``."""
        bad = sorted(set(params) - set(self._PARAM_NAMES))
        if bad:
            raise InvalidInputError(f"unknown parameter(s) {', '.join(bad)} for CollaborativeDetector")
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def __sklearn_tags__(self) -> Any:
        """scikit-learn (>= 1.6) tags: a binary classifier needing ``y``, taking 2-D float
        embeddings or sessions of text."""
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags  # type: ignore[import-untyped]

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags(multi_class=False, poor_score=True),
                    input_tags=InputTags(two_d_array=True, allow_nan=False), requires_fit=True,
                    non_deterministic=False)

    def _more_tags(self) -> Dict[str, Any]:  # scikit-learn < 1.6
        return {"binary_only": True, "requires_y": True, "poor_score": True}

    def _llm_weight(self) -> float:
        if self.llm_weight is not None:
            return float(self.llm_weight)
        return 1.0 if self.mode == "zero_label" else SUPERVISED_LLM_WEIGHT

    def _llm_clears(self) -> bool:
        if self.llm_clears is not None:
            return bool(self.llm_clears)
        return self.mode == "zero_label"

    def _llm_verdict(self) -> str:
        if self.llm_verdict is not None:
            return str(self.llm_verdict)
        lines = self.mode == "zero_label" and callable(getattr(self.llm, "anomaly_scores", None))
        return "lines" if lines else "session"

    def _check_params(self) -> None:
        if self.llm_weight is not None and (not isinstance(self.llm_weight, (int, float))
                                            or not 0.0 <= float(self.llm_weight) <= 1.0):
            raise InvalidInputError("llm_weight must be None or lie in [0, 1]")
        if self.mode not in ("supervised", "zero_label"):
            raise InvalidInputError(f"mode must be 'supervised' or 'zero_label', got {self.mode!r}")
        if self.llm_verdict not in (None, "session", "lines"):
            raise InvalidInputError(f"llm_verdict must be 'session' or 'lines', got {self.llm_verdict!r}")
        if not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise InvalidInputError("k must be an integer >= 1")
        if not 0.0 <= float(self.percentile) <= 100.0:
            raise InvalidInputError("percentile must lie in [0, 100]")

    @property
    def params(self) -> Dict[str, Any]:
        """The numeric settings, converted (what ``save`` records)."""
        return dict(
            mode=self.mode, k=int(self.k), temperature=float(self.temperature),
            hidden=[int(h) for h in self.hidden], percentile=float(self.percentile), epochs=int(self.epochs),
            batch_size=int(self.batch_size), lr=float(self.lr), seed=int(self.seed),
            known_similarity=float(self.known_similarity), similarity_threshold=float(self.similarity_threshold),
            uncertainty_threshold=None if self.uncertainty_threshold is None else float(self.uncertainty_threshold),
            llm_weight=float(self._llm_weight()), llm_clears=self._llm_clears(), feedback=bool(self.feedback), refit_epochs=int(self.refit_epochs),
            reasoning=bool(self.reasoning), llm_verdict=self._llm_verdict(), n_examples=int(self.n_examples),
            max_prompt_lines=int(self.max_prompt_lines), max_new_tokens=int(self.max_new_tokens),
        )

    def __repr__(self) -> str:
        n = len(self.memory_) if hasattr(self, "memory_") else 0
        return f"CollaborativeDetector(mode={self.mode!r}, memory={n}, llm={type(self.llm).__name__})"

    def __getstate__(self) -> Dict[str, Any]:
        """Picklable state: the Rust coordinator travels as its safetensors bytes (the
        only thing in it is numbers)."""
        state = self.__dict__.copy()
        coord = state.pop("coordinator_", None)
        state.pop("_default_encoder", None)
        if coord is not None:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                f = Path(tmp) / "c.safetensors"
                coord.save(str(f))
                state["_coordinator_bytes"] = f.read_bytes()
        elif "memory_" in state:
            state["coordinator_"] = None
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        blob = state.pop("_coordinator_bytes", None)
        self.__dict__.update(state)
        if blob is not None:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                f = Path(tmp) / "c.safetensors"
                f.write_bytes(blob)
                self.coordinator_ = _loglm.Coordinator.load(str(f), int(self.seed))

    # fitted state under the older names (read-only aliases, except stats)
    memory = property(lambda self: getattr(self, "memory_", None), doc="Alias of ``memory_``.")
    memory_labels = property(lambda self: getattr(self, "memory_labels_", None), doc="Alias of ``memory_labels_``.")
    memory_origin = property(lambda self: getattr(self, "memory_origin_", None), doc="Alias of ``memory_origin_``.")
    memory_text = property(lambda self: getattr(self, "memory_text_", []), doc="Alias of ``memory_text_``.")
    coordinator = property(lambda self: getattr(self, "coordinator_", None), doc="Alias of ``coordinator_``.")
    train_losses = property(lambda self: getattr(self, "train_losses_", []), doc="Alias of ``train_losses_``.")

    @property
    def stats(self) -> Dict[str, float]:
        """Counters: sessions, routed_llm, llm_calls, llm tokens and seconds, embedding and
        small-model seconds, feedback_added / feedback_hits, refits."""
        if "stats_" not in self.__dict__:
            self.stats_ = self._zero_stats()
        return self.stats_

    @stats.setter
    def stats(self, value: Dict[str, float]) -> None:
        self.stats_ = dict(value)

    # ----------------------------------------------------------------- helpers

    @staticmethod
    def _zero_stats() -> Dict[str, float]:
        return {
            "sessions": 0, "routed_llm": 0, "llm_calls": 0, "llm_prompt_tokens": 0,
            "llm_completion_tokens": 0, "llm_seconds": 0.0, "small_seconds": 0.0,
            "embed_seconds": 0.0, "feedback_added": 0, "feedback_hits": 0, "refits": 0,
        }

    def _get_encoder(self) -> SentenceEncoder:
        """The sentence encoder (the default one is loaded on first use)."""
        if self.encoder is not None:
            return self.encoder
        enc = self.__dict__.get("_default_encoder")
        if enc is None:
            enc = SentenceEncoder.load()
            self.__dict__["_default_encoder"] = enc
        return enc

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return hasattr(self, "memory_")

    def _check_fitted(self) -> None:
        if not hasattr(self, "memory_"):
            raise _not_fitted("this CollaborativeDetector is not fitted yet; call fit() first")

    def embed(self, sessions: Sequence[Sequence[str]]) -> np.ndarray:
        """Session embeddings (see :func:`session_embeddings`)."""
        t0 = time.perf_counter()
        out = session_embeddings(self._get_encoder(), sessions, preprocess=self.preprocess, progress=self.progress)
        self.stats["embed_seconds"] += time.perf_counter() - t0
        return out

    def _prepare(self, sessions: Any, keys: Optional[Sequence[Hashable]], embeddings: Any):
        if sessions is not None and embeddings is None:
            emb = _as_embeddings(sessions)
            if emb is not None:  # X given as a 2-D numeric array: embeddings
                sessions, embeddings = None, emb
        if sessions is None and embeddings is None:
            raise InvalidInputError("give sessions or embeddings")
        if sessions is not None:
            ks, ss = _split_sessions(sessions, keys)
        else:
            ks, ss = None, None
        if embeddings is not None:
            x = _f32_2d(embeddings, "embeddings")
            if ss is not None and len(ss) != x.shape[0]:
                raise InvalidInputError(f"length mismatch: {len(ss)} sessions, {x.shape[0]} embeddings")
            if ks is None:
                ks = list(keys) if keys is not None else list(range(x.shape[0]))
                if len(ks) != x.shape[0]:
                    raise InvalidInputError(f"length mismatch: {x.shape[0]} embeddings, {len(ks)} keys")
        else:
            x = self.embed(ss)  # type: ignore[arg-type]
        if hasattr(self, "n_features_in_") and x.shape[1] != self.n_features_in_:
            raise InvalidInputError(f"X has {x.shape[1]} features, but CollaborativeDetector is expecting "
                                    f"{self.n_features_in_} features as input")
        return ks, ss, x

    def _summary(self, lines: Optional[Sequence[str]]) -> str:
        if not lines:
            return ""
        pre = [self.preprocess(l) if self.preprocess else l for l in lines]
        return _session_text(pre, int(self.max_prompt_lines))

    # ----------------------------------------------------------------- fit

    def fit(
        self,
        X: Any = None,
        y: Optional[Iterable[Any]] = None,
        *,
        keys: Optional[Sequence[Hashable]] = None,
        embeddings: Any = None,
        sessions: Any = None,
        labels: Optional[Iterable[Any]] = None,
    ) -> "CollaborativeDetector":
        """Store labelled sessions as the small model's memory and train the coordinator
        on them. ``X``: sessions (lists of lines, or ``{key: lines}``) or a 2-D float array
        of embeddings (``embeddings=`` gives them next to the sessions); ``y`` follows
        :func:`normalize_labels` (in zero-label mode: the *source* system's labels).
        ``sessions`` / ``labels`` are the older keyword names of ``X`` / ``y``."""
        X, y = _alias(X, sessions, "X", "sessions"), _alias(y, labels, "y", "labels")
        if y is None:
            raise InvalidInputError("CollaborativeDetector requires y to be passed, but the target y is None "
                                    "(labels of the source system in zero-label mode)")
        self._check_params()
        for name in [n for n in ("n_features_in_",) if hasattr(self, n)]:
            delattr(self, name)
        ks, ss, x = self._prepare(X, keys, embeddings)
        y = _binary_labels(y)
        if len(y) != x.shape[0]:
            raise InvalidInputError(f"length mismatch: {x.shape[0]} sessions, {len(y)} labels")
        self.memory_ = x
        self.memory_labels_ = y
        self.memory_origin_ = np.zeros(len(y), dtype=np.int8)
        self.memory_text_ = [self._summary(s) for s in ss] if ss is not None else [""] * len(y)
        self.stats_ = self._zero_stats()
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = int(x.shape[1])
        p = self.params
        if p["mode"] == "supervised":
            self.coordinator_ = _loglm.Coordinator(x.shape[1], p["hidden"], p["percentile"], p["seed"])
            self.train_losses_ = list(self.coordinator_.fit(x, p["epochs"], p["batch_size"], p["lr"]))
        else:
            self.coordinator_ = None
            self.train_losses_ = []
        return self

    # ----------------------------------------------------------------- routing

    def route(
        self, sessions: Any = None, *, keys: Optional[Sequence[Hashable]] = None, embeddings: Any = None
    ) -> np.ndarray:
        """``"known"`` or ``"novel"`` per session (no LLM call, no feedback)."""
        self._check_fitted()
        _, _, x = self._prepare(sessions, keys, embeddings)
        novel, _ = self._novel(x, max_similarity(self.memory_, x))
        return np.where(novel, "novel", "known")

    def _novel(self, x: np.ndarray, max_sim: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        p = self.params
        if p["mode"] == "supervised":
            err = np.asarray(self.coordinator_.errors(x))
            novel = err > self.coordinator_.tau
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
            if _takes_json_schema(llm.generate):
                # Structured output: the answer is the verdict JSON by construction (a local LogLM).
                schema = verdict_schema(max_reason_chars=min(2 * p["max_new_tokens"], 4096))
                res = llm.generate(chat, max_new_tokens=p["max_new_tokens"], json_schema=schema)
            else:
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

    def _ask_lines(self, lines: Sequence[str], cache: Dict[str, float]) -> Tuple[int, float, str]:
        """The session's verdict from the LLM's line-level anomaly scores (``llm_verdict="lines"``)."""
        t0 = time.perf_counter()
        distinct = [str(x) for x in dict.fromkeys(lines) if str(x).strip()]
        todo = [x for x in distinct if x not in cache]
        if todo:
            scores = list(self.llm.anomaly_scores(todo, progress=False))
            if len(scores) != len(todo):
                raise InvalidInputError(f"llm.anomaly_scores returned {len(scores)} scores for {len(todo)} lines")
            cache.update((x, float(v)) for x, v in zip(todo, scores))
            if callable(getattr(self.llm, "tokenize", None)):  # the lines' own tokens (the instruction is shared)
                try:
                    self.stats["llm_prompt_tokens"] += sum(len(self.llm.tokenize(x)) for x in todo)
                except Exception:  # token counting must never break a verdict
                    pass
        self.stats["llm_calls"] += 1
        self.stats["llm_seconds"] += time.perf_counter() - t0
        if not distinct:
            return 0, 0.0, "no line to judge"
        worst = max(distinct, key=lambda x: cache[x])
        sc = min(max(cache[worst], 0.0), 1.0)
        return int(sc >= 0.5), sc, f"most anomalous line (LLM P(abnormal) {sc:.2f}): {worst[:200]}"

    # ----------------------------------------------------------------- predict

    def predict(self, X: Any = None, *, keys: Optional[Sequence[Hashable]] = None, embeddings: Any = None,
                sessions: Any = None) -> np.ndarray:
        """0/1 labels (1 = abnormal), one per session. Nothing in the detector changes
        (only the ``stats`` counters move); see :meth:`report` for routes and reasons."""
        return np.asarray(self.report(_alias(X, sessions, "X", "sessions"), keys=keys,
                                      embeddings=embeddings)["Label"].eq("abnormal").to_numpy(dtype=int))

    def predict_proba(self, X: Any = None, *, keys: Optional[Sequence[Hashable]] = None,
                      embeddings: Any = None, sessions: Any = None) -> np.ndarray:
        """``(n, 2)`` array: P(normal), P(abnormal) per session (the ``score`` of
        :meth:`report`: KNN vote, LLM probability, or their fusion)."""
        s = self.report(_alias(X, sessions, "X", "sessions"), keys=keys, embeddings=embeddings)["Score"]
        p = np.clip(s.to_numpy(dtype=float), 0.0, 1.0)
        return np.stack([1.0 - p, p], axis=1)

    def decision_function(self, X: Any = None, *, keys: Optional[Sequence[Hashable]] = None,
                          embeddings: Any = None, sessions: Any = None) -> np.ndarray:
        """``score - 0.5`` per session (positive leans abnormal)."""
        return self.predict_proba(X, keys=keys, embeddings=embeddings, sessions=sessions)[:, 1] - 0.5

    def score(self, X: Any, y: Iterable[Any], sample_weight: Any = None) -> float:
        """Accuracy of :meth:`predict` against ``y`` (scikit-learn classifier ``score``)."""
        want = normalize_labels(y).astype(int)
        got = self.predict(X)
        if len(want) != len(got):
            raise InvalidInputError(f"length mismatch: {len(got)} sessions, {len(want)} labels")
        w = np.ones(len(want)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        return float(np.sum(w * (got == want)) / np.sum(w))

    def partial_fit(self, X: Any = None, y: Optional[Iterable[Any]] = None, *, classes: Any = None,
                    keys: Optional[Sequence[Hashable]] = None, embeddings: Any = None) -> "CollaborativeDetector":
        """Grow the memory. With ``y`` (operator verdicts): the sessions join it with their
        labels (the first call on an unfitted detector is :meth:`fit`). Without ``y``: the
        sessions are judged (LLM on novel ones) and, when ``feedback`` is on, the LLM's
        verdicts join the memory (pseudo-labels in zero-label mode) and the coordinator is
        refit -- the feedback loop, done only when asked."""
        if classes is not None and not set(normalize_labels(classes).tolist()) <= {0.0, 1.0}:
            raise InvalidInputError("classes must be normal/abnormal")
        if y is not None:
            if not self.fitted:
                return self.fit(X, y, keys=keys, embeddings=embeddings)
            self.add_feedback(X, y, keys=keys, embeddings=embeddings)
            return self
        self.report(X, keys=keys, embeddings=embeddings, feedback=True)
        return self

    def report(
        self, X: Any = None, *, keys: Optional[Sequence[Hashable]] = None, embeddings: Any = None,
        feedback: bool = False, sessions: Any = None,
    ) -> "pd.DataFrame":
        """Label sessions with the reasons. Returns a pandas DataFrame with columns
        ``SessionId``, ``Label`` ("normal"/"abnormal"), ``Score`` (probability-like, 1 =
        anomalous), ``Route`` (``small``, ``llm``, ``small-feedback`` when an
        earlier LLM verdict of this call on a near-identical session was reused,
        ``small-fallback`` when novel but no LLM is set), ``Novelty`` and ``Reason``
        (loghub style, as the other frames; the earlier lowercase names ``session``,
        ``label``, ``score``, ``route``, ``novelty``, ``reason`` still read:
        ``df["label"]``, ``df.route``).
        ``feedback=True`` (with the ``feedback`` setting on) adds the LLM's verdicts to
        the memory, as :meth:`partial_fit` does; by default nothing is added."""
        sessions = _alias(X, sessions, "X", "sessions")
        self._check_fitted()
        ks, ss, x = self._prepare(sessions, keys, embeddings)
        p = self.params
        t0 = time.perf_counter()
        votes = knn_vote(self.memory_, self.memory_labels_, x, k=p["k"], temperature=p["temperature"])
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
        by_lines = p["llm_verdict"] == "lines" and self.llm is not None and len(idx) > 0
        if by_lines and ss is None:
            raise InvalidInputError("llm_verdict='lines' needs the sessions' lines, not only their embeddings")
        if by_lines and not callable(getattr(self.llm, "anomaly_scores", None)):
            raise InvalidInputError("llm_verdict='lines' needs an llm with anomaly_scores (e.g. loglm.LogLM)")
        line_scores: Dict[str, float] = {}
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
            if by_lines:
                lab, sc, why = self._ask_lines(ss[i], line_scores)  # type: ignore[index]
            else:
                nb = votes["neighbours"][i][: p["n_examples"]]
                examples = [
                    (self.memory_text_[j], int(self.memory_labels_[j] >= 0.5), float(s))
                    for j, s in zip(nb, votes["sims"][i][: p["n_examples"]])
                ]
                prompt = self.build_prompt(ss[i] if ss is not None else None, examples)
                lab, sc, why = self._ask_llm(prompt)
            w = p["llm_weight"]
            knn = float(votes["score"][i])
            if w < 1.0:
                sc = w * sc + (1.0 - w) * knn
                lab = int(sc >= 0.5)
                why = f"{why} [LLM fused with the KNN vote {knn:.2f} at weight {w:g}]"
            if not p.get("llm_clears", True) and knn >= 0.5 and (sc < knn or not lab):
                sc, lab = max(sc, knn), 1
                why = f"{why} [kept flagged: the KNN vote {knn:.2f} flags it and the LLM may not clear it]"
            labels[i], scores[i], reasons[i] = lab, sc, why
            routes[i] = "llm"
            self.stats["routed_llm"] += 1
            new_rows.append(int(i))
        if feedback and p["feedback"] and self.llm is not None and new_rows:
            self._add_to_memory(
                x[new_rows], labels[new_rows].astype(np.float32),
                [self._summary(ss[i]) if ss is not None else "" for i in new_rows],
            )
        self.stats["sessions"] += n
        from loglm._frames import SessionReportFrame

        return SessionReportFrame(
            {
                "SessionId": ks,
                "Label": np.where(labels == 1, "abnormal", "normal"),
                "Score": scores,
                "Route": routes.astype(str),
                "Novelty": np.asarray(err, dtype=float),
                "Reason": reasons,
            }
        )

    def _add_to_memory(self, x: np.ndarray, y: np.ndarray, texts: List[str]) -> None:
        self.memory_ = np.concatenate([self.memory_, x.astype(np.float32)], axis=0)
        self.memory_labels_ = np.concatenate([self.memory_labels_, y])
        self.memory_origin_ = np.concatenate([self.memory_origin_, np.full(len(y), _ORIGIN["llm"], dtype=np.int8)])
        self.memory_text_ = list(self.memory_text_) + list(texts)
        self.stats["feedback_added"] += len(y)
        p = self.params
        if p["mode"] == "supervised" and p["refit_epochs"] > 0:
            self.coordinator_.fit(self.memory_, p["refit_epochs"], p["batch_size"], p["lr"])
            self.stats["refits"] += 1

    def add_feedback(
        self, sessions: Any = None, labels: Optional[Iterable[Any]] = None, *,
        keys: Optional[Sequence[Hashable]] = None, embeddings: Any = None,
    ) -> None:
        """Add labelled sessions (e.g. operator verdicts) to memory and refit the
        coordinator (what ``partial_fit(X, y)`` does on a fitted detector)."""
        self._check_fitted()
        if labels is None:
            raise InvalidInputError("add_feedback() needs labels")
        _, ss, x = self._prepare(sessions, keys, embeddings)
        y = normalize_labels(labels)
        if len(y) != x.shape[0]:
            raise InvalidInputError(f"length mismatch: {x.shape[0]} sessions, {len(y)} labels")
        self._add_to_memory(x, y, [self._summary(s) for s in ss] if ss is not None else [""] * len(y))

    # ----------------------------------------------------------------- save / load

    def save(self, path: Union[str, Path]) -> None:
        """Write the fitted detector to folder ``path``: ``config.json``,
        ``memory.npz`` (numeric arrays only) and ``coordinator.safetensors``.
        The encoder and the LLM are not saved (the encoder's folder is recorded)."""
        self._check_fitted()
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        enc = self.encoder if self.encoder is not None else self.__dict__.get("_default_encoder")
        cfg = {
            "format": "loglm.collab/1",
            "params": self.params,
            "preprocess": "mask_line" if self.preprocess is mask_line else (None if self.preprocess is None else "custom"),
            "encoder_path": str(enc.path) if enc is not None else None,
            "memory_text": list(self.memory_text_),
            "train_losses": list(self.train_losses_),
            "stats": self.stats,
        }
        (d / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
        np.savez(d / "memory.npz", embeddings=self.memory_, labels=self.memory_labels_, origin=self.memory_origin_)
        if self.coordinator_ is not None:
            self.coordinator_.save(str(d / "coordinator.safetensors"))

    @classmethod
    def load(
        cls, path: Union[str, Path], *, encoder: Optional[SentenceEncoder] = None, llm: Any = None,
        preprocess: Optional[Callable[[str], str]] = None,
    ) -> "CollaborativeDetector":
        """Load a detector written by :meth:`save`. ``encoder`` defaults to the
        recorded folder (loaded lazily); a custom ``preprocess`` must be passed again.

        Raises:
            ModelNotFoundError: no saved detector in ``path`` (a ``FileNotFoundError``).
            ModelLoadError: a corrupt or inconsistent file (bad JSON, bad ``.npz`` zip,
                wrong shapes, unknown settings, a coordinator that does not fit).
        """
        d = Path(path)
        if not (d / "config.json").is_file():
            raise ModelNotFoundError(f"{d / 'config.json'} not found")
        try:
            cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelLoadError(f"{d / 'config.json'}: corrupt JSON ({e})") from None
        if not isinstance(cfg, dict) or cfg.get("format") != "loglm.collab/1":
            raise ModelLoadError(f"{d}: not a saved CollaborativeDetector")
        params = cfg.get("params")
        if not isinstance(params, dict) or not set(params) <= set(cls._PARAM_NAMES):
            raise ModelLoadError(f"{d / 'config.json'}: missing or unknown settings")
        pre = cfg.get("preprocess")
        if preprocess is None:
            if pre == "custom":
                raise InvalidInputError("the detector was saved with a custom preprocess; pass it to load()")
            preprocess = mask_line if pre == "mask_line" else None
        enc_path = cfg.get("encoder_path")
        if encoder is None and isinstance(enc_path, str) and Path(enc_path).is_dir():
            encoder = SentenceEncoder.load(enc_path)
        try:
            det = cls(encoder, llm, preprocess=preprocess, **params)
        except (InvalidInputError, TypeError) as e:
            raise ModelLoadError(f"{d / 'config.json'}: bad settings ({e})") from None
        try:
            with open(d / "memory.npz", "rb") as fh, np.load(fh, allow_pickle=False) as z:
                mem = np.ascontiguousarray(z["embeddings"], dtype=np.float32)
                lab = np.ascontiguousarray(z["labels"], dtype=np.float32)
                origin = np.ascontiguousarray(z["origin"], dtype=np.int8)
        except FileNotFoundError:
            raise ModelLoadError(f"{d / 'memory.npz'} is missing") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            raise ModelLoadError(f"{d / 'memory.npz'}: corrupt ({type(e).__name__}: {e})") from None
        n = len(lab)
        if mem.ndim != 2 or mem.shape[0] != n or origin.shape != (n,) or lab.ndim != 1 or n == 0:
            raise ModelLoadError(f"{d / 'memory.npz'}: inconsistent shapes {mem.shape}, {lab.shape}, {origin.shape}")
        if not np.isfinite(mem).all() or not np.isin(lab, (0.0, 1.0)).all():
            raise ModelLoadError(f"{d / 'memory.npz'}: non-finite embeddings or labels other than 0/1")
        text = cfg.get("memory_text", [""] * n)
        if not isinstance(text, list) or len(text) != n or not all(isinstance(t, str) for t in text):
            raise ModelLoadError(f"{d / 'config.json'}: memory_text does not match the memory")
        det.memory_, det.memory_labels_, det.memory_origin_, det.memory_text_ = mem, lab, origin, list(text)
        det.classes_ = np.array([0, 1])
        det.n_features_in_ = int(mem.shape[1])
        det.train_losses_ = [float(v) for v in cfg.get("train_losses", []) if isinstance(v, (int, float))]
        det.stats_ = det._zero_stats()
        stats = cfg.get("stats", {})
        if isinstance(stats, dict):
            det.stats_.update({k: v for k, v in stats.items() if k in det.stats_ and isinstance(v, (int, float))})
        det.coordinator_ = None
        if det.params["mode"] == "supervised":
            cpath = d / "coordinator.safetensors"
            if not cpath.is_file():
                raise ModelLoadError(f"{cpath} is missing")
            try:
                det.coordinator_ = _loglm.Coordinator.load(str(cpath), det.params["seed"])
            except LoglmError as e:
                raise ModelLoadError(f"{cpath}: {e}") from None
            dims = list(det.coordinator_.dims)
            if not dims or dims[0] != mem.shape[1]:
                raise ModelLoadError(f"{cpath}: coordinator input width {dims[:1]} does not match the "
                                     f"{mem.shape[1]}-wide memory")
        return det


_NOT_FITTED: List[type] = []


def _not_fitted(message: str) -> NotFittedError:
    """A :class:`loglm.NotFittedError`, also a ``sklearn.exceptions.NotFittedError`` when
    scikit-learn is installed (imported only on this error path)."""
    if not _NOT_FITTED:
        try:
            from sklearn.exceptions import NotFittedError as SkNotFitted  # type: ignore[import-untyped]
        except ImportError:  # pragma: no cover - scikit-learn is optional
            _NOT_FITTED.append(NotFittedError)
        else:
            _NOT_FITTED.append(type("NotFittedError", (NotFittedError, SkNotFitted), {"__module__": "loglm.errors"}))
    err: NotFittedError = _NOT_FITTED[0](message)
    return err


def _binary_labels(y: Any) -> np.ndarray:
    """:func:`normalize_labels` with scikit-learn's messages for non-binary targets."""
    if not isinstance(y, (list, tuple, np.ndarray)) and hasattr(y, "__array__"):
        y = np.asarray(y)
    vals = list(y.tolist() if hasattr(y, "tolist") else y)
    if any(isinstance(v, (float, np.floating)) and float(v) not in (0.0, 1.0) for v in vals):
        raise InvalidInputError("Unknown label type: continuous target; labels are normal/abnormal, bools or 0/1")
    if any(isinstance(v, (list, tuple, np.ndarray)) for v in vals):
        raise InvalidInputError("y must be one label per session (a 1-D column of normal/abnormal)")
    distinct = set(v for v in vals if isinstance(v, Hashable))
    if len(distinct) > 2 and all(isinstance(v, (int, np.integer)) for v in distinct):
        raise InvalidInputError("Only binary classification is supported. The type of the target is multiclass "
                                f"({len(distinct)} classes); labels are normal/abnormal")
    return normalize_labels(vals)


def _alias(value: Any, old: Any, name: str, old_name: str) -> Any:
    """``value`` or its older keyword spelling (not both)."""
    if old is not None:
        if value is not None:
            raise InvalidInputError(f"give {name} or {old_name}, not both")
        return old
    return value


def _as_embeddings(X: Any) -> Optional[np.ndarray]:
    """``X`` as embeddings when it is numeric array data (not sessions of text), else None."""
    if hasattr(X, "tocsr") or type(X).__module__.startswith("scipy.sparse"):
        raise InvalidInputError("Sparse input is not supported: give dense embeddings or sessions of text")
    if isinstance(X, Mapping) or isinstance(X, (str, bytes)):
        return None
    if hasattr(X, "to_numpy") and hasattr(X, "columns"):  # a pandas DataFrame
        X = X.to_numpy()
    if not isinstance(X, (list, tuple, np.ndarray)) and hasattr(X, "__array__"):
        X = np.asarray(X)
    if isinstance(X, np.ndarray):
        if X.dtype.kind in "fiubc":
            return X
        if X.dtype.kind == "O" and X.size and not isinstance(X.flat[0], (str, list, tuple)):
            return X
        return None
    try:
        first = X[0]
        item = first[0] if hasattr(first, "__getitem__") and not isinstance(first, (str, bytes)) else first
    except (TypeError, IndexError, KeyError):
        return None
    if isinstance(item, (int, float, np.number)) and not isinstance(item, bool):
        return np.asarray(X)
    return None
