"""Free-text answers on the validation slice of the LogLM training records (issue 16).

The validation slice is the first 48 free-text training records per capability that no
stage of the shipped adapter trained on (``scripts/train_default_adapter_stage3.py``,
``free_text_split``): what settings and adapters are chosen on, so that the test files
stay untouched until the choice is made. Prints corpus BLEU and ROUGE per capability.

    LOGLM_DATA_DIR=../shared/data python benches/irs_val.py --threads 2 [--adapter DIR|none]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd

from loglm import LogLM
from loglm.datasets import dataset_file
from loglm.evaluate import score_irs

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("interpretation", "root_cause", "solution")


def _split():
    spec = importlib.util.spec_from_file_location("stage3", ROOT / "scripts" / "train_default_adapter_stage3.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.free_text_split()[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--adapter", default="auto", help="adapter folder, 'none', or 'auto' (the shipped one)")
    ap.add_argument("--limit", type=int, default=None, help="first N validation records per capability")
    ap.add_argument("--out", default=None, help="write the rows (with the answers) as JSON here")
    a = ap.parse_args()
    adapter = None if a.adapter == "none" else a.adapter
    model = LogLM.load(adapter=adapter, threads=a.threads)
    recs = json.loads(dataset_file("loglm/instructions_train.json").read_text(encoding="utf-8"))
    val = _split()
    rows = []
    for k, task in enumerate(TASKS):
        idx = [i for i in val if 300 * k <= i < 300 * k + 300][: a.limit]
        df = pd.DataFrame([recs[i] for i in idx], columns=["instruction", "input", "output"])
        row = score_irs(model, df, task, keep_outputs=a.out is not None)
        rows.append(row)
        print(f"{task:15s} n={row['pairs']:3d} BLEU {row['BLEU']:6.2f}  ROUGE-1 {row['ROUGE-1']:6.2f}  "
              f"ROUGE-2 {row['ROUGE-2']:6.2f}  ROUGE-L {row['ROUGE-L']:6.2f}  hit max {row['hit_max_new_tokens']:3d}  "
              f"{row['seconds']:.0f} s", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"adapter": a.adapter, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
