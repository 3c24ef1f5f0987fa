"""Structured output: ``json_schema`` by constrained decoding on the real default model
(generate, stream, the engine loop's submit path), the refusal of schemas outside the
subset, and the collaborative detector's verdict asked for with the same mechanism."""
from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

from loglm import LogLM
from loglm.answers import parse_verdict, verdict_schema
from loglm.errors import InvalidInputError

LINE = ("081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block "
        "blk_38865049064139660 terminating")
BAD_LINE = "kernel: EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm bash: reading directory"

SCHEMAS: List[Dict[str, Any]] = [
    verdict_schema(120),
    {"type": "object", "properties": {
        "level": {"enum": ["INFO", "WARN", "ERROR"]},
        "component": {"type": "string", "maxLength": 40},
        "block": {"type": ["string", "null"]},
        "thread": {"type": "integer"},
        "is_error": {"type": "boolean"},
        "score": {"type": "number"},
    }, "required": ["level", "component", "is_error"], "additionalProperties": False},
    {"type": "object", "properties": {
        "fields": {"type": "array", "items": {"type": "string", "maxLength": 24}, "minItems": 1, "maxItems": 4},
        "meta": {"type": "object", "properties": {"source": {"const": "hdfs"}, "n": {"type": "integer"}},
                 "required": ["source", "n"]},
        "kind": {"anyOf": [{"type": "string", "enum": ["a", "b"]}, {"type": "null"}]},
    }, "required": ["fields", "meta", "kind"]},
]


def valid(schema: Dict[str, Any], v: Any) -> bool:
    """A small validator of the JSON Schema subset that loglm compiles."""
    if "anyOf" in schema:
        return any(valid(b, v) for b in schema["anyOf"])
    if "const" in schema:
        return v == schema["const"] and type(v) is type(schema["const"])
    if "enum" in schema:
        return any(v == e and type(v) is type(e) for e in schema["enum"])
    types = schema.get("type", "object")
    for t in types if isinstance(types, list) else [types]:
        if t == "null" and v is None or t == "boolean" and isinstance(v, bool):
            return True
        if t == "integer" and isinstance(v, int) and not isinstance(v, bool):
            return True
        if t == "number" and isinstance(v, (int, float)) and not isinstance(v, bool):
            return True
        if t == "string" and isinstance(v, str):
            if len(v) <= schema.get("maxLength", len(v)) and len(v) >= schema.get("minLength", 0):
                return True
        if t == "array" and isinstance(v, list):
            if (schema.get("minItems", 0) <= len(v) <= schema.get("maxItems", len(v))
                    and all(valid(schema["items"], x) for x in v)):
                return True
        if t == "object" and isinstance(v, dict):
            props = schema.get("properties", {})
            if (all(k in v for k in schema.get("required", []))
                    and all(k in props and valid(props[k], x) for k, x in v.items())):
                return True
    return False


def test_the_validator_can_fail() -> None:
    s = SCHEMAS[1]
    assert valid(s, {"level": "INFO", "component": "x", "is_error": False})
    assert not valid(s, {"level": "DEBUG", "component": "x", "is_error": False})
    assert not valid(s, {"level": "INFO", "component": "x"})
    assert not valid(s, {"level": "INFO", "component": "x", "is_error": False, "other": 1})
    assert not valid(SCHEMAS[2], {"fields": [], "meta": {"source": "hdfs", "n": 1}, "kind": None})


@pytest.fixture(scope="module")
def model() -> LogLM:
    return LogLM.load(threads=1)


def test_generations_always_parse_and_validate(model: LogLM) -> None:
    prompt = f"Describe this log line as JSON: {LINE}"
    closed = 0
    for schema in SCHEMAS:
        for kw in ({}, {"temperature": 1.0, "seed": 7}, {"temperature": 1.3, "seed": 11}):
            r = model.generate(prompt, max_new_tokens=96, json_schema=schema, **kw)
            if r.finish_reason == "length":  # cut short by max_new_tokens: a prefix of a document
                continue
            closed += 1
            obj = json.loads(r.text)
            assert valid(schema, obj), (schema, r.text)
            # properties come in their declared order
            order = [k for k in schema["properties"] if k in obj]
            assert list(obj) == order, r.text
    assert closed >= 3, "answers should close within 96 tokens"


def test_stream_and_engine_loop_give_the_same_structured_text(model: LogLM) -> None:
    schema = SCHEMAS[1]
    chat = [{"role": "user", "content": f"Describe this log line as JSON: {BAD_LINE}"}]
    one = model.generate(chat, max_new_tokens=80, temperature=0.9, seed=3, json_schema=schema)
    streamed = "".join(model.stream(chat, max_new_tokens=80, temperature=0.9, seed=3, json_schema=schema))
    assert streamed == one.text
    # batched with other requests (a plain one, a JSON-mode one): the same text
    batch = model.generate([chat, f"Describe: {LINE}"], max_new_tokens=80, temperature=0.9, seed=3,
                           json_schema=schema)
    assert batch[0].text == one.text
    if batch[1].finish_reason == "stop":  # else cut short by max_new_tokens (a number may run on)
        assert valid(schema, json.loads(batch[1].text)), batch[1].text
    ids = model.encode_prompt(chat)
    plain = model.stream_tokens(ids, max_new_tokens=10)
    js = model.stream_tokens(ids, max_new_tokens=80, temperature=0.9, seed=3, json_schema=json.dumps(schema))
    assert "".join(js) == one.text
    "".join(plain)


def test_schemas_outside_the_subset_are_refused(model: LogLM) -> None:
    for bad, why in [
        ({"type": "object", "properties": {"a": {"type": "string", "format": "date"}}}, "format"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}}, "$ref"),
        ({"type": "object", "required": ["b"], "properties": {}}, "not in properties"),
        ({"type": "tuple"}, "not a JSON Schema type"),
        ({"anyOf": [{"type": "object"}, {"type": "object", "properties": {}}]}, "start differently"),
        ({"enum": list(range(1000))}, "at most"),
    ]:
        with pytest.raises(InvalidInputError, match="json_schema cannot be compiled") as ei:
            model.generate("x", max_new_tokens=4, json_schema=bad)
        assert why in str(ei.value)
    with pytest.raises(InvalidInputError):
        model.generate("x", max_new_tokens=4, json_schema={"type": "object", "default": float("nan")})
    with pytest.raises(InvalidInputError):
        model.generate("x", max_new_tokens=4, json_schema="{not json")
    with pytest.raises(InvalidInputError, match="not both"):
        model.generate("x", max_new_tokens=4, json_object=True, json_schema={"type": "object"})
    with pytest.raises(TypeError):
        model.generate("x", max_new_tokens=4, json_schema=["type", "object"])  # type: ignore[arg-type]


def test_verdict_with_a_reason_by_structured_output(model: LogLM) -> None:
    chat = [{"role": "user", "content": "Is this log session normal or abnormal? Answer with JSON only: "
                                        '{"reason": "<one sentence>", "label": "normal" or "abnormal"}\n' + BAD_LINE}]
    r = model.generate(chat, max_new_tokens=96, json_schema=verdict_schema(150))
    assert r.finish_reason == "stop", r.text
    obj = json.loads(r.text)
    assert list(obj) == ["reason", "label"] and obj["label"] in ("normal", "abnormal") and len(obj["reason"]) <= 150
    v = parse_verdict(r.text)
    assert v.label == (obj["label"] == "abnormal") and v.reason == obj["reason"].strip()


class _SchemaLLM:
    """A stand-in LLM whose generate takes json_schema (as LogLM's does)."""

    def __init__(self) -> None:
        self.calls: List[Dict[str, Any]] = []

    def generate(self, prompt: Any, *, max_new_tokens: int = 256, stop: Any = None,
                 json_schema: Any = None) -> Any:
        self.calls.append({"stop": stop, "json_schema": json_schema})

        class R:
            text = '{"reason": "disk error in the kernel log", "label": "abnormal"}'
            prompt_tokens = 10
            completion_tokens = 12
        return R()


class _PlainLLM(_SchemaLLM):
    def generate(self, prompt: Any, *, max_new_tokens: int = 256, stop: Any = None) -> Any:  # type: ignore[override]
        return super().generate(prompt, max_new_tokens=max_new_tokens, stop=stop)


def test_the_detector_asks_for_its_verdict_by_schema_when_the_llm_can() -> None:
    from loglm.collab import CollaborativeDetector

    for llm, by_schema in ((_SchemaLLM(), True), (_PlainLLM(), False)):
        det = CollaborativeDetector(llm=llm, reasoning=True)
        label, score, reason = det._ask_llm("session: " + BAD_LINE)
        assert (label, reason) == (1, "disk error in the kernel log")
        call = llm.calls[0]
        if by_schema:
            assert call["stop"] is None and call["json_schema"]["required"] == ["reason", "label"]
        else:
            assert call["stop"] == ["}"] and call["json_schema"] is None
