"""Retrieval of labelled examples for the task helpers (LogPrompt / LILAC / CoorLog style).

An :class:`ExampleBank` holds labelled examples -- ``(task, instruction, input, output)``
records such as the LogLM training set -- with their all-MiniLM-L6-v2 vectors
(:class:`loglm.SentenceEncoder`), and returns the nearest ones to a query by cosine
similarity. The task helpers use it two ways:

* free-text capabilities (``interpret``, ``root_cause``, ``suggest_solution``): when
  an example of the same capability is about (nearly) the same log -- cosine similarity
  of the logs alone at least :data:`KNOWN_ANSWER_SIMILARITY` -- its answer is the answer
  (a *known answer*, marked as such: :meth:`ExampleBank.known_answers`); optionally the
  nearest pairs go into the prompt as earlier chat turns (``shots``);
* anomaly detection: the similarity-weighted vote of the nearest labelled logs is a
  second opinion next to the model's own ``P(abnormal)`` (see
  :func:`loglm.retrieval.knn_evidence`).

Examples are data, like logs: they are quoted into prompts as earlier turns and never
read as instructions to the program. Nothing here downloads anything; the LogLM
training set is read through :mod:`loglm.datasets` (``LOGLM_DATA_DIR``).

>>> bank = ExampleBank.from_instructions()                  # the LogLM training split
>>> model = loglm.LogLM.load(examples=bank)                 # or model.examples = bank
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from loglm.errors import InvalidInputError

__all__ = ["Example", "ExampleBank", "FREE_TEXT_TASKS", "KNOWN_ANSWER_SIMILARITY"]

#: Capabilities whose examples are free-text answers (as named in :mod:`loglm.datasets`).
FREE_TEXT_TASKS = ("interpretation", "root_cause", "solution")
_TASK_ALIASES = {"interpret": "interpretation", "root-cause": "root_cause", "rca": "root_cause",
                 "solutions": "solution", "anomaly": "anomaly_detection"}
#: Characters of an example's input that go into its vector (and into a prompt).
_KEY_CHARS = 1000
#: Cosine similarity (all-MiniLM-L6-v2, the logs alone) from which a free-text example's
#: answer is returned for a query as a known answer. Chosen on a validation slice of the
#: LogLM training records (EVALUATION.md, fifth pass): 0.70 scored a little higher
#: there (mean BLEU 14.86 against 14.77) but between 0.70 and 0.80 the matched logs were
#: different problems (``idle timeout`` for ``select() failed``); from 0.80 they were the
#: same problem reported differently.
KNOWN_ANSWER_SIMILARITY = 0.8


def check_similarity(value: Any, name: str) -> float:
    """``value`` as a cosine-similarity threshold: a number in (0, 1], else
    :class:`InvalidInputError` naming ``name``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < value <= 1.0:
        raise InvalidInputError(f"{name} must be a similarity in (0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Example:
    """One labelled example: ``task`` (``interpretation``, ``root_cause``, ``solution``,
    ``anomaly_detection``...), ``instruction``, ``input`` (the log text), ``output``
    (the answer or label) and, for a retrieval result, its cosine ``similarity``."""

    task: str
    instruction: str
    input: str
    output: str
    similarity: float = float("nan")


def _task_name(task: str) -> str:
    return _TASK_ALIASES.get(task, task)


class ExampleBank:
    """Labelled examples with sentence vectors, searched by cosine similarity.

    ``records``: mappings with ``input`` and ``output`` (and optional ``instruction``,
    ``task`` / ``capability``). ``encoder``: a :class:`loglm.SentenceEncoder` (default:
    all-MiniLM-L6-v2, loaded on first use). Vectors are computed lazily, once.
    """

    def __init__(self, records: Iterable[Mapping[str, Any]], *, encoder: Any = None) -> None:
        items: List[Example] = []
        for i, r in enumerate(records):
            if not isinstance(r, Mapping):
                raise InvalidInputError(f"example {i} is {type(r).__name__}, not a mapping")
            try:
                inp, out = r["input"], r["output"]
            except KeyError as e:
                raise InvalidInputError(f"example {i} has no {e.args[0]!r} field") from None
            task = r.get("task", r.get("capability", ""))
            instr = r.get("instruction", "")
            if not all(isinstance(v, str) for v in (inp, out, task, instr)):
                raise InvalidInputError(f"example {i}: task, instruction, input and output must be strings")
            items.append(Example(_task_name(task), instr, inp, out))
        if not items:
            raise InvalidInputError("an example bank needs at least one example")
        self.examples: List[Example] = items
        self._encoder = encoder
        self._cache: Dict[str, np.ndarray] = {}  # embedded text -> unit vector
        self._stacked: Dict[Tuple[Optional[str], bool], np.ndarray] = {}  # (task, by_input) -> matrix

    # ------------------------------------------------------------------ building
    @classmethod
    def from_instructions(cls, root: Any = None, *, tasks: Optional[Sequence[str]] = None,
                          encoder: Any = None) -> "ExampleBank":
        """The LogLM training set (records 0-1231: interpretation, root cause, solution,
        anomaly detection; the parsing records are left out) read through
        :func:`loglm.datasets.load_instructions` (``root`` or ``LOGLM_DATA_DIR``).
        ``tasks`` keeps only those capabilities."""
        from loglm.datasets import load_instructions

        df = load_instructions(root)
        keep = set(_task_name(t) for t in (tasks or (*FREE_TEXT_TASKS, "anomaly_detection")))
        df = df[df["capability"].isin(keep)]
        recs = [{"task": c, "instruction": i, "input": x, "output": o}
                for c, i, x, o in zip(df["capability"], df["instruction"], df["input"], df["output"])]
        return cls(recs, encoder=encoder)

    @classmethod
    def from_file(cls, path: Any, *, task: Optional[str] = None, encoder: Any = None) -> "ExampleBank":
        """Examples from a JSON file: one list of records (a file whose first non-blank
        character is ``[``) or JSON lines (one record per line). Each record has ``input``
        and ``output`` and optionally ``instruction`` and ``task``; ``task`` (e.g.
        ``"root_cause"``) is given to the records without one -- e.g. past incidents and
        what fixed them, for known answers. UTF-8 (a BOM and CRLF are fine)."""
        import json
        from pathlib import Path

        from loglm.errors import LogFileNotFoundError

        p = Path(path)
        if not p.is_file():
            raise LogFileNotFoundError(f"no examples file {p}")
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise InvalidInputError(f"{p} is not UTF-8 text: {e}") from None
        try:
            if text.lstrip().startswith("["):
                records = json.loads(text)
            else:
                records = []
                for n, line in enumerate(text.splitlines(), 1):
                    if line.strip():
                        try:
                            records.append(json.loads(line))
                        except json.JSONDecodeError as e:
                            raise InvalidInputError(f"{p} line {n} is not JSON: {e.msg}") from None
        except (json.JSONDecodeError, RecursionError) as e:
            raise InvalidInputError(f"{p} is not a JSON list of records: {e}") from None
        if not isinstance(records, list):
            raise InvalidInputError(f"{p} holds a JSON {type(records).__name__}, not a list of records")
        if task is not None:
            records = [{"task": task, **r} if isinstance(r, Mapping) and "task" not in r and "capability" not in r
                       else r for r in records]
        return cls(records, encoder=encoder)

    @classmethod
    def from_labelled_logs(cls, logs: Sequence[str], labels: Sequence[Any], *,
                           encoder: Any = None) -> "ExampleBank":
        """Anomaly-detection examples from logs and their labels (``"normal"`` /
        ``"abnormal"``, booleans or 0/1)."""
        from loglm.collab import normalize_labels

        logs = [str(x) for x in logs]
        y = normalize_labels(labels)
        if len(y) != len(logs):
            raise InvalidInputError(f"{len(labels)} labels for {len(logs)} logs")
        from loglm.prompts import ANOMALY_INSTRUCTION

        return cls([{"task": "anomaly_detection", "instruction": ANOMALY_INSTRUCTION, "input": x,
                     "output": "abnormal" if v >= 0.5 else "normal"} for x, v in zip(logs, y)], encoder=encoder)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.examples)

    def __repr__(self) -> str:
        counts: Dict[str, int] = {}
        for e in self.examples:
            counts[e.task] = counts.get(e.task, 0) + 1
        return f"ExampleBank({', '.join(f'{k}={v}' for k, v in sorted(counts.items()))})"

    def tasks(self) -> List[str]:
        """Distinct task names in the bank."""
        return sorted({e.task for e in self.examples})

    @property
    def encoder(self) -> Any:
        """The sentence encoder (loaded on first use)."""
        if self._encoder is None:
            from loglm.embed import SentenceEncoder

            self._encoder = SentenceEncoder.load()
        return self._encoder

    @staticmethod
    def key(instruction: str, text: str) -> str:
        """Text that is embedded for an example or a query: the instruction (when
        given) and the first characters of the log."""
        text = text[:_KEY_CHARS]
        return f"{instruction}\n{text}" if instruction else text

    def _key_of(self, e: Example, by_input: bool) -> str:
        return self.key("" if by_input or e.task not in FREE_TEXT_TASKS else e.instruction, e.input)

    def _encode(self, texts: List[str]) -> np.ndarray:
        """Vectors of ``texts``, each distinct text embedded once per bank."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for t, v in zip(missing, np.asarray(self.encoder.encode(missing), dtype=np.float32)):
                self._cache[t] = v
        return np.stack([self._cache[t] for t in texts])

    def vectors(self, task: Optional[str] = None, *, by_input: bool = False) -> np.ndarray:
        """Unit vectors of the examples (of ``task``; all by default), ``(n, dim)``: of
        the instruction and the log for free-text examples, of the log alone for the
        others and with ``by_input=True``. Examples are embedded on first use, once."""
        key = (None if task is None else _task_name(task), by_input)
        if key not in self._stacked:
            idx = np.flatnonzero(self._mask(task))
            self._stacked[key] = self._encode([self._key_of(self.examples[int(i)], by_input) for i in idx])
        return self._stacked[key]

    def _mask(self, task: Optional[str]) -> np.ndarray:
        if task is None:
            return np.ones(len(self.examples), dtype=bool)
        t = _task_name(task)
        m = np.array([e.task == t for e in self.examples], dtype=bool)
        if not m.any():
            raise InvalidInputError(f"the example bank has no {t!r} examples (it has {', '.join(self.tasks())})")
        return m

    def similarities(self, queries: Sequence[str], *, task: Optional[str] = None,
                     instruction: str = "", by_input: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """Cosine similarity of each query to every example of ``task``: a matrix
        ``(len(queries), n)`` and the bank indices of its columns. ``by_input=True``
        compares the logs alone (the ``instruction`` is then ignored)."""
        if isinstance(queries, str):
            raise InvalidInputError("queries must be a list of texts, not one str")
        idx = np.flatnonzero(self._mask(task))
        if len(queries) == 0:
            return np.zeros((0, len(idx)), dtype=np.float32), idx
        q = np.asarray(self.encoder.encode([self.key("" if by_input else instruction, str(x)) for x in queries]),
                       dtype=np.float32)
        return q @ self.vectors(task, by_input=by_input).T, idx

    def known_answers(self, logs: Sequence[str], *, task: str,
                      threshold: float = KNOWN_ANSWER_SIMILARITY) -> List[Optional[Example]]:
        """For each log, the example of the free-text ``task`` about the most similar log
        when that similarity (cosine, the logs alone) is at least ``threshold``, else
        ``None``: an answer given before to (nearly) the same log, with its similarity."""
        t = _task_name(task)
        if t not in FREE_TEXT_TASKS:
            raise InvalidInputError(f"known answers are for {', '.join(FREE_TEXT_TASKS)}, not {t!r}")
        check_similarity(threshold, "threshold")
        sims, idx = self.similarities(list(logs), task=t, by_input=True)
        out: List[Optional[Example]] = []
        for row in sims:
            j = int(np.argmax(row))
            e = self.examples[int(idx[j])]
            # float32 rounding: an identical log scores 0.99999994, never above 1
            out.append(Example(e.task, e.instruction, e.input, e.output, float(row[j]))
                       if row[j] >= threshold - 1e-6 else None)
        return out

    def nearest(self, query: str, *, k: int = 1, task: Optional[str] = None, instruction: str = "",
                exclude_inputs: Iterable[str] = ()) -> List[Example]:
        """The ``k`` examples of ``task`` most similar to ``query`` (a log text, with the
        ``instruction`` it comes with), best first, with their similarity. Examples whose
        input is in ``exclude_inputs`` (e.g. the query's own record) are skipped."""
        if k < 1:
            raise InvalidInputError(f"k must be >= 1, got {k}")
        sims, idx = self.similarities([query], task=task, instruction=instruction)
        skip = set(exclude_inputs)
        out: List[Example] = []
        for j in np.argsort(-sims[0], kind="stable"):
            e = self.examples[int(idx[j])]
            if e.input in skip:
                continue
            out.append(Example(e.task, e.instruction, e.input, e.output, float(sims[0][j])))
            if len(out) == k:
                break
        return out
