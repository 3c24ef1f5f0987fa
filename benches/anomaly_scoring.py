"""Anomaly scoring of many logs: shared-prefix batched scoring vs one prompt at a time.

    LOGLM_DATA_DIR=../shared/data python benches/anomaly_scoring.py [--model NAME] [--n 200] [--threads 2]

Scores the first ``--n`` BGL anomaly-detection test templates twice in one process:
with ``LogLM.anomaly_scores`` (the chat header and instruction, shared by every prompt,
are prefilled once; the rest of consecutive prompts go through the model together) and
with one ``score_choices`` call per log on the same fitted prompt (the way every log was
scored before). Prints both times, the ratio, and the largest difference between the two
sets of probabilities (they are computed the same way, so it should be 0 or float noise).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model name or path (default: the embedded model)")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import loglm
    from loglm.datasets import load_anomaly
    from loglm.prompts import ANOMALY_CHOICES, anomaly_prompt

    model = loglm.LogLM.load(args.model, threads=args.threads)
    logs = load_anomaly("BGL", split="test")["log"].tolist()[: args.n]
    model.anomaly_scores(logs[:2], progress=False)  # warm-up (dense weight copies)

    t0 = time.perf_counter()
    shared = np.array(model.anomaly_scores(logs, progress=False))
    t_shared = time.perf_counter() - t0

    budget = model._log_budget(8)
    t0 = time.perf_counter()
    single = np.array([model.score_choices(anomaly_prompt(model.fit_text(x, budget)[0]), list(ANOMALY_CHOICES)).probs[1]
                       for x in logs])
    t_single = time.perf_counter() - t0

    info = model.info
    print(f"model {os.path.basename(info['path'])} (adapters: {len(info['adapter'])}), "
          f"{len(logs)} BGL test templates, {args.threads} threads")
    print(f"anomaly_scores (shared prefix, batched)  {t_shared:8.1f} s  {len(logs) / t_shared:6.2f} logs/s")
    print(f"score_choices, one log at a time         {t_single:8.1f} s  {len(logs) / t_single:6.2f} logs/s")
    print(f"speed-up {t_single / t_shared:.2f}x, max |difference| of P(abnormal) {np.max(np.abs(shared - single)):.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
