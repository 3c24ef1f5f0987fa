"""Header recognition (``log_format="auto"``, the default of the parse helpers) on the raw
loghub 2k files, against the ``Content`` column of their structured files.

    LOGLM_DATA_DIR=/path/to/data python benches/headers.py

Per system: the share of raw lines whose recognised content equals ``Content`` (both
stripped), the share kept whole (no header recognised), the share where a little more
than ``Content`` was kept, and the lines cut into (must be 0); then the lines of the
``Content`` column (no header) that were changed (must be 0); then the template tree's
template count and grouping accuracy on the raw lines kept whole, on the raw lines with
headers recognised, and on ``Content``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd

from loglm import TemplateMiner, read_log_lines
from loglm.inputs import as_log_lines


def grouping_accuracy(pred: "pd.Series", truth: "pd.Series") -> float:
    df = pd.DataFrame({"p": list(pred), "t": list(truth)})
    size = df.groupby("t").size()
    ok = 0
    for _, g in df.groupby("p"):
        ts = g["t"].unique()
        if len(ts) == 1 and size[ts[0]] == len(g):
            ok += len(g)
    return ok / len(df)


def main() -> int:
    root = Path(os.environ.get("LOGLM_DATA_DIR", "")) / "loghub_2k"
    if not root.is_dir():
        print("set LOGLM_DATA_DIR to the datasets folder (with loghub_2k/)", file=sys.stderr)
        return 2
    print("| system | lines | = Content | whole | more than Content | cut | no-header lines changed |"
          " tree whole: templates / GA | tree auto | tree on Content |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for d in sorted(p for p in root.iterdir() if (p / f"{p.name}_2k.log").exists()):
        raw = list(read_log_lines(d / f"{d.name}_2k.log"))
        gt = pd.read_csv(d / f"{d.name}_2k.log_structured.csv", dtype=str, keep_default_na=False)
        got = list(as_log_lines(raw, log_format="auto"))
        n = len(raw)
        eq = sum(c.strip() == t.strip() for c, t in zip(got, gt["Content"]))
        whole = sum(c == line and c.strip() != t.strip() for line, c, t in zip(raw, got, gt["Content"]))
        cut = sum(not (line.endswith(c) and c.strip().endswith(t.strip())) for line, c, t in zip(raw, got, gt["Content"]))
        more = n - eq - whole - cut
        changed = sum(a != b for a, b in zip(as_log_lines(gt["Content"].tolist(), log_format="auto"), gt["Content"]))
        cells = []
        for fmt, lines in ((None, raw), ("auto", raw), (None, gt["Content"].tolist())):
            df = TemplateMiner().parse_lines(lines, log_format=fmt)
            cells.append(f"{df['EventTemplate'].nunique()} / {grouping_accuracy(df['EventTemplate'], gt['EventId']):.3f}")
        print(f"| {d.name} | {n} | {eq / n:.1%} | {whole / n:.1%} | {more / n:.1%} | {cut} | {changed} | "
              + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
