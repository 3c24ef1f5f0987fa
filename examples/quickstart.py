"""Quickstart: load the embedded default model and analyse a few log lines.

    python examples/quickstart.py [LOGFILE]

Without a file it uses a handful of sample lines written for this example.
"""
from __future__ import annotations

import sys
import time

import loglm

SAMPLE = [
    "2024-03-02 10:15:01 INFO  [main] Starting service on port 8080",
    "2024-03-02 10:15:07 INFO  [worker-3] Connection from 10.0.4.17 accepted",
    "2024-03-02 10:15:09 INFO  [worker-1] Connection from 10.0.4.23 accepted",
    "2024-03-02 10:16:42 WARN  [worker-3] Slow query took 5231 ms on table orders",
    "2024-03-02 10:17:03 ERROR [worker-1] java.io.IOException: No space left on device while writing /var/data/seg-0042.log",
    "2024-03-02 10:17:04 INFO  [worker-3] Connection from 10.0.4.17 closed",
]


def main() -> None:
    lines = loglm.read_log_lines(sys.argv[1]) if len(sys.argv) > 1 else SAMPLE
    t = time.time()
    model = loglm.LogLM.load()
    print(f"loaded {model!r} in {time.time() - t:.1f}s\n")

    print("== templates (template tree + LLM for new patterns)")
    df = model.parse(lines)
    for tid, tpl in df[["EventId", "EventTemplate"]].drop_duplicates().itertuples(index=False):
        print(f"  {tid}  {tpl}")

    print("\n== anomaly scores (P(abnormal) by choice scoring)")
    scores = model.detect_anomalies(lines)
    for line, s in zip(lines, scores["Score"]):
        print(f"  {s:.2f}  {line[:90]}")

    worst = lines[int(scores["Score"].to_numpy().argmax())]
    print(f"\n== interpretation of the most suspicious line:\n  {worst}\n")
    for piece in model.interpret(worst, stream=True, max_new_tokens=120):
        print(piece, end="", flush=True)
    print()
    r = model.generate("In one sentence, what should an operator do about: " + worst, max_new_tokens=60)
    print(f"\n== suggestion\n{r.text}\n")
    print(f"(prefill {r.prefill_tokens_per_s:.0f} tok/s, decode {r.decode_tokens_per_s:.0f} tok/s)")


if __name__ == "__main__":
    main()
