"""Second training stage of the default adapter: continue the stage-1 adapter on the
LogLM training split with the anomaly-detection records repeated.

Stage 1 (``scripts/train_default_adapter.py``) saw each of the 332 anomaly-detection
records once; its P("abnormal") separates the classes only weakly. This stage continues
from that adapter (``init_adapter``) on a mix of

- the 332 anomaly-detection records (900-1231), 4 times each,
- every 4th parsing record (1232-2631: 350) as replay,
- the odd-indexed interpretation / root cause / solution records of 0-899 that stage 1
  did not use, every 3rd of them (150),

for one pass with lr 2e-4 (cosine, 3% warm-up). Training records only; no test data is
read. No held-out split here (a record and its copies would straddle it); stage 1's
held-out losses are in its log.

    OMP_NUM_THREADS=2 LOGLM_DATA_DIR=/path/to/data python scripts/train_default_adapter_stage2.py \\
        --init /path/to/stage1-adapter 2>&1 | tee training/smollm2-135m-loglm/train_stage2.log
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from loglm.datasets import dataset_file
from loglm.train import finetune

ROOT = Path(__file__).resolve().parents[1]
ADAPTER = ROOT / "python" / "loglm" / "adapters" / "smollm2-135m-loglm"
LOG = ROOT / "training" / "smollm2-135m-loglm" / "training_log_stage2.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--init", required=True, help="the stage-1 adapter folder")
    ap.add_argument("--out", default=str(ADAPTER))
    ap.add_argument("--log", default=str(LOG))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat-anomaly", type=int, default=4)
    a = ap.parse_args()

    path = dataset_file("loglm/instructions_train.json")
    recs = json.loads(path.read_text(encoding="utf-8"))
    if len(recs) != 2632:
        raise SystemExit(f"expected the 2,632 LogLM training records, found {len(recs)} in {path}")
    anomaly = list(range(900, 1232)) * a.repeat_anomaly
    parsing = list(range(1232, 2632, 4))
    free_text = [i for i in range(0, 900) if i % 2 == 1][::3]
    keep = anomaly + parsing + free_text
    data = [recs[i] for i in keep]
    notes = {
        "data_file": "loglm/instructions_train.json (LogLM training split only)",
        "stage": 2,
        "selection": f"anomaly detection 900-1231 x{a.repeat_anomaly}, parsing 1232-2631 every 4th, "
                     "odd indices of 0-899 every 3rd (free text)",
        "records_selected": len(keep),
        "command": "python scripts/train_default_adapter_stage2.py " + " ".join(sys.argv[1:]),
    }
    res = finetune(None, data, a.out, epochs=1.0, lr=2e-4, dropout=0.0, max_length=384, batch_size=8,
                   grad_accum=1, warmup_ratio=0.03, heldout=0.0, save_dtype="float16", threads=a.threads,
                   device="cpu", dtype="bfloat16", seed=0, progress=True, log_path=a.log, notes=notes,
                   init_adapter=a.init)
    print(json.dumps({"adapter_dir": str(res.adapter_dir), "steps": res.steps, "epochs": res.epochs,
                      "train_loss": res.train_loss, "seconds": res.seconds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
