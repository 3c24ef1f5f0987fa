"""Log input resolution: the one place where every task helper and CLI command turns what
it was given into log lines.

Rules (the same for every helper and command):

* **A ``str`` is always log text** (split into lines at LF / CRLF), never a file name,
  so text that happens to name a file is never read. Files come in as
  :class:`pathlib.Path` (or any ``os.PathLike``), a list of them, or through
  :func:`read_log_lines`, which takes file names, globs and ``"-"`` (standard input);
  the command line takes file names the same way.
* Files may be plain or gzip (recognised by their magic bytes), LF or CRLF; pipes, FIFOs
  and ``/dev/stdin`` are read once (the binary check looks at the bytes already read, so
  it never consumes the pipe). Bytes that are not UTF-8 are decoded with U+FFFD and the
  line is flagged (``non_utf8``), never dropped. Empty input, a folder and binary data
  are refused with :class:`loglm.InvalidInputError`; a missing file or a glob with no
  match raises :class:`loglm.LogFileNotFoundError` (a ``FileNotFoundError``).
* ``log_format`` (loghub / logparser style, e.g. ``"<Date> <Time> <Level>: <Content>"``)
  splits each line: the helpers work on ``Content`` and the other fields become
  DataFrame columns; a line that does not fit keeps the whole line as its Content and is
  flagged (``FormatMismatch``).
  ``log_format="json"`` reads JSON lines (message / timestamp / level fields found by
  their usual names, or named: ``"json:message=msg,timestamp=ts,level=lvl"``); a line
  that is not a JSON object is kept whole and flagged. ``log_format="auto"`` (the
  default of the parse helpers: ``LogLM.parse``, ``TemplateMiner.parse_file`` /
  ``parse_lines``, ``loglm parse``) recognises common headers (timestamp, pid, level,
  ``[thread]``, logger / component; :func:`split_header`) and keeps them out of Content;
  a line without one stays whole; ``log_format=None`` keeps every line whole. Timestamps named by the format (``<Date>``, ``<Time>``,
  ``<Timestamp>``, JSON, auto) are parsed into a ``Datetime`` column.
* ``record_start`` joins multi-line records (stack traces): a line that does not match
  it continues the record before it (``True`` = :data:`DEFAULT_RECORD_START`, common
  timestamp / level headers; or a regex). A record's ``LineId`` is its first line;
  ``RecordLines`` counts its lines; a record longer than ``max_record_lines`` is cut and
  the rest flagged ``RecordSplit``.
* Several files are read in the order given; the DataFrames then carry a ``File`` column
  and ``LineId`` is the line number inside its file.
"""
from __future__ import annotations

import glob as _glob
import gzip
import io
import json
import os
import re
import stat
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from loglm.errors import InvalidInputError, InvalidTypeError, LogFileNotFoundError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LogLines", "read_log_lines", "as_log_lines", "add_input_columns", "is_binary", "parse_datetimes",
           "split_header", "DEFAULT_RECORD_START"]

PathLike = Union[str, "os.PathLike[str]"]
#: what the Python helpers accept as logs
Logs = Union["os.PathLike[str]", str, bytes, Sequence[Any], Any]

#: files whose first 64 KiB have more NULs than this fraction (or >5% control bytes) are binary
_BINARY_NUL_FRACTION = 0.001
_HEAD = 1 << 16
_GZIP_MAGIC = b"\x1f\x8b"
_GLOB_CHARS = frozenset("*?[")
#: decompressed gzip input larger than this is refused (a gzip bomb guard)
MAX_GZIP_BYTES = 8 << 30

_MON = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_DOW = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_TS = (r"(?:\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"  # ISO 8601
       r"|\d{4}-\d{2}-\d{2}-\d{2}\.\d{2}\.\d{2}(?:\.\d+)?"  # BGL 2005-06-03-15.42.50.675872
       r"|\d{4}/\d{2}/\d{2}[ -]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?"
       r"|\d{2}/\d{2}/\d{4}[ :]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?"
       r"|\d{2}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}(?:[.,]\d+)?"  # Spark yy/MM/dd
       rf"|(?:{_DOW} )?{_MON} +\d{{1,2}} \d{{2}}:\d{{2}}:\d{{2}}(?:\.\d+)?(?: \d{{4}})?"  # syslog, ctime
       rf"|\d{{2}}/{_MON}/\d{{4}}:\d{{2}}:\d{{2}}:\d{{2}}(?: [+-]\d{{4}})?"  # Apache access
       r"|\d{6} \d{6}"  # HDFS yymmdd hhmmss
       r"|\d{2}\.\d{2} \d{2}:\d{2}:\d{2}"  # Proxifier MM.dd
       r"|\d{2}:\d{2}:\d{2}(?:[.,]\d+)?)")
_LEVEL = r"(?:TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|SEVERE|CRITICAL|CRIT|FATAL|ALERT|EMERG)"
#: default ``record_start``: a line opening with a timestamp (optionally in brackets) or a
#: level word starts a record; anything else (indented "at ...", "Caused by: ...",
#: "... 12 more", "Traceback ...") continues the previous one
DEFAULT_RECORD_START = rf"^\s{{0,1}}(?:\[?{_TS}|\[?{_LEVEL}\b)"

# ---- header recognition (log_format="auto", the default of parse) -------------------
# A header is recognised only from an anchor at the start of the line: a timestamp or a
# level word. After it, in this order and each optional: a pid (before a level), the
# level, a [thread] and a logger / component name. Anything not fitting stays content:
# when unsure, the line is kept whole (a wrong strip is worse than none).
_END = r"(?=[ \t]|[,:][ \t]|$)"
_H_TS = re.compile(rf"\[(?P<b>{_TS})\]{_END}|(?P<t>{_TS}){_END}"
                   r"|\[(?P<g>[A-Za-z0-9 ,./:+-]{0,40}\d{2}:\d{2}:\d{2}[A-Za-z0-9 ,./:+-]{0,40})\]" + _END)
_H_SYSLOG = re.compile(rf"(?:{_DOW} )?{_MON} ")
#: separator between header fields: blanks, optionally with "-", "--", "---", "|", ":" or ","
_H_SEP = re.compile(r"[ \t]*(?:-{1,3}|\||:|,)[ \t]+|[ \t]+")
_H_LEVEL = re.compile(rf"\[(?P<b>(?i:{_LEVEL}))\]|<(?P<a>{_LEVEL})>|(?P<w>{_LEVEL}):?(?=[ \t]|$)")
_H_PID = re.compile(r"\d{1,10}(?=[ \t])")
#: [thread]: one level of nested brackets (Zookeeper's "[QuorumPeer[myid=1]/0:...@774]")
_H_THREAD = re.compile(r"\[(?P<v>(?:[^\[\]\n]|\[[^\[\]\n]*\]){1,200})\](?=[ \t]|$)")
#: a logger: dotted (org.apache.Foo), with $ (Foo$Bar), a (tag) or a [pid]; then ":", " :" or " -"
_H_LOGGER = re.compile(r"(?P<v>[A-Za-z_][\w$-]*(?:\.[\w$-]+)*(?:\([^()\s]{0,64}\))?(?:\[(?P<p>\d{1,10})\])?)"
                       r"(?:[ \t]?:|[ \t]+-)(?:[ \t]+|$)")
#: a message opening with an exception / error class ("java.io.IOException: ...") is content
_H_EXCEPTION = re.compile(r"(?:Exception|Error|Throwable|Fault|Failure|Warning)(?:\$\w+)?$")
#: syslog after its timestamp: "host tag[pid]: message" (as Linux in loghub)
_H_SYSLOG_TAG = re.compile(r"[ \t]+(?P<h>[\w.-]{1,64})[ \t]+(?P<v>[A-Za-z_][\w.-]{0,63}(?:\([^()\s]{0,64}\))?)"
                           r"(?:\[(?P<p>\d{1,10})\])?:(?:[ \t]+|$)")
#: after a bracketed timestamp: a program file name (with an extension) and " - "
_H_PROGRAM = re.compile(r"[ \t]+(?P<v>[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,4}(?: \*\d{2})?)[ \t]+-[ \t]+")
#: free-form uppercase header ending at a level, with a timestamp in it (BGL)
_H_UPPER = re.compile(rf"(?P<h>(?:[^\sa-z]+[ \t]+){{1,12}}?)(?P<l>{_LEVEL})[ \t]+")
#: Python logging: "name - LEVEL - message" after the time, "LEVEL:name:message" alone
_H_PY_NAME_LEVEL = re.compile(rf"(?P<v>[A-Za-z_][\w.$-]{{0,127}})[ \t]+-[ \t]+(?P<l>{_LEVEL})[ \t]+-[ \t]+")
_H_PY_BASIC = re.compile(rf"(?P<l>{_LEVEL}):(?P<v>[A-Za-z_][\w.]{{0,127}}):")
#: timestamps that could be message numbers ("123456 654321", "10:30:00"): a header only
#: when a level follows (or when in brackets)
_H_WEAK_TS = re.compile(r"\d{6} \d{6}|\d{2}\.\d{2} \d{2}:\d{2}:\d{2}|\d{2}:\d{2}:\d{2}(?:[.,]\d+)?")


def _logger(line: str, pos: int) -> Optional["re.Match[str]"]:
    """A logger / component name at ``pos``: dotted, with ``$``, a ``(tag)`` or ``[pid]``
    (a bare word could be the message's first word), never an exception class."""
    m = _H_LOGGER.match(line, pos)
    if m is None:
        return None
    name = m.group("v")
    if not any(c in name for c in ".$(["):
        return None
    if _H_EXCEPTION.search(name.split("(")[0].split("[")[0].rstrip(".")):
        return None
    return m


def split_header(line: str) -> Optional[Tuple[Dict[str, str], int]]:
    """The header of one raw log line, as ``log_format="auto"`` recognises it:
    ``({field: value}, start of the message)`` or ``None`` when the line has no header
    (then it stays whole).

    A header starts at the beginning of the line with an anchor: a timestamp (ISO 8601,
    log4j, syslog, HDFS, Apache..., optionally in brackets) or a level word (``INFO``,
    ``WARN``, ``[error]``...). After the timestamp come, each optional and in this order,
    a pid (only when a level follows), the level, a ``[thread]`` and a logger /
    component (``org.apache.Foo:``, ``dfs.DataNode$PacketResponder:``, ``sshd[42]:``;
    a bare word or an exception class such as ``java.io.IOException:`` is message);
    syslog lines give ``host tag[pid]:``, Python's logging ``name - LEVEL -`` after the
    time and ``LEVEL:name:`` (``logging.basicConfig``). Fields: ``Timestamp``, ``Pid``, ``Level``,
    ``Thread``, ``Component``, ``Host``, ``Header`` (the rest of a free-form header
    before a level, as BGL's). A header that would leave an empty message is not one.
    """
    if not isinstance(line, str):
        raise InvalidTypeError(f"split_header takes one line (str), got {type(line).__name__}")
    f: Dict[str, str] = {}
    pos = 0
    n = len(line)
    weak = False
    m = _H_TS.match(line)
    if m is not None:
        ts = m.group("b") or m.group("t") or m.group("g")
        f["Timestamp"] = ts
        weak = m.group("t") is not None and _H_WEAK_TS.fullmatch(ts) is not None
        pos = m.end()
        if _H_SYSLOG.match(ts):
            tag = _H_SYSLOG_TAG.match(line, pos)
            if tag is not None:
                f["Host"], f["Component"] = tag.group("h"), tag.group("v")
                if tag.group("p"):
                    f["Pid"] = tag.group("p")
                return (f, tag.end()) if tag.end() < n and line[tag.end():].strip() else None
        if m.group("t") is None:  # "[time] program.exe - message" (Proxifier)
            g = _H_PROGRAM.match(line, pos)
            if g is not None and _H_LEVEL.match(line, g.start("v")) is None:
                f["Component"] = g.group("v")
                return (f, g.end()) if g.end() < n and line[g.end():].strip() else None
    else:
        py = _H_PY_BASIC.match(line)
        if py is not None:
            return ({"Level": py.group("l"), "Component": py.group("v")}, py.end()) if line[py.end():].strip() else None
        u = _H_UPPER.match(line)
        stamps = [t for t in u.group("h").split() if _H_TS.fullmatch(t) and not _H_WEAK_TS.fullmatch(t)] if u else []
        if u is not None and stamps:
            if u.end() < n and line[u.end():].strip():
                return {"Timestamp": stamps[0], "Header": u.group("h").strip(), "Level": u.group("l")}, u.end()
            return None

    def sep(at: int) -> Tuple[int, str]:
        s = _H_SEP.match(line, at)
        return (s.end(), s.group()) if s is not None else (at, "")

    cur, _ = sep(pos) if pos else (0, "")
    if pos and not weak:  # Python logging's "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
        py2 = _H_PY_NAME_LEVEL.match(line, cur)
        if py2 is not None:
            f["Component"], f["Level"] = py2.group("v"), py2.group("l")
            return (f, py2.end()) if py2.end() < n and line[py2.end():].strip() else None
    if pos:  # a pid right after the timestamp, when a level follows it (HDFS)
        p = _H_PID.match(line, cur)
        if p is not None:
            nxt, _ = sep(p.end())
            if _H_LEVEL.match(line, nxt) is not None:
                f["Pid"], cur = p.group(), nxt
    lv = _H_LEVEL.match(line, cur)
    if lv is not None:
        f["Level"] = lv.group("b") or lv.group("a") or lv.group("w")
        pos = lv.end()
        cur, _ = sep(pos)
        p = re.match(r"(\d{1,10})[ \t]+---[ \t]+", line[cur:])  # Spring Boot "INFO 4242 --- [main]"
        if p is not None and "Pid" not in f:
            f["Pid"], cur = p.group(1), cur + p.end()
    if not f:
        return None
    # a bare level word opening the line ("ERROR IN CONTACTING RM.", "ALERT exited ...")
    # may be the message itself: a header only with a [thread] or a logger after it
    bare = m is None and lv is not None and lv.group("w") is not None
    th = _H_THREAD.match(line, cur)
    if th is not None and not (th.group("v").strip().isdigit()):
        after, s = sep(th.end())
        lv2 = _H_LEVEL.match(line, after) if "Level" not in f else None
        ok = (lv2 is not None or "-" in s or "|" in s or _logger(line, after) is not None
              or (not any(c.isspace() for c in th.group("v").strip()) and any(c.isalpha() for c in th.group("v"))))
        if ok and ("Level" in f or lv2 is not None):
            f["Thread"] = th.group("v").strip()
            pos, cur = th.end(), after
            if lv2 is not None:
                f["Level"] = lv2.group("b") or lv2.group("a") or lv2.group("w")
                pos = lv2.end()
                cur, s = sep(pos)
            if "-" in s or "|" in s:  # "[thread] - message": the header ends here
                return (f, cur) if cur < n and line[cur:].strip() else None
    if "Level" in f:
        lg = _logger(line, cur)
        if lg is not None:
            f["Component"] = lg.group("v")
            if lg.group("p") and "Pid" not in f:
                f["Pid"] = lg.group("p")
            pos = cur = lg.end()
    if pos == 0 or (weak and "Level" not in f) or (bare and "Thread" not in f and "Component" not in f):
        return None
    cur, _ = sep(pos) if cur <= pos else (cur, "")
    if cur >= n or not line[cur:].strip():
        return None
    return f, cur


_JSON_NAMES = {"message": ("message", "msg", "log", "text", "@message", "body"),
               "timestamp": ("timestamp", "time", "ts", "@timestamp", "datetime", "date", "t"),
               "level": ("level", "severity", "lvl", "levelname", "log.level", "loglevel")}


class LogLines(list):
    """A list of log lines (or records) with facts about where they came from.

    Attributes:
        non_utf8: bool array, the line had bytes that were not valid UTF-8 (replaced by
            U+FFFD).
        path: the file when the lines came from exactly one file, else ``None``.
        line_ids: int array, 1-based line number of each line inside its source.
        files: ``[(name, number of lines), ...]`` of the files read, in order (``[]`` for
            in-memory input).
        fields: header columns from ``log_format`` (name -> one value per line); empty
            without a format.
        format_mismatch: bool array (the line did not fit ``log_format``), or ``None``
            without a format.
    """

    non_utf8: np.ndarray
    path: Optional[Path]
    line_ids: np.ndarray
    files: List[Tuple[str, int]]
    fields: Dict[str, List[str]]
    format_mismatch: Optional[np.ndarray]
    log_format: Optional[str]
    record_lines: Optional[np.ndarray]
    record_split: Optional[np.ndarray]

    @classmethod
    def of(cls, lines: Iterable[str], non_utf8: Any = None, *, path: Optional[Path] = None,
           line_ids: Any = None, files: Optional[List[Tuple[str, int]]] = None) -> "LogLines":
        """Build from lines and per-line flags (defaults: no flag, ids 1..n)."""
        out = cls(lines)
        n = len(out)
        out.non_utf8 = np.zeros(n, dtype=bool) if non_utf8 is None else np.asarray(non_utf8, dtype=bool)
        out.line_ids = np.arange(1, n + 1, dtype=np.int64) if line_ids is None else np.asarray(line_ids, np.int64)
        out.path = path
        out.files = list(files or [])
        out.fields = {}
        out.format_mismatch = None
        out.log_format = None
        out.record_lines = None
        out.record_split = None
        return out

    @property
    def flagged(self) -> Dict[str, int]:
        """Counts of flagged lines: ``{"non_utf8": n, "format_mismatch": m}`` (the latter only
        with a format)."""
        out = {"non_utf8": int(np.count_nonzero(self.non_utf8))}
        if self.format_mismatch is not None:
            out["format_mismatch"] = int(np.count_nonzero(self.format_mismatch))
        if self.record_split is not None:
            out["record_split"] = int(np.count_nonzero(self.record_split))
        return out


# ---- bytes -> lines ------------------------------------------------------------------

def is_binary(head: bytes) -> bool:
    """Whether the first bytes of an input look like a binary file rather than text (NUL
    bytes beyond 0.1%, a NUL with no newline at all, or more than 5% control bytes)."""
    if not head:
        return False
    head = head[:_HEAD]
    nul = head.count(b"\x00")
    ctrl = sum(head.count(bytes([c])) for c in (*range(1, 9), *range(14, 27), *range(28, 32), 127))
    return nul > _BINARY_NUL_FRACTION * len(head) or bool(nul and b"\n" not in head) or ctrl > 0.05 * len(head)


def _split_bytes(data: bytes) -> Tuple[List[str], np.ndarray]:
    """Lines of raw bytes (LF or CRLF; a final newline ends the last line; invalid UTF-8
    replaced and flagged per line)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return [x[:-1] if x.endswith("\r") else x for x in lines], np.zeros(len(lines), dtype=bool)
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    lines, bad = [], []
    for p in pieces:
        if p.endswith(b"\r"):
            p = p[:-1]
        try:
            lines.append(p.decode("utf-8"))
            bad.append(False)
        except UnicodeDecodeError:
            lines.append(p.decode("utf-8", errors="replace"))
            bad.append(True)
    return lines, np.array(bad, dtype=bool)


def _gunzip(data: bytes, name: str) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as g:
            out = g.read(MAX_GZIP_BYTES + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise InvalidInputError(f"{name}: corrupt gzip data ({e})") from None
    if len(out) > MAX_GZIP_BYTES:
        raise InvalidInputError(f"{name}: gzip data expands beyond {MAX_GZIP_BYTES} bytes")
    return out


def _lines_of_bytes(data: bytes, name: str) -> Tuple[List[str], np.ndarray]:
    """Checked lines of one input's bytes (gunzipped when gzip)."""
    if data[:2] == _GZIP_MAGIC:
        data = _gunzip(data, name)
    if not data:
        raise InvalidInputError(f"log input is empty: {name}")
    if is_binary(data[:_HEAD]):
        nul = data[:_HEAD].count(b"\x00")
        raise InvalidInputError(f"{name} looks like a binary file ({nul} NUL bytes in the first "
                                f"{min(len(data), _HEAD)}); give a text log file")
    lines, bad = _split_bytes(data)
    if not any(x.strip() for x in lines):
        raise InvalidInputError(f"log input has no non-blank line: {name}")
    return lines, bad


def _read_stream(f: Any, name: str) -> Tuple[List[str], np.ndarray]:
    data = f.read()
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogateescape")
    return _lines_of_bytes(data, name)


def _read_path(p: Path) -> Tuple[List[str], np.ndarray]:
    """Lines of one file (regular, gzip, FIFO or character device such as /dev/stdin)."""
    try:
        st = p.stat()
    except FileNotFoundError:
        raise LogFileNotFoundError(f"log file not found: {p}") from None
    except OSError as e:
        raise InvalidInputError(f"cannot read {p}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InvalidInputError(f"{p} is a folder, not a log file")
    try:
        if not stat.S_ISREG(st.st_mode):  # a pipe, FIFO or /dev/stdin: read it once
            with open(p, "rb") as f:
                return _read_stream(f, str(p))
        with open(p, "rb") as f:
            head = f.read(_HEAD)
    except OSError as e:
        raise InvalidInputError(f"cannot read {p}: {e.strerror or e}") from None
    if head[:2] == _GZIP_MAGIC:
        return _lines_of_bytes(p.read_bytes(), str(p))
    if not head:
        raise InvalidInputError(f"log file is empty: {p}")
    if is_binary(head):
        nul = head.count(b"\x00")
        raise InvalidInputError(f"{p} looks like a binary file ({nul} NUL bytes in the first {len(head)}); "
                                "give a text log file")
    from loglm import _loglm

    lines, bad = _loglm.read_log_lines(str(p))
    lines = [str(x) for x in lines]
    if not any(x.strip() for x in lines):
        raise InvalidInputError(f"log file has no non-blank line: {p}")
    return lines, np.asarray(bad, dtype=bool)


def _expand(source: Any) -> List[Union[Path, str]]:
    """File names of one explicit source: ``"-"`` (stdin), a path, or a glob pattern."""
    if isinstance(source, os.PathLike):
        return [Path(os.fspath(source))]
    if not isinstance(source, str):
        raise InvalidInputError(f"a log file must be a str or os.PathLike, not {type(source).__name__}")
    if source == "-":
        return ["-"]
    if not source:
        raise InvalidInputError("empty log file name")
    if any(c in source for c in _GLOB_CHARS) and not os.path.lexists(source):
        found = sorted(_glob.glob(os.path.expanduser(source), recursive=True))
        found = [f for f in found if not os.path.isdir(f)]
        if not found:
            raise LogFileNotFoundError(f"no log file matches {source!r}")
        return [Path(f) for f in found]
    return [Path(os.path.expanduser(source))]


def read_log_lines(source: Union[PathLike, Sequence[PathLike]], *, log_format: Optional[str] = None,
                   record_start: Union[None, bool, str] = None, max_record_lines: int = 1000) -> LogLines:
    """Lines of one or more log files: ``source`` is a path (``str`` or ``os.PathLike``), a
    glob (``"logs/*.log.gz"``), ``"-"`` for standard input, or a list of these (read in
    order). Plain or gzip, LF or CRLF; invalid UTF-8 replaced and flagged. ``log_format``
    splits each line and ``record_start`` joins multi-line records (see
    :func:`as_log_lines`; records never span two files).

    Raises:
        LogFileNotFoundError: a missing file or a glob with no match (a ``FileNotFoundError``).
        InvalidInputError: a folder, an empty input, a binary file, or one with no
            non-blank line.
    """
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not sources:
        raise InvalidInputError("no log file given")
    names: List[Union[Path, str]] = [n for s in sources for n in _expand(s)]
    if names.count("-") > 1:
        raise InvalidInputError("standard input ('-') can be read only once")
    rx = _record_regex(record_start)
    all_lines: List[str] = []
    bads, ids, files, nlines, splits = [], [], [], [], []
    for n in names:
        if n == "-":
            lines, bad = _read_stream(sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin, "<stdin>")
            label = "-"
        else:
            lines, bad = _read_path(n)  # type: ignore[arg-type]
            label = str(n)
        line_ids = np.arange(1, len(lines) + 1, dtype=np.int64)
        if rx is not None:
            lines, bad, line_ids, cnt, split = _join_records(lines, bad, line_ids, rx, max_record_lines)
            nlines.append(cnt)
            splits.append(split)
        all_lines.extend(lines)
        bads.append(bad)
        ids.append(line_ids)
        files.append((label, len(lines)))
    single = names[0] if len(names) == 1 and isinstance(names[0], Path) else None
    out = LogLines.of(all_lines, np.concatenate(bads), path=single, line_ids=np.concatenate(ids), files=files)
    if rx is not None:
        out.record_lines = np.concatenate(nlines)
        out.record_split = np.concatenate(splits)
    return _apply_format(out, log_format)


def _record_regex(record_start: Union[None, bool, str, "re.Pattern[str]"]) -> Optional["re.Pattern[str]"]:
    if record_start is None or record_start is False:
        return None
    if record_start is True or record_start == "auto":
        return re.compile(DEFAULT_RECORD_START)
    if isinstance(record_start, re.Pattern):
        return record_start
    if not isinstance(record_start, str) or not record_start:
        raise InvalidInputError("record_start must be True, 'auto' or a regex")
    try:
        return re.compile(record_start)
    except re.error as e:
        raise InvalidInputError(f"bad record_start regex {record_start!r}: {e}") from None


def _join_records(lines: Sequence[str], bad: np.ndarray, ids: np.ndarray, rx: "re.Pattern[str]",
                  max_lines: int) -> Tuple[List[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Join continuation lines (not matching ``rx``) to the record before them. Lines before
    the first record start form a record of their own; a record reaching ``max_lines``
    lines is closed and the next line starts a new record flagged as split."""
    if max_lines < 1:
        raise InvalidInputError(f"max_record_lines must be >= 1, got {max_lines}")
    out: List[str] = []
    o_bad: List[bool] = []
    o_ids: List[int] = []
    o_cnt: List[int] = []
    o_split: List[bool] = []
    cur: List[str] = []
    for i, line in enumerate(lines):
        starts = rx.match(line) is not None
        if cur and not starts and len(cur) < max_lines:
            cur.append(line)
            o_bad[-1] = o_bad[-1] or bool(bad[i])
            o_cnt[-1] += 1
            continue
        if cur:
            out.append("\n".join(cur))
        o_split.append(bool(cur) and not starts)
        cur = [line]
        o_bad.append(bool(bad[i]))
        o_ids.append(int(ids[i]))
        o_cnt.append(1)
    if cur:
        out.append("\n".join(cur))
    return (out, np.array(o_bad, dtype=bool), np.array(o_ids, dtype=np.int64), np.array(o_cnt, dtype=np.int64),
            np.array(o_split, dtype=bool))


# ---- Python objects -> lines ------------------------------------------------------------

_PATHLIKE_SUFFIXES = (".log", ".txt", ".gz", ".out", ".err", ".csv", ".json", ".jsonl")


def _split_text(logs: Union[str, bytes]) -> List[Any]:
    if isinstance(logs, str):
        if ("\n" not in logs and " " not in logs and logs.lower().endswith(_PATHLIKE_SUFFIXES)):
            warnings.warn(f"{logs[:80]!r} is taken as log text, not a file name (a str is always log "
                          "text); pass pathlib.Path(...) or use loglm.read_log_lines to read a file",
                          UserWarning, stacklevel=4)
        items: List[Any] = logs.split("\n")
        if items and items[-1] == "":
            items.pop()
        return items
    items = logs.split(b"\n")
    if items and items[-1] == b"":
        items.pop()
    return items


def as_log_lines(logs: Logs, *, log_format: Optional[str] = None,
                 record_start: Union[None, bool, str] = None, max_record_lines: int = 1000) -> LogLines:
    """Normalise any log input of the Python helpers to :class:`LogLines`.

    * a ``str`` (or ``bytes``) is log text, split into lines (LF / CRLF) -- never a file
      name;
    * a ``pathlib.Path`` (any ``os.PathLike``), or a list/tuple of them, is read with
      :func:`read_log_lines` (plain, gzip, pipes);
    * an open file (anything with ``read``, text or binary) is read once;
    * a pandas Series, numpy array or any other sequence of ``str`` / ``bytes`` is taken
      line by line;
    * a :class:`LogLines` is returned as it is (``log_format`` applied if given; lines
      already split by a format stay as they are with ``"auto"``).

    ``log_format`` (loghub style, ``"<Date> <Time> <Level>: <Content>"``; ``"json"``;
    ``"auto"``, see :func:`split_header`; ``None``, the default here: whole lines)
    replaces each line by its Content; the other fields are kept in ``.fields``. ``record_start`` (``True`` or a regex) joins multi-line records first.
    Empty input raises :class:`loglm.InvalidInputError`.
    """
    if isinstance(logs, LogLines):
        if not logs:
            raise InvalidInputError("no log lines given")
        if record_start is not None and record_start is not False:
            if logs.record_lines is not None or logs.log_format is not None:
                raise InvalidInputError("record_start applies to raw lines, before records or formats")
            logs = _records_of(logs, record_start, max_record_lines)
        return _apply_format(logs, log_format) if log_format is not None else logs
    if isinstance(logs, os.PathLike):
        return read_log_lines(logs, log_format=log_format, record_start=record_start,
                              max_record_lines=max_record_lines)
    if isinstance(logs, (list, tuple)) and logs and all(isinstance(x, os.PathLike) for x in logs):
        return read_log_lines(list(logs), log_format=log_format, record_start=record_start,
                              max_record_lines=max_record_lines)
    if isinstance(logs, (str, bytes)):
        items = _split_text(logs)
    elif hasattr(logs, "read") and callable(logs.read):
        lines, bad = _read_stream(logs, getattr(logs, "name", "<stream>"))
        return _apply_format(_records_of(LogLines.of(lines, bad), record_start, max_record_lines), log_format)
    else:
        try:
            items = list(logs.tolist() if hasattr(logs, "tolist") else logs)
        except TypeError:
            raise InvalidInputError(
                f"logs must be a str (log text), a pathlib.Path, or a list/Series of lines, not {type(logs).__name__}"
            ) from None
    out: List[str] = []
    flags: List[bool] = []
    for i, x in enumerate(items):
        if isinstance(x, bytes):
            try:
                s, b = x.decode("utf-8"), False
            except UnicodeDecodeError:
                s, b = x.decode("utf-8", errors="replace"), True
        elif isinstance(x, str):
            s, b = x, False
        elif isinstance(x, os.PathLike):
            raise InvalidInputError(f"log line {i} is a path; give only paths (to read files) or only lines")
        else:
            raise InvalidInputError(f"log line {i} is {type(x).__name__}, not str or bytes")
        out.append(s[:-1] if s.endswith("\r") else s)
        flags.append(b)
    if not out:
        raise InvalidInputError("no log lines given")
    return _apply_format(_records_of(LogLines.of(out, flags), record_start, max_record_lines), log_format)


def _records_of(lines: LogLines, record_start: Any, max_record_lines: int) -> LogLines:
    rx = _record_regex(record_start)
    if rx is None:
        return lines
    joined, bad, ids, cnt, split = _join_records(lines, lines.non_utf8, lines.line_ids, rx, max_record_lines)
    out = LogLines.of(joined, bad, path=lines.path, line_ids=ids, files=[])
    out.record_lines, out.record_split = cnt, split
    return out


def _apply_format(lines: LogLines, log_format: Optional[str]) -> LogLines:
    """Split each line by a format (loghub, ``json``, ``auto``): the lines become the
    Content fields, the other fields go to ``.fields``."""
    if log_format is None:
        return lines
    if not isinstance(log_format, str):
        raise InvalidInputError(f"log_format must be a str, not {type(log_format).__name__}")
    if lines.log_format is not None:
        if lines.log_format == log_format or log_format == "auto":  # headers already out
            return lines
        raise InvalidInputError("these lines were already split by another log_format")
    if log_format == "json" or log_format.startswith("json:"):
        headers, cols, fit = _split_json(list(lines), log_format)
    elif log_format == "auto":
        headers, cols, fit = _split_auto(list(lines))
    else:
        from loglm import _loglm

        headers, cols, fit = _loglm.split_log_format(list(lines), log_format)  # type: ignore[assignment]
    content = cols[headers.index("Content")]
    out = LogLines.of(content, lines.non_utf8, path=lines.path, line_ids=lines.line_ids, files=lines.files)
    out.fields = {h: list(c) for h, c in zip(headers, cols) if h != "Content"}
    # "auto" has no mismatch: a line without a header is simply whole
    out.format_mismatch = None if log_format == "auto" else ~np.asarray(fit, dtype=bool)
    out.log_format = log_format
    out.record_lines, out.record_split = lines.record_lines, lines.record_split
    return out


def _split_auto(lines: List[str]) -> Tuple[List[str], List[List[str]], List[bool]]:
    """``log_format="auto"``: the header of each line by :func:`split_header`; a line
    with none keeps everything as Content (not flagged: having no header is not an
    error here)."""
    names = ["Timestamp", "Host", "Pid", "Level", "Thread", "Component", "Header"]
    cols: Dict[str, List[str]] = {n: [] for n in names + ["Content"]}
    for line in lines:
        h = split_header(line)
        g, start = h if h is not None else ({}, 0)
        for n in names:
            cols[n].append(g.get(n, ""))
        cols["Content"].append(line[start:])
    used = [n for n in names if any(cols[n])]
    headers = used + ["Content"]
    return headers, [cols[h] for h in headers], [True] * len(lines)


def _split_json(lines: List[str], spec: str) -> Tuple[List[str], List[List[str]], List[bool]]:
    """JSON lines: message (Content), timestamp (Timestamp) and level (Level) fields, by
    their usual names or as named in ``"json:message=msg,timestamp=ts,level=lvl"``
    (``"json:msg"`` names the message field only). A line that is not a JSON object,
    or has no message field, keeps the whole line as Content and is flagged."""
    named: Dict[str, str] = {}
    if spec.startswith("json:"):
        for part in spec[5:].split(","):
            part = part.strip()
            if not part:
                continue
            key, _, val = part.partition("=")
            if not val:
                key, val = "message", key
            if key not in _JSON_NAMES:
                raise InvalidInputError(f"log_format json field {key!r}: use message, timestamp or level")
            named[key] = val
    cols: Dict[str, List[str]] = {"Timestamp": [], "Level": [], "Content": []}
    fit: List[bool] = []
    for line in lines:
        try:
            obj = json.loads(line) if line.lstrip().startswith("{") else None
        except ValueError:
            obj = None
        vals: Dict[str, Any] = {}
        if isinstance(obj, dict):
            for key, alts in _JSON_NAMES.items():
                cands = (named[key],) if key in named else alts
                for c in cands:
                    v = _json_get(obj, c)
                    if v is not None:
                        vals[key] = v
                        break
        ok = "message" in vals
        msg = vals.get("message")
        cols["Content"].append((msg if isinstance(msg, str) else json.dumps(msg, ensure_ascii=False)) if ok else line)
        for key, col in (("timestamp", "Timestamp"), ("level", "Level")):
            v = vals.get(key)
            cols[col].append("" if v is None or not ok else str(v))
        fit.append(ok)
    headers = [h for h in ("Timestamp", "Level") if any(cols[h])] + ["Content"]
    return headers, [cols[h] for h in headers], fit


def _json_get(obj: Dict[str, Any], name: str) -> Any:
    """``obj[name]``, or a dotted path (``"log.level"``) into nested objects."""
    if name in obj:
        return obj[name]
    cur: Any = obj
    for part in name.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


_DT_FORMATS = ("%y%m%d %H%M%S", "%Y-%m-%d %H:%M:%S,%f", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S",
               "%Y/%m/%d %H:%M:%S", "%d/%m/%Y %H:%M:%S", "%d/%b/%Y:%H:%M:%S %z", "%Y-%m-%d-%H.%M.%S.%f",
               "%Y.%m.%d %H:%M:%S", "%b %d %H:%M:%S", "%Y%m%d %H:%M:%S", "%H:%M:%S", "%y/%m/%d %H:%M:%S",
               "%a %b %d %H:%M:%S %Y", "%a %b %d %H:%M:%S.%f %Y", "%m.%d %H:%M:%S", "%H:%M:%S.%f", "%H:%M:%S,%f")


def parse_datetimes(values: Sequence[str]) -> Any:
    """Timestamps parsed into a pandas datetime Series (``NaT`` where a value does not
    parse): ISO 8601 first, then the loghub formats of ``_DT_FORMATS`` (HDFS ``yymmdd
    HHMMSS``, log4j commas, syslog without a year...), each filling what is still
    missing; timezones are converted to UTC and dropped."""
    import pandas as pd

    full = pd.Series(list(values), dtype=object).fillna("").astype(str).str.strip()
    full = full.str.replace(r"\s+", " ", regex=True)
    codes, uniq = pd.factorize(full)  # each distinct value parsed once
    s = pd.Series(np.asarray(uniq, dtype=object), dtype=object)
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns]")
    blank = (s == "").to_numpy()

    def fill(parsed: Any) -> None:
        if getattr(parsed.dt, "tz", None) is not None:
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        todo = out.isna() & parsed.notna()
        out[todo] = parsed[todo].astype("datetime64[ns]")

    if len(s):
        fill(pd.to_datetime(s, format="ISO8601", errors="coerce", utc=True))
        for fmt in _DT_FORMATS:
            if not (out.isna().to_numpy() & ~blank).any():
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # syslog times have no year (1900, as strptime)
                fill(pd.to_datetime(s.where(out.isna(), ""), format=fmt, errors="coerce"))
    return pd.Series(out.to_numpy()[codes], index=full.index, dtype="datetime64[ns]")


def _datetime_column(lines: LogLines) -> Any:
    """The Datetime column of the format's timestamp fields, or None."""
    f = lines.fields
    if "Timestamp" in f:
        vals = f["Timestamp"]
    elif "Date" in f and "Time" in f:
        vals = [f"{d} {t}" for d, t in zip(f["Date"], f["Time"])]
    elif "Datetime" in f:
        vals = f["Datetime"]
    else:
        return None
    return parse_datetimes(vals)


def add_input_columns(df: Any, lines: LogLines) -> "pd.DataFrame":
    """Add to a per-line DataFrame (``LineId`` first, one row per line) what the input
    knows: ``LineId`` = line number in its file (a record's first line), a ``File``
    column when several files were read, the ``log_format`` header columns after
    ``LineId``, ``Datetime`` (parsed timestamps, when the format names them),
    ``FormatMismatch``, and ``RecordLines`` / ``RecordSplit`` for joined records."""
    df["LineId"] = lines.line_ids
    pos = 1
    if len(lines.files) > 1:
        df.insert(0, "File", np.repeat(np.array([f for f, _ in lines.files], dtype=object),
                                       [n for _, n in lines.files]))
        pos = 2
    for h, col in lines.fields.items():
        if h in df.columns:
            continue
        df.insert(pos, h, col)
        pos += 1
    dt = _datetime_column(lines) if lines.fields else None
    if dt is not None and "Datetime" not in df.columns:
        df.insert(pos, "Datetime", dt.to_numpy())
    if lines.format_mismatch is not None:
        df["FormatMismatch"] = lines.format_mismatch
    if lines.record_lines is not None:
        df["RecordLines"] = lines.record_lines
        df["RecordSplit"] = lines.record_split
    return df
