"""Accuracy of loglm's template tree (alone and with an LLM) versus drain3 on loghub 2k.

Metrics come from ``loglm.metrics.parsing_scores``: GA, PA, FGA, FTA against the corrected
ground truth (loghub_2k_corrected) and RandIndex + variable F1 against the original one
(loghub_2k), all on the structured files' ``Content`` column, all 2,000 lines per system,
one run. drain3 runs with its default settings (``TemplateMinerConfig()``); every line's
predicted template is the final template of its cluster (as logparser's Drain output).

    python benches/eval_parsing.py [--data DIR] [--model oracle|MODULE:FACTORY] [--markdown] [--raw-templates]

loglm's templates follow the loghub-2.0 conventions by default (``canonical_template``);
``--raw-templates`` keeps the tree's own, as the issue-5 comparison with drain3 was run.

``--model MODULE:FACTORY`` imports ``FACTORY()`` from ``MODULE`` and uses the object (with
``propose_templates(lines, examples)``) as the LLM; ``oracle`` is a fake model answering with
the ground-truth template (an upper bound of the loop's mechanism, not a model result).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

import pandas as pd

SYSTEMS = ["HDFS", "Hadoop", "Zookeeper", "BGL", "HPC", "Linux", "Proxifier"]
COLS = ["GA", "PA", "FGA", "FTA", "RI", "var_F1"]


def load(data: Path, system: str) -> tuple[list[str], list[str], list[str]]:
    """Content, original templates, corrected templates of one system."""
    orig = pd.read_csv(data / "loghub_2k" / system / f"{system}_2k.log_structured.csv")
    corr = pd.read_csv(data / "loghub_2k_corrected" / system / f"{system}_2k.log_structured_corrected.csv")
    if not (orig["Content"] == corr["Content"]).all():
        raise SystemExit(f"{system}: original and corrected Content differ")
    return orig["Content"].tolist(), orig["EventTemplate"].tolist(), corr["EventTemplate"].tolist()


def run_drain3(lines: list[str]) -> list[str]:
    from drain3 import TemplateMiner
    from drain3.template_miner_config import TemplateMinerConfig

    tm = TemplateMiner(config=TemplateMinerConfig())
    ids = [tm.add_log_message(line)["cluster_id"] for line in lines]
    final = {c.cluster_id: c.get_template() for c in tm.drain.clusters}
    return [final[i] for i in ids]


def run_loglm(lines: list[str], model=None, **kw) -> tuple[list[str], dict]:
    from loglm.parsing import TemplateMiner

    tm = TemplateMiner(model=model, **kw)
    df = tm.parse(lines, parameters=False)
    return df["EventTemplate"].tolist(), tm.counters


class OracleModel:
    """Fake LLM answering each line with its ground-truth template."""

    def __init__(self, truth: dict[str, str]) -> None:
        self.truth = truth

    def propose_templates(self, lines, examples):
        return [self.truth.get(line, line) for line in lines]


def scores(lines, orig, corr, pred) -> dict:
    from loglm.metrics import parsing_scores

    c = parsing_scores(lines, corr, pred)
    o = parsing_scores(lines, orig, pred)
    return {"GA": c["GA"], "PA": c["PA"], "FGA": c["FGA"], "FTA": c["FTA"], "RI": o["RI"], "var_F1": o["var_F1"]}


def make_model(spec: str | None, corr_truth: dict[str, str]):
    if spec is None:
        return None
    if spec == "oracle":
        return OracleModel(corr_truth)
    mod, _, fac = spec.partition(":")
    return getattr(importlib.import_module(mod), fac or "make_model")()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("LOGLM_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--model", default=None, help="'oracle' or MODULE:FACTORY for tree + LLM")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--raw-templates", action="store_true",
                    help="loglm templates as the tree makes them (canonical=False), as drain3 does")
    args = ap.parse_args(argv)
    kw = {"canonical": False} if args.raw_templates else {}

    rows = []
    for system in args.systems.split(","):
        lines, orig, corr = load(args.data, system)
        runs = {"drain3 (default)": lambda: (run_drain3(lines), None),
                "loglm tree": lambda: run_loglm(lines, **kw)}
        if args.model:
            model = make_model(args.model, dict(zip(lines, corr)))
            runs[f"loglm tree + {args.model}"] = lambda: run_loglm(lines, model=model, **kw)
        for name, fn in runs.items():
            t0 = time.perf_counter()
            pred, counters = fn()
            r = {"system": system, "parser": name, **scores(lines, orig, corr, pred), "s": time.perf_counter() - t0}
            if counters is not None and args.model and "+" in name:
                r["llm_lines"] = counters["llm_lines"]
                r["true_templates"] = len(set(corr))
            rows.append(r)
    df = pd.DataFrame(rows)
    avg = df.groupby("parser", sort=False)[COLS].mean().reset_index()
    avg.insert(0, "system", "average")
    out = pd.concat([df, avg], ignore_index=True)
    fmt = {c: "{:.3f}".format for c in COLS}
    if args.markdown:
        show = out[["system", "parser", *COLS] + [c for c in ("llm_lines", "true_templates") if c in out]]
        print(show.to_markdown(index=False, floatfmt=".3f") if _has_tabulate() else show.to_string(index=False, formatters=fmt))
    else:
        print(out.to_string(index=False, formatters=fmt))
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
