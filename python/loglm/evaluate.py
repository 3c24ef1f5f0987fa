"""Evaluation harness: run a model on the LogLM test splits and lay the results out like
the paper's Tables II (parsing), III (anomaly detection) and IV (interpretation, root
cause, solution).

    >>> from loglm.evaluate import evaluate
    >>> res = evaluate("all", model_path=None, limit=50)      # default model
    >>> print(to_markdown(res))

Decoding is greedy (``temperature=0``) and anomaly detection uses choice scoring, so
results are deterministic for a given model file, library version and ``seed``.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from loglm.errors import InvalidInputError

__all__ = [
    "TASKS", "evaluate", "evaluate_parsing", "evaluate_anomaly", "evaluate_irs", "score_irs",
    "to_markdown", "write_results", "ROUGE_SIGNATURE",
]

TASKS = ("parsing", "anomaly", "irs")
AD_SYSTEMS = ("bgl", "spirit")
ROUGE_SIGNATURE = "rouge-score==0.1.2|types:rouge1,rouge2,rougeL|stemmer:no|F-measure mean x100"
PAPER = {  # LogLM-7B, from the paper (datasets README)
    "parsing": {"RI": 0.982, "F1": 0.965},
    "anomaly": {"bgl": 0.625, "spirit": 0.278},
    "irs": {"interpretation": (15.58, 46.49, 23.09, 34.77), "root_cause": (12.40, 40.60, 19.04, 30.23),
            "solution": (8.24, 34.42, 13.91, 25.43)},
}

Log = Callable[[str], None]
Rows = Callable[[List[Dict[str, Any]]], None]


def _say(log: Optional[Log], msg: str) -> None:
    if log is not None:
        log(msg)


def _parse_run(lines: List[str], model: Any, examples: Any = None, labelled: Any = None) -> Dict[str, Any]:
    from loglm.parsing import TemplateMiner

    tm = (TemplateMiner(model=model, few_shot=3, batch_size=16, examples=examples, labelled=labelled)
          if model is not None else TemplateMiner(labelled=labelled))
    t0 = time.perf_counter()
    df = tm.parse(lines, parameters=False)
    secs = time.perf_counter() - t0
    c = tm.counters
    out = {"pred": df["EventTemplate"].tolist(), "seconds": secs, "templates": c["templates"]}
    if model is not None:
        out.update(llm_lines=c["llm_lines"], llm_calls=c["llm_calls"], llm_accepted=c["llm_accepted"],
                   llm_rejected=c["llm_rejected"], llm_refused=c.get("llm_refused", 0))
    return out


def evaluate_parsing(model: Any, *, systems: Optional[Sequence[str]] = None, limit: Optional[int] = None,
                     root: Any = None, baseline: bool = True, log: Optional[Log] = None,
                     on_rows: Optional[Rows] = None, retrieval: Optional[str] = None,
                     labelled: Optional[str] = None) -> List[Dict[str, Any]]:
    """Parsing on the 1,800 test lines of each system (first ``limit`` of them when given):
    the template tree alone (``baseline``) and tree + ``model`` (``None`` skips it). One
    row per system and parser: RI and F1 (token-level variable F1) against the original
    ground truth, GA / FGA / PA / FTA against the corrected one, and LLM counters.
    ``on_rows`` (as in every ``evaluate_*``) is called with the rows so far after each one.
    ``retrieval`` picks the model's few-shot examples: ``None`` (similar cached templates
    of the same run), ``"train"`` (nearest of the training lines 1-200 of every system,
    corrected templates, by MiniLM cosine) or ``"loso"`` (the same from the other systems
    only: leave one system out). ``labelled="train"`` seeds the miner with the labelled
    training lines 1-200 of every system (corrected templates; :meth:`TemplateMiner.add_labelled`):
    rows "tree + labelled" (no model) and "tree + labelled + LLM" replace "tree + LLM", and
    the baseline "template tree (no LLM)" stays unlabelled; the same two rows seeded with the
    *original* templates of those lines ("... (original GT)") follow, for the RI and variable
    F1 that are scored on the original ground truth (the paper's model was trained on those
    templates; each ground truth is scored with its own training labels). ``"loso"`` seeds
    with the other systems' training lines only (leave one system out; corrected templates)."""
    from loglm.datasets import load_parsing, loghub_systems
    from loglm.metrics import parsing_scores

    if retrieval not in (None, "train", "loso"):
        raise InvalidInputError(f"retrieval must be None, 'train' or 'loso', got {retrieval!r}")
    if labelled not in (None, "train", "loso"):
        raise InvalidInputError(f"labelled must be None, 'train' or 'loso', got {labelled!r}")
    train: Dict[str, Any] = {}
    if retrieval is not None or labelled is not None:
        train = {s: load_parsing(s, root, split="train") for s in loghub_systems(root)}

    def train_pairs(system: str, how: Optional[str], column: str = "EventTemplateCorrected") -> List[Any]:
        return [(c, t) for s, df in train.items() if how == "train" or s != system
                for c, t in zip(df["Content"], df[column])]

    pools: Dict[str, Any] = {}
    if retrieval is not None and model is not None:
        from loglm.embed import SentenceEncoder
        from loglm.parsing import ExampleRetriever

        enc = SentenceEncoder.load()
        for system in systems or loghub_systems(root):
            pools[system] = ExampleRetriever(train_pairs(system, retrieval), enc)

    rows = []
    for system in systems or loghub_systems(root):
        df = load_parsing(system, root, split="test")
        if limit is not None:
            df = df.iloc[:limit]
        lines = df["Content"].tolist()
        seeds = train_pairs(system, labelled) if labelled is not None else None
        runs: List[Any] = [("template tree (no LLM)", None, None)] if baseline else []
        if seeds is not None:
            runs.append(("tree + labelled", None, seeds))
        if model is not None:
            runs.append(("tree + labelled + LLM" if seeds is not None else "tree + LLM", model, seeds))
        if labelled == "train":
            original = train_pairs(system, labelled, "EventTemplate")
            runs.append(("tree + labelled (original GT)", None, original))
            if model is not None:
                runs.append(("tree + labelled (original GT) + LLM", model, original))
        for name, m, sd in runs:
            _say(log, f"parsing {system}: {name} on {len(lines)} lines")
            r = _parse_run(lines, m, pools.get(system) if m is not None else None, sd)
            o = parsing_scores(lines, df["EventTemplate"].tolist(), r["pred"])
            c = parsing_scores(lines, df["EventTemplateCorrected"].tolist(), r["pred"])
            row = {"system": system, "parser": name, "lines": len(lines), "RI": o["RI"], "F1": o["var_F1"],
                   "GA": c["GA"], "FGA": c["FGA"], "PA": c["PA"], "FTA": c["FTA"],
                   "templates": r["templates"], "seconds": round(r["seconds"], 2)}
            for k in ("llm_lines", "llm_calls", "llm_accepted", "llm_rejected", "llm_refused"):
                if k in r:
                    row[k] = r[k]
            rows.append(row)
            if on_rows is not None:
                on_rows(rows)
    return rows


def evaluate_anomaly(model: Any, *, systems: Sequence[str] = AD_SYSTEMS, limit: Optional[int] = None,
                     threshold: float = 0.5, root: Any = None, log: Optional[Log] = None,
                     on_rows: Optional[Rows] = None, train_threshold: Optional[bool] = None,
                     keep_scores: bool = True) -> List[Dict[str, Any]]:
    """Template-level anomaly detection on the LogPrompt templates not in the training
    set (first ``limit`` per system when given), by choice scoring with ``threshold`` on
    P(abnormal). One row per system: precision, recall, F1 of "abnormal", accuracy,
    counts, and the F1 of the best threshold on the test set (an oracle figure).

    ``train_threshold=True`` (the default on full test sets, ``None``: when ``limit`` is
    None) also reports the F1 at the threshold chosen on the training templates of
    ``systems`` (records 900-1231, scored the same way, each template's own label kept out
    of its neighbour vote; :func:`loglm.anomaly.best_f1_threshold`).
    ``keep_scores=True`` keeps each test template's score (``scores``, and the model's
    alone in ``scores_model_alone``) in its row, in the test set's order."""
    import numpy as np

    from loglm.datasets import load_anomaly
    from loglm.metrics import classification_scores

    def score(texts: List[str], quiet: Any, exclude_self: bool = False) -> Any:
        if callable(getattr(model, "anomaly_evidence", None)):
            alone = np.array(model.anomaly_scores(texts, progress=quiet, evidence=False))
            return alone, np.array(model.anomaly_evidence().apply(texts, alone, exclude_self=exclude_self))
        alone = np.array(model.anomaly_scores(texts, progress=quiet))
        return alone, alone

    if any(s.lower() not in AD_SYSTEMS for s in systems):
        raise InvalidInputError(f"anomaly detection systems are {list(AD_SYSTEMS)}, got {list(systems)}")
    chosen: Optional[Dict[str, Any]] = None
    if train_threshold or (train_threshold is None and limit is None):
        from loglm.anomaly import best_f1_threshold

        tr = [load_anomaly(s, root, split="train") for s in systems]
        texts = [t for df in tr for t in df["log"].tolist()]
        y = np.array([lab == "abnormal" for df in tr for lab in df["Label"].tolist()])
        _say(log, f"anomaly detection: choosing the threshold on {len(texts)} training templates")
        _, tr_scores = score(texts, None if log is not None else False, exclude_self=True)
        th, f1 = best_f1_threshold(y, tr_scores)
        chosen = {"threshold_train": th, "F1_train_templates": f1, "train_templates": len(texts)}

    rows = []
    for s in systems:
        df = load_anomaly(s, root, split="test")
        if limit is not None:
            df = df.iloc[:limit]
        _say(log, f"anomaly detection {s}: {len(df)} templates")
        t0 = time.perf_counter()
        quiet = None if log is not None else False
        alone, scores = score(df["log"].tolist(), quiet)
        secs = time.perf_counter() - t0
        truth = df["Label"].tolist()
        pred = np.where(scores >= threshold, "abnormal", "normal")
        m = classification_scores(truth, pred.tolist())
        m_alone = classification_scores(truth, np.where(alone >= threshold, "abnormal", "normal").tolist())
        best = 0.0
        for th in np.unique(scores):
            f = classification_scores(truth, np.where(scores >= th, "abnormal", "normal").tolist())["f1"]
            best = max(best, f)
        y = (df["Label"] == "abnormal").to_numpy()
        rows.append({"system": s.upper() if s == "bgl" else s.capitalize(), "templates": len(df),
                     "abnormal": int((df["Label"] == "abnormal").sum()), "threshold": threshold,
                     "precision": m["precision"], "recall": m["recall"], "F1": m["f1"], "accuracy": m["accuracy"],
                     "predicted_abnormal": int((pred == "abnormal").sum()), "F1_best_threshold": best,
                     "AUC": _auc(y, scores), "F1_model_alone": m_alone["f1"], "AUC_model_alone": _auc(y, alone),
                     "seconds": round(secs, 2)})
        if chosen is not None:
            mt = classification_scores(truth, np.where(scores >= chosen["threshold_train"], "abnormal", "normal").tolist())
            rows[-1].update(chosen)
            rows[-1].update({"F1_train_threshold": mt["f1"], "precision_train_threshold": mt["precision"],
                             "recall_train_threshold": mt["recall"],
                             "predicted_abnormal_train_threshold": int((scores >= chosen["threshold_train"]).sum())})
        if keep_scores:
            rows[-1]["scores"] = [round(float(v), 6) for v in scores]
            rows[-1]["scores_model_alone"] = [round(float(v), 6) for v in alone]
        if on_rows is not None:
            on_rows(rows)
    return rows


#: Task helper whose default answer length an IRS test set uses.
_HELPER_OF = {"interpretation": "interpret", "root_cause": "root_cause", "solution": "solution"}


def _auc(y: Any, scores: Any) -> Optional[float]:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None with one class."""
    import numpy as np

    y = np.asarray(y, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def evaluate_irs(model: Any, *, tasks: Sequence[str] = ("interpretation", "root_cause", "solution"),
                 limit: Optional[int] = None, max_new_tokens: int = 256, max_batch: int = 8, seed: int = 0,
                 root: Any = None, log: Optional[Log] = None, keep_outputs: bool = False,
                 on_rows: Optional[Rows] = None, trim: bool = True) -> List[Dict[str, Any]]:
    """Interpretation, root-cause analysis and solution recommendation on the three test
    files (first ``limit`` pairs when given): each record's own instruction and input
    (``instruction\\ninput``, as in training), greedy decoding of up to ``max_new_tokens``,
    answers cut to the task helpers' default length (:data:`loglm.tasks.ANSWER_WORDS`;
    ``trim=False`` keeps them whole); corpus BLEU (sacrebleu 13a) and mean ROUGE-1/2/L
    F-measure (rouge-score), 0-100."""
    from loglm.datasets import load_irs_test

    rows: List[Dict[str, Any]] = []
    for task in tasks:
        df = load_irs_test(task, root)
        if limit is not None:
            df = df.iloc[:limit]
        rows.append(score_irs(model, df, task, max_new_tokens=max_new_tokens, max_batch=max_batch, seed=seed,
                              log=log, keep_outputs=keep_outputs, trim=trim))
        if on_rows is not None:
            on_rows(rows)
    return rows


def score_irs(model: Any, df: Any, task: str, *, max_new_tokens: int = 256, max_batch: int = 8, seed: int = 0,
              log: Optional[Log] = None, keep_outputs: bool = False, trim: bool = True,
              repetition_penalty: float = 1.0) -> Dict[str, Any]:
    """One row of :func:`evaluate_irs` for any DataFrame of (instruction, input, output)
    records of a free-text capability, e.g. a validation slice of the training records
    (``repetition_penalty`` as for :meth:`loglm.LogLM.generate`, for comparing settings).
    With an example bank on the model (:meth:`loglm.LogLM.use_examples`), a record whose log
    has a known answer in the bank gets it, as the task helpers would answer; the row counts
    them (``known_answers``)."""
    from loglm.answers import clean_text, trim_to_words
    from loglm.tasks import ANSWER_WORDS
    from loglm.metrics import bleu, rouge
    from loglm.prompts import alpaca_prompt

    if task not in _HELPER_OF:
        raise InvalidInputError(f"unknown task {task!r}; expected one of {list(_HELPER_OF)}")
    _say(log, f"{task}: {len(df)} pairs, max_new_tokens={max_new_tokens}")
    inputs = [str(x) for x in df["input"]]
    known = (model.known_answers(task, inputs) if callable(getattr(model, "known_answers", None))
             else [None] * len(inputs))
    todo = [i for i, k in enumerate(known) if k is None]
    prompts, truncated = [], 0
    for i in todo:
        ins, inp = df["instruction"].iloc[i], inputs[i]
        fitted, cut = model.fit_text(inp, model.context_length - max_new_tokens - 64 - len(ins))
        truncated += cut
        prompts.append(alpaca_prompt(ins, fitted))
    t0 = time.perf_counter()
    outs = model.generate(prompts, max_new_tokens=max_new_tokens, temperature=0.0, seed=seed,
                          max_batch=max_batch, repetition_penalty=repetition_penalty) if prompts else []
    secs = time.perf_counter() - t0
    words = ANSWER_WORDS[_HELPER_OF[task]] if trim else None
    hyps = [k.output if k is not None else "" for k in known]
    for i, o in zip(todo, outs):
        hyps[i] = trim_to_words(clean_text(o.text), words)
    refs = df["output"].tolist()
    b = bleu(hyps, refs, sentence_scores=False)
    r = rouge(hyps, refs)
    row = {"task": task, "pairs": len(df), "BLEU": b.score, "ROUGE-1": 100 * r.mean["rouge1"]["fmeasure"],
           "ROUGE-2": 100 * r.mean["rouge2"]["fmeasure"], "ROUGE-L": 100 * r.mean["rougeL"]["fmeasure"],
           "bleu_signature": b.signature, "truncated_inputs": truncated, "max_words": words,
           "known_answers": len(known) - len(todo),
           "hit_max_new_tokens": sum(o.finish_reason == "length" for o in outs),
           "completion_tokens": sum(o.completion_tokens for o in outs), "seconds": round(secs, 2)}
    sources = ["model" if k is None else "example" for k in known]
    if row["known_answers"]:  # each part on its own: what the model and the bank score
        row["by_source"] = {}
        for src in ("example", "model"):
            sel = [i for i, x in enumerate(sources) if x == src]
            if sel:
                part_h, part_r = [hyps[i] for i in sel], [refs[i] for i in sel]
                row["by_source"][src] = {"pairs": len(sel), "BLEU": bleu(part_h, part_r, sentence_scores=False).score,
                                         "ROUGE-L": 100 * rouge(part_h, part_r).mean["rougeL"]["fmeasure"]}
    if keep_outputs:
        row["outputs"] = hyps
        row["sources"] = sources
    return row


def evaluate(task: str = "all", *, model: Any = None, model_path: Union[str, os.PathLike, None] = None,
             adapter: Any = "auto", systems: Optional[Sequence[str]] = None, limit: Optional[int] = None, threads: Optional[int] = None,
             seed: int = 0, threshold: float = 0.5, max_new_tokens: int = 256, root: Any = None,
             log: Optional[Log] = None, command: Optional[str] = None,
             checkpoint: Optional[Callable[[Dict[str, Any]], object]] = None,
             examples: Optional[str] = "train") -> Dict[str, Any]:
    """Run ``task`` (``"parsing"``, ``"anomaly"``, ``"irs"`` or ``"all"``) and return the
    result dict: ``meta`` (model file, its sha256, the LoRA adapters merged and the
    sha256 of their weights, library version, metric signatures, settings, timings)
    plus one list of rows per task.

    ``adapter`` is passed to :meth:`LogLM.load` when the model is loaded here
    (``None``: the base model alone); with ``model`` given, its own adapters are
    recorded. ``examples="train"`` (the default) lets the model use the labelled
    examples of the training split (:meth:`loglm.LogLM.use_examples`: anomaly detection
    combines the model's answer with its nearest labelled training templates; a free-text
    record whose log has a known answer in the training records gets it; parsing
    seeds the template cache with the labelled training lines, ``evaluate_parsing(labelled=
    "train")``); ``None`` evaluates the model's answers alone."""
    import loglm
    from loglm.models import adapter_sha256, sha256_file

    if task not in TASKS + ("all",):
        raise InvalidInputError(f"unknown evaluation {task!r}; expected one of {', '.join(TASKS + ('all',))}")
    if model is None:
        _say(log, f"loading model {model_path or '(default)'}")
        model = loglm.LogLM.load(model_path, adapter=adapter, threads=threads)
    path = Path(model.info["path"])
    adapters = [{"path": a, "name": Path(a).name, "sha256": adapter_sha256(a)}
                for a in model.info.get("adapter", [])]
    meta: Dict[str, Any] = {
        "loglm_version": loglm.__version__,
        "model": str(model_path) if model_path is not None else "default",
        "model_file": path.name,
        "model_sha256": sha256_file(path) if path.is_file() else None,
        "adapter": adapters,
        "architecture": model.info.get("architecture"),
        "threads": model.info.get("threads"),
        "task": task, "limit": limit, "seed": seed, "threshold": threshold, "max_new_tokens": max_new_tokens,
        "decoding": "greedy (temperature=0)",
        "signatures": {"rouge": ROUGE_SIGNATURE, "parsing": "loglm.metrics.parsing_scores",
                       "anomaly": "loglm.metrics.classification_scores (pos_label=abnormal)"},
        "python": platform.python_version(), "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "examples": examples,
    }
    if examples not in (None, "train"):
        raise InvalidInputError(f"examples must be 'train' or None, got {examples!r}")
    if examples == "train":
        from loglm.retrieval import ExampleBank

        # the training split only (records 0-1231), never a test file: anomaly
        # neighbours, and known answers for the free-text capabilities
        model.use_examples(ExampleBank.from_instructions(root))
    if callable(getattr(model, "anomaly_evidence", None)):
        meta["anomaly_evidence"] = repr(model.anomaly_evidence())
    res: Dict[str, Any] = {"meta": meta}

    def saver(part: str) -> Optional[Rows]:
        if checkpoint is None:
            return None

        def save(rows: List[Dict[str, Any]]) -> None:
            res[part] = list(rows)
            checkpoint(res)
        return save

    t0 = time.perf_counter()
    if task in ("parsing", "all"):
        res["parsing"] = evaluate_parsing(model, systems=systems, limit=limit, root=root, log=log,
                                          on_rows=saver("parsing"), labelled=examples)
    if task in ("anomaly", "all"):
        res["anomaly"] = evaluate_anomaly(model, limit=limit, threshold=threshold, root=root, log=log,
                                          on_rows=saver("anomaly"))
    if task in ("irs", "all"):
        res["irs"] = evaluate_irs(model, limit=limit, max_new_tokens=max_new_tokens, seed=seed, root=root, log=log,
                                  on_rows=saver("irs"), keep_outputs=True)
        if res["irs"]:
            meta["signatures"]["bleu"] = res["irs"][0]["bleu_signature"]
    meta["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def _f(x: Any, nd: int = 3) -> str:
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _table(header: List[str], rows: List[List[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def to_markdown(res: Dict[str, Any]) -> str:
    """Markdown tables laid out like the paper's Tables II, III and IV, with the metadata."""
    m = res["meta"]
    ads = m.get("adapter") or []
    adapter_text = ("LoRA adapter " + ", ".join(f"`{a['name']}` (adapter_model.safetensors sha256 `{a['sha256']}`)"
                                                for a in ads)) if ads else "no LoRA adapter"
    parts = [f"Model `{m['model_file']}` (sha256 `{m['model_sha256']}`), {adapter_text}, loglm {m['loglm_version']}, "
             f"{m['decoding']}, seed {m['seed']}, limit {m['limit'] or 'none (full test sets)'}."]
    if res.get("parsing"):
        rows = res["parsing"]
        parsers = list(dict.fromkeys(r["parser"] for r in rows))
        systems = list(dict.fromkeys(r["system"] for r in rows))
        by = {(r["system"], r["parser"]): r for r in rows}
        header = ["Parser"] + [f"{s} RI" for s in systems] + [f"{s} F1" for s in systems] + ["Avg RI", "Avg F1"]
        body = []
        for p in parsers:
            ri = [by[(s, p)]["RI"] for s in systems]
            f1 = [by[(s, p)]["F1"] for s in systems]
            body.append([p] + [_f(x) for x in ri] + [_f(x) for x in f1] + [_f(sum(ri) / len(ri)), _f(sum(f1) / len(f1))])
        n = rows[0]["lines"]
        parts.append(f"### Table II: log parsing (test split, {n} lines per system; RI and variable F1 on the original ground truth)\n\n"
                     + _table(header, body))
        header2 = ["System", "Parser", "GA", "FGA", "PA", "FTA", "templates", "LLM lines", "LLM rejected", "s"]
        body2 = [[r["system"], r["parser"], _f(r["GA"]), _f(r["FGA"]), _f(r["PA"]), _f(r["FTA"]), r["templates"],
                  r.get("llm_lines", "-"), r.get("llm_rejected", "-"), r["seconds"]] for r in rows]
        for p in parsers:
            pr = [by[(s, p)] for s in systems]
            body2.append(["**average**", p] + [_f(sum(r[k] for r in pr) / len(pr)) for k in ("GA", "FGA", "PA", "FTA")]
                         + ["", "", "", ""])
        parts.append("#### Table II (cont.): GA / FGA / PA / FTA on the corrected ground truth\n\n" + _table(header2, body2))
    if res.get("anomaly"):
        rows = res["anomaly"]
        header = ["System", "templates (abnormal)", "threshold", "precision", "recall", "F1", "predicted abnormal",
                  "F1 at best threshold (oracle)", "AUC", "model alone: F1 / AUC"]
        body = [[r["system"], f"{r['templates']} ({r['abnormal']})", r["threshold"], _f(r["precision"]), _f(r["recall"]),
                 _f(r["F1"]), r["predicted_abnormal"], _f(r["F1_best_threshold"]), _f(r.get("AUC")),
                 f"{_f(r.get('F1_model_alone'))} / {_f(r.get('AUC_model_alone'))}"] for r in rows]
        if any("threshold_train" in r for r in rows):
            header.append("threshold from training templates: threshold / P / R / F1 (flagged)")
            for b, r in zip(body, rows):
                b.append(f"{_f(r['threshold_train'])} / {_f(r['precision_train_threshold'])} / "
                         f"{_f(r['recall_train_threshold'])} / {_f(r['F1_train_threshold'])} "
                         f"({r['predicted_abnormal_train_threshold']})" if "threshold_train" in r else "-")
        parts.append("### Table III: template-level anomaly detection (F1 of the abnormal class)\n\n" + _table(header, body))
    if res.get("irs"):
        rows = res["irs"]
        header = ["Capability", "pairs", "BLEU", "ROUGE-1", "ROUGE-2", "ROUGE-L", "known answers", "hit max tokens"]
        body = [[r["task"], r["pairs"], _f(r["BLEU"], 2), _f(r["ROUGE-1"], 2), _f(r["ROUGE-2"], 2), _f(r["ROUGE-L"], 2),
                 r.get("known_answers", 0), r["hit_max_new_tokens"]] for r in rows]
        split = [f"{r['task']}: known answers {_f(b['example']['BLEU'], 2)} / {_f(b['example']['ROUGE-L'], 2)} "
                 f"({b['example']['pairs']}), model answers "
                 + (f"{_f(b['model']['BLEU'], 2)} / {_f(b['model']['ROUGE-L'], 2)} ({b['model']['pairs']})"
                    if "model" in b else "none")
                 for r in rows for b in [r.get("by_source")] if b]
        parts.append("### Table IV: interpretation, root cause, solution (0-100)\n\n" + _table(header, body)
                     + (("\n\nBLEU / ROUGE-L of each part (pairs): " + "; ".join(split) + ".") if split else "")
                     + f"\n\nBLEU: `{rows[0]['bleu_signature']}`; ROUGE: `{ROUGE_SIGNATURE}`.")
    return "\n\n".join(parts) + "\n"


def _stem(res: Dict[str, Any]) -> str:
    stem = f"eval_{res['meta']['task']}_{Path(res['meta']['model_file']).stem}"
    for a in res["meta"].get("adapter") or []:
        stem += f"+{a['name']}"
    if res["meta"].get("limit"):
        stem += f"_limit{res['meta']['limit']}"
    return stem


def write_results(res: Dict[str, Any], out_dir: Union[str, os.PathLike]) -> Dict[str, Path]:
    """Write ``results.json`` and ``results.md`` (named after the task and model) into
    ``out_dir``, remove the run's partial file; returns their paths."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    stem = _stem(res)
    j = d / f"{stem}.json"
    md = d / f"{stem}.md"
    j.write_text(json.dumps(res, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    md.write_text(to_markdown(res), encoding="utf-8")
    (d / f"{stem}.partial.json").unlink(missing_ok=True)
    return {"json": j, "markdown": md}


def write_partial(res: Dict[str, Any], out_dir: Union[str, os.PathLike]) -> Path:
    """Write the rows finished so far to ``<stem>.partial.json`` in ``out_dir`` (the CLI
    does this after every system / capability, so a long run that is stopped keeps them);
    :func:`write_results` removes it at the end."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{_stem(res)}.partial.json"
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(res, partial=True), indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(p)
    return p


def _stderr(msg: str) -> None:
    print(f"[loglm eval] {msg}", file=sys.stderr, flush=True)
