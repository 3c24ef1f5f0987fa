"""``loglm serve``: an OpenAI-compatible HTTP server over a local :class:`loglm.LogLM`.

Endpoints (JSON in and out; errors are ``{"error": {"message", "type", "code"}}``):

- ``GET /health`` -- ``{"status": "ok", ...}`` (no key needed; 503 while shutting down);
- ``GET /v1/models``, ``GET /v1/models/{id}`` -- the one served model, with
  ``max_model_len`` (its context length) as vLLM reports it;
- ``POST /v1/chat/completions`` -- ``messages``, ``max_tokens`` /
  ``max_completion_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``, ``stream``
  (server-sent events ending with ``data: [DONE]``; ``stream_options.include_usage``),
  ``n`` = 1 only; ``top_k``, ``repetition_penalty`` and ``ignore_eos`` as vLLM's extensions. A loglm
  field ``"loglm"`` in the response carries the engine's finish reason and timings;
- loglm extensions: ``POST /v1/loglm/score_choices`` (``messages`` or ``prompt`` +
  ``choices`` -> the log-probability of each choice, what
  :meth:`loglm.LogLM.score_choices` returns), ``POST /v1/loglm/tokenize``
  (``text`` -> ``tokens``) and ``POST /v1/loglm/detokenize`` (``tokens`` -> ``text``).

Concurrent generation requests are batched: a worker thread takes the first waiting
request, waits ``batch_window_ms`` for more (up to ``max_batch``), and runs them all in
one call of the engine's continuous-batching scheduler, each request with its own
sampling settings (``Engine.stream_batch``). Each request is answered as soon as its own
sequence finishes. Requests that arrive while a batch runs wait for the next one
(``parallel`` batches may run at once; on a small CPU one is fastest). Choice scoring
runs on the same worker, between batches.

The server binds loopback by default. With an API key (``api_key`` or the
``LOGLM_API_KEY`` environment variable) every ``/v1`` request needs
``Authorization: Bearer <key>`` (compared in constant time). Bodies over
``max_request_bytes`` get 413; ``max_tokens`` over the ``max_tokens`` cap, or a prompt
plus ``max_tokens`` over the context, get 400. Message contents are data: the chat
template tokenizes control-token look-alikes in them as plain text.
"""
from __future__ import annotations

import hmac
import json
import os
import queue
import re
import secrets
import select
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple

from loglm.errors import ContextLengthError, InvalidInputError, LoglmError

__all__ = ["LoglmServer", "serve"]

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
#: bodies up to this size are read and dropped before an early error answer (413, 401),
#: so that the client sees the answer instead of a reset connection
_DRAIN_LIMIT = 64 << 20
_CTRL = re.compile(r"[\x00-\x1f\x7f]")


class _HTTPError(Exception):
    """An error answered to the client as ``{"error": ...}`` with ``status``."""

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


# ---------------------------------------------------------------------------------------
# batching worker


@dataclass
class _Job:
    """One generation request waiting for, or running in, a batch."""

    ids: List[int]
    params: Dict[str, Any]
    events: "queue.Queue[Tuple[str, Any]]" = field(default_factory=queue.Queue)
    abandoned: bool = False


@dataclass
class _Call:
    """Other engine work (choice scoring) run by the worker between batches."""

    fn: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: Optional[BaseException] = None


class _ShuttingDown(Exception):
    pass


class _Batcher:
    """Collects concurrent requests into batched scheduler calls (see the module doc)."""

    def __init__(self, engine: Any, *, max_batch: int, window_s: float, parallel: int) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.window_s = window_s
        self.q: "queue.Queue[Any]" = queue.Queue()
        self.closed = False
        self.batches = 0
        self.batched_requests = 0
        self._stats_lock = threading.Lock()
        self.workers = [threading.Thread(target=self._run, name=f"loglm-serve-batcher-{i}", daemon=True)
                        for i in range(max(1, parallel))]
        for w in self.workers:
            w.start()

    def submit(self, ids: List[int], params: Dict[str, Any]) -> _Job:
        if self.closed:
            raise _HTTPError(503, "the server is shutting down", "server_error", "shutting_down")
        job = _Job(ids, params)
        self.q.put(job)
        return job

    def call(self, fn: Callable[[], Any]) -> Any:
        if self.closed:
            raise _HTTPError(503, "the server is shutting down", "server_error", "shutting_down")
        c = _Call(fn)
        self.q.put(c)
        c.done.wait()
        if c.error is not None:
            raise c.error
        return c.result

    def close(self, grace_s: float = 60.0) -> None:
        """Finish the batches already taken, then fail whatever still waits (503)."""
        self.closed = True
        for _ in self.workers:
            self.q.put(None)
        deadline = time.monotonic() + grace_s
        for w in self.workers:
            w.join(timeout=max(0.0, deadline - time.monotonic()))
        while True:
            try:
                item = self.q.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Job):
                item.events.put(("error", _ShuttingDown("the server is shutting down")))
            elif isinstance(item, _Call):
                item.error = _ShuttingDown("the server is shutting down")
                item.done.set()

    def _run(self) -> None:
        while True:
            first = self.q.get()
            if first is None:
                return
            if isinstance(first, _Call):
                self._do_call(first)
                continue
            jobs = [first]
            deferred: List[Any] = []
            deadline = time.monotonic() + self.window_s
            stop = False
            while len(jobs) < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    item = self.q.get(timeout=left) if left > 0 else self.q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                if isinstance(item, _Call):
                    deferred.append(item)
                else:
                    jobs.append(item)
            self._do_batch(jobs)
            for c in deferred:
                self._do_call(c)
            if stop:
                return

    def _do_call(self, c: _Call) -> None:
        try:
            c.result = c.fn()
        except BaseException as e:  # handed to the waiting request thread
            c.error = e
        finally:
            c.done.set()

    def _do_batch(self, jobs: List[_Job]) -> None:
        jobs = [j for j in jobs if not j.abandoned]
        if not jobs:
            return
        with self._stats_lock:
            self.batches += 1
            self.batched_requests += len(jobs)
        finished = [False] * len(jobs)
        try:
            bs = self.engine.submit([j.ids for j in jobs], [j.params for j in jobs],
                                          max_batch=self.max_batch)
            for index, piece, completion in bs:
                job = jobs[index]
                if completion is not None:
                    finished[index] = True
                    job.events.put(("done", completion))
                elif piece:
                    job.events.put(("piece", piece))
                if all(j.abandoned or f for j, f in zip(jobs, finished)):
                    bs.close()  # every client still waiting has gone away
                    break
        except BaseException as e:
            for j, f in zip(jobs, finished):
                if not f:
                    j.events.put(("error", e))


# ---------------------------------------------------------------------------------------
# request parsing


def _int(body: Dict[str, Any], key: str, default: Optional[int]) -> Optional[int]:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"'{key}' must be an integer, got {json.dumps(v)[:40]}", key)
    return v


def _float(body: Dict[str, Any], key: str, default: float) -> float:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        raise _bad(f"'{key}' must be a number, got {json.dumps(v)[:40]}", key)
    return float(v)


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
            raise _bad(f"messages[{i}]: role {role!r} is not supported (system, user, assistant)", "messages")
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


# ---------------------------------------------------------------------------------------
# the server


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: "LoglmServer"


class LoglmServer:
    """An OpenAI-compatible server over ``model`` (a :class:`loglm.LogLM`).

    ``port=0`` picks a free port (see :attr:`port` / :attr:`url`). Use :meth:`start` to
    serve from a background thread (and :meth:`shutdown`, or a ``with`` block), or
    :meth:`serve_forever` in the calling thread.
    """

    def __init__(self, model: Any, *, host: str = "127.0.0.1", port: int = 8000,
                 model_name: Optional[str] = None, api_key: Optional[str] = None,
                 max_request_bytes: int = 1 << 20, max_tokens: int = 2048, max_batch: int = 16,
                 batch_window_ms: float = 5.0, parallel: int = 1, log_requests: bool = False) -> None:
        if max_request_bytes < 1024:
            raise InvalidInputError("max_request_bytes must be at least 1024")
        if max_tokens < 1 or max_batch < 1 or parallel < 1 or batch_window_ms < 0:
            raise InvalidInputError("max_tokens, max_batch and parallel must be >= 1, batch_window_ms >= 0")
        if api_key is None:
            api_key = os.environ.get("LOGLM_API_KEY") or None
        self.model = model
        self.model_name = model_name or os.path.splitext(os.path.basename(model.info["path"]))[0]
        self.api_key = api_key
        self.max_request_bytes = int(max_request_bytes)
        self.max_tokens = int(max_tokens)
        self.log_requests = log_requests
        self.created = int(time.time())
        self.closing = False
        self._thread: Optional[threading.Thread] = None
        self.batcher = _Batcher(model._engine, max_batch=max_batch, window_s=batch_window_ms / 1000.0,
                                parallel=parallel)
        try:
            self.httpd = _HTTPServer((host, port), _Handler)
        except OSError as e:
            self.batcher.close()
            raise InvalidInputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        except BaseException:
            self.batcher.close()
            raise
        self.httpd.app = self
        if host not in _LOOPBACK and not api_key:
            print(f"loglm serve: warning: listening on {host} without an API key; anyone who can reach "
                  "this port can use the model (set --api-key or LOGLM_API_KEY)", file=sys.stderr)

    # -- lifecycle ---------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self.httpd.server_address[0])
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def start(self) -> "LoglmServer":
        """Serve from a background thread; returns self."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="loglm-serve", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`shutdown` (from another thread) or Ctrl-C."""
        try:
            self.httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._close()

    def shutdown(self) -> None:
        """Stop accepting requests (new ones get 503), finish the running batches, close."""
        self.closing = True
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._close()

    def _close(self) -> None:
        self.closing = True
        self.batcher.close()
        self.httpd.server_close()

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

    # -- endpoints -------------------------------------------------------------------
    def prepare_chat(self, body: Dict[str, Any]) -> Tuple[List[int], Dict[str, Any]]:
        """Token ids and engine sampling settings of a chat request (400 when unusable)."""
        self.check_model(body)
        msgs = _messages(body)
        n = _int(body, "n", 1)
        if n != 1:
            raise _bad("only n=1 is supported", "n")
        if body.get("logprobs") or body.get("top_logprobs"):
            raise _bad("logprobs are not supported; score answers with POST /v1/loglm/score_choices",
                       "logprobs", "unsupported_parameter")
        for key in ("frequency_penalty", "presence_penalty"):
            if _float(body, key, 0.0) != 0.0:
                raise _bad(f"'{key}' is not supported (use 'repetition_penalty')", key, "unsupported_parameter")
        if body.get("tools") or body.get("functions"):
            raise _bad("tools are not supported", "tools", "unsupported_parameter")
        rf = body.get("response_format")
        if rf is not None and not (isinstance(rf, dict) and rf.get("type") == "text"):
            raise _bad("only response_format {'type': 'text'} is supported", "response_format",
                       "unsupported_parameter")
        try:
            ids = self.model.encode_prompt(msgs)
        except LoglmError as e:
            raise _bad(str(e), "messages") from None
        ctx = self.model.context_length
        room = ctx - len(ids)
        if room < 1:
            raise _bad(f"the prompt has {len(ids)} tokens; the context holds {ctx}", "messages",
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
        if len(ids) + mt > ctx:
            raise _bad(f"the prompt ({len(ids)} tokens) plus max_tokens ({mt}) exceeds the context "
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
        top_k = _int(body, "top_k", 0) or 0
        if top_k < 0:
            top_k = 0  # vLLM: -1 means off
        rp = _float(body, "repetition_penalty", 1.0)
        if rp <= 0:
            raise _bad("'repetition_penalty' must be > 0", "repetition_penalty")
        params = {"max_new_tokens": mt, "temperature": temperature, "top_p": top_p, "top_k": top_k,
                  "seed": seed % (1 << 64), "repetition_penalty": rp, "stop": _stop(body),
                  "ignore_eos": bool(body.get("ignore_eos", False))}
        return ids, params

    def score_choices(self, body: Dict[str, Any]) -> Dict[str, Any]:
        self.check_model(body)
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
        try:
            ids = self.model.encode_prompt(prompt, raw=raw)
            longest = max(len(self.model.tokenize(c)) for c in choices)
        except LoglmError as e:
            raise _bad(str(e), "messages") from None
        if len(ids) + longest > self.model.context_length:
            raise _bad(f"the prompt ({len(ids)} tokens) plus the longest choice ({longest}) exceeds the "
                       f"context length ({self.model.context_length})", "messages", "context_length_exceeded")
        cs = self.batcher.call(lambda: self.model.score_choices(prompt, choices, raw=raw))
        return {"object": "loglm.choice_scores", "model": self.model_name, "choices": cs.choices,
                "logprobs": cs.logprobs, "token_logprobs": cs.token_logprobs, "probs": cs.probs,
                "usage": {"prompt_tokens": len(ids)}}

    def tokenize(self, body: Dict[str, Any]) -> Dict[str, Any]:
        self.check_model(body)
        text = body.get("text")
        if not isinstance(text, str):
            raise _bad("'text' must be a string", "text")
        try:
            ids = self.model.tokenize(text, parse_special=bool(body.get("parse_special", False)))
        except LoglmError as e:
            raise _bad(str(e), "text") from None
        return {"tokens": ids, "count": len(ids)}

    def detokenize(self, body: Dict[str, Any]) -> Dict[str, Any]:
        self.check_model(body)
        toks = body.get("tokens")
        vocab = int(self.model.info["vocab_size"])
        if not isinstance(toks, list) or not all(isinstance(t, int) and not isinstance(t, bool)
                                                 and 0 <= t < vocab for t in toks):
            raise _bad(f"'tokens' must be a list of token ids in [0, {vocab})", "tokens")
        try:
            return {"text": self.model.detokenize(toks)}
        except LoglmError as e:
            raise _bad(str(e), "tokens") from None


def _completion_body(app: LoglmServer, rid: str, c: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": app.model_name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": c["text"]},
                     "logprobs": None, "finish_reason": _finish(c["finish_reason"])}],
        "usage": {"prompt_tokens": c["prompt_tokens"], "completion_tokens": c["completion_tokens"],
                  "total_tokens": c["prompt_tokens"] + c["completion_tokens"]},
        "loglm": {"finish_reason": c["finish_reason"], "prefill_seconds": c["prefill_seconds"],
                  "decode_seconds": c["decode_seconds"]},
    }


def _engine_error(e: BaseException) -> _HTTPError:
    if isinstance(e, _ShuttingDown):
        return _HTTPError(503, str(e), "server_error", "shutting_down")
    if isinstance(e, ContextLengthError):
        return _bad(str(e), "max_tokens", "context_length_exceeded")
    if isinstance(e, InvalidInputError):
        return _bad(str(e))
    return _HTTPError(500, f"generation failed: {type(e).__name__}: {e}", "server_error", "internal_error")


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "loglm-serve"
    timeout = 300  # seconds a connection may sit idle or stall mid-request
    _body_read = False

    # -- plumbing ------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        if self.server.app.log_requests:
            msg = _CTRL.sub("?", format % args)  # paths and headers are untrusted
            sys.stderr.write(f"{self.address_string()} - {msg}\n")

    def _send_json(self, status: int, obj: Any, close: bool = False) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 503:
            self.send_header("Retry-After", "1")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, e: _HTTPError, close: bool = False) -> None:
        self._send_json(e.status, e.body(), close=close)

    def _authorized(self) -> bool:
        key = self.server.app.api_key
        if not key:
            return True
        got = self.headers.get("Authorization", "")
        token = got[7:].strip() if got[:7].lower() == "bearer " else ""
        return hmac.compare_digest(token.encode("utf-8", "replace"), key.encode("utf-8"))

    def _drain(self, n: int) -> None:
        """Read and drop a body of ``n`` bytes that will not be used (when not too big)."""
        if n > _DRAIN_LIMIT:
            return
        while n > 0:
            chunk = self.rfile.read(min(n, 1 << 16))
            if not chunk:
                return
            n -= len(chunk)
        self._body_read = True

    def _client_gone(self) -> bool:
        """Whether the client closed its connection (checked while it waits for an answer)."""
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            return bool(r) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _read_json(self) -> Dict[str, Any]:
        app = self.server.app
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or length is None:
            raise _HTTPError(411, "a Content-Length header is required", "invalid_request_error", "length_required")
        try:
            n = int(length)
        except ValueError:
            raise _bad("bad Content-Length header") from None
        if n < 0:
            raise _bad("bad Content-Length header")
        if n > app.max_request_bytes:
            self._drain(n)
            raise _HTTPError(413, f"request body of {n} bytes exceeds this server's limit of "
                                  f"{app.max_request_bytes} bytes", "invalid_request_error", "request_too_large")
        raw = self.rfile.read(n)
        self._body_read = True
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise _bad(f"the body is not valid JSON: {e}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise _bad("the body must be a JSON object", code="invalid_json")
        return body

    # -- routing ---------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _route(self, method: str) -> None:
        app = self.server.app
        self._body_read = False
        try:
            has_body = int(self.headers.get("Content-Length") or 0) > 0
        except ValueError:
            has_body = True
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path == "/health":
                if method != "GET":
                    raise _HTTPError(405, "use GET /health", "invalid_request_error", "method_not_allowed")
                if app.closing:
                    self._send_json(503, {"status": "shutting_down"})
                else:
                    self._send_json(200, {"status": "ok", "server": "loglm", "model": app.model_name})
                return
            if app.closing:
                raise _HTTPError(503, "the server is shutting down", "server_error", "shutting_down")
            if not self._authorized():
                if has_body:  # drop the body unread (up to the request limit)
                    try:
                        n = int(self.headers.get("Content-Length") or 0)
                    except ValueError:
                        n = _DRAIN_LIMIT + 1
                    if n <= app.max_request_bytes:
                        self._drain(n)
                raise _HTTPError(401, "invalid or missing API key (Authorization: Bearer <key>)",
                                 "invalid_request_error", "invalid_api_key")
            if method == "GET" and path == "/v1/models":
                self._send_json(200, {"object": "list", "data": [app.model_card()]})
            elif method == "GET" and path.startswith("/v1/models/"):
                app.check_model({"model": path[len("/v1/models/"):]})
                self._send_json(200, app.model_card())
            elif method == "POST" and path == "/v1/chat/completions":
                self._chat(self._read_json())
            elif method == "POST" and path == "/v1/loglm/score_choices":
                body = self._read_json()
                try:
                    self._send_json(200, app.score_choices(body))
                except _HTTPError:
                    raise
                except Exception as e:
                    raise _engine_error(e) from None
            elif method == "POST" and path == "/v1/loglm/tokenize":
                self._send_json(200, app.tokenize(self._read_json()))
            elif method == "POST" and path == "/v1/loglm/detokenize":
                self._send_json(200, app.detokenize(self._read_json()))
            else:
                raise _HTTPError(404, f"no route {method} {_CTRL.sub('?', path)[:200]}", "invalid_request_error",
                                 "not_found")
        except _HTTPError as e:
            # a body left unread makes the connection unusable: close it after answering
            self._send_error(e, close=(has_body and not self._body_read) or e.status >= 500)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug: answer 500 rather than drop the connection
            try:
                self._send_error(_HTTPError(500, f"internal error: {type(e).__name__}: {e}", "server_error",
                                            "internal_error"), close=True)
            except OSError:
                self.close_connection = True

    # -- chat completions ----------------------------------------------------------------
    def _chat(self, body: Dict[str, Any]) -> None:
        app = self.server.app
        stream = bool(body.get("stream", False))
        so = body.get("stream_options") or {}
        include_usage = bool(isinstance(so, dict) and so.get("include_usage"))
        ids, params = app.prepare_chat(body)
        rid = "chatcmpl-" + uuid.uuid4().hex[:24]
        job = app.batcher.submit(ids, params)
        if not stream:
            try:
                while True:
                    try:
                        kind, val = job.events.get(timeout=0.5)
                    except queue.Empty:
                        if self._client_gone():  # a queued job is then dropped before it runs
                            self.close_connection = True
                            return
                        continue
                    if kind == "done":
                        self._send_json(200, _completion_body(app, rid, val))
                        return
                    if kind == "error":
                        raise _engine_error(val)
            finally:
                job.abandoned = True
        self._stream(job, rid, include_usage)

    def _stream(self, job: _Job, rid: str, include_usage: bool) -> None:
        app = self.server.app
        created = int(time.time())

        def chunk(delta: Dict[str, Any], finish: Optional[str] = None, **extra: Any) -> bytes:
            obj = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": app.model_name,
                   "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            obj.update(extra)
            return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        try:
            self.wfile.write(chunk({"role": "assistant", "content": ""}))
            self.wfile.flush()
            while True:
                kind, val = job.events.get()
                if kind == "piece":
                    self.wfile.write(chunk({"content": val}))
                    self.wfile.flush()
                elif kind == "done":
                    self.wfile.write(chunk({}, _finish(val["finish_reason"]),
                                           loglm={"finish_reason": val["finish_reason"],
                                                  "prefill_seconds": val["prefill_seconds"],
                                                  "decode_seconds": val["decode_seconds"]}))
                    if include_usage:
                        usage = {"prompt_tokens": val["prompt_tokens"], "completion_tokens": val["completion_tokens"],
                                 "total_tokens": val["prompt_tokens"] + val["completion_tokens"]}
                        obj: Dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created,
                               "model": app.model_name, "choices": [], "usage": usage}
                        self.wfile.write(b"data: " + json.dumps(obj).encode("utf-8") + b"\n\n")
                    break
                else:
                    err = _engine_error(val)
                    self.wfile.write(b"data: " + json.dumps(err.body()).encode("utf-8") + b"\n\n")
                    break
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away; its sequence finishes in the batch and is dropped
        finally:
            job.abandoned = True


def serve(model: Any = None, *, host: str = "127.0.0.1", port: int = 8000, threads: Optional[int] = None,
          context_length: Optional[int] = None, **kwargs: Any) -> None:
    """Load ``model`` (a path or name, or a :class:`loglm.LogLM`) and serve it until Ctrl-C.

    ``kwargs`` are :class:`LoglmServer`'s options (``api_key``, ``max_request_bytes``,
    ``max_tokens``, ``max_batch``, ``batch_window_ms``, ``parallel``, ``model_name``,
    ``log_requests``).
    """
    from loglm.model import LogLM

    m = model if isinstance(model, LogLM) else LogLM.load(model, threads=threads, context_length=context_length)
    srv = LoglmServer(m, host=host, port=port, **kwargs)
    print(f"loglm serve: {srv.model_name} on {srv.url} (OpenAI-compatible: {srv.url}/v1; "
          f"context {m.context_length}, max_tokens {srv.max_tokens}, "
          f"{'API key required' if srv.api_key else 'no API key'}); Ctrl-C stops", file=sys.stderr, flush=True)
    srv.serve_forever()
    print("loglm serve: stopped", file=sys.stderr)
