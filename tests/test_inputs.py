"""Log input resolution (loglm.inputs): text is text, files as Path / explicit functions /
CLI arguments, several files, globs, stdin and pipes, gzip, log_format, bad input."""
from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loglm import InvalidInputError, LogFileNotFoundError, LoglmError, TemplateMiner
from loglm.cli import main
from loglm.inputs import LogLines, add_input_columns, as_log_lines, is_binary, parse_datetimes, read_log_lines

LINES = ["Connection from 10.0.0.1 closed", "Connection from 10.0.0.7 closed", "disk sda1 full"]
FMT = "<Date> <Level>: <Content>"


def _write(p: Path, lines, crlf=False) -> Path:
    p.write_bytes(("\r\n" if crlf else "\n").join(lines).encode() + b"\n")
    return p


def test_str_is_always_text_never_a_file(tmp_path, monkeypatch):
    f = _write(tmp_path / "secret.log", ["top secret"])
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="pathlib.Path"):
        got = as_log_lines("secret.log")
    assert list(got) == ["secret.log"] and got.path is None
    assert list(as_log_lines(str(f) + "\n")) == [str(f)]
    assert list(as_log_lines(f)) == ["top secret"]  # a Path is read
    assert list(as_log_lines("a\r\nb\n")) == ["a", "b"]
    assert as_log_lines([b"ok", b"\xfe"]).non_utf8.tolist() == [False, True]
    assert list(as_log_lines(pd.Series(["a", "b"]))) == ["a", "b"]
    with pytest.raises(InvalidInputError, match="only paths"):
        as_log_lines(["a line", f])


def test_paths_several_files_globs_gzip(tmp_path):
    a = _write(tmp_path / "a.log", LINES, crlf=True)
    b = tmp_path / "b.log.gz"
    b.write_bytes(gzip.compress(("\n".join(LINES[:2]) + "\n").encode()))
    one = read_log_lines(a)
    assert list(one) == LINES and one.path == a and one.files == [(str(a), 3)]
    assert list(read_log_lines(str(b))) == LINES[:2]  # gzip by magic bytes
    both = as_log_lines([a, b])
    assert list(both) == LINES + LINES[:2]
    assert both.line_ids.tolist() == [1, 2, 3, 1, 2] and both.path is None
    assert [n for n, _ in both.files] == [str(a), str(b)]
    globbed = read_log_lines(str(tmp_path / "*.log*"))
    assert [n for n, _ in globbed.files] == [str(a), str(b)]
    with pytest.raises(LogFileNotFoundError, match="no log file matches"):
        read_log_lines(str(tmp_path / "*.nothing"))
    with pytest.raises(LogFileNotFoundError) as e:
        read_log_lines(tmp_path / "missing.log")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, LoglmError)
    df = TemplateMiner().parse_file([a, b], progress=False)
    assert df["File"].tolist() == [str(a)] * 3 + [str(b)] * 2
    assert df["LineId"].tolist() == [1, 2, 3, 1, 2]
    assert df["EventTemplate"].tolist()[:2] == ["Connection from <*> closed"] * 2


def test_stdin_and_open_files(tmp_path, monkeypatch):
    data = ("\r\n".join(LINES) + "\r\n").encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    got = read_log_lines("-")
    assert list(got) == LINES and got.files == [("-", 3)]
    with pytest.raises(InvalidInputError, match="only once"):
        read_log_lines(["-", "-"])
    assert list(as_log_lines(io.BytesIO(data))) == LINES
    assert list(as_log_lines(io.StringIO("x 1\ny 2\n"))) == ["x 1", "y 2"]


def test_bad_inputs_clear_errors_or_flags(tmp_path):
    (tmp_path / "empty.log").write_bytes(b"")
    (tmp_path / "blank.log").write_bytes(b"\n  \r\n")
    (tmp_path / "bin.log").write_bytes(b"\x00\x01\x02ELF" * 1000)
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b\x08garbage")
    (tmp_path / "bin.gz").write_bytes(gzip.compress(b"\x00\x01\x02ELF" * 1000))
    for name, msg in [("empty.log", "empty"), ("blank.log", "no non-blank"), ("bin.log", "binary"),
                      ("bad.gz", "corrupt gzip"), ("bin.gz", "binary")]:
        with pytest.raises(InvalidInputError, match=msg):
            read_log_lines(tmp_path / name)
    with pytest.raises(InvalidInputError, match="folder"):
        read_log_lines(tmp_path)
    with pytest.raises(InvalidInputError):
        as_log_lines([])
    with pytest.raises(InvalidInputError):
        as_log_lines([1, 2])
    with pytest.raises(InvalidInputError):
        as_log_lines(42)
    big = "y" * (1 << 20)
    p = tmp_path / "odd.log"
    p.write_bytes(b"ok 1\r\n\xff\xfe broken\n" + big.encode() + b"\nend")
    got = read_log_lines(p)
    assert list(got) == ["ok 1", "\ufffd\ufffd broken", big, "end"]
    assert got.non_utf8.tolist() == [False, True, False, False] and got.flagged == {"non_utf8": 1}
    assert is_binary(b"\x00" * 10) and not is_binary("plain text\n".encode())


def test_log_format_everywhere(tmp_path):
    raw = ["2020 INFO: disk 1 ok", "2021 WARN: disk 2 ok", "no header here"]
    got = as_log_lines(raw, log_format=FMT)
    assert list(got) == ["disk 1 ok", "disk 2 ok", "no header here"]
    assert got.fields == {"Date": ["2020", "2021", ""], "Level": ["INFO", "WARN", ""]}
    assert got.format_mismatch.tolist() == [False, False, True]
    assert got.flagged == {"non_utf8": 0, "format_mismatch": 1}
    assert as_log_lines(got, log_format=FMT) is got
    with pytest.raises(InvalidInputError, match="already split"):
        as_log_lines(got, log_format="<Date> <Content>")
    with pytest.raises(InvalidInputError):
        as_log_lines(raw, log_format="<Date> <Level>")  # no <Content>
    df = add_input_columns(pd.DataFrame({"LineId": np.arange(1, 4), "Content": list(got)}), got)
    assert list(df.columns) == ["LineId", "Date", "Level", "Content", "FormatMismatch"]
    f = _write(tmp_path / "f.log", raw)
    df = TemplateMiner().parse_file(f, FMT, progress=False)
    assert df["Level"].tolist() == ["INFO", "WARN", ""] and df["FormatMismatch"].tolist() == [False, False, True]
    assert df["EventTemplate"][0] == "disk <*> ok"


# ---- command line: pipes, -, globs, gzip, several files, missing files ----

def _cli(args, stdin: bytes | None = None, cwd=None):
    return subprocess.run([sys.executable, "-m", "loglm", *args], input=stdin, capture_output=True, cwd=cwd,
                          timeout=120)


def test_cli_pipes_and_dash():
    data = ("\n".join(LINES) + "\n").encode()
    for src in ("/dev/stdin", "-"):
        r = _cli(["parse", "--no-llm", src, "--json"], stdin=data)
        assert r.returncode == 0, r.stderr
        recs = [json.loads(x) for x in r.stdout.decode().splitlines()]
        assert [x["Content"] for x in recs] == LINES
    r = _cli(["parse", "--no-llm", "-"], stdin=b"\x00\x01\x02ELF" * 1000)
    assert r.returncode == 2 and b"binary" in r.stderr
    r = _cli(["parse", "--no-llm", "-"], stdin=b"")
    assert r.returncode == 2 and b"empty" in r.stderr


def test_cli_files_globs_gzip_and_missing(capsys, tmp_path):
    _write(tmp_path / "a.log", ["2020 INFO: x 1", "2020 INFO: x 2"])
    (tmp_path / "b.log.gz").write_bytes(gzip.compress(b"2020 WARN: y 3\nnot fitting\n"))
    code = main(["parse", "--no-llm", str(tmp_path / "*.log*"), "--format", FMT, "--json"])
    out, err = capsys.readouterr()
    recs = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and [r["File"] for r in recs] == [str(tmp_path / "a.log")] * 2 + [str(tmp_path / "b.log.gz")] * 2
    assert [r["Level"] for r in recs] == ["INFO", "INFO", "WARN", ""]
    assert [r["FormatMismatch"] for r in recs] == [False, False, False, True]
    code = main(["parse", "--no-llm", str(tmp_path / "a.log"), str(tmp_path / "b.log.gz"), "--format", FMT])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith("4 lines, 3 templates, 1 lines not matching --format")
    for argv in (["parse", "--no-llm", str(tmp_path / "a.log"), str(tmp_path / "nope.log")],
                 ["detect", str(tmp_path / "nope*.log")], ["explain", str(tmp_path / "nope.log")],
                 ["ask", "why?", str(tmp_path / "nope.log")]):
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 2 and ("not found" in err or "no log file matches" in err), argv


def test_read_log_lines_is_a_loglines():
    got = as_log_lines(["a"])
    assert isinstance(got, LogLines) and isinstance(got, list)


# ---- records, JSON lines, headers, time ----

JAVA = """2024-03-02 10:17:03,123 ERROR [worker-1] app.Db: query 7 failed
java.sql.SQLException: timeout
\tat com.x.Db.run(Db.java:42)
Caused by: java.net.SocketTimeoutException: read timed out
\t... 3 more
2024-03-02 10:17:04,001 INFO [main] app.Db: retry 2 ok
2024-03-02 10:24:00,000 ERROR [worker-2] app.Db: query 9 failed
java.sql.SQLException: timeout
\tat com.x.Db.run(Db.java:42)
Caused by: java.net.SocketTimeoutException: read timed out
\t... 3 more
"""


def test_multiline_records_joined(tmp_path):
    f = tmp_path / "java.log"
    f.write_text(JAVA)
    got = read_log_lines(f, record_start=True)
    assert len(got) == 3 and got.line_ids.tolist() == [1, 6, 7]
    assert got.record_lines.tolist() == [5, 1, 5] and got[0].count("\n") == 4
    assert got[0].startswith("2024-03-02 10:17:03,123 ERROR") and got[0].endswith("... 3 more")
    assert list(read_log_lines(f)) == JAVA.splitlines()  # no joining unless asked
    custom = as_log_lines(["BEGIN a", "x", "BEGIN b"], record_start=r"BEGIN ")
    assert list(custom) == ["BEGIN a\nx", "BEGIN b"]
    never_ends = as_log_lines(["2024-01-01 10:00:00 start"] + ["  more"] * 10, record_start=True, max_record_lines=4)
    assert never_ends.record_lines.tolist() == [4, 4, 3] and never_ends.record_split.tolist() == [False, True, True]
    assert never_ends.flagged["record_split"] == 2
    with pytest.raises(InvalidInputError):
        as_log_lines(["a"], record_start="(")
    # the parsed frame: one row per record, LineId = first line, headers out of the template
    df = TemplateMiner().parse_file(f, "auto", progress=False, record_start=True)
    assert df["LineId"].tolist() == [1, 6, 7] and df["RecordLines"].tolist() == [5, 1, 5]
    assert df["Level"].tolist() == ["ERROR", "INFO", "ERROR"] and df["Thread"].tolist()[1] == "main"
    assert df["EventTemplate"][0] == df["EventTemplate"][2] and "2024" not in df["EventTemplate"][0]
    assert df["Datetime"].tolist()[1] == pd.Timestamp("2024-03-02 10:17:04.001")


def test_auto_headers_and_datetimes():
    raw = ["081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38 terminating",
           "081109 203807 222 INFO dfs.DataNode$PacketResponder: PacketResponder 0 for block blk_39 terminating",
           "2024-01-05T10:00:00Z WARN [pool-1] disk 3 almost full", "no header at all"]
    got = as_log_lines(raw, log_format="auto")
    assert list(got)[:2] == ["PacketResponder 1 for block blk_38 terminating",
                             "PacketResponder 0 for block blk_39 terminating"]
    assert got.fields["Pid"][:2] == ["148", "222"] and got.fields["Level"] == ["INFO", "INFO", "WARN", ""]
    assert list(got)[3] == "no header at all"
    df = TemplateMiner().parse(list(got))
    assert df["EventTemplate"][0] == df["EventTemplate"][1]  # the time and pid stay out of the template
    dts = parse_datetimes(got.fields["Timestamp"]).tolist()
    assert dts[:3] == [pd.Timestamp("2008-11-09 20:36:15"), pd.Timestamp("2008-11-09 20:38:07"),
                       pd.Timestamp("2024-01-05 10:00:00")] and pd.isna(dts[3])
    fmt = as_log_lines(raw[:2], log_format="<Date> <Time> <Pid> <Level> <Component>: <Content>")
    frame = add_input_columns(pd.DataFrame({"LineId": [1, 2], "Content": list(fmt)}), fmt)
    assert frame["Datetime"].tolist() == dts[:2]


def test_json_lines():
    lines = ['{"ts": "2024-01-01T10:00:00Z", "level": "warn", "msg": "disk 1 full"}',
             '{"ts": "2024-01-01T10:01:00Z", "level": "warn", "msg": "disk 2 full"}',
             "not json {", '{"other": 1}', '{"log": {"level": "error"}, "message": "nested 3"}']
    got = as_log_lines(lines, log_format="json:message=msg,timestamp=ts,level=level")
    assert list(got)[:2] == ["disk 1 full", "disk 2 full"] and list(got)[2] == "not json {"
    assert got.format_mismatch.tolist() == [False, False, True, True, True]
    assert got.fields["Level"][:2] == ["warn", "warn"] and got.fields["Level"][2] == ""
    auto = as_log_lines(lines, log_format="json")  # usual field names
    assert list(auto)[4] == "nested 3" and auto.fields["Level"][4] == "error"
    assert auto.format_mismatch.tolist() == [False, False, True, True, False]
    df = TemplateMiner().parse(list(got))
    assert df["EventTemplate"][0] == "disk <*> full"
    with pytest.raises(InvalidInputError):
        as_log_lines(lines, log_format="json:colour=c")


def test_sessions_by_time():
    from loglm.collab import sessions_by_time

    t = ["2024-01-01 10:00:01", "2024-01-01 10:03:00", "", "2024-01-01 10:07:00", "2024-01-01 10:21:00"]
    s = sessions_by_time(["a", "b", "c", "d", "e"], t, window="5min")
    assert list(s.values()) == [["a", "b", "c"], ["d"], ["e"]]
    assert list(s)[1] == pd.Timestamp("2024-01-01 10:05:00")
    slid = sessions_by_time(["a", "b", "c", "d", "e"], t, window="10min", step="5min")
    assert list(slid.values())[:2] == [["a", "b", "c", "d"], ["d"]]
    f = add_input_columns(pd.DataFrame({"LineId": [1, 2], "Content": ["x 1", "y 2"]}),
                          as_log_lines(["2024-01-01 10:00:00 INFO x 1", "2024-01-01 11:00:00 INFO y 2"],
                                       log_format="auto"))
    assert [len(v) for v in sessions_by_time(f, window="1h").values()] == [1, 1]
    with pytest.raises(InvalidInputError):
        sessions_by_time(["a"], ["never"], window="5min")
    with pytest.raises(InvalidInputError):
        sessions_by_time(["a"], ["2024-01-01 10:00:00"], window="-5min")


def test_cli_multiline_json_and_templates_table(capsys, tmp_path):
    f = tmp_path / "java.log"
    f.write_text(JAVA)
    out_t = tmp_path / "t.csv"
    code = main(["parse", "--no-llm", str(f), "--multiline", "--format", "auto", "--json", "--templates", str(out_t)])
    out, _ = capsys.readouterr()
    recs = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and [r["LineId"] for r in recs] == [1, 6, 7] and recs[0]["Datetime"].startswith("2024-03-02T10:17:03")
    t = pd.read_csv(out_t)
    assert t.columns.tolist() == ["EventId", "EventTemplate", "Occurrences"] and t["Occurrences"].tolist() == [2, 1]
    r = _cli(["parse", "--no-llm", "-", "--format", "json"], stdin=b'{"msg": "a 1"}\nbroken\n')
    assert r.returncode == 0 and b"1 lines not matching --format" in r.stdout


# ---- header recognition (log_format="auto", the default of parse) ----

HEADERS = [  # raw line, recognised fields, content
    ("081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38 terminating",
     {"Timestamp": "081109 203615", "Pid": "148", "Level": "INFO", "Component": "dfs.DataNode$PacketResponder"},
     "PacketResponder 1 for block blk_38 terminating"),
    ("2015-10-18 18:01:47,978 INFO [main] org.apache.hadoop.mapreduce.v2.app.MRAppMaster: Created MRAppMaster",
     {"Timestamp": "2015-10-18 18:01:47,978", "Level": "INFO", "Thread": "main",
      "Component": "org.apache.hadoop.mapreduce.v2.app.MRAppMaster"}, "Created MRAppMaster"),
    ("2015-10-18 18:01:47,978 WARN [IPC Server handler 4 on 62270] org.apache.hadoop.ipc.Server: busy",
     {"Thread": "IPC Server handler 4 on 62270", "Component": "org.apache.hadoop.ipc.Server"}, "busy"),
    ("2015-07-29 17:41:44,747 - INFO  [QuorumPeer[myid=1]/0:0:0:0:0:0:0:0:2181:FastLeaderElection@774] - "
     "Notification time out: 3200",
     {"Level": "INFO", "Thread": "QuorumPeer[myid=1]/0:0:0:0:0:0:0:0:2181:FastLeaderElection@774"},
     "Notification time out: 3200"),
    ("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0",
     {"Timestamp": "Jun 14 15:16:01", "Host": "combo", "Component": "sshd(pam_unix)", "Pid": "19939"},
     "authentication failure; logname= uid=0"),
    ("- 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 RAS KERNEL INFO "
     "instruction cache parity error corrected",
     {"Timestamp": "2005-06-03-15.42.50.675872", "Level": "INFO"}, "instruction cache parity error corrected"),
    ("[10.30 16:49:06] chrome.exe *64 - proxy.cse.cuhk.edu.hk:5070 open through proxy",
     {"Timestamp": "10.30 16:49:06", "Component": "chrome.exe *64"}, "proxy.cse.cuhk.edu.hk:5070 open through proxy"),
    ("12:00:00.123 [main] INFO com.foo.Bar - message here",
     {"Timestamp": "12:00:00.123", "Thread": "main", "Level": "INFO", "Component": "com.foo.Bar"}, "message here"),
    ("2023-01-01 12:00:00.123  INFO 4242 --- [           main] c.e.demo.DemoApplication : Started in 1.2 s",
     {"Pid": "4242", "Thread": "main", "Component": "c.e.demo.DemoApplication"}, "Started in 1.2 s"),
    ("[Sun Dec 04 04:47:44 2005] [error] mod_jk child workerEnv in error state 6",
     {"Timestamp": "Sun Dec 04 04:47:44 2005", "Level": "error"}, "mod_jk child workerEnv in error state 6"),
    ("17/06/09 20:10:40 INFO executor.CoarseGrainedExecutorBackend: Registered signal handlers",
     {"Level": "INFO", "Component": "executor.CoarseGrainedExecutorBackend"}, "Registered signal handlers"),
    ("2023-01-01 12:00:00,123 - myapp.module - INFO - message here",  # Python logging
     {"Timestamp": "2023-01-01 12:00:00,123", "Component": "myapp.module", "Level": "INFO"}, "message here"),
    ("WARNING:root:Watch out!", {"Level": "WARNING", "Component": "root"}, "Watch out!"),  # logging.basicConfig
    ("2024-01-01 12:00:00: server started", {"Timestamp": "2024-01-01 12:00:00"}, "server started"),
    # an exception class opening the message is content, not a component
    ("ERROR [worker-1] java.io.IOException: No space left on device", {"Level": "ERROR", "Thread": "worker-1"},
     "java.io.IOException: No space left on device"),
    ("2024-01-01 10:00:00 WARN java.lang.OutOfMemoryError: Java heap space", {"Level": "WARN"},
     "java.lang.OutOfMemoryError: Java heap space"),
    ("2024-03-02 10:17:03,123 INFO [1/3] downloading", {"Level": "INFO"}, "[1/3] downloading"),
    ("2024-03-02 10:17:03,123 ERROR Status: OK", {"Level": "ERROR"}, "Status: OK"),  # a bare word is content
    ("2024-01-01 10:00:00 INFO [main] app.Db: query\n\tat x.y(Z.java:1)", {"Component": "app.Db"},
     "query\n\tat x.y(Z.java:1)"),  # a joined record keeps its continuation lines
]

NO_HEADER = [  # lines that must stay whole
    "java.io.IOException: No space left on device", "Connection from 10.0.0.1 closed", "disk sda1 full",
    "ERROR IN CONTACTING RM.", "ALERT exited abnormally with [1]", "ERROR: disk full", "WARNING: odd",
    "INFO", "ERROR:root:", "INFO:x", "2024-01-01 12:00:00", "2024-01-01 12:00:00 ", "123456 654321 files copied", "10:30:00 is the time",
    "Traceback (most recent call last):", "\tat com.x.Db.run(Db.java:42)", "1117838570 DISK FULL ERROR now",
    '{"level": "INFO", "msg": "x"}', "", "   ", "[1/3] INFO step", "INFORMATION: x",
    "134681 node-246 unix.hw state_change.unavailable 1077804742 1 Component State Change: Component",
]


@pytest.mark.parametrize("line,fields,content", HEADERS)
def test_split_header_recognises_common_headers(line, fields, content):
    from loglm.inputs import split_header

    got = split_header(line)
    assert got is not None, line
    f, start = got
    assert line[start:] == content and line.endswith(content)
    assert {k: f.get(k) for k in fields} == fields


def test_split_header_keeps_lines_without_one_whole():
    from loglm.inputs import split_header

    for line in NO_HEADER:
        assert split_header(line) is None, line
    big = "2024-01-01 10:00:00 INFO [main] app.Db: " + "x" * (1 << 20)  # a 1 MB line
    assert split_header(big)[1] == len(big) - (1 << 20) and split_header("y" * (1 << 20)) is None
    got = as_log_lines([h[0] for h in HEADERS] + NO_HEADER, log_format="auto")
    assert list(got) == [h[2] for h in HEADERS] + NO_HEADER
    assert got.format_mismatch is None and "format_mismatch" not in got.flagged  # no header is no error


def test_headers_on_every_loghub_system(data_dir):
    """Per loghub_2k system, the recognised content equals loghub's Content or is the
    line kept longer (never a cut into the content); the Content column itself (lines
    without a header) stays whole."""
    from loglm.inputs import _split_auto

    root = data_dir / "loghub_2k"
    share = {}
    for sysdir in sorted(p for p in root.iterdir() if (p / f"{p.name}_2k.log").exists()):
        raw = read_log_lines(sysdir / f"{sysdir.name}_2k.log")
        truth = pd.read_csv(sysdir / f"{sysdir.name}_2k.log_structured.csv", dtype=str,
                            keep_default_na=False)["Content"].tolist()
        h, cols, _ = _split_auto(list(raw))
        got = cols[h.index("Content")]
        assert len(got) == len(truth)
        for line, c, t in zip(raw, got, truth):
            assert line.endswith(c) and c.strip().endswith(t.strip()), (sysdir.name, line, c, t)
        share[sysdir.name] = np.mean([c.strip() == t.strip() for c, t in zip(got, truth)])
        h2, cols2, _ = _split_auto(truth)
        assert cols2[h2.index("Content")] == truth, sysdir.name
    assert share["HPC"] == 0.0  # no timestamp or level at its start: kept whole
    assert all(v >= 0.99 for k, v in share.items() if k != "HPC"), share


def test_parse_recognises_headers_by_default(tmp_path, capsys):
    raw = ["081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38 terminating",
           "081109 203807 222 INFO dfs.DataNode$PacketResponder: PacketResponder 0 for block blk_39 terminating",
           "no header at all"]
    f = _write(tmp_path / "h.log", raw, crlf=True)
    df = TemplateMiner().parse_file(f, progress=False)
    assert df["Content"].tolist() == ["PacketResponder 1 for block blk_38 terminating",
                                      "PacketResponder 0 for block blk_39 terminating", "no header at all"]
    assert df["Pid"].tolist() == ["148", "222", ""] and "FormatMismatch" not in df
    assert df["EventTemplate"][0] == df["EventTemplate"][1] and "081109" not in df["EventTemplate"][0]
    assert list(df.columns[:7]) == ["LineId", "Timestamp", "Pid", "Level", "Component", "Datetime", "Content"]
    whole = TemplateMiner().parse_file(f, None, progress=False)  # None: lines stay whole
    assert whole["Content"].tolist() == raw and list(whole.columns[:2]) == ["LineId", "Content"]
    assert TemplateMiner().parse_lines(raw)["Content"].tolist() == df["Content"].tolist()
    assert TemplateMiner().parse_lines(raw, log_format=None)["Content"].tolist() == raw
    split = read_log_lines(f, log_format="<Date> <Time> <Pid> <Level> <Component>: <Content>")
    assert TemplateMiner().parse_lines(split)["FormatMismatch"].tolist() == [False, False, True]  # kept as split
    code = main(["parse", "--no-llm", str(f), "--json"])
    recs = [json.loads(x) for x in capsys.readouterr()[0].splitlines()]
    assert code == 0 and [r["Content"] for r in recs] == df["Content"].tolist()
    code = main(["parse", "--no-llm", str(f), "--json", "--format", "none"])
    recs = [json.loads(x) for x in capsys.readouterr()[0].splitlines()]
    assert code == 0 and [r["Content"] for r in recs] == raw
    code = main(["parse", "--no-llm", str(f)])
    out = capsys.readouterr()[0]
    assert code == 0 and out.startswith("3 lines, 2 templates, headers recognised on 2 lines (--format none")
    code = main(["parse", "--no-llm", str(f), "--format", "none"])
    assert code == 0 and "headers recognised" not in capsys.readouterr()[0]
    odd = _write(tmp_path / "odd.log", ["[30-Sep-2015 10:12:37 UTC] PHP Warning: x 1", "plain line"])
    code = main(["parse", "--no-llm", str(odd)])  # a recognised time that does not parse is counted
    assert code == 0 and ", 1 timestamps not understood, headers recognised on 1 lines" in capsys.readouterr()[0]


def test_model_parse_recognises_headers_by_default():
    """LogLM.parse (TaskMixin) with a stand-in model: the model's prompt never sees the header."""
    from loglm.tasks import TaskMixin

    class Stub(TaskMixin):
        def __init__(self):
            self.seen = []

        def propose_templates(self, lines, examples):
            self.seen += list(lines)
            return [""] * len(lines)

    raw = ["2024-01-01 10:00:0%d,123 INFO [main] app.Db: opened table t%d in %d ms" % (i, i, 10 * i) for i in range(5)]
    m = Stub()
    df = m.parse(raw)
    assert df["Content"].tolist() == ["opened table t%d in %d ms" % (i, 10 * i) for i in range(5)]
    assert m.seen and not any("2024" in x or "app.Db" in x for x in m.seen)
    assert df["Datetime"].tolist()[1] == pd.Timestamp("2024-01-01 10:00:01.123")
    m2 = Stub()
    assert m2.parse(raw, log_format=None)["Content"].tolist() == raw


def test_cli_bad_input_nothing_lost_counts_reported(tmp_path, capsys):
    """CRLF, a 1 MB line, bytes that are not UTF-8 and a record that never ends, through
    `loglm parse --multiline` (headers recognised by default): every line is in a row,
    the flagged rows are counted in the summary."""
    big = "2024-01-01 10:00:01 INFO [main] app.Db: " + "x" * (1 << 20)
    body = (b"2024-01-01 10:00:00 ERROR [main] app.Db: failed\r\n" + b"\tat a.b(C.java:1)\r\n" * 2500
            + big.encode() + b"\r\n2024-01-01 10:00:02 WARN [main] app.Db: bad \xff byte\r\n")
    f = tmp_path / "bad.log"
    f.write_bytes(body)
    code = main(["parse", "--no-llm", str(f), "--multiline", "--json"])
    recs = [json.loads(x) for x in capsys.readouterr()[0].splitlines()]
    assert code == 0 and sum(r["RecordLines"] for r in recs) == 2503  # nothing lost
    assert [r["RecordSplit"] for r in recs].count(True) == 2 and recs[-1]["NonUtf8"] is True
    assert recs[-2]["Content"] == "x" * (1 << 20) and recs[-1]["Content"] == "bad \ufffd byte"
    assert recs[0]["Level"] == "ERROR" and recs[0]["Content"].startswith("failed\n\tat a.b(C.java:1)")
    code = main(["parse", "--no-llm", str(f), "--multiline"])
    out = capsys.readouterr()[0]
    assert code == 0 and "1 lines with invalid UTF-8" in out and "2 records cut at the record size limit" in out
