"""The ``loglm`` command line: parse, detect, explain, ask, eval, serve, finetune.

    loglm parse app.log                 # templates with counts (--json: one record per line)
    loglm detect app.log --threshold 0.6
    loglm explain app.log --task root-cause --system nginx --context "after an upgrade"
    loglm ask "Summarise this session" app.log
    loglm report app.log -o report.html # incident report: timeline, templates, checked summary
    loglm eval all --limit 50           # paper tables, JSON + Markdown in ./eval_results
    loglm serve --port 8000             # OpenAI-compatible server (loopback by default)
    loglm eval all --adapter none       # the base model, without the shipped LoRA adapter
    loglm finetune --out my-adapter     # LoRA tuning on the LogLM set (pip install 'loglm[train]')

``--adapter PATH`` merges a peft LoRA adapter folder into the model (repeat it to
merge several, in order); ``--adapter none`` loads the base model alone. Without it,
the default model uses its shipped adapter when the package has one.

Log inputs (parse, detect, explain, ask): one or more files, globs (``"logs/*.log"``),
``-`` for standard input (pipes work too), gzip files; ``--format`` splits lines the
loghub way for every command (``parse`` recognises common headers by default,
``--format auto``; ``--format none`` keeps lines whole). A missing file is an error
(exit status 2).

Exit status: 0 success, 2 bad input (missing/empty/binary file, unknown system...),
1 other errors (a missing optional extra included), 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, List, Optional

from loglm.errors import InvalidInputError
from loglm.retrieval import KNOWN_ANSWER_SIMILARITY

EXPLAIN_TASKS = {"interpret": "interpret", "root-cause": "root_cause", "solution": "suggest_solution"}


def _adapter(args: argparse.Namespace) -> Any:
    """``LogLM.load``'s ``adapter`` from the ``--adapter`` options."""
    given = getattr(args, "adapter", None)
    if not given:
        return "auto"
    if any(a.lower() == "none" for a in given):
        if len(given) > 1:
            raise InvalidInputError("--adapter none cannot be combined with adapter paths")
        return None
    return list(given)


def _model(args: argparse.Namespace) -> Any:
    from loglm import LogLM

    return LogLM.load(args.model, adapter=_adapter(args), threads=args.threads, context_length=args.context_length)


def _read(args: argparse.Namespace, files: Optional[List[str]] = None) -> Any:
    """The log lines of the command's FILE arguments (files, globs, ``-`` for stdin, gzip),
    split by ``--format`` when given (see :mod:`loglm.inputs`; ``--format none`` keeps
    lines whole, the default of every command but ``parse``, whose default is ``auto``)."""
    from loglm.inputs import read_log_lines

    fmt = None if args.format is None or args.format.lower() in ("none", "raw") else args.format
    return read_log_lines(list(files if files is not None else args.files), log_format=fmt,
                          record_start=args.multiline)


def _flag_note(df: Any) -> str:
    """``", n lines with invalid UTF-8 ..."`` for the flagged rows of a result frame."""
    out = ""
    if "NonUtf8" in df and df["NonUtf8"].any():
        out += f", {int(df['NonUtf8'].sum())} lines with invalid UTF-8 (replaced)"
    if "FormatMismatch" in df and df["FormatMismatch"].any():
        out += f", {int(df['FormatMismatch'].sum())} lines not matching --format (whole line kept as content)"
    if "RecordSplit" in df and df["RecordSplit"].any():
        out += f", {int(df['RecordSplit'].sum())} records cut at the record size limit"
    if "Datetime" in df and df["Datetime"].isna().any():
        bad = df["Datetime"].isna()
        src = [c for c in ("Timestamp", "Date", "Time") if c in df]
        if src:  # a line without a timestamp (no header, format mismatch) is not a bad timestamp
            bad &= (df[src].astype(str) != "").any(axis=1)
        if bad.any():
            out += f", {int(bad.sum())} timestamps not understood"
    if "LlmRejected" in df and df["LlmRejected"].any():
        out += f", {int(df['LlmRejected'].sum())} lines whose model template did not match (tree template kept)"
    return out


def _json_value(v: Any) -> Any:
    if hasattr(v, "isoformat"):  # datetimes; NaT has no date
        return None if str(v) == "NaT" else v.isoformat()
    return v.item() if hasattr(v, "item") else v


def _json_records(df: Any, cols: Optional[List[str]] = None) -> None:
    for rec in (df if cols is None else df[cols]).to_dict(orient="records"):
        print(json.dumps({k: _json_value(v) for k, v in rec.items()}, ensure_ascii=False))


def _labelled_csv(path: str) -> Any:
    """A labelled-templates CSV (loghub's structured CSV: Content and EventTemplate columns)."""
    import pandas as pd

    from loglm.errors import LogFileNotFoundError

    if not Path(path).is_file():
        raise LogFileNotFoundError(f"no labelled-templates file {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{path} is not a readable CSV file: {e}") from None
    missing = [c for c in ("Content", "EventTemplate") if c not in df.columns]
    if missing:
        raise InvalidInputError(f"{path} has no {' or '.join(missing)} column (a loghub structured CSV has both)")
    return df


def _cmd_parse(args: argparse.Namespace) -> int:
    from loglm.parsing import TemplateMiner

    lines = _read(args)
    labelled = _labelled_csv(args.labelled) if args.labelled else None
    if args.no_llm:  # the lines are split by --format already
        df = TemplateMiner(labelled=labelled).parse_lines(lines, progress=not args.json and sys.stderr.isatty(),
                                                          log_format=None)
    else:
        m = _model(args)
        df = m.parse(lines, log_format=None, labelled=labelled)
    if args.output:
        df.to_csv(args.output, index=False)
    if args.templates:
        from loglm.parsing import templates_table

        templates_table(df).to_csv(args.templates, index=False)
    if args.json:
        _json_records(df)
        return 0
    counts = df.groupby(["EventId", "EventTemplate"], sort=False).size().sort_values(ascending=False)
    note = _flag_note(df)
    if getattr(lines, "log_format", None) == "auto":
        fields = [c for c in lines.fields]
        with_header = sum(any(lines.fields[c][i] for c in fields) for i in range(len(lines))) if fields else 0
        note += f", headers recognised on {with_header} lines (--format none keeps lines whole)"
    print(f"{len(df)} lines, {len(counts)} templates" + note)
    for (eid, tmpl), n in counts.items():
        print(f"{eid}\t{n}\t{tmpl}")
    if args.output:
        print(f"structured lines written to {args.output}", file=sys.stderr)
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    lines = _read(args)
    m = _model(args)
    df = m.detect_anomalies(lines, threshold=args.threshold)
    if args.json:
        _json_records(df)
        return 0
    several = "File" in df
    for r in df.itertuples(index=False):
        mark = "ABNORMAL" if r.Label == "abnormal" else "normal  "
        where = f"{r.File}:{r.LineId}" if several else f"{r.LineId}"
        print(f"{where}\t{mark}\t{r.Score:.3f}\t{r.Content[:200]}")
    n = int((df["Label"] == "abnormal").sum())
    print(f"{n} of {len(df)} lines abnormal (threshold {args.threshold}); the input is "
          f"{'abnormal' if n else 'normal'}" + _flag_note(df), file=sys.stderr)
    return 0


def _stream_or_json(answer_fn: Any, args: argparse.Namespace) -> int:
    if args.json:
        a = answer_fn(stream=False)
        r = a.result
        out = {"answer": str(a), "truncated": a.truncated, "finish_reason": r.finish_reason,
               "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens, "source": a.source}
        if a.example is not None:
            out["example"] = {"input": a.example.input, "similarity": round(a.example.similarity, 4)}
        print(json.dumps(out, ensure_ascii=False))
        return 0
    s = answer_fn(stream=True)
    if getattr(s, "truncated", False):
        print("[note: the log was truncated to fit the model's context]", file=sys.stderr)
    if getattr(s, "example", None) is not None:
        print(f"[note: a known answer, given before to a log of similarity {s.example.similarity:.2f}: "
              f"{s.example.input[:120]!r}]", file=sys.stderr)
    for piece in s:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    text = "\n".join(_read(args))
    m = _model(args)
    if args.examples is not None:
        from loglm.retrieval import ExampleBank, _task_name

        task = _task_name(args.task)  # interpretation, root_cause, solution
        bank = (ExampleBank.from_instructions(tasks=[task]) if args.examples == "train"
                else ExampleBank.from_file(args.examples, task=task))
        m.use_examples(bank, known_answers=args.known_answers)
    fn = getattr(m, EXPLAIN_TASKS[args.task])
    return _stream_or_json(lambda stream: fn(text, system=args.system, context=args.context, stream=stream,
                                             max_new_tokens=args.max_new_tokens), args)


def _cmd_ask(args: argparse.Namespace) -> int:
    if not args.instruction.strip():
        raise InvalidInputError("the instruction is empty")
    if sum(f == "-" for f in args.files) > 1:
        raise InvalidInputError("standard input ('-') can be read only once")
    logs = ["\n".join(_read(args, [f])) for f in args.files]
    m = _model(args)
    return _stream_or_json(lambda stream: m.ask(args.instruction, logs, stream=stream,
                                                max_new_tokens=args.max_new_tokens), args)


def _cmd_report(args: argparse.Namespace) -> int:
    from loglm.report import build_report

    from loglm.errors import LogFileNotFoundError

    src = Path(args.file)
    if not src.exists():
        raise LogFileNotFoundError(f"log file not found: {src}")
    model = None if args.no_llm else _model(args)
    rep = build_report(src, model, window=args.window, top=args.top, summary=not args.no_summary,
                       progress=None if sys.stderr.isatty() else False)
    out = Path(args.output) if args.output else Path(src.name + ".report.html")
    rep.save(out)
    if args.json:
        print(rep.to_json())
    else:
        nv = sum(c.verified for c in rep.claims)
        print(f"{rep.n_lines} lines, {len(rep.templates)} templates, {len(rep.bursts)} bursts, "
              f"{len(rep.claims)} claims ({nv} verified)")
        for note in rep.notes:
            print(f"note: {note}")
        for c in rep.claims:
            mark = "verified" if c.verified else c.status
            print(f"- {c.text} [{', '.join(f'L{i}' for i in c.line_ids)}] ({mark})")
    print(f"report written to {out}", file=sys.stderr)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from loglm.datasets import loghub_systems
    from loglm.evaluate import evaluate, to_markdown, write_partial, write_results

    systems = None
    if args.systems:
        systems = [s for s in args.systems.replace(",", " ").split() if s]
        known = loghub_systems()
        bad = [s for s in systems if s not in known]
        if bad:
            raise InvalidInputError(f"unknown system(s) {', '.join(bad)}; available: {', '.join(known)}")
    if args.limit is not None and args.limit < 1:
        raise InvalidInputError("--limit must be >= 1")
    cmd = "loglm " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv and sys.argv[0].endswith("loglm") else None
    log = None if args.quiet else (lambda msg: print(f"[loglm eval] {msg}", file=sys.stderr, flush=True))
    res = evaluate(args.what, model_path=args.model, adapter=_adapter(args), systems=systems, limit=args.limit, threads=args.threads,
                   seed=args.seed, threshold=args.threshold, max_new_tokens=args.max_new_tokens, log=log,
                   command=cmd or "loglm " + " ".join(shlex.quote(a) for a in (args._argv or [])),
                   checkpoint=lambda r: write_partial(r, args.out),
                   examples=None if args.examples == "none" else args.examples)
    paths = write_results(res, args.out)
    if args.json:
        print(json.dumps(res, indent=2, default=str))
    else:
        print(to_markdown(res))
    print(f"results written to {paths['json']} and {paths['markdown']}", file=sys.stderr)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from loglm.serve import serve

    for name in ("port", "max_request_bytes", "max_tokens", "max_batch"):
        v = getattr(args, name)
        if v < (0 if name == "port" else 1) or (name == "port" and v > 65535):
            raise InvalidInputError(f"--{name.replace('_', '-')} out of range: {v}")
    serve(args.model, host=args.host, port=args.port, threads=args.threads, context_length=args.context_length,
          model_name=args.model_name, api_key=args.api_key, max_request_bytes=args.max_request_bytes,
          max_tokens=args.max_tokens, max_batch=args.max_batch, log_requests=args.log_requests)
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    try:
        from loglm.train import finetune
        import loglm.train as train

        train._require_train_deps()
    except ImportError as e:
        print(f"loglm: error: {e}", file=sys.stderr)
        return 1
    if args.heldout is not None and not 0.0 <= args.heldout < 1.0:
        raise InvalidInputError("--heldout must be in [0, 1)")
    res = finetune(args.base, args.data, args.out, epochs=args.epochs, max_steps=args.max_steps, lr=args.lr,
                   rank=args.rank, alpha=args.alpha, dropout=args.dropout, max_length=args.max_length,
                   batch_size=args.batch_size, grad_accum=args.grad_accum, heldout=args.heldout,
                   eval_steps=args.eval_steps, save_steps=args.save_steps, checkpoint_dir=args.checkpoint_dir,
                   save_dtype=args.save_dtype, threads=args.threads, device=args.device, dtype=args.dtype,
                   max_seconds=args.max_seconds, seed=args.seed,
                   progress=not args.no_progress, log_path=args.log, init_adapter=args.init_adapter)
    summary = {"adapter_dir": str(res.adapter_dir), "steps": res.steps, "epochs": res.epochs,
               "train_loss": res.train_loss, "heldout_loss": res.heldout_loss, "seconds": res.seconds,
               "log": str(res.log_path)}
    if args.json:
        print(json.dumps(summary))
    else:
        held = "n/a" if res.heldout_loss is None else f"{res.heldout_loss:.4f}"
        print(f"adapter written to {res.adapter_dir} ({res.steps} steps, {res.epochs:.2f} epochs, "
              f"{res.seconds:.0f} s); train loss {res.train_loss:.4f}, held-out loss {held}; log {res.log_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``loglm`` command."""
    from loglm import __version__

    ap = argparse.ArgumentParser(prog="loglm", description="Log analysis with one local language model.")
    ap.add_argument("--version", action="version", version=f"loglm {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def common(p: argparse.ArgumentParser, json_help: str = "machine-readable JSON output") -> None:
        p.add_argument("--model", default=None, help="GGUF file, HF folder or name (default: the embedded model)")
        p.add_argument("--adapter", action="append", default=None, metavar="PATH|none",
                       help="peft LoRA adapter folder merged into the model (repeat to merge several, in order); "
                            "'none' for the base model alone (default: the shipped adapter of the default model, "
                            "if any)")
        p.add_argument("--threads", type=int, default=None, help="CPU threads of the model")
        p.add_argument("--context-length", type=int, default=None, help="tokens per sequence (default: model's, max 8192)")
        p.add_argument("--json", action="store_true", help=json_help)

    def inputs(p: argparse.ArgumentParser, nargs: str = "+", default_format: Optional[str] = None) -> None:
        p.add_argument("files", nargs=nargs, metavar="FILE",
                       help="log files (plain or .gz), globs, or - for standard input")
        p.add_argument("--format", "--log-format", dest="format", default=default_format,
                       help='loghub log format, e.g. "<Date> <Time> <Level>: <Content>" (the model sees '
                            'only <Content>); "json" or "json:message=msg,timestamp=ts,level=lvl" for JSON lines; '
                            '"auto" to recognise common headers (timestamp, pid, level, [thread], logger); '
                            '"none" for whole lines (default: %s)' % (default_format or "none"))
        p.add_argument("--multiline", nargs="?", const=True, default=None, metavar="REGEX",
                       help="join multi-line records (stack traces): a line not matching REGEX (default: common "
                            "timestamp/level headers) continues the record before it")

    p = sub.add_parser("parse", help="log templates of log files")
    inputs(p, default_format="auto")
    p.add_argument("-o", "--output", default=None, help="write the structured lines (CSV) here")
    p.add_argument("--templates", default=None, metavar="CSV",
                   help="write the templates table (EventId, EventTemplate, Occurrences; logparser's _templates.csv)")
    p.add_argument("--labelled", default=None, metavar="CSV",
                   help="labelled templates (a CSV with Content and EventTemplate columns, e.g. loghub's "
                        "structured CSV of a checked sample): lines they match get them verbatim")
    p.add_argument("--no-llm", action="store_true", help="template tree only (no model)")
    common(p, "one JSON record per line")
    p.set_defaults(func=_cmd_parse)

    p = sub.add_parser("detect", help="normal/abnormal verdict per line")
    inputs(p)
    p.add_argument("--threshold", type=float, default=0.5, help="P(abnormal) threshold (default 0.5)")
    common(p, "one JSON record per line")
    p.set_defaults(func=_cmd_detect)

    p = sub.add_parser("explain", help="interpretation, root cause or solution for a log (streamed)")
    inputs(p)
    p.add_argument("--task", choices=list(EXPLAIN_TASKS), default="interpret")
    p.add_argument("--system", default=None, help="the system that wrote the log")
    p.add_argument("--context", default=None, help="what you were doing / the problem")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--examples", default=None, metavar="FILE|train",
                   help="answered examples (JSON list or JSON lines of {input, output[, task, instruction]}, "
                        "or 'train' for the LogLM training records): a log an example already answers gets "
                        "that answer (default: none)")
    p.add_argument("--known-answers", type=float, default=KNOWN_ANSWER_SIMILARITY, metavar="SIMILARITY",
                   help="how similar (cosine, 0-1] an example's log must be to answer from it (default %(default)s)")
    common(p)
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("ask", help="any instruction about one or more log files (streamed)")
    p.add_argument("instruction")
    inputs(p)
    p.add_argument("--max-new-tokens", type=int, default=256)
    common(p)
    p.set_defaults(func=_cmd_ask)

    p = sub.add_parser("report", help="incident report of a log file (standalone HTML)")
    p.add_argument("file")
    p.add_argument("-o", "--output", default=None, help="HTML (or .json) file to write (default FILE.report.html here)")
    p.add_argument("--window", type=int, default=100, help="lines per session when the log has no session ids")
    p.add_argument("--top", type=int, default=10, help="records and sessions listed")
    p.add_argument("--no-summary", action="store_true", help="no model summary (scores and ablation only)")
    p.add_argument("--no-llm", action="store_true", help="no model at all (deterministic parts, ranked by rarity)")
    common(p, "print the report as JSON too")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("eval", help="evaluate a model on the LogLM test splits (paper tables)")
    p.add_argument("what", choices=["parsing", "anomaly", "irs", "all"])
    p.add_argument("--systems", default=None, help="parsing systems, comma-separated (default: all)")
    p.add_argument("--limit", type=int, default=None, help="first N test examples per system/task")
    p.add_argument("--out", default="eval_results", help="folder for the JSON and Markdown results")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--examples", choices=["train", "none"], default="train",
                   help="labelled training examples to use (anomaly neighbours, known free-text answers, "
                        "parsing cache seeds; default train)")
    p.add_argument("--quiet", action="store_true")
    common(p, "print the JSON result instead of the tables")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server over the model")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-name", default=None, help="name in /v1/models (default: the model file's)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: LOGLM_API_KEY)")
    p.add_argument("--max-request-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    p.add_argument("--max-tokens", type=int, default=2048, help="largest max_tokens a request may ask")
    p.add_argument("--max-batch", type=int, default=16, help="sequences in the engine's running batch")
    p.add_argument("--log-requests", action="store_true", help="one line per request on stderr")
    p.add_argument("--model", default=None, help="GGUF file, HF folder or name (default: the embedded model)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the model")
    p.add_argument("--context-length", type=int, default=None, help="tokens per sequence (default: model's, max 8192)")
    p.set_defaults(func=_cmd_serve)
    p = sub.add_parser("finetune", help="LoRA instruction tuning (needs pip install 'loglm[train]')",
                       description="LoRA instruction tuning of a GGUF / Hugging Face base on Alpaca-format "
                                   "records (default: the LogLM training set); loss on the response tokens only.")
    p.add_argument("--base", default=None, help="GGUF file, HF folder or model name (default: the embedded model)")
    p.add_argument("--data", default=None, help="Alpaca JSON/JSONL (default: LogLM instructions_train.json)")
    p.add_argument("--out", required=True, help="adapter folder to write")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--init-adapter", default=None, metavar="DIR",
                   help="continue training this peft adapter folder instead of starting a new one")
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default 2 x rank)")
    p.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout (default 0: it is costly on CPU)")
    p.add_argument("--max-length", type=int, default=512, help="tokens per example (longer responses are cut)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--heldout", type=float, default=0.05, help="fraction of records held out for the loss")
    p.add_argument("--eval-steps", type=int, default=None, help="held-out loss every N steps")
    p.add_argument("--save-steps", type=int, default=None, help="checkpoint every N steps")
    p.add_argument("--checkpoint-dir", default=None, help="checkpoint folder (default OUT/checkpoints)")
    p.add_argument("--save-dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--log", default=None, help="training_log.json path (default OUT/training_log.json)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="base weights while training (bfloat16: much faster on AMX CPUs and GPUs)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop training after this many seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_finetune)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``loglm`` command; returns the exit status."""
    from loglm.errors import LoglmError, ModelNotFoundError

    ap = build_parser()
    args = ap.parse_args(argv)
    args._argv = list(argv) if argv is not None else None
    try:
        return int(args.func(args))
    except (InvalidInputError, ModelNotFoundError, FileNotFoundError, IsADirectoryError,
            UnicodeDecodeError) as e:
        print(f"loglm: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"loglm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loglm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except LoglmError as e:
        print(f"loglm: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
