"""Evaluation harness on tiny limits (real model, real data)."""
from __future__ import annotations

import json

import pytest

import loglm
from loglm.evaluate import evaluate, evaluate_anomaly, evaluate_parsing, to_markdown, write_partial, write_results


@pytest.fixture(scope="module")
def model():
    return loglm.LogLM.load(threads=2, context_length=1024)


class TableModel:
    """Fake LLM answering the true template (checks the harness, not a model)."""

    def __init__(self, table):
        self.table = table

    def propose_templates(self, lines, examples):
        return [self.table[x] for x in lines]


def test_parsing_rows_baseline_and_oracle(data_dir):
    from loglm.datasets import load_parsing

    df = load_parsing("Proxifier", data_dir).iloc[:300]
    oracle = TableModel(dict(zip(df["Content"], df["EventTemplateCorrected"])))
    rows = evaluate_parsing(oracle, systems=["Proxifier"], limit=300, root=data_dir)
    assert [r["parser"] for r in rows] == ["template tree (no LLM)", "tree + LLM"]
    base, llm = rows
    assert llm["GA"] == pytest.approx(1.0) and llm["PA"] >= 0.97 and llm["llm_lines"] > 0
    assert base["lines"] == 300 and 0 <= base["RI"] <= 1 and 0 <= base["F1"] <= 1
    assert "llm_lines" not in base


def test_parsing_rows_with_labelled_training_lines(data_dir):
    from loglm.datasets import load_parsing

    df = load_parsing("Proxifier", data_dir).iloc[:300]
    oracle = TableModel(dict(zip(df["Content"], df["EventTemplateCorrected"])))
    plain = evaluate_parsing(oracle, systems=["Proxifier"], limit=300, root=data_dir)
    rows = evaluate_parsing(oracle, systems=["Proxifier"], limit=300, root=data_dir, labelled="train")
    assert [r["parser"] for r in rows] == ["template tree (no LLM)", "tree + labelled", "tree + labelled + LLM",
                                           "tree + labelled (original GT)", "tree + labelled (original GT) + LLM"]
    base, lab, both, orig, orig_llm = rows
    assert base == dict(plain[0], seconds=base["seconds"])  # the baseline stays unlabelled
    assert lab["PA"] > base["PA"] + 0.5 and "llm_lines" not in lab
    # lines a labelled template covers never reach the model
    assert both["llm_lines"] < plain[1]["llm_lines"] and both["PA"] >= lab["PA"]
    # seeded with the original templates: the original ground truth's variables, not the corrected one's
    assert orig["F1"] > lab["F1"] and orig["PA"] < lab["PA"] and "llm_lines" not in orig and "llm_lines" in orig_llm
    loso = evaluate_parsing(None, systems=["Proxifier"], limit=300, root=data_dir, labelled="loso")
    assert [r["parser"] for r in loso] == ["template tree (no LLM)", "tree + labelled"]
    assert loso[1]["PA"] == pytest.approx(base["PA"])  # other systems' labels do not apply here
    with pytest.raises(ValueError):
        evaluate_parsing(None, systems=["Proxifier"], limit=1, root=data_dir, labelled="test")


def test_evaluate_all_tiny_is_deterministic(model, data_dir, tmp_path):
    kw = dict(model=model, systems=["HDFS"], limit=2, max_new_tokens=8, root=data_dir)
    a = evaluate("all", **kw)
    b = evaluate("all", **kw)
    for k in ("parsing", "anomaly", "irs"):
        assert a[k] == [dict(r, seconds=r2["seconds"]) for r, r2 in zip(b[k], a[k])] or all(
            {x: y for x, y in r.items() if x != "seconds"} == {x: y for x, y in r2.items() if x != "seconds"}
            for r, r2 in zip(a[k], b[k]))
    m = a["meta"]
    assert len(m["model_sha256"]) == 64 and m["loglm_version"] == loglm.__version__
    assert m["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert [r["task"] for r in a["irs"]] == ["interpretation", "root_cause", "solution"]
    assert all(r["pairs"] == 2 for r in a["irs"]) and [r["system"] for r in a["anomaly"]] == ["BGL", "Spirit"]
    md = to_markdown(a)
    for title in ("Table II", "Table III", "Table IV", "HDFS RI", "GA", "ROUGE-L", m["model_sha256"]):
        assert title in md
    paths = write_results(a, tmp_path)
    assert json.loads(paths["json"].read_text())["meta"]["model_sha256"] == m["model_sha256"]
    assert paths["markdown"].read_text() == md


def test_checkpoint_gets_each_finished_row(model, data_dir, tmp_path):
    seen = []
    res = evaluate("anomaly", model=model, limit=2, root=data_dir,
                   checkpoint=lambda r: seen.append([row["system"] for row in r["anomaly"]]))
    assert seen == [["BGL"], ["BGL", "Spirit"]]
    p = write_partial(res, tmp_path)
    assert p.name.endswith(".partial.json") and json.loads(p.read_text())["partial"] is True
    write_results(res, tmp_path)
    assert not p.exists() and len(list(tmp_path.glob("*.json"))) == 1


def test_anomaly_metrics_follow_scores(model, data_dir):
    r0 = evaluate_anomaly(model, systems=["bgl"], limit=3, threshold=0.0, root=data_dir)[0]
    assert r0["predicted_abnormal"] == 3 and r0["recall"] in (0.0, 1.0)
    with pytest.raises(ValueError, match="unknown evaluation"):
        evaluate("summaries", model=model)


class KeywordModel:
    """Fake detector: P(abnormal) from one word (checks the harness, not a model)."""

    def anomaly_scores(self, texts, progress=None):
        return [0.9 if "error" in t.lower() else (0.3 if "fail" in t.lower() else 0.01) for t in texts]


def test_threshold_chosen_on_training_templates_and_scores_kept(data_dir):
    from loglm.anomaly import best_f1_threshold
    from loglm.datasets import load_anomaly
    from loglm.metrics import classification_scores

    m = KeywordModel()
    rows = evaluate_anomaly(m, systems=["bgl"], root=data_dir, train_threshold=True)
    (r,) = rows
    tr = load_anomaly("bgl", data_dir, split="train")
    th, f1 = best_f1_threshold((tr["Label"] == "abnormal").to_numpy(), m.anomaly_scores(tr["log"].tolist()))
    assert r["threshold_train"] == th and r["F1_train_templates"] == f1 and r["train_templates"] == len(tr)
    assert th not in (0.9, 0.3, 0.01)  # between training scores, never on one
    te = load_anomaly("bgl", data_dir, split="test")
    assert r["scores"] == m.anomaly_scores(te["log"].tolist()) and len(r["scores"]) == r["templates"]
    pred = ["abnormal" if s >= th else "normal" for s in r["scores"]]
    assert r["F1_train_threshold"] == classification_scores(te["Label"].tolist(), pred)["f1"]
    assert r["predicted_abnormal_train_threshold"] == pred.count("abnormal")
    # with a limit the training pass is skipped unless asked for
    assert "threshold_train" not in evaluate_anomaly(m, systems=["bgl"], limit=5, root=data_dir)[0]
