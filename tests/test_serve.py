"""`loglm serve` (OpenAI-compatible server) and the remote backend `LogLM.remote`, against a
real server in process on the default model (and once as the `loglm serve` command)."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple

import pytest

import loglm
from loglm import LogLM
from loglm.remote import RemoteLogLM, approximate_choice_logprobs
from loglm.serve import LoglmServer

KEY = "test-key-123"
PROMPTS = [
    "What does this log line mean? 081109 203615 148 INFO dfs.DataNode$PacketResponder: "
    "PacketResponder 1 for block blk_38865049064139660 terminating",
    "Is this log normal or abnormal? kernel: EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2",
    "Summarise: sshd[24200]: Failed password for root from 218.188.2.4 port 45678 ssh2",
    "Explain: 2015-07-29 17:41:44,747 - WARN [QuorumPeer] - Interrupting SendWorker",
]


@pytest.fixture(scope="module")
def model() -> LogLM:
    return LogLM.load(threads=1, context_length=2048)


@pytest.fixture(scope="module")
def server(model: LogLM):
    srv = LoglmServer(model, port=0, api_key=KEY, max_request_bytes=64 * 1024, max_tokens=256)
    with srv:
        yield srv


@pytest.fixture(scope="module")
def remote(server: LoglmServer) -> RemoteLogLM:
    return LogLM.remote(server.url, api_key=KEY, timeout=120)


def http_json(srv: LoglmServer, method: str, path: str, body: Any = None, *, key: Optional[str] = KEY,
              raw: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None) -> Tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
    h = dict(headers or {})
    if key:
        h["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    if data is not None:
        h.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    payload = r.read()
    conn.close()
    ctype = r.getheader("Content-Type", "")
    return r.status, (json.loads(payload) if "json" in ctype else payload)


def chat(content: str, **kw: Any) -> Dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **kw}


# ---- engine loop: requests with their own settings join one running batch ----------------

def test_streams_join_the_running_batch_and_equal_one_by_one(model: LogLM) -> None:
    ids = [model.encode_prompt(p) for p in PROMPTS[:3]]
    params: List[Dict[str, Any]] = [
        {"max_new_tokens": 12},
        {"max_new_tokens": 20, "temperature": 0.8, "seed": 5},
        {"max_new_tokens": 16, "repetition_penalty": 1.1, "stop": ["."]},
    ]
    before = model.engine_stats()
    first = model.stream_tokens(ids[0], **params[0])
    pieces = [[next(first)]]  # the first request is running when the others arrive
    streams = [first] + [model.stream_tokens(i, **kw) for i, kw in zip(ids[1:], params[1:])]
    pieces += [[] for _ in streams[1:]]
    for k, s in enumerate(streams):
        pieces[k] += list(s)
    after = model.engine_stats()
    steps = after["decode_steps"] - before["decode_steps"]
    tokens = after["decode_tokens"] - before["decode_tokens"]
    assert tokens > steps > 0, "the three sequences shared decode steps"
    for k, (p, kw) in enumerate(zip(PROMPTS, params)):
        alone = model.generate(p, **kw)
        r = streams[k].result
        assert r is not None and r.text == alone.text == "".join(pieces[k])
        assert r.finish_reason == alone.finish_reason and r.token_ids == alone.token_ids
    # the binding checks each request's settings before anything runs
    with pytest.raises(loglm.InvalidInputError, match="unknown sampling setting"):
        model._engine.submit(ids[:1], [{"max_tokens": 3}])
    with pytest.raises(loglm.InvalidInputError, match="request 1"):
        model._engine.submit(ids[:2], [{}, {"top_p": 0.0}])
    with pytest.raises(loglm.ContextLengthError):
        model._engine.submit(ids[:1], [{"max_new_tokens": 5000}])


def test_closing_a_stream_cancels_its_sequence(model: LogLM) -> None:
    s = model.stream(PROMPTS[0], max_new_tokens=1500, stop=["\x00never"])
    next(s)
    t0 = time.monotonic()
    while model.engine_stats()["running"] != 1:  # the figures follow the step that sent the piece
        assert time.monotonic() - t0 < 10
        time.sleep(0.005)
    s.close()
    _wait_idle(model)
    assert model.generate(PROMPTS[0], max_new_tokens=4).completion_tokens > 0


def _wait_idle(model: LogLM, timeout: float = 20.0) -> None:
    t0 = time.monotonic()
    while True:
        st = model.engine_stats()
        if st["running"] == 0 and st["waiting"] == 0:
            return
        assert time.monotonic() - t0 < timeout, f"the engine is still busy: {st}"
        time.sleep(0.02)


# ---- endpoints ------------------------------------------------------------------------------

def test_health_and_models(server: LoglmServer) -> None:
    st, body = http_json(server, "GET", "/health", key=None)
    assert st == 200 and body["status"] == "ok" and body["model"] == server.model_name
    st, body = http_json(server, "GET", "/v1/models")
    assert st == 200 and body["object"] == "list"
    card = body["data"][0]
    assert card["id"] == server.model_name and card["owned_by"] == "loglm" and card["max_model_len"] == 2048
    st, body = http_json(server, "GET", f"/v1/models/{server.model_name}")
    assert st == 200 and body["id"] == server.model_name
    st, body = http_json(server, "GET", "/v1/models/nope")
    assert st == 404 and body["error"]["code"] == "model_not_found"
    st, body = http_json(server, "GET", "/v1/nothing")
    assert st == 404 and body["error"]["type"] == "invalid_request_error"


def test_chat_completion_and_stream_match_local(server: LoglmServer, remote: RemoteLogLM, model: LogLM) -> None:
    local = model.generate(PROMPTS[0], max_new_tokens=32)
    st, body = http_json(server, "POST", "/v1/chat/completions",
                         chat(PROMPTS[0], model=server.model_name, max_tokens=32, temperature=0))
    assert st == 200 and body["object"] == "chat.completion"
    ch = body["choices"][0]
    assert ch["message"] == {"role": "assistant", "content": local.text}
    assert ch["finish_reason"] == ("length" if local.finish_reason == "length" else "stop")
    assert body["usage"] == {"prompt_tokens": local.prompt_tokens, "completion_tokens": local.completion_tokens,
                             "total_tokens": local.prompt_tokens + local.completion_tokens}
    # the same over SSE, by hand
    st, raw = http_json(server, "POST", "/v1/chat/completions",
                        chat(PROMPTS[0], max_completion_tokens=32, temperature=0, stream=True,
                             stream_options={"include_usage": True}))
    assert st == 200
    events = [x[len("data: "):] for x in raw.decode().split("\n\n") if x]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == local.text
    assert chunks[-1]["usage"]["completion_tokens"] == local.completion_tokens
    # and through the remote backend
    r = remote.generate(PROMPTS[0], max_new_tokens=32)
    assert r.text == local.text and r.finish_reason == local.finish_reason
    assert r.prompt_tokens == local.prompt_tokens and r.completion_tokens == local.completion_tokens
    s = remote.stream(PROMPTS[0], max_new_tokens=32)
    assert "".join(s) == local.text
    assert s.result is not None and s.result.completion_tokens == local.completion_tokens


def test_remote_structured_output_equals_local(remote: RemoteLogLM, model: LogLM) -> None:
    """json_schema / json_object travel as response_format: the server's constrained decoding
    gives the local text, which parses against the schema; a schema it cannot compile is a
    RemoteError with the server's 400."""
    from loglm.answers import parse_verdict, verdict_schema

    chat_ = [{"role": "user", "content": "Is this log line normal or abnormal? Answer with JSON only: "
                                         '{"reason": "<one sentence>", "label": "normal" or "abnormal"}\n'
                                         "ERROR dfs.DataNode: writeBlock failed: No space left on device"}]
    schema = verdict_schema(120)
    local = model.generate(chat_, max_new_tokens=64, json_schema=schema)
    r = remote.generate(chat_, max_new_tokens=64, json_schema=schema)
    assert r.text == local.text and r.finish_reason == local.finish_reason
    obj = json.loads(r.text)
    assert list(obj) == ["reason", "label"] and obj["label"] in ("normal", "abnormal")
    assert parse_verdict(r.text).reason == obj["reason"].strip()
    s = remote.stream(chat_, max_new_tokens=48, json_object=True)
    assert "".join(s) == model.generate(chat_, max_new_tokens=48, json_object=True).text
    with pytest.raises(loglm.RemoteError) as e:
        remote.generate(chat_, max_new_tokens=8, json_schema={"type": "object", "properties": {"a": {"$ref": "#/x"}}})
    assert e.value.status == 400 and "schema" in str(e.value)
    with pytest.raises(loglm.InvalidInputError):
        remote.generate(chat_, json_object=True, json_schema=schema)


def test_stop_strings_and_seeds(server: LoglmServer, remote: RemoteLogLM, model: LogLM) -> None:
    full = remote.generate(PROMPTS[1], max_new_tokens=40).text
    words = re.findall(r"[A-Za-z]{4,}", full)
    assert len(words) >= 2, full
    stop = words[1]
    cut = remote.generate(PROMPTS[1], max_new_tokens=40, stop=[stop])
    assert cut.text == full[: full.index(stop)] and cut.finish_reason == "stop_string"
    st, body = http_json(server, "POST", "/v1/chat/completions", chat(PROMPTS[1], max_tokens=40, temperature=0,
                                                                      stop=stop))
    assert body["choices"][0]["finish_reason"] == "stop" and body["choices"][0]["message"]["content"] == cut.text
    # sampling: a seed fixes the answer (and equals the local engine's)
    a = remote.generate(PROMPTS[2], max_new_tokens=24, temperature=0.9, seed=7)
    b = remote.generate(PROMPTS[2], max_new_tokens=24, temperature=0.9, seed=7)
    assert a.text == b.text == model.generate(PROMPTS[2], max_new_tokens=24, temperature=0.9, seed=7).text
    others = {remote.generate(PROMPTS[2], max_new_tokens=24, temperature=0.9, seed=s).text for s in (1, 2, 3)}
    assert len(others | {a.text}) > 1


def test_concurrent_requests_are_batched_and_unchanged(server: LoglmServer, model: LogLM) -> None:
    alone = [model.generate(p, max_new_tokens=16).text for p in PROMPTS]
    client = LogLM.remote(server.url, api_key=KEY, concurrency=8, timeout=120)
    before = model.engine_stats()
    out = client.generate(PROMPTS * 2, max_new_tokens=16)
    assert [r.text for r in out] == alone * 2
    after = model.engine_stats()
    assert after["submitted"] - before["submitted"] == 8
    steps = after["decode_steps"] - before["decode_steps"]
    assert after["decode_tokens"] - before["decode_tokens"] > 1.5 * steps, \
        "concurrent requests should share engine decode steps"
    # plain threads too, each request on its own
    got: Dict[int, str] = {}
    barrier = threading.Barrier(4)

    def worker(i: int) -> None:
        barrier.wait()
        got[i] = client.generate(PROMPTS[i], max_new_tokens=16).text

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert [got[i] for i in range(4)] == alone


def test_remote_parse_and_detect_equal_local(remote: RemoteLogLM, model: LogLM, data_dir) -> None:
    lines = (data_dir / "loghub_2k" / "HDFS" / "HDFS_2k.log").read_text().splitlines()[:6]
    lines = [x.rstrip("\r") for x in lines]
    local = model.parse(lines)
    rem = remote.parse(lines)
    assert list(rem["EventTemplate"]) == list(local["EventTemplate"])
    assert list(rem["EventId"]) == list(local["EventId"])
    dl = model.detect_anomalies(lines[:4])
    dr = remote.detect_anomalies(lines[:4])
    assert list(dr["Label"]) == list(dl["Label"])
    assert max(abs(a - b) for a, b in zip(dr["Score"], dl["Score"])) < 1e-4
    cs = remote.score_choices("Say yes or no.", ["yes", "no"])
    lc = model.score_choices("Say yes or no.", ["yes", "no"])
    assert cs.choices == ["yes", "no"] and max(abs(a - b) for a, b in zip(cs.logprobs, lc.logprobs)) < 1e-4
    # the server's tokenizer is used for budgets
    assert remote.tokenize(lines[0]) == model.tokenize(lines[0])
    assert remote.context_length == 2048
    assert remote.fit_text("x " * 3000, 100) == model.fit_text("x " * 3000, 100)


def test_text_task_remote(remote: RemoteLogLM, model: LogLM) -> None:
    a = remote.interpret(PROMPTS[0], max_new_tokens=24)
    b = model.interpret(PROMPTS[0], max_new_tokens=24)
    assert str(a) == str(b) and a.truncated is False
    s = remote.root_cause(PROMPTS[0], max_new_tokens=16, stream=True)
    assert "".join(s) == model.generate(s.prompt, max_new_tokens=16, repetition_penalty=1.1).text


# ---- errors -----------------------------------------------------------------------------------

def test_auth(server: LoglmServer) -> None:
    st, body = http_json(server, "GET", "/v1/models", key=None)
    assert st == 401 and body["error"]["code"] == "invalid_api_key"
    st, body = http_json(server, "POST", "/v1/chat/completions", chat("hi"), key="wrong")
    assert st == 401
    st, body = http_json(server, "POST", "/v1/chat/completions", chat("x" * 50_000), key="wrong")
    assert st == 401
    bad = LogLM.remote(server.url, api_key="wrong", max_retries=3, backoff=5.0)
    t0 = time.monotonic()
    with pytest.raises(loglm.AuthenticationError, match="401") as ei:
        bad.generate("hi", max_new_tokens=4)
    assert time.monotonic() - t0 < 4, "a 401 is not retried"
    assert ei.value.status == 401 and isinstance(ei.value, loglm.LoglmError)


def test_request_limits(server: LoglmServer, remote: RemoteLogLM) -> None:
    with pytest.raises(loglm.BadRequestError) as ei:
        remote.generate("x" * 70_000, max_new_tokens=4)
    assert ei.value.status == 413 and ei.value.code == "request_too_large"
    with pytest.raises(loglm.BadRequestError) as ei:  # far over the limit: still a clear 413
        remote.generate("x" * 5_000_000, max_new_tokens=4)
    assert ei.value.status == 413
    with pytest.raises(loglm.BadRequestError, match="at most 256") as ei:
        remote.generate("hello", max_new_tokens=300)
    assert ei.value.status == 400
    long = "error " * 1900  # ~1900 tokens + 200 > 2048
    with pytest.raises(ValueError) as ei2:
        remote.generate(long, max_new_tokens=200)
    assert ei2.value.code == "context_length_exceeded"  # type: ignore[attr-defined]
    st, body = http_json(server, "POST", "/v1/chat/completions", raw=b'{"messages": [')
    assert st == 400 and body["error"]["code"] == "invalid_json"
    for bad, param in [(chat("hi", n=2), "n"), ({"messages": []}, "messages"),
                       (chat("hi", temperature="hot"), "temperature"), (chat("hi", logprobs="yes"), "logprobs"),
                       ({"messages": [{"role": "robot", "content": "x"}]}, "messages")]:
        st, body = http_json(server, "POST", "/v1/chat/completions", bad)
        assert st == 400 and body["error"]["param"] == param, (bad, body)
    st, body = http_json(server, "POST", "/v1/chat/completions", chat("hi", model="gpt-4"))
    assert st == 404 and body["error"]["code"] == "model_not_found"
    st, body = http_json(server, "POST", "/v1/loglm/score_choices", {"messages": [{"role": "user", "content": "x"}],
                                                                      "choices": []})
    assert st == 400 and body["error"]["param"] == "choices"


# ---- the official openai client -------------------------------------------------------------

@pytest.fixture(scope="module")
def oai(server: LoglmServer) -> Any:
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def test_openai_client_chat_completions_and_models(oai: Any, server: LoglmServer, model: LogLM) -> None:
    assert [m.id for m in oai.models.list()] == [server.model_name]
    local = model.generate(PROMPTS[3], max_new_tokens=12)
    msgs = [{"role": "user", "content": PROMPTS[3]}]
    r = oai.chat.completions.create(model=server.model_name, messages=msgs, max_tokens=12, temperature=0,
                                    logprobs=True, top_logprobs=3)
    assert r.choices[0].message.content == local.text
    assert r.usage.completion_tokens == local.completion_tokens and r.usage.prompt_tokens == local.prompt_tokens
    lp = r.choices[0].logprobs.content
    assert [x.token for x in lp] == [model.detokenize([t], skip_special=False) for t in local.token_ids]
    for x in lp:  # greedy: the chosen token is the most likely one, and log-probabilities are sorted
        assert len(x.top_logprobs) == 3 and x.top_logprobs[0].token == x.token
        assert x.logprob == pytest.approx(x.top_logprobs[0].logprob) and x.logprob <= 0
        assert [t.logprob for t in x.top_logprobs] == sorted((t.logprob for t in x.top_logprobs), reverse=True)
    chunks = list(oai.chat.completions.create(model=server.model_name, messages=msgs, max_tokens=12, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == local.text
    assert chunks[-1].usage.completion_tokens == local.completion_tokens
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=server.model_name, messages=msgs, max_tokens=4, extra_body={"top_k": 10**30})
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="gpt-4", messages=msgs, max_tokens=4)
    with pytest.raises(openai.AuthenticationError):
        oai.with_options(api_key="wrong").models.list()


def test_openai_client_json_mode(oai: Any, server: LoglmServer, model: LogLM) -> None:
    msgs = [{"role": "user", "content": 'Is this log line an error? Answer in JSON with one key "error" '
                                        "(true or false): " + PROMPTS[0][30:]}]
    r = oai.chat.completions.create(model=server.model_name, messages=msgs, max_tokens=48, temperature=0,
                                    response_format={"type": "json_object"})
    text = r.choices[0].message.content
    local = model.generate(msgs, max_new_tokens=48, json_object=True)
    assert text == local.text and text.lstrip().startswith("{")
    assert r.choices[0].finish_reason == "stop" and isinstance(json.loads(text), dict), text
    for seed in (1, 2):  # sampled too
        s = oai.chat.completions.create(model=server.model_name, messages=msgs, max_tokens=48, temperature=1.0,
                                        seed=seed, response_format={"type": "json_object"})
        if s.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(s.choices[0].message.content), dict)


VERDICT = {"type": "object", "properties": {
    "reason": {"type": "string", "maxLength": 120},
    "label": {"type": "string", "enum": ["normal", "abnormal"]},
    "lines": {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
}, "required": ["reason", "label"], "additionalProperties": False}


def test_openai_client_json_schema(oai: Any, server: LoglmServer, model: LogLM) -> None:
    openai = pytest.importorskip("openai")
    msgs = [{"role": "user", "content": "Is this log normal or abnormal? Answer in JSON with a reason: " + PROMPTS[1]}]
    rf = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT, "strict": True}}
    r = oai.chat.completions.create(model=server.model_name, messages=msgs, max_tokens=96, temperature=0,
                                    response_format=rf)
    text = r.choices[0].message.content
    assert text == model.generate(msgs, max_new_tokens=96, json_schema=VERDICT).text
    for seed in (None, 1, 2):  # greedy and sampled, streamed too
        kw: Dict[str, Any] = {"temperature": 0} if seed is None else {"temperature": 1.0, "seed": seed}
        chunks = list(oai.chat.completions.create(model=server.model_name, messages=msgs, max_tokens=96,
                                                  response_format=rf, stream=True, **kw))
        out = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        if [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop":
            obj = json.loads(out)
            assert obj["label"] in ("normal", "abnormal") and isinstance(obj["reason"], str)
            assert set(obj) <= set(VERDICT["properties"]) and len(obj["reason"]) <= 120  # type: ignore[arg-type]
    # a schema that cannot be compiled is an OpenAI-style 400 naming why
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "^a"}}}
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(model=server.model_name, messages=msgs, max_tokens=8, response_format=bad)
    assert "cannot be compiled" in str(ei.value) and "pattern" in str(ei.value)
    assert oai.chat.completions.create(model=server.model_name, messages=msgs, max_tokens=2).choices  # still serving


def test_openai_client_completions_with_logprobs(oai: Any, server: LoglmServer, model: LogLM) -> None:
    prompt = "The disk error in the kernel log means"
    ids = model.encode_prompt(prompt, raw=True)
    local = model.stream_tokens(ids, max_new_tokens=8, logprobs=2)
    text = "".join(local)
    assert local.result is not None and local.result.logprobs is not None
    r = oai.completions.create(model=server.model_name, prompt=prompt, max_tokens=8, temperature=0, logprobs=2)
    c = r.choices[0]
    assert c.text == text and r.usage.prompt_tokens == len(ids)
    assert c.logprobs.token_logprobs == pytest.approx([lp for _, lp, _ in local.result.logprobs], abs=1e-6)
    assert "".join(c.logprobs.tokens) == text and all(len(t) == 2 for t in c.logprobs.top_logprobs)
    # token ids and several prompts
    r2 = oai.completions.create(model=server.model_name, prompt=[prompt, prompt + " that"], max_tokens=4,
                                temperature=0)
    assert r2.choices[0].text == text[:len(r2.choices[0].text)] and len(r2.choices) == 2
    r3 = oai.completions.create(model=server.model_name, prompt=ids, max_tokens=8, temperature=0)
    assert r3.choices[0].text == text
    streamed = oai.completions.create(model=server.model_name, prompt=prompt, max_tokens=8, temperature=0,
                                      stream=True)
    assert "".join(ch.choices[0].text for ch in streamed if ch.choices) == text


def test_openai_client_embeddings(oai: Any) -> None:
    from loglm.embed import SentenceEncoder

    try:
        enc = SentenceEncoder.load()
    except loglm.LoglmError as e:
        pytest.skip(f"the MiniLM encoder is not installed: {e}")
    texts = ["disk full on /var", "no space left on device"]
    r = oai.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    want = enc.encode(texts)
    assert [d.index for d in r.data] == [0, 1]
    for d, w in zip(r.data, want):
        assert len(d.embedding) == want.shape[1]
        assert max(abs(a - float(b)) for a, b in zip(d.embedding, w)) < 1e-6
    one = oai.embeddings.create(model="all-MiniLM-L6-v2", input="disk full on /var")  # the client asks base64
    assert max(abs(a - b) for a, b in zip(one.data[0].embedding, r.data[0].embedding)) < 1e-6


# ---- hostile and vanishing clients ---------------------------------------------------------------

def test_every_bad_request_is_a_4xx(server: LoglmServer) -> None:
    nested = b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    cases: List[Tuple[str, Any]] = [
        ("/v1/chat/completions", nested),
        ("/v1/chat/completions", b"[" * 50_000),
        ("/v1/chat/completions", b"\xff\xfe"),
        ("/v1/chat/completions", chat("hi", top_k=10**30)),
        ("/v1/chat/completions", chat("hi", top_k=1e30)),
        ("/v1/chat/completions", chat("hi", seed=10**40)),
        ("/v1/chat/completions", chat("hi", max_tokens=10**30)),
        ("/v1/chat/completions", chat("hi", temperature=1e400 if False else 10**400)),
        ("/v1/chat/completions", chat("hi", repetition_penalty=1e30)),
        ("/v1/chat/completions", chat("hi", stream="yes")),
        ("/v1/chat/completions", chat("hi", logprobs=True, top_logprobs=99)),
        ("/v1/chat/completions", chat("hi", response_format={"type": "json_schema"})),
        ("/v1/chat/completions", chat("hi", response_format={"type": "json_schema", "json_schema": {"schema": 1}})),
        ("/v1/chat/completions", chat("hi", response_format={"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#"}}}}})),
        ("/v1/chat/completions", chat("hi", response_format={"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"enum": list(range(300))}}})),
        ("/v1/completions", {"prompt": "hi", "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "array"}}}}),
        ("/v1/chat/completions", chat("hi", response_format="json")),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": {"a": 1}}]}),
        ("/v1/chat/completions", {"messages": "hi"}),
        ("/v1/completions", {"prompt": {"x": 1}}),
        ("/v1/completions", {"prompt": [10**12]}),
        ("/v1/completions", {"prompt": "hi", "logprobs": 50}),
        ("/v1/embeddings", {"input": [1, 2]}),
        ("/v1/loglm/score_choices", {"prompt": "x", "choices": [1]}),
        ("/v1/loglm/detokenize", {"tokens": [-1]}),
        ("/v1/loglm/tokenize", {"text": None}),
    ]
    for path, body in cases:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        st, out = http_json(server, "POST", path, raw=raw)
        assert 400 <= st < 500, (path, str(body)[:80], st, out)
        assert isinstance(out, dict) and "message" in out["error"]
    st, out = http_json(server, "DELETE", "/v1/models")
    assert st == 405
    st, _ = http_json(server, "GET", "/health", key=None)
    assert st == 200


def _raw_request(port: int, body: Dict[str, Any]) -> socket.socket:
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


@pytest.mark.parametrize("stream", [False, True])
def test_a_vanished_client_cancels_its_sequence(server: LoglmServer, model: LogLM, stream: bool) -> None:
    _wait_idle(model)
    before = server.metrics.cancelled
    s = _raw_request(server.port, chat(PROMPTS[0], max_tokens=250, temperature=0, ignore_eos=True, stream=stream))
    t0 = time.monotonic()
    while model.engine_stats()["running"] == 0:
        assert time.monotonic() - t0 < 30, "the request never started"
        time.sleep(0.01)
    if stream:
        assert s.recv(1 << 16).startswith(b"HTTP/1.1 200")
    s.close()
    _wait_idle(model, timeout=10)  # 250 tokens would take far longer
    assert server.metrics.cancelled == before + 1
    # and the server goes on
    st, body = http_json(server, "POST", "/v1/chat/completions", chat("hi", max_tokens=2))
    assert st == 200


def test_many_connections_at_once_and_metrics(server: LoglmServer) -> None:
    results: List[int] = []

    def hit() -> None:
        st, _ = http_json(server, "GET", "/health", key=None)
        results.append(st)

    ts = [threading.Thread(target=hit) for _ in range(64)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert results == [200] * 64
    st, text = http_json(server, "GET", "/metrics")
    assert st == 200
    text = text.decode()
    for name in ("loglm_requests_total", "loglm_time_to_first_token_seconds_bucket", "loglm_batch_size",
                 "loglm_queue_depth", "loglm_request_latency_seconds_count", "loglm_completion_tokens_total"):
        assert name in text
    st, _ = http_json(server, "GET", "/metrics", key=None)
    assert st == 401
    st, spec = http_json(server, "GET", "/openapi.json", key=None)
    assert st == 200 and spec["openapi"].startswith("3.") and "/v1/chat/completions" in spec["paths"]


def test_health_is_503_while_draining(model: LogLM) -> None:
    srv = LoglmServer(model, port=0).start()
    try:
        out: Dict[str, Any] = {}

        def long_request() -> None:
            out["r"] = http_json(srv, "POST", "/v1/chat/completions",
                                 chat(PROMPTS[1], max_tokens=40, temperature=0, ignore_eos=True), key=None)

        t = threading.Thread(target=long_request)
        t.start()
        t0 = time.monotonic()
        while model.engine_stats()["running"] == 0:
            assert time.monotonic() - t0 < 30
            time.sleep(0.01)
        d = threading.Thread(target=srv.drain, kwargs={"timeout": 60})
        d.start()
        time.sleep(0.05)
        st, body = http_json(srv, "GET", "/health", key=None)
        assert st == 503 and body["status"] == "shutting_down"
        st, body = http_json(srv, "POST", "/v1/chat/completions", chat("hi", max_tokens=2), key=None)
        assert st == 503 and body["error"]["code"] == "shutting_down"
        t.join()
        d.join()
        assert out["r"][0] == 200 and out["r"][1]["usage"]["completion_tokens"] == 40  # the running one finished
    finally:
        srv.shutdown()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def test_server_down_raises_after_retries() -> None:
    port = _free_port()
    r = LogLM.remote(f"http://127.0.0.1:{port}/v1", model="m", timeout=2, max_retries=2, backoff=0.05)
    t0 = time.monotonic()
    with pytest.raises(loglm.ServerUnavailableError, match=f"127.0.0.1:{port}.*3 attempts") as ei:
        r.generate("hi", max_new_tokens=4)
    assert isinstance(ei.value, ConnectionError)
    assert time.monotonic() - t0 >= 0.05 * (1 + 2) * 0.5  # it waited between the attempts
    with pytest.raises(loglm.InvalidInputError):
        LogLM.remote("ftp://example.org")


def test_shutting_down_answers_503(model: LogLM) -> None:
    srv = LoglmServer(model, port=0).start()
    try:
        srv.closing = True
        st, body = http_json(srv, "GET", "/health", key=None)
        assert st == 503
        client = LogLM.remote(srv.url, model=srv.model_name, max_retries=1, backoff=0.01)
        with pytest.raises(loglm.ServerUnavailableError, match="503.*shutting down"):
            client.generate("hi", max_new_tokens=4)
    finally:
        srv.shutdown()


# ---- a generic (non-loglm) server: retries and the approximations ------------------------------

class _Generic(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: List[str] = []
    fail_first = 0

    def log_message(self, *a: Any) -> None:
        pass

    def _send(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"object": "list", "data": [{"id": "other", "object": "model", "owned_by": "someone"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).hits.append(body["messages"][-1]["content"])
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self._send(503, {"error": {"message": "busy", "type": "server_error"}})
            return
        if body["messages"][-1]["content"] == "bad":
            self._send(400, {"error": {"message": "no thanks", "type": "invalid_request_error"}})
            return
        if body.get("logprobs"):
            top = [{"token": " abnormal", "logprob": -0.5}, {"token": "normal", "logprob": -1.2},
                   {"token": "The", "logprob": -3.0}]
            self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": " abnormal"},
                                          "finish_reason": "length",
                                          "logprobs": {"content": [{"token": " abnormal", "logprob": -0.5,
                                                                    "top_logprobs": top}]}}]})
            return
        self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})


def test_generic_server_retries_and_approximations() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Generic)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        r = LogLM.remote(url, max_retries=3, backoff=0.01, context_length=512)
        _Generic.hits.clear()
        _Generic.fail_first = 2
        out = r.generate("hello", max_new_tokens=4)
        assert out.text == "ok" and out.finish_reason == "stop" and len(_Generic.hits) == 3
        _Generic.hits.clear()
        with pytest.raises(loglm.BadRequestError, match="no thanks"):
            r.generate("bad", max_new_tokens=4)
        assert len(_Generic.hits) == 1, "a 400 is not retried"
        _Generic.fail_first = 10
        with pytest.raises(loglm.ServerUnavailableError, match="after 4 attempts"):
            r.generate("hello", max_new_tokens=4)
        _Generic.fail_first = 0
        assert r.model == "other" and not r.is_loglm and r.context_length == 512
        cs = r.score_choices("Classify", ["normal", "abnormal"])
        assert cs.logprobs == [-1.2, -0.5] and cs.best == "abnormal"
        df = r.detect_anomalies(["a line", "another line"])
        assert list(df["Label"]) == ["abnormal", "abnormal"]
        text, cut = r.fit_text("y" * 5000, 100)
        assert cut and len(text.encode()) < 100 * 3 + 20
        with pytest.raises(loglm.RemoteError, match="no tokenizer"):
            r.tokenize("x")
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_approximate_choice_logprobs() -> None:
    top = [{"token": "ab", "logprob": -0.1}, {"token": " norm", "logprob": -2.0}, {"token": "x", "logprob": -4.0}]
    assert approximate_choice_logprobs(top, ["normal", "abnormal", "zzz"]) == [-2.0, -0.1, -5.0]


# ---- the command ----------------------------------------------------------------------------------

def test_cli_serve_smoke() -> None:
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "loglm", "serve", "--port", "0", "--threads", "1",
                          "--context-length", "1024", "--max-tokens", "64"],
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stderr is not None
        line = p.stderr.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert m, line
        client = LogLM.remote(m.group(0), timeout=60)
        assert client.is_loglm and client.context_length == 1024
        assert client.generate("Say hi.", max_new_tokens=4).completion_tokens <= 4
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=60) == 0
        assert "stopped" in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stderr is not None:
            p.stderr.close()
