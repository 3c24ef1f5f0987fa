"""Throughput of ``loglm serve`` under 1, 4 and 16 concurrent clients on loopback.

    RAYON_NUM_THREADS=2 python benches/serve.py [--threads 2] [--requests 8] [--max-tokens 64]

Starts ``loglm serve`` (a subprocess, ``--threads``), then drives it with C concurrent
streaming clients (threads, each sending ``--requests`` streamed chat completions one
after another over plain HTTP, so any version of the server can be measured): fixed
prompts asking to interpret real loghub lines (``LOGLM_DATA_DIR``), greedy,
``--max-tokens`` tokens each (end-of-sequence ignored, so every request costs the same).
Prints requests/s, completion tokens/s, time to first token p50/p95, latency p50/p95 and
the ratio to the 1-client figure, for two servers:

- ``batched``: the default server (``--max-batch 16``: concurrent requests share the
  engine's running batch);
- ``unbatched``: ``--max-batch 1``, one sequence at a time.

The server measured is the ``loglm`` on ``PYTHONPATH``: point it at another checkout to
compare versions on the same machine in one sitting.

For reference, the engine called in process on the same prompts (``generate`` with
``max_batch`` = C) after the servers are stopped. ``--clients 1,4`` / ``--configs
batched`` narrow the run.

``--late N`` adds the issue-17 latency check "time to first token while a long batch is
running": ``--background`` clients (default 15) each stream one long request
(``--background-tokens``, default 256); once every one of them has its first token, N late
requests arrive one after another (8 tokens each) and their TTFT is reported (p50 / p95 /
max), together with the background streams' decode rate while they join.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Dict, List, Tuple

CONFIGS = {"batched": ["--max-batch", "16"], "unbatched": ["--max-batch", "1"]}


def log_lines(n: int) -> List[str]:
    root = Path(os.environ.get("LOGLM_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    lines: List[str] = []
    for system in ["HDFS", "BGL", "Linux", "Zookeeper", "Hadoop", "HPC", "Proxifier"]:
        p = root / "loghub_2k" / system / f"{system}_2k.log"
        if p.is_file():
            lines += [x.rstrip("\r") for x in p.read_text(errors="replace").splitlines()[:20]]
    if not lines:  # synthetic fallback
        lines = [f"2024-01-0{i % 9 + 1} 10:{i % 60:02d}:00 WARN worker-{i % 7} slow batch {i} ({i * 13 % 997} ms)"
                 for i in range(140)]
    return [lines[(i * 7) % len(lines)] for i in range(n)]


def prompt(line: str) -> str:
    return "Interpret the given log and explain its content.\n" + line


def pct(xs: List[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def start_server(args: argparse.Namespace, extra: List[str]) -> Any:
    longest = max(args.max_tokens, args.background_tokens if args.late else 0, 64)
    cmd = [sys.executable, "-m", "loglm", "serve", "--port", "0", "--threads", str(args.threads),
           "--max-tokens", str(longest), *extra]
    if args.model:
        cmd += ["--model", args.model]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    line = p.stderr.readline()
    m = re.search(r"http://[^ ]+:\d+", line)
    if not m:
        p.kill()
        raise SystemExit(f"loglm serve did not start: {line}{p.stderr.read()}")
    return p, m.group(0)


def stream_one(url: str, text: str, max_tokens: int) -> Tuple[float, float, int]:
    """One streamed chat completion: (seconds to the first token, seconds in all, tokens)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
                       "temperature": 0, "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    first = 0.0
    tokens = 0
    for line in resp:
        line = line.strip()
        if not line.startswith(b"data:") or line == b"data: [DONE]":
            continue
        obj = json.loads(line[5:])
        if obj.get("usage"):
            tokens = int(obj["usage"]["completion_tokens"])
        if not first and any((c.get("delta") or {}).get("content") for c in obj.get("choices") or []):
            first = time.perf_counter() - t0
    conn.close()
    return first, time.perf_counter() - t0, tokens


def drive(url: str, clients: int, requests: int, max_tokens: int) -> Dict[str, Any]:
    prompts = [prompt(x) for x in log_lines(clients * requests)]
    lat: List[float] = []
    ttft: List[float] = []
    toks = [0]
    lock = threading.Lock()
    errors: List[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        barrier.wait()
        try:
            for i in range(requests):
                first, dt, n = stream_one(url, prompts[c * requests + i], max_tokens)
                with lock:
                    lat.append(dt)
                    ttft.append(first)
                    toks[0] += n
        except BaseException as e:  # reported after the run
            errors.append(e)

    ts = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    n = clients * requests
    return {"clients": clients, "requests": n, "wall_s": wall, "req_per_s": n / wall, "tok_per_s": toks[0] / wall,
            "ttft_p50_s": pct(ttft, 0.5), "ttft_p95_s": pct(ttft, 0.95),
            "p50_s": pct(lat, 0.5), "p95_s": pct(lat, 0.95)}


def late_ttft(url: str, background: int, late: int, bg_tokens: int) -> Dict[str, Any]:
    """TTFT of ``late`` requests that join ``background`` long-running streams."""
    prompts = [prompt(x) for x in log_lines(background + late)]
    started = threading.Semaphore(0)
    errors: List[BaseException] = []
    bg_tokens_done = [0]
    lock = threading.Lock()

    def stream_bg(text: str) -> None:
        first = [True]
        try:
            u = urllib.parse.urlsplit(url)
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=900)
            body = json.dumps({"messages": [{"role": "user", "content": text}], "max_tokens": bg_tokens,
                               "temperature": 0, "ignore_eos": True, "stream": True}).encode()
            conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
            for line in resp:
                line = line.strip()
                if not line.startswith(b"data:") or line == b"data: [DONE]":
                    continue
                # a token, not the head chunk (its delta is the role with an empty content)
                if any((c.get("delta") or {}).get("content") for c in json.loads(line[5:]).get("choices") or []):
                    with lock:
                        bg_tokens_done[0] += 1
                    if first[0]:
                        started.release()
                        first[0] = False
            conn.close()
        except BaseException as e:  # reported after the run
            errors.append(e)
        finally:
            if first[0]:  # never started: do not leave the main thread waiting
                started.release()

    ts = [threading.Thread(target=stream_bg, args=(p,)) for p in prompts[:background]]
    for t in ts:
        t.start()
    for _ in ts:
        started.acquire()
    if errors:
        raise errors[0]
    firsts: List[float] = []
    t0, n0 = time.perf_counter(), bg_tokens_done[0]
    for text in prompts[background:]:
        first, _, _ = stream_one(url, text, 8)
        firsts.append(first)
    dt, dn = time.perf_counter() - t0, bg_tokens_done[0] - n0
    running = any(t.is_alive() for t in ts)
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return {"background": background, "late": late, "ttft_p50_s": pct(firsts, 0.5), "ttft_p95_s": pct(firsts, 0.95),
            "ttft_max_s": max(firsts), "ttft_each_s": [round(f, 3) for f in firsts], "background_pieces_per_s": dn / dt, "batch_still_running": running}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF file (default: the embedded SmolLM2-135M Q4_1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--requests", type=int, default=8, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--clients", default="1,4,16,32", help="client counts (empty: only --late)")
    ap.add_argument("--configs", default="batched,unbatched")
    ap.add_argument("--no-engine", action="store_true", help="skip the in-process engine reference")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--late", type=int, default=0, help="late requests joining a running batch (TTFT check)")
    ap.add_argument("--background", type=int, default=15)
    ap.add_argument("--background-tokens", type=int, default=256)
    args = ap.parse_args()
    levels = [int(x) for x in args.clients.split(",") if x]
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS:
            raise SystemExit(f"unknown config {c!r}; known: {', '.join(CONFIGS)}")

    rows: List[Dict[str, Any]] = []
    late_rows: List[Dict[str, Any]] = []
    for cfg in configs:
        proc, url = start_server(args, CONFIGS[cfg])
        try:
            drive(url, 1, 1, 4)  # warm-up
            if args.late:
                r = late_ttft(url, args.background, args.late, args.background_tokens)
                r["config"] = cfg
                late_rows.append(r)
                print(f"[serve bench] {cfg} late TTFT p95 {r['ttft_p95_s']:.2f} s", file=sys.stderr, flush=True)
            for c in levels:
                r = drive(url, c, args.requests, args.max_tokens)
                r["config"] = cfg
                rows.append(r)
                print(f"[serve bench] {cfg} {c} clients: {r['tok_per_s']:.1f} tok/s", file=sys.stderr, flush=True)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
    if not args.no_engine:
        from loglm import LogLM

        m = LogLM.load(args.model, threads=args.threads)
        m.generate(prompt("warm up"), max_new_tokens=4)
        for c in levels:
            prompts = [prompt(x) for x in log_lines(c * args.requests)]
            t0 = time.perf_counter()
            outs = m.generate(prompts, max_new_tokens=args.max_tokens, ignore_eos=True, max_batch=c)
            wall = time.perf_counter() - t0
            n = len(prompts)
            rows.append({"config": "engine in-process", "clients": c, "requests": n, "wall_s": wall,
                         "req_per_s": n / wall, "tok_per_s": sum(o.completion_tokens for o in outs) / wall,
                         "ttft_p50_s": float("nan"), "ttft_p95_s": float("nan"),
                         "p50_s": float("nan"), "p95_s": float("nan")})
    base = {r["config"]: r["tok_per_s"] for r in rows if r["clients"] == min(levels, default=0)}
    for r in rows:
        r["ratio_vs_1"] = r["tok_per_s"] / base[r["config"]]
    if args.json:
        print(json.dumps({"threads": args.threads, "max_tokens": args.max_tokens, "rows": rows, "late": late_rows},
                         indent=2))
        return 0
    if late_rows:
        print(f"time to first token of {args.late} late requests joining {args.background} running streams "
              f"({args.background_tokens} tokens each)")
        print("| server | TTFT p50 (s) | TTFT p95 (s) | TTFT max (s) | background pieces/s meanwhile | batch still running |")
        print("|---|---:|---:|---:|---:|---|")
        for r in late_rows:
            print(f"| {r['config']} | {r['ttft_p50_s']:.2f} | {r['ttft_p95_s']:.2f} | {r['ttft_max_s']:.2f} | "
                  f"{r['background_pieces_per_s']:.1f} | {r['batch_still_running']} |")
        print()
    if not rows:
        return 0
    print(f"loglm serve, {args.threads} threads, {args.max_tokens} tokens per request (greedy, EOS ignored), "
          f"{args.requests} requests per client")
    print("| server | clients | requests | req/s | completion tok/s | TTFT p50 (s) | TTFT p95 (s) "
          "| p50 latency (s) | p95 latency (s) | tok/s vs 1 client |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def f(v: float) -> str:
        return "–" if v != v else f"{v:.2f}"

    for r in rows:
        print(f"| {r['config']} | {r['clients']} | {r['requests']} | {r['req_per_s']:.2f} | {r['tok_per_s']:.1f} | "
              f"{f(r['ttft_p50_s'])} | {f(r['ttft_p95_s'])} | {f(r['p50_s'])} | {f(r['p95_s'])} | "
              f"{r['ratio_vs_1']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
