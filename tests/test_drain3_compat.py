"""drain3 drop-in: drain3 0.9.11's own template-miner / masking / Drain unit tests, ported
to loglm.TemplateMiner (github.com/logpai/Drain3 tests/test_template_miner.py,
test_masking.py, test_drain.py), plus parity runs against drain3 itself (installed with
the test extra): masking with names, LRU max_clusters, snapshots, .ini files."""
from __future__ import annotations

import base64
import json
import zlib

import pytest

from loglm import InvalidInputError, LogFileNotFoundError, TemplateMiner
from loglm._drain3 import LogMasker
from loglm.parsing import MaskingInstruction, TemplateMinerConfig

drain3 = pytest.importorskip("drain3")
from drain3 import TemplateMiner as D3Miner  # noqa: E402
from drain3.masking import MaskingInstruction as D3Mask  # noqa: E402
from drain3.memory_buffer_persistence import MemoryBufferPersistence  # noqa: E402
from drain3.template_miner_config import TemplateMinerConfig as D3Config  # noqa: E402

# drain3's tests/drain3_test.ini and examples/drain3.ini (masking, <: :> names, LRU, "_")
INI = r"""
[SNAPSHOT]
snapshot_interval_minutes = 10
compress_state = True

[MASKING]
masking = [
          {"regex_pattern":"((?<=[^A-Za-z0-9])|^)(([0-9a-f]{2,}:){3,}([0-9a-f]{2,}))((?=[^A-Za-z0-9])|$)", "mask_with": "ID"},
          {"regex_pattern":"((?<=[^A-Za-z0-9])|^)(\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}\\.\\d{1,3})((?=[^A-Za-z0-9])|$)", "mask_with": "IP"},
          {"regex_pattern":"((?<=[^A-Za-z0-9])|^)([0-9a-f]{6,} ?){3,}((?=[^A-Za-z0-9])|$)", "mask_with": "SEQ"},
          {"regex_pattern":"((?<=[^A-Za-z0-9])|^)([0-9A-F]{4} ?){4,}((?=[^A-Za-z0-9])|$)", "mask_with": "SEQ"},
          {"regex_pattern":"((?<=[^A-Za-z0-9])|^)(0x[a-f0-9A-F]+)((?=[^A-Za-z0-9])|$)", "mask_with": "HEX"},
          {"regex_pattern":"((?<=[^A-Za-z0-9])|^)([\\-\\+]?\\d+)((?=[^A-Za-z0-9])|$)", "mask_with": "NUM"},
          {"regex_pattern":"(?<=executed cmd )(\".+?\")", "mask_with": "CMD"}
          ]
mask_prefix = <:
mask_suffix = :>

[DRAIN]
sim_th = 0.4
depth = 4
max_children = 100
max_clusters = 1024
extra_delimiters = ["_"]

[PROFILING]
enabled = {profiling}
report_sec = 30
"""
NUM = "((?<=[^A-Za-z0-9])|^)([\\-\\+]?\\d+)((?=[^A-Za-z0-9])|$)"
# drain3's README example session
README_LINES = ["connected to 10.0.0.1", "connected to 192.168.0.1", "Hex number 0xDEADBEAF",
                "user davidoh logged in", "user eranr logged in"]


@pytest.fixture()
def ini(tmp_path):
    p = tmp_path / "drain3.ini"
    p.write_text(INI.replace("{profiling}", "False"))
    return p


def both(ini_path, **d3_overrides):
    c = D3Config()
    c.load(str(ini_path))
    for k, v in d3_overrides.items():
        setattr(c, k, v)
    return D3Miner(config=c), TemplateMiner(config=c)


# ---- test_template_miner.py ----

def test_load_config(tmp_path, ini):
    config = TemplateMinerConfig()
    config.load(ini)
    assert config.drain_max_clusters == 1024
    assert config.drain_extra_delimiters == ["_"]
    assert len(config.masking_instructions) == 7
    assert (config.mask_prefix, config.mask_suffix) == ("<:", ":>")
    # the .ini path itself is a config; profiling is not supported: a warning, not silence
    prof = tmp_path / "prof.ini"
    prof.write_text(INI.replace("{profiling}", "True"))
    with pytest.warns(UserWarning, match="profiling"):
        TemplateMiner(config=prof)
    with pytest.raises(LogFileNotFoundError):
        TemplateMiner(config=tmp_path / "missing.ini")
    bad = tmp_path / "bad.ini"
    bad.write_text("[DRAIN]\nsim_th = lots\n")
    with pytest.raises(InvalidInputError):
        TemplateMiner(config=bad)


@pytest.mark.parametrize("max_clusters", [None, 10])
def test_save_load_snapshot(max_clusters):
    persistence = MemoryBufferPersistence()
    config = D3Config()
    config.drain_max_clusters = max_clusters
    tm1 = TemplateMiner(persistence, config)
    for line in ["hello", "hello ABC", "hello BCD", "hello XYZ", "goodbye XYZ"]:
        tm1.add_log_message(line)
    assert persistence.state[:1] != b"{"  # compress_state=True: base64 of zlib, as drain3
    tm2 = TemplateMiner(persistence, config)
    assert list(tm1.drain.id_to_cluster) == list(tm2.drain.id_to_cluster)
    assert [str(c) for c in tm1.drain.clusters] == [str(c) for c in tm2.drain.clusters]
    for line in ["hello yyy", "goodbye ABC"]:
        assert tm1.add_log_message(line) == tm2.add_log_message(line)


def test_extract_parameters():
    config = D3Config()
    config.masking_instructions.append(D3Mask(NUM, "NUM"))
    config.masking_instructions.append(D3Mask(r"multiple words", "WORDS"))
    config.mask_prefix = "[:"
    config.mask_suffix = ":]"
    tm = TemplateMiner(None, config)

    def add_and_test(msg, expected_params, exact_matching=False):
        res = tm.add_log_message(msg)
        params = tm.extract_parameters(res["template_mined"], msg, exact_matching=exact_matching)
        assert params is not None
        assert [p.value for p in params] == expected_params, msg

    add_and_test("hello", [])
    add_and_test("hello ABC", [])
    add_and_test("hello BCD", ["BCD"])
    add_and_test("hello    BCD", ["BCD"])
    add_and_test("hello\tBCD", ["BCD"])
    add_and_test("request took 123 ms", ["123"])
    add_and_test("file saved [test.xml]", [])
    add_and_test("new order received: [:xyz:]", [])
    add_and_test("order type: new, order priority:3", ["3"])
    add_and_test("order type: changed, order priority:5", ["changed,", "5"])
    add_and_test("sometimes one needs multiple words", ["multiple words"], True)
    add_and_test("sometimes one needs not", ["not"], True)
    add_and_test("sometimes one needs multiple words", ["multiple words"], True)


EXTRACT_VECTORS = [
    ("<hdfs_uri>:<integer>+<integer>", "hdfs://msra-sa-41:9000/pageinput2.txt:671088640+134217728",
     ["hdfs://msra-sa-41:9000/pageinput2.txt", "671088640", "134217728"], ["hdfs_uri", "integer", "integer"]),
    ("Hello <quoted_string>", "Hello 'World'", ["'World'"], ["quoted_string"]),
    ("<quoted_string><quoted_string>", """'This "should"'`do no breakin'`""",
     ["""'This "should"'""", "`do no breakin'`"], ["quoted_string", "quoted_string"]),
    ("This is <markdown_emph> <markdown_emph>!.", "This is ___very___ *important*!.",
     ["___very___", "*important*"], ["markdown_emph", "markdown_emph"]),
    ("<float>.<*>", "0.15.Test", ["0.15", "Test"], ["float", "*"]),
    ("<ip>:<integer>", "192.0.0.1:5000", ["192.0.0.1", "5000"], ["ip", "integer"]),
    ("<ip>:<integer>:<integer>", "192.0.0.1:5000:123", ["192.0.0.1", "5000", "123"], ["ip", "integer", "integer"]),
    ("<float>.<*>.<float>", "0.15.Test.0.2", ["0.15", "Test", "0.2"], ["float", "*", "float"]),
    ("<float> <float>", "0.15 10.16", ["0.15", "10.16"], ["float", "float"]),
    ("<*words*>@<integer>", "some other cool pattern@0xe1f", ["some other cool pattern", "0xe1f"],
     ["*words*", "integer"]),
    ("Another test with <*words*> that includes <integer><integer> and <integer> <*> <integer>",
     "Another test with some other 0Xadded pattern that includes 500xc0ffee and 0X4 times 5",
     ["some other 0Xadded pattern", "50", "0xc0ffee", "0X4", "times", "5"],
     ["*words*", "integer", "integer", "integer", "*", "integer"]),
    ("some <*words*> <*words*>", "some multiple *word* pattern some confusing *word* pattern",
     ["multiple *word* pattern", "some confusing *word* pattern"], ["*words*", "*words*"]),
    ("<*words*> <*>", "multiple *word* pattern <*words*>", ["multiple *word* pattern", "<*words*>"], ["*words*", "*"]),
    ("<*> <*>", "HelloWorld Test", ["HelloWorld", "Test"], ["*", "*"]),
    ("<*> <*>", "HelloWorld <anything>", ["HelloWorld", "<anything>"], ["*", "*"]),
    ("<*><integer>", "HelloWorld1", ["HelloWorld", "1"], ["*", "integer"]),
    ("<*> works <*>", "This works as-expected", ["This", "as-expected"], ["*", "*"]),
    ("<memory:<integer>>", "<memory:8>", ["8"], ["integer"]),
    ("<memory:<integer> <core:<float>>>", "<memory:8 <core:0.5>>", ["8", "0.5"], ["integer", "float"]),
    ("<*> <memory:<<integer> <core:<float>>>", "New: <memory:<8 <core:0.5>>", ["New:", "8", "0.5"],
     ["*", "integer", "float"]),
    ("<<>", "MaskPrefix", ["MaskPrefix"], ["<"]),
    ("<<<>>", "<MaskPrefix>", ["MaskPrefix"], ["<"]),
    ("There are no parameters here.", "There are no parameters here.", [], []),
    ("<float> <float>", "0.15 10.16 3.19", None, None),
    ("<float> <float>", "0.15 10.16 test 3.19", None, None),
    ("<memory:<<integer> <core:<float>>>", "<memory:8 <core:0.5>>", None, None),
    ("<<>", "<<>", None, None),
    ("<*words*> <*words*>", "0.15 0.15", None, None),
]


def test_extract_parameters_direct():
    instructions = [
        (r"hdfs://[\w.:@-]*((/[\w.~%+-]+)+/?)?", "hdfs_uri"),
        (r"(?P<quote>[\"'`]).*?(?P=quote)", "quoted_string"),
        (r"((?P<p_0>[*_])\2{0,2}).*?\1", "markdown_emph"),
        (r"multiple \*word\* pattern", "*words*"),
        (r"some \S+ \S+ pattern", "*words*"),
        (r"(\d{1,3}\.){3}\d{1,3}", "ip"),
        (r"(?P<number>\d+)\.\d+", "float"),
        (r"0[xX][a-fA-F0-9]+", "integer"),
        (r"(?P<number>\d+)", "integer"),
        (r"HelloWorld", "*"),
        (r"MaskPrefix", "<"),
    ]
    ours_cfg, d3_cfg = TemplateMinerConfig(), D3Config()
    ours_cfg.masking_instructions = [MaskingInstruction(p, n) for p, n in instructions]
    d3_cfg.masking_instructions = [D3Mask(p, n) for p, n in instructions]
    tm, d3 = TemplateMiner(None, ours_cfg), D3Miner(None, d3_cfg)
    for template, content, want, names in EXTRACT_VECTORS:
        got = tm.extract_parameters(template, content, exact_matching=True)
        assert got == d3.extract_parameters(template, content, exact_matching=True), template
        if want is None:
            assert got is None, template
        else:
            assert got is not None, template
            assert [p.value for p in got] == want and [p.mask_name for p in got] == names, template


def test_match_only():
    config = D3Config()
    config.drain_extra_delimiters = ["_"]
    config.masking_instructions.append(D3Mask(NUM, "NUM"))
    tm = TemplateMiner(None, config)
    for line in ["aa aa aa", "aa aa bb", "xx yy zz", "rrr qqq 123"]:
        tm.add_log_message(line)
    assert tm.match("aa   aa tt").cluster_id == 1
    assert tm.match("aa aa 12").cluster_id == 1
    assert tm.match("xx yy   zz").cluster_id == 2
    assert tm.match("xx yy rr") is None
    assert tm.match("nothing") is None
    assert tm.match("rrr qqq   456   ").cluster_id == 3
    assert tm.match("rrr qqq 555.2") is None
    assert tm.match("rrr qqq num") is None


def test_match_strategies():
    miner = TemplateMiner(config=D3Config())  # drain3's TemplateMiner() without a drain3.ini
    for line in ["training4Model start", "loadModel start", "loadModel stop", "this is a test"]:
        miner.add_log_message(line)
    assert miner.match("loadModel start", full_search_strategy="fallback") is not None
    assert miner.match("loadModel start", full_search_strategy="always") is not None
    assert miner.match("loadModel start", full_search_strategy="never") is None
    miner.add_log_message("loadModel start")
    for s in ("fallback", "always", "never"):
        assert miner.match("loadModel start", full_search_strategy=s) is not None

    config = D3Config()
    config.parametrize_numeric_tokens = False
    miner = TemplateMiner(config=config)
    for line in ["training4Model start", "loadModel start", "loadModel stop", "this is a test"]:
        miner.add_log_message(line)
    for s in ("fallback", "always", "never"):
        assert miner.match("loadModel start", full_search_strategy=s) is not None
        assert miner.match("", full_search_strategy=s) is None
    miner.add_log_message("")
    for s in ("fallback", "always", "never"):
        assert miner.match("", full_search_strategy=s) is not None


# ---- test_masking.py ----

def test_masker():
    mis = [MaskingInstruction(p, n) for p, n in [("a", "1"), ("b", "1"), ("c", "2"), ("d", "3"),
                                                 ("x", "something else"), ("y", "something else")]]
    masker = LogMasker(mis, "", "")
    assert sorted(masker.mask_names) == ["1", "2", "3", "something else"]
    assert masker.instructions_by_mask_name("1") == mis[:2]
    masker = LogMasker([MaskingInstruction(NUM, "NUM")], "<!", "!>")
    assert masker.mask("D9 test 999 888 1A ccc 3") == "D9 test <!NUM!> <!NUM!> 1A ccc <!NUM!>"
    with pytest.raises(InvalidInputError):
        MaskingInstruction("(unclosed", "X")


# ---- test_drain.py (through the miner: same tree) ----

def _templates(miner, lines):
    return [miner.add_log_message(x)["template_mined"] for x in lines]


def test_max_clusters():
    tm = TemplateMiner(masking=False, max_clusters=1)
    got = _templates(tm, ["A format 1", "A format 2", "B format 1", "B format 2", "A format 3"])
    assert got == ["A format 1", "A format <*>", "B format 1", "B format <*>", "A format 3"]
    assert tm.drain.get_total_cluster_size() == 1 and len(tm.clusters) == 1
    assert tm.drain.clusters_counter == 3


@pytest.mark.parametrize("lines,want", [
    (["A A A", "A A B", "B A A", "B A B", "C A A", "C A B", "B A A", "A A A"],
     ["A A A", "A A *", "B A A", "B A *", "C A A", "C A *", "B A *", "A A A"]),
    (["A A A", "A A B", "A B A", "A B B", "A C A", "A C B", "A B A", "A A A"],
     ["A A A", "A A *", "A B A", "A B *", "A C A", "A C *", "A B *", "A A A"]),
])
def test_max_clusters_lru(lines, want):
    tm = TemplateMiner(masking=False, max_clusters=2, param_str="*")
    assert _templates(tm, lines) == want
    d3 = drain3.drain.Drain(max_clusters=2, depth=4, param_str="*")
    assert [d3.add_log_message(x)[0].get_template() for x in lines] == want


def test_add_log_message_ssh_example():
    entries = [
        "Dec 10 07:07:38 LabSZ sshd[24206]: input_userauth_request: invalid user test9 [preauth]",
        "Dec 10 07:08:28 LabSZ sshd[24208]: input_userauth_request: invalid user webmaster [preauth]",
        "Dec 10 09:12:32 LabSZ sshd[24490]: Failed password for invalid user ftpuser from 0.0.0.0 port 62891 ssh2",
        "Dec 10 09:12:35 LabSZ sshd[24492]: Failed password for invalid user pi from 0.0.0.0 port 49289 ssh2",
        "Dec 10 09:12:44 LabSZ sshd[24501]: Failed password for invalid user ftpuser from 0.0.0.0 port 60836 ssh2",
        "Dec 10 07:28:03 LabSZ sshd[24245]: input_userauth_request: invalid user pgadmin [preauth]",
    ]
    tm = TemplateMiner(config=D3Config())
    assert _templates(tm, entries) == [
        entries[0],
        "Dec 10 <*> LabSZ <*> input_userauth_request: invalid user <*> [preauth]",
        entries[2],
        "Dec 10 <*> LabSZ <*> Failed password for invalid user <*> from 0.0.0.0 port <*> ssh2",
        "Dec 10 <*> LabSZ <*> Failed password for invalid user <*> from 0.0.0.0 port <*> ssh2",
        "Dec 10 <*> LabSZ <*> input_userauth_request: invalid user <*> [preauth]",
    ]
    assert tm.drain.get_total_cluster_size() == 6


# ---- parity with drain3 itself ----

def test_readme_example_gives_drain3_templates(ini):
    d3, ours = both(ini)
    for line in README_LINES:
        a, b = d3.add_log_message(line), ours.add_log_message(line)
        assert {k: b[k] for k in a} == a
        assert ours.extract_parameters(b["template_mined"], line) == d3.extract_parameters(a["template_mined"], line)
    assert [c.get_template() for c in ours.drain.clusters] == [
        "connected to <:IP:>", "Hex number <:HEX:>", "user <:*:> logged in"]
    assert ours.extract_parameters("connected to <:IP:>", "connected to 10.0.0.1")[0] == ("10.0.0.1", "IP")
    t = ours.templates_table()
    assert t.columns.tolist() == ["EventId", "EventTemplate", "Occurrences"]
    assert t["Occurrences"].tolist() == [2, 2, 1]


@pytest.mark.parametrize("system", ["HDFS", "BGL", "Linux"])
def test_masking_and_lru_parity_on_loghub(data_dir, ini, system):
    import pandas as pd

    lines = pd.read_csv(data_dir / "loghub_2k" / system / f"{system}_2k.log_structured.csv",
                        dtype=str)["Content"].tolist()
    for max_clusters in (1024, 7):
        d3, ours = both(ini, drain_max_clusters=max_clusters)
        for line in lines:
            a, b = d3.add_log_message(line), ours.add_log_message(line)
            assert {k: b[k] for k in a} == a, line
        assert [str(c) for c in ours.drain.clusters] == [str(c) for c in d3.drain.clusters]
        for line in lines[:300]:
            m3, m = d3.match(line), ours.match(line)
            assert (m3 is None) == (m is None) and (m is None or m.cluster_id == m3.cluster_id)
    # batch mode (DataFrame) gives the same clusters; parameters carry the mask names' values
    d3, _ = both(ini)
    for line in lines:
        d3.add_log_message(line)
    c = D3Config()
    c.load(str(ini))
    df = TemplateMiner(config=c).parse(lines)
    want = {x.cluster_id: x.get_template() for x in d3.drain.clusters}
    for line, tmpl, params in zip(lines[:300], df["EventTemplate"], df["ParameterList"]):
        assert tmpl == want[d3.match(line).cluster_id] or d3.match(line) is None
        got = d3.extract_parameters(tmpl, line)
        assert params == ([p.value for p in got] if got else [])


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("max_clusters", [None, 5])
def test_reads_drain3_snapshots(data_dir, ini, compress, max_clusters):
    import pandas as pd

    lines = pd.read_csv(data_dir / "loghub_2k" / "Linux" / "Linux_2k.log_structured.csv",
                        dtype=str)["Content"].tolist()
    c = D3Config()
    c.load(str(ini))
    c.snapshot_compress_state = compress
    c.drain_max_clusters = max_clusters
    ph = MemoryBufferPersistence()
    d3 = D3Miner(ph, c)
    for line in lines[:1000]:
        d3.add_log_message(line)
    ours = TemplateMiner(ph, c)  # reads drain3's snapshot from the persistence handler
    d3 = D3Miner(ph, c)  # (the snapshot of the last change: sizes may lag, as for drain3)
    assert [str(x) for x in ours.drain.clusters] == [str(x) for x in d3.drain.clusters]
    assert ours.drain.clusters_counter == d3.drain.clusters_counter
    # drain3 logs get_total_cluster_size() after every snapshot, which touches every
    # cluster of its LRU cache (the order falls back to id order); loglm keeps the order.
    # Compare the Drain behaviour itself: no further snapshots on either side.
    ours.persistence_handler = d3.persistence_handler = None
    for line in lines[1000:]:  # and goes on exactly as drain3 does (LRU order included)
        a, b = d3.add_log_message(line), ours.add_log_message(line)
        assert {k: b[k] for k in a} == a, line


def test_bad_snapshots_and_settings(ini):
    tm = TemplateMiner(config=D3Config())
    with pytest.raises(InvalidInputError, match="JaccardDrain|expected"):
        tm.load_state(json.dumps({"py/object": "drain3.jaccard_drain.JaccardDrain", "py/state": {}}))
    d3 = D3Miner(config=D3Config())
    d3.add_log_message("a b c")
    import jsonpickle

    doc = json.loads(jsonpickle.dumps(d3.drain, keys=True))
    broken = json.loads(json.dumps(doc))
    broken["py/state"]["root_node"] = {"py/id": 3}
    with pytest.raises(InvalidInputError, match="references"):
        tm.load_state(json.dumps(broken))
    broken = json.loads(json.dumps(doc))
    del broken["py/state"]["clusters_counter"]
    with pytest.raises(InvalidInputError, match="missing or bad"):
        tm.load_state(json.dumps(broken))
    with pytest.raises(InvalidInputError):
        tm.load_state(base64.b64encode(zlib.compress(b"{not json")))
    with pytest.raises(InvalidInputError):
        tm.load_state(b"\x00\x01garbage")
    tm.load_state(json.dumps(doc))
    assert [c.get_template() for c in tm.clusters] == ["a b c"]

    class Jaccard(D3Config):
        def __init__(self):
            super().__init__()
            self.drain_engine = "JaccardDrain"

    with pytest.raises(InvalidInputError, match="JaccardDrain"):
        TemplateMiner(config=Jaccard())

    class Extra(D3Config):
        def __init__(self):
            super().__init__()
            self.some_new_setting = 1

    with pytest.warns(UserWarning, match="some_new_setting"):
        TemplateMiner(config=Extra())
    with pytest.raises(InvalidInputError, match="LLM loop"):
        TemplateMiner(config=D3Config(), max_clusters=3, model=object())


def test_snapshot_of_another_version_is_a_clear_error_and_loses_nothing():
    """A drain3 snapshot of another version (renamed classes, an unknown cluster store,
    object references) or a loglm state of a newer schema raises InvalidInputError and
    leaves the miner's clusters as they were."""
    import jsonpickle

    d3 = D3Miner(config=D3Config())
    d3.add_log_message("a b c")
    doc = json.loads(jsonpickle.dumps(d3.drain, keys=True))
    tm = TemplateMiner(config=D3Config())
    tm.add_log_message("x y z")
    tm.add_log_message("x y w")
    before = [(c.cluster_id, c.get_template(), c.size) for c in tm.clusters]
    renamed = json.loads(json.dumps(doc))
    renamed["py/object"] = "drain3.drain_v2.Drain"
    store = json.loads(json.dumps(doc))
    store["py/state"]["id_to_cluster"] = {"py/object": "drain3.cache.FutureCache", "py/state": {}}
    newer = json.loads(tm.save_state())
    newer["version"] = 99
    for bad, msg in [(renamed, "another drain3 version"), (store, "unknown cluster store"),
                     (newer, "state version 99")]:
        with pytest.raises(InvalidInputError, match=msg):
            tm.load_state(json.dumps(bad))
        assert [(c.cluster_id, c.get_template(), c.size) for c in tm.clusters] == before
    with pytest.raises(InvalidInputError):  # the same through the persistence handler
        TemplateMiner(_Handler(json.dumps(renamed).encode()), D3Config())


class _Handler:
    def __init__(self, state):
        self.state = state

    def save_state(self, state):
        self.state = state

    def load_state(self):
        return self.state
