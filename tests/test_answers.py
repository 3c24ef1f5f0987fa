"""Defensive answer parsing on messy model outputs (no model needed)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loglm.answers import clean_text, extract_template, normalize_template, parse_label, parse_verdict
from loglm.parsing import template_matches

LINE = "PacketResponder 1 for block blk_38865049064139660 terminating"
TMPL = "PacketResponder <*> for block blk_<*> terminating"


@pytest.mark.parametrize("answer", [
    TMPL,
    f"  {TMPL}\n",
    f"```\n{TMPL}\n```",
    f"```text\n{TMPL}\n```\nThis template replaces the numbers.",
    f"Sure! Here is the template:\n\n{TMPL}",
    f"Template: {TMPL}",
    f"**Template:** `{TMPL}`",
    f'The standardized template is: "{TMPL}"',
    f"Log: {LINE}\nTemplate: {TMPL}",
    f"{LINE}\n{TMPL}",
    f"- {TMPL}",
    f"1. {TMPL}",
    "PacketResponder < * > for block blk_{*} terminating",
    "PacketResponder <*> for block blk_<*><*> terminating",
    f"Output:\n{TMPL}\nExplanation: the block id and responder number vary.",
])
def test_extract_template_from_messy_answers(answer):
    assert extract_template(answer, LINE) == TMPL


def test_extract_template_prefers_matching_candidate():
    ans = "Here are some options:\nPacketResponder <*> terminating now\nPacketResponder <*> for block <*> terminating"
    assert extract_template(ans, LINE) == "PacketResponder <*> for block <*> terminating"


def test_extract_template_non_matching_is_returned_for_the_tree_to_reject():
    t = extract_template("Received block <*> of size <*>", LINE)
    assert t == "Received block <*> of size <*>" and not template_matches(t, LINE)


@pytest.mark.parametrize("answer", ["", "   \n```\n```", "Sure! Here is the template:", LINE, f"```\n{LINE}\n```"])
def test_no_template_or_bare_echo_gives_empty(answer):
    assert extract_template(answer, LINE) == ""


def test_constant_line_template_when_not_an_echo():
    # a line without variables: a template equal to the line after normalisation of spaces
    assert extract_template("Template: fan   ok", "fan ok") == ""  # pure echo after normalisation
    assert extract_template("fan <*>", "fan ok") == "fan <*>"


def test_normalize_template():
    assert normalize_template("a <VAR> b [*]  c <*><*>") == "a <*> b <*> c <*>"


@given(st.lists(st.text(alphabet="abcXYZ019 .:/-_", min_size=1, max_size=8), min_size=1, max_size=6))
@settings(max_examples=60, deadline=None)
def test_extracted_template_of_any_answer_is_single_line_and_normalised(words):
    line = " ".join(words)
    ans = "```\n" + " ".join("<*>" if any(c.isdigit() for c in w) else w for w in words) + "\n```\nDone."
    t = extract_template(ans, line)
    assert "\n" not in t and "<*><*>" not in t and t == t.strip()


@pytest.mark.parametrize("answer,label", [
    ("abnormal", "abnormal"), ("normal", "normal"), ("Normal.", "normal"),
    ("The log is abnormal because the L3 failed", "abnormal"), ("This is an anomaly.", "abnormal"),
    ("The entry is normal, not abnormal.", "normal"), ("not normal", "abnormal"),
    ("I cannot tell", None), ("", None),
])
def test_parse_label(answer, label):
    assert parse_label(answer) == label


def test_clean_text():
    assert clean_text("  Answer: the disk is full.  ") == "the disk is full."
    assert clean_text("disk full error\nThe disk is full.", prompt_input="disk full error") == "The disk is full."
    assert clean_text("The disk is full.", prompt_input="disk full") == "The disk is full."


# ---------------------------------------------------------------- the one verdict parser

@pytest.mark.parametrize("answer,verdict", [
    ('{"reason": "disk failed", "label": "abnormal"}', (1, "disk failed")),
    ('Step 1: read it. {"label": "Normal", "explanation": "a routine restart"} done', (0, "a routine restart")),
    ('{"verdict": "anomalous", "reason": "x"}', (1, "x")),
    ('{"label": 1}', (1, "")), ('{"label": false, "reason": "ok"}', (0, "ok")),
    ('{"reason": "missing ack", "label": "abnormal"', (1, "missing ack")),  # unclosed
    ('{"reason": "x", "label": normal}', (0, "x")),  # not JSON: the "label" field still counts
    ('{"label": "unsure"} but it looks anomalous', (1, '{"label": "unsure"} but it looks anomalous')),
    ("The session is not normal: the ack is missing", (1, "The session is not normal: the ack is missing")),
    ("This looks normal.", (0, "This looks normal.")),
    ("I cannot tell", (None, "I cannot tell")), ("", (None, "")), (None, (None, "")),
])
def test_parse_verdict(answer, verdict):
    v = parse_verdict(answer)
    assert v == verdict and (v.label, v.reason) == verdict


def test_parse_label_reads_a_json_verdict_first():
    """The label field decides, not the first verdict word of the reason."""
    assert parse_label('{"reason": "no abnormal events", "label": "normal"}') == "normal"
    assert parse_label('{"reason": "looks normal but the ack is missing", "label": "abnormal"}') == "abnormal"
    assert parse_label('{"label": "unsure"}') is None


def test_long_reasons_are_cut():
    assert parse_verdict("x" * 1000 + " normal") == (0, "x" * 300)


def test_collab_uses_the_same_parser():
    from loglm import collab

    assert collab.parse_verdict is parse_verdict


@given(st.text(alphabet='abnormlty {}":,.01', max_size=40))
@settings(max_examples=150, deadline=None)
def test_label_is_the_verdict_as_a_word(text):
    assert parse_label(text) == {1: "abnormal", 0: "normal", None: None}[parse_verdict(text).label]
