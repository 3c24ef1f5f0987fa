"""Third training stage of the default adapter (issue 16): more free-text answers.

Stages 1 and 2 saw 200 of the 300 training records of each free-text capability
(interpretation 0-299, root cause 300-599, solution 600-899): the even indices (stage 1)
and every 3rd odd one (stage 2, ``i % 6 == 1``). The other 100 per capability
(odd, ``i % 6`` in {3, 5}) were never seen; they are split here into

- a validation slice: the first 48 of them per capability (144 records), used only to
  decide whether this stage is kept (``benches/irs_val.py``), never trained on, and
- 52 new training records per capability (156), trained twice,

continued from the shipped stage-2 adapter (``init_adapter``) with replay of what it
already knows: every 2nd free-text record seen before (300), the 332 anomaly-detection
records once, every 8th parsing record (175). One pass, lr 2e-4 (cosine, 3% warm-up).
Training records only; no test data is read.

    OMP_NUM_THREADS=1 LOGLM_DATA_DIR=/path/to/data python scripts/train_default_adapter_stage3.py \\
        --out /tmp/stage3 2>&1 | tee training/smollm2-135m-loglm/train_stage3.log
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import List, Tuple

from loglm.datasets import dataset_file
from loglm.train import finetune

ROOT = Path(__file__).resolve().parents[1]
ADAPTER = ROOT / "python" / "loglm" / "adapters" / "smollm2-135m-loglm"
LOG = ROOT / "training" / "smollm2-135m-loglm" / "training_log_stage3.json"


def free_text_split() -> Tuple[List[int], List[int]]:
    """(validation, new training) indices among the free-text records no earlier stage saw;
    the validation slice is ``benches/irs_val.py``'s."""
    spec = importlib.util.spec_from_file_location("irs_val", ROOT / "benches" / "irs_val.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    val = mod.validation_split()
    new = [i for i in range(900) if i % 2 == 1 and i % 6 in (3, 5) and i not in set(val)]
    return val, new


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--init", default=str(ADAPTER), help="the stage-2 adapter folder (default: the shipped one)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--log", default=str(LOG))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-4)
    a = ap.parse_args()

    path = dataset_file("loglm/instructions_train.json")
    recs = json.loads(path.read_text(encoding="utf-8"))
    if len(recs) != 2632:
        raise SystemExit(f"expected the 2,632 LogLM training records, found {len(recs)} in {path}")
    val, new = free_text_split()
    seen = [i for i in range(900) if i % 2 == 0 or i % 6 == 1]
    keep = new * 2 + seen[::2] + list(range(900, 1232)) + list(range(1232, 2632, 8))
    assert not set(keep) & set(val)
    data = [recs[i] for i in keep]
    notes = {
        "data_file": "loglm/instructions_train.json (LogLM training split only)",
        "stage": 3,
        "selection": "new free text (odd, i%6 in {3,5}, after the first 48 per capability) x2, every 2nd "
                     "free-text record of stages 1-2, anomaly detection 900-1231 x1, parsing every 8th",
        "validation": "first 48 unseen free-text records per capability (benches/irs_val.py; never trained on)",
        "records_selected": len(keep),
        "command": "python scripts/train_default_adapter_stage3.py " + " ".join(sys.argv[1:]),
    }
    res = finetune(None, data, a.out, epochs=1.0, lr=a.lr, dropout=0.0, max_length=384, batch_size=8,
                   grad_accum=1, warmup_ratio=0.03, heldout=0.0, save_dtype="float16", threads=a.threads,
                   device="cpu", dtype="bfloat16", seed=0, progress=True, log_path=a.log, notes=notes,
                   init_adapter=a.init)
    print(json.dumps({"adapter_dir": str(res.adapter_dir), "steps": res.steps, "epochs": res.epochs,
                      "train_loss": res.train_loss, "seconds": res.seconds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
