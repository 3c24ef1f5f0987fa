"""loglm report: structure, checked claims, ablation, bad inputs, CLI, and the HTML in a
headless browser (BGL lines from LOGLM_DATA_DIR, the alert label column removed)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import types
from pathlib import Path

import numpy as np
import pytest

import loglm
from loglm.cli import main
from loglm.errors import InvalidInputError, LoglmError
from loglm.parsing import template_matches
from loglm.report import (Claim, Report, ablation_attribution, build_report, check_claim, claim_facts,
                          detect_timestamps, parse_claims)


@pytest.fixture(scope="module")
def bgl(data_dir):
    """First 300 BGL lines without their label field, and the labels ("-" = normal)."""
    raw = (data_dir / "loghub_2k" / "BGL" / "BGL_2k.log").read_text(encoding="utf-8").splitlines()[:300]
    labels = [x.split(" ", 1)[0] for x in raw]
    lines = [x.split(" ", 1)[1] for x in raw]
    return lines, labels


@pytest.fixture(scope="module")
def model():
    return loglm.LogLM.load(threads=1)


@pytest.fixture(scope="module")
def rep(bgl, model):
    lines, _ = bgl
    return build_report(lines, model, top_sessions=2, n_claims=2, max_new_tokens=40, progress=False)


# ---- deterministic parts (no model) -----------------------------------------------------

def test_structure_without_model(bgl):
    lines, _ = bgl
    r = build_report(lines, progress=False)
    t = r.templates
    assert r.n_lines == 300 and int(t["Count"].sum()) == 300 and r.model is None and r.claims == []
    assert r.time_format == "iso" and r.timeline["by"] == "time"
    assert int(np.sum(r.timeline["total"])) == 300
    for row in t.itertuples(index=False):
        assert row.FirstLine <= row.LastLine
        assert lines[row.FirstLine - 1] == row.Example
        assert template_matches(row.EventTemplate, row.Example)
        assert row.FirstSeen.startswith("2005-06")
    # ranked by rarity without a model: the first record is a template seen the fewest times
    assert r.records["Count"].iloc[0] == t["Count"].min()
    d = json.loads(r.to_json())
    assert d["schema"] == "loglm.report/1" and len(d["templates"]) == len(t) and d["n_lines"] == 300
    # new = first seen after the first fifth of the log
    assert set(t.loc[t["New"], "FirstLine"]) == {x for x in t["FirstLine"] if x - 1 >= 60}


def test_timestamp_formats():
    cases = {
        "iso": ["2015-07-29 17:41:44,747 - INFO x", "2015-07-29 17:41:45,001 - INFO y"],
        "yymmdd HHMMSS": ["081109 203518 143 INFO a", "081109 203519 145 INFO b"],
        "syslog": ["Jun 14 15:16:01 combo sshd[19939]: x", "Jun 14 15:16:02 combo sshd[19937]: y"],
        "[mm.dd HH:MM:SS]": ["[10.30 16:49:06] chrome.exe - a", "[10.30 16:49:07] chrome.exe - b"],
    }
    for name, lines in cases.items():
        fmt, ts = detect_timestamps(lines)
        assert fmt == name and np.all(np.isfinite(ts)) and ts[1] - ts[0] == pytest.approx(
            1.0 if name != "iso" else 0.254, abs=1e-6)
    fmt, ts = detect_timestamps(["no time here", "nor here"])
    assert fmt is None and np.isnan(ts).all()


def test_html_is_standalone_and_escaped(tmp_path):
    lines = [f"2024-01-01 00:00:{i % 60:02d} worker ok job {i}" for i in range(120)]
    lines[70] = "2024-01-01 00:01:10 <script>alert(1)</script> FAILED disk /dev/sda3 \x00\x1b[31m"
    r = build_report(lines, progress=False)
    page = r.to_html()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "</html>" in page
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "\x00" not in page and "\x1b" not in page and "/dev/sda3 \ufffd\ufffd[31m" in page
    assert not re.search(r"""(src|href)\s*=|url\(|@import""", page)
    assert not re.search(r"(https?|ftp)://", page.replace('xmlns="http://www.w3.org/2000/svg"', ""))
    assert r._repr_html_().count("<svg") == 1 and "<!DOCTYPE" not in r._repr_html_()
    out = r.save(tmp_path / "r.html")
    assert out.read_text(encoding="utf-8") == page
    assert json.loads(r.save(tmp_path / "r.json").read_text())["n_lines"] == 120


# ---- claims and their check ---------------------------------------------------------------

LINES = [
    "2005-06-03 15:42:50 R02-M1-N0-C:J12-U11 RAS KERNEL INFO instruction cache parity error corrected",
    "2005-06-11 17:32:07 R30-M0-N9-C:J16-U01 RAS KERNEL FATAL data TLB error interrupt",
    "2005-06-04 00:24:32 R04-M1-N4-I:J18-U11 RAS APP FATAL ciod: failed to read message prefix on control stream (CioStream socket to 172.16.96.116:33569",
]


def test_check_claim_verifies_citations_and_facts():
    ok = check_claim(Claim("Node R30-M0-N9-C:J16-U01 reported a FATAL data TLB error in the KERNEL.", [2]), LINES)
    assert ok.status == "verified" and {"R30-M0-N9-C:J16-U01", "FATAL", "KERNEL"} <= set(ok.facts)
    wrong_id = check_claim(Claim("Node R30-M0-N9-C:J16-U01 reported a FATAL data TLB error.", [2, 9]), LINES)
    assert wrong_id.status == "bad-citation" and wrong_id.bad_ids == [9]
    part_of_word = check_claim(Claim("The CIO stream failed.", [3]), LINES)  # "ciod:", "CioStream"
    assert part_of_word.status == "unsupported" and part_of_word.missing == ["CIO"]
    zero = check_claim(Claim("A FATAL error.", [0]), LINES)
    assert zero.status == "bad-citation"
    absent = check_claim(Claim("The socket to 172.16.96.117:33569 failed in ciod.", [3]), LINES)
    assert absent.status == "unsupported" and absent.missing == ["172.16.96.117:33569"]
    other_line = check_claim(Claim("Node R30-M0-N9-C:J16-U01 reported a FATAL data TLB error.", [1]), LINES)
    assert other_line.status == "unsupported" and "R30-M0-N9-C:J16-U01" in other_line.missing
    assert check_claim(Claim("Something failed.", []), LINES).status == "uncited"
    # citing lines but quoting nothing checkable is not verification
    assert check_claim(Claim("Something went wrong there.", [2]), LINES).status == "vague"
    # a name inside the sentence is a fact: the kernel lines say nothing of Linux
    linux = check_claim(Claim("A data TLB error interrupt hit the Linux KERNEL.", [2]), LINES)
    assert linux.status == "unsupported" and linux.missing == ["Linux"]
    # a number may be the count the model was told, not in the line
    counted = check_claim(Claim("The TLB error appeared 60 times.", [2]), LINES, counts={2: 60})
    assert counted.status == "verified"
    assert check_claim(Claim("The TLB error appeared 61 times.", [2]), LINES, counts={2: 60}).status == "unsupported"


def test_parse_claims_and_facts():
    cs = parse_claims("The kernel hit a data TLB error [L2]. The ciod socket failed (lines 3 and 1). It is fine.")
    assert [c.line_ids for c in cs] == [[2], [3, 1], []]
    assert cs[0].text == "The kernel hit a data TLB error." and "[" not in cs[1].text
    f = claim_facts("The CIO server's file, `RSAAP`, dfs.DataNode and PacketResponder on 10.0.0.1 (KERNEL) in Chrome")
    assert f == ["RSAAP", "CIO", "dfs.DataNode", "PacketResponder", "10.0.0.1", "KERNEL", "Chrome"]


class _ScriptedModel:
    """A stand-in model for the report's pipeline: line scores by keyword, and fixed
    answers to the summary prompts (one faithful, one with a wrong LineId, one quoting a
    value that is not in its line)."""

    def __init__(self, answers):
        self.answers = answers
        self.prompts = []

    def anomaly_scores(self, lines, progress=None):
        return [0.9 if "FATAL" in x else 0.1 for x in lines]

    def generate(self, prompts, **kw):
        self.prompts.extend(prompts)
        return [types.SimpleNamespace(text=a) for a in self.answers[:len(prompts)]]


def test_failed_claims_are_marked_or_dropped():
    lines = LINES * 3
    n = len(lines)
    answers = ["Node R30-M0-N9-C:J16-U01 had a FATAL data TLB error [L2].",
               f"The ciod socket failed on 172.16.96.116:33569 [L{n + 5}].",
               "The socket to 10.9.9.9 failed [L3]."]
    m = _ScriptedModel(answers)
    r = build_report(lines, m, n_claims=3, progress=False)
    assert [c.status for c in r.claims] == ["verified", "bad-citation", "unsupported"]
    # the prompts carry the lines labelled with their LineIds, inside a fence (logs are data)
    assert all("```" in p and re.search(r"L\d+: ", p) for p in m.prompts)
    page = r.to_html()
    assert "✓ verified" in page and page.count("✗") == 2 and "10.9.9.9" in page
    r2 = build_report(lines, _ScriptedModel(answers), n_claims=3, on_fail="drop", progress=False)
    assert [c.status for c in r2.claims] == ["verified"] and len(r2.dropped_claims) == 2
    assert r2.evidence_line_ids()[0] == 2


# ---- ablation -------------------------------------------------------------------------------

def test_ablation_picks_the_line_that_carries_the_score():
    session = ["job 1 started", "job 1 heartbeat", "disk /dev/sda3 FAILED", "job 1 heartbeat 2", "job 1 done"]

    def score(variants):  # an additive score: each line contributes by what it says
        return [sum(0.8 if "FAILED" in x else 0.05 if "heartbeat" in x else 0.01 for x in v) for v in variants]

    full, drops = ablation_attribution(session, score, top=2)
    assert full == pytest.approx(0.8 + 2 * 0.05 + 2 * 0.01)
    assert drops[0][0] == 2 and drops[0][1] == pytest.approx(0.8)
    assert drops[1][0] in (1, 3)
    # min_share keeps only the lines that matter about as much as the first
    assert [i for i, _ in ablation_attribution(session, score, top=3, min_share=0.5)[1]] == [2]
    # a score that removal never lowers gives no evidence
    assert ablation_attribution(session, lambda vs: [1.0] * len(vs))[1] == []


def test_session_evidence_with_the_model(bgl, model):
    lines, labels = bgl
    normal = [i for i, lab in enumerate(labels) if lab == "-"][:8]
    bad = labels.index("KERNDTLB")
    pick = normal[:4] + [bad] + normal[4:8]
    sess = [lines[i] for i in pick]
    ids = ["a"] * len(sess) + ["b"] * len(sess)
    r = build_report(sess + sess[:4] + sess[5:] + [sess[0]], model, sessions=ids, summary=False, progress=False)
    s = r.sessions.set_index("SessionId")
    ev = s.loc["a", "Evidence"]
    assert ev and ev[0]["line_ids"] == [5] and "data TLB error interrupt" in ev[0]["Content"]
    assert all(e["drop"] > 0 for e in ev) and [e["drop"] for e in ev] == sorted([e["drop"] for e in ev], reverse=True)
    # the session score is what the ablation removed from: 1 - prod(1 - p) over its
    # templates (session "a" holds every template, each first seen in it)
    p = r.templates["Score"].to_numpy()
    assert s.loc["a", "Score"] == pytest.approx(1 - np.prod(1 - p), rel=1e-6)
    assert s.loc["a", "Score"] > s.loc["b", "Score"]


# ---- the model's report ---------------------------------------------------------------------

def test_report_with_model(rep, bgl, model):
    lines, labels = bgl
    assert isinstance(rep, Report) and rep.model and rep.n_lines == 300
    t = rep.templates
    scored = t.dropna(subset=["Score"])
    assert len(scored) == len(t) and scored["Score"].between(0, 1).all()
    # a template's score is the model's score of its first line
    row = t.iloc[0]
    assert row["Score"] == pytest.approx(model.anomaly_score(row["Example"]), abs=1e-5)
    assert list(rep.records["Score"]) == sorted(rep.records["Score"], reverse=True)
    # every claim is checked; verified ones cite existing lines that hold their facts
    assert rep.claims and all(c.status != "unchecked" for c in rep.claims)
    for c in rep.claims:
        if c.verified:
            assert c.line_ids and all(1 <= i <= 300 for i in c.line_ids)
            cited = " ".join(lines[i - 1].lower() for i in c.line_ids)
            assert all(f.lower() in cited or f.isdigit() for f in c.facts)
    # sessions: windows of 100 lines; evidence lines lie in their session
    s = rep.sessions
    assert s.attrs["how"] == "windows of 100 lines" and len(s) == 3
    for r in s.itertuples(index=False):
        lo = r.FirstLine
        for e in r.Evidence:
            assert all(lo <= i < lo + 100 for i in e["line_ids"])
    d = rep.to_dict()
    assert json.loads(json.dumps(d))["claims"][0]["status"] in ("verified", "unsupported", "bad-citation", "uncited")
    # the report's evidence: LineIds of verified claims, then of the sessions' ablation
    ev = rep.evidence_line_ids()
    cited = [i for c in rep.claims if c.verified for i in c.line_ids]
    ablated = [i for e in s["Evidence"] for x in e for i in x["line_ids"]]
    assert ev and set(ev) == set(cited) | set(ablated) and len(ev) == len(set(ev))


def test_model_report_method_accepts_path_and_lines(tmp_path, model):
    p = tmp_path / "app.log"
    p.write_text("\n".join(LINES) + "\n")
    r = model.report(p, summary=False, progress=False)
    assert r.source == "app.log" and r.n_lines == 3 and r.claims == []
    r2 = model.report(LINES, summary=False, progress=False)
    assert r2.source == "<lines>" and list(r2.templates["Score"]) == list(r.templates["Score"])


# ---- bad input ------------------------------------------------------------------------------

def test_bad_inputs(tmp_path):
    (tmp_path / "empty.log").write_bytes(b"")
    (tmp_path / "bin.dat").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "blank.log").write_text("\n  \n\n")
    for name in ("empty.log", "bin.dat", "blank.log"):
        with pytest.raises(InvalidInputError):
            build_report(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        build_report(tmp_path / "missing.log")
    for bad in ([], "", ["  "]):
        with pytest.raises(LoglmError):
            build_report(bad)
    with pytest.raises(InvalidInputError):
        build_report(["a"], on_fail="ignore")
    with pytest.raises(InvalidInputError):
        build_report(["a"], window=0)
    with pytest.raises(InvalidInputError):
        build_report(["a"], evidence_share=1.5)
    with pytest.raises(InvalidInputError):
        build_report(["a", "b"], sessions=["x"])


def test_inputs_the_report_explains(tmp_path):
    # non-UTF-8 bytes, no timestamps, one template: a report that says so, never blank
    p = tmp_path / "odd.log"
    p.write_bytes(b"".join(b"worker %d finished task %d\n" % (i, i * 7) for i in range(50)) + b"worker 9 \xff\xfe bad\n")
    r = build_report(p, progress=False)
    notes = " ".join(r.notes)
    assert "not valid UTF-8" in notes and "line 51" in notes
    assert "No timestamps" in notes and r.timeline["by"] == "line"
    page = r.to_html()
    assert "not valid UTF-8" in page and "line number" in page
    one = build_report([f"ping {i} ok" for i in range(30)], progress=False)
    assert len(one.templates) == 1 and any("one template" in x for x in one.notes)
    assert "one template" in one.to_html()
    single = build_report("only one line\n", progress=False)
    assert single.n_lines == 1 and single.templates["Count"].tolist() == [1]


# ---- CLI ------------------------------------------------------------------------------------

def test_cli_report(tmp_path, capsys, bgl):
    lines, _ = bgl
    p = tmp_path / "bgl.log"
    p.write_text("\n".join(lines[:120]) + "\n")
    out = tmp_path / "r.html"
    assert main(["report", str(p), "-o", str(out), "--no-llm"]) == 0
    o, err = capsys.readouterr()
    assert o.startswith("120 lines") and "report written to" in err
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert main(["report", str(p), "-o", str(tmp_path / "r.json"), "--no-summary", "--threads", "1",
                 "--json", "--top", "3"]) == 0
    o, _ = capsys.readouterr()
    d = json.loads(o)
    assert d["n_lines"] == 120 and len(d["records"]) == 3 and d["records"][0]["Score"] is not None
    assert json.loads((tmp_path / "r.json").read_text())["n_lines"] == 120
    (tmp_path / "empty.log").write_bytes(b"")
    assert main(["report", str(tmp_path / "empty.log"), "--no-llm"]) == 2
    assert "empty" in capsys.readouterr().err


# ---- the page in a headless browser ---------------------------------------------------------

def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_html_renders_in_headless_browser(rep, tmp_path):
    browser = _browser()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("no headless browser in CI: .ci/run installs Debian's chromium")
        pytest.skip("no chromium / chrome found (apt-get install chromium)")
    page = rep.save(tmp_path / "report.html")
    png = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600", f"--screenshot={png}",
           page.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert png.is_file() and png.stat().st_size > 1000, "no screenshot written"
    Image = pytest.importorskip("PIL.Image", reason="needs Pillow (a matplotlib dependency of the test extra)")

    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    colours = np.unique(img.reshape(-1, 3), axis=0)
    assert len(colours) > 20, "the page rendered as (almost) one colour"
    not_white = (img < 240).any(axis=2).mean()
    assert not_white > 0.02, f"only {not_white:.1%} of the page is not white"
