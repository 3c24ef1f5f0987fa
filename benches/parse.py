"""Throughput of loglm's template tree versus drain3, and LLM calls with the LLM on.

    RAYON_NUM_THREADS=2 python benches/parse.py [--data DIR] [--repeat 10] [--threads 2]

Lines: the ``Content`` of the 7 loghub 2k systems (14,000 lines) repeated ``--repeat``
times, the same list for both parsers. drain3 runs with default settings
(``TemplateMinerConfig()``, one ``add_log_message`` per line). loglm is timed in batch mode
from an empty tree (cold) and again over the same lines once the tree knows them (known
patterns), plus the streaming per-line API. LLM calls are counted with a fake model that
answers with the corrected ground-truth template (lines sent to the model vs true templates).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd

SYSTEMS = ["HDFS", "Hadoop", "Zookeeper", "BGL", "HPC", "Linux", "Proxifier"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("LOGLM_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    from drain3 import TemplateMiner as Drain3Miner
    from drain3.template_miner_config import TemplateMinerConfig

    from loglm.parsing import TemplateMiner

    per_sys = {}
    for s in SYSTEMS:
        df = pd.read_csv(args.data / "loghub_2k_corrected" / s / f"{s}_2k.log_structured_corrected.csv")
        per_sys[s] = (df["Content"].tolist(), df["EventTemplate"].tolist())
    base = [line for s in SYSTEMS for line in per_sys[s][0]]
    lines = base * args.repeat
    n = len(lines)

    t0 = time.perf_counter()
    d3 = Drain3Miner(config=TemplateMinerConfig())
    for line in lines:
        d3.add_log_message(line)
    drain3_s = time.perf_counter() - t0

    tm = TemplateMiner(threads=args.threads)
    t0 = time.perf_counter()
    tm.add_log_messages(lines)
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tm.add_log_messages(lines)
    warm_s = time.perf_counter() - t0
    big = lines * 10
    t0 = time.perf_counter()
    tm.add_log_messages(big)
    warm_big_s = time.perf_counter() - t0

    st = TemplateMiner()
    t0 = time.perf_counter()
    for line in lines:
        st.add_log_message(line)
    stream_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    df = TemplateMiner(threads=args.threads).parse(lines)
    frame_s = time.perf_counter() - t0
    assert len(df) == n

    class Oracle:
        def __init__(self, table):
            self.table = table

        def propose_templates(self, batch, examples):
            return [self.table[x] for x in batch]

    llm_rows = []
    for s in SYSTEMS:
        content, truth = per_sys[s]
        m = TemplateMiner(model=Oracle(dict(zip(content, truth))), threads=args.threads)
        m.parse(content, parameters=False)
        c = m.counters
        llm_rows.append((s, c["llm_lines"], c["llm_calls"], len(set(truth)), c["cache_hits"]))

    rate = lambda secs, k=n: k / secs  # noqa: E731
    print(f"## Template tree (benches/parse.py)\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
          f"threads={args.threads}, RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', '-')}, "
          f"Python {platform.python_version()}.\n")
    print(f"Command: `RAYON_NUM_THREADS={args.threads} python benches/parse.py --repeat {args.repeat} --threads {args.threads}`\n")
    print(f"Lines: loghub 2k Content of 7 systems x {args.repeat} = {n:,} lines (same lines for both parsers).\n")
    print("| parser | mode | lines | seconds | lines/s | vs drain3 |")
    print("|---|---|---:|---:|---:|---:|")
    d3r = rate(drain3_s)
    rows = [
        ("drain3 0.9.11 (default config)", "add_log_message per line", n, drain3_s),
        ("loglm tree", "batch, empty tree (cold)", n, cold_s),
        ("loglm tree", "batch, known patterns", n, warm_s),
        ("loglm tree", "batch, known patterns", len(big), warm_big_s),
        ("loglm tree", "add_log_message per line", n, stream_s),
        ("loglm tree", "parse() -> DataFrame with ParameterList, cold", n, frame_s),
    ]
    for name, mode, k, secs in rows:
        r = k / secs
        print(f"| {name} | {mode} | {k:,} | {secs:.3f} | {r:,.0f} | {r / d3r:.1f}x |")
    print("\nLLM in the loop (fake model answering the corrected ground truth; 2,000 lines per system):\n")
    print("| system | lines sent to model | model calls (batches) | true templates | ratio | cache hits |")
    print("|---|---:|---:|---:|---:|---:|")
    tot = [0, 0, 0, 0]
    for s, sent, calls, true, hits in llm_rows:
        print(f"| {s} | {sent} | {calls} | {true} | {sent / true:.2f} | {hits} |")
        tot = [tot[0] + sent, tot[1] + calls, tot[2] + true, tot[3] + hits]
    print(f"| total | {tot[0]} | {tot[1]} | {tot[2]} | {tot[0] / tot[2]:.2f} | {tot[3]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
