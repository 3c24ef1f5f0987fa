"""Scale-out recipes: log parsing and anomaly detection over a Ray Dataset.

Install with ``pip install "loglm[ray]"``; ``import loglm`` never imports Ray, only the
functions here do (an ``ImportError`` with that hint is raised when it is missing).

* :func:`detect_anomalies_dataset` -- ``ds.map_batches`` with one loglm actor per worker
  (each loads its own model with ``threads`` threads) scoring the lines of its batches.
  Every line is scored on its own, so the result equals :meth:`loglm.LogLM.detect_anomalies`.
* :func:`parse_dataset` -- the template tree is the cheap, order-dependent part (about a
  million lines/s in one process, see BENCHMARKS.md) and the model is the expensive part.
  So one coordinator (the calling process) streams the lines through one
  :class:`loglm.TemplateMiner` in dataset order, and the model's template proposals fan
  out to a :class:`ModelPool` of Ray actors: each batch of new patterns is split across
  the actors, which answer with the same few-shot examples and the same token budget.
  A line's answer does not depend on the rest of its batch, so the templates -- and their
  content-derived EventIds -- equal single-process :meth:`loglm.LogLM.parse` line for line.

Why not mine each shard on its own tree and merge the trees by template id at the end?
Drain generalises templates in the order it sees lines, and the model's answer depends on
the few-shot examples of the cache it has at that moment; a tree that saw only one shard
ends with different templates for some lines, so a merged result is not the
single-process one (the loglm tree supports it -- :meth:`loglm.TemplateMiner.merge`
joins LLM-verified templates by id -- but it is approximate, and we chose exact).
"""
from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from loglm.errors import InvalidInputError, InvalidTypeError, MissingDependencyError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ModelPool", "parse_dataset", "detect_anomalies_dataset"]

ModelSpec = Union[str, "os.PathLike[str]", Any, None]

_RAY_HINT = 'Ray is not installed: pip install "loglm[ray]" (or "ray[data]>=2.9")'


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:  # optional dependency
        raise MissingDependencyError(_RAY_HINT) from e
    return ray


def _model_args(model: ModelSpec, load_kwargs: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """A picklable (path, load kwargs) pair for ``LogLM.load`` in another process."""
    from loglm.model import LogLM

    from loglm.models import resolve, resolve_adapters

    kw = dict(load_kwargs)
    if isinstance(model, LogLM):
        kw.setdefault("context_length", model.context_length)
        kw.setdefault("adapter", list(model.info.get("adapter") or []) or None)
        return str(model.info["path"]), kw
    if model is None or isinstance(model, (str, os.PathLike)):
        # Resolve here (the workers get a path, so "auto" must be decided now) and
        # fail on a missing model or adapter before any actor starts.
        adapters = resolve_adapters(kw.pop("adapter", "auto"), model)
        kw["adapter"] = [str(a) for a in adapters] or None
        return str(resolve(model)), kw
    raise InvalidTypeError(f"model must be a path, a model name, a loglm.LogLM or None, not {type(model).__name__}")


def _check_workers(workers: int, threads: int) -> None:
    if not isinstance(workers, int) or workers < 1:
        raise InvalidInputError(f"workers must be an int >= 1, got {workers!r}")
    if not isinstance(threads, int) or threads < 1:
        raise InvalidInputError(f"threads must be an int >= 1, got {threads!r}")


def _ensure_init(ray: Any) -> None:
    if not ray.is_initialized():
        ray.init()


@contextlib.contextmanager
def _ordered(ds: Any) -> Iterator[None]:
    """Ray Data keeps the row order of ``ds`` while inside (a Dataset runs with the
    DataContext it was created with; the setting is restored afterwards)."""
    from ray.data import DataContext

    ctxs = [DataContext.get_current()]
    own = getattr(ds, "context", None)
    if own is not None and all(own is not c for c in ctxs):
        ctxs.append(own)
    old = [c.execution_options.preserve_order for c in ctxs]
    for c in ctxs:
        c.execution_options.preserve_order = True
    try:
        yield
    finally:
        for c, o in zip(ctxs, old):
            c.execution_options.preserve_order = o


def _check_column(ds: Any, column: str) -> None:
    names = ds.schema().names
    if column not in names:
        raise InvalidInputError(f"the dataset has no column {column!r} (columns: {', '.join(names)}); "
                         "pass column=... (ray.data.read_text names it 'text')")


def _clean(x: Any) -> Any:
    """One log line as ``model.parse`` sees it (a trailing CR dropped)."""
    if isinstance(x, str):
        return x.rstrip("\r")
    if isinstance(x, bytes):
        return x.rstrip(b"\r")
    raise InvalidInputError(f"log lines must be str or bytes, got {type(x).__name__}")


# ---- workers ----------------------------------------------------------------------------

class _TemplateWorker:
    """Ray actor body: one model answering parts of the parser's template batches."""

    def __init__(self, path: Optional[str], threads: int, load_kwargs: Dict[str, Any]) -> None:
        from loglm.model import LogLM

        self.model = LogLM.load(path, threads=threads, **load_kwargs)

    def widths(self, lines: List[str], examples: List[Tuple[str, str]]) -> List[int]:
        return [w for _, w in self.model._template_prompts(lines, examples, None)]

    def propose(self, lines: List[str], examples: List[Tuple[str, str]], width: int) -> List[str]:
        prompts = self.model._template_prompts(lines, examples, None)
        return self.model._generate_templates(lines, prompts, width, 8)

    def ready(self) -> bool:
        return True


class ModelPool:
    """``workers`` Ray actors, each holding its own copy of a model (``threads`` threads
    each), used by :func:`parse_dataset` as the template miner's model.

    ``model`` is a path, a model name, a :class:`loglm.LogLM` (its file is loaded again in
    each actor) or ``None`` for the default model; ``load_kwargs`` go to
    :meth:`loglm.LogLM.load`. Each actor reserves ``threads`` CPUs of the Ray cluster while
    the pool is open, so close it (use it as a context manager, or call :meth:`close`)
    before running other Ray work that needs those CPUs; reuse one pool across calls to
    load the models once.
    """

    def __init__(self, model: ModelSpec = None, *, workers: int = 2, threads: int = 1,
                 **load_kwargs: Any) -> None:
        ray = _ray()
        _check_workers(workers, threads)
        path, kw = _model_args(model, load_kwargs)  # a bad model fails before Ray starts
        _ensure_init(ray)
        cls = ray.remote(num_cpus=threads)(_TemplateWorker)
        self._ray = ray
        self.workers = workers
        self.actors = [cls.remote(path, threads, kw) for _ in range(workers)]
        self.calls = 0
        try:
            ray.get([a.ready.remote() for a in self.actors])  # surface load errors here
        except Exception:
            self.close()
            raise

    def propose_templates(self, lines: Sequence[str], examples: Sequence[Tuple[str, str]] = ()) -> List[str]:
        """:meth:`loglm.LogLM.propose_templates`, the lines split across the actors (same
        examples, same token budget: the answers equal a single model's)."""
        lines = [str(x) for x in lines]
        if not lines:
            return []
        ex = [(str(a), str(b)) for a, b in examples]
        n = min(len(self.actors), len(lines))
        step = -(-len(lines) // n)
        parts = [lines[i:i + step] for i in range(0, len(lines), step)]
        actors = self.actors[:len(parts)]
        ray = self._ray
        widths = ray.get([a.widths.remote(p, ex) for a, p in zip(actors, parts)])
        width = max(max(w) for w in widths)
        outs = ray.get([a.propose.remote(p, ex, width) for a, p in zip(actors, parts)])
        self.calls += 1
        return [t for part in outs for t in part]

    def close(self) -> None:
        """Stop the actors (idempotent)."""
        for a in self.actors:
            with contextlib.suppress(Exception):
                self._ray.kill(a)
        self.actors = []

    def __enter__(self) -> "ModelPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_dataset(ds: Any, *, column: str = "text", model: ModelSpec = None, workers: int = 2,
                  threads: int = 1, pool: Optional[ModelPool] = None, miner: Any = None,
                  few_shot: int = 3, batch_size: int = 16, progress: bool = False,
                  log_format: Optional[str] = "auto", **load_kwargs: Any) -> "pd.DataFrame":
    """Parse the log lines in column ``column`` of a Ray Dataset into the loghub DataFrame
    of :meth:`loglm.LogLM.parse` (LineId in dataset order, Content, EventId,
    EventTemplate, ParameterList, NonUtf8, LlmRejected) -- equal to it line for line.
    ``log_format`` as for :meth:`loglm.LogLM.parse`: by default common headers are
    recognised and become columns (``None`` parses whole lines).

    The lines stream through one template tree here; template proposals for new patterns
    go to ``pool`` (a :class:`ModelPool`), or to a pool of ``workers`` actors with
    ``threads`` threads each started for this call and stopped after it. ``miner`` (a
    :class:`loglm.TemplateMiner`) keeps learning in an existing tree; ``few_shot`` and
    ``batch_size`` are as for :meth:`loglm.LogLM.parse`.

    Raises:
        ImportError: Ray is not installed.
        ValueError: no such column, bad ``workers`` / ``threads``.
        loglm.InvalidInputError: the dataset is empty or holds non-text values.
    """
    from loglm.parsing import TemplateMiner

    _ray()
    _check_workers(workers, threads)
    _check_column(ds, column)
    own = pool is None
    if pool is None:
        pool = ModelPool(model, workers=workers, threads=threads, **load_kwargs)
    try:
        tm = miner if miner is not None else TemplateMiner(model=pool, few_shot=few_shot, batch_size=batch_size)
        if tm.model is None:
            tm.model = pool

        split = _Split(log_format)

        def lines() -> Iterator[Any]:
            for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
                yield from split(_clean(x) for x in batch[column].tolist())

        with _ordered(ds):
            df = tm.parse(lines(), progress=progress)
        if len(df) == 0:
            raise InvalidInputError("no log lines given")
        return split.columns(df)
    finally:
        if own:
            pool.close()


class _Split:
    """``log_format`` applied batch by batch as the lines stream to the tree: yields the
    Content of each line and keeps the header fields, NonUtf8 and FormatMismatch flags,
    added to the parsed frame at the end as :meth:`loglm.LogLM.parse` does."""

    def __init__(self, log_format: Optional[str]) -> None:
        self.log_format = log_format
        self.n = 0
        self.fields: Dict[str, List[str]] = {}
        self.bad: List[Any] = []
        self.mismatch: List[Any] = []

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        from loglm.inputs import as_log_lines

        raw = list(items)
        if self.log_format is None or not raw:
            self.n += len(raw)
            yield from raw
            return
        ll = as_log_lines(raw, log_format=self.log_format)
        for k, v in ll.fields.items():
            self.fields.setdefault(k, [""] * self.n).extend(v)
        self.n += len(ll)
        for v in self.fields.values():
            v.extend([""] * (self.n - len(v)))
        self.bad.append((self.n - len(ll), ll.non_utf8))
        if ll.format_mismatch is not None:
            self.mismatch.append(ll.format_mismatch)
        yield from ll

    def columns(self, df: "pd.DataFrame") -> "pd.DataFrame":
        import numpy as np

        from loglm.inputs import LogLines, add_input_columns

        if self.log_format is None:
            return df
        bad = df["NonUtf8"].to_numpy().copy()
        for start, flags in self.bad:
            bad[start:start + len(flags)] |= flags
        df["NonUtf8"] = bad
        ll = LogLines.of(df["Content"].tolist(), bad)
        order = ["Timestamp", "Host", "Pid", "Level", "Thread", "Component", "Header"]
        names = sorted(self.fields, key=lambda k: order.index(k) if k in order else -1) \
            if self.log_format == "auto" else list(self.fields)
        ll.fields = {k: self.fields[k] for k in names}
        ll.format_mismatch = np.concatenate(self.mismatch) if self.mismatch else None
        ll.log_format = self.log_format
        return add_input_columns(df, ll)


# ---- anomaly detection --------------------------------------------------------------------

class _AnomalyScorer:
    """``map_batches`` callable: one model per actor, scoring the lines of each batch."""

    def __init__(self, path: Optional[str], threads: int, load_kwargs: Dict[str, Any], column: str,
                 threshold: float) -> None:
        from loglm.model import LogLM

        self.model = LogLM.load(path, threads=threads, **load_kwargs)
        self.column = column
        self.threshold = threshold

    def __call__(self, batch: Any) -> Any:
        import pandas as pd

        if len(batch) == 0:
            return pd.DataFrame({"Content": [], "Score": [], "Label": [], "Truncated": [], "NonUtf8": []})
        df = self.model.detect_anomalies([_clean(x) for x in batch[self.column].tolist()],
                                         threshold=self.threshold, progress=False)
        out = df.drop(columns=["LineId"])
        for c in batch.columns:
            if c != self.column and c not in out.columns:
                out[c] = batch[c].to_numpy()
        return out


def detect_anomalies_dataset(ds: Any, *, column: str = "text", model: ModelSpec = None, workers: int = 2,
                             threads: int = 1, threshold: float = 0.5, batch_size: int = 64,
                             as_dataset: bool = False, **load_kwargs: Any) -> "pd.DataFrame":
    """Score every line of column ``column`` of a Ray Dataset: ``ds.map_batches`` with
    ``workers`` actors (each loads ``model`` with ``threads`` threads; identical lines
    within a batch are scored once).

    Returns a pandas DataFrame equal to :meth:`loglm.LogLM.detect_anomalies` on the same
    lines (LineId in dataset order, Content, Score, Label, Truncated, NonUtf8), or with
    ``as_dataset=True`` the lazy Ray Dataset of the mapped batches (Content, Score,
    Label, Truncated, NonUtf8 and the input's other columns; no LineId) to write out
    without collecting it.

    Raises:
        ImportError: Ray is not installed.
        ValueError: no such column, bad ``workers`` / ``threads`` / ``threshold``.
    """
    ray = _ray()
    _check_workers(workers, threads)
    if not 0.0 <= threshold <= 1.0:
        raise InvalidInputError(f"threshold must be in [0, 1], got {threshold}")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    _check_column(ds, column)
    _ensure_init(ray)
    path, kw = _model_args(model, load_kwargs)
    mapped = ds.map_batches(
        _AnomalyScorer,
        fn_constructor_kwargs={"path": path, "threads": threads, "load_kwargs": kw, "column": column,
                               "threshold": threshold},
        compute=ray.data.ActorPoolStrategy(size=workers),  # one actor per worker
        num_cpus=threads,
        batch_size=batch_size,
        batch_format="pandas",
    )
    if as_dataset:
        return mapped
    import pandas as pd

    # blocks as they come (Dataset.to_pandas combines them with a call pandas 3 deprecates)
    with _ordered(mapped):
        parts = [b for b in mapped.iter_batches(batch_format="pandas", batch_size=None) if len(b)]
    if not parts:
        raise InvalidInputError("no log lines given")
    df = pd.concat(parts, ignore_index=True)
    df.insert(0, "LineId", range(1, len(df) + 1))
    return df
