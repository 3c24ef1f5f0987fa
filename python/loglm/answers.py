"""Defensive parsing of model answers: templates, labels and free text.

Small models wrap answers in chatter ("Sure! Here is the template:"), code fences,
quotes, ``Template:`` prefixes, or repeat the input; these helpers extract the part
that is the answer and never trust it blindly (a template must match its line).

This is the one place that reads a normal / abnormal verdict out of a model's text
(:func:`parse_verdict`, with :func:`parse_label` its word form); the collaborative
detector's ``collab.parse_verdict`` is the same function.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, NamedTuple, Optional

from loglm._args import integer
from loglm.errors import InvalidInputError, require_str
from loglm.parsing import template_matches

__all__ = ["Verdict", "extract_template", "normalize_template", "parse_label", "parse_verdict", "clean_text",
           "trim_to_words", "verdict_schema"]

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})[\w+-]*\s*$")
_PREFIX = re.compile(
    r"^\s*(?:[-*•]\s+|\d+[.)]\s+)?"
    r"(?:\*\*)?(?:the\s+)?(?:standardi[sz]ed\s+|log\s+|output\s+|final\s+|resulting\s+)?"
    r"(?:template|output|answer|result|log template|event template)s?(?:\*\*)?\s*(?:is|would be)?\s*[:=-]\s*(?:\*\*)?",
    re.IGNORECASE,
)
_ECHO = re.compile(r"^\s*(?:input|log|log line|log entry|line)\s*[:=]\s*", re.IGNORECASE)
_CHATTER = re.compile(
    r"^\s*(?:sure|certainly|of course|okay|ok|here(?:'s| is| are)|the (?:template|standardized)|"
    r"i (?:have|will|would|can)|to convert|this log|explanation|note)\b.*[:.!]?\s*$",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(r"<\s*\*\s*>|\{\s*\*?\s*\}|<\s*(?:VAR|var|\*+)\s*>|\[\s*\*\s*\]")
_ADJ = re.compile(r"(?:<\*>){2,}")
_QUOTES = [('"', '"'), ("'", "'"), ("`", "`"), ("“", "”"), ("‘", "’"), ("**", "**")]


def normalize_template(template: str) -> str:
    """Normalise placeholder spellings (``< * >``, ``{*}``, ``<VAR>``, ``[*]``) to ``<*>``,
    merge adjacent ``<*><*>`` into one, collapse whitespace and strip."""
    t = _PLACEHOLDER.sub("<*>", require_str(template, "template"))
    t = _ADJ.sub("<*>", t)
    return " ".join(t.split())


def _unquote(s: str) -> str:
    s = s.strip()
    changed = True
    while changed and len(s) >= 2:
        changed = False
        for a, b in _QUOTES:
            if s.startswith(a) and s.endswith(b) and len(s) >= len(a) + len(b):
                s = s[len(a):len(s) - len(b)].strip()
                changed = True
    return s


_LIST = re.compile(r"^(?:[-*•]|\d+[.)])\s+")


def _candidates(answer: str, line: str = "") -> List[str]:
    out = []
    for raw in answer.replace("\r\n", "\n").split("\n"):
        if _FENCE.match(raw) or not raw.strip():
            continue
        s = raw.strip()
        lm = _LIST.match(s)
        if lm and not line.lstrip().startswith(lm.group(0).strip()):
            s = s[lm.end():]
        m = _PREFIX.match(s)
        if m and m.end() < len(s):
            s = s[m.end():]
        elif m:  # "Template:" alone on its line
            continue
        elif (echo := _ECHO.match(s)) is not None:
            s = s[echo.end():]
        s = _unquote(s)
        if s.startswith("`") and s.count("`") == 1:
            s = s[1:]
        if s.endswith("`") and s.count("`") == 1:
            s = s[:-1]
        s = s.strip()
        if s:
            out.append(s)
    return out


def extract_template(answer: str, line: str) -> str:
    """The template in a model's ``answer`` for the log ``line``, or ``""`` when none.

    Chatter lines, code fences, quotes, ``Template:``/``Output:`` prefixes and list
    markers are dropped; placeholders are normalised (:func:`normalize_template`).
    Among the remaining lines, the first with a ``<*>`` that matches ``line`` wins,
    then the first that matches ``line`` (a line without variables), then the first
    with a ``<*>`` (it will fail verification and be flagged by the caller). A line
    that only repeats the input is not taken as its template when another candidate
    exists; an answer that only repeats the input gives ``""`` (rejected by the tree,
    which keeps its own template and flags the line).
    """
    require_str(answer, "answer")
    norm_line = " ".join(require_str(line, "line").split())
    cands = [normalize_template(c) for c in _candidates(answer, line)]
    cands = [c for c in cands if c]
    if not cands:
        return ""
    # a bare repeat of the input is no answer: the tree's own template is kept instead
    cands = [c for c in cands if c != norm_line]
    if not cands:
        return ""
    with_var = [c for c in cands if "<*>" in c]
    for c in with_var:
        if template_matches(c, line):
            return c
    for c in cands:
        if template_matches(c, line) and not (_CHATTER.match(c) and c != norm_line):
            return c
    if with_var:
        return with_var[0]
    non_chatter = [c for c in cands if not _CHATTER.match(c)]
    return non_chatter[0] if non_chatter else ""


_ABNORMAL = re.compile(r"\b(?:abnormal|anomal\w*|not normal)\b", re.IGNORECASE)
_NORMAL = re.compile(r"\bnormal\b", re.IGNORECASE)


_JSON_OBJECT = re.compile(r"\{.*?\}", re.S)
_JSON_LABEL = re.compile(r'"label"\s*:\s*"?\s*(abnormal|anomal\w*|normal)', re.IGNORECASE)
_JSON_REASON = re.compile(r'"reason"\s*:\s*"([^"]*)')
_ABNORMAL_VALUES = ("abnormal", "anomaly", "anomalous", "1", "true")
_NORMAL_VALUES = ("normal", "0", "false")


class Verdict(NamedTuple):
    """A verdict read from a model's answer (a plain ``(label, reason)`` tuple too)."""

    label: Optional[int]
    """1 anomalous, 0 normal, ``None`` when the answer gives neither."""
    reason: str
    """The JSON ``reason`` (or ``explanation``), else the answer's first 300 characters."""


def _verdict_word(text: str) -> Optional[int]:
    """The first verdict word: "abnormal" / "anomaly..." / "not normal" (1) before
    "normal" (0); ``None`` without one."""
    a = _ABNORMAL.search(text)
    n = _NORMAL.search(text)
    if a and (not n or a.start() <= n.start()):
        return 1
    if n:
        return 0
    return None


def verdict_schema(max_reason_chars: int = 300) -> Dict[str, Any]:
    """JSON Schema of a verdict with a reason, ``{"reason": "...", "label": "normal" |
    "abnormal"}`` (reason first, so that the model explains before it decides), for
    structured output (``LogLM.generate(..., json_schema=verdict_schema())``): the answer
    is then that JSON by construction; :func:`parse_verdict` still reads it defensively
    (an answer cut short by ``max_new_tokens`` has no label)."""
    return {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "maxLength": integer("max_reason_chars", max_reason_chars, 1, 1 << 20)},
            "label": {"type": "string", "enum": ["normal", "abnormal"]},
        },
        "required": ["reason", "label"],
        "additionalProperties": False,
    }


def parse_verdict(answer: Optional[str]) -> Verdict:
    """Defensive parse of a model's verdict. In order: the first JSON object (an
    unclosed last brace is closed) whose ``label`` (or ``verdict`` / ``answer``) is
    abnormal / anomaly / anomalous / 1 / true or normal / 0 / false, with its
    ``reason`` (or ``explanation``); a ``"label": ...`` in broken JSON; the first
    verdict word of the text. ``None`` is read as an empty answer."""
    text = "" if answer is None else require_str(answer, "answer")
    for m in _JSON_OBJECT.finditer(text + ("}" if text.count("{") > text.count("}") else "")):
        try:
            obj = json.loads(m.group(0))
        except ValueError:
            continue
        if isinstance(obj, dict):
            lab = str(obj.get("label", obj.get("verdict", obj.get("answer", "")))).strip().lower()
            reason = str(obj.get("reason", obj.get("explanation", ""))).strip()
            if lab in _ABNORMAL_VALUES:
                return Verdict(1, reason)
            if lab in _NORMAL_VALUES:
                return Verdict(0, reason)
    reason_m = _JSON_REASON.search(text)
    reason = reason_m.group(1).strip() if reason_m else text.strip()[:300]
    lab_m = _JSON_LABEL.search(text)
    if lab_m:
        return Verdict(0 if lab_m.group(1).lower() == "normal" else 1, reason)
    return Verdict(_verdict_word(text), reason)


def parse_label(answer: str) -> Optional[str]:
    """``"abnormal"`` / ``"normal"`` from a free-text classification answer, ``None``
    when the answer has neither: :func:`parse_verdict`'s label as a word (a JSON verdict
    first, else the first verdict word, "abnormal"/"anomaly"/"not normal" before
    "normal"). Choice scoring should be preferred to this."""
    label = parse_verdict(require_str(answer, "answer")).label
    return None if label is None else ("abnormal" if label else "normal")


def clean_text(answer: str, *, prompt_input: Optional[str] = None) -> str:
    """A free-text answer without surrounding whitespace, a leading ``Answer:`` /
    ``Output:`` label, or a leading verbatim repeat of ``prompt_input``."""
    s = require_str(answer, "answer").strip()
    if prompt_input is not None:
        require_str(prompt_input, "prompt_input")
    if prompt_input:
        p = prompt_input.strip()
        if p and s.startswith(p) and len(s) > len(p):
            s = s[len(p):].lstrip()
    s = re.sub(r"^(?:answer|output|response|assistant)\s*:\s*", "", s, flags=re.IGNORECASE)
    return s.strip()


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


def trim_to_words(text: str, max_words: Optional[int]) -> str:
    """``text`` cut after the last whole sentence that keeps it within ``max_words``
    words (the first sentence is always kept, whole). ``None`` keeps everything.
    Paragraph breaks inside the kept part are preserved."""
    require_str(text, "text")
    if max_words is None:
        return text
    if max_words < 1:
        raise InvalidInputError(f"max_words must be >= 1 or None, got {max_words}")
    if len(text.split()) <= max_words:
        return text
    cut, words, start = 0, 0, 0
    for m in list(_SENTENCE_END.finditer(text)) + [None]:
        end = m.start() if m is not None else len(text)
        n = len(text[start:end].split())
        if cut and words + n > max_words:
            break
        words += n
        cut = end
        if m is None:
            break
        start = m.end()
    return text[:cut].rstrip()
