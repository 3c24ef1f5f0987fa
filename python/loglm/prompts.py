"""Prompts of the LogLM capabilities, worded exactly as in the LogLM training set.

LogLM was tuned with LLaMA-Factory on Alpaca records ``{"instruction", "input",
"output"}``; the user turn the model saw is ``instruction + "\\n" + input``. The
builders here produce that user turn (and, for few-shot parsing, earlier
user/assistant turns), so a model tuned on the set sees its own distribution; the
model's chat template is applied by :class:`loglm.LogLM`.

Log text is data: it goes after the instruction (raw for one-line parsing and anomaly
detection, as in training; inside a code fence for the free-text capabilities), and
control-token look-alikes in it are tokenized as plain text by the engine.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

from loglm.errors import InvalidInputError, InvalidTypeError, require_str
from loglm.parsing import PARSING_INSTRUCTION

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
]

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
