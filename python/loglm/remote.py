"""A model behind an OpenAI-compatible server, with the task helpers of :class:`loglm.LogLM`.

``LogLM.remote(base_url, model=None, api_key=None)`` returns a :class:`RemoteLogLM`:
``parse``, ``detect_anomalies``, ``interpret``, ``root_cause``, ``suggest_solution``,
``ask``, ``generate``, ``stream`` and ``score_choices`` work as on a local model, over
HTTP with ``httpx`` (one connection pool per model: connections are reused; proxy
settings come from the usual environment variables; ``pip install 'loglm[serve]'``).

- **Batches** fan out over a thread pool of ``concurrency`` requests; ``loglm serve``
  batches concurrent requests into its engine.
- **Retries**: connection errors, timeouts, 429 and 5xx answers are retried up to
  ``max_retries`` times with exponential backoff and jitter (``Retry-After`` honoured);
  other 4xx answers are not. Failures raise :class:`loglm.ServerUnavailableError`
  (naming the URL), :class:`loglm.AuthenticationError`, :class:`loglm.BadRequestError`
  or :class:`loglm.RemoteError`.
- **Choice scoring** (anomaly detection) uses loglm's extension
  ``POST /v1/loglm/score_choices`` when the server is ``loglm serve``: the scores equal
  the local model's. Other servers are asked for one token with ``logprobs=true,
  top_logprobs=20`` and each choice gets the log-probability of the best listed token
  that begins it (with no such token, a floor below the last listed one): an
  approximation that only looks at the first token, so choices should differ in their
  first token (``"normal"`` / ``"abnormal"`` do).
- **Token budgets**: with ``loglm serve`` the server's tokenizer is used
  (``/v1/loglm/tokenize``); other servers get an estimate of 3 bytes per token, and the
  context length comes from the server's ``max_model_len`` or the ``context_length``
  argument (default 4096).
- **Structured output**: ``generate`` / ``stream`` take ``json_object`` / ``json_schema``
  as a local model does and send them as ``response_format``; ``loglm serve`` decodes
  under the same token mask (the text equals the local one), other servers as they do.
- ``raw=True`` prompts (no chat template) are not available remotely.
"""
from __future__ import annotations

import json
import math
import os
import random
import threading
import time
import urllib.parse
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from loglm import _args
from loglm.errors import (
    AuthenticationError,
    BadRequestError,
    InvalidInputError,
    InvalidTypeError,
    RemoteError,
    ServerUnavailableError,
)
from loglm.model import BatchStats, ChoiceScores, GenerationResult
from loglm.progress import progress_bar
from loglm.prompts import TRUNCATION_MARK, check_text, is_chat, prompt_messages
from loglm.protocols import Prompt
from loglm.tasks import TaskMixin

__all__ = ["RemoteLogLM", "RemoteTextStream"]

#: Context length assumed for servers that do not report one.
DEFAULT_CONTEXT = 4096
#: Bytes per token assumed when the server has no tokenizer endpoint.
BYTES_PER_TOKEN = 3
_RETRY_STATUS = {429, 500, 502, 503, 504}
_TOP_LOGPROBS = 20


def _finish_reason(choice: Dict[str, Any], ext: Optional[Dict[str, Any]]) -> str:
    if ext and isinstance(ext.get("finish_reason"), str):
        return str(ext["finish_reason"])
    r = choice.get("finish_reason")
    return "length" if r == "length" else "stop"


def approximate_choice_logprobs(top_logprobs: Sequence[Dict[str, Any]], choices: Sequence[str]) -> List[float]:
    """Log-probabilities of ``choices`` from the ``top_logprobs`` of a first answer token.

    A choice gets the highest log-probability among the listed tokens that begin it
    (compared without leading spaces, case-sensitive), else a floor one nat below the
    lowest listed log-probability. Used for servers without loglm's scoring endpoint.
    """
    if isinstance(choices, (str, bytes)):
        raise InvalidTypeError("choices must be a list of strings, not one str")
    entries = [(str(e.get("token", "")).lstrip(), float(e.get("logprob", -math.inf))) for e in top_logprobs]
    entries = [(t, lp) for t, lp in entries if t and math.isfinite(lp)]
    floor = (min(lp for _, lp in entries) - 1.0) if entries else -30.0
    out = []
    for c in choices:
        c0 = c.lstrip()
        hits = [lp for t, lp in entries if c0.startswith(t)]
        out.append(max(hits) if hits else floor)
    return out


class RemoteTextStream:
    """Iterator over the text pieces of one remote generation (server-sent events).

    ``result`` holds the :class:`loglm.GenerationResult` once the stream is exhausted;
    ``close()`` stops reading (and closes the connection).
    """

    #: Set by the text helpers, as on :class:`loglm.TextStream`.
    truncated: bool
    prompt: Prompt

    def __init__(self, resp: Any, url: str, started: float) -> None:
        self._resp = resp
        self._lines = resp.iter_lines()
        self._url = url
        self._started = started
        self._text: List[str] = []
        self._finish: Optional[str] = None
        self._ext: Optional[Dict[str, Any]] = None
        self._usage: Optional[Dict[str, Any]] = None
        self._done = False
        self.result: Optional[GenerationResult] = None
        self.truncated = False
        self.prompt = ""

    def __iter__(self) -> "RemoteTextStream":
        return self

    def __next__(self) -> str:
        while not self._done:
            import httpx

            try:
                line = next(self._lines)
            except StopIteration:
                self._end()
                break
            except (OSError, httpx.HTTPError, httpx.StreamError) as e:
                self.close()
                raise ServerUnavailableError(f"the stream from {self._url} broke off: {e}", url=self._url) from None
            line = line.strip()
            if not line.startswith("data:"):
                continue  # comments, blank separators, other SSE fields
            data = line[5:].strip()
            if data == "[DONE]":
                self._end()
                break
            try:
                obj = json.loads(data)
            except ValueError:
                self.close()
                raise RemoteError(f"{self._url} sent an unreadable stream event: {data[:200]!r}",
                                  url=self._url) from None
            if "error" in obj:
                self.close()
                raise _error_from(self._url, 200, obj)
            if obj.get("usage"):
                self._usage = obj["usage"]
            if isinstance(obj.get("loglm"), dict):
                self._ext = obj["loglm"]
            for ch in obj.get("choices") or []:
                if ch.get("finish_reason"):
                    self._finish = _finish_reason(ch, self._ext)
                piece = (ch.get("delta") or {}).get("content")
                if piece:
                    self._text.append(piece)
                    return str(piece)
        raise StopIteration

    def _end(self) -> None:
        self._done = True
        text = "".join(self._text)
        u = self._usage or {}
        ext = self._ext or {}
        self.result = GenerationResult(
            text=text, finish_reason=self._finish or "stop",
            prompt_tokens=int(u.get("prompt_tokens", 0)), completion_tokens=int(u.get("completion_tokens", 0)),
            prefill_seconds=float(ext.get("prefill_seconds", 0.0)),
            decode_seconds=float(ext.get("decode_seconds", time.monotonic() - self._started)))
        self._resp.close()

    def close(self) -> None:
        """Stop reading and close the connection (the server then cancels the generation)."""
        self._done = True
        self._resp.close()

    def __enter__(self) -> "RemoteTextStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error_from(url: str, status: int, body: Any) -> RemoteError:
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        msg, code = str(err.get("message", "")), err.get("code")
    else:
        msg, code = (str(err) if err else str(body)[:500]), None
    code = str(code) if code is not None else None
    text = f"{url}: HTTP {status}: {msg}" if status else f"{url}: {msg}"
    if status in (401, 403):
        return AuthenticationError(text, status=status, code=code, url=url)
    if status in (502, 503, 504):
        return ServerUnavailableError(text, status=status, code=code, url=url)
    if 400 <= status < 500 and status != 429:
        return BadRequestError(text, status=status, code=code, url=url)
    return RemoteError(text, status=status, code=code, url=url)


class RemoteLogLM(TaskMixin):
    """A model served over HTTP by an OpenAI-compatible server (``loglm serve``, vLLM,
    llama.cpp's server...). Make one with :meth:`loglm.LogLM.remote`; nothing is sent
    until the first call. Safe to use from several threads."""

    def __init__(self, base_url: str, model: Optional[str] = None, *, api_key: Optional[str] = None,
                 timeout: float = 60.0, max_retries: int = 3, concurrency: int = 8,
                 context_length: Optional[int] = None, system_prompt: Optional[str] = None,
                 backoff: float = 0.5) -> None:
        if not isinstance(base_url, str) or not base_url.strip():
            raise InvalidInputError("base_url must be a URL such as 'http://127.0.0.1:8000'")
        u = urllib.parse.urlsplit(base_url.strip())
        if u.scheme not in ("http", "https") or not u.hostname:
            raise InvalidInputError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if timeout <= 0 or max_retries < 0 or concurrency < 1 or backoff < 0:
            raise InvalidInputError("timeout must be > 0, max_retries >= 0, concurrency >= 1, backoff >= 0")
        if context_length is not None and context_length < 64:
            raise InvalidInputError("context_length must be at least 64")
        path = u.path.rstrip("/")
        if path.endswith("/v1"):
            path = path[:-3]
        self._scheme, self._host, self._port = u.scheme, u.hostname, u.port
        self._prefix = path
        self.base_url = f"{u.scheme}://{u.netloc}{path}"
        self._model = model
        self._api_key = api_key if api_key is not None else (os.environ.get("LOGLM_API_KEY") or None)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.concurrency = int(concurrency)
        self.backoff = float(backoff)
        self.system_prompt = system_prompt
        self._context_length = context_length
        self._card: Optional[Dict[str, Any]] = None
        self._lock = threading.Lock()
        self._client: Any = None

    def __repr__(self) -> str:
        return f"RemoteLogLM({self.base_url!r}, model={self._model!r})"

    # -- HTTP ------------------------------------------------------------------------
    def _http(self) -> Any:
        """The connection pool (made on first use; thread-safe)."""
        with self._lock:
            if self._client is None:
                try:
                    import httpx
                except ImportError:
                    raise RemoteError("LogLM.remote needs httpx: pip install 'loglm[serve]'",
                                      url=self.base_url) from None
                self._client = httpx.Client(
                    timeout=httpx.Timeout(self.timeout),
                    limits=httpx.Limits(max_connections=max(self.concurrency, 1) * 2,
                                        max_keepalive_connections=max(self.concurrency, 1)),
                    trust_env=True)
                # pooled connections are closed with the model object, not left to the garbage collector
                weakref.finalize(self, self._client.close)
            return self._client

    def close(self) -> None:
        """Close the pooled connections (a later call opens new ones)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> "RemoteLogLM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sleep(self, attempt: int, retry_after: Optional[str]) -> None:
        delay = self.backoff * (2 ** attempt) * (0.5 + random.random())
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), 30.0))
            except ValueError:
                pass
        time.sleep(min(delay, 30.0))

    def _open(self, method: str, path: str, body: Optional[Dict[str, Any]]) -> Any:
        """Send a request, retrying as the module doc says; returns an open 2xx
        ``httpx.Response`` (streamed: read it, then close it)."""
        import httpx

        client = self._http()
        url = self.base_url + path
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {"Accept": "application/json, text/event-stream"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        last: Optional[BaseException] = None
        for attempt in range(self.max_retries + 1):
            try:
                req = client.build_request(method, url, content=data, headers=headers)
                resp = client.send(req, stream=True)
            except (OSError, httpx.TransportError) as e:
                last = e
                if attempt < self.max_retries:
                    self._sleep(attempt, None)
                    continue
                raise ServerUnavailableError(
                    f"cannot reach the model server at {url}: {type(e).__name__}: {e} "
                    f"({attempt + 1} attempt{'s' if attempt else ''}); is it running?", url=url) from None
            if resp.status_code < 400:
                return resp
            try:
                raw = resp.read()
            except (OSError, httpx.HTTPError, httpx.StreamError):
                raw = b""
            finally:
                resp.close()
            try:
                parsed: Any = json.loads(raw.decode("utf-8", "replace")) if raw else {}
            except ValueError:
                parsed = {"error": {"message": raw.decode("utf-8", "replace")[:500]}}
            if resp.status_code in _RETRY_STATUS and attempt < self.max_retries:
                last = _error_from(url, resp.status_code, parsed)
                self._sleep(attempt, resp.headers.get("Retry-After"))
                continue
            err = _error_from(url, resp.status_code, parsed)
            if resp.status_code in _RETRY_STATUS and self.max_retries:
                err.args = (f"{err.args[0]} (after {attempt + 1} attempts)",)
            raise err
        raise ServerUnavailableError(f"{url}: no answer ({last})", url=url)  # pragma: no cover

    def _call(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        import httpx

        url = self.base_url + path
        for attempt in range(self.max_retries + 1):
            resp = self._open(method, path, body)
            try:
                raw = resp.read()
                break
            except (OSError, httpx.HTTPError, httpx.StreamError) as e:
                if attempt >= self.max_retries:
                    raise ServerUnavailableError(f"{url}: the answer broke off: {e}", url=url) from None
                self._sleep(attempt, None)
            finally:
                resp.close()
        try:
            out = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise RemoteError(f"{url} answered with something that is not JSON: {raw[:200]!r}", url=url) from None
        if not isinstance(out, dict):
            raise RemoteError(f"{url} answered with JSON that is not an object", url=url)
        return out

    # -- facts -------------------------------------------------------------------------
    def _model_card(self) -> Dict[str, Any]:
        with self._lock:
            if self._card is not None:
                return self._card
        data = self._call("GET", "/v1/models").get("data") or []
        cards = [c for c in data if isinstance(c, dict) and isinstance(c.get("id"), str)]
        if self._model is None:
            if not cards:
                raise RemoteError(f"{self.base_url}/v1/models lists no model; pass model=...", url=self.base_url)
            card = cards[0]
        else:
            found = [c for c in cards if c["id"] == self._model]
            card = found[0] if found else {"id": self._model}
        with self._lock:
            self._card = card
            self._model = card["id"]
        return card

    @property
    def model(self) -> str:
        """The served model's name (asked from ``/v1/models`` when not given)."""
        return str(self._model_card()["id"])

    @property
    def is_loglm(self) -> bool:
        """Whether the server is ``loglm serve`` (it offers scoring and tokenizing)."""
        return self._model_card().get("owned_by") == "loglm"

    @property
    def info(self) -> Dict[str, Any]:
        """The server's model card plus ``base_url``."""
        return {"base_url": self.base_url, **self._model_card()}

    @property
    def context_length(self) -> int:
        if self._context_length is not None:
            return self._context_length
        card = self._model_card()
        for key in ("max_model_len", "context_length", "context_window"):
            v = card.get(key)
            if isinstance(v, int) and v > 0:
                return v
        return DEFAULT_CONTEXT

    # -- tokens ------------------------------------------------------------------------
    def tokenize(self, text: Union[str, bytes], *, parse_special: bool = False) -> List[int]:
        """Token ids from the server's tokenizer (``loglm serve`` only)."""
        s = check_text(text, "text")
        if not self.is_loglm:
            raise RemoteError(f"{self.base_url} is not loglm serve and has no tokenizer endpoint",
                              url=self.base_url)
        out = self._call("POST", "/v1/loglm/tokenize",
                         {"model": self.model, "text": s, "parse_special": parse_special})
        return [int(t) for t in out["tokens"]]

    def detokenize(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of token ids, from the server (``loglm serve`` only)."""
        if not self.is_loglm:
            raise RemoteError(f"{self.base_url} is not loglm serve and has no detokenizer endpoint",
                              url=self.base_url)
        return str(self._call("POST", "/v1/loglm/detokenize", {"model": self.model, "tokens": list(ids)})["text"])

    def _count_tokens(self, text: str) -> int:
        if self.is_loglm:
            return len(self.tokenize(text))
        return -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN)

    def fit_text(self, text: str, max_tokens: int) -> Tuple[str, bool]:
        """``text`` cut to about ``max_tokens`` tokens (server tokenizer for ``loglm
        serve``, else ~3 bytes a token), and whether it was cut."""
        if self.is_loglm:
            return super().fit_text(text, max_tokens)
        if max_tokens <= 0:
            raise InvalidInputError("no room left in the context for the log text")
        b = text.encode("utf-8")
        if len(b) <= max_tokens * BYTES_PER_TOKEN:
            return text, False
        keep = max((max_tokens - 8) * BYTES_PER_TOKEN, 1)
        return b[:keep].decode("utf-8", "ignore") + TRUNCATION_MARK, True

    def messages(self, prompt: Prompt) -> List[Tuple[str, str]]:
        """The chat messages a prompt stands for (system prompt added to strings)."""
        return prompt_messages(prompt, self.system_prompt)

    def _chat_body(self, prompt: Prompt, raw: bool, max_new_tokens: int, temperature: float, top_k: int,
                   top_p: float, repetition_penalty: float, seed: int, stop: Optional[Sequence[str]],
                   ignore_eos: bool, json_object: bool = False,
                   json_schema: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        if raw:
            raise InvalidInputError("raw=True prompts are not available with a remote model")
        if json_object and json_schema is not None:
            raise InvalidInputError("give json_object or json_schema, not both")
        schema = _args.json_schema(json_schema)  # the local checks: a dict or its JSON text
        if schema is not None:
            try:
                schema_obj = json.loads(schema)
            except ValueError as e:
                raise InvalidInputError(f"json_schema cannot be compiled: not JSON ({e})") from None
        if isinstance(stop, str):
            stop = [stop]
        body: Dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": r, "content": c} for r, c in self.messages(prompt)],
            "max_tokens": int(max_new_tokens), "temperature": float(temperature), "top_p": float(top_p),
            "seed": int(seed),
        }
        if stop:
            body["stop"] = list(stop)
        # vLLM-style extensions: only sent when used, other servers may refuse them
        if top_k:
            body["top_k"] = int(top_k)
        if repetition_penalty != 1.0:
            body["repetition_penalty"] = float(repetition_penalty)
        if ignore_eos:
            body["ignore_eos"] = True
        # structured output as OpenAI's response_format (the server decodes under a token mask)
        if json_object:
            body["response_format"] = {"type": "json_object"}
        elif schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": schema_obj, "strict": True}}
        return body

    # -- generation ---------------------------------------------------------------------
    def _one(self, body: Dict[str, Any]) -> GenerationResult:
        t0 = time.monotonic()
        out = self._call("POST", "/v1/chat/completions", body)
        try:
            ch = out["choices"][0]
            text = ch["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise RemoteError(f"{self.base_url}: a chat completion without choices[0].message.content",
                              url=self.base_url) from None
        u = out.get("usage") or {}
        ext = out.get("loglm") if isinstance(out.get("loglm"), dict) else None
        return GenerationResult(
            text=str(text), finish_reason=_finish_reason(ch, ext),
            prompt_tokens=int(u.get("prompt_tokens", 0)), completion_tokens=int(u.get("completion_tokens", 0)),
            prefill_seconds=float((ext or {}).get("prefill_seconds", 0.0)),
            decode_seconds=float((ext or {}).get("decode_seconds", time.monotonic() - t0)))

    def _map(self, fn: Any, items: Sequence[Any]) -> List[Any]:
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)),
                                thread_name_prefix="loglm-remote") as ex:
            return list(ex.map(fn, items))

    def generate(self, prompts: Union[Prompt, Sequence[Prompt]], *, max_new_tokens: int = 256,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                 seed: int = 0, stop: Optional[Sequence[str]] = None, max_batch: int = 8, raw: bool = False,
                 return_stats: bool = False, ignore_eos: bool = False, json_object: bool = False,
                 json_schema: Optional[Dict[str, Any]] = None) -> Any:
        """Generate completions on the server (arguments as :meth:`loglm.LogLM.generate`;
        ``max_batch`` is the server's business and ignored). A list of prompts is sent as
        up to ``concurrency`` requests at once. ``token_ids`` of the results are empty.
        ``json_object`` / ``json_schema`` go as ``response_format``: a ``loglm serve`` (or
        another server that supports it) constrains its decoding; a schema the server
        cannot compile is a :class:`RemoteError` (HTTP 400)."""
        single = isinstance(prompts, (str, bytes)) or is_chat(prompts)
        items: List[Any] = [prompts] if single else list(prompts)
        if not items:
            raise InvalidInputError("empty batch: give at least one prompt")
        if max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        bodies = [self._chat_body(p, raw, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed,
                                  stop, ignore_eos, json_object, json_schema) for p in items]
        t0 = time.monotonic()
        results = self._map(self._one, bodies)
        res: Any = results[0] if single else results
        if return_stats:
            wall = time.monotonic() - t0
            stats = BatchStats(prefill_tokens=sum(r.prompt_tokens for r in results),
                               prefill_seconds=sum(r.prefill_seconds for r in results),
                               decode_tokens=sum(r.completion_tokens for r in results),
                               decode_seconds=wall, decode_steps=0)
            return res, stats
        return res

    def stream(self, prompt: Prompt, *, max_new_tokens: int = 256, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int = 0,
               stop: Optional[Sequence[str]] = None, raw: bool = False, json_object: bool = False,
               json_schema: Optional[Dict[str, Any]] = None) -> RemoteTextStream:
        """Generate one completion as an iterator of text pieces (server-sent events)."""
        if max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        body = self._chat_body(prompt, raw, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed,
                               stop, False, json_object, json_schema)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        t0 = time.monotonic()
        resp = self._open("POST", "/v1/chat/completions", body)
        return RemoteTextStream(resp, self.base_url + "/v1/chat/completions", t0)

    def score_choices(self, prompt: Prompt, choices: Sequence[str], *, raw: bool = False) -> ChoiceScores:
        """Log-probability of each choice as the answer to ``prompt``: exact with ``loglm
        serve``, a first-token approximation elsewhere (see the module doc)."""
        if isinstance(choices, (str, bytes)) or len(choices) == 0:
            raise InvalidInputError("choices must be a non-empty list of strings")
        choices = [check_text(c, "a choice") for c in choices]
        if raw:
            raise InvalidInputError("raw=True prompts are not available with a remote model")
        msgs = [{"role": r, "content": c} for r, c in self.messages(prompt)]
        if self.is_loglm:
            out = self._call("POST", "/v1/loglm/score_choices",
                             {"model": self.model, "messages": msgs, "choices": choices})
            lps = [float(x) for x in out["logprobs"]]
            per = [[float(t) for t in x] for x in out["token_logprobs"]]
        else:
            out = self._call("POST", "/v1/chat/completions",
                             {"model": self.model, "messages": msgs, "max_tokens": 1, "temperature": 0.0,
                              "logprobs": True, "top_logprobs": _TOP_LOGPROBS})
            try:
                content = out["choices"][0]["logprobs"]["content"]
                top = content[0]["top_logprobs"] if content else []
            except (KeyError, IndexError, TypeError):
                raise RemoteError(f"{self.base_url} returned no top_logprobs; it cannot score choices",
                                  url=self.base_url) from None
            lps = approximate_choice_logprobs(top, choices)
            per = [[x] for x in lps]
        return ChoiceScores(choices=list(choices), logprobs=lps, token_logprobs=per)

    # -- task helpers: fan the per-line work out over the pool ----------------------------
    def _score_unique(self, lines: Sequence[str], progress: Optional[bool], evidence: bool = True) -> Dict[str, float]:
        uniq = list(dict.fromkeys(lines))
        bar = progress_bar(progress, len(uniq), "scoring", "logs", auto_over=200)  # as the local helpers' bar

        def one(x: str) -> float:
            s = self.anomaly_score(x, evidence=evidence)
            if bar is not None:
                bar.update(1)
            return s

        try:
            return dict(zip(uniq, self._map(one, uniq)))
        finally:
            if bar is not None:
                bar.close()
