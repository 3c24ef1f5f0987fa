"""Free-text answers on the validation slice of the LogLM training records (issue 16).

The validation slice is the first 48 free-text training records per capability that no
stage of the shipped adapter trained on (:func:`validation_split`): what settings and
adapters are chosen on, so that the test files stay untouched until the choice is made. Prints corpus BLEU and ROUGE per capability.

    LOGLM_DATA_DIR=../shared/data python benches/irs_val.py --threads 2 [--adapter DIR|none]
        [--known-answers SIMILARITY]

``--known-answers`` gives the model a bank of the free-text training records outside the
validation slice (:meth:`loglm.LogLM.use_examples`), so a record whose log is (nearly) that
of a bank record gets the bank's answer: how :data:`loglm.retrieval.KNOWN_ANSWER_SIMILARITY`
was chosen.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List

import pandas as pd

from loglm import LogLM
from loglm.datasets import dataset_file
from loglm.evaluate import score_irs

TASKS = ("interpretation", "root_cause", "solution")
VAL_PER_CAPABILITY = 48


def validation_split() -> List[int]:
    """The validation slice: of the free-text training records (interpretation 0-299, root
    cause 300-599, solution 600-899), the shipped adapter's stage 1 saw the even indices and
    stage 2 every 3rd odd one (``i % 6 == 1``); the first 48 per capability of the rest
    (odd, ``i % 6`` in {3, 5}) are never trained on."""
    val: List[int] = []
    for cap in range(3):
        unseen = [i for i in range(300 * cap, 300 * cap + 300) if i % 2 == 1 and i % 6 in (3, 5)]
        val += unseen[:VAL_PER_CAPABILITY]
    return val


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--adapter", default="auto", help="adapter folder, 'none', or 'auto' (the shipped one)")
    ap.add_argument("--limit", type=int, default=None, help="first N validation records per capability")
    ap.add_argument("--out", default=None, help="write the rows (with the answers) as JSON here")
    ap.add_argument("--repetition-penalty", type=float, default=1.0)
    ap.add_argument("--no-trim", action="store_true", help="keep answers whole (no ANSWER_WORDS cut)")
    ap.add_argument("--known-answers", type=float, default=None, metavar="SIMILARITY",
                    help="answer from the other training records from this similarity (default: never)")
    a = ap.parse_args()
    adapter = None if a.adapter == "none" else a.adapter
    model = LogLM.load(adapter=adapter, threads=a.threads)
    recs = json.loads(dataset_file("loglm/instructions_train.json").read_text(encoding="utf-8"))
    val = validation_split()
    if a.known_answers is not None:
        from loglm.retrieval import FREE_TEXT_TASKS, ExampleBank

        held = set(val)
        bank = ExampleBank([{"task": FREE_TEXT_TASKS[i // 300], **recs[i]} for i in range(900) if i not in held])
        model.use_examples(bank, known_answers=a.known_answers)
    rows = []
    for k, task in enumerate(TASKS):
        idx = [i for i in val if 300 * k <= i < 300 * k + 300][: a.limit]
        df = pd.DataFrame([recs[i] for i in idx], columns=["instruction", "input", "output"])
        row = score_irs(model, df, task, keep_outputs=a.out is not None, trim=not a.no_trim,
                        repetition_penalty=a.repetition_penalty)
        rows.append(row)
        print(f"{task:15s} n={row['pairs']:3d} BLEU {row['BLEU']:6.2f}  ROUGE-1 {row['ROUGE-1']:6.2f}  "
              f"ROUGE-2 {row['ROUGE-2']:6.2f}  ROUGE-L {row['ROUGE-L']:6.2f}  known {row['known_answers']:3d}  "
              f"hit max {row['hit_max_new_tokens']:3d}  "
              f"{row['seconds']:.0f} s", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"adapter": a.adapter, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
