"""Batched evaluation metrics computed in Rust (rayon, GIL released).

Every function accepts lists of ``str``, 1-D numpy string/object arrays and
pandas Series. Empty inputs, length mismatches, ``None``/NaN elements and
non-UTF-8 data raise :class:`ValueError`.

Parity (checked by the test-suite to 1e-9):

* :func:`parsing_scores` -- RI / ARI = scikit-learn ``rand_score`` /
  ``adjusted_rand_score``; GA, FGA, PA, PTA, RTA, FTA = the loghub-2.0 benchmark
  evaluator (``evaluation/utils/{GA_calculator,PA_calculator,template_level_analysis}.py``);
  ``var_P/var_R/var_F1`` = LogLM's token-level variable F1.
* :func:`classification_scores`, :func:`session_scores` -- scikit-learn
  ``precision_score`` / ``recall_score`` / ``f1_score`` / ``accuracy_score``
  (binary, ``zero_division=0``).
"""
from __future__ import annotations

from typing import Any, Dict, Hashable, Iterable, List, Sequence, Union

import numpy as np

from loglm import _loglm

__all__ = [
    "parsing_scores",
    "rand_index",
    "adjusted_rand_index",
    "variable_mask",
    "classification_scores",
    "session_scores",
    "session_labels",
]

StrArray = Union[Sequence[str], "np.ndarray", "Any"]


def _as_list(x: Any, name: str) -> List[Any]:
    """Turn a list / tuple / numpy array / pandas Series into a plain list."""
    if x is None:
        raise ValueError(f"{name} must not be None")
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of strings, not a single string")
    if isinstance(x, np.ndarray):
        if x.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {x.shape}")
        out = x.tolist()
    elif hasattr(x, "to_numpy") and hasattr(x, "dtype"):  # pandas Series / Index
        out = x.to_numpy(dtype=object).tolist()
    else:
        out = list(x)
    if len(out) == 0:
        raise ValueError(f"{name} must not be empty")
    return out


def _check_same_len(**kw: List[Any]) -> None:
    lens = {k: len(v) for k, v in kw.items()}
    if len(set(lens.values())) > 1:
        desc = ", ".join(f"{k}={n}" for k, n in lens.items())
        raise ValueError(f"length mismatch: {desc}")


# ----------------------------------------------------------------------------- parsing


def parsing_scores(
    logs: StrArray,
    true_templates: StrArray,
    pred_templates: StrArray,
    *,
    normalize_whitespace: bool = False,
) -> Dict[str, float]:
    """Log-parsing metrics of predicted templates against true templates.

    Groups are defined by template string equality on each side.

    Returns a dict with exactly these keys:

    * ``"RI"``, ``"ARI"``: Rand index and adjusted Rand index of the grouping
      (identical to scikit-learn ``rand_score`` / ``adjusted_rand_score``).
    * ``"GA"``: grouping accuracy, the fraction of lines whose true group is
      predicted exactly (all its lines share one predicted template that has no
      other lines) -- loghub-2.0 ``GA_calculator.get_accuracy``.
    * ``"FGA"``: F1 of groups (precision over predicted groups, recall over true
      groups of the exactly-predicted groups) -- same source.
    * ``"PA"``: parsing accuracy, the fraction of lines whose predicted template
      string equals the true one exactly (loghub-2.0 ``PA_calculator``; the
      evaluator does not normalise whitespace, pass ``normalize_whitespace=True``
      to apply ``" ".join(t.split())`` to both sides before every metric).
    * ``"PTA"``, ``"RTA"``, ``"FTA"``: template precision / recall / F1: a
      predicted template is correct when all its lines have exactly that string
      as true template (loghub-2.0 ``template_level_analysis.evaluate_template_level``).
    * ``"var_P"``, ``"var_R"``, ``"var_F1"``: LogLM's token-level variable
      precision / recall / F1. Each log is split on whitespace; a token is a
      variable under a template when one of its characters falls inside a
      ``<*>`` span of the template matched against the log (the template becomes
      an anchored regex with each ``<*>`` a lazy group; when it does not match,
      tokens are aligned by position). TP = variable under both, FP = only under
      the prediction, FN = only under the truth, summed over all lines. A 0/0
      ratio gives 0.0.
    """
    lg = _as_list(logs, "logs")
    tt = _as_list(true_templates, "true_templates")
    pt = _as_list(pred_templates, "pred_templates")
    _check_same_len(logs=lg, true_templates=tt, pred_templates=pt)
    return dict(_loglm._parsing_scores(lg, tt, pt, bool(normalize_whitespace)))


def variable_mask(log: str, template: str) -> List[bool]:
    """Which whitespace tokens of ``log`` are variables under ``template``.

    This is the per-line building block of ``var_P``/``var_R``/``var_F1`` in
    :func:`parsing_scores` (see there for the definition).
    """
    if not isinstance(log, str) or not isinstance(template, str):
        raise TypeError("log and template must be str")
    return list(_loglm._variable_mask(log, template))


def _labels_pair(labels_true: Any, labels_pred: Any):
    lt = _as_list(labels_true, "labels_true")
    lp = _as_list(labels_pred, "labels_pred")
    _check_same_len(labels_true=lt, labels_pred=lp)
    return lt, lp


def _rand_pair(labels_true: Any, labels_pred: Any):
    lt, lp = _labels_pair(labels_true, labels_pred)
    if all(isinstance(v, str) for v in lt) and all(isinstance(v, str) for v in lp):
        return _loglm._rand_scores(lt, lp)
    # arbitrary hashable labels: factorise to integer codes (order is irrelevant)
    for name, vals in (("labels_true", lt), ("labels_pred", lp)):
        for i, v in enumerate(vals):
            if v is None or (isinstance(v, float) and v != v):
                raise ValueError(f"{name}[{i}] is a missing value (None/NaN)")
    codes_t = _factorize(lt)
    codes_p = _factorize(lp)
    return _loglm._rand_scores_int(codes_t, codes_p)


def _factorize(values: List[Hashable]) -> np.ndarray:
    table: Dict[Hashable, int] = {}
    return np.fromiter((table.setdefault(v, len(table)) for v in values), dtype=np.int64, count=len(values))


def rand_index(labels_true: Iterable[Hashable], labels_pred: Iterable[Hashable]) -> float:
    """Rand index of two labelings (identical to ``sklearn.metrics.rand_score``)."""
    return float(_rand_pair(labels_true, labels_pred)[0])


def adjusted_rand_index(labels_true: Iterable[Hashable], labels_pred: Iterable[Hashable]) -> float:
    """Adjusted Rand index (identical to ``sklearn.metrics.adjusted_rand_score``)."""
    return float(_rand_pair(labels_true, labels_pred)[1])


# ----------------------------------------------------------------------- classification


def _binary(values: Any, name: str, pos_label: Any) -> np.ndarray:
    vals = _as_list(values, name)
    out = np.empty(len(vals), dtype=bool)
    for i, v in enumerate(vals):
        if v is None or (isinstance(v, float) and v != v):
            raise ValueError(f"{name}[{i}] is a missing value (None/NaN)")
        out[i] = v == pos_label
    return out


def classification_scores(
    y_true: Iterable[Any], y_pred: Iterable[Any], *, pos_label: Any = "abnormal"
) -> Dict[str, float]:
    """Precision, recall, F1 and accuracy of the class ``pos_label``.

    Identical to scikit-learn's ``precision_score`` / ``recall_score`` /
    ``f1_score`` (``average="binary"``, ``zero_division=0``) and
    ``accuracy_score`` for a two-class problem (every label that is not
    ``pos_label`` counts as negative). Returns a dict with ``precision``,
    ``recall``, ``f1``, ``accuracy`` (floats) and the counts ``tp``, ``fp``,
    ``fn``, ``tn``. Template-level anomaly detection: one entry per template.
    """
    t = _binary(y_true, "y_true", pos_label)
    p = _binary(y_pred, "y_pred", pos_label)
    if len(t) != len(p):
        raise ValueError(f"length mismatch: y_true={len(t)}, y_pred={len(p)}")
    return dict(_loglm._binary_scores(t, p))


def session_labels(
    session_ids: Iterable[Hashable], labels: Iterable[Any], *, pos_label: Any = "abnormal"
):
    """Collapse line labels into session labels: a session is positive when any
    of its lines is. Returns a pandas Series of bools indexed by session id (in
    order of first appearance)."""
    import pandas as pd

    ids = _as_list(session_ids, "session_ids")
    lab = _binary(labels, "labels", pos_label)
    if len(ids) != len(lab):
        raise ValueError(f"length mismatch: session_ids={len(ids)}, labels={len(lab)}")
    codes, uniques = pd.factorize(pd.Series(ids, dtype=object))
    if (codes < 0).any():
        raise ValueError("session_ids contains missing values (None/NaN)")
    first, agg = _loglm._session_labels(codes.astype(np.int64), lab)
    return pd.Series(agg, index=pd.Index(np.asarray(uniques, dtype=object)[first]), name="abnormal")


def session_scores(
    session_ids: Iterable[Hashable],
    y_true: Iterable[Any],
    y_pred: Iterable[Any],
    *,
    pos_label: Any = "abnormal",
) -> Dict[str, float]:
    """Session-level precision, recall, F1 and accuracy.

    ``session_ids``, ``y_true`` and ``y_pred`` have one entry per log line; a
    session is positive (abnormal) when any of its lines is, on each side. Then
    the scores are those of :func:`classification_scores` over sessions.
    """
    import pandas as pd

    ids = _as_list(session_ids, "session_ids")
    t = _binary(y_true, "y_true", pos_label)
    p = _binary(y_pred, "y_pred", pos_label)
    if not (len(ids) == len(t) == len(p)):
        raise ValueError(f"length mismatch: session_ids={len(ids)}, y_true={len(t)}, y_pred={len(p)}")
    codes, _ = pd.factorize(pd.Series(ids, dtype=object))
    if (codes < 0).any():
        raise ValueError("session_ids contains missing values (None/NaN)")
    return dict(_loglm._session_scores(codes.astype(np.int64), t, p))
