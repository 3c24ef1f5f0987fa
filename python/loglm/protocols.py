"""What the task helpers need from a model, stated as :class:`typing.Protocol` classes.

The log-analysis methods (:class:`loglm.tasks.TaskMixin`: ``parse``,
``detect_anomalies``, ``interpret``, ``ask``...) are written against a handful of model
operations, not against one backend: :class:`ModelLike` names them. The local engine
(:class:`loglm.LogLM`) and a model server (:class:`loglm.remote.RemoteLogLM`) both
satisfy it; mypy checks that at the bottom of this module, and
``tests/test_protocols.py`` checks the signatures at run time. Code that takes "a
model" (a helper, a test double, a third backend) should annotate it as ``ModelLike``.

This module imports nothing from the rest of loglm at run time, so any module may
import it without creating a cycle.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple, Union, \
    runtime_checkable

__all__ = ["Chat", "ChoiceScoresLike", "GenerationResultLike", "Message", "ModelLike", "Prompt", "TextStreamLike"]

#: One chat turn: ``{"role": ..., "content": ...}`` or a ``(role, content)`` pair.
Message = Union[Dict[str, str], Tuple[str, str]]
#: A chat: the turns in order.
Chat = Sequence[Message]
#: What a model is asked: text (one user turn) or a chat.
Prompt = Union[str, bytes, Chat]


class GenerationResultLike(Protocol):
    """One finished completion (:class:`loglm.GenerationResult`)."""

    @property
    def text(self) -> str:
        """The completion text (stop strings cut)."""
        ...

    @property
    def finish_reason(self) -> str:
        """Why it ended: ``"stop"`` (end of turn / a stop string) or ``"length"``."""
        ...


class ChoiceScoresLike(Protocol):
    """Scores of a fixed set of answers to one prompt (:class:`loglm.ChoiceScores`)."""

    @property
    def choices(self) -> List[str]:
        """The answers scored, in the order given."""
        ...

    @property
    def probs(self) -> List[float]:
        """Their probabilities, renormalised over the choices."""
        ...


class TextStreamLike(Protocol):
    """A completion as an iterator of text pieces (:class:`loglm.TextStream`).

    The text helpers (``interpret(..., stream=True)``...) set ``truncated`` and ``prompt``
    on the stream they return, as they do on an :class:`loglm.tasks.Answer`."""

    #: Whether the log text was cut to fit the context (``False`` unless a helper set it).
    truncated: bool
    #: The prompt a helper sent (``""`` unless a helper set it).
    prompt: Prompt

    def __iter__(self) -> Iterator[str]:
        """The stream itself."""
        ...

    def __next__(self) -> str:
        """The next text piece."""
        ...

    def close(self) -> None:
        """Stop the generation early."""
        ...


@runtime_checkable
class ModelLike(Protocol):
    """The model operations the task helpers use: token counting and cutting
    (``tokenize`` / ``detokenize`` / ``context_length``), batched and streamed
    generation, and choice scoring for classification. ``isinstance(x, ModelLike)``
    checks that the members exist (not their signatures: mypy does that)."""

    @property
    def context_length(self) -> int:
        """Tokens one sequence may hold (prompt plus completion)."""
        ...

    def tokenize(self, text: Union[str, bytes], *, parse_special: bool = False) -> List[int]:
        """Token ids of ``text``."""
        ...

    def detokenize(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of token ids."""
        ...

    def generate(self, prompts: Union[Prompt, Sequence[Prompt]], *, max_new_tokens: int = 256,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                 seed: int = 0, stop: Optional[Sequence[str]] = None, max_batch: int = 8, raw: bool = False,
                 return_stats: bool = False, ignore_eos: bool = False) -> Any:
        """A :class:`GenerationResultLike` for one prompt, a list of them for a list
        (with ``return_stats=True`` a pair with the batch statistics)."""
        ...

    def stream(self, prompt: Prompt, *, max_new_tokens: int = 256, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int = 0,
               stop: Optional[Sequence[str]] = None, raw: bool = False) -> TextStreamLike:
        """One completion as it is generated."""
        ...

    def score_choices(self, prompt: Prompt, choices: Sequence[str], *, raw: bool = False) -> ChoiceScoresLike:
        """Log-probability of each of ``choices`` as the answer to ``prompt``."""
        ...


if TYPE_CHECKING:  # mypy: both backends satisfy the protocols (no run-time import, no cycle)
    from loglm.model import ChoiceScores, GenerationResult, LogLM, TextStream
    from loglm.remote import RemoteLogLM, RemoteTextStream

    def _local(m: LogLM) -> ModelLike:
        return m

    def _remote(m: RemoteLogLM) -> ModelLike:
        return m

    def _results(r: GenerationResult, c: ChoiceScores, s: TextStream,
                 rs: RemoteTextStream) -> Tuple[GenerationResultLike, ChoiceScoresLike, TextStreamLike, TextStreamLike]:
        return r, c, s, rs
