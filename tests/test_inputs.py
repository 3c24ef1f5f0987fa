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
from loglm.inputs import LogLines, add_input_columns, as_log_lines, is_binary, read_log_lines

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
