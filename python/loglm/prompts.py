"""Prompts of the LogLM capabilities, worded exactly as in the LogLM training set.

LogLM was tuned with LLaMA-Factory on Alpaca records ``{"instruction", "input",
"output"}``; the user turn the model saw is ``instruction + "\\n" + input``. The
builders here produce that user turn (and, for few-shot parsing, earlier
user/assistant turns), so a model tuned on the set sees its own distribution; the
model's chat template is applied by :class:`loglm.LogLM`.

Log text is data: it goes after the instruction (raw for one-line parsing and anomaly
detection, as in training; inside a code fence for the free-text capabilities), and
control-token look-alikes in it are tokenized as plain text by the engine.

Both backends (:class:`loglm.LogLM`, :class:`loglm.remote.RemoteLogLM`) read a prompt
with the checks at the end of this module (:func:`prompt_messages`, :func:`check_text`,
:func:`is_chat`), so neither imports the other's private helpers.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from loglm.errors import InvalidInputError, InvalidTypeError, require_str
from loglm.parsing import PARSING_INSTRUCTION
from loglm.protocols import Chat, Prompt

__all__ = [
    "PARSING_INSTRUCTION",
    "ANOMALY_INSTRUCTION",
    "ANOMALY_CHOICES",
    "INTERPRET_INSTRUCTION",
    "INTERPRET_CONTEXT_INSTRUCTION",
    "ROOT_CAUSE_INSTRUCTION",
    "ROOT_CAUSE_CONTEXT_INSTRUCTION",
    "SOLUTION_INSTRUCTION",
    "SOLUTION_CONTEXT_INSTRUCTION",
    "alpaca_prompt",
    "fence",
    "parsing_chat",
    "anomaly_prompt",
    "explain_prompt",
    "ask_prompt",
    "with_examples",
    "default_instruction",
    "TRUNCATION_MARK",
    "check_text",
    "is_chat",
    "prompt_messages",
]

#: What ends log text cut to fit the model's context (both backends).
TRUNCATION_MARK = " …[truncated]"

#: Anomaly-detection instruction of the training set (records 900-1231).
ANOMALY_INSTRUCTION = "Classify the given log entries into normal and abnormal categories."
#: The two answers of anomaly detection, scored by choice scoring.
ANOMALY_CHOICES = ("normal", "abnormal")

# The free-text capabilities use 847 distinct instructions in training; these are the
# most frequent generic ones of each capability (verbatim from the set), and the
# "context" variants are training instructions that refer to a described problem.
INTERPRET_INSTRUCTION = "Interpret the given log and explain its content."
INTERPRET_CONTEXT_INSTRUCTION = "Interpret the log provided in the context of the problem described."
ROOT_CAUSE_INSTRUCTION = "Identify the root cause of the log error."
ROOT_CAUSE_CONTEXT_INSTRUCTION = "Identify the root cause of the problem based on the log and the user's description."
SOLUTION_INSTRUCTION = "Provide a solution to resolve the log error."
SOLUTION_CONTEXT_INSTRUCTION = "Provide a solution to the problem described based on the log."

Message = Dict[str, str]


def alpaca_prompt(instruction: str, input: str = "") -> str:
    """The user turn LLaMA-Factory builds from an Alpaca record: ``instruction\\ninput``
    (just the instruction when ``input`` is empty)."""
    require_str(instruction, "instruction")
    require_str(input, "input")
    return f"{instruction}\n{input}" if input else instruction


def fence(text: str) -> str:
    """``text`` inside a Markdown code fence longer than any backtick run in it, so the
    log cannot close the fence (the training set quotes multi-line logs this way)."""
    require_str(text, "text")
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    f = "`" * max(3, longest + 1)
    return f"{f}\n{text}\n{f}"


def parsing_chat(line: str, examples: Sequence[Tuple[str, str]] = ()) -> Union[str, List[Message]]:
    """Parsing prompt of one log line: the training instruction and the raw line; with
    few-shot ``(line, template)`` examples, a chat whose earlier turns are the examples
    answered with their templates."""
    return with_examples(alpaca_prompt(PARSING_INSTRUCTION, line),
                         [(alpaca_prompt(PARSING_INSTRUCTION, a), b) for a, b in examples])


def anomaly_prompt(log: str) -> str:
    """Anomaly-detection prompt of one log (as in training: instruction, newline, log)."""
    return alpaca_prompt(ANOMALY_INSTRUCTION, log)


def _context_block(system: Optional[str], context: Optional[str]) -> str:
    parts = []
    if system:
        parts.append(f"System: {system}")
    if context:
        parts.append(f"Problem description: {context}")
    return "\n".join(parts)


_TASKS = {
    "interpret": (INTERPRET_INSTRUCTION, INTERPRET_CONTEXT_INSTRUCTION),
    "root_cause": (ROOT_CAUSE_INSTRUCTION, ROOT_CAUSE_CONTEXT_INSTRUCTION),
    "solution": (SOLUTION_INSTRUCTION, SOLUTION_CONTEXT_INSTRUCTION),
}


def default_instruction(task: str, *, with_context: bool = False) -> str:
    """The training instruction :func:`explain_prompt` uses for ``task`` when the caller
    gives none (``with_context``: the variant that refers to a described problem)."""
    if task not in _TASKS:
        raise InvalidInputError(f"unknown task {task!r}; expected one of {sorted(_TASKS)}")
    return _TASKS[task][1 if with_context else 0]


def explain_prompt(task: str, log: str, *, system: Optional[str] = None,
                   context: Optional[str] = None, instruction: Optional[str] = None) -> str:
    """Prompt of a free-text capability (``"interpret"``, ``"root_cause"``, ``"solution"``)
    for ``log``, with the user's system name and problem description when given.
    ``instruction`` replaces the default training instruction."""
    block = _context_block(system, context)
    instr = instruction or default_instruction(task, with_context=bool(block))
    body = fence(log) if "\n" in log or block else log
    return alpaca_prompt(instr, f"{block}\n{body}" if block else body)


def ask_prompt(instruction: str, logs: Sequence[str]) -> str:
    """Prompt of a free-form instruction about one or more logs: the instruction, then
    the logs in a code fence (numbered ``Log 1:``... when there are several)."""
    if isinstance(logs, (str, bytes)) or not isinstance(logs, Sequence):
        raise InvalidTypeError(f"logs must be a sequence of str, not {type(logs).__name__}")
    if not logs:
        raise InvalidInputError("logs is empty")
    if len(logs) == 1:
        body = fence(logs[0])
    else:
        body = "\n".join(f"Log {i}:\n{fence(x)}" for i, x in enumerate(logs, 1))
    return alpaca_prompt(instruction, body)


def with_examples(prompt: str, examples: Sequence[Tuple[str, str]]) -> Union[str, List[Message]]:
    """``prompt`` preceded by worked examples as earlier chat turns: each ``(user turn,
    answer)`` pair becomes a user message answered by the assistant (retrieval-augmented
    one-shot prompting). No examples: ``prompt`` unchanged."""
    require_str(prompt, "prompt")
    if not examples:
        return prompt
    chat: List[Message] = []
    for user, answer in examples:
        require_str(user, "an example's user turn")
        require_str(answer, "an example's answer")
        chat.append({"role": "user", "content": user})
        chat.append({"role": "assistant", "content": answer})
    chat.append({"role": "user", "content": prompt})
    return chat


# ---- prompt checks both backends share (loglm.LogLM, loglm.remote.RemoteLogLM) ----------


def check_text(s: Union[str, bytes], what: str) -> str:
    """``s`` as a ``str``: bytes decoded as UTF-8; :class:`loglm.InvalidInputError` naming
    ``what`` for other types, bytes that are not UTF-8 and text that cannot be encoded
    (lone surrogates)."""
    if isinstance(s, bytes):
        try:
            return s.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidInputError(
                f"{what} is not valid UTF-8 (byte {e.start}); decode it first, "
                "e.g. data.decode('utf-8', errors='replace')"
            ) from None
    if not isinstance(s, str):
        raise InvalidInputError(f"{what} must be str or bytes, not {type(s).__name__}")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInputError(
            f"{what} contains characters that are not valid Unicode (position {e.start}, "
            "e.g. lone surrogates from surrogateescape decoding); clean the text first"
        ) from None
    return s


def _is_message(m: Any) -> bool:
    return (isinstance(m, dict) and "role" in m and "content" in m) or (
        isinstance(m, tuple) and len(m) == 2 and all(isinstance(x, str) for x in m)
    )


def is_chat(p: Any) -> bool:
    """Whether ``p`` is a chat: a non-empty list of ``{"role", "content"}`` dicts or
    ``(role, content)`` pairs."""
    return isinstance(p, (list, tuple)) and len(p) > 0 and all(_is_message(m) for m in p)


def _pairs(chat: Chat) -> List[Tuple[str, str]]:
    out = []
    for m in chat:
        role, content = (m["role"], m["content"]) if isinstance(m, dict) else m
        out.append((check_text(role, "a message role"), check_text(content, "a message")))
    return out


def prompt_messages(prompt: Prompt, system_prompt: Optional[str]) -> List[Tuple[str, str]]:
    """The chat messages a prompt stands for: a string becomes one user turn (after
    ``system_prompt`` when given); a chat is checked and returned as (role, content) pairs."""
    if isinstance(prompt, (str, bytes)):
        msgs = []
        if system_prompt is not None:
            msgs.append(("system", system_prompt))
        msgs.append(("user", check_text(prompt, "the prompt")))
        return msgs
    if is_chat(prompt):
        return _pairs(prompt)
    raise InvalidInputError(
        "a prompt must be a str, bytes, or a chat (a list of {'role', 'content'} dicts)"
    )
