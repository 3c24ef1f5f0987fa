"""``loglm.protocols.ModelLike``: what the task helpers need from a model.

Both backends must offer every member with a compatible signature (mypy checks the
same at the bottom of ``protocols.py``), and the task helpers must work on anything
that does: a small stand-in model that implements only the protocol runs them.
"""
from __future__ import annotations

import inspect
from typing import Any, Iterator, List, Optional, Sequence, Union

import pytest

from loglm.model import LogLM
from loglm.protocols import ModelLike, Prompt
from loglm.remote import RemoteLogLM
from loglm.tasks import Answer, TaskMixin

MEMBERS = ("context_length", "tokenize", "detokenize", "generate", "stream", "score_choices")


def test_the_protocol_names_what_the_helpers_use() -> None:
    own = {n for n in vars(ModelLike) if not n.startswith("_")}
    assert own == set(MEMBERS)


@pytest.mark.parametrize("backend", [LogLM, RemoteLogLM])
def test_both_backends_offer_the_protocol(backend: type) -> None:
    """Every protocol parameter exists in the backend with the same kind and default
    (a backend may take more keyword arguments, with defaults)."""
    assert isinstance(inspect.getattr_static(backend, "context_length"), property)
    for name in MEMBERS[1:]:
        want = inspect.signature(getattr(ModelLike, name)).parameters
        got = inspect.signature(getattr(backend, name)).parameters
        for p in want.values():
            assert p.name in got, f"{backend.__name__}.{name} lacks {p.name}"
            q = got[p.name]
            assert (q.kind, q.default) == (p.kind, p.default), f"{backend.__name__}.{name}({p.name})"
        extra = [q for n, q in got.items() if n not in want]
        assert all(q.default is not inspect.Parameter.empty for q in extra), f"{backend.__name__}.{name}: {extra}"


class _Result:
    def __init__(self, text: str) -> None:
        self.text = text
        self.finish_reason = "stop"


class _Scores:
    def __init__(self, choices: List[str]) -> None:
        self.choices = choices
        self.probs = [0.25, 0.75]


class _Stream:
    def __init__(self, pieces: List[str]) -> None:
        self._it = iter(pieces)
        self.closed = False

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._it)

    def close(self) -> None:
        self.closed = True


class StandIn(TaskMixin):
    """Only the protocol: one byte per token, fixed answers, prompts recorded."""

    def __init__(self) -> None:
        self.prompts: List[Any] = []

    @property
    def context_length(self) -> int:
        return 512

    def tokenize(self, text: Union[str, bytes], *, parse_special: bool = False) -> List[int]:
        return list(text.encode("utf-8") if isinstance(text, str) else text)

    def detokenize(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def generate(self, prompts: Union[Prompt, Sequence[Prompt]], *, max_new_tokens: int = 256,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                 seed: int = 0, stop: Optional[Sequence[str]] = None, max_batch: int = 8, raw: bool = False,
                 return_stats: bool = False, ignore_eos: bool = False) -> Any:
        if isinstance(prompts, (str, bytes)):
            self.prompts.append(prompts)
            return _Result("Answer: the disk controller failed.")
        self.prompts.extend(prompts)
        return [_Result("Answer: x") for _ in prompts]

    def stream(self, prompt: Prompt, *, max_new_tokens: int = 256, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int = 0,
               stop: Optional[Sequence[str]] = None, raw: bool = False) -> _Stream:
        self.prompts.append(prompt)
        return _Stream(["the disk ", "failed"])

    def score_choices(self, prompt: Prompt, choices: Sequence[str], *, raw: bool = False) -> _Scores:
        self.prompts.append(prompt)
        return _Scores(list(choices))


def test_the_task_helpers_run_on_any_model_like() -> None:
    m = StandIn()
    assert isinstance(m, ModelLike)
    assert m.anomaly_score("ciod: failed to read message prefix", evidence=False) == 0.75
    assert "ciod: failed to read message prefix" in m.prompts[-1]
    a = m.interpret("kernel: disk I/O error on sda")
    assert isinstance(a, Answer) and a == "the disk controller failed." and not a.truncated
    assert "kernel: disk I/O error on sda" in m.prompts[-1]
    s = m.ask("What failed?", ["kernel: disk I/O error on sda"], stream=True)
    assert "".join(s) == "the disk failed"
    long = "x" * 2000  # past the 512-token context of the stand-in: cut, and said so
    assert m.interpret(long).truncated


def test_not_a_model() -> None:
    assert not isinstance(object(), ModelLike)
    assert not isinstance("a string", ModelLike)
