"""Parity tests of loglm.metrics: parsing metrics (scikit-learn, loghub-2.0,
LogLM's variable F1) and classification metrics (scikit-learn)."""
from __future__ import annotations

import random
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    accuracy_score,
    adjusted_rand_score,
    f1_score,
    precision_score,
    rand_score,
    recall_score,
)

from loglm import metrics

SYSTEMS = ["HDFS", "Hadoop", "Zookeeper", "BGL", "HPC", "Linux", "Proxifier"]
TOL = 1e-9


# --------------------------------------------------------------------------------------
# Faithful transcription of the loghub-2.0 evaluator (github.com/logpai/loghub-2.0,
# evaluation/utils/GA_calculator.py::get_accuracy, PA_calculator.py::
# calculate_parsing_accuracy, template_level_analysis.py::evaluate_template_level),
# without the template filter and the printing.
# --------------------------------------------------------------------------------------
def loghub_ga_fga(series_groundtruth: pd.Series, series_parsedlog: pd.Series):
    series_groundtruth_valuecounts = series_groundtruth.value_counts()
    series_parsedlog_valuecounts = series_parsedlog.value_counts()
    df_combined = pd.concat([series_groundtruth, series_parsedlog], axis=1, keys=["groundtruth", "parsedlog"])
    grouped_df = df_combined.groupby("groundtruth")
    accurate_events = 0
    accurate_templates = 0
    for ground_truthId, group in grouped_df:
        series_parsedlog_logId_valuecounts = group["parsedlog"].value_counts()
        if series_parsedlog_logId_valuecounts.size == 1:
            parsed_eventId = series_parsedlog_logId_valuecounts.index[0]
            if len(group) == series_parsedlog[series_parsedlog == parsed_eventId].size:
                accurate_events += len(group)
                accurate_templates += 1
    GA = float(accurate_events) / len(series_groundtruth)
    PGA = float(accurate_templates) / len(series_parsedlog_valuecounts)
    RGA = float(accurate_templates) / len(series_groundtruth_valuecounts)
    FGA = 0.0
    if PGA != 0 or RGA != 0:
        FGA = 2 * (PGA * RGA) / (PGA + RGA)
    return GA, FGA


def loghub_pa(groundtruth_df: pd.DataFrame, parsedresult_df: pd.DataFrame):
    correctly_parsed_messages = parsedresult_df[["EventTemplate"]].eq(groundtruth_df[["EventTemplate"]]).values.sum()
    total_messages = len(parsedresult_df[["Content"]])
    return float(correctly_parsed_messages) / total_messages


def loghub_template_level(df_groundtruth: pd.DataFrame, df_parsedresult: pd.DataFrame):
    correct_parsing_templates = 0
    series_groundtruth = df_groundtruth["EventTemplate"]
    series_parsedlog = df_parsedresult["EventTemplate"]
    series_groundtruth_valuecounts = series_groundtruth.value_counts()
    df_combined = pd.concat([series_groundtruth, series_parsedlog], axis=1, keys=["groundtruth", "parsedlog"])
    grouped_df = df_combined.groupby("parsedlog")
    for identified_template, group in grouped_df:
        corr_oracle_templates = set(list(group["groundtruth"]))
        if corr_oracle_templates == {identified_template}:
            correct_parsing_templates += 1
    PTA = correct_parsing_templates / len(grouped_df)
    RTA = correct_parsing_templates / len(series_groundtruth_valuecounts)
    FTA = 0.0
    if PTA != 0 or RTA != 0:
        FTA = 2 * (PTA * RTA) / (PTA + RTA)
    return PTA, RTA, FTA


# LogLM's token-level variable F1, written from the definition in the issue.
def ref_variable_mask(log: str, template: str):
    spans = [m.span() for m in re.finditer(r"\S+", log)]
    rx = "^" + "(.*?)".join(re.escape(p) for p in template.split("<*>")) + "$"
    m = re.match(rx, log, flags=re.S)
    if m is not None:
        groups = [m.span(i) for i in range(1, (m.lastindex or 0) + 1)]
        groups = [g for g in groups if g[1] > g[0]]
        return [any(gs < te and ge > ts for gs, ge in groups) for ts, te in spans]
    ttoks = template.split()
    tail = bool(ttoks) and "<*>" in ttoks[-1]
    return [("<*>" in ttoks[i]) if i < len(ttoks) else tail for i in range(len(spans))]


def ref_variable_prf(logs, truth, pred):
    tp = fp = fn = 0
    for log, t, p in zip(logs, truth, pred):
        for a, b in zip(ref_variable_mask(log, t), ref_variable_mask(log, p)):
            tp += a and b
            fp += b and not a
            fn += a and not b
    P = tp / (tp + fp) if tp + fp else 0.0
    R = tp / (tp + fn) if tp + fn else 0.0
    F = 2 * (P * R) / (P + R) if (P or R) else 0.0
    return P, R, F


def reference_parsing(logs, truth, pred):
    gt = pd.DataFrame({"Content": list(logs), "EventTemplate": list(truth)})
    pr = pd.DataFrame({"Content": list(logs), "EventTemplate": list(pred)})
    ga, fga = loghub_ga_fga(gt["EventTemplate"], pr["EventTemplate"])
    pta, rta, fta = loghub_template_level(gt, pr)
    vp, vr, vf = ref_variable_prf(logs, truth, pred)
    return {
        "RI": rand_score(truth, pred),
        "ARI": adjusted_rand_score(truth, pred),
        "GA": ga,
        "FGA": fga,
        "PA": loghub_pa(gt, pr),
        "PTA": pta,
        "RTA": rta,
        "FTA": fta,
        "var_P": vp,
        "var_R": vr,
        "var_F1": vf,
    }


def assert_scores_equal(got, want):
    assert set(got) == set(want)
    for k in want:
        assert abs(got[k] - want[k]) <= TOL, (k, got[k], want[k])


def load_system(data_dir, system):
    corr = pd.read_csv(data_dir / "loghub_2k_corrected" / system / f"{system}_2k.log_structured_corrected.csv")
    orig = pd.read_csv(data_dir / "loghub_2k" / system / f"{system}_2k.log_structured.csv")
    assert (corr["Content"].values == orig["Content"].values).all()
    return corr["Content"].tolist(), corr["EventTemplate"].tolist(), orig["EventTemplate"].tolist()


def perturb(truth, rng: random.Random):
    """A plausible wrong parse: merge some groups, split others, rewrite tokens."""
    uniq = sorted(set(truth))
    remap = {}
    for t in uniq:
        r = rng.random()
        if r < 0.2:
            remap[t] = rng.choice(uniq)  # merge into another group
        elif r < 0.4:
            toks = t.split(" ")
            i = rng.randrange(len(toks))
            toks[i] = "<*>" if rng.random() < 0.5 else toks[i] + "x"
            remap[t] = " ".join(toks)
        elif r < 0.5:
            remap[t] = t.replace("<*>", "<*> <*>", 1) if "<*>" in t else "<*> " + t
        else:
            remap[t] = t
    out = []
    for t in truth:
        p = remap[t]
        if rng.random() < 0.05:
            p = p + " <*>"  # split the group
        out.append(p)
    return out


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("system", SYSTEMS)
def test_parsing_scores_loghub_original_vs_corrected(data_dir, system):
    logs, corrected, original = load_system(data_dir, system)
    got = metrics.parsing_scores(logs, corrected, original)
    assert list(got) == ["RI", "ARI", "GA", "FGA", "PA", "PTA", "RTA", "FTA", "var_P", "var_R", "var_F1"]
    assert_scores_equal(got, reference_parsing(logs, corrected, original))


@pytest.mark.parametrize("system", ["HDFS", "BGL", "Linux"])
def test_parsing_scores_loghub_perturbed(data_dir, system):
    logs, truth, _ = load_system(data_dir, system)
    pred = perturb(truth, random.Random(system))
    got = metrics.parsing_scores(pd.Series(logs), np.array(truth), pred)
    want = reference_parsing(logs, truth, pred)
    assert_scores_equal(got, want)
    assert got["GA"] < 1.0 and got["var_F1"] < 1.0


def test_parsing_perfect_and_known_values():
    logs = ["open file a.txt", "open file b.txt", "close 3", "close 4", "boot"]
    truth = ["open file <*>", "open file <*>", "close <*>", "close <*>", "boot"]
    s = metrics.parsing_scores(logs, truth, truth)
    assert all(s[k] == 1.0 for k in s)
    pred = ["open file <*>", "open file <*>", "close 3", "close 4", "boot"]
    s = metrics.parsing_scores(logs, truth, pred)
    assert s["GA"] == pytest.approx(3 / 5) and s["PA"] == pytest.approx(3 / 5)
    assert s["PTA"] == pytest.approx(2 / 4) and s["RTA"] == pytest.approx(2 / 3)
    assert s["var_P"] == 1.0 and s["var_R"] == pytest.approx(2 / 4)


def test_normalize_whitespace_option():
    logs = ["a  1", "a 2"]
    truth = ["a <*>", "a <*>"]
    pred = ["a  <*>", "a <*>"]
    assert metrics.parsing_scores(logs, truth, pred)["PA"] == 0.5
    assert metrics.parsing_scores(logs, truth, pred, normalize_whitespace=True)["PA"] == 1.0


_tok = st.sampled_from(["a", "b", "c", "x1", "42", "<*>", "<*>:", "k=<*>", "[<*>]", "é", "中"])


@st.composite
def _triples(draw):
    n = draw(st.integers(1, 25))
    pool = [" ".join(draw(st.lists(_tok, min_size=1, max_size=5))) for _ in range(draw(st.integers(1, 5)))]
    truth = [draw(st.sampled_from(pool)) for _ in range(n)]
    pred = [draw(st.sampled_from(pool + ["<*>", "a <*>"])) for _ in range(n)]
    logs = []
    for t in truth:
        fill = lambda m: draw(st.sampled_from(["1", "x y", "", "ab:c", "7 8 9", "中文"]))
        logs.append(re.sub(r"<\*>", fill, t) + draw(st.sampled_from(["", "", " tail"])))
    return logs, truth, pred


@settings(max_examples=150, deadline=None)
@given(_triples())
def test_parsing_scores_random(tr):
    logs, truth, pred = tr
    assert_scores_equal(metrics.parsing_scores(logs, truth, pred), reference_parsing(logs, truth, pred))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab <*>:\t中", max_size=20), st.text(alphabet="ab <*>:\t中", max_size=20))
def test_variable_mask_random(log, template):
    assert metrics.variable_mask(log, template) == ref_variable_mask(log, template)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 6), min_size=1, max_size=60).flatmap(
        lambda a: st.tuples(st.just(a), st.lists(st.integers(0, 6), min_size=len(a), max_size=len(a)))
    )
)
def test_rand_index_random_vs_sklearn(pair):
    a, b = pair
    assert abs(metrics.rand_index(a, b) - rand_score(a, b)) <= TOL
    assert abs(metrics.adjusted_rand_index(a, b) - adjusted_rand_score(a, b)) <= TOL
    sa, sb = [f"t{x}" for x in a], [f"p{x}" for x in b]
    assert metrics.rand_index(sa, sb) == metrics.rand_index(a, b)
    assert metrics.adjusted_rand_index(sa, sb) == metrics.adjusted_rand_index(a, b)


def test_rand_index_large_exact():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 50, 30000)
    b = np.where(rng.random(30000) < 0.8, a, rng.integers(0, 60, 30000))
    assert abs(metrics.adjusted_rand_index(a, b) - adjusted_rand_score(a, b)) <= TOL
    assert abs(metrics.rand_index(a, b) - rand_score(a, b)) <= TOL


# ------------------------------------------------------------------------ input checks


@pytest.mark.parametrize(
    "args, match",
    [
        (([], [], []), "empty"),
        ((["a"], ["a"], ["a", "b"]), "length mismatch"),
        ((["a", None], ["a", "b"], ["a", "b"]), "None"),
        ((["a", float("nan")], ["a", "b"], ["a", "b"]), "NaN"),
        ((["a"], [b"\xff"], ["a"]), "UTF-8"),
        ((["a"], ["\ud800"], ["a"]), "UTF-8"),
        ((np.array([], dtype=str), [], []), "empty"),
    ],
)
def test_parsing_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        metrics.parsing_scores(*args)


def test_inputs_numpy_pandas_bytes_accepted():
    logs = np.array(["x 1", "x 2"])
    t = pd.Series(["x <*>", "x <*>"])
    p = [b"x <*>", "x 2"]
    s = metrics.parsing_scores(logs, t, p)
    assert s["PA"] == 0.5
    with pytest.raises(TypeError):
        metrics.parsing_scores("abc", "abc", "abc")
    with pytest.raises(ValueError, match="length mismatch"):
        metrics.rand_index([1, 2], [1])
    with pytest.raises(ValueError, match="missing"):
        metrics.rand_index([1, None], [1, 2])


# ---------------------------------------------------------------------- classification


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(["normal", "abnormal"]), min_size=1, max_size=50).flatmap(
        lambda a: st.tuples(st.just(a), st.lists(st.sampled_from(["normal", "abnormal"]), min_size=len(a), max_size=len(a)))
    )
)
def test_classification_random_vs_sklearn(pair):
    y, p = pair
    s = metrics.classification_scores(y, p, pos_label="abnormal")
    kw = dict(pos_label="abnormal", zero_division=0)
    assert abs(s["precision"] - precision_score(y, p, **kw)) <= TOL
    assert abs(s["recall"] - recall_score(y, p, **kw)) <= TOL
    assert abs(s["f1"] - f1_score(y, p, **kw)) <= TOL
    assert abs(s["accuracy"] - accuracy_score(y, p)) <= TOL
    assert s["tp"] + s["fp"] + s["fn"] + s["tn"] == len(y)


def test_classification_logprompt_templates(data_dir):
    for name in ("bgl", "spirit"):
        df = pd.read_csv(data_dir / "logprompt" / f"templates_{name}.csv")
        y = df["label"].to_numpy()
        rng = np.random.default_rng(1)
        pred = np.where(rng.random(len(y)) < 0.9, y, 1 - y)
        s = metrics.classification_scores(y, pred, pos_label=1)
        assert abs(s["f1"] - f1_score(y, pred, pos_label=1)) <= TOL
        assert abs(s["precision"] - precision_score(y, pred, zero_division=0)) <= TOL
        assert abs(s["recall"] - recall_score(y, pred)) <= TOL
        assert 0 < s["f1"] < 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_session_scores_random(rows):
    sid = [f"blk_{r[0]}" for r in rows]
    yt = ["abnormal" if r[1] else "normal" for r in rows]
    yp = ["abnormal" if r[2] else "normal" for r in rows]
    df = pd.DataFrame({"sid": sid, "t": [r[1] for r in rows], "p": [r[2] for r in rows]})
    g = df.groupby("sid", sort=False).any()
    s = metrics.session_scores(sid, yt, yp)
    assert abs(s["f1"] - f1_score(g["t"], g["p"], zero_division=0)) <= TOL
    assert abs(s["precision"] - precision_score(g["t"], g["p"], zero_division=0)) <= TOL
    assert abs(s["recall"] - recall_score(g["t"], g["p"], zero_division=0)) <= TOL
    assert abs(s["accuracy"] - accuracy_score(g["t"], g["p"])) <= TOL
    lab = metrics.session_labels(sid, yt)
    assert list(lab.index) == list(g.index) and list(lab.values) == list(g["t"].values)


def test_classification_bad_input():
    with pytest.raises(ValueError, match="empty"):
        metrics.classification_scores([], [])
    with pytest.raises(ValueError, match="length mismatch"):
        metrics.classification_scores(["normal"], ["normal", "abnormal"])
    with pytest.raises(ValueError, match="missing"):
        metrics.classification_scores(["normal", None], ["normal", "abnormal"])
    with pytest.raises(ValueError, match="length mismatch"):
        metrics.session_scores([1, 2], ["normal"] * 2, ["normal"] * 3)
