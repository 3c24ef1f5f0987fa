"""Incident report of a log file: what happened, when, and which lines show it.

>>> rep = model.report(Path("app.log"))        # or loglm.report.build_report(lines)
>>> rep                                          # renders in Jupyter (_repr_html_)
>>> rep.save(Path("report.html")); rep.to_dict()

The report puts the deterministic parts first and the model's words last:

1. a timeline of template counts (by time when the lines carry timestamps, else by line
   number) with new and rare templates and bursts marked, drawn as inline SVG;
2. the templates table (count, first/last seen, example line, anomaly score);
3. the most anomalous records and sessions, each session with the lines whose removal
   lowers its anomaly score the most (attribution by ablation, as FaithLog judges a
   diagnosis by perturbing the events it names);
4. the model's summary: a few claims, each followed by the LineIds it rests on, each
   checked: every cited LineId exists and every fact the claim quotes (numbers,
   identifiers, component names) occurs in a cited line. A claim that fails is marked
   (or dropped, ``on_fail="drop"``), never shown as verified.

It scales to files of millions of lines because the model never sees the file: the
template tree groups the lines (no model), the model scores one line per template
(``anomaly_scores``), rescores a few condensed sessions for the ablation, and writes one
sentence per evidence group from a handful of lines. Logs are data, never instructions:
they go into the prompts fenced, and into the HTML escaped. The HTML is standalone
(inline CSS and SVG, no script, no network).
"""
from __future__ import annotations

import calendar
import html
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple, Union

import numpy as np

from loglm.errors import InvalidInputError, InvalidTypeError, require_str

__all__ = [
    "Report",
    "Claim",
    "build_report",
    "detect_timestamps",
    "check_claim",
    "parse_claims",
    "ablation_attribution",
    "claim_facts",
]

# ------------------------------------------------------------------------------------
# input


def _read_input(logs: Any) -> Tuple[List[str], np.ndarray, Optional[Path]]:
    """(lines, non-UTF-8 flags, path) of a ``pathlib.Path`` / ``os.PathLike`` (a file),
    a ``str`` (log text, never a file name) or a sequence / Series of lines."""
    from loglm.tasks import as_log_lines, read_log_lines

    if isinstance(logs, os.PathLike):
        ll = read_log_lines(Path(os.fspath(logs)))
    elif isinstance(logs, str):
        text = logs.replace("\r\n", "\n")
        items = text.split("\n")
        if items and items[-1] == "":
            items.pop()
        ll = as_log_lines(items)
    elif isinstance(logs, (bytes, bytearray)):
        ll = as_log_lines(bytes(logs))
    else:
        ll = as_log_lines(logs)
    lines = list(ll)
    if not any(x.strip() for x in lines):
        raise InvalidInputError("the log has no non-blank line")
    return lines, np.asarray(ll.non_utf8, dtype=bool), getattr(ll, "path", None)


# ------------------------------------------------------------------------------------
# timestamps: a few common header formats, detected from a sample of lines

_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
                                       "Oct", "Nov", "Dec"), start=1)}


def _epoch(y: int, mo: int, d: int, h: int, mi: int, s: int, frac: str = "") -> Optional[float]:
    try:
        if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
            return None
        t = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    return t + (float("0." + frac) if frac else 0.0)


def _iso(m: "re.Match[str]") -> Optional[float]:
    return _epoch(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]), m[7] or "")


def _hdfs(m: "re.Match[str]") -> Optional[float]:
    return _epoch(2000 + int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]))


def _syslog(m: "re.Match[str]") -> Optional[float]:
    # no year in the header: 2000 (a leap year) keeps Feb 29 valid; only order and gaps matter
    return _epoch(2000, _MONTHS[m[1]], int(m[2]), int(m[3]), int(m[4]), int(m[5]))


def _bracket(m: "re.Match[str]") -> Optional[float]:
    return _epoch(2000, int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]))


def _unix(m: "re.Match[str]") -> Optional[float]:
    return float(m[1])


#: (name, regex searched in the first 100 characters of a line, converter to epoch seconds)
TIMESTAMP_FORMATS: List[Tuple[str, "re.Pattern[str]", Callable[["re.Match[str]"], Optional[float]]]] = [
    # 2015-07-29 17:41:44,747 / 2015-07-29T17:41:44.747Z / BGL's 2005-06-03-15.42.50.675872
    ("iso", re.compile(r"\b(\d{4})-(\d{2})-(\d{2})[T \-](\d{2})[:.](\d{2})[:.](\d{2})(?:[.,](\d{1,9}))?"), _iso),
    # HDFS: 081109 203518
    ("yymmdd HHMMSS", re.compile(r"^(\d{2})(\d{2})(\d{2}) (\d{2})(\d{2})(\d{2})\b"), _hdfs),
    # syslog: Jun 14 15:16:01
    ("syslog", re.compile(r"\b(" + "|".join(_MONTHS) + r") +(\d{1,2}) (\d{2}):(\d{2}):(\d{2})\b"), _syslog),
    # Proxifier: [10.30 16:49:06]
    ("[mm.dd HH:MM:SS]", re.compile(r"\[(\d{2})\.(\d{2}) (\d{2}):(\d{2}):(\d{2})\]"), _bracket),
    # Unix seconds (2001-2033) as a field near the start
    ("unix seconds", re.compile(r"(?:^|\s)(1\d{9})(?:\.\d+)?(?=\s|$)"), _unix),
]

_SAMPLE = 1000


def detect_timestamps(lines: Sequence[str]) -> Tuple[Optional[str], np.ndarray]:
    """Timestamps of the lines in epoch seconds (NaN where a line has none) and the name
    of the header format found, or ``(None, all NaN)`` when no known format starts at
    least half of the first 1000 non-blank lines. Formats: ISO 8601 (also BGL's
    ``2005-06-03-15.42.50``), HDFS ``yymmdd HHMMSS``, syslog ``Mon dd HH:MM:SS`` and
    Proxifier ``[mm.dd HH:MM:SS]`` (no year: only order and gaps are meaningful), and
    Unix seconds."""
    if isinstance(lines, (str, bytes)):
        raise InvalidTypeError("lines must be a list of log lines, not one str")
    n = len(lines)
    out = np.full(n, np.nan)
    sample = [x[:100] for x in lines[:4 * _SAMPLE] if x.strip()][:_SAMPLE]
    if not sample:
        return None, out
    best, best_hits = None, 0
    for fmt in TIMESTAMP_FORMATS:
        hits = sum(1 for x in sample if fmt[1].search(x))
        if hits > best_hits:
            best, best_hits = fmt, hits
    if best is None or best_hits < 0.5 * len(sample):
        return None, out
    _, rx, conv = best
    search = rx.search
    # many lines share their time to the second: convert each distinct second once
    # (the fraction, group 7 of the ISO pattern, is added after the look-up)
    cache: Dict[str, Optional[float]] = {}
    has_frac = rx.groups >= 7
    for i, line in enumerate(lines):
        m = search(line[:100])
        if m is None:
            continue
        key = m.string[m.start():m.end(6)] if has_frac else m.group(0)
        v = cache.get(key, -1.0)
        if v == -1.0:
            if has_frac:
                v = _epoch(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]))
            else:
                v = conv(m)
            if len(cache) < 1_000_000:
                cache[key] = v
        if v is not None:
            out[i] = v + (float("0." + m[7]) if has_frac and m[7] else 0.0)
    return best[0], out


def _fill(ts: np.ndarray) -> np.ndarray:
    """Forward-fill NaN (continuation lines take the time of the line before), then
    back-fill the leading ones."""
    ok = ~np.isnan(ts)
    if not ok.any():
        return ts
    idx = np.where(ok, np.arange(len(ts)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = ts[idx]
    first = int(np.argmax(ok))
    out[:first] = ts[first]
    return out


def _fmt_time(t: float, with_year: bool) -> str:
    if not np.isfinite(t):
        return ""
    tm = time.gmtime(int(t))
    s = time.strftime("%Y-%m-%d %H:%M:%S" if with_year else "%m-%d %H:%M:%S", tm)
    frac = t - int(t)
    return s + (f".{int(round(frac * 1000)) % 1000:03d}" if frac > 0 else "")


# ------------------------------------------------------------------------------------
# claims and their check

_CITE_RX = re.compile(r"\[\s*(?:L(?:ine)?s?\s*)?\d+(?:\s*(?:,|;|-|–|and)\s*L?\d+)*\s*\]|\bL(?:ine)?s?\s*\d+(?:\s*(?:,|and)\s*L?\d+)*",
                      re.IGNORECASE)
_NUM_IN_CITE = re.compile(r"\d+")
# facts a claim may quote: quoted text, identifiers with digits or inner punctuation,
# CamelCase and ALL-CAPS names, numbers
_QUOTED = re.compile(r"[\"`“]([^\"`”]{2,80})[\"`”]|(?<![A-Za-z0-9])['‘]([^'’]{2,80})['’](?![A-Za-z0-9])")
_TOKEN = re.compile(r"[A-Za-z0-9_./:$\-]+")
_NUMBER = re.compile(r"^-?(?:0x[0-9a-fA-F]+|\d+(?:[.,]\d+)*)$")
_CAMEL = re.compile(r"^[A-Za-z]*[a-z][A-Z][A-Za-z]*$")
_CAPS_STOP = {"THE", "AND", "LOG", "LOGS", "LINE", "LINES", "NOT", "FOR", "THIS", "THAT", "ALL"}
_PROPER = re.compile(r"^[A-Z][a-z]{2,}$")
_PROPER_STOP = {"The", "This", "These", "That", "Those", "Then", "There", "They", "Line", "Lines", "Log", "Logs"}


@dataclass
class Claim:
    """One sentence of the summary and the LineIds it rests on.

    ``status``: ``"verified"`` (every cited LineId exists and every quoted fact is in a
    cited line), ``"vague"`` (it quotes nothing the check could look up: not verified),
    ``"unsupported"`` (a fact is in no cited line: ``missing`` lists them),
    ``"bad-citation"`` (a cited LineId is not a line of the log: ``bad_ids``) or
    ``"uncited"`` (no LineId). ``facts`` are the facts the check looked for.
    """

    text: str
    line_ids: List[int]
    status: str = "unchecked"
    facts: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    bad_ids: List[int] = field(default_factory=list)
    source: str = "model"

    @property
    def verified(self) -> bool:
        """Whether the claim passed the check."""
        return self.status == "verified"

    def to_dict(self) -> Dict[str, Any]:
        """Plain-JSON form."""
        return {"text": self.text, "line_ids": list(self.line_ids), "status": self.status,
                "facts": list(self.facts), "missing": list(self.missing), "bad_ids": list(self.bad_ids),
                "source": self.source}


def _cited_ids(text: str) -> List[int]:
    ids: List[int] = []
    for m in _CITE_RX.finditer(text):
        for x in _NUM_IN_CITE.findall(m.group(0)):
            v = int(x)
            if v not in ids:
                ids.append(v)
    return ids


def parse_claims(answer: str, *, max_claims: int = 8) -> List[Claim]:
    """Split a model answer into sentences and read each one's citations (``[L12, L40]``,
    ``[12]``, ``L12``, ``lines 12 and 40``). A sentence with no citation keeps an empty
    ``line_ids`` (the check marks it ``"uncited"``); the citation text is removed from
    the claim."""
    if isinstance(max_claims, bool) or not isinstance(max_claims, int) or max_claims < 1:
        raise InvalidInputError(f"max_claims must be an integer >= 1, got {max_claims!r}")
    text = " ".join(str(answer).split())
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z\[(])|(?<=\])\s+(?=[A-Z])", text)
    claims = []
    for p in parts:
        p = p.strip()
        if len(p) < 3:
            continue
        ids = _cited_ids(p)
        clean = _CITE_RX.sub("", p)
        clean = re.sub(r"\(\s*\)|\[\s*\]", "", clean)
        clean = re.sub(r"\s+([.,;:!?])", r"\1", " ".join(clean.split())).strip(" ,;")
        if len(re.findall(r"[A-Za-z]", clean)) < 3:
            continue
        claims.append(Claim(clean, ids))
        if len(claims) >= max_claims:
            break
    return claims


def claim_facts(text: str) -> List[str]:
    """The facts a claim quotes, which the check looks up in the cited lines: quoted
    text, numbers, identifiers with digits or inner punctuation (``blk_42``,
    ``dfs.DataNode``, ``10.0.0.1``, ``R02-M1-N0``), CamelCase and ALL-CAPS names
    (``PacketResponder``, ``KERNEL``) and capitalised names after the first word
    (``Chrome``, ``Kerberos``)."""
    require_str(text, "text")
    facts: List[str] = []

    def add(f: str) -> None:
        f = f.strip(".,;:!?()[]{}'\"")
        if f and f not in facts:
            facts.append(f)

    for m in _QUOTED.finditer(text):
        add(m.group(1) or m.group(2))
    rest = _QUOTED.sub(" ", text)
    for k, tok in enumerate(_TOKEN.findall(rest)):
        tok = tok.strip(".,;:!?-/")
        if not tok:
            continue
        if k > 0 and _PROPER.match(tok) and tok not in _PROPER_STOP:  # a name inside the sentence
            add(tok)
            continue
        has_digit = any(c.isdigit() for c in tok)
        inner_punct = any(c in "_./:$" for c in tok[1:-1]) or ("-" in tok[1:-1] and has_digit)
        if _NUMBER.match(tok) or (has_digit and any(c.isalpha() for c in tok)) or inner_punct:
            add(tok)
        elif _CAMEL.match(tok) or (tok.isupper() and len(tok) >= 3 and tok.isalpha() and tok not in _CAPS_STOP):
            add(tok)
    return facts


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def check_claim(claim: Claim, lines: Sequence[str], *, counts: Optional[Dict[int, int]] = None) -> Claim:
    """Check ``claim`` against the log ``lines`` (LineId ``i`` is ``lines[i - 1]``) and set
    its ``status``, ``facts``, ``missing`` and ``bad_ids``. A number may also be the
    count of lines of a cited line's template (``counts``: LineId -> count), since the
    model is told the counts. Returns the claim."""
    if not isinstance(claim, Claim):
        raise InvalidTypeError(f"claim must be a Claim (from parse_claims), not {type(claim).__name__}")
    n = len(lines)
    claim.bad_ids = [i for i in claim.line_ids if not (isinstance(i, (int, np.integer)) and 1 <= int(i) <= n)]
    good = [int(i) for i in claim.line_ids if i not in claim.bad_ids]
    claim.facts = claim_facts(claim.text)
    cited = [_norm(lines[i - 1]) for i in good]
    allowed_numbers = {str(len(good))}
    if counts:
        allowed_numbers |= {str(counts[i]) for i in good if i in counts}
    missing = []
    for f in claim.facts:
        # the fact as a whole word of a cited line ("CIO" is not in "ciod:")
        rx = re.compile(r"(?<![a-z0-9])" + re.escape(_norm(f)) + r"(?![a-z0-9])")
        if any(rx.search(c) for c in cited):
            continue
        if _NUMBER.match(f) and f.replace(",", "") in allowed_numbers:
            continue
        missing.append(f)
    claim.missing = missing
    if not claim.line_ids:
        claim.status = "uncited"
    elif claim.bad_ids:
        claim.status = "bad-citation"
    elif missing:
        claim.status = "unsupported"
    elif not claim.facts:
        claim.status = "vague"
    else:
        claim.status = "verified"
    return claim


# ------------------------------------------------------------------------------------
# ablation


def ablation_attribution(items: Sequence[str], score_batch: Callable[[List[List[str]]], Sequence[float]], *,
                         top: int = 3, min_share: float = 0.0) -> Tuple[float, List[Tuple[int, float]]]:
    """Attribution by ablation: the score of the whole ``items`` list and, for the
    ``top`` items whose removal lowers it the most, ``(index, drop)`` pairs (drop =
    full score - score without the item; only positive drops, and only drops of at least
    ``min_share`` times the largest one). ``score_batch`` scores a list of item lists in
    one call (the full list first, then each ablation)."""
    if not callable(score_batch):
        raise InvalidTypeError(f"score_batch must be a function, not {type(score_batch).__name__}")
    items = list(items)
    if not items:
        return float("nan"), []
    variants = [items] + [items[:i] + items[i + 1:] for i in range(len(items))]
    scores = [float(s) for s in score_batch(variants)]
    full = scores[0]
    drops = [(i, full - s) for i, s in enumerate(scores[1:])]
    drops.sort(key=lambda x: (-x[1], x[0]))
    best = drops[0][1] if drops else 0.0
    return full, [(i, d) for i, d in drops[:top] if d > 0 and d >= min_share * best]


# ------------------------------------------------------------------------------------
# the report object

_ON_FAIL = ("mark", "drop")


@dataclass
class Report:
    """An incident report (see the module docstring). Render with ``to_html()`` /
    ``save(path)`` or in Jupyter; ``to_dict()`` / ``to_json()`` for pipelines.

    Attributes: ``source`` (file name or ``"<lines>"``), ``n_lines``, ``notes`` (what
    the report could not do or had to assume: no timestamps, invalid UTF-8...),
    ``time_format``, ``timeline`` (bins and counts), ``templates`` / ``records`` /
    ``sessions`` (DataFrames), ``bursts``, ``claims`` (list of :class:`Claim`, the
    dropped ones excluded), ``dropped_claims``, ``timings`` (seconds per stage),
    ``model`` (model description or None) and ``line_scores`` (per line, its template's
    score, NaN where not scored; not in ``to_dict``).
    """

    source: str
    n_lines: int
    notes: List[str]
    time_format: Optional[str]
    timeline: Dict[str, Any]
    templates: Any
    records: Any
    sessions: Any
    bursts: List[Dict[str, Any]]
    claims: List[Claim]
    dropped_claims: List[Claim]
    timings: Dict[str, float]
    model: Optional[str]
    line_scores: Optional[np.ndarray] = None

    # ---- data ------------------------------------------------------------------------
    def evidence_line_ids(self) -> List[int]:
        """LineIds the report rests on: those cited by verified claims, then the
        ablation evidence of the sessions (in that order, without repeats)."""
        out: List[int] = []
        for c in self.claims:
            if c.verified:
                out.extend(i for i in c.line_ids if i not in out)
        if self.sessions is not None and len(self.sessions):
            for ev in self.sessions["Evidence"]:
                for e in ev:
                    for i in e["line_ids"]:
                        if i not in out:
                            out.append(i)
        return out

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able dict of everything in the report."""
        def frame(df: Any) -> List[Dict[str, Any]]:
            if df is None:
                return []
            return json.loads(df.to_json(orient="records"))

        return {
            "schema": "loglm.report/1",
            "source": self.source,
            "n_lines": self.n_lines,
            "notes": list(self.notes),
            "time_format": self.time_format,
            "model": self.model,
            "timeline": _jsonable(self.timeline),
            "bursts": _jsonable(self.bursts),
            "templates": frame(self.templates),
            "records": frame(self.records),
            "sessions": frame(self.sessions),
            "claims": [c.to_dict() for c in self.claims],
            "dropped_claims": [c.to_dict() for c in self.dropped_claims],
            "timings": dict(self.timings),
        }

    def to_json(self, **kw: Any) -> str:
        """``to_dict()`` as JSON text (``kw`` for ``json.dumps``)."""
        kw.setdefault("ensure_ascii", False)
        return json.dumps(self.to_dict(), **kw)

    # ---- HTML ------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        return _render(self, standalone=False)

    def to_html(self) -> str:
        """A standalone HTML page (inline CSS and SVG; no script, nothing fetched)."""
        return _render(self, standalone=True)

    def save(self, path: Union[str, "os.PathLike[str]"]) -> Path:
        """Write the standalone HTML (``.html``) or the JSON (``.json``) to ``path``."""
        p = Path(os.fspath(path))
        if p.suffix.lower() == ".json":
            p.write_text(self.to_json(indent=1), encoding="utf-8")
        else:
            p.write_text(self.to_html(), encoding="utf-8")
        return p

    def __repr__(self) -> str:
        nv = sum(c.verified for c in self.claims)
        return (f"Report({self.source!r}, {self.n_lines} lines, {len(self.templates)} templates, "
                f"{len(self.claims)} claims ({nv} verified), notes={len(self.notes)})")


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# ------------------------------------------------------------------------------------
# building


@dataclass
class _Ctx:
    lines: List[str]
    n: int
    cluster: np.ndarray        # template index per line
    tids: List[str]
    templates: List[str]
    counts: np.ndarray
    first: np.ndarray          # 0-based first line of each template
    last: np.ndarray
    ts: np.ndarray             # filled timestamps or NaN
    scores: np.ndarray         # per template, NaN when not scored
    rarity: np.ndarray


def _sessions_of(lines: Sequence[str], sessions: Any, window: int) -> Tuple[np.ndarray, List[Hashable], str]:
    """Session index per line, the session ids and how they were formed."""
    n = len(lines)
    if sessions is None or (isinstance(sessions, str) and sessions == "auto"):
        rx = re.compile(r"blk_-?\d+")
        sample = lines[:2000]
        if sum(1 for x in sample if rx.search(x)) >= 0.5 * len(sample):
            sessions = rx
            how = "HDFS block ids (blk_...)"
        else:
            idx = np.arange(n) // window
            ids: List[Hashable] = [f"lines {i * window + 1}-{min((i + 1) * window, n)}" for i in range(int(idx[-1]) + 1)]
            return idx, ids, f"windows of {window} lines"
    else:
        how = "given"
    if isinstance(sessions, (str, re.Pattern)):
        rx = re.compile(sessions) if isinstance(sessions, str) else sessions
        how = how if how != "given" else f"regex {rx.pattern!r}"
        keys: List[Hashable] = []
        for x in lines:
            m = rx.search(x)
            keys.append((m.group(1) if m.groups() else m.group(0)) if m else None)
    elif callable(sessions):
        keys = [sessions(x) for x in lines]
        how = "function"
    else:
        keys = list(sessions.tolist() if hasattr(sessions, "tolist") else sessions)
        if len(keys) != n:
            raise InvalidInputError(f"{len(keys)} session ids for {n} lines")
    ids = []
    pos: Dict[Hashable, int] = {}
    out = np.full(n, -1, dtype=np.int64)
    for i, k in enumerate(keys):
        if k is None:
            continue
        j = pos.get(k)
        if j is None:
            j = pos[k] = len(ids)
            ids.append(k)
        out[i] = j
    return out, ids, how


#: characters of a line kept in a session's prompt (ablation rescoring is the costly part)
_SESSION_LINE_CHARS = 200


def _session_items(ctx: _Ctx, members: np.ndarray, max_items: int) -> Tuple[List[str], List[List[int]]]:
    """A session condensed to its distinct lines (first occurrence of each template, in
    order; the highest-scored ``max_items`` kept) and the LineIds each stands for."""
    cl = ctx.cluster[members]
    _, first_pos = np.unique(cl, return_index=True)
    order = np.sort(first_pos)
    reps = [int(members[p]) for p in order]
    if len(reps) > max_items:
        key = [(-(ctx.scores[ctx.cluster[r]] if np.isfinite(ctx.scores[ctx.cluster[r]]) else ctx.rarity[ctx.cluster[r]]), r)
               for r in reps]
        keep = sorted(r for _, r in sorted(key)[:max_items])
        reps = keep
    items = [ctx.lines[r][:_SESSION_LINE_CHARS] for r in reps]
    ids = [[int(m) + 1 for m in members[cl == ctx.cluster[r]]] for r in reps]
    return items, ids


def build_report(logs: Any, model: Any = None, *, sessions: Any = "auto", window: int = 100,
                 bins: int = 60, top: int = 10, top_sessions: int = 3, summary: bool = True,
                 n_claims: int = 3, on_fail: str = "mark", max_scored: int = 300,
                 session_lines: int = 6, session_score: str = "lines", evidence_share: float = 0.5, progress: Optional[bool] = None, source: Optional[str] = None,
                 max_new_tokens: int = 64) -> Report:
    """Build a :class:`Report` of ``logs`` (a ``pathlib.Path``, a list / Series of lines,
    or log text).

    ``model`` (a :class:`loglm.LogLM`) scores one line per template (at most
    ``max_scored`` templates, rarest first), the ``top_sessions`` most anomalous sessions
    with ablation, and writes ``n_claims`` summary claims (``summary=False`` skips
    them). Without a model the report has the deterministic parts only and ranks by
    rarity. ``sessions``: ``"auto"`` (HDFS block ids when most lines carry one, else
    windows of ``window`` lines), a regex (its first group, or the match, is the id), a
    function of the line, or one id per line. A session's score is, with
    ``session_score="lines"`` (default), 1 - prod(1 - p) over its distinct lines' scores p
    (rarity share without a model); with ``"model"``, the model's P("abnormal") of the
    session read as one log (``session_lines`` distinct lines; one model call per line
    per session for the ablation, and the 135M default model does not respond to it
    well, see EVALUATION.md). The evidence of the ``top_sessions`` first sessions is the
    lines whose removal lowers that score the most (up to 3, each lowering it at least
    ``evidence_share`` times as much as the first). ``on_fail``: ``"mark"`` keeps a claim that
    fails the check, marked, ``"drop"`` moves it to ``dropped_claims``.

    Raises:
        InvalidInputError: empty input, a binary file, bad arguments.
        FileNotFoundError: no such file.
    """
    if not 0.0 <= float(evidence_share) <= 1.0:
        raise InvalidInputError(f"evidence_share must be in [0, 1], got {evidence_share!r}")
    if session_score not in ("lines", "model"):
        raise InvalidInputError(f"session_score must be 'lines' or 'model', got {session_score!r}")
    if on_fail not in _ON_FAIL:
        raise InvalidInputError(f"on_fail must be one of {_ON_FAIL}, got {on_fail!r}")
    for name, v, lo in (("window", window, 1), ("bins", bins, 1), ("top", top, 1), ("top_sessions", top_sessions, 0),
                        ("n_claims", n_claims, 0), ("max_scored", max_scored, 0), ("session_lines", session_lines, 1)):
        if not isinstance(v, (int, np.integer)) or v < lo:
            raise InvalidInputError(f"{name} must be an integer >= {lo}, got {v!r}")
    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    lines, non_utf8, path = _read_input(logs)
    n = len(lines)
    src = source or (path.name if path is not None else "<lines>")
    notes: List[str] = []
    if non_utf8.any():
        k = int(non_utf8.sum())
        notes.append(f"{k} line{'s' if k > 1 else ''} had bytes that are not valid UTF-8; they were replaced "
                     f"by U+FFFD (first: line {int(np.argmax(non_utf8)) + 1}).")
    timings["read"] = time.perf_counter() - t0
    stages = _Stages(progress if progress is not None else n >= 50_000, model is not None)

    # ---- templates (the tree, no model) ----
    t = time.perf_counter()
    from loglm.parsing import TemplateMiner

    miner = TemplateMiner(threads=int(os.environ.get("LOGLM_NUM_THREADS", "0")) or None)
    cluster = miner.add_log_messages(lines)
    from loglm.parsing import template_id

    # clusters whose final templates are equal are one template here
    tmpl_all = np.array(miner._tree.templates(), dtype=object)
    templates_u, cluster = np.unique(tmpl_all[cluster], return_inverse=True)
    cluster = cluster.astype(np.int64).reshape(-1)
    templates = [str(x) for x in templates_u]
    tids = [template_id(x) for x in templates]
    k = len(templates)
    counts = np.bincount(cluster, minlength=k)
    first = np.full(k, n, dtype=np.int64)
    np.minimum.at(first, cluster, np.arange(n))
    last = np.full(k, -1, dtype=np.int64)
    np.maximum.at(last, cluster, np.arange(n))
    rarity = -np.log(counts / n)
    if k == 1:
        notes.append("All lines share one template: there is nothing rare or new to point at.")
    timings["templates"] = time.perf_counter() - t
    stages.step("templates")

    # ---- timestamps ----
    t = time.perf_counter()
    fmt, raw_ts = detect_timestamps(lines)
    ts = _fill(raw_ts)
    if fmt is None:
        notes.append("No timestamps found (formats tried: " + ", ".join(f[0] for f in TIMESTAMP_FORMATS)
                     + "); the timeline is by line number.")
    elif np.nanmax(ts) <= np.nanmin(ts):
        notes.append("All timestamps are equal; the timeline is by line number.")
        fmt = None
    else:
        missing = int(np.isnan(raw_ts).sum())
        if missing:
            notes.append(f"{missing} lines carry no timestamp ({fmt}); they take the time of the line before.")
    if fmt is None:
        ts = np.full(n, np.nan)
    timings["timestamps"] = time.perf_counter() - t

    # ---- scores: one line per template ----
    t = time.perf_counter()
    scores = np.full(k, np.nan)
    model_name = None
    if model is not None:
        model_name = _model_name(model)
        order = np.argsort(counts, kind="stable")[:max_scored] if k > max_scored else np.arange(k)
        reps = [lines[int(first[j])] for j in order]
        vals = model.anomaly_scores(reps, progress=stages.enabled)
        scores[order] = np.asarray(vals, dtype=float)
        if k > max_scored:
            notes.append(f"{k - max_scored} of {k} templates (the most frequent) were not scored by the model "
                         f"(max_scored={max_scored}).")
    timings["scores"] = time.perf_counter() - t
    stages.step("scores")
    ctx = _Ctx(lines, n, cluster, tids, templates, counts, first, last, ts, scores, rarity)

    # ---- timeline, new / rare, bursts ----
    t = time.perf_counter()
    timeline, bursts, new_mask, rare_mask = _timeline(ctx, bins, fmt)
    timings["timeline"] = time.perf_counter() - t

    # ---- templates table and records ----
    import pandas as pd

    rank_key = np.where(np.isfinite(scores), scores, -1.0) if model is not None else rarity
    with_year = fmt not in ("syslog", "[mm.dd HH:MM:SS]")
    tdf = pd.DataFrame({
        "EventId": tids,
        "EventTemplate": templates,
        "Count": counts,
        "FirstLine": first + 1,
        "LastLine": last + 1,
        "FirstSeen": [_fmt_time(ts[i], with_year) for i in first] if fmt else [""] * k,
        "LastSeen": [_fmt_time(ts[i], with_year) for i in last] if fmt else [""] * k,
        "Example": [lines[i] for i in first],
        "Score": scores,
        "Rarity": rarity,
        "New": new_mask,
        "Rare": rare_mask,
    })
    tdf = tdf.iloc[np.lexsort((first, -rarity, -rank_key))].reset_index(drop=True)
    records = _records(ctx, rank_key, top, model is not None)

    # ---- sessions + ablation ----
    t = time.perf_counter()
    sdf = _sessions(ctx, model, sessions, window, top, top_sessions, session_lines, session_score,
                    float(evidence_share), notes)
    timings["sessions"] = time.perf_counter() - t
    stages.step("sessions")

    # ---- summary ----
    t = time.perf_counter()
    claims: List[Claim] = []
    dropped: List[Claim] = []
    if model is not None and summary and n_claims > 0:
        claims = _summary(ctx, model, records, sdf, n_claims, max_new_tokens)
        for c in claims:
            check_claim(c, lines, counts={i: int(counts[cluster[i - 1]]) for i in c.line_ids
                                          if isinstance(i, int) and 1 <= i <= n})
        if on_fail == "drop":
            dropped = [c for c in claims if not c.verified]
            claims = [c for c in claims if c.verified]
    elif model is None:
        notes.append("No model: deterministic parts only; records are ranked by rarity.")
    timings["summary"] = time.perf_counter() - t
    stages.step("summary")
    stages.close()
    timings["total"] = time.perf_counter() - t0
    return Report(source=src, n_lines=n, notes=notes, time_format=fmt, timeline=timeline, templates=tdf,
                  records=records, sessions=sdf, bursts=bursts, claims=claims, dropped_claims=dropped,
                  timings=timings, model=model_name, line_scores=scores[cluster])


class _Stages:
    def __init__(self, enabled: bool, with_model: bool) -> None:
        self.enabled = enabled
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=4, desc="report", unit="stage")
            except ImportError:
                self.bar = None

    def step(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(name)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _model_name(model: Any) -> str:
    try:
        info = model.info
        name = str(info.get("name") or info.get("path") or type(model).__name__)
    except Exception:  # a remote or duck-typed model
        return type(model).__name__
    return name.replace("\\", "/").rsplit("/", 1)[-1]


def _timeline(ctx: _Ctx, bins: int, fmt: Optional[str]) -> Tuple[Dict[str, Any], List[Dict[str, Any]], np.ndarray, np.ndarray]:
    n, k = ctx.n, len(ctx.templates)
    if fmt is not None:
        x = ctx.ts
        lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
        by = "time"
    else:
        x = np.arange(n, dtype=float)
        lo, hi = 0.0, float(n)
        by = "line"
    nb = max(1, min(bins, n))
    edges = np.linspace(lo, hi, nb + 1)
    b = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, nb - 1)
    grid = np.zeros((k, nb), dtype=np.int64)
    np.add.at(grid, (ctx.cluster, b), 1)
    # new: first seen after the first fifth of the log; rare: at most max(2, 0.1%) lines
    first_bin = b[ctx.first]
    new_mask = ctx.first >= 0.2 * n
    rare_mask = ctx.counts <= max(2, int(0.001 * n))
    bursts: List[Dict[str, Any]] = []
    if nb >= 4:
        mean = grid.mean(axis=1, keepdims=True)
        sd = grid.std(axis=1, keepdims=True)
        thr = np.maximum(mean + 3 * sd, 5.0)
        tot = grid.sum(axis=0)
        for j, bi in zip(*np.nonzero(grid > thr)):
            bursts.append({"template": int(j), "EventId": ctx.tids[j], "bin": int(bi), "count": int(grid[j, bi]),
                           "expected": float(mean[j, 0]), "share_of_bin": float(grid[j, bi] / max(tot[bi], 1))})
        bursts.sort(key=lambda d: -d["count"] / max(d["expected"], 1e-9))
        bursts = bursts[:20]
    # series drawn: the most frequent templates plus every new or rare one with a score
    show = list(np.argsort(-ctx.counts, kind="stable")[:6])
    timeline = {
        "by": by,
        "edges": edges,
        "start": lo,
        "end": hi,
        "total": grid.sum(axis=0),
        "series": {ctx.tids[j]: grid[j] for j in show},
        "new": [{"EventId": ctx.tids[j], "bin": int(first_bin[j]), "line": int(ctx.first[j]) + 1}
                for j in np.nonzero(new_mask)[0]],
        "rare": [{"EventId": ctx.tids[j], "bin": int(first_bin[j]), "line": int(ctx.first[j]) + 1}
                 for j in np.nonzero(rare_mask & ~new_mask)[0]],
        "time_format": fmt,
    }
    for d in bursts:
        d["start"] = float(edges[d["bin"]])
        d["end"] = float(edges[d["bin"] + 1])
    return timeline, bursts, new_mask, rare_mask


def _records(ctx: _Ctx, rank_key: np.ndarray, top: int, with_model: bool) -> Any:
    import pandas as pd

    order = np.lexsort((ctx.first, -ctx.rarity, -rank_key))[:top]
    rows = []
    for j in order:
        ids = [int(m) + 1 for m in np.flatnonzero(ctx.cluster == j)[:3]]
        rows.append({"LineId": int(ctx.first[j]) + 1, "Content": ctx.lines[int(ctx.first[j])], "EventId": ctx.tids[j],
                     "Score": float(ctx.scores[j]), "Rarity": float(ctx.rarity[j]), "Count": int(ctx.counts[j]),
                     "LineIds": ids})
    return pd.DataFrame(rows, columns=["LineId", "Content", "EventId", "Score", "Rarity", "Count", "LineIds"])


def _lines_scorer(ctx: _Ctx, model: Any) -> Callable[[List[List[str]]], List[float]]:
    """Session score from the line scores: 1 - prod(1 - p) over the session's distinct
    lines (noisy-OR: the chance that at least one of its kinds of line is abnormal);
    without a model, p is the line's rarity share."""
    index: Dict[str, float] = {}

    def p_of(line: str) -> float:
        v = index.get(line)
        if v is None:
            from loglm.errors import InternalError

            raise InternalError("a session line has no score (report ablation)")
        return v

    def score(variants: List[List[str]]) -> List[float]:
        out = []
        for v in variants:
            q = 1.0
            for x in v:
                q *= 1.0 - min(max(p_of(x), 0.0), 1.0)
            out.append(1.0 - q)
        return out

    score.index = index  # type: ignore[attr-defined]
    return score


def _session_scorer(model: Any) -> Callable[[List[List[str]]], List[float]]:
    """Session score read by the model: P("abnormal") of the session's lines as one log."""
    budget = model._log_budget(8)

    def score(variants: List[List[str]]) -> List[float]:
        texts = [model.fit_text("\n".join(v), budget)[0] if v else "" for v in variants]
        out = [0.0] * len(texts)
        todo = [i for i, t in enumerate(texts) if t]
        if todo:
            for i, p in zip(todo, model._anomaly_probs([texts[i] for i in todo])):
                out[i] = float(p)
        return out

    return score


def _sessions(ctx: _Ctx, model: Any, sessions: Any, window: int, top: int, top_sessions: int,
              session_lines: int, session_score: str, evidence_share: float, notes: List[str]) -> Any:
    import pandas as pd

    sidx, sids, how = _sessions_of(ctx.lines, sessions, window)
    cols = ["SessionId", "Lines", "FirstLine", "MaxLineScore", "Score", "Evidence"]
    ok = sidx >= 0
    if not ok.any() or not sids:
        notes.append("No sessions found (" + how + ").")
        return pd.DataFrame(columns=cols)
    max_rarity = float(np.log(ctx.n)) if ctx.n > 1 else 1.0
    line_key = ctx.scores[ctx.cluster] if model is not None else ctx.rarity[ctx.cluster] / max_rarity
    line_key = np.where(np.isfinite(line_key), line_key, -1.0)
    m = len(sids)
    smax = np.full(m, -np.inf)
    np.maximum.at(smax, sidx[ok], line_key[ok])
    size = np.bincount(sidx[ok], minlength=m)
    sfirst = np.full(m, ctx.n, dtype=np.int64)
    np.minimum.at(sfirst, sidx[ok], np.flatnonzero(ok))
    order = np.lexsort((sfirst, -smax))[:top]
    rows = []
    if session_score == "model" and model is not None:
        scorer = _session_scorer(model)
    else:
        scorer = _lines_scorer(ctx, model)
    for rank, s in enumerate(order):
        members = np.flatnonzero(sidx == s)
        evidence: List[Dict[str, Any]] = []
        score = float("nan")
        if rank < top_sessions:
            items, ids = _session_items(ctx, members, session_lines if not hasattr(scorer, "index") else 50)
            if hasattr(scorer, "index"):
                for x, i in zip(items, ids):
                    j = int(ctx.cluster[i[0] - 1])
                    p = ctx.scores[j] if model is not None else ctx.rarity[j] / max_rarity
                    scorer.index[x] = float(p) if np.isfinite(p) else 0.0
            score, drops = ablation_attribution(items, scorer, top=3, min_share=evidence_share)
            evidence = [{"line_ids": ids[i][:5], "count": len(ids[i]), "drop": d, "Content": items[i]}
                        for i, d in drops]
        rows.append({"SessionId": str(sids[s]), "Lines": int(size[s]), "FirstLine": int(sfirst[s]) + 1,
                     "MaxLineScore": float(smax[s]), "Score": score, "Evidence": evidence})
    df = pd.DataFrame(rows, columns=cols)
    df.attrs["how"] = how
    return df


def _summary(ctx: _Ctx, model: Any, records: Any, sdf: Any, n_claims: int, max_new_tokens: int) -> List[Claim]:
    """One claim per evidence group (a top record or a session's ablation evidence): the
    model writes one sentence from the group's lines, labelled with their LineIds; the
    claim cites the LineIds it names, or else the lines it was shown."""
    from loglm.prompts import fence

    groups: List[Tuple[List[int], str]] = []
    seen: set = set()
    for r in records.itertuples(index=False):
        if len(groups) >= n_claims:
            break
        j = ctx.tids.index(r.EventId)
        if j in seen:
            continue
        seen.add(j)
        ids = list(r.LineIds)[:3]
        groups.append((ids, f"(this kind of line occurs {int(ctx.counts[j])} times in the log)"))
    prompts = []
    for ids, extra in groups:
        shown = "\n".join(f"L{i}: {ctx.lines[i - 1][:400]}" for i in ids)
        prompts.append(
            "Here are log lines, each labelled with its line id " + extra + ":\n" + fence(shown)
            + "\nIn one sentence, say what these lines show. Quote names and values exactly as they appear "
              "and end the sentence with the line ids in brackets, like [L" + str(ids[0]) + "].")
    if not prompts:
        return []
    outs = model.generate(prompts, max_new_tokens=max_new_tokens, temperature=0.0, repetition_penalty=1.1)
    claims = []
    for (ids, _), o in zip(groups, outs):
        got = parse_claims(o.text, max_claims=1)
        if not got:
            continue
        c = got[0]
        if not c.line_ids:
            c.line_ids = list(ids)
            c.source = "model (cites the lines it was shown)"
        claims.append(c)
    return claims


# ------------------------------------------------------------------------------------
# HTML

_CSS = """
.loglm-report{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1d1d1f;background:#fff;max-width:1100px;padding:8px 16px}
.loglm-report h1{font-size:1.4em;margin:.3em 0}.loglm-report h2{font-size:1.12em;margin:1.1em 0 .4em;border-bottom:1px solid #ddd}
.loglm-report table{border-collapse:collapse;font-size:.85em;width:100%}
.loglm-report th,.loglm-report td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
.loglm-report th{background:#f3f4f6}.loglm-report code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.95em;word-break:break-all}
.loglm-report .note{background:#fff7e0;border-left:4px solid #f0b400;padding:4px 8px;margin:4px 0}
.loglm-report .ok{color:#0a7a2f;font-weight:600}.loglm-report .bad{color:#b3261e;font-weight:600}
.loglm-report .failed{text-decoration:line-through;color:#777}.loglm-report .swatch{display:inline-block;width:10px;height:10px;margin-right:4px}
.loglm-report .tag{font-size:.75em;padding:0 4px;border-radius:3px;margin-left:3px;color:#fff}
.loglm-report .new{background:#7b3fe4}.loglm-report .rare{background:#d97706}
"""

_COLORS = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#4b5563"]


_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _e(x: Any) -> str:
    """Escaped for HTML, control characters (never valid in a page) shown as U+FFFD."""
    return html.escape(_CTRL.sub("\ufffd", str(x)), quote=True)


def _score_cell(v: float) -> str:
    return "" if not np.isfinite(v) else f"{v:.3f}"


def _svg_timeline(rep: Report) -> str:
    tl = rep.timeline
    total = np.asarray(tl["total"], dtype=float)
    nb = len(total)
    W, H, L, R, T, B = 960, 260, 50, 10, 12, 36
    pw, ph = W - L - R, H - T - B
    ymax = max(float(total.max()) if nb else 1.0, 1.0)

    def xy(i: int, v: float) -> Tuple[float, float]:
        return L + (i + 0.5) * pw / nb, T + ph - ph * v / ymax

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             f'role="img" aria-label="timeline of template counts">',
             f'<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>',
             f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>']
    burst_bins = {d["bin"] for d in rep.bursts}
    for i, v in enumerate(total):  # total volume as bars, burst bins in red
        x0 = L + i * pw / nb
        h = ph * v / ymax
        fill = "#fecaca" if i in burst_bins else "#e5e7eb"
        parts.append(f'<rect x="{x0 + 0.5:.1f}" y="{T + ph - h:.1f}" width="{max(pw / nb - 1, 0.5):.1f}" '
                     f'height="{h:.1f}" fill="{fill}"><title>bin {i}: {int(v)} lines</title></rect>')
    for c, (tid, series) in enumerate(tl["series"].items()):
        pts = " ".join("%.1f,%.1f" % xy(i, float(v)) for i, v in enumerate(series))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{_COLORS[c % len(_COLORS)]}" stroke-width="1.6">'
                     f'<title>{_e(tid)}</title></polyline>')
    for d in tl["new"][:40]:
        x, _ = xy(d["bin"], 0)
        parts.append(f'<path d="M{x:.1f},{T + ph + 2} l-5,9 l10,0 z" fill="#7b3fe4"><title>new template '
                     f'{_e(d["EventId"])} (line {d["line"]})</title></path>')
    for d in tl["rare"][:40]:
        x, _ = xy(d["bin"], 0)
        parts.append(f'<circle cx="{x:.1f}" cy="{T + ph + 16}" r="3.5" fill="#d97706"><title>rare template '
                     f'{_e(d["EventId"])} (line {d["line"]})</title></circle>')
    for d in rep.bursts[:20]:
        x, y = xy(d["bin"], d["count"])
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="none" stroke="#dc2626" stroke-width="2">'
                     f'<title>burst of {_e(d["EventId"])}: {d["count"]} lines</title></circle>')
    # axes labels
    with_year = tl.get("time_format") not in ("syslog", "[mm.dd HH:MM:SS]")
    if tl["by"] == "time":
        lo, hi = _fmt_time(tl["start"], with_year), _fmt_time(tl["end"], with_year)
        label = "time"
    else:
        lo, hi, label = "line 1", f"line {int(tl['end'])}", "line number"
    parts.append(f'<text x="{L}" y="{H - 4}" font-size="11" fill="#333">{_e(lo)}</text>')
    parts.append(f'<text x="{W - R}" y="{H - 4}" font-size="11" fill="#333" text-anchor="end">{_e(hi)}</text>')
    parts.append(f'<text x="{L + pw / 2}" y="{H - 4}" font-size="11" fill="#333" text-anchor="middle">{label}</text>')
    parts.append(f'<text x="{L - 4}" y="{T + 10}" font-size="11" fill="#333" text-anchor="end">{int(ymax)}</text>')
    parts.append(f'<text x="{L - 4}" y="{T + ph}" font-size="11" fill="#333" text-anchor="end">0</text>')
    parts.append("</svg>")
    return "".join(parts)


def _render(rep: Report, standalone: bool) -> str:
    tdf = rep.templates
    o: List[str] = [f"<style>{_CSS}</style>", '<div class="loglm-report">',
                    f"<h1>Incident report: {_e(rep.source)}</h1>",
                    f"<p>{rep.n_lines:,} lines, {len(tdf):,} templates"
                    + (f", {int(tdf['New'].sum())} new, {int(tdf['Rare'].sum())} rare" if len(tdf) else "")
                    + (f", {len(rep.bursts)} bursts" if rep.bursts else "")
                    + (f"; model: <code>{_e(rep.model)}</code>" if rep.model else "; no model")
                    + (f"; timestamps: {_e(rep.time_format)}" if rep.time_format else "") + ".</p>"]
    for note in rep.notes:
        o.append(f'<div class="note">{_e(note)}</div>')
    # timeline
    o.append("<h2>Timeline</h2>")
    o.append(_svg_timeline(rep))
    legend = []
    for c, tid in enumerate(rep.timeline["series"]):
        row = tdf[tdf["EventId"] == tid]
        tmpl = row["EventTemplate"].iloc[0] if len(row) else ""
        legend.append(f'<span class="swatch" style="background:{_COLORS[c % len(_COLORS)]}"></span>'
                      f'<code>{_e(tid)}</code> {_e(re.sub(r"^(<[*]>[ ]+)+", "… ", tmpl)[:100])}')
    o.append("<p style='font-size:.8em'>" + "<br>".join(legend)
             + "<br>grey bars: all lines per bin (red: a burst); ▲ new template; ● rare template; "
               "red ring: burst of one template</p>")
    if rep.bursts:
        o.append("<table><tr><th>burst</th><th>template</th><th>lines in bin</th><th>mean per bin</th></tr>")
        for d in rep.bursts[:10]:
            span = (f"{_fmt_time(d['start'], True)} – {_fmt_time(d['end'], True)}" if rep.timeline["by"] == "time"
                    else f"lines {int(d['start']) + 1}–{int(d['end'])}")
            o.append(f"<tr><td>{_e(span)}</td><td><code>{_e(d['EventId'])}</code></td><td>{d['count']}</td>"
                     f"<td>{d['expected']:.1f}</td></tr>")
        o.append("</table>")
    # summary (the model) comes last in the data flow, but is read first: show it after the facts header
    o.append("<h2>Summary (model, checked)</h2>")
    if rep.claims:
        o.append("<ul>")
        for claim in rep.claims:
            cites = ", ".join(f"L{i}" for i in claim.line_ids)
            if claim.verified:
                o.append(f'<li>{_e(claim.text)} <code>[{_e(cites)}]</code> <span class="ok">✓ verified</span></li>')
            else:
                why = {"uncited": "cites no line", "vague": "quotes no value or name that could be checked",
                       "bad-citation": "cites lines that do not exist: "
                       + ", ".join(map(str, claim.bad_ids)), "unsupported": "not in the cited lines: "
                       + ", ".join(claim.missing[:6])}.get(claim.status, claim.status)
                o.append(f'<li><span class="failed">{_e(claim.text)}</span> <code>[{_e(cites)}]</code> '
                         f'<span class="bad">✗ {_e(why)}</span></li>')
        o.append("</ul>")
    elif rep.model is None:
        o.append("<p>No model was given: no summary.</p>")
    else:
        o.append("<p>The model produced no claim that passed the check.</p>")
    if rep.dropped_claims:
        o.append(f"<p style='font-size:.8em'>{len(rep.dropped_claims)} claim(s) failed the check and were dropped.</p>")
    # records
    o.append("<h2>Most anomalous records</h2>")
    o.append("<table><tr><th>LineId</th><th>score</th><th>count</th><th>line</th></tr>")
    for r in rep.records.itertuples(index=False):
        o.append(f"<tr><td>{r.LineId}</td><td>{_score_cell(r.Score)}</td><td>{r.Count}</td>"
                 f"<td><code>{_e(r.Content[:300])}</code></td></tr>")
    o.append("</table>")
    # sessions
    sdf = rep.sessions
    if sdf is not None and len(sdf):
        o.append(f"<h2>Most anomalous sessions <span style='font-size:.7em;font-weight:normal'>"
                 f"({_e(sdf.attrs.get('how', ''))})</span></h2>")
        o.append("<table><tr><th>session</th><th>lines</th><th>max line score</th><th>session score</th>"
                 "<th>evidence (removal lowers the session score by)</th></tr>")
        for r in sdf.itertuples(index=False):
            ev = "<br>".join(f"L{', L'.join(map(str, e['line_ids']))}{' …' if e['count'] > len(e['line_ids']) else ''}"
                             f" (−{e['drop']:.3f}): <code>{_e(e['Content'][:200])}</code>" for e in r.Evidence)
            o.append(f"<tr><td>{_e(r.SessionId)}</td><td>{r.Lines}</td><td>{_score_cell(r.MaxLineScore)}</td>"
                     f"<td>{_score_cell(r.Score)}</td><td>{ev}</td></tr>")
        o.append("</table>")
    # templates
    o.append("<h2>Templates</h2>")
    o.append("<table><tr><th>EventId</th><th>count</th><th>first seen</th><th>last seen</th><th>score</th>"
             "<th>template / example line</th></tr>")
    for r in tdf.head(200).itertuples(index=False):
        tags = ('<span class="tag new">new</span>' if r.New else "") + ('<span class="tag rare">rare</span>' if r.Rare else "")
        fs = f"L{r.FirstLine}" + (f" {r.FirstSeen}" if r.FirstSeen else "")
        ls = f"L{r.LastLine}" + (f" {r.LastSeen}" if r.LastSeen else "")
        o.append(f"<tr><td><code>{_e(r.EventId)}</code>{tags}</td><td>{r.Count}</td><td>{_e(fs)}</td><td>{_e(ls)}</td>"
                 f"<td>{_score_cell(r.Score)}</td><td><code>{_e(r.EventTemplate[:300])}</code><br>"
                 f"<code style='color:#555'>{_e(r.Example[:300])}</code></td></tr>")
    o.append("</table>")
    if len(tdf) > 200:
        o.append(f"<p>… {len(tdf) - 200} more templates in <code>to_dict()</code>.</p>")
    tm = ", ".join(f"{k} {v:.2f} s" for k, v in rep.timings.items())
    o.append(f"<p style='font-size:.75em;color:#666'>loglm report · {_e(tm)}</p></div>")
    body = "\n".join(o)
    if not standalone:
        return body
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
            f"<title>loglm report: {_e(rep.source)}</title></head><body>\n{body}\n</body></html>\n")
