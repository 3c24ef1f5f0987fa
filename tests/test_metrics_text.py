"""Parity of loglm.metrics.bleu with sacrebleu 2.6.0 and of loglm.metrics.rouge
with Google's rouge-score 0.1.2 (with and without stemmer, rougeLsum), on the
LogLM test sets and on generated text."""
from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.stem import porter
from rouge_score import rouge_scorer

from loglm import _loglm, metrics

TOL = 1e-9
TASKS = ["log_interpretation", "root_cause_analysis", "solution_recommendation"]


def _perturb(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    out = []
    for w in words:
        r = rng.random()
        if r < 0.15:
            continue
        if r < 0.25:
            out.append(rng.choice(words))
        elif r < 0.3:
            out.append(w.upper())
        else:
            out.append(w)
        if rng.random() < 0.02:
            out.append("\n")
    return " ".join(out)


@pytest.fixture(scope="module")
def loglm_pairs(data_dir):
    """(hypotheses, references): perturbed answers and the true answers of the
    three LogLM test sets, plus answers of one task scored against another."""
    rng = random.Random(0)
    hyps, refs = [], []
    sets = {t: [r["output"] for r in json.loads((data_dir / "loglm" / f"{t}_test.json").read_text())] for t in TASKS}
    for t in TASKS:
        for o in sets[t]:
            hyps.append(_perturb(o, rng))
            refs.append(o)
    for a, b in zip(sets[TASKS[0]], sets[TASKS[1]]):
        hyps.append(a)
        refs.append(b)
    hyps.append("")  # empty hypothesis
    refs.append("something")
    return hyps, refs


# ------------------------------------------------------------------------------ BLEU


def _check_bleu(hyps, streams, **kw):
    ours = metrics.bleu(hyps, streams if len(streams) > 1 else streams[0], **kw)
    sb_kw = {k: v for k, v in kw.items() if k != "effective_order"}
    ref = sacrebleu.BLEU(**{("tokenize" if k == "tokenize" else k): v for k, v in sb_kw.items()})
    want = ref.corpus_score(hyps, streams)
    assert abs(ours.score - want.score) <= TOL, (ours.score, want.score)
    assert list(ours.counts) == list(want.counts)
    assert list(ours.totals) == list(want.totals)
    assert (ours.sys_len, ours.ref_len) == (want.sys_len, want.ref_len)
    assert abs(ours.bp - want.bp) <= TOL
    assert ours.signature == str(ref.get_signature())
    assert ours.format() == want.format()
    # sentence BLEU: sacrebleu.sentence_bleu per pair (effective order on)
    sent = ours.sentence_scores
    sbl = sacrebleu.BLEU(effective_order=True, **sb_kw)
    for i, h in enumerate(hyps):
        rs = [s[i] for s in streams if s[i] is not None]
        w = sbl.sentence_score(h, rs).score
        assert abs(sent[i] - w) <= TOL, (i, sent[i], w)
    if not ours.signature.startswith("nrefs:var"):
        assert ours.sentence_signature == str(sbl.get_signature())
    return ours


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"tokenize": "intl"},
        {"tokenize": "char"},
        {"tokenize": "none"},
        {"lowercase": True},
        {"smooth_method": "floor"},
        {"smooth_method": "floor", "smooth_value": 0.3},
        {"smooth_method": "add-k"},
        {"smooth_method": "add-k", "smooth_value": 0.5},
        {"smooth_method": "none"},
        {"max_ngram_order": 2},
    ],
)
def test_bleu_loglm_test_sets(loglm_pairs, kw):
    hyps, refs = loglm_pairs
    r = _check_bleu(hyps, [refs], **kw)
    assert 0 < r.score < 100


def test_bleu_multi_and_variable_refs(loglm_pairs):
    hyps, refs = loglm_pairs
    rng = random.Random(1)
    second = [_perturb(r, rng) for r in refs]
    _check_bleu(hyps, [refs, second])
    third = [None if i % 3 else r for i, r in enumerate(second)]
    r = _check_bleu(hyps, [refs, third])
    assert r.signature.startswith("nrefs:var|")


def test_bleu_effective_order_corpus():
    hyps = ["the cat", "a dog sat on the mat"]
    refs = ["the cat sat", "a dog sat on a mat"]
    ours = metrics.bleu(hyps, refs, effective_order=True)
    want = sacrebleu.BLEU(effective_order=True).corpus_score(hyps, [refs])
    assert abs(ours.score - want.score) <= TOL
    assert "eff:yes" in ours.signature


_alphabet = st.sampled_from(list("abcAB xyz019.,-;:!?'\"&()[]{}<>/\\@#$%^*+=_~`|\n\tÉéß中文…€—") + ["&amp;", "&lt;", "<skipped>", "-\n", " the ", " 3.5 "])
_text = st.lists(_alphabet, max_size=40).map("".join)


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(_text, _text), min_size=1, max_size=6), st.sampled_from(["13a", "intl", "char", "none"]),
       st.sampled_from(["exp", "floor", "add-k", "none"]), st.booleans())
def test_bleu_random_text(pairs, tok, smooth, lc):
    hyps = [h for h, _ in pairs]
    refs = [r for _, r in pairs]
    _check_bleu(hyps, [refs], tokenize=tok, smooth_method=smooth, lowercase=lc)


@settings(max_examples=200, deadline=None)
@given(_text, st.sampled_from(["13a", "intl", "char", "none"]))
def test_bleu_tokenizers_random(text, tok):
    ref = sacrebleu.BLEU(tokenize=tok)
    want = ref._preprocess_segment(text).split()
    assert _loglm._bleu_tokenize(text, tok, False) == want


def test_bleu_bad_input():
    with pytest.raises(ValueError, match="empty"):
        metrics.bleu([], [])
    with pytest.raises(ValueError, match="length mismatch"):
        metrics.bleu(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="None"):
        metrics.bleu(["a", None], ["a", "b"])
    with pytest.raises(ValueError, match="None"):
        metrics.bleu(["a", "b"], ["a", None])
    with pytest.raises(ValueError, match="tokenizer"):
        metrics.bleu(["a"], ["a"], tokenize="zz")
    with pytest.raises(ValueError, match="smooth_method"):
        metrics.bleu(["a"], ["a"], smooth_method="zz")
    with pytest.raises(ValueError, match="UTF-8"):
        metrics.bleu([b"\xff"], ["a"])
    with pytest.raises(ValueError, match="no reference"):
        metrics.bleu(["a", "b"], [["a", None], [None, None]])


def test_bleu_accepts_numpy_and_pandas(loglm_pairs):
    hyps, refs = loglm_pairs
    a = metrics.bleu(np.array(hyps, dtype=object), pd.Series(refs))
    b = metrics.bleu(hyps, refs)
    assert a.score == b.score
    assert np.array_equal(a.sentence_scores, b.sentence_scores)


# ----------------------------------------------------------------------------- ROUGE

ALL_TYPES = ["rouge1", "rouge2", "rouge3", "rougeL", "rougeLsum"]


def _check_rouge(hyps, refs, types, use_stemmer):
    ours = metrics.rouge(hyps, refs, types=types, use_stemmer=use_stemmer)
    sc = rouge_scorer.RougeScorer(types, use_stemmer=use_stemmer)
    for i, (h, r) in enumerate(zip(hyps, refs)):
        want = sc.score(r, h)
        for j, t in enumerate(types):
            got = ours.array[i, j]
            w = want[t]
            assert abs(got[0] - w.precision) <= TOL and abs(got[1] - w.recall) <= TOL \
                and abs(got[2] - w.fmeasure) <= TOL, (i, t, got, w)
    return ours


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_loglm_test_sets(loglm_pairs, use_stemmer):
    hyps, refs = loglm_pairs
    r = _check_rouge(hyps, refs, ALL_TYPES, use_stemmer)
    assert 0 < r.mean["rougeL"]["fmeasure"] < 1
    assert list(r.scores.columns[:3]) == ["rouge1_precision", "rouge1_recall", "rouge1_fmeasure"]
    assert r.scores.shape == (len(hyps), 3 * len(ALL_TYPES))
    assert r.mean["rouge1"]["fmeasure"] == pytest.approx(r.fmeasure("rouge1").mean())


def test_rouge_lsum_alone_and_multi_ref(loglm_pairs):
    hyps, refs = loglm_pairs
    _check_rouge(hyps[:80], refs[:80], ["rougeLsum"], True)
    rng = random.Random(3)
    second = [_perturb(r, rng) for r in refs[:60]]
    types = ["rouge1", "rougeL"]
    ours = metrics.rouge(hyps[:60], [refs[:60], second], types=types)
    sc = rouge_scorer.RougeScorer(types)
    for i in range(60):
        want = sc.score_multi([refs[i], second[i]], hyps[i])
        for j, t in enumerate(types):
            assert abs(ours.array[i, j, 2] - want[t].fmeasure) <= TOL


_words = st.sampled_from(
    ["running", "ran", "generalizations", "happy", "skies", "dying", "controlling", "hopping", "agreed",
     "relational", "analogies", "logically", "The", "a", "ERROR:", "blk_123", "10.0.0.1", "node-7", "é", "İstanbul",
     "K", "fully", "sensibility", "\n", "\n\n", ".", "it's", "conditionally", "yyy", "eyeing"]
)
_sent = st.lists(_words, max_size=25).map(" ".join)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_sent, _sent), min_size=1, max_size=5), st.booleans())
def test_rouge_random_text(pairs, stem):
    _check_rouge([h for h, _ in pairs], [r for _, r in pairs], ALL_TYPES, stem)


def test_porter_matches_nltk_on_vocabulary(data_dir):
    recs = json.loads((data_dir / "loglm" / "instructions_train.json").read_text())
    vocab = set()
    for r in recs:
        for field in ("instruction", "input", "output"):
            vocab.update(_loglm._rouge_tokenize(r[field], False))
    vocab = sorted(w for w in vocab if len(w) > 3)
    assert len(vocab) > 5000
    st_ = porter.PorterStemmer()
    want = [st_.stem(w) for w in vocab]
    got = _loglm._porter_stem(vocab)
    bad = [(w, g, x) for w, g, x in zip(vocab, got, want) if g != x]
    assert not bad, bad[:20]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abcdeilnostuyz", min_size=3, max_size=12))
def test_porter_random_words(w):
    assert _loglm._porter_stem([w]) == [porter.PorterStemmer().stem(w)]


def test_rouge_bad_input():
    with pytest.raises(ValueError, match="empty"):
        metrics.rouge([], [])
    with pytest.raises(ValueError, match="length mismatch"):
        metrics.rouge(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="invalid rouge type"):
        metrics.rouge(["a"], ["a"], types=["rougeX"])
    with pytest.raises(ValueError, match="None"):
        metrics.rouge([None], ["a"])
