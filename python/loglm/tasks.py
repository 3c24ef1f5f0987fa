"""Task helpers of the five LogLM capabilities, mixed into :class:`loglm.LogLM`.

* :meth:`TaskMixin.parse` -- templates (loghub DataFrame), template tree + the model
  for new patterns (:meth:`TaskMixin.propose_templates`);
* :meth:`TaskMixin.detect_anomalies` / :meth:`TaskMixin.detect_sessions` -- verdicts by
  choice scoring of ``"normal"`` / ``"abnormal"``;
* :meth:`TaskMixin.interpret`, :meth:`TaskMixin.root_cause`,
  :meth:`TaskMixin.suggest_solution`, :meth:`TaskMixin.ask` -- text answers (with an
  example bank set, :meth:`TaskMixin.use_examples`, a known answer to the same log comes
  from the bank instead of the model).

Inputs (every helper, resolved by :mod:`loglm.inputs`): a ``str`` is always log text
(never a file name); a :class:`pathlib.Path` (or a list of them) is read as a file (plain
or gzip, LF or CRLF); a list / pandas Series of lines or an open file are taken as they
are. Bytes that are not UTF-8 are decoded with U+FFFD and flagged; empty and binary
files are refused with a clear error. ``log_format`` (loghub style) is accepted by every
helper (the text tasks take it as a keyword too): the model sees only ``Content`` and
the other fields become columns. :meth:`TaskMixin.parse` recognises common headers by
default (``log_format="auto"``; ``None`` keeps lines whole). Text that would not fit the model's context is
truncated and the answer says so.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from loglm.errors import InvalidInputError
from loglm.inputs import LogLines, Logs, add_input_columns, as_log_lines, read_log_lines
from loglm.progress import progress_bar
from loglm.prompts import TRUNCATION_MARK
from loglm.protocols import Prompt
from loglm.retrieval import KNOWN_ANSWER_SIMILARITY

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TaskMixin", "Answer", "LogLines", "read_log_lines", "as_log_lines"]



class Answer(str):
    """A text answer (a ``str``) with facts about how it was produced.

    Attributes: ``truncated`` (the log text was cut to fit the context),
    ``result`` (the :class:`loglm.GenerationResult`, ``None`` for streams until done),
    ``prompt`` (the prompt sent to the model: the user turn, or the chat with retrieved
    examples; empty for a known answer), ``source`` (``"model"``, or ``"example"`` for a
    known answer from the example bank) and ``example`` (that
    :class:`loglm.retrieval.Example`, with its log and similarity; ``None`` otherwise).
    """

    truncated: bool
    result: Any
    prompt: Prompt
    source: str
    example: Any

    def __new__(cls, text: str, *, truncated: bool = False, result: Any = None, prompt: Prompt = "",
                source: str = "model", example: Any = None) -> "Answer":
        obj = super().__new__(cls, text)
        obj.truncated = truncated
        obj.result = result
        obj.prompt = prompt
        obj.source = source
        obj.example = example
        return obj


def _known_result(text: str) -> Dict[str, Any]:
    """The engine-style result record of a known answer: nothing was generated."""
    return {"text": text, "finish_reason": "known_answer", "prompt_tokens": 0, "completion_tokens": 0,
            "prefill_seconds": 0.0, "decode_seconds": 0.0, "token_ids": [], "logprobs": None}


class _KnownAnswerFeed:
    """What :class:`loglm.TextStream` reads from the engine, for a known answer: the
    whole text as one piece, then the end record."""

    def __init__(self, text: str) -> None:
        self._items: List[Tuple[int, str, Any]] = [(0, text, None), (0, "", _known_result(text))]

    def __next__(self) -> Tuple[int, str, Any]:
        if not self._items:
            raise StopIteration
        return self._items.pop(0)

    def poll(self, timeout: float) -> List[Tuple[int, str, Any]]:
        items, self._items = self._items, []
        return items

    @property
    def finished(self) -> bool:
        return not self._items

    def close(self) -> None:
        self._items = []


# Logs per call into the model when scoring many (the progress bar moves per call).
_SCORE_BATCH = 32


def _progress(enabled: Optional[bool], total: int, desc: str) -> Any:
    """The scoring progress bar (on by default from 200 logs)."""
    return progress_bar(enabled, total, desc, "logs", auto_over=200)


#: Default repetition penalty of the free-text capabilities.
REPETITION_PENALTY = 1.1
#: Default length of a free-text answer, in words, per capability: about 1.25x the
#: median answer of that capability in the LogLM training set (63 / 78 words); answers
#: are cut after the last whole sentence within it. Chosen on a validation slice of
#: training records the shipped adapter never saw (EVALUATION.md), where cutting
#: solutions (median 113 words) at any length lowered BLEU, so they are not cut.
ANSWER_WORDS: Dict[str, Optional[int]] = {"interpret": 80, "root_cause": 100, "solution": None}
#: Characters of a retrieved example's log that go into a prompt.
_EXAMPLE_INPUT_CHARS = 800
#: Example-bank task of each free-text helper.
_EXAMPLE_TASK = {"interpret": "interpretation", "root_cause": "root_cause", "solution": "solution"}


if TYPE_CHECKING:  # mypy checks the helpers against the protocol; at run time a plain mixin
    from loglm.protocols import ModelLike as _ModelBase
else:
    _ModelBase = object


class TaskMixin(_ModelBase):
    """Log-analysis methods mixed into :class:`loglm.LogLM` and
    :class:`loglm.remote.RemoteLogLM`: they use only what
    :class:`loglm.protocols.ModelLike` names (``generate``, ``stream``,
    ``score_choices``, ``tokenize``, ``detokenize`` and ``context_length``)."""

    # ---- prompt budget -----------------------------------------------------------
    def fit_text(self, text: str, max_tokens: int) -> Tuple[str, bool]:
        """``text`` cut to at most ``max_tokens`` tokens (with a ``…[truncated]`` mark) and
        whether it was cut."""
        if max_tokens <= 0:
            raise InvalidInputError("no room left in the context for the log text")
        if len(text.encode("utf-8")) <= max_tokens:  # a token is at least one byte
            return text, False
        # bound the work on huge inputs: keep at most ~8 bytes per allowed token
        probe = text[: max_tokens * 8]
        ids = self.tokenize(probe)
        if len(ids) <= max_tokens and len(probe) == len(text):
            return text, False
        keep = max(max_tokens - 8, 1)
        return self.detokenize(ids[:keep]) + TRUNCATION_MARK, True

    def _count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def _log_budget(self, max_new_tokens: int, overhead: int = 160) -> int:
        return int(self.context_length) - max_new_tokens - overhead

    # ---- parsing -----------------------------------------------------------------
    def propose_templates(self, lines: Sequence[str], examples: Sequence[Tuple[str, str]] = (), *,
                          max_new_tokens: Optional[int] = None, max_batch: int = 8) -> List[str]:
        """One template per log line, in one batched generation (the parser's LLM hook).

        Each prompt is the training set's parsing instruction with the line, preceded by
        the few-shot ``(line, template)`` examples as earlier chat turns. Answers are
        cleaned by :func:`loglm.answers.extract_template` (chatter, fences, quotes,
        prefixes, repeated input removed; ``<*>`` normalised). An answer with no usable
        template gives ``""``, which the template tree rejects and flags.
        """
        lines = [str(x) for x in lines]
        if not lines:
            return []
        prompts = self._template_prompts(lines, examples, max_new_tokens)
        return self._generate_templates(lines, prompts, max(w for _, w in prompts), max_batch)

    def _template_prompts(self, lines: Sequence[str], examples: Sequence[Tuple[str, str]],
                          max_new_tokens: Optional[int]) -> List[Tuple[Any, int]]:
        """(chat prompt, wanted new tokens) per line, as :meth:`propose_templates` builds them."""
        from loglm.prompts import parsing_chat

        ex = [(str(a), str(b)) for a, b in examples]
        prompts = []
        for line in lines:
            n = self._count_tokens(line[:4096])
            if max_new_tokens is None:
                want = min(max(n + 16, 24), 256)
            else:
                want = max_new_tokens
            fitted, _ = self.fit_text(line, self._log_budget(want, 64 + 2 * sum(len(a) + len(b) for a, b in ex) // 3))
            shots = ex if self._log_budget(want) > 3 * sum(len(a) + len(b) for a, b in ex) else []
            prompts.append((parsing_chat(fitted, shots), want))
        return prompts

    def _generate_templates(self, lines: Sequence[str], prompts: Sequence[Tuple[Any, int]], width: int,
                            max_batch: int) -> List[str]:
        """Greedy answers of up to ``width`` tokens to the parsing prompts, cleaned into
        templates (a line's answer does not depend on the other prompts of the batch, so
        callers may split a batch as long as they keep ``width``)."""
        from loglm.answers import extract_template

        outs = self.generate([p for p, _ in prompts], max_new_tokens=width,
                             temperature=0.0, max_batch=max_batch)
        return [extract_template(o.text, line) for o, line in zip(outs, lines)]

    def template_miner(self, **kwargs: Any) -> Any:
        """A :class:`loglm.TemplateMiner` with this model in its LLM loop (``kwargs`` as
        for the miner: ``few_shot``, ``batch_size``, ``sim_th``...)."""
        from loglm.parsing import TemplateMiner

        return TemplateMiner(model=self, **kwargs)

    def parse(self, logs: Logs, *, log_format: Optional[str] = "auto", progress: Optional[bool] = None,
              few_shot: int = 3, batch_size: int = 16, miner: Any = None,
              record_start: Union[None, bool, str] = None, labelled: Any = None) -> "pd.DataFrame":
        """Parse logs into the loghub DataFrame: LineId, Content, EventId, EventTemplate,
        ParameterList, NonUtf8, LlmRejected (the model's template did not match its line;
        the tree's template was kept).

        ``logs`` is log text (a ``str``), a list/Series of lines, or a ``pathlib.Path``
        (see :func:`loglm.inputs.as_log_lines`). Lines matching a known template never
        reach the model; the others are sent in batches with few-shot examples. EventId
        is derived from the template text (``template_id``), so results of separate runs
        or machines merge. ``log_format`` splits each line: only Content is parsed (and
        sent to the model), the other fields become columns. The default ``"auto"``
        recognises common headers (timestamp, pid, level, ``[thread]``, logger; see
        :func:`loglm.inputs.split_header`) and keeps lines without one whole;
        ``log_format=None`` parses every line whole; a loghub format (``"<Date> <Time>
        <Level>: <Content>"``) or ``"json"`` splits exactly, with ``FormatMismatch``
        flagging lines that do not fit. ``record_start`` (``True`` or a regex) joins multi-line records first (see
        :mod:`loglm.inputs`). Pass ``miner`` to keep learning in an existing
        :class:`loglm.TemplateMiner`; :func:`loglm.parsing.templates_table` of the result
        gives logparser's templates table. ``labelled`` (``(line, template)`` pairs or a
        DataFrame with ``Content`` and ``EventTemplate``, e.g. a checked sample of the same
        system) seeds the template cache (:meth:`TemplateMiner.add_labelled`): lines a
        labelled template matches get it verbatim and never reach the model.
        """
        tm = miner if miner is not None else self.template_miner(few_shot=few_shot, batch_size=batch_size)
        if tm.model is None:
            tm.model = self
        if labelled is not None:
            tm.add_labelled(labelled)
        lines = as_log_lines(logs, log_format=log_format, record_start=record_start)
        show = progress if progress is not None else len(lines) >= 5000
        df = tm.parse(list(lines), progress=bool(show))
        df["NonUtf8"] = df["NonUtf8"].to_numpy() | lines.non_utf8
        return add_input_columns(df, lines)

    # ---- anomaly detection -------------------------------------------------------
    def anomaly_score(self, log: str, *, evidence: bool = True) -> float:
        """Probability that one log is abnormal: the model's ``P("abnormal")``, renormalised
        over the two answers ``"normal"``/``"abnormal"`` scored after the training set's
        instruction, combined with the evidence of :meth:`anomaly_evidence`
        (``evidence=False``: the model's answer alone)."""
        text, _ = self.fit_text(str(log), self._log_budget(8))
        p = self._anomaly_probs([text])
        return float(self._with_evidence([str(log)], p)[0]) if evidence else float(p[0])

    def anomaly_scores(self, logs: Logs, *, progress: Optional[bool] = None,
                       log_format: Optional[str] = None, record_start: Union[None, bool, str] = None,
                       evidence: bool = True) -> List[float]:
        """:meth:`anomaly_score` of every log, in order (identical logs scored once;
        progress bar on long inputs). Faster than calling it per log on a local model:
        the shared instruction is processed once. ``logs``, ``log_format`` and
        ``record_start`` as for :meth:`detect_anomalies`; ``evidence`` as for
        :meth:`anomaly_score`."""
        lines = list(as_log_lines(logs, log_format=log_format, record_start=record_start))
        scores = self._score_unique(lines, progress, evidence)
        return [scores[x] for x in lines]

    def anomaly_evidence(self) -> Any:
        """The :class:`loglm.anomaly.AnomalyEvidence` combined with the model's answer:
        severity words always, plus the labelled neighbours of the example bank set with
        :meth:`use_examples` (when it has anomaly-detection examples)."""
        from loglm.anomaly import AnomalyEvidence

        ev = self.__dict__.get("_anomaly_evidence")
        if ev is None or ev[0] is not self.examples:
            made = AnomalyEvidence() if self.examples is None else AnomalyEvidence.from_bank(self.examples)
            ev = (self.examples, made)
            self.__dict__["_anomaly_evidence"] = ev
        return ev[1]

    def _with_evidence(self, texts: Sequence[str], probs: Sequence[float]) -> List[float]:
        return [float(x) for x in self.anomaly_evidence().apply(texts, probs)]

    def _anomaly_probs(self, texts: Sequence[str]) -> List[float]:
        """P("abnormal") of each already-fitted log text (one call per text here; a local
        model overrides this to share the instruction's prefill)."""
        from loglm.prompts import ANOMALY_CHOICES, anomaly_prompt

        return [float(self.score_choices(anomaly_prompt(t), list(ANOMALY_CHOICES)).probs[1])
                for t in texts]

    def detect_anomalies(self, logs: Logs, *, threshold: float = 0.5,
                         session_ids: Optional[Sequence[Hashable]] = None,
                         progress: Optional[bool] = None, log_format: Optional[str] = None,
                         record_start: Union[None, bool, str] = None, evidence: bool = True) -> "pd.DataFrame":
        """Label and score every log by choice scoring (not free text), combined with
        the evidence of :meth:`anomaly_evidence` unless ``evidence=False``.

        Returns a DataFrame: LineId, Content, Score (probability of ``"abnormal"``),
        Label (``"abnormal"`` when Score >= ``threshold``, else ``"normal"``), Truncated
        (the log was cut to fit the context) and NonUtf8; with ``session_ids`` (one per
        line) also SessionId and SessionLabel (a session is abnormal if any line is).
        Identical lines are scored once. ``logs``: log text (a ``str``), lines, or a
        ``pathlib.Path``; with ``log_format`` only Content is scored and the header
        fields become columns (plus File / FormatMismatch as in :meth:`parse`);
        ``record_start`` joins multi-line records (one verdict per record).
        """
        if not 0.0 <= threshold <= 1.0:
            raise InvalidInputError(f"threshold must be in [0, 1], got {threshold}")
        import pandas as pd

        lines = as_log_lines(logs, log_format=log_format, record_start=record_start)
        if session_ids is not None:
            session_ids = list(session_ids.tolist() if hasattr(session_ids, "tolist") else session_ids)
            if len(session_ids) != len(lines):
                raise InvalidInputError(f"{len(session_ids)} session ids for {len(lines)} lines")
        scores = self._score_unique(list(lines), progress, evidence)
        budget = self._log_budget(8)
        df = pd.DataFrame({
            "LineId": np.arange(1, len(lines) + 1),
            "Content": list(lines),
            "Score": [scores[x] for x in lines],
        })
        df["Label"] = np.where(df["Score"] >= threshold, "abnormal", "normal")
        df["Truncated"] = [len(x.encode("utf-8")) > budget and self.fit_text(x, budget)[1] for x in lines]
        df["NonUtf8"] = lines.non_utf8
        if session_ids is not None:
            df["SessionId"] = session_ids
            ab = df.groupby("SessionId", sort=False)["Label"].transform(lambda s: (s == "abnormal").any())
            df["SessionLabel"] = np.where(ab.to_numpy(dtype=bool), "abnormal", "normal")
        return add_input_columns(df, lines)

    def _score_unique(self, lines: Sequence[str], progress: Optional[bool], evidence: bool = True) -> Dict[str, float]:
        uniq = list(dict.fromkeys(lines))
        bar = _progress(progress, len(uniq), "scoring")
        out: Dict[str, float] = {}
        budget = self._log_budget(8)
        try:
            for i in range(0, len(uniq), _SCORE_BATCH):
                part = uniq[i:i + _SCORE_BATCH]
                probs = self._anomaly_probs([self.fit_text(str(x), budget)[0] for x in part])
                if evidence:
                    probs = self._with_evidence([str(x) for x in part], probs)
                out.update(zip(part, probs))
                if bar is not None:
                    bar.update(len(part))
        finally:
            if bar is not None:
                bar.close()
        return out

    def detect_sessions(self, sessions: Union[Mapping[Hashable, Sequence[str]], Sequence[Sequence[str]]], *,
                        threshold: float = 0.5, progress: Optional[bool] = None, evidence: bool = True) -> "pd.DataFrame":
        """Verdict per session (``{id: lines}`` or a list of line lists): a session is
        abnormal if any of its lines is. Returns a DataFrame: SessionId, Lines,
        AbnormalLines, Score (highest line score), Label. Distinct lines are scored once
        over all sessions."""
        if not 0.0 <= threshold <= 1.0:
            raise InvalidInputError(f"threshold must be in [0, 1], got {threshold}")
        import pandas as pd

        items = list(sessions.items()) if isinstance(sessions, Mapping) else list(enumerate(sessions))
        if not items:
            raise InvalidInputError("no sessions given")
        norm = [(sid, list(as_log_lines(ls))) for sid, ls in items]
        scores = self._score_unique([x for _, ls in norm for x in ls], progress, evidence)
        rows = []
        for sid, ls in norm:
            s = [scores[x] for x in ls]
            n_ab = sum(v >= threshold for v in s)
            rows.append({"SessionId": sid, "Lines": len(ls), "AbnormalLines": int(n_ab),
                         "Score": max(s), "Label": "abnormal" if n_ab else "normal"})
        return pd.DataFrame(rows)

    # ---- incident report -----------------------------------------------------------
    def report(self, logs: Any, **options: Any) -> Any:
        """An incident report of ``logs`` (a ``pathlib.Path``, a list / Series of lines, or
        log text): timeline, templates, most anomalous records and sessions with their
        ablation evidence, and a summary whose claims cite checked LineIds. Returns a
        :class:`loglm.report.Report` (renders in Jupyter; ``save(path)``, ``to_dict()``).
        ``options`` as for :func:`loglm.report.build_report`."""
        from loglm.report import build_report

        return build_report(logs, self, **options)

    # ---- text capabilities ---------------------------------------------------------
    def _text_task(self, prompt_of: Any, log: Union[str, Sequence[str]], *, stream: bool,
                   max_new_tokens: int, shots: Sequence[Tuple[str, str]] = (),
                   max_words: Optional[int] = None, **gen: Any) -> Any:
        from loglm.answers import clean_text, trim_to_words
        from loglm.prompts import with_examples

        # Small models loop on greedy decoding; a mild penalty (llama.cpp's classic
        # default) keeps explanations readable. Pass repetition_penalty=1.0 to turn it off.
        gen.setdefault("repetition_penalty", REPETITION_PENALTY)
        log_format = gen.pop("log_format", None)  # input handling (loglm.inputs)
        gen.pop("record_start", None)  # records are joined by "\n" anyway
        if isinstance(log, str) and log_format is None:
            text = log
        else:
            text = "\n".join(as_log_lines(log, log_format=log_format))
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("the log text is empty")
        reserve = sum(self._count_tokens(u) + self._count_tokens(a) + 16 for u, a in shots)
        if shots and self._log_budget(max_new_tokens) - reserve < 64:
            shots, reserve = (), 0  # the examples would crowd out the log: answer without them
        fitted, truncated = self.fit_text(text, self._log_budget(max_new_tokens) - reserve)
        prompt = with_examples(prompt_of(fitted), shots)
        if stream:
            s = self.stream(prompt, max_new_tokens=max_new_tokens, **gen)
            s.truncated = truncated
            s.prompt = prompt
            return s
        r = self.generate(prompt, max_new_tokens=max_new_tokens, **gen)
        text_out = trim_to_words(clean_text(r.text, prompt_input=fitted), max_words)
        return Answer(text_out, truncated=truncated, result=r, prompt=prompt)

    # ---- retrieved examples ------------------------------------------------------
    #: Labelled examples retrieved into prompts (a :class:`loglm.retrieval.ExampleBank`),
    #: set with :meth:`use_examples`; ``None`` (the default) prompts without examples.
    examples: Any = None
    #: Retrieved examples per free-text prompt.
    example_shots: int = 0
    #: Similarity from which a free-text example's answer is a known answer (``None``: never).
    known_answer_similarity: Optional[float] = None

    def use_examples(self, bank: Any, *, shots: int = 0,
                     known_answers: Optional[float] = KNOWN_ANSWER_SIMILARITY) -> Any:
        """Use the labelled examples of ``bank`` (a :class:`loglm.retrieval.ExampleBank`,
        e.g. ``ExampleBank.from_instructions()``, or ``None`` to stop):

        * its anomaly-detection examples vote in :meth:`anomaly_scores` (see
          :meth:`anomaly_evidence`);
        * ``known_answers``: when an example of the asked capability is about (nearly)
          the same log -- cosine similarity of the logs at least this (default
          :data:`loglm.retrieval.KNOWN_ANSWER_SIMILARITY`, 0.8; ``None``: never) --
          :meth:`interpret` / :meth:`root_cause` / :meth:`suggest_solution` return that
          example's answer (``Answer.source == "example"``, ``Answer.example``) instead of
          generating one: on a validation slice of the training records this lifted BLEU
          by 4-7 points over the model (EVALUATION.md). Only the logs are compared, not
          the question's ``instruction`` / ``system`` / ``context``;
        * with ``shots`` > 0 the nearest examples of the same capability go before a
          free-text question as earlier chat turns (off by default: on the validation
          slice one retrieved example lowered the shipped adapter's BLEU).

        Returns the model."""
        from loglm.retrieval import ExampleBank, check_similarity

        if bank is not None and not isinstance(bank, ExampleBank):
            raise InvalidInputError(f"use_examples takes an ExampleBank or None, not {type(bank).__name__}")
        if not isinstance(shots, int) or isinstance(shots, bool) or not 0 <= shots <= 8:
            raise InvalidInputError(f"shots must be an int in [0, 8], got {shots!r}")
        similarity = None if known_answers is None else check_similarity(known_answers, "known_answers")
        self.examples = bank
        self.example_shots = shots
        self.known_answer_similarity = similarity
        return self

    def known_answers(self, task: str, logs: Sequence[str]) -> List[Any]:
        """For each log, the known answer of the free-text ``task`` (``interpretation``,
        ``root_cause``, ``solution``): the :class:`loglm.retrieval.Example` of
        :attr:`examples` about the most similar log when it is similar enough (see
        :meth:`use_examples`), else ``None``. All ``None`` without a bank, with known
        answers off, or when the bank has no example of the task."""
        from loglm.retrieval import FREE_TEXT_TASKS, _task_name

        task = _task_name(task)
        if task not in FREE_TEXT_TASKS:
            raise InvalidInputError(f"known answers are for {', '.join(FREE_TEXT_TASKS)}, not {task!r}")
        if isinstance(logs, str):
            raise InvalidInputError("logs must be a list of log texts, not one str")
        bank, threshold = self.examples, self.known_answer_similarity
        if bank is None or threshold is None or task not in bank.tasks():
            return [None] * len(logs)
        return bank.known_answers([str(x) for x in logs], task=task, threshold=threshold)

    def example_turns(self, task: str, text: str, instruction: str = "",
                      k: Optional[int] = None) -> List[Tuple[str, str]]:
        """The ``(user turn, answer)`` pairs of the examples retrieved for a free-text
        ``task`` (``interpretation``, ``root_cause``, ``solution``) about ``text``: the
        nearest examples of that task in :attr:`examples` (none when no bank is set or it
        has no example of the task), each quoted as in training."""
        from loglm.prompts import alpaca_prompt
        from loglm.retrieval import FREE_TEXT_TASKS

        bank, k = self.examples, self.example_shots if k is None else k
        if bank is None or k <= 0 or task not in FREE_TEXT_TASKS or task not in bank.tasks():
            return []
        near = bank.nearest(text, k=k, task=task, instruction=instruction, exclude_inputs=(text,))
        # farthest first, so the nearest example is the turn right before the question
        return [(alpaca_prompt(e.instruction, e.input[:_EXAMPLE_INPUT_CHARS]), e.output) for e in reversed(near)]

    def _explain(self, task: str, log: Union[str, Sequence[str]], system: Optional[str],
                 context: Optional[str], instruction: Optional[str], stream: bool,
                 max_new_tokens: int, gen: Dict[str, Any]) -> Any:
        max_words = gen.pop("max_words", ANSWER_WORDS[task])
        from loglm.prompts import default_instruction, explain_prompt

        shots: List[Tuple[str, str]] = []
        if self.examples is not None:
            fmt = gen.get("log_format")
            text = log if isinstance(log, str) and fmt is None else "\n".join(as_log_lines(log, log_format=fmt))
            if not text.strip():
                raise InvalidInputError("the log text is empty")
            known = self.known_answers(_EXAMPLE_TASK[task], [text])[0]
            if known is not None:
                return self._known_answer(known, stream)
            instr = instruction or default_instruction(task, with_context=bool(system or context))
            shots = self.example_turns(_EXAMPLE_TASK[task], text, instr)
        return self._text_task(
            lambda t: explain_prompt(task, t, system=system, context=context, instruction=instruction),
            log, stream=stream, max_new_tokens=max_new_tokens, shots=shots, max_words=max_words, **gen)

    @staticmethod
    def _known_answer(example: Any, stream: bool) -> Any:
        from loglm.model import TextStream, _result

        if stream:
            s = TextStream(_KnownAnswerFeed(example.output))
            s.source, s.example = "example", example
            return s
        return Answer(example.output, result=_result(_known_result(example.output)), source="example",
                      example=example)

    def interpret(self, log: Union[str, Sequence[str]], *, system: Optional[str] = None,
                  context: Optional[str] = None, instruction: Optional[str] = None,
                  stream: bool = False, max_new_tokens: int = 256, **gen: Any) -> Any:
        """Explain what a log (a string, or lines) means. ``system`` names the system and
        ``context`` describes what the user was doing; both go into the prompt. Returns an
        :class:`Answer` (a str; ``.truncated`` says whether the log was cut to fit), or
        with ``stream=True`` a :class:`loglm.TextStream`. ``gen``: generation options
        (``temperature``, ``seed``...) and ``max_words``: the answer is cut after the last
        whole sentence within that many words (default :data:`ANSWER_WORDS`; ``None``
        keeps it whole; streams are not cut)."""
        return self._explain("interpret", log, system, context, instruction, stream, max_new_tokens, gen)

    def root_cause(self, log: Union[str, Sequence[str]], *, system: Optional[str] = None,
                   context: Optional[str] = None, instruction: Optional[str] = None,
                   stream: bool = False, max_new_tokens: int = 256, **gen: Any) -> Any:
        """Identify the root cause of the problem a log shows (arguments as
        :meth:`interpret`)."""
        return self._explain("root_cause", log, system, context, instruction, stream, max_new_tokens, gen)

    def suggest_solution(self, log: Union[str, Sequence[str]], *, system: Optional[str] = None,
                         context: Optional[str] = None, instruction: Optional[str] = None,
                         stream: bool = False, max_new_tokens: int = 256, **gen: Any) -> Any:
        """Recommend a solution to the problem a log shows (arguments as
        :meth:`interpret`)."""
        return self._explain("solution", log, system, context, instruction, stream, max_new_tokens, gen)

    def ask(self, instruction: str, logs: Union[str, Sequence[str], Any], *, stream: bool = False,
            max_new_tokens: int = 256, **gen: Any) -> Any:
        """Any other instruction about logs (compare two logs, explain a verdict,
        summarise a session). ``logs`` is one log text (a ``str``, never a file name), a
        list of logs (numbered in the prompt) or a ``pathlib.Path`` (a list of Paths is
        read as one log). ``log_format=...`` (keyword) keeps only each line's Content.
        Returns an :class:`Answer` or a stream."""
        from loglm.prompts import ask_prompt

        if not isinstance(instruction, str) or not instruction.strip():
            raise InvalidInputError("the instruction is empty")
        log_format = gen.pop("log_format", None)
        if isinstance(logs, os.PathLike) or (isinstance(logs, (list, tuple)) and logs
                                             and all(isinstance(x, os.PathLike) for x in logs)):
            items = ["\n".join(as_log_lines(logs, log_format=log_format))]
        elif isinstance(logs, str):
            items = ["\n".join(as_log_lines(logs, log_format=log_format))] if log_format else [logs]
        else:
            items = [str(x) for x in (logs.tolist() if hasattr(logs, "tolist") else logs)]
            if log_format is not None:
                items = ["\n".join(as_log_lines(x, log_format=log_format)) for x in items]
        if not items or not any(x.strip() for x in items):
            raise InvalidInputError("no log text given")
        joined_sep = "\x00LOGSEP\x00"
        return self._text_task(lambda t: ask_prompt(instruction.strip(), t.split(joined_sep)),
                               joined_sep.join(items), stream=stream, max_new_tokens=max_new_tokens, **gen)
