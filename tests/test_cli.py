"""Every CLI command, in process (one model load per command), and bad inputs."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loglm.cli import main

LOG = ("081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106 dest: /10.250.19.102:50010\r\n"
       "081109 203519 145 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_-1608999687919862906 terminating\r\n"
       "081109 203519 147 WARN dfs.DataNode: Got exception while serving blk_-1608999687919862906 to /10.250.19.102\r\n")


@pytest.fixture()
def logfile(tmp_path):
    p = tmp_path / "app.log"
    p.write_bytes(LOG.encode() + b"bad byte \xff here\r\n")
    return p


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_parse(capsys, logfile, tmp_path):
    code, out, err = run(capsys, "parse", str(logfile), "--threads", "2", "--context-length", "1024", "-o", str(tmp_path / "s.csv"))
    assert code == 0 and out.startswith("4 lines") and "invalid UTF-8" in out
    # headers are recognised by default (README "Reading your logs"): loghub's column order
    assert (tmp_path / "s.csv").read_text().startswith(
        "LineId,Timestamp,Pid,Level,Component,Datetime,Content,EventId,EventTemplate")
    code, out, _ = run(capsys, "parse", str(logfile), "--no-llm", "--json")
    recs = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and len(recs) == 4 and recs[3]["NonUtf8"] is True and recs[0]["EventId"].startswith("E")
    assert recs[1]["Content"] == "PacketResponder 1 for block blk_-1608999687919862906 terminating"
    assert recs[1]["Pid"] == "145" and recs[3]["Content"] == "bad byte \ufffd here" and recs[3]["Level"] == ""
    code, out, _ = run(capsys, "parse", str(logfile), "--no-llm", "--json", "--format", "none")  # whole lines
    recs = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and recs[1]["Content"] == LOG.split("\r\n")[1] and "Pid" not in recs[1]


def test_parse_with_labelled_templates(capsys, logfile, tmp_path):
    lab = tmp_path / "labelled.csv"
    lab.write_text("LineId,Content,EventTemplate\n"
                   "1,\"Receiving block blk_1 src: /10.0.0.1:1 dest: /10.0.0.2:2\",Receiving block blk_<*> src: /<*>:<*> dest: /<*>:<*>\n")
    code, out, _ = run(capsys, "parse", str(logfile), "--no-llm", "--json", "--labelled", str(lab))
    recs = [json.loads(x) for x in out.splitlines()]
    # the label's own convention, not the canonical `Receiving block <*> src: <*> dest: <*>`
    assert code == 0 and recs[0]["EventTemplate"] == "Receiving block blk_<*> src: /<*>:<*> dest: /<*>:<*>"
    assert recs[1]["EventTemplate"] != recs[0]["EventTemplate"]
    bad = tmp_path / "bad.csv"
    bad.write_text("Content,Template\nx,y\n")
    code, _, err = run(capsys, "parse", str(logfile), "--no-llm", "--labelled", str(bad))
    assert code == 2 and "EventTemplate" in err
    code, _, err = run(capsys, "parse", str(logfile), "--no-llm", "--labelled", str(tmp_path / "missing.csv"))
    assert code == 2 and "missing.csv" in err


def test_detect(capsys, logfile):
    code, out, err = run(capsys, "detect", str(logfile), "--threads", "2", "--context-length", "1024", "--json", "--threshold", "0")
    recs = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and len(recs) == 4 and all(r["Label"] == "abnormal" for r in recs)
    code, out, err = run(capsys, "detect", str(logfile), "--threads", "2", "--context-length", "1024")
    assert code == 0 and len(out.splitlines()) == 4 and "lines abnormal" in err


def test_explain_and_ask_stream(capsys, logfile):
    code, out, err = run(capsys, "explain", str(logfile), "--task", "root-cause", "--system", "HDFS",
                         "--max-new-tokens", "6", "--threads", "2", "--context-length", "1024")
    assert code == 0 and out.strip()
    code, out, _ = run(capsys, "explain", str(logfile), "--json", "--max-new-tokens", "5", "--threads", "2", "--context-length", "1024")
    rec = json.loads(out)
    assert code == 0 and rec["completion_tokens"] <= 5 and rec["truncated"] is False
    code, out, _ = run(capsys, "ask", "Compare the two logs.", str(logfile), str(logfile), "--json",
                       "--max-new-tokens", "4", "--threads", "2", "--context-length", "1024")
    assert code == 0 and "answer" in json.loads(out)


def test_explain_gives_a_known_answer_from_an_examples_file(capsys, tmp_path):
    line = "Got exception while serving blk_-1608999687919862906 to /10.250.19.102"
    kb = tmp_path / "incidents.jsonl"
    kb.write_text(json.dumps({"input": line, "output": "The reader went away mid-transfer; nothing to fix."}) + "\n"
                  + json.dumps({"input": "Disk quota exceeded on /home/alice", "output": "Raise the quota."}) + "\n")
    (tmp_path / "one.log").write_text(line + "\n")
    base = ["explain", str(tmp_path / "one.log"), "--task", "root-cause", "--examples", str(kb), "--threads", "2",
            "--context-length", "1024", "--max-new-tokens", "4"]
    code, out, _ = run(capsys, *base, "--json")
    rec = json.loads(out)
    assert code == 0 and rec["source"] == "example" and rec["answer"].startswith("The reader went away")
    assert rec["example"]["input"] == line and rec["example"]["similarity"] > 0.99 and rec["completion_tokens"] == 0
    code, out, err = run(capsys, *base)  # streamed, with a note on stderr saying where it comes from
    assert code == 0 and out.strip() == "The reader went away mid-transfer; nothing to fix." and "known answer" in err
    code, out, _ = run(capsys, *base, "--json", "--known-answers", "1.0")  # an identical log still matches
    assert json.loads(out)["source"] == "example"
    code, out, _ = run(capsys, "explain", str(tmp_path / "one.log"), "--json", "--examples", str(kb), "--max-new-tokens",
                       "4", "--threads", "2", "--context-length", "1024", "--known-answers", "0.999", "--task",
                       "interpret", "--system", "HDFS")
    assert json.loads(out)["source"] == "example"  # records without a task take --task's
    (tmp_path / "bad.jsonl").write_text('{"input": "x", "output": "y"}\n{oops\n')
    code, _, err = run(capsys, *base[:4], "--examples", str(tmp_path / "bad.jsonl"))
    assert code == 2 and "line 2 is not JSON" in err
    code, _, err = run(capsys, *base[:4], "--examples", str(tmp_path / "missing.json"))
    assert code == 2 and "no examples file" in err
    code, _, err = run(capsys, *base, "--known-answers", "0")
    assert code == 2 and "known_answers" in err


def test_eval_tiny(capsys, tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("LOGLM_DATA_DIR", str(data_dir))
    code, out, err = run(capsys, "eval", "anomaly", "--limit", "2", "--threads", "2", "--context-length", "1024", "--out", str(tmp_path), "--quiet")
    assert code == 0 and "Table III" in out and list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("argv,msg", [
    (["parse", "/nonexistent/x.log"], "not found"),
    (["detect", "EMPTY"], "empty"),
    (["explain", "BINARY"], "binary"),
    (["ask", "  ", "EMPTY"], "empty"),
    (["eval", "parsing", "--systems", "Nope", "--limit", "2"], "unknown system"),
    (["eval", "parsing", "--limit", "0"], "--limit"),
    (["parse", "DIR"], "folder"),
])
def test_bad_inputs_exit_nonzero_with_message(capsys, tmp_path, argv, msg):
    (tmp_path / "empty.log").write_bytes(b"")
    (tmp_path / "bin.dat").write_bytes(bytes(range(256)) * 64)
    subs = {"EMPTY": str(tmp_path / "empty.log"), "BINARY": str(tmp_path / "bin.dat"), "DIR": str(tmp_path)}
    code, out, err = run(capsys, *[subs.get(a, a) for a in argv])
    assert code == 2 and msg in err and err.startswith("loglm: error:")


def test_usage_errors_and_module_entry(capsys):
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
    r = subprocess.run([sys.executable, "-m", "loglm", "parse", "/nonexistent.log"], capture_output=True, text=True)
    assert r.returncode == 2 and "loglm: error:" in r.stderr


def test_detect_and_explain_read_standard_input(capsys, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(LOG.encode())))
    code, out, err = run(capsys, "detect", "-", "--threads", "2", "--context-length", "1024", "--json")
    recs = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and [r["Content"] for r in recs] == LOG.strip().split("\r\n")  # the log, not "-"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(LOG.encode())))
    code, out, _ = run(capsys, "explain", "-", "--json", "--max-new-tokens", "2", "--threads", "2",
                       "--context-length", "1024", "--format", "<Date> <Time> <Pid> <Level> <Component>: <Content>")
    assert code == 0 and json.loads(out)["answer"] is not None
