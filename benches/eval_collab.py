"""Evaluate the collaborative detector (issue 6): small model alone, LLM alone
(on a sample), coordinated; on HDFS_100k sessions, on raw HDFS_5k lines grouped
by block id, and a zero-label cross-system run (HDFS -> BGL).

    LOGLM_DATA_DIR=../shared/data python benches/eval_collab.py --out bench-out/collab.json

Prints a markdown table (paste into EVALUATION.md) and writes the figures as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd

import loglm
from loglm.collab import CollaborativeDetector, sessions_by_block, sessions_by_window
from loglm.embed import SentenceEncoder
from loglm.metrics import classification_scores, session_labels

ROWS: list[dict] = []


def scores(truth, pred) -> dict:
    s = classification_scores(list(truth), list(pred), pos_label="abnormal")
    return {k: s[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn", "tn")}


def record(dataset: str, method: str, truth, df: pd.DataFrame, det: CollaborativeDetector | None, note: str = "",
           wall: float = 0.0) -> None:
    s = scores(truth, df.Label)
    frac = float((df.Route == "llm").mean())
    row = {"dataset": dataset, "method": method, "n": len(df), **s, "llm_fraction": frac, "wall_s": round(wall, 1),
           "note": note}
    if det is not None:
        row.update({k: det.stats[k] for k in ("llm_calls", "llm_prompt_tokens", "llm_completion_tokens")})
        row["llm_seconds"] = round(det.stats["llm_seconds"], 1)
    ROWS.append(row)
    print(json.dumps(row), flush=True)


def truth_of(labels) -> list:
    return ["abnormal" if str(x).lower() in ("anomaly", "abnormal", "1", "true") else "normal" for x in labels]


def run_llm_alone(dataset: str, det: CollaborativeDetector, sessions: dict, truth: list, n_pos: int, n_neg: int,
                  seed: int) -> None:
    """LLM on a stratified sample, prompt without retrieved examples; reports the
    sample's P/R/F1 and the F1 extrapolated to the full set's prevalence."""
    rng = random.Random(seed)
    keys = list(sessions)
    pos = [i for i, t in enumerate(truth) if t == "abnormal"]
    neg = [i for i, t in enumerate(truth) if t == "normal"]
    idx = sorted(rng.sample(pos, min(n_pos, len(pos))) + rng.sample(neg, min(n_neg, len(neg))))
    det.stats = det._zero_stats()
    t0 = time.perf_counter()
    preds = []
    for i in idx:
        lab, _, _ = det._ask_llm(det.build_prompt(sessions[keys[i]], []))
        preds.append("abnormal" if lab else "normal")
    wall = time.perf_counter() - t0
    tr = [truth[i] for i in idx]
    s = scores(tr, preds)
    tpr = s["tp"] / max(s["tp"] + s["fn"], 1)
    fpr = s["fp"] / max(s["fp"] + s["tn"], 1)
    P, N = len(pos), len(neg)
    tp, fp = tpr * P, fpr * N
    prec = tp / (tp + fp) if tp + fp > 0 else 0.0
    f1_est = 2 * prec * tpr / (prec + tpr) if prec + tpr > 0 else 0.0
    row = {"dataset": dataset, "method": "LLM alone (sample)", "n": len(idx), **s, "llm_fraction": 1.0,
           "wall_s": round(wall, 1), "f1_at_full_prevalence": round(f1_est, 4), "tpr": tpr, "fpr": fpr,
           "llm_calls": det.stats["llm_calls"], "llm_prompt_tokens": det.stats["llm_prompt_tokens"],
           "llm_completion_tokens": det.stats["llm_completion_tokens"],
           "llm_seconds": round(det.stats["llm_seconds"], 1),
           "note": f"stratified sample {len([i for i in idx if truth[i]=='abnormal'])} abnormal + "
                   f"{len([i for i in idx if truth[i]=='normal'])} normal"}
    ROWS.append(row)
    print(json.dumps(row), flush=True)


def three_ways(dataset: str, enc, llm, train: dict, ytrain, test: dict, ytest, args, **kw) -> None:
    truth = truth_of(ytest)
    small = CollaborativeDetector(enc, None, seed=args.seed, progress=True, **kw).fit(train, ytrain)
    t0 = time.perf_counter()
    df = small.report(test)
    record(dataset, "small model alone (KNN)", truth, df, small, wall=time.perf_counter() - t0)
    det = CollaborativeDetector(enc, llm, seed=args.seed, reasoning=args.reasoning, progress=True,
                                llm_weight=args.llm_weight, llm_verdict=args.llm_verdict, **kw).fit(train, ytrain)
    t0 = time.perf_counter()
    df = det.report(test, feedback=True)  # LLM verdicts join the memory as the run goes (the papers' loop)
    wall = time.perf_counter() - t0
    name = "coordinated (AE router + KNN + LLM)"
    if args.llm_weight is not None:
        name = f"coordinated, LLM weight {args.llm_weight:g}"
    if args.llm_verdict is not None:
        name += f", LLM verdict by {args.llm_verdict}"
    record(dataset, name, truth, df, det, wall=wall,
           note=f"routes: {df.Route.value_counts().to_dict()}")
    if args.llm_sample > 0:
        run_llm_alone(dataset, det, test, truth, args.llm_sample // 2, args.llm_sample - args.llm_sample // 2,
                      args.seed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("LOGLM_DATA_DIR", "../shared/data"))
    ap.add_argument("--out", default="bench-out/collab.json")
    ap.add_argument("--llm-sample", type=int, default=40, help="sessions for the LLM-alone rows (half abnormal)")
    ap.add_argument("--reasoning", action="store_true", help="generate a JSON verdict + reason before choice scoring")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--llm-weight", type=float, default=None,
                    help="weight of the LLM in the verdict on novel sessions (default: the detector's, 0.4 supervised)")
    ap.add_argument("--llm-verdict", default=None, choices=["session", "lines"],
                    help="how the LLM judges a novel session (CollaborativeDetector llm_verdict; default: the "
                         "detector's, line scores in zero-label mode, the session prompt otherwise)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--window", type=int, default=20, help="BGL window size (lines) in the zero-label run")
    ap.add_argument("--zl-examples", type=int, default=3, help="retrieved examples per prompt in the zero-label run")
    ap.add_argument("--only", default="hdfs100k,hdfs5k,zero", help="comma list of parts to run")
    args = ap.parse_args()
    data = Path(args.data)
    parts = set(args.only.split(","))
    enc = SentenceEncoder.load()
    llm = loglm.LogLM.load(threads=args.threads)

    if "hdfs100k" in parts:
        sess = pd.read_csv(data / "hdfs" / "HDFS_100k_sessions.csv")
        tpl = pd.read_csv(data / "hdfs" / "HDFS_100k_templates.csv")
        text = dict(zip(tpl.EventId, tpl.EventTemplate))
        sess["lines"] = sess.EventSequence.str.split().map(lambda ids: [text[i] for i in ids])
        tr, te = sess[sess.Split == "train"], sess[sess.Split == "test"]
        three_ways("HDFS_100k (template sessions)", enc, llm, dict(zip(tr.BlockId, tr.lines)), tr.Label,
                   dict(zip(te.BlockId, te.lines)), te.Label, args)

    if "hdfs5k" in parts:
        lines = (data / "hdfs" / "HDFS_5k.log").read_text(encoding="utf-8").splitlines()
        blocks = sessions_by_block(lines)
        lab = pd.read_csv(data / "hdfs" / "HDFS_5k.log_block_labels.csv")
        lab = dict(zip(lab.BlockId, lab.Label))
        keys = [k for k in blocks if k in lab]
        rng = random.Random(args.seed)
        pos = [k for k in keys if lab[k] == "Anomaly"]
        neg = [k for k in keys if lab[k] != "Anomaly"]
        rng.shuffle(pos)
        rng.shuffle(neg)
        tr_keys = set(pos[: len(pos) // 2] + neg[: len(neg) // 2])
        train = {k: blocks[k] for k in keys if k in tr_keys}
        test = {k: blocks[k] for k in keys if k not in tr_keys}
        three_ways("HDFS_5k raw lines by block (50/50 stratified split, seed 0)", enc, llm, train,
                   [lab[k] for k in train], test, [lab[k] for k in test], args)

    if "zero" in parts:
        sess = pd.read_csv(data / "hdfs" / "HDFS_100k_sessions.csv")
        tpl = pd.read_csv(data / "hdfs" / "HDFS_100k_templates.csv")
        text = dict(zip(tpl.EventId, tpl.EventTemplate))
        tr = sess[sess.Split == "train"]
        src = dict(zip(tr.BlockId, tr.EventSequence.str.split().map(lambda ids: [text[i] for i in ids])))
        raw = (data / "loghub_2k" / "BGL" / "BGL_2k.log").read_text(encoding="utf-8", errors="replace").splitlines()
        raw = [r for r in raw if r.strip()]
        line_lab = ["normal" if r.split(" ", 1)[0] == "-" else "abnormal" for r in raw]
        content = [r.split(" ", 9)[-1] if len(r.split(" ", 9)) == 10 else r for r in raw]  # drop the BGL header
        size = args.window
        wins = sessions_by_window(content, size=size)
        win_id = [f"w{i // size}" for i in range(len(content))][: len(wins) * size]
        truth_s = session_labels(win_id, line_lab[: len(win_id)])
        truth = ["abnormal" if truth_s[k] else "normal" for k in wins]
        small = CollaborativeDetector(enc, None, mode="zero_label", seed=args.seed).fit(src, tr.Label)
        t0 = time.perf_counter()
        df = small.report(wins)
        zl = f"zero-label HDFS_100k -> BGL_2k ({size}-line windows)"
        record(zl, "small model alone (source KNN)", truth, df, small,
               wall=time.perf_counter() - t0)
        det = CollaborativeDetector(enc, llm, mode="zero_label", seed=args.seed, reasoning=args.reasoning,
                                    n_examples=args.zl_examples, llm_verdict=args.llm_verdict,
                                    progress=True).fit(src, tr.Label)
        t0 = time.perf_counter()
        df = det.report(wins, feedback=True)
        record(zl, "zero-label collaborative (sim router + LLM pseudo-labels)"
               + (f", LLM verdict by {args.llm_verdict}" if args.llm_verdict is not None else ""),
               truth, df, det, wall=time.perf_counter() - t0,
               note=f"routes: {df.Route.value_counts().to_dict()}; pseudo-labels added {det.stats['feedback_added']}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(ROWS, indent=1))
    print()
    print("| dataset | method | n | P | R | F1 | to LLM | LLM calls | tokens (prompt+completion) | LLM s | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in ROWS:
        tok = f"{r.get('llm_prompt_tokens', 0)}+{r.get('llm_completion_tokens', 0)}"
        f1 = f"{r['f1']:.3f}" + (f" (est. {r['f1_at_full_prevalence']:.3f} at full prevalence)"
                                 if "f1_at_full_prevalence" in r else "")
        print(f"| {r['dataset']} | {r['method']} | {r['n']} | {r['precision']:.3f} | {r['recall']:.3f} | {f1} | "
              f"{r['llm_fraction']:.1%} | {r.get('llm_calls', 0)} | {tok} | {r.get('llm_seconds', 0)} | {r['wall_s']} |")


if __name__ == "__main__":
    main()
