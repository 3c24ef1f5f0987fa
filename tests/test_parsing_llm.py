"""LLM in the loop with fake models: verification, cache hits, fallback, repairs."""
from __future__ import annotations

import pandas as pd
import pytest

from loglm.parsing import TemplateMiner, template_matches


class TableModel:
    """Fake model answering from a {line: template} table, recording its calls."""

    def __init__(self, table=None, default=None):
        self.table = table or {}
        self.default = default
        self.calls = []

    def propose_templates(self, lines, examples):
        self.calls.append((list(lines), list(examples)))
        return [self.table.get(line, self.default if self.default is not None else line) for line in lines]


@pytest.fixture(scope="module")
def hdfs(data_dir):
    df = pd.read_csv(data_dir / "loghub_2k_corrected" / "HDFS" / "HDFS_2k.log_structured_corrected.csv")
    return df["Content"].tolist(), df["EventTemplate"].tolist()


@pytest.fixture(scope="module")
def llm_budget():
    return {"llm_lines": 0, "true": 0, "systems": 0}


@pytest.mark.parametrize("system", ["HDFS", "Hadoop", "Proxifier", "Linux", "Zookeeper"])
def test_oracle_model_few_calls_and_exact_templates(data_dir, system, llm_budget):
    df = pd.read_csv(data_dir / "loghub_2k_corrected" / system / f"{system}_2k.log_structured_corrected.csv")
    lines, truth = df["Content"].tolist(), df["EventTemplate"].tolist()
    model = TableModel(dict(zip(lines, truth)))
    # canonical=False: the answers are the corrected ground truth verbatim (whose Zookeeper
    # templates keep `<*>:<*>`, against the conventions' rule; tested in test_parsing_quality)
    tm = TemplateMiner(model=model, batch_size=16, canonical=False)
    out = tm.parse(lines)
    assert "LlmRejected" in out
    n_true = len(set(truth))
    c = tm.counters
    assert c["llm_lines"] <= 2 * n_true, (c, n_true)
    llm_budget["llm_lines"] += c["llm_lines"]
    llm_budget["true"] += n_true
    llm_budget["systems"] += 1
    if llm_budget["systems"] == 5:  # issue target over the systems: <= 1.2x true templates
        assert llm_budget["llm_lines"] <= 1.2 * llm_budget["true"], llm_budget
    assert c["llm_calls"] == len(model.calls)
    # a few ground-truth templates disagree with what the tree saw of their group (refused;
    # that group's lines follow the tree): nearly every line is still the model's
    assert c["llm_refused"] == c["llm_rejected"]  # true templates always match their line
    assert c["cache_hits"] + c["llm_accepted"] >= 0.97 * len(lines)
    assert c["lines"] == len(lines)
    accepted = ~out["LlmRejected"]
    # lines whose template the model answered correctly get exactly the true template
    agree = [t == p for t, p in zip(truth, out["EventTemplate"])]
    assert sum(agree) >= 0.97 * len(lines)
    for content, tmpl in zip(out["Content"], out["EventTemplate"]):
        assert template_matches(tmpl, content)
    assert accepted.sum() >= len(lines) - c["llm_rejected"]


def test_streaming_cache_hits_and_examples(hdfs):
    lines, truth = hdfs
    model = TableModel(dict(zip(lines, truth)))
    tm = TemplateMiner(model=model, few_shot=2)
    results = [tm.add_log_message(line) for line in lines[:300]]
    assert all(template_matches(r["template_mined"], line) for r, line in zip(results, lines))
    assert sum(not r["cache_hit"] for r in results) == len(model.calls) == tm.counters["llm_calls"]
    assert tm.counters["cache_hits"] == sum(r["cache_hit"] for r in results) > 250
    # later calls got few-shot examples: (line, template) pairs of cached templates
    later = [ex for _, ex in model.calls[1:] if ex]
    assert later and all(template_matches(t, l) for exs in later for l, t in exs)
    assert all(len(exs) <= 2 for exs in later)
    # a line of a cached pattern is a hit, no model call
    n = len(model.calls)
    r = tm.add_log_message(lines[0])
    assert r["cache_hit"] and len(model.calls) == n
    assert tm.match(lines[0]).llm_verified


def test_rejected_templates_fall_back_and_are_flagged():
    model = TableModel(default="this template matches nothing <*>")
    tm = TemplateMiner(model=model)
    lines = ["disk 1 failed", "disk 2 failed", "fan ok", "disk 3 failed"]
    df = tm.parse(lines)
    assert df["LlmRejected"].any()
    assert tm.counters["llm_rejected"] >= 1 and tm.counters["llm_accepted"] == 0
    for content, tmpl in zip(df["Content"], df["EventTemplate"]):
        assert template_matches(tmpl, content)
    assert df["EventTemplate"][0] == "disk <*> failed"
    r = tm.add_log_message("cpu hot")
    assert r["llm_rejected"] and r["template_mined"] == "cpu hot"
    # an all-wildcard template is rejected too
    tm2 = TemplateMiner(model=TableModel(default="<*> <*>"))
    assert tm2.add_log_message("two words")["llm_rejected"]
    # ...even for a one-token line, where caching it would swallow every later line
    tm3 = TemplateMiner(model=TableModel(default="<*>"))
    assert tm3.add_log_message("12345")["llm_rejected"]
    df = tm3.parse(["OutputCommitter set in config null", "Using mapred newApiCommitter."])
    assert "<*>" not in set(df["EventTemplate"])
    # so is a shape without a literal letter: cached, `<*>=<*>` took the lines of every
    # `key=value` event that came later (BGL, issue 16)
    lines = ["fpr29=0xffffffff ffffffff", "ip=10.7.0.130 v=13 t=1 status=M", "(mc=e08x iar 0x0 lr 0xc004)"]
    assert TemplateMiner(model=TableModel(default="<*>=<*>")).add_log_message(lines[0])["llm_rejected"]
    tm4 = TemplateMiner(model=TableModel(default="<*>=<*>"))
    df = tm4.parse(lines)
    assert df["LlmRejected"].all() and "<*>=<*>" not in set(df["EventTemplate"])


def test_ghost_wildcards_are_rejected_so_values_do_not_split_an_event():
    # A model that keeps each line's number and adds a `<*>` matching nothing would make a
    # template per value; such answers are rejected and the tree's template is kept.
    lines = [f"{n} double-hummer alignment exceptions" for n in (199680, 1969920, 2576000, 6182400)]
    model = TableModel({line: line + "<*>" for line in lines})
    tm = TemplateMiner(model=model)
    df = tm.parse(lines)
    assert df["LlmRejected"][0]  # the pattern's one model call; the other lines follow the tree
    assert tm.counters["llm_accepted"] == 0 and tm.counters["llm_rejected"] >= 1
    assert set(df["EventTemplate"]) == {"<*> double-hummer alignment exceptions"}
    # the same line with a real variable is accepted
    tm2 = TemplateMiner(model=TableModel({lines[0]: "<*> double-hummer alignment exceptions"}))
    assert not tm2.add_log_message(lines[0])["llm_rejected"]


def test_model_must_return_one_template_per_line():
    class Short:
        def propose_templates(self, lines, examples):
            return []

    with pytest.raises(ValueError, match="templates"):
        TemplateMiner(model=Short()).parse(["a 1", "b 2"])


def test_over_and_under_merge_repairs():
    # The tree merges these two (same length, 4 of 6 tokens equal); the model says they differ.
    a = "Connection closed by peer 10.0.0.1 now"
    b = "Connection refused by peer 10.0.0.2 now"
    table = {a: "Connection closed by peer <*> now", b: "Connection refused by peer <*> now"}
    plain = TemplateMiner()
    assert plain.add_log_message(a)["cluster_id"] == plain.add_log_message(b)["cluster_id"]
    tm = TemplateMiner(model=TableModel(table))
    ra, rb = tm.add_log_message(a), tm.add_log_message(b)
    assert ra["cluster_id"] != rb["cluster_id"]
    assert (ra["template_mined"], rb["template_mined"]) == (table[a], table[b])
    assert tm.counters["over_merge_repairs"] == 1
    # The tree splits these (different token counts); the model gives one template: joined.
    c = "Failed password for root from 1.2.3.4"
    d = "Failed password for invalid user admin from 1.2.3.5"
    t = "Failed password for <*> from <*>"
    plain = TemplateMiner()
    assert plain.add_log_message(c)["cluster_id"] != plain.add_log_message(d)["cluster_id"]
    model = TableModel({c: t, d: t})
    tm = TemplateMiner(model=model)
    rc = tm.add_log_message(c)
    rd = tm.add_log_message(d)
    assert rc["cluster_id"] == rd["cluster_id"] and rd["cluster_size"] == 2
    assert rd["cache_hit"] and len(model.calls) == 1  # found through the template cache


def test_llm_state_round_trip_keeps_cache(hdfs):
    lines, truth = hdfs
    tm = TemplateMiner(model=TableModel(dict(zip(lines, truth))))
    tm.parse(lines[:500])
    model2 = TableModel()
    tm2 = TemplateMiner(model=model2)
    tm2.load_state(tm.save_state())
    out = tm2.parse(lines[:500])
    assert model2.calls == []  # every line is a cache hit after loading
    assert out["EventTemplate"].tolist() == truth[:500]
    # merging an LLM-built tree joins identical templates by id
    tm3 = TemplateMiner(model=TableModel(dict(zip(lines, truth))))
    tm3.parse(lines[500:1000])
    before = {c.template_id for c in tm2.clusters}
    tm2.merge(tm3)
    ids = [c.template_id for c in tm2.clusters if c.llm_verified]
    assert len(ids) == len(set(ids)) and before <= set(ids)
