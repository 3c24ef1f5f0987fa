"""``loglm serve``: an OpenAI-compatible HTTP server over a local :class:`loglm.LogLM`.

An ASGI app (Starlette) run by uvicorn, as vLLM's and llama-cpp-python's servers are;
both come with the optional extra: ``pip install 'loglm[serve]'``.

Endpoints (JSON in and out; errors are ``{"error": {"message", "type", "code", "param"}}``):

- ``GET /health`` -- ``{"status": "ok", ...}`` (no key needed; 503 while draining);
- ``GET /v1/models``, ``GET /v1/models/{id}`` -- the one served model, with
  ``max_model_len`` (its context length) as vLLM reports it;
- ``POST /v1/chat/completions`` -- ``messages``, ``max_tokens`` /
  ``max_completion_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``, ``stream``
  (server-sent events ending with ``data: [DONE]``; ``stream_options.include_usage``),
  ``logprobs`` / ``top_logprobs``, ``response_format`` ``{"type": "json_object"}`` (JSON
  mode by a token mask in the sampler) or ``{"type": "json_schema", "json_schema":
  {"name", "schema", "strict"}}`` (structured output: the schema, a subset of JSON Schema,
  compiled to the same kind of mask; a schema outside the subset gets 400), ``n`` = 1
  only; ``top_k``, ``repetition_penalty`` and ``ignore_eos`` as vLLM's extensions. A loglm
  field ``"loglm"`` in the response carries the engine's finish reason and timings;
- ``POST /v1/completions`` -- a raw ``prompt`` (a string, a list of strings, or token
  ids), the same settings, ``logprobs`` (0-20) in the legacy format, ``stream``;
- ``POST /v1/embeddings`` -- ``input`` (a string or a list) embedded by the MiniLM
  sentence encoder (:mod:`loglm.embed`, loaded on first use);
- ``GET /metrics`` -- Prometheus text: requests, tokens, queue depth, batch size,
  time-to-first-token and latency histograms;
- ``GET /openapi.json`` -- an OpenAPI 3 description of these routes;
- loglm extensions: ``POST /v1/loglm/score_choices`` (``messages`` or ``prompt`` +
  ``choices`` -> the log-probability of each choice, what
  :meth:`loglm.LogLM.score_choices` returns), ``POST /v1/loglm/tokenize``
  (``text`` -> ``tokens``) and ``POST /v1/loglm/detokenize`` (``tokens`` -> ``text``).

Each generation request is submitted to the model's engine loop and joins the running
batch at its next decode step (up to ``max_batch`` sequences at once); its tokens are
streamed as they are decoded. A client that goes away (streaming or not) cancels its
sequence. Choice scoring runs in the same loop, between decode steps.

The server binds loopback by default. With an API key (``api_key`` or the
``LOGLM_API_KEY`` environment variable) every ``/v1`` request and ``/metrics`` need
``Authorization: Bearer <key>`` (compared in constant time). Bodies over
``max_request_bytes`` get 413; ``max_tokens`` over the ``max_tokens`` cap, or a prompt
plus ``max_tokens`` over the context, get 400; every malformed request is a 4xx. Message
contents are data: the chat template tokenizes control-token look-alikes in them as
plain text. Shutting down (Ctrl-C, :meth:`LoglmServer.shutdown`) first drains: new
requests and ``/health`` get 503 while the running ones finish (up to ``drain_s``).
"""
from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import socket
import sys
import threading
import time
import uuid
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence, Tuple

from loglm import _args, _loglm
from loglm.errors import ContextLengthError, InvalidInputError, LoglmError, MissingDependencyError

__all__ = ["LoglmServer", "serve"]

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_CTRL = re.compile(r"[\x00-\x1f\x7f]")
_INSTALL_HINT = "loglm serve needs the 'serve' extra: pip install 'loglm[serve]' (starlette and uvicorn)"
#: JSON integers a request may carry (seeds included): anything wider is a 400
_INT_LIMIT = 1 << 64
#: seconds between checks of a waiting request's client connection
_POLL_S = 0.05
#: bodies up to this size are read and dropped before an early error answer (413, 401, 503)
_DRAIN_LIMIT = 64 << 20


class _HTTPError(LoglmError):
    """An error answered to the client as ``{"error": ...}`` with ``status`` (caught where
    the request is answered; it never reaches a caller of loglm)."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: Optional[str] = None, param: Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param

    def body(self) -> Dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}


def _bad(message: str, param: Optional[str] = None, code: Optional[str] = None) -> _HTTPError:
    return _HTTPError(400, message, "invalid_request_error", code or "invalid_value", param)


def _shutting_down() -> _HTTPError:
    return _HTTPError(503, "the server is shutting down", "server_error", "shutting_down")


# ---------------------------------------------------------------------------------------
# request parsing


def _int(body: Dict[str, Any], key: str, default: Optional[int], lo: int = -_INT_LIMIT,
         hi: int = _INT_LIMIT) -> Optional[int]:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"'{key}' must be an integer, got {json.dumps(v)[:40]}", key)
    if not lo <= v <= hi:
        raise _bad(f"'{key}' must be in [{lo}, {hi}], got {str(v)[:40]}", key)
    return v


def _float(body: Dict[str, Any], key: str, default: float) -> float:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(f"'{key}' must be a number, got {json.dumps(v)[:40]}", key)
    try:
        f = float(v)
    except OverflowError:
        raise _bad(f"'{key}' is out of range", key) from None
    if f != f or f in (float("inf"), float("-inf")):
        raise _bad(f"'{key}' must be a finite number", key)
    return f


def _messages(body: Dict[str, Any]) -> List[Tuple[str, str]]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise _bad("'messages' must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _bad(f"messages[{i}] must be an object with a string 'role'", "messages")
        role, content = m["role"], m.get("content")
        if role not in ("system", "developer", "user", "assistant"):
            raise _bad(f"messages[{i}]: role {role[:40]!r} is not supported (system, user, assistant)", "messages")
        if isinstance(content, list):  # content parts: text only
            parts = []
            for p in content:
                if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                    raise _bad(f"messages[{i}]: only text content parts are supported", "messages")
                parts.append(p["text"])
            content = "".join(parts)
        if not isinstance(content, str):
            raise _bad(f"messages[{i}].content must be a string or a list of text parts", "messages")
        out.append(("system" if role == "developer" else role, content))
    return out


def _stop(body: Dict[str, Any]) -> List[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 16:
        raise _bad("'stop' must be a non-empty string or a list of at most 16 non-empty strings", "stop")
    return stop


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _cdict(r: Any) -> Dict[str, Any]:
    """A :class:`loglm.model.GenerationResult` as the dict the answers are built from."""
    return {"text": r.text, "finish_reason": r.finish_reason, "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens, "prefill_seconds": r.prefill_seconds,
            "decode_seconds": r.decode_seconds, "logprobs": r.logprobs}


def _usage(c: Dict[str, Any]) -> Dict[str, int]:
    return {"prompt_tokens": c["prompt_tokens"], "completion_tokens": c["completion_tokens"],
            "total_tokens": c["prompt_tokens"] + c["completion_tokens"]}


def _loglm_ext(c: Dict[str, Any]) -> Dict[str, Any]:
    return {"finish_reason": c["finish_reason"], "prefill_seconds": c["prefill_seconds"],
            "decode_seconds": c["decode_seconds"]}


# ---------------------------------------------------------------------------------------
# metrics (Prometheus text format, no client library needed)


class _Histogram:
    def __init__(self, name: str, help_: str, buckets: Sequence[float]) -> None:
        self.name, self.help, self.buckets = name, help_, list(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, v: float) -> None:
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1
        self.total += 1
        self.sum += v

    def text(self) -> List[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for b, c in zip(self.buckets, self.counts):
            out.append(f'{self.name}_bucket{{le="{b:g}"}} {c}')
        out += [f'{self.name}_bucket{{le="+Inf"}} {self.total}', f"{self.name}_sum {self.sum:.6f}",
                f"{self.name}_count {self.total}"]
        return out


class _Metrics:
    """Counters and histograms of the server (all updated on the event loop thread)."""

    def __init__(self) -> None:
        self.requests: Dict[Tuple[str, int], int] = {}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cancelled = 0
        self.in_flight = 0
        lat = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
        self.ttft = _Histogram("loglm_time_to_first_token_seconds", "Seconds from request to first token.", lat)
        self.latency = _Histogram("loglm_request_latency_seconds", "Seconds from request to last token.", lat)

    def count(self, route: str, status: int) -> None:
        self.requests[(route, status)] = self.requests.get((route, status), 0) + 1

    def text(self, engine: Dict[str, int]) -> str:
        out = ["# HELP loglm_requests_total HTTP requests answered, by route and status.",
               "# TYPE loglm_requests_total counter"]
        for (route, status), n in sorted(self.requests.items()):
            out.append(f'loglm_requests_total{{route="{route}",status="{status}"}} {n}')
        simple = [
            ("loglm_prompt_tokens_total", "counter", "Prompt tokens of finished generations.", self.prompt_tokens),
            ("loglm_completion_tokens_total", "counter", "Generated tokens of finished generations.",
             self.completion_tokens),
            ("loglm_cancelled_requests_total", "counter", "Generations cancelled by a vanished client.",
             self.cancelled),
            ("loglm_requests_in_flight", "gauge", "HTTP requests being answered.", self.in_flight),
            ("loglm_batch_size", "gauge", "Sequences in the engine's running batch.", engine.get("running", 0)),
            ("loglm_queue_depth", "gauge", "Sequences and scoring requests waiting for the engine.",
             engine.get("waiting", 0)),
            ("loglm_engine_decode_steps_total", "counter", "Batched decode steps of the engine loop.",
             engine.get("decode_steps", 0)),
            ("loglm_engine_decode_tokens_total", "counter", "Tokens decoded by the engine loop.",
             engine.get("decode_tokens", 0)),
        ]
        for name, kind, help_, v in simple:
            out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {v}"]
        out += self.ttft.text() + self.latency.text()
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# the server


class LoglmServer:
    """An OpenAI-compatible server over ``model`` (a :class:`loglm.LogLM`).

    ``port=0`` picks a free port (see :attr:`port` / :attr:`url`). Use :meth:`start` to
    serve from a background thread (and :meth:`shutdown`, or a ``with`` block), or
    :meth:`serve_forever` in the calling thread. :attr:`app` is the ASGI application
    (to run it under another ASGI server).
    """

    def __init__(self, model: Any, *, host: str = "127.0.0.1", port: int = 8000,
                 model_name: Optional[str] = None, api_key: Optional[str] = None,
                 max_request_bytes: int = 1 << 20, max_tokens: int = 2048, max_batch: int = 16,
                 log_requests: bool = False, backlog: int = 2048, drain_s: float = 60.0) -> None:
        try:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            raise MissingDependencyError(_INSTALL_HINT) from None
        if max_request_bytes < 1024:
            raise InvalidInputError("max_request_bytes must be at least 1024")
        if max_tokens < 1 or max_batch < 1 or backlog < 1 or drain_s < 0:
            raise InvalidInputError("max_tokens, max_batch and backlog must be >= 1, drain_s >= 0")
        if api_key is None:
            api_key = os.environ.get("LOGLM_API_KEY") or None
        self.model = model
        self.model_name = model_name or os.path.splitext(os.path.basename(model.info["path"]))[0]
        self.api_key = api_key
        self.max_request_bytes = int(max_request_bytes)
        self.max_tokens = int(max_tokens)
        self.max_batch = int(max_batch)
        self.log_requests = log_requests
        self.drain_s = float(drain_s)
        self.created = int(time.time())
        self.closing = False
        self.metrics = _Metrics()
        self._embedder: Any = None
        self._embed_lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(backlog)
        except OSError as e:
            self.sock.close()
            raise InvalidInputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.app = _build_app(self)
        self._server = _make_uvicorn(self, backlog)
        if host not in _LOOPBACK and not api_key:
            print(f"loglm serve: warning: listening on {host} without an API key; anyone who can reach "
                  "this port can use the model (set --api-key or LOGLM_API_KEY)", file=sys.stderr)

    # -- lifecycle ---------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = str(self.sock.getsockname()[0])
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def start(self) -> "LoglmServer":
        """Serve from a background thread; returns self once the server answers."""
        self._thread = threading.Thread(target=self._run, name="loglm-serve", daemon=True)
        self._thread.start()
        t0 = time.monotonic()
        while not self._server.started and self._thread.is_alive() and time.monotonic() - t0 < 30:
            time.sleep(0.01)
        return self

    def _run(self) -> None:
        self._server.run(sockets=[self.sock])

    def serve_forever(self) -> None:
        """Serve in this thread until Ctrl-C / SIGTERM (which drain first) or :meth:`shutdown`."""
        try:
            self._run()
        except KeyboardInterrupt:
            pass
        finally:
            self._close()

    def drain(self, timeout: Optional[float] = None) -> None:
        """Refuse new requests (503, ``/health`` too) and wait up to ``timeout`` seconds
        (default ``drain_s``) for the running ones to finish."""
        self.closing = True
        deadline = time.monotonic() + (self.drain_s if timeout is None else timeout)
        while time.monotonic() < deadline:
            e = self.model.engine_stats()
            if self.metrics.in_flight <= 0 and e["running"] == 0 and e["waiting"] == 0:
                break
            time.sleep(0.02)

    def shutdown(self) -> None:
        """Drain (see :meth:`drain`), then stop the server and close the socket."""
        self.drain()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._close()

    def _close(self) -> None:
        self.closing = True
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "LoglmServer":
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- facts ---------------------------------------------------------------------
    def model_card(self) -> Dict[str, Any]:
        info = self.model.info
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "loglm",
                "max_model_len": int(info["context_length"]),
                "loglm": {"architecture": info["architecture"], "context_length": int(info["context_length"]),
                          "max_tokens": self.max_tokens, "threads": info["threads"]}}

    def check_model(self, body: Dict[str, Any]) -> None:
        name = body.get("model")
        if name is not None and name != self.model_name:
            raise _HTTPError(404, f"model {str(name)[:200]!r} is not served here; this server has "
                                  f"{self.model_name!r} (GET /v1/models)", "invalid_request_error",
                             "model_not_found", "model")

    # -- request preparation -----------------------------------------------------------
    def sampling(self, body: Dict[str, Any], n_prompt: int, param: str) -> Dict[str, Any]:
        """Engine sampling settings of a completion request (400 when unusable)."""
        n = _int(body, "n", 1)
        if n != 1:
            raise _bad("only n=1 is supported", "n")
        for key in ("frequency_penalty", "presence_penalty"):
            if _float(body, key, 0.0) != 0.0:
                raise _bad(f"'{key}' is not supported (use 'repetition_penalty')", key, "unsupported_parameter")
        if body.get("tools") or body.get("functions"):
            raise _bad("tools are not supported", "tools", "unsupported_parameter")
        json_object, json_schema = self.response_format(body.get("response_format"))
        ctx = self.model.context_length
        room = ctx - n_prompt
        if room < 1:
            raise _bad(f"the prompt has {n_prompt} tokens; the context holds {ctx}", param,
                       "context_length_exceeded")
        mt = _int(body, "max_completion_tokens", None)
        if mt is None:
            mt = _int(body, "max_tokens", None)
        if mt is None:
            mt = min(self.max_tokens, room)
        if mt < 1:
            raise _bad("'max_tokens' must be at least 1", "max_tokens")
        if mt > self.max_tokens:
            raise _bad(f"'max_tokens' is {mt}; this server allows at most {self.max_tokens}", "max_tokens",
                       "max_tokens_exceeded")
        if n_prompt + mt > ctx:
            raise _bad(f"the prompt ({n_prompt} tokens) plus max_tokens ({mt}) exceeds the context "
                       f"length ({ctx})", "max_tokens", "context_length_exceeded")
        temperature = _float(body, "temperature", 1.0)
        top_p = _float(body, "top_p", 1.0)
        if not 0.0 <= temperature <= 2.0:
            raise _bad(f"'temperature' must be in [0, 2], got {temperature}", "temperature")
        if not 0.0 < top_p <= 1.0:
            raise _bad(f"'top_p' must be in (0, 1], got {top_p}", "top_p")
        seed = _int(body, "seed", None)
        if seed is None:
            seed = secrets.randbits(63) if temperature > 0 else 0
        top_k = _int(body, "top_k", 0, lo=-1, hi=1 << 31) or 0
        if top_k < 0:
            top_k = 0  # vLLM: -1 means off
        rp = _float(body, "repetition_penalty", 1.0)
        if not 0 < rp <= 100:
            raise _bad("'repetition_penalty' must be in (0, 100]", "repetition_penalty")
        return {"max_new_tokens": mt, "temperature": temperature, "top_p": top_p, "top_k": top_k,
                "seed": seed % (1 << 64), "repetition_penalty": rp, "stop": _stop(body),
                "ignore_eos": bool(body.get("ignore_eos", False)), "json_object": json_object,
                "json_schema": json_schema}

    @staticmethod
    def response_format(rf: Any) -> Tuple[bool, Optional[str]]:
        """``(json_object, json_schema)`` of a ``response_format``: JSON mode, or a
        schema (JSON text, checked to compile) for structured output; 400 when unusable."""
        if rf is None:
            return False, None
        if not (isinstance(rf, dict) and rf.get("type") in ("text", "json_object", "json_schema")):
            raise _bad("response_format must be {'type': 'text'}, {'type': 'json_object'} or {'type': "
                       "'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}", "response_format",
                       "unsupported_parameter")
        if rf["type"] != "json_schema":
            return rf["type"] == "json_object", None
        js = rf.get("json_schema")
        if not isinstance(js, dict) or not isinstance(js.get("schema"), dict):
            raise _bad("response_format.json_schema must be an object with a 'schema' object (a JSON Schema)",
                       "response_format")
        if not isinstance(js.get("name", ""), str) or not isinstance(js.get("strict", False), (bool, type(None))):
            raise _bad("response_format.json_schema: 'name' must be a string and 'strict' a boolean",
                       "response_format")
        try:
            text = str(_args.json_schema(js["schema"]))
            _loglm.check_json_schema(text)
        except LoglmError as e:
            raise _bad(f"response_format.json_schema.schema is a schema that cannot be compiled: {e}",
                       "response_format", "invalid_json_schema") from None
        return False, text

    def chat_logprobs(self, body: Dict[str, Any]) -> Optional[int]:
        lp = body.get("logprobs")
        if lp is not None and not isinstance(lp, bool):
            raise _bad("'logprobs' must be a boolean", "logprobs")
        top = _int(body, "top_logprobs", None, lo=0, hi=20)
        if top is not None and not lp:
            raise _bad("'top_logprobs' needs 'logprobs': true", "top_logprobs")
        return (top or 0) if lp else None

    def completion_prompts(self, body: Dict[str, Any]) -> List[List[int]]:
        p = body.get("prompt")
        if isinstance(p, str):
            items: List[Any] = [p]
        elif isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
            items = [p]
        elif isinstance(p, list) and p and len(p) <= 64 and all(
                isinstance(x, str) or (isinstance(x, list) and x and all(
                    isinstance(t, int) and not isinstance(t, bool) for t in x)) for x in p):
            items = p
        else:
            raise _bad("'prompt' must be a string, a list of up to 64 strings, or token ids", "prompt")
        vocab = int(self.model.info["vocab_size"])
        out = []
        for x in items:
            if isinstance(x, str):
                try:
                    ids = self.model.encode_prompt(x, raw=True) if x else []
                except LoglmError as e:
                    raise _bad(str(e), "prompt") from None
            else:
                if not all(0 <= t < vocab for t in x):
                    raise _bad(f"token ids must be in [0, {vocab})", "prompt")
                ids = list(x)
            if not ids:
                raise _bad("the prompt encodes to no tokens", "prompt")
            out.append(ids)
        return out

    def embedder(self) -> Any:
        with self._embed_lock:
            if self._embedder is None:
                from loglm.embed import SentenceEncoder

                try:
                    self._embedder = SentenceEncoder.load()
                except LoglmError as e:
                    raise _HTTPError(501, f"embeddings are not available: {e}", "invalid_request_error",
                                     "embeddings_unavailable") from None
            return self._embedder


def _engine_error(e: BaseException) -> _HTTPError:
    if isinstance(e, _HTTPError):
        return e
    if isinstance(e, ContextLengthError):
        return _bad(str(e), "max_tokens", "context_length_exceeded")
    if isinstance(e, (InvalidInputError, ValueError, OverflowError, TypeError)):
        return _bad(str(e))
    return _HTTPError(500, f"generation failed: {type(e).__name__}: {e}", "server_error", "internal_error")


def _make_uvicorn(srv: LoglmServer, backlog: int) -> Any:
    import uvicorn

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # First signal: drain (503 for new requests and /health) in the background, then exit.
            if srv.closing or self.should_exit:
                super().handle_exit(sig, frame)
                return
            srv.closing = True

            def drain_then_exit() -> None:
                srv.drain()
                self.should_exit = True

            threading.Thread(target=drain_then_exit, name="loglm-serve-drain", daemon=True).start()

    config = uvicorn.Config(srv.app, log_level="warning", access_log=False, lifespan="off", backlog=backlog,
                            timeout_keep_alive=30, h11_max_incomplete_event_size=64 * 1024,
                            timeout_graceful_shutdown=5)
    return _Server(config)


def _build_app(srv: LoglmServer) -> Any:
    """The Starlette application of ``srv``."""
    import anyio
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    limiter = anyio.CapacityLimiter(512)
    model = srv.model
    metrics = srv.metrics

    def error_response(e: _HTTPError) -> Response:
        headers = {"Retry-After": "1"} if e.status == 503 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    def authorized(request: Request) -> bool:
        if not srv.api_key:
            return True
        got = request.headers.get("authorization", "")
        token = got[7:].strip() if got[:7].lower() == "bearer " else ""
        return hmac.compare_digest(token.encode("utf-8", "replace"), srv.api_key.encode("utf-8"))

    async def drain_body(request: Request) -> None:
        """Read and drop a body that will not be used (up to a bound), so that the client
        sees the error answer instead of a reset connection."""
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > _DRAIN_LIMIT:
                    return
        except Exception:  # the client went away, or the body was read already
            return

    async def read_json(request: Request) -> Dict[str, Any]:
        length = request.headers.get("content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise _bad("bad Content-Length header") from None
            if n > srv.max_request_bytes:
                await drain_body(request)
                raise _HTTPError(413, f"request body of {n} bytes exceeds this server's limit of "
                                      f"{srv.max_request_bytes} bytes", "invalid_request_error", "request_too_large")
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > srv.max_request_bytes:
                await drain_body(request)
                raise _HTTPError(413, f"request body exceeds this server's limit of {srv.max_request_bytes} "
                                      "bytes", "invalid_request_error", "request_too_large")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise _bad(f"the body is not valid JSON: {e}", code="invalid_json") from None
        except RecursionError:
            raise _bad("the body is nested too deeply", code="invalid_json") from None
        if not isinstance(body, dict):
            raise _bad("the body must be a JSON object", code="invalid_json")
        return body

    async def wait_result(request: Request, stream: Any) -> Tuple[List[str], Dict[str, Any], float]:
        """Follow ``stream`` (a :class:`loglm.model.TextStream`) to its end; cancel it when
        the client goes away. Returns the pieces, the completion dict and the time of the
        first piece."""
        pieces: List[str] = []
        first = 0.0
        try:
            while True:
                try:
                    got = await anyio.to_thread.run_sync(stream.poll, _POLL_S, limiter=limiter)
                except Exception as e:
                    raise _engine_error(e) from None
                if got and not first:
                    first = time.monotonic()
                pieces += got
                if stream.result is not None:
                    return pieces, _cdict(stream.result), first or time.monotonic()
                if stream.finished:
                    raise _HTTPError(500, "the generation ended without a result", "server_error", "internal_error")
                if await request.is_disconnected():
                    metrics.cancelled += 1
                    raise _ClientGone()
        finally:
            stream.close()

    def submit(ids: List[int], params: Dict[str, Any], logprobs: Optional[int]) -> Any:
        try:
            return model.stream_tokens(ids, logprobs=logprobs, **params, max_batch=srv.max_batch)
        except Exception as e:
            raise _engine_error(e) from None

    def token_text(i: int) -> str:
        return str(model.detokenize([i], skip_special=False))

    def chat_logprobs_body(c: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        if c.get("logprobs") is None:
            return None
        content = []
        for i, lp, top in c["logprobs"]:
            t = token_text(i)
            content.append({"token": t, "logprob": lp, "bytes": list(t.encode("utf-8")),
                            "top_logprobs": [{"token": token_text(a), "logprob": b,
                                              "bytes": list(token_text(a).encode("utf-8"))} for a, b in top]})
        return {"content": content}

    def legacy_logprobs(c: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        if c.get("logprobs") is None:
            return None
        tokens, lps, tops, offsets = [], [], [], []
        pos = 0
        for i, lp, top in c["logprobs"]:
            t = token_text(i)
            tokens.append(t)
            lps.append(lp)
            tops.append({token_text(a): b for a, b in top})
            offsets.append(pos)
            pos += len(t)
        return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}

    def finished(c: Dict[str, Any], t0: float, first: float) -> None:
        metrics.prompt_tokens += int(c["prompt_tokens"])
        metrics.completion_tokens += int(c["completion_tokens"])
        metrics.ttft.observe(first - t0)
        metrics.latency.observe(time.monotonic() - t0)

    def sse(obj: Any) -> bytes:
        return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"

    async def event_stream(request: Request, stream: Any, t0: float, make_chunk: Any, final_chunks: Any
                           ) -> AsyncIterator[bytes]:
        first = 0.0
        try:
            head = make_chunk(None)
            if head is not None:
                yield head
            while True:
                got = await anyio.to_thread.run_sync(stream.poll, _POLL_S, limiter=limiter)
                if got and not first:
                    first = time.monotonic()
                for piece in got:
                    if piece:
                        yield make_chunk(piece)
                if stream.result is not None:
                    done = _cdict(stream.result)
                    finished(done, t0, first or time.monotonic())
                    for b in final_chunks(done):
                        yield b
                    yield b"data: [DONE]\n\n"
                    return
                if stream.finished:
                    return
                if await request.is_disconnected():
                    metrics.cancelled += 1
                    return
        except Exception as e:  # an engine error after the headers went out: report it in the stream
            yield sse(_engine_error(e).body())
            yield b"data: [DONE]\n\n"
        finally:
            stream.close()

    # -- endpoints -------------------------------------------------------------------
    async def health(request: Request) -> Response:
        if srv.closing:
            return JSONResponse({"status": "shutting_down"}, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"status": "ok", "server": "loglm", "model": srv.model_name,
                             "engine": model.engine_stats()})

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [srv.model_card()]})

    async def model_one(request: Request) -> Response:
        srv.check_model({"model": request.path_params["model_id"]})
        return JSONResponse(srv.model_card())

    async def chat(request: Request) -> Response:
        body = await read_json(request)
        srv.check_model(body)
        msgs = _messages(body)
        logprobs = srv.chat_logprobs(body)
        try:
            ids = await anyio.to_thread.run_sync(model.encode_prompt, msgs, limiter=limiter)
        except LoglmError as e:
            raise _bad(str(e), "messages") from None
        params = srv.sampling(body, len(ids), "messages")
        want_stream = body.get("stream", False)
        if not isinstance(want_stream, bool):
            raise _bad("'stream' must be a boolean", "stream")
        so = body.get("stream_options") or {}
        include_usage = bool(isinstance(so, dict) and so.get("include_usage"))
        rid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        t0 = time.monotonic()
        stream = submit(ids, params, logprobs)
        if not want_stream:
            pieces, c, first = await wait_result(request, stream)
            finished(c, t0, first)
            return JSONResponse({
                "id": rid, "object": "chat.completion", "created": created, "model": srv.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": c["text"]},
                             "logprobs": chat_logprobs_body(c), "finish_reason": _finish(c["finish_reason"])}],
                "usage": _usage(c), "loglm": _loglm_ext(c)})

        def chunk(piece: Optional[str]) -> bytes:
            delta = {"role": "assistant", "content": ""} if piece is None else {"content": piece}
            return sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": srv.model_name,
                        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]})

        def final(c: Dict[str, Any]) -> List[bytes]:
            out = [sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": srv.model_name,
                        "choices": [{"index": 0, "delta": {}, "logprobs": chat_logprobs_body(c),
                                     "finish_reason": _finish(c["finish_reason"])}], "loglm": _loglm_ext(c)})]
            if include_usage:
                out.append(sse({"id": rid, "object": "chat.completion.chunk", "created": created,
                                "model": srv.model_name, "choices": [], "usage": _usage(c)}))
            return out

        return StreamingResponse(event_stream(request, stream, t0, chunk, final), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def completions(request: Request) -> Response:
        body = await read_json(request)
        srv.check_model(body)
        if body.get("echo"):
            raise _bad("'echo' is not supported", "echo", "unsupported_parameter")
        if body.get("suffix"):
            raise _bad("'suffix' is not supported", "suffix", "unsupported_parameter")
        logprobs = _int(body, "logprobs", None, lo=0, hi=20)
        prompts = await anyio.to_thread.run_sync(srv.completion_prompts, body, limiter=limiter)
        params = [srv.sampling(body, len(p), "prompt") for p in prompts]
        want_stream = body.get("stream", False)
        if not isinstance(want_stream, bool):
            raise _bad("'stream' must be a boolean", "stream")
        rid = "cmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        t0 = time.monotonic()
        if want_stream:
            if len(prompts) != 1:
                raise _bad("streaming takes one prompt", "prompt")
            stream = submit(prompts[0], params[0], logprobs)
            so = body.get("stream_options") or {}
            include_usage = bool(isinstance(so, dict) and so.get("include_usage"))

            def chunk(piece: Optional[str]) -> Optional[bytes]:
                if piece is None:
                    return None
                return sse({"id": rid, "object": "text_completion", "created": created, "model": srv.model_name,
                            "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": None}]})

            def final(c: Dict[str, Any]) -> List[bytes]:
                out = [sse({"id": rid, "object": "text_completion", "created": created, "model": srv.model_name,
                            "choices": [{"index": 0, "text": "", "logprobs": legacy_logprobs(c),
                                         "finish_reason": _finish(c["finish_reason"])}]})]
                if include_usage:
                    out.append(sse({"id": rid, "object": "text_completion", "created": created,
                                    "model": srv.model_name, "choices": [], "usage": _usage(c)}))
                return out

            return StreamingResponse(event_stream(request, stream, t0, chunk, final),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        streams = [submit(p, kw, logprobs) for p, kw in zip(prompts, params)]
        try:
            results = []
            for s in streams:
                results.append(await wait_result(request, s))
        finally:
            for s in streams:
                s.close()
        choices = []
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for i, (_, c, first) in enumerate(results):
            finished(c, t0, first)
            choices.append({"index": i, "text": c["text"], "logprobs": legacy_logprobs(c),
                            "finish_reason": _finish(c["finish_reason"])})
            for k, v in _usage(c).items():
                usage[k] += v
        return JSONResponse({"id": rid, "object": "text_completion", "created": created, "model": srv.model_name,
                             "choices": choices, "usage": usage})

    async def embeddings(request: Request) -> Response:
        body = await read_json(request)
        inp = body.get("input")
        if isinstance(inp, str):
            texts = [inp]
        elif isinstance(inp, list) and inp and len(inp) <= 2048 and all(isinstance(x, str) for x in inp):
            texts = inp
        else:
            raise _bad("'input' must be a string or a list of up to 2048 strings", "input")
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise _bad("'encoding_format' must be 'float' or 'base64'", "encoding_format")
        enc = await anyio.to_thread.run_sync(srv.embedder, limiter=limiter)
        name = body.get("model")
        if name is not None and not isinstance(name, str):
            raise _bad("'model' must be a string", "model")
        try:
            vecs = await anyio.to_thread.run_sync(enc.encode, texts, limiter=limiter)
        except (LoglmError, ValueError, TypeError) as e:
            raise _bad(str(e), "input") from None
        data = []
        for i, v in enumerate(vecs):
            if fmt == "base64":
                import base64

                emb: Any = base64.b64encode(v.astype("<f4").tobytes()).decode("ascii")
            else:
                emb = [float(x) for x in v]
            data.append({"object": "embedding", "index": i, "embedding": emb})
        n_tokens = sum(enc.count_tokens(t) for t in texts) if hasattr(enc, "count_tokens") else 0
        return JSONResponse({"object": "list", "data": data, "model": name or "all-MiniLM-L6-v2",
                             "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})

    async def score_choices(request: Request) -> Response:
        body = await read_json(request)
        srv.check_model(body)
        choices = body.get("choices")
        if (not isinstance(choices, list) or not choices or len(choices) > 64
                or not all(isinstance(c, str) and c for c in choices)):
            raise _bad("'choices' must be a list of 1 to 64 non-empty strings", "choices")
        if "messages" in body:
            prompt: Any = _messages(body)
            raw = False
        elif isinstance(body.get("prompt"), str):
            prompt, raw = body["prompt"], bool(body.get("raw", False))
        else:
            raise _bad("give 'messages' (a chat) or 'prompt' (a string)", "messages")

        def run() -> Dict[str, Any]:
            try:
                ids = model.encode_prompt(prompt, raw=raw)
                longest = max(len(model.tokenize(c)) for c in choices)
            except LoglmError as e:
                raise _bad(str(e), "messages") from None
            if len(ids) + longest > model.context_length:
                raise _bad(f"the prompt ({len(ids)} tokens) plus the longest choice ({longest}) exceeds the "
                           f"context length ({model.context_length})", "messages", "context_length_exceeded")
            try:
                cs = model.score_choices(prompt, choices, raw=raw)
            except Exception as e:
                raise _engine_error(e) from None
            return {"object": "loglm.choice_scores", "model": srv.model_name, "choices": cs.choices,
                    "logprobs": cs.logprobs, "token_logprobs": cs.token_logprobs, "probs": cs.probs,
                    "usage": {"prompt_tokens": len(ids)}}

        return JSONResponse(await anyio.to_thread.run_sync(run, limiter=limiter))

    async def tokenize(request: Request) -> Response:
        body = await read_json(request)
        srv.check_model(body)
        text = body.get("text")
        if not isinstance(text, str):
            raise _bad("'text' must be a string", "text")
        try:
            ids = model.tokenize(text, parse_special=bool(body.get("parse_special", False)))
        except LoglmError as e:
            raise _bad(str(e), "text") from None
        return JSONResponse({"tokens": ids, "count": len(ids)})

    async def detokenize(request: Request) -> Response:
        body = await read_json(request)
        srv.check_model(body)
        toks = body.get("tokens")
        vocab = int(model.info["vocab_size"])
        if not isinstance(toks, list) or not all(isinstance(t, int) and not isinstance(t, bool)
                                                 and 0 <= t < vocab for t in toks):
            raise _bad(f"'tokens' must be a list of token ids in [0, {vocab})", "tokens")
        try:
            return JSONResponse({"text": model.detokenize(toks)})
        except LoglmError as e:
            raise _bad(str(e), "tokens") from None

    async def metrics_route(request: Request) -> Response:
        return PlainTextResponse(metrics.text(model.engine_stats()),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi(request: Request) -> Response:
        return JSONResponse(_openapi(srv))

    routes = [
        ("/health", health, ["GET"], False),
        ("/openapi.json", openapi, ["GET"], False),
        ("/metrics", metrics_route, ["GET"], True),
        ("/v1/models", models, ["GET"], True),
        ("/v1/models/{model_id:path}", model_one, ["GET"], True),
        ("/v1/chat/completions", chat, ["POST"], True),
        ("/v1/completions", completions, ["POST"], True),
        ("/v1/embeddings", embeddings, ["POST"], True),
        ("/v1/loglm/score_choices", score_choices, ["POST"], True),
        ("/v1/loglm/tokenize", tokenize, ["POST"], True),
        ("/v1/loglm/detokenize", detokenize, ["POST"], True),
    ]

    def guarded(fn: Any, path: str, needs_key: bool) -> Any:
        async def endpoint(request: Request) -> Response:
            metrics.in_flight += 1
            status = 500
            try:
                if srv.closing and path != "/health":
                    await drain_body(request)
                    raise _shutting_down()
                if needs_key and not authorized(request):
                    await drain_body(request)
                    raise _HTTPError(401, "invalid or missing API key (Authorization: Bearer <key>)",
                                     "invalid_request_error", "invalid_api_key")
                resp = await fn(request)
            except _HTTPError as e:
                resp = error_response(e)
            except _ClientGone:
                resp = Response(status_code=499)
            except Exception as e:  # a bug: answer 500 rather than drop the connection
                resp = error_response(_HTTPError(500, f"internal error: {type(e).__name__}: {e}", "server_error",
                                                 "internal_error"))
            finally:
                metrics.in_flight -= 1
            status = resp.status_code
            metrics.count(path, status)
            if srv.log_requests:
                client = request.client.host if request.client else "?"
                msg = _CTRL.sub("?", f"{request.method} {request.url.path}")[:300]
                print(f"{client} - {msg} {status}", file=sys.stderr)
            return resp

        return endpoint

    async def not_found(request: Request, exc: Exception) -> Response:
        path = _CTRL.sub("?", request.url.path)[:200]
        status = getattr(exc, "status_code", 404)
        if status == 405:
            e = _HTTPError(405, f"method {request.method} not allowed on {path}", "invalid_request_error",
                           "method_not_allowed")
        else:
            e = _HTTPError(404, f"no route {request.method} {path}", "invalid_request_error", "not_found")
        metrics.count("other", e.status)
        return error_response(e)

    app = Starlette(routes=[Route(p, guarded(fn, p, key), methods=m) for p, fn, m, key in routes],
                    exception_handlers={404: not_found, 405: not_found})
    return app


class _ClientGone(LoglmError):
    """The client closed its connection while its request ran (its sequence is cancelled)."""


def _openapi(srv: LoglmServer) -> Dict[str, Any]:
    """A compact OpenAPI 3.1 description of the routes."""
    err = {"description": "an OpenAI-style error", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}

    def op(summary: str, body: bool = True, stream: bool = False) -> Dict[str, Any]:
        o: Dict[str, Any] = {"summary": summary, "responses": {"200": {"description": "OK"}, "400": err, "401": err,
                                                              "503": err}}
        if body:
            o["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
            o["responses"]["413"] = err
        if stream:
            o["responses"]["200"]["content"] = {"application/json": {}, "text/event-stream": {}}
        return o

    return {
        "openapi": "3.1.0",
        "info": {"title": "loglm serve", "version": _version(),
                 "description": "OpenAI-compatible API over a local loglm model"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "message": {"type": "string"}, "type": {"type": "string"}, "code": {"type": ["string", "null"]},
                "param": {"type": ["string", "null"]}}}}}},
        },
        "security": [{"bearer": []}] if srv.api_key else [],
        "paths": {
            "/health": {"get": op("liveness; 503 while draining", body=False)},
            "/metrics": {"get": op("Prometheus metrics", body=False)},
            "/v1/models": {"get": op("the served model", body=False)},
            "/v1/models/{model_id}": {"get": op("one model", body=False)},
            "/v1/chat/completions": {"post": op("chat completion (stream with SSE; response_format json_object or "
                                                 "json_schema by constrained decoding)", stream=True)},
            "/v1/completions": {"post": op("text completion of a raw prompt", stream=True)},
            "/v1/embeddings": {"post": op("sentence embeddings (all-MiniLM-L6-v2)")},
            "/v1/loglm/score_choices": {"post": op("log-probability of each choice")},
            "/v1/loglm/tokenize": {"post": op("token ids of a text")},
            "/v1/loglm/detokenize": {"post": op("text of token ids")},
        },
    }


def _version() -> str:
    try:
        from loglm import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover
        return "0"


def serve(model: Any = None, *, host: str = "127.0.0.1", port: int = 8000, threads: Optional[int] = None,
          context_length: Optional[int] = None, **kwargs: Any) -> None:
    """Load ``model`` (a path or name, or a :class:`loglm.LogLM`) and serve it until Ctrl-C.

    ``kwargs`` are :class:`LoglmServer`'s options (``api_key``, ``max_request_bytes``,
    ``max_tokens``, ``max_batch``, ``model_name``, ``log_requests``, ``backlog``, ``drain_s``).
    """
    from loglm.model import LogLM

    m = model if isinstance(model, LogLM) else LogLM.load(model, threads=threads, context_length=context_length)
    srv = LoglmServer(m, host=host, port=port, **kwargs)
    print(f"loglm serve: {srv.model_name} on {srv.url} (OpenAI-compatible: {srv.url}/v1; "
          f"context {m.context_length}, max_tokens {srv.max_tokens}, "
          f"{'API key required' if srv.api_key else 'no API key'}); Ctrl-C stops", file=sys.stderr, flush=True)
    srv.serve_forever()
    print("loglm serve: stopped", file=sys.stderr)
