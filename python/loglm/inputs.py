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
* Several files are read in the order given; the DataFrames then carry a ``File`` column
  and ``LineId`` is the line number inside its file.
"""
from __future__ import annotations

import glob as _glob
import gzip
import io
import os
import stat
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from loglm.errors import InvalidInputError, LogFileNotFoundError

__all__ = ["LogLines", "read_log_lines", "as_log_lines", "add_input_columns", "is_binary"]

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
        return out

    @property
    def flagged(self) -> Dict[str, int]:
        """Counts of flagged lines: ``{"non_utf8": n, "format_mismatch": m}`` (the latter only
        with a format)."""
        out = {"non_utf8": int(np.count_nonzero(self.non_utf8))}
        if self.format_mismatch is not None:
            out["format_mismatch"] = int(np.count_nonzero(self.format_mismatch))
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


def read_log_lines(source: Union[PathLike, Sequence[PathLike]], *, log_format: Optional[str] = None) -> LogLines:
    """Lines of one or more log files: ``source`` is a path (``str`` or ``os.PathLike``), a
    glob (``"logs/*.log.gz"``), ``"-"`` for standard input, or a list of these (read in
    order). Plain or gzip, LF or CRLF; invalid UTF-8 replaced and flagged. ``log_format``
    splits each line (see :func:`as_log_lines`).

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
    all_lines: List[str] = []
    bads, ids, files = [], [], []
    for n in names:
        if n == "-":
            lines, bad = _read_stream(sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin, "<stdin>")
            label = "-"
        else:
            lines, bad = _read_path(n)  # type: ignore[arg-type]
            label = str(n)
        all_lines.extend(lines)
        bads.append(bad)
        ids.append(np.arange(1, len(lines) + 1, dtype=np.int64))
        files.append((label, len(lines)))
    single = names[0] if len(names) == 1 and isinstance(names[0], Path) else None
    out = LogLines.of(all_lines, np.concatenate(bads), path=single, line_ids=np.concatenate(ids), files=files)
    return _apply_format(out, log_format)


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


def as_log_lines(logs: Logs, *, log_format: Optional[str] = None) -> LogLines:
    """Normalise any log input of the Python helpers to :class:`LogLines`.

    * a ``str`` (or ``bytes``) is log text, split into lines (LF / CRLF) -- never a file
      name;
    * a ``pathlib.Path`` (any ``os.PathLike``), or a list/tuple of them, is read with
      :func:`read_log_lines` (plain, gzip, pipes);
    * an open file (anything with ``read``, text or binary) is read once;
    * a pandas Series, numpy array or any other sequence of ``str`` / ``bytes`` is taken
      line by line;
    * a :class:`LogLines` is returned as it is (``log_format`` applied if given).

    ``log_format`` (loghub style, ``"<Date> <Time> <Level>: <Content>"``) replaces each
    line by its Content; the other fields are kept in ``.fields``. Empty input raises
    :class:`loglm.InvalidInputError`.
    """
    if isinstance(logs, LogLines):
        if not logs:
            raise InvalidInputError("no log lines given")
        return _apply_format(logs, log_format) if log_format is not None else logs
    if isinstance(logs, os.PathLike):
        return read_log_lines(logs, log_format=log_format)
    if isinstance(logs, (list, tuple)) and logs and all(isinstance(x, os.PathLike) for x in logs):
        return read_log_lines(list(logs), log_format=log_format)
    if isinstance(logs, (str, bytes)):
        items = _split_text(logs)
    elif hasattr(logs, "read") and callable(logs.read):
        lines, bad = _read_stream(logs, getattr(logs, "name", "<stream>"))
        return _apply_format(LogLines.of(lines, bad), log_format)
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
    return _apply_format(LogLines.of(out, flags), log_format)


def _apply_format(lines: LogLines, log_format: Optional[str]) -> LogLines:
    """Split each line by a loghub format: the lines become the Content fields."""
    if log_format is None:
        return lines
    if not isinstance(log_format, str):
        raise InvalidInputError(f"log_format must be a str, not {type(log_format).__name__}")
    if lines.log_format is not None:
        if lines.log_format == log_format:
            return lines
        raise InvalidInputError("these lines were already split by another log_format")
    from loglm import _loglm

    headers, cols, fit = _loglm.split_log_format(list(lines), log_format)
    content = cols[headers.index("Content")]
    out = LogLines.of(content, lines.non_utf8, path=lines.path, line_ids=lines.line_ids, files=lines.files)
    out.fields = {h: list(c) for h, c in zip(headers, cols) if h != "Content"}
    out.format_mismatch = ~np.asarray(fit, dtype=bool)
    out.log_format = log_format
    return out


def add_input_columns(df: Any, lines: LogLines) -> Any:
    """Add to a per-line DataFrame (``LineId`` first, one row per line) what the input
    knows: ``LineId`` = line number in its file, a ``File`` column when several files were
    read, the ``log_format`` header columns after ``LineId`` and ``FormatMismatch``."""
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
    if lines.format_mismatch is not None:
        df["FormatMismatch"] = lines.format_mismatch
    return df
