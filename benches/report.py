"""Incident report (issue 21): time and memory by size, evidence precision, faithfulness.

    LOGLM_DATA_DIR=../shared/data python benches/report.py scale --sizes 10000 100000 1000000 [--no-llm]
    LOGLM_DATA_DIR=../shared/data python benches/report.py evidence
    LOGLM_DATA_DIR=../shared/data python benches/report.py faithfulness --claims 5
    LOGLM_DATA_DIR=../shared/data python benches/report.py sessions

``scale`` writes a BGL-like file of N lines (the 2,000 loghub BGL lines without their
label field, repeated with every timestamp shifted by the span of the sample per copy),
then builds the report of that file in a child process and prints its wall time, stage
times and peak memory (ru_maxrss). ``evidence`` builds the report of BGL 2k (labels
removed; they are only used to score) and of HDFS 5k (block sessions) and prints the
precision of the report's evidence lines against the abnormal lines, next to the baseline
"the same number of lines with the highest anomaly score". ``faithfulness`` generates
claims on the 7 loghub systems and counts how many pass the check. ``sessions`` runs the
ablation on constructed sessions (3 normal BGL lines and one alert) with both session
scores (the model reading the session, and 1 - prod(1 - p) of the line scores).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("LOGLM_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
SYSTEMS = ["HDFS", "Hadoop", "Zookeeper", "BGL", "HPC", "Linux", "Proxifier"]


def bgl(n: int | None = None):
    raw = (DATA / "loghub_2k" / "BGL" / "BGL_2k.log").read_text(encoding="utf-8").splitlines()
    return [x.split(" ", 1)[1] for x in raw], [x.split(" ", 1)[0] for x in raw]


_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})-(\d{2})\.(\d{2})\.(\d{2})")


def synth(path: Path, n: int) -> None:
    """N BGL lines: copy k of the sample has every epoch / ISO time shifted by k spans."""
    import calendar
    import time as _t

    lines, _ = bgl()
    ep = [int(x.split(" ", 1)[0]) for x in lines]
    span = max(ep) - min(ep) + 1
    with open(path, "w", encoding="utf-8") as f:
        written = 0
        k = 0
        while written < n:
            shift = k * span
            for x, e in zip(lines, ep):
                if written >= n:
                    break
                if shift:
                    rest = x.split(" ", 1)[1]
                    ne = e + shift

                    def iso(m: "re.Match[str]") -> str:
                        t = calendar.timegm(tuple(int(g) for g in m.groups()) + (0, 0, 0)) + shift
                        return _t.strftime("%Y-%m-%d-%H.%M.%S", _t.gmtime(t))

                    day = _t.strftime("%Y.%m.%d", _t.gmtime(ne))
                    rest = re.sub(r"^\d{4}\.\d{2}\.\d{2}", day, rest)
                    x = f"{ne} " + _ISO.sub(iso, rest, count=1)
                f.write(x + "\n")
                written += 1
            k += 1


CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import loglm
from loglm.report import build_report
path, use_model, threads = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
t0 = time.perf_counter()
m = loglm.LogLM.load(threads=threads) if use_model else None
load = time.perf_counter() - t0
t0 = time.perf_counter()
r = build_report(Path(path), m, progress=False)
wall = time.perf_counter() - t0
html = r.to_html()
print(json.dumps({"lines": r.n_lines, "templates": len(r.templates), "load_s": load, "report_s": wall,
                  "stages": {k: round(v, 2) for k, v in r.timings.items()}, "html_bytes": len(html),
                  "claims": len(r.claims), "verified": sum(c.verified for c in r.claims),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def cmd_scale(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as d:
        for n in args.sizes:
            p = Path(d) / f"bgl_{n}.log"
            t0 = time.perf_counter()
            synth(p, n)
            mk = time.perf_counter() - t0
            for use_model in ([False] if args.no_llm else [False, True]):
                out = subprocess.run([sys.executable, "-c", CHILD, str(p), "1" if use_model else "0", str(args.threads)],
                                     capture_output=True, text=True, check=True)
                rec = json.loads(out.stdout.strip().splitlines()[-1])
                rec.update({"model": use_model, "file_mb": round(p.stat().st_size / 2**20, 1), "synth_s": round(mk, 1)})
                print(json.dumps(rec), flush=True)
            p.unlink()


def precision(ids, abnormal) -> float:
    return sum(i in abnormal for i in ids) / max(len(ids), 1)


def baseline(rep, k: int) -> list[int]:
    s = np.nan_to_num(rep.line_scores, nan=-1.0)
    order = np.lexsort((np.arange(len(s)), -s))
    return [int(i) + 1 for i in order[:k]]


class _Memo:
    """The model with its line scores memoised, so that one log's report can be rebuilt
    with other evidence settings without scoring again (scores do not depend on the batch)."""

    def __init__(self, m):
        self.m, self.memo, self.info = m, {}, m.info

    def anomaly_scores(self, lines, progress=None):
        todo = list(dict.fromkeys(x for x in lines if x not in self.memo))
        if todo:
            self.memo.update(zip(todo, self.m.anomaly_scores(todo)))
        return [self.memo[x] for x in lines]

    def generate(self, *a, **kw):
        return self.m.generate(*a, **kw)


def cmd_evidence(args: argparse.Namespace) -> None:
    import loglm

    m = _Memo(loglm.LogLM.load(threads=args.threads))
    for share in args.shares:
        evidence(m, share)


def evidence(m, share: float) -> None:
    from loglm.report import build_report

    lines, labels = bgl()
    abnormal = {i + 1 for i, lab in enumerate(labels) if lab != "-"}
    t0 = time.perf_counter()
    r = build_report(lines, m, progress=False, evidence_share=share)
    secs = time.perf_counter() - t0
    r.save(Path(tempfile.gettempdir()) / "loglm_report_bgl2k.html")
    ev = r.evidence_line_ids()
    cited = [i for c in r.claims if c.verified for i in c.line_ids]
    ablated = [i for e in r.sessions["Evidence"] for x in e for i in x["line_ids"]]
    all_cited = [i for c in r.claims for i in c.line_ids if 1 <= i <= len(lines)]
    print(json.dumps({"log": "BGL 2k", "evidence_share": share, "seconds": round(secs, 1), "abnormal_share": len(abnormal) / len(lines),
                      "evidence_lines": len(ev), "evidence_precision": precision(ev, abnormal),
                      "baseline_precision": precision(baseline(r, len(ev)), abnormal),
                      "verified_cited": len(cited), "verified_cited_precision": precision(cited, abnormal),
                      "all_cited": len(all_cited), "all_cited_precision": precision(all_cited, abnormal),
                      "baseline_precision_at_all_cited": precision(baseline(r, len(all_cited)), abnormal),
                      "ablated": len(ablated), "ablated_precision": precision(ablated, abnormal),
                      "baseline_precision_at_ablated": precision(baseline(r, len(ablated)), abnormal),
                      "claims": [c.to_dict() for c in r.claims]}), flush=True)
    # HDFS 5k: block sessions; a line is "abnormal" when its block is labelled Anomaly
    import pandas as pd

    hl = (DATA / "hdfs" / "HDFS_5k.log").read_text(encoding="utf-8").splitlines()
    lab = pd.read_csv(DATA / "hdfs" / "HDFS_5k.log_block_labels.csv")
    bad_blocks = set(lab.loc[lab["Label"] == "Anomaly", "BlockId"])
    rx = re.compile(r"blk_-?\d+")
    ab = {i + 1 for i, x in enumerate(hl) if any(b in bad_blocks for b in rx.findall(x))}
    t0 = time.perf_counter()
    r = build_report(hl, m, progress=False, top=10, evidence_share=share)
    secs = time.perf_counter() - t0
    ev = r.evidence_line_ids()
    top_sessions = list(r.sessions["SessionId"])
    print(json.dumps({"log": "HDFS 5k", "evidence_share": share, "seconds": round(secs, 1), "sessions": r.sessions.attrs.get("how"),
                      "abnormal_share": len(ab) / len(hl), "abnormal_blocks": len(bad_blocks),
                      "blocks": int(lab.shape[0]),
                      "top10_sessions_precision": sum(s in bad_blocks for s in top_sessions) / max(len(top_sessions), 1),
                      "evidence_lines": len(ev), "evidence_precision": precision(ev, ab),
                      "baseline_precision": precision(baseline(r, len(ev)), ab)}), flush=True)


def cmd_faithfulness(args: argparse.Namespace) -> None:
    import loglm
    from loglm.report import build_report

    m = loglm.LogLM.load(threads=args.threads)
    total = {}
    for s in SYSTEMS:
        lines = (DATA / "loghub_2k" / s / f"{s}_2k.log").read_text(encoding="utf-8").splitlines()
        if s == "BGL":
            lines = [x.split(" ", 1)[1] for x in lines]
        r = build_report(lines, m, n_claims=args.claims, top_sessions=0, progress=False)
        st = [c.status for c in r.claims]
        for x in st:
            total[x] = total.get(x, 0) + 1
        print(json.dumps({"system": s, "claims": len(st), "status": {k: st.count(k) for k in sorted(set(st))},
                          "examples": [(c.text, c.line_ids, c.status, c.missing) for c in r.claims]}), flush=True)
    n = sum(total.values())
    print(json.dumps({"all": n, "status": total, "pass_before_checker": total.get("verified", 0) / max(n, 1),
                      "pass_after_checker_drop": 1.0 if total.get("verified") else None}), flush=True)


def cmd_sessions(args: argparse.Namespace) -> None:
    """Ablation on constructed sessions (3 normal BGL lines + 1 alert line, the alert second):
    which line each session score names first."""
    import loglm
    from loglm.report import _session_scorer, ablation_attribution

    m = loglm.LogLM.load(threads=args.threads)
    lines, labels = bgl()
    normal = [lines[i] for i in (0, 4, 88)]
    p_normal = m.anomaly_scores(normal)
    for kind in ("KERNDTLB", "APPREAD", "KERNSTOR", "APPSEV"):
        bad = lines[labels.index(kind)]
        sess = normal[:1] + [bad] + normal[1:]
        p = dict(zip(normal, p_normal))
        p[bad] = m.anomaly_scores([bad])[0]

        def lines_score(vs):
            return [1 - float(np.prod([1 - p[x] for x in v])) for v in vs]

        t0 = time.perf_counter()
        full_m, drops_m = ablation_attribution(sess, _session_scorer(m), top=4)
        secs = time.perf_counter() - t0
        full_l, drops_l = ablation_attribution(sess, lines_score, top=4)
        print(json.dumps({"alert": kind, "line_scores": [round(p[x], 3) for x in sess],
                          "model_session_score": round(full_m, 4), "model_first": drops_m[0][0] if drops_m else None,
                          "model_drops": [(i, round(d, 4)) for i, d in drops_m], "model_s": round(secs, 1),
                          "lines_session_score": round(full_l, 4), "lines_first": drops_l[0][0] if drops_l else None}),
              flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("scale")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--no-llm", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_scale)
    p = sub.add_parser("evidence")
    p.add_argument("--shares", type=float, nargs="+", default=[0.5, 0.0], help="evidence_share values")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_evidence)
    p = sub.add_parser("faithfulness")
    p.add_argument("--claims", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_faithfulness)
    p = sub.add_parser("sessions")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_sessions)
    args = ap.parse_args()
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
