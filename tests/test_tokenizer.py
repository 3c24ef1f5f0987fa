"""Tokenizer parity with llama.cpp through the Python API.

The reference ids were produced by llama.cpp (llama-cpp-python 0.3.36) with
``scripts/make_tokenizer_reference.py`` on real loghub lines and tricky strings,
and frozen in ``tests/data``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from loglm import LogLM
from loglm.errors import LoglmError

DATA = Path(__file__).resolve().parent / "data"


def _load(name: str) -> LogLM:
    if name == "smollm2":
        return LogLM.load(threads=1)
    try:
        return LogLM.load("qwen2.5-coder-0.5b", threads=1, context_length=512)
    except LoglmError as e:
        pytest.skip(f"Qwen2.5-Coder-0.5B not installed: {e}")


@pytest.mark.parametrize("name", ["smollm2", "qwen25"])
def test_ids_equal_llama_cpp(name: str) -> None:
    ref = json.loads((DATA / f"tokenizer_reference_{name}.json").read_text())
    model = _load(name)
    eng = model._engine
    assert model.info["vocab_size"] >= ref["n_vocab"]
    mismatches = []
    for case in ref["cases"]:
        got = list(eng.encode(case["text"], parse_special=case["special"]))
        if got != case["ids"]:
            mismatches.append(case["text"][:60])
        assert model.detokenize(got, skip_special=False) == case["text"] or case["special"]
    assert not mismatches, f"{len(mismatches)}/{len(ref['cases'])} differ, e.g. {mismatches[:3]}"
    for chat in ref["chats"]:
        msgs = [(m["role"], m["content"]) for m in chat["messages"]]
        assert eng.render_chat(msgs, add_generation_prompt=chat["add_generation_prompt"]) == chat["rendered"]
        assert list(eng.encode_chat(msgs, add_generation_prompt=chat["add_generation_prompt"])) == chat["ids"]
    assert sorted(model.info["eos_token_ids"]) == sorted(ref["eog"])
