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
