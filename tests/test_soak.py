"""Soak test of ``loglm serve`` (issue 19): 64 concurrent clients on loopback for
``LOGLM_SOAK_SECONDS`` (default 60) with a mix of good, bad, slow and vanishing clients.
Every good request must be answered 200 with a completion, every bad one a 4xx, and the
server must still answer ``/health`` 200 at the end. Bounded in clients, time and bytes;
only 127.0.0.1 is contacted."""
from __future__ import annotations

import http.client
import json
import os
import random
import socket
import threading
import time
from collections import Counter
from typing import Dict, List, Tuple

import pytest

from loglm import LogLM
from loglm.serve import LoglmServer

pytest.importorskip("uvicorn", reason='needs the serve extra: pip install -e ".[serve]"')

CLIENTS = 64
SECONDS = float(os.environ.get("LOGLM_SOAK_SECONDS", "60"))
GOOD = {"messages": [{"role": "user", "content": "Is this log abnormal? kernel: EXT4-fs error on sda1"}],
        "max_tokens": 4, "temperature": 0}
BAD_BODIES = [
    b"{not json",
    json.dumps({"messages": "not a list", "max_tokens": 4}).encode(),
    json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": -3}).encode(),
    json.dumps({"messages": [{"role": "user", "content": "x"}], "top_k": 10 ** 30}).encode(),
    b"[" * 5000 + b"]" * 5000,
]


def _post(port: int, body: bytes, timeout: float = 300.0) -> Tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _client(kind: str, port: int, stop: float, seed: int, out: List[Tuple[str, int, str]]) -> None:
    rng = random.Random(seed)
    while time.monotonic() < stop:
        try:
            if kind == "good":
                status, payload = _post(port, json.dumps(GOOD).encode())
                ok = status == 200 and json.loads(payload)["choices"][0]["message"]["content"] is not None
                out.append((kind, status, "" if ok else payload[:200].decode("utf-8", "replace")))
            elif kind == "bad":
                status, _ = _post(port, rng.choice(BAD_BODIES))
                out.append((kind, status, ""))
            elif kind == "slow":  # headers trickle in, then the body
                with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                    body = json.dumps(GOOD).encode()
                    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                    for i in range(0, len(head), 8):
                        s.sendall(head[i:i + 8])
                        time.sleep(0.05)
                    s.sendall(body)
                    s.recv(65536)
                out.append((kind, 0, ""))
            else:  # vanishing: send a request that would generate a while, then hang up
                with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                    body = json.dumps(dict(GOOD, max_tokens=200)).encode()
                    s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
                    time.sleep(rng.uniform(0.0, 0.3))
                out.append((kind, 0, ""))
        except (OSError, http.client.HTTPException) as e:
            out.append((kind, -1, repr(e)))


@pytest.mark.slow
def test_64_clients_good_bad_slow_and_vanishing() -> None:
    model = LogLM.load(threads=2, context_length=1024)
    with LoglmServer(model, port=0, max_tokens=256) as srv:
        stop = time.monotonic() + SECONDS
        results: Dict[str, List[Tuple[str, int, str]]] = {}
        kinds = ["good"] * 32 + ["bad"] * 16 + ["slow"] * 8 + ["vanishing"] * 8
        threads = []
        for i, kind in enumerate(kinds):
            results[f"{kind}{i}"] = []
            t = threading.Thread(target=_client, args=(kind, srv.port, stop, i, results[f"{kind}{i}"]), daemon=True)
            threads.append(t)
            t.start()
        for t in threads:
            t.join(timeout=SECONDS + 360)
        assert not any(t.is_alive() for t in threads), "a client is still waiting for an answer"
        flat = [r for rs in results.values() for r in rs]
        good = [r for r in flat if r[0] == "good"]
        bad = [r for r in flat if r[0] == "bad"]
        assert good and all(status == 200 and not err for _, status, err in good), \
            Counter((s, e[:80]) for _, s, e in good if s != 200 or e)
        assert bad and all(400 <= status < 500 for _, status, _ in bad), Counter(s for _, s, _ in bad)
        assert not [r for r in flat if r[1] == -1 and r[0] in ("good", "bad")]
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
        print(f"soak: {len(good)} good answered, {len(bad)} bad refused, "
              f"{sum(r[0] == 'slow' for r in flat)} slow, {sum(r[0] == 'vanishing' for r in flat)} vanished")
