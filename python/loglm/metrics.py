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

import warnings
from typing import TYPE_CHECKING, Any, Dict, Hashable, Iterable, List, Sequence, Union

import numpy as np

from loglm import _loglm
from loglm.errors import InvalidInputError, InvalidTypeError

if TYPE_CHECKING:
    import pandas as pd

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
        raise InvalidInputError(f"{name} must not be None")
    if isinstance(x, (str, bytes)):
        raise InvalidTypeError(f"{name} must be a sequence of strings, not a single string")
    if isinstance(x, np.ndarray):
        if x.ndim != 1:
            raise InvalidInputError(f"{name} must be one-dimensional, got shape {x.shape}")
        out = x.tolist()
    elif hasattr(x, "to_numpy") and hasattr(x, "dtype"):  # pandas Series / Index
        out = x.to_numpy(dtype=object).tolist()
    else:
        out = list(x)
    if len(out) == 0:
        raise InvalidInputError(f"{name} must not be empty")
    return out


def _check_same_len(**kw: List[Any]) -> None:
    lens = {k: len(v) for k, v in kw.items()}
    if len(set(lens.values())) > 1:
        desc = ", ".join(f"{k}={n}" for k, n in lens.items())
        raise InvalidInputError(f"length mismatch: {desc}")


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
        raise InvalidTypeError("log and template must be str")
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
                raise InvalidInputError(f"{name}[{i}] is a missing value (None/NaN)")
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
            raise InvalidInputError(f"{name}[{i}] is a missing value (None/NaN)")
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
    tv, pv = _as_list(y_true, "y_true"), _as_list(y_pred, "y_pred")
    t = _binary(tv, "y_true", pos_label)
    p = _binary(pv, "y_pred", pos_label)
    if len(t) != len(p):
        raise InvalidInputError(f"length mismatch: y_true={len(t)}, y_pred={len(p)}")
    _warn_if_pos_label_absent(tv + pv, t, p, pos_label)
    return dict(_loglm._binary_scores(t, p))


def _warn_if_pos_label_absent(values: List[Any], t: np.ndarray, p: np.ndarray, pos_label: Any) -> None:
    """Warn when no label equals ``pos_label`` although the labels look like a
    two-class coding of another kind (``1``/``0``, ``True``/``False`` against the
    default ``"abnormal"``, or two other names): every score would then be
    computed against an empty positive class. All-negative data in the
    ``pos_label``'s own vocabulary (every line ``"normal"``) is not warned about."""
    if t.any() or p.any():
        return
    distinct = set()
    for v in values:
        try:
            distinct.add(v)
        except TypeError:  # unhashable labels: cannot tell
            return
    other_kind = all(type(v) is not type(pos_label) for v in distinct)
    if other_kind or len(distinct) >= 2:
        warnings.warn(
            f"no label in y_true or y_pred equals pos_label={pos_label!r} (labels seen: "
            f"{sorted(map(repr, distinct))[:5]}); every entry counts as negative. Pass pos_label= "
            f"to name the positive class",
            UserWarning,
            stacklevel=3,
        )


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
        raise InvalidInputError(f"length mismatch: session_ids={len(ids)}, labels={len(lab)}")
    codes, uniques = pd.factorize(pd.Series(ids, dtype=object))
    if (codes < 0).any():
        raise InvalidInputError("session_ids contains missing values (None/NaN)")
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
    tv, pv = _as_list(y_true, "y_true"), _as_list(y_pred, "y_pred")
    t = _binary(tv, "y_true", pos_label)
    p = _binary(pv, "y_pred", pos_label)
    if not (len(ids) == len(t) == len(p)):
        raise InvalidInputError(f"length mismatch: session_ids={len(ids)}, y_true={len(t)}, y_pred={len(p)}")
    codes, _ = pd.factorize(pd.Series(ids, dtype=object))
    if (codes < 0).any():
        raise InvalidInputError("session_ids contains missing values (None/NaN)")
    _warn_if_pos_label_absent(tv + pv, t, p, pos_label)
    return dict(_loglm._session_scores(codes.astype(np.int64), t, p))


# ------------------------------------------------------------------------- BLEU / ROUGE


def _hyps_refs(hypotheses: Any, references: Any):
    hyps = _as_list(hypotheses, "hypotheses")
    if isinstance(references, (str, bytes)):
        raise InvalidTypeError("references must be a sequence of strings or of reference streams")
    if isinstance(references, np.ndarray) and references.ndim == 2:
        streams = [list(r) for r in references.tolist()]
    else:
        refs = _as_list(references, "references")
        first = refs[0]
        if isinstance(first, (str, bytes)) or first is None or (isinstance(first, float)):
            streams = [refs]
        else:
            streams = [_as_list(s, f"references[{k}]") for k, s in enumerate(refs)]
    for k, s in enumerate(streams):
        if len(s) != len(hyps):
            where = "references" if len(streams) == 1 else f"reference stream {k}"
            raise InvalidInputError(f"length mismatch: {len(hyps)} hypotheses but {len(s)} in {where}")
    if len(streams) == 1 and any(r is None for r in streams[0]):
        i = next(i for i, r in enumerate(streams[0]) if r is None)
        raise InvalidInputError(f"references[{i}] is None; every element must be a string")
    return hyps, streams


class BleuResult:
    """Corpus BLEU (sacrebleu ``BLEUScore`` fields) plus per-pair sentence BLEU.

    Attributes: ``score`` (0-100), ``counts``, ``totals``, ``precisions``,
    ``bp``, ``sys_len``, ``ref_len``, ``ratio``, ``signature`` (sacrebleu's
    signature string of the corpus score), ``sentence_scores`` (numpy array of
    sentence BLEU, or None) and ``sentence_signature``.
    """

    __slots__ = ("score", "counts", "totals", "precisions", "bp", "sys_len", "ref_len",
                 "signature", "sentence_signature", "sentence_scores")

    def __init__(self, raw: tuple) -> None:
        (self.score, self.counts, self.totals, self.precisions, self.bp, self.sys_len,
         self.ref_len, self.signature, self.sentence_signature, self.sentence_scores) = raw

    @property
    def ratio(self) -> float:
        """hyp_len / ref_len, as sacrebleu reports it."""
        return self.sys_len / self.ref_len if self.ref_len else 0

    def format(self, width: int = 2) -> str:
        """sacrebleu's ``BLEUScore.format()`` text."""
        prec = "/".join(f"{p:.1f}" for p in self.precisions)
        return (f"BLEU = {self.score:.{width}f} {prec} (BP = {self.bp:.3f} ratio = {self.ratio:.3f} "
                f"hyp_len = {self.sys_len:d} ref_len = {self.ref_len:d})")

    def __repr__(self) -> str:
        return f"BleuResult({self.format()}, signature={self.signature!r})"


def bleu(
    hypotheses: StrArray,
    references: Any,
    *,
    tokenize: str = "13a",
    lowercase: bool = False,
    smooth_method: str = "exp",
    smooth_value: Union[float, None] = None,
    max_ngram_order: int = 4,
    effective_order: Union[bool, None] = None,
    sentence_scores: bool = True,
) -> BleuResult:
    """Corpus and sentence BLEU, identical to sacrebleu 2.6.0.

    ``references`` is either one string per hypothesis, or sacrebleu's layout:
    a list of reference *streams*, each with one string per hypothesis (``None``
    in a stream = no such reference for that hypothesis, sacrebleu's variable
    number of references).

    * ``tokenize``: ``"13a"`` (default, mteval-v13a), ``"intl"``, ``"char"``, ``"none"``.
    * ``smooth_method``: ``"exp"`` (default), ``"floor"`` (``smooth_value``
      default 0.1), ``"add-k"`` (default 1), ``"none"``.
    * ``effective_order``: None keeps sacrebleu's defaults: no for the corpus
      score (``corpus_bleu``), yes for sentence scores (``sentence_bleu``);
      True/False applies to both.

    The corpus score equals ``sacrebleu.corpus_bleu(hyps, streams, ...)``;
    ``result.sentence_scores[i]`` equals ``sacrebleu.sentence_bleu(hyps[i],
    [s[i] for s in streams], ...).score``. ``result.signature`` is sacrebleu's
    signature string (e.g. ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``;
    the version names the sacrebleu release reproduced).
    """
    hyps, streams = _hyps_refs(hypotheses, references)
    if int(max_ngram_order) < 1:
        raise InvalidInputError("max_ngram_order must be >= 1")
    ce = False if effective_order is None else bool(effective_order)
    se = True if effective_order is None else bool(effective_order)
    raw = _loglm._bleu(hyps, streams, str(tokenize), bool(lowercase), str(smooth_method),
                       None if smooth_value is None else float(smooth_value), int(max_ngram_order),
                       ce, se, bool(sentence_scores))
    return BleuResult(raw)


def sentence_bleu(hypotheses: StrArray, references: Any, **kwargs: Any) -> np.ndarray:
    """Per-pair sentence BLEU (``sacrebleu.sentence_bleu`` for each pair) as a
    numpy array. Keyword arguments as :func:`bleu`."""
    return bleu(hypotheses, references, sentence_scores=True, **kwargs).sentence_scores


class RougeResult:
    """ROUGE scores of every pair plus their means.

    * ``scores``: pandas DataFrame, one row per pair, columns
      ``"<type>_precision"``, ``"<type>_recall"``, ``"<type>_fmeasure"``.
    * ``mean``: ``{type: {"precision", "recall", "fmeasure"}}``, plain means over pairs.
    * ``array``: the same numbers as a numpy array of shape (n, len(types), 3).
    """

    __slots__ = ("types", "array", "scores", "mean")

    def __init__(self, types: List[str], flat: np.ndarray) -> None:
        import pandas as pd

        self.types = list(types)
        self.array = flat.reshape(-1, len(types), 3)
        cols = [f"{t}_{k}" for t in types for k in ("precision", "recall", "fmeasure")]
        self.scores = pd.DataFrame(self.array.reshape(len(self.array), -1), columns=cols)
        m = self.array.mean(axis=0)
        self.mean = {t: {"precision": float(m[i, 0]), "recall": float(m[i, 1]), "fmeasure": float(m[i, 2])}
                     for i, t in enumerate(types)}

    def fmeasure(self, rouge_type: str) -> np.ndarray:
        """F-measures of one ROUGE type, one per pair."""
        return self.array[:, self.types.index(rouge_type), 2]

    def __repr__(self) -> str:
        parts = ", ".join(f"{t}={v['fmeasure']:.4f}" for t, v in self.mean.items())
        return f"RougeResult(n={len(self.array)}, mean F: {parts})"


def rouge(
    hypotheses: StrArray,
    references: Any,
    *,
    types: Sequence[str] = ("rouge1", "rouge2", "rougeL"),
    use_stemmer: bool = False,
) -> RougeResult:
    """ROUGE precision / recall / F-measure identical to Google's ``rouge-score`` 0.1.2.

    Each pair is scored as ``RougeScorer(types, use_stemmer).score(reference,
    hypothesis)`` (its tokenizer; NLTK's Porter stemmer on tokens longer than 3
    characters when ``use_stemmer``; ``"rougeLsum"`` splits texts on newlines).
    With several reference streams (see :func:`bleu`), ``score_multi`` is used:
    per type the reference with the best F-measure.
    """
    if isinstance(types, str):
        types = (types,)
    types = [str(t) for t in types]
    if not types:
        raise InvalidInputError("types must not be empty")
    hyps, streams = _hyps_refs(hypotheses, references)
    flat = _loglm._rouge(hyps, streams, types, bool(use_stemmer))
    return RougeResult(types, flat)


__all__ += ["bleu", "sentence_bleu", "BleuResult", "rouge", "RougeResult"]


def llamafactory_scores(hypotheses: StrArray, references: StrArray) -> "pd.DataFrame":
    """The BLEU-4 / ROUGE scores of LLaMA-Factory's SFT evaluation
    (``src/llamafactory/train/sft/metric.py::ComputeSimilarity``), the numbers
    LLaMA-Factory prints as ``predict_bleu-4``, ``predict_rouge-1/2/l``.

    Unlike :func:`bleu` / :func:`rouge`, these are per-pair scores averaged over
    pairs: ``bleu-4`` is NLTK ``sentence_bleu`` over *characters* (spaces
    included) with smoothing method 3; ``rouge-1/2/l`` are ``rouge-chinese``
    F-measures over jieba tokens (set-based n-gram overlap, whole-text LCS, an
    ``1e-8`` in the F denominator). Each per-pair score is x100 and rounded to 4
    decimals, as LLaMA-Factory does.

    Returns a pandas DataFrame with one row per pair and columns ``bleu-4``,
    ``rouge-1``, ``rouge-2``, ``rouge-l``; ``df.mean().to_dict()`` is the
    LLaMA-Factory report.
    """
    import pandas as pd

    hyps = _as_list(hypotheses, "hypotheses")
    refs = _as_list(references, "references")
    _check_same_len(hypotheses=hyps, references=refs)
    flat = _loglm._llamafactory(hyps, refs)
    return pd.DataFrame(flat.reshape(-1, 4), columns=["bleu-4", "rouge-1", "rouge-2", "rouge-l"])


__all__ += ["llamafactory_scores"]
