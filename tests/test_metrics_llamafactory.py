"""Parity of loglm.metrics.llamafactory_scores with LLaMA-Factory's SFT
evaluation (ComputeSimilarity in src/llamafactory/train/sft/metric.py):
NLTK character BLEU-4 with smoothing method 3, rouge-chinese over jieba tokens."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from loglm import _loglm, metrics

jieba = pytest.importorskip("jieba")
rouge_chinese = pytest.importorskip("rouge_chinese")


def reference_scores(preds, labels):
    """Transcription of ComputeSimilarity.__call__'s loop (after decoding)."""
    rows = []
    for pred, label in zip(preds, labels):
        hypothesis = list(jieba.cut(pred))
        reference = list(jieba.cut(label))
        if len(" ".join(hypothesis).split()) == 0 or len(" ".join(reference).split()) == 0:
            result = {"rouge-1": {"f": 0.0}, "rouge-2": {"f": 0.0}, "rouge-l": {"f": 0.0}}
        else:
            rouge = rouge_chinese.Rouge()
            scores = rouge.get_scores(" ".join(hypothesis), " ".join(reference))
            result = scores[0]
        row = {k: round(v["f"] * 100, 4) for k, v in result.items()}
        bleu_score = sentence_bleu([list(label)], list(pred), smoothing_function=SmoothingFunction().method3)
        row["bleu-4"] = round(bleu_score * 100, 4)
        rows.append([row["bleu-4"], row["rouge-1"], row["rouge-2"], row["rouge-l"]])
    return np.array(rows)


def _perturb(text, rng):
    return " ".join(w for w in text.split(" ") if rng.random() > 0.2)


@pytest.fixture(scope="module")
def pairs(data_dir):
    rng = random.Random(5)
    hyps, refs = [], []
    for t in ("log_interpretation", "root_cause_analysis", "solution_recommendation"):
        for r in json.loads((data_dir / "loglm" / f"{t}_test.json").read_text())[:40]:
            hyps.append(_perturb(r["output"], rng))
            refs.append(r["output"])
    hyps += ["", "日志解析失败。请检查配置！", "Error?? code 42……再试"]
    refs += ["x", "日志解析成功。配置正确", "error code 42... retry?"]
    return hyps, refs


def test_llamafactory_loglm(pairs):
    hyps, refs = pairs
    df = metrics.llamafactory_scores(hyps, refs)
    want = reference_scores(hyps, refs)
    assert list(df.columns) == ["bleu-4", "rouge-1", "rouge-2", "rouge-l"]
    assert np.abs(df.to_numpy() - want).max() <= 1e-9
    assert 0 < df["rouge-l"].mean() < 100


def test_jieba_cut_matches_python(pairs, data_dir):
    hyps, refs = pairs
    texts = hyps + refs
    for t in ("log_interpretation", "root_cause_analysis", "solution_recommendation"):
        for r in json.loads((data_dir / "loglm" / f"{t}_test.json").read_text()):
            texts += [r["output"], r["input"]]
    texts += ["server-side v1.2.3 a_b 5% x.5 1.5a ..-- 日志-解析 e-mail"]
    for t in texts:
        assert _loglm._jieba_cut(t) == list(jieba.cut(t)), t


_chars = st.sampled_from(list("ab xy 12.?!。！？”’…，的日志错误 \n") + ["......", "……", "error ", "节点"])


@settings(max_examples=100, deadline=None)
@given(st.lists(_chars, max_size=30).map("".join), st.lists(_chars, max_size=30).map("".join))
def test_llamafactory_random(h, r):
    got = metrics.llamafactory_scores([h], [r]).to_numpy()
    assert np.abs(got - reference_scores([h], [r])).max() <= 1e-9
