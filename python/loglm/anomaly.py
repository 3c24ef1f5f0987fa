"""Evidence for anomaly verdicts beyond the model's own answer, combined in log-odds.

The language model's ``P("abnormal")`` (choice scoring, :meth:`loglm.LogLM.anomaly_score`)
ranks logs well on the systems it was tuned on but knows little of others: a 135M
model tuned on BGL / Spirit templates scores ``No space left on device`` at 0.03. Two
more sources of evidence are cheap and general, and both are combined with the model's
answer as likelihood ratios (naive Bayes in log-odds, as LogPrompt / CoorLog-style
systems combine a model with retrieved labelled examples):

* **severity words** -- the vocabulary operators grep for (``error``, ``failed``,
  ``exception``, ``refused``, ``no space``, ``out of memory``...). The list below is
  written from general operations knowledge, not learned from any data set; only its
  weight is fitted (on the LogLM training templates, see :func:`fit_severity`).
* **labelled neighbours** -- when labelled examples are given (an
  :class:`loglm.retrieval.ExampleBank` with ``anomaly_detection`` examples), the
  similarity margin of a log to its nearest abnormal vs nearest normal example, mapped
  to a likelihood ratio by a logistic fit on the bank's own leave-one-out margins
  (:class:`NeighbourEvidence`). It is gated by similarity: a log unlike every example
  gets no vote from them.

Everything here is fitted on training data only; :data:`SEVERITY_FIT` holds what
:func:`fit_severity` gives on the LogLM training split (records 900-1231), kept as
constants so that loading a model needs no data set.
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from loglm.errors import InvalidInputError

__all__ = [
    "SEVERITY_PATTERN", "SEVERITY_FIT", "severity_hits", "severity_evidence", "fit_severity",
    "NeighbourEvidence", "AnomalyEvidence", "combine", "logit", "best_f1_threshold",
]

# Words and phrases that report a problem in logs of most systems (operations
# knowledge: what alerting rules grep for). Matched case-insensitively on word starts.
_SEVERITY_TERMS = [
    r"errors?\b", r"err\b", r"fail(?:s|ed|ure|ures|ing)?\b", r"fatal", r"exceptions?\b", r"panic",
    r"(?<=[A-Za-z])(?:Exception|Error)\b",
    r"abort(?:s|ed|ing)?\b", r"crash(?:es|ed)?\b", r"segfault", r"segmentation fault", r"core dump",
    r"refused", r"denied", r"forbidden", r"unauthori[sz]ed", r"time[ds]? ?out\b", r"timeout",
    r"unreachable", r"unavailable", r"unable\b", r"cannot\b", r"can't\b", r"could not\b", r"couldn't\b",
    r"invalid\b", r"corrupt(?:ed|ion)?\b", r"lost\b", r"killed\b", r"kill(?:ing)? process",
    r"out of memory", r"oom\b", r"no space", r"disk full", r"quota exceeded", r"overflow",
    r"not found\b", r"no such file", r"missing\b", r"illegal\b", r"unexpected", r"mismatch",
    r"violation", r"critical\b", r"severe\b", r"emergency", r"broken\b", r"reset by peer",
    r"rejected", r"unhealthy", r"degraded", r"stack ?trace", r"traceback", r"assert(?:ion)?\b",
]
#: One regex of the severity vocabulary (case-insensitive, anchored at word starts).
SEVERITY_PATTERN = re.compile("|".join(
    t if t.startswith("(?<=") else r"(?<![A-Za-z])(?i:" + t + ")" for t in _SEVERITY_TERMS))

#: Logistic fit of "abnormal" on the number of severity hits (capped at 2) over the
#: LogLM training templates (records 900-1231), and the log prior odds of those
#: templates: ``log LR(h) = coef * h + intercept - prior_logit``. Made by
#: :func:`fit_severity` (``tests/test_anomaly.py`` checks them against a fresh fit).
SEVERITY_FIT = {"coef": 1.7916, "intercept": -2.8967, "prior_logit": -2.2039}


def logit(p: Any) -> np.ndarray:
    """Log-odds of probabilities (clipped to [1e-6, 1 - 1e-6])."""
    try:
        q = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"probabilities must be numbers: {e}") from None
    return np.log(q / (1 - q))


def severity_hits(texts: Sequence[str], cap: int = 2) -> np.ndarray:
    """Number of distinct severity terms in each text, capped at ``cap``."""
    if isinstance(texts, str):
        raise InvalidInputError("texts must be a list of logs, not one str")
    out = np.empty(len(texts), dtype=np.float64)
    for i, t in enumerate(texts):
        hits = {m.group(0).lower() for m in SEVERITY_PATTERN.finditer(str(t))}
        out[i] = min(len(hits), cap)
    return out


def fit_severity(texts: Sequence[str], labels: Sequence[Any]) -> Dict[str, float]:
    """Fit :data:`SEVERITY_FIT` on labelled logs (training data only): a one-feature
    logistic regression of the labels on :func:`severity_hits`, and the log prior odds."""
    y = np.asarray([float(v) for v in labels], dtype=np.float64)
    if len(y) != len(texts) or len(y) == 0 or not 0 < y.sum() < len(y):
        raise InvalidInputError("fit_severity needs as many labels as texts, with both classes")
    coef, intercept = _logistic_1d(severity_hits(texts), y)
    return {"coef": round(coef, 4), "intercept": round(intercept, 4),
            "prior_logit": round(math.log(y.mean() / (1 - y.mean())), 4)}


def severity_evidence(texts: Sequence[str], fit: Optional[Mapping[str, float]] = None) -> np.ndarray:
    """Log-likelihood ratio of "abnormal" that the severity words give each text."""
    f = SEVERITY_FIT if fit is None else fit
    return f["coef"] * severity_hits(texts) + f["intercept"] - f["prior_logit"]


class NeighbourEvidence:
    """Likelihood ratio of "abnormal" from the nearest labelled examples.

    ``vectors`` (unit rows) and ``labels`` (0/1) are the labelled examples. The
    feature is the margin ``max cos(abnormal) - max cos(normal)``; a logistic fit of the
    labels on the examples' own leave-one-out margins maps it to ``log P(abnormal |
    margin) / P(normal | margin)``, from which the examples' prior odds are removed, so
    the result is a likelihood ratio to add to another model's log-odds. The ratio is
    scaled by a similarity gate, ``clip((max_sim - gate_low) / (gate_high - gate_low), 0,
    1)``: a log that resembles no example gets no vote.
    """

    def __init__(self, vectors: Any, labels: Any, *, gate: Tuple[float, float] = (0.5, 0.8)) -> None:
        v = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        y = np.asarray(labels, dtype=np.float64).ravel()
        if v.ndim != 2 or v.shape[0] != y.shape[0]:
            raise InvalidInputError(f"{v.shape[0] if v.ndim == 2 else '?'} vectors for {y.shape[0]} labels")
        pos, neg = int((y >= 0.5).sum()), int((y < 0.5).sum())
        if pos < 2 or neg < 2:
            raise InvalidInputError(f"neighbour evidence needs at least 2 abnormal and 2 normal examples, got {pos} / {neg}")
        lo, hi = gate
        if not 0.0 <= lo < hi <= 1.0:
            raise InvalidInputError(f"gate must satisfy 0 <= low < high <= 1, got {gate}")
        self.vectors, self.labels, self.gate = v, (y >= 0.5).astype(np.float64), (float(lo), float(hi))
        m, _ = self._margin(v, leave_one_out=True)
        self.coef, self.intercept = _logistic_1d(m, self.labels)
        prior = self.labels.mean()
        self.prior_logit = math.log(prior / (1 - prior))

    def _margin(self, q: np.ndarray, leave_one_out: bool = False,
                exclude_self: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        s = q @ self.vectors.T
        if leave_one_out:
            np.fill_diagonal(s, -1.0)
        if exclude_self:
            s[s >= 0.9999] = -1.0
        ab, no = s[:, self.labels == 1].max(axis=1), s[:, self.labels == 0].max(axis=1)
        return ab - no, np.maximum(ab, no)

    def evidence(self, queries: Any, *, exclude_self: bool = False) -> np.ndarray:
        """Log-likelihood ratio of "abnormal" for each query vector (unit rows).

        ``exclude_self=True`` scores the examples themselves fairly: an example identical
        to the query (cosine >= 0.9999) casts no vote, as in the leave-one-out fit."""
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        if q.ndim != 2 or q.shape[1] != self.vectors.shape[1]:
            raise InvalidInputError(f"queries must be (n, {self.vectors.shape[1]}) vectors, got shape {q.shape}")
        if q.shape[0] == 0:
            return np.zeros(0)
        m, best = self._margin(q, exclude_self=exclude_self)
        return self._gate(best) * (self.coef * m + self.intercept - self.prior_logit)

    def _gate(self, best: np.ndarray) -> np.ndarray:
        lo, hi = self.gate
        return np.clip((best - lo) / (hi - lo), 0.0, 1.0)

    def gate_of(self, queries: Any, *, exclude_self: bool = False) -> np.ndarray:
        """How much the examples know of each query: 0 (unlike every example) to 1."""
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        if q.shape[0] == 0:
            return np.zeros(0)
        return self._gate(self._margin(q, exclude_self=exclude_self)[1])


def _logistic_1d(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> Tuple[float, float]:
    w, b = 0.0, 0.0
    for _ in range(200):
        p = 1 / (1 + np.exp(-(w * x + b)))
        g = np.array([np.sum((p - y) * x) + l2 * w, np.sum(p - y)])
        s = p * (1 - p)
        H = np.array([[np.sum(s * x * x) + l2, np.sum(s * x)], [np.sum(s * x), np.sum(s) + 1e-9]])
        step = np.linalg.solve(H, g)
        w, b = w - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    return float(w), float(b)


def best_f1_threshold(labels: Any, scores: Any) -> Tuple[float, float]:
    """``(threshold, F1)``: the cut of ``scores`` with the highest F1 of the positive class
    on labelled data (training data: this is how a threshold is chosen without a test
    split). The threshold sits halfway, in log-odds, between the lowest score flagged and
    the highest score below it, so that it does not sit on a training example."""
    y = np.asarray(labels, dtype=np.float64).ravel() >= 0.5
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape or len(y) == 0 or not 0 < y.sum() < len(y):
        raise InvalidInputError("best_f1_threshold needs one score per label, with both classes")
    order = np.argsort(-s, kind="mergesort")
    ss, yy = s[order], y[order]
    tp = np.cumsum(yy)
    k = np.arange(1, len(s) + 1)
    last = np.r_[ss[1:] != ss[:-1], True]  # cut only between distinct scores
    f1 = np.where(last, 2 * tp / (k + y.sum()), -1.0)
    i = int(np.argmax(f1))
    lo = ss[i + 1] if i + 1 < len(ss) else ss[i] - 1e-3
    th = float(1.0 / (1.0 + np.exp(-(logit(ss[i]) + logit(lo)) / 2)))
    return th, float(f1[i])


def combine(model_probs: Any, *evidence: Optional[np.ndarray]) -> np.ndarray:
    """``P(abnormal)`` after adding likelihood ratios (log-odds) to the model's answer."""
    z = logit(model_probs)
    for e in evidence:
        if e is not None:
            ea = np.asarray(e, dtype=np.float64)
            if ea.ndim and ea.shape != z.shape:
                raise InvalidInputError(f"evidence of shape {ea.shape} for probabilities of shape {z.shape}")
            z = z + ea
    return 1.0 / (1.0 + np.exp(-z))


class AnomalyEvidence:
    """What :meth:`loglm.LogLM.anomaly_scores` adds to the model's ``P(abnormal)``.

    ``severity``: add the severity-word likelihood ratio (on by default).
    ``neighbours``: a :class:`NeighbourEvidence` from labelled examples, or ``None``.
    Where the examples know a log (similarity gate near 1) their vote replaces the
    generic severity prior, which would otherwise count the same words twice on the
    systems the examples come from; where they do not, the severity prior applies
    in full. ``encoder`` embeds the logs for the neighbour vote.
    """

    def __init__(self, *, severity: bool = True, neighbours: Optional[NeighbourEvidence] = None,
                 encoder: Any = None) -> None:
        if neighbours is not None and encoder is None:
            raise InvalidInputError("neighbour evidence needs the sentence encoder that made its vectors")
        self.severity = bool(severity)
        self.neighbours = neighbours
        self.encoder = encoder

    @classmethod
    def from_bank(cls, bank: Any, *, severity: bool = True) -> "AnomalyEvidence":
        """Evidence from the ``anomaly_detection`` examples of an
        :class:`loglm.retrieval.ExampleBank` (severity prior only when it has too few)."""
        ex = [e for e in bank.examples if e.task == "anomaly_detection"]
        pos = sum(e.output.strip().lower() == "abnormal" for e in ex)
        if pos < 2 or len(ex) - pos < 2:
            return cls(severity=severity)
        vecs = bank.vectors("anomaly_detection")
        labels = [float(e.output.strip().lower() == "abnormal") for e in ex]
        return cls(severity=severity, neighbours=NeighbourEvidence(vecs, labels), encoder=bank.encoder)

    def log_ratios(self, texts: Sequence[str], *, exclude_self: bool = False) -> np.ndarray:
        """Total log-likelihood ratio of "abnormal" for each text. ``exclude_self=True``
        when the texts are the labelled examples themselves (each one's own label must
        not vote for it; see :meth:`NeighbourEvidence.evidence`)."""
        texts = [str(t) for t in texts]
        total = np.zeros(len(texts))
        if not texts:
            return total
        gate = np.zeros(len(texts))
        if self.neighbours is not None:
            vecs = np.asarray(self.encoder.encode(texts), dtype=np.float32)
            total += self.neighbours.evidence(vecs, exclude_self=exclude_self)
            gate = self.neighbours.gate_of(vecs, exclude_self=exclude_self)
        if self.severity:
            total += (1.0 - gate) * severity_evidence(texts)
        return total

    def apply(self, texts: Sequence[str], model_probs: Sequence[float], *, exclude_self: bool = False) -> np.ndarray:
        """``P(abnormal)`` of each text after the evidence."""
        return combine(model_probs, self.log_ratios(texts, exclude_self=exclude_self))

    def __repr__(self) -> str:
        nb = "none" if self.neighbours is None else f"{len(self.neighbours.labels)} labelled examples"
        return f"AnomalyEvidence(severity={self.severity}, neighbours={nb})"
