"""Time loglm.metrics against sacrebleu and rouge-score on 10,000+ long pairs.

Usage:  RAYON_NUM_THREADS=2 LOGLM_DATA_DIR=../shared/data python benches/metrics.py [--pairs 12000]

Pairs are built from the LogLM answers (interpretation / root cause / solution
train and test sets): each reference is paired with a perturbed copy (word drops,
repeats, case changes), so answers are as long as real model outputs. Scores are
checked to agree to 1e-9 before the ratios are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np


def build_pairs(data_dir: Path, n: int):
    recs = json.loads((data_dir / "loglm" / "instructions_train.json").read_text())[:900]
    for t in ("log_interpretation", "root_cause_analysis", "solution_recommendation"):
        recs += json.loads((data_dir / "loglm" / f"{t}_test.json").read_text())
    outs = [r["output"] for r in recs]
    rng = random.Random(0)
    hyps, refs = [], []
    while len(hyps) < n:
        ref = rng.choice(outs)
        words = ref.split(" ")
        h = [w.upper() if rng.random() < 0.05 else w for w in words if rng.random() > 0.15]
        if rng.random() < 0.3:
            h += rng.choice(outs).split(" ")[:20]
        hyps.append(" ".join(h))
        refs.append(ref)
    return hyps, refs


def timed(f):
    t = time.perf_counter()
    r = f()
    return r, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=12000)
    ap.add_argument("--data", default=os.environ.get("LOGLM_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    args = ap.parse_args()

    import sacrebleu
    from rouge_score import rouge_scorer

    from loglm import metrics

    hyps, refs = build_pairs(Path(args.data), args.pairs)
    n = len(hyps)
    mean_words = np.mean([len(r.split()) for r in refs])
    print(f"{n} pairs, mean reference length {mean_words:.0f} words, RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'all')}, cpus={os.cpu_count()}")
    rows = []

    # corpus BLEU
    want, t_ref = timed(lambda: sacrebleu.corpus_bleu(hyps, [refs]).score)
    got, t_us = timed(lambda: metrics.bleu(hyps, refs, sentence_scores=False).score)
    assert abs(got - want) <= 1e-9, (got, want)
    rows.append(("corpus BLEU (13a)", t_ref, t_us))

    # sentence BLEU
    def sb_ref():
        return np.array([sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hyps, refs)])

    want, t_ref = timed(sb_ref)
    got, t_us = timed(lambda: metrics.sentence_bleu(hyps, refs))
    assert np.abs(got - want).max() <= 1e-9
    rows.append(("sentence BLEU (13a, eff)", t_ref, t_us))

    # ROUGE-1/2/L, with and without stemmer
    types = ["rouge1", "rouge2", "rougeL"]
    for stem in (False, True):
        sc = rouge_scorer.RougeScorer(types, use_stemmer=stem)

        def rr():
            out = []
            for h, r in zip(hyps, refs):
                s = sc.score(r, h)
                out.append([s[t].fmeasure for t in types])
            return np.array(out)

        want, t_ref = timed(rr)
        got, t_us = timed(lambda: metrics.rouge(hyps, refs, types=types, use_stemmer=stem))
        assert np.abs(got.array[:, :, 2] - want).max() <= 1e-9
        rows.append((f"ROUGE-1/2/L{' +stem' if stem else ''}", t_ref, t_us))

    print(f"{'metric':28s} {'reference s':>12s} {'loglm s':>9s} {'ref pairs/s':>12s} {'loglm pairs/s':>14s} {'speed-up':>9s}")
    for name, a, b in rows:
        print(f"{name:28s} {a:12.3f} {b:9.3f} {n / a:12.0f} {n / b:14.0f} {a / b:8.1f}x")
    print("all scores identical to the references within 1e-9")


if __name__ == "__main__":
    main()
