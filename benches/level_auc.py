"""Anomaly ranking by message text alone on loghub systems that carry a level.

One line per template (its first occurrence in ``loghub_2k/<S>/<S>_2k.log_structured.csv``),
abnormal when its level is WARN / ERROR / FATAL / SEVERE / FAILURE / CRITICAL (the level is
not part of the text that is scored). Prints the AUC of: the model alone; the model with the
default evidence (severity words, no example bank); and the model with severity words plus
labelled neighbours from the anomaly training templates of the *other* systems (leave one
system out). EVALUATION.md, "Anomaly verdicts and free-text answers (issue 16)".

    LOGLM_DATA_DIR=../shared/data python benches/level_auc.py --threads 2
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np

import loglm
from loglm.anomaly import AnomalyEvidence
from loglm.datasets import load_instructions
from loglm.evaluate import _auc
from loglm.retrieval import ExampleBank

LEVELS = {"WARN", "WARNING", "ERROR", "FATAL", "SEVERE", "FAILURE", "CRITICAL"}
SYSTEMS = ("HDFS", "Hadoop", "Zookeeper", "BGL")


def one_line_per_template(root: Path, system: str):
    with open(root / "loghub_2k" / system / f"{system}_2k.log_structured.csv", encoding="utf-8", errors="replace") as f:
        seen = {}
        for row in csv.DictReader(f):
            seen.setdefault(row["EventId"], (row["Content"], int(row["Level"].strip().upper() in LEVELS)))
    return [t for t, _ in seen.values()], np.array([y for _, y in seen.values()])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("LOGLM_DATA_DIR", "../shared/data"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    root = Path(args.data)
    model = loglm.LogLM.load(threads=args.threads)
    ins = load_instructions(root, capability="anomaly_detection")
    print("| system | templates (WARN+) | model alone | model + severity | + LOSO neighbours |")
    print("|---|---|---|---|---|")
    for s in SYSTEMS:
        texts, y = one_line_per_template(root, s)
        alone = np.array(model.anomaly_scores(texts, evidence=False, progress=False))
        others = ins[ins["system"].str.lower() != s.lower()]
        bank = ExampleBank([{"task": "anomaly_detection", "input": i, "output": o}
                            for i, o in zip(others["input"], others["output"])])
        sev = AnomalyEvidence().apply(texts, alone)
        nb = AnomalyEvidence.from_bank(bank).apply(texts, alone)
        print(f"| {s} | {len(y)} ({int(y.sum())}) | {_auc(y, alone):.3f} | {_auc(y, sev):.3f} | {_auc(y, nb):.3f} |")


if __name__ == "__main__":
    main()
