"""Streaming log parsing: a Rust template tree (Drain, He et al. ICWS 2017, drain3-compatible
API) that asks a language model only about lines matching no cached template.

``TemplateMiner`` is a superset of ``drain3.TemplateMiner``: ``add_log_message``, ``match``,
``extract_parameters``, ``get_parameter_list``, ``save_state`` / ``load_state`` and
``drain.clusters`` behave the same way, so pipelines switch with an import change: a drain3
``TemplateMinerConfig`` (or a drain3 ``.ini`` path) is honoured -- masking instructions with
their names (``<:IP:>``), ``mask_prefix`` / ``mask_suffix``, ``drain_sim_th``,
``drain_depth``, ``drain_max_children``, ``drain_max_clusters`` (LRU eviction),
``drain_extra_delimiters``, ``parametrize_numeric_tokens``, snapshot interval and
compression -- and drain3 snapshots are read (as JSON, never unpickled); see
:mod:`loglm._drain3`. It adds
masking of obvious variables, content-derived template ids (``"E3f9a0c12"``), ``merge`` of
trees built on separate shards, a parallel batch mode returning the loghub DataFrame, and
the LLM loop (``TemplateMiner(model=...)``), where ``model`` is any object with
``propose_templates(lines, examples) -> list[str]``.
"""
from __future__ import annotations

import base64
import json
import re
import time
import zlib
from collections.abc import Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple, Sequence

import numpy as np

from loglm import _loglm
from loglm._drain3 import (LogMasker, MaskingInstruction, TemplateMinerConfig, decode_state,
                           drain3_snapshot_to_state, parameter_regex_factory, resolve_config)
from loglm.errors import InvalidInputError, InvalidTypeError, ModelNotFoundError, require_str

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ExtractedParameter",
    "LogCluster",
    "MaskingInstruction",
    "TemplateMiner",
    "TemplateMinerConfig",
    "templates_table",
    "template_id",
    "template_matches",
    "canonical_template",
    "ExampleRetriever",
    "PARSING_INSTRUCTION",
]

#: The parsing instruction LogLM was trained with.
PARSING_INSTRUCTION = (
    "Convert the following logs into standardized templates by identifying and replacing "
    "the variable parts with a <*>."
)

_CHUNK = 1 << 16


class ExtractedParameter(NamedTuple):
    """A parameter value and the name of the mask it matched (``"*"`` for ``<*>``, else the
    ``mask_with`` of a masking instruction)."""

    value: str
    mask_name: str


class LogCluster:
    """A cluster of lines sharing a template (drain3 ``LogCluster`` attributes plus ids)."""

    __slots__ = ("cluster_id", "size", "log_template_tokens", "template_id", "llm_verified")

    def __init__(self, cluster_id: int, template: str, tid: str, size: int, locked: bool,
                 tokens: Sequence[str]) -> None:
        self.cluster_id = cluster_id
        self.size = size
        self.log_template_tokens = tuple(tokens)
        self.template_id = tid
        self.llm_verified = locked

    def get_template(self) -> str:
        """The template text, tokens joined by single spaces."""
        return " ".join(self.log_template_tokens)

    def __repr__(self) -> str:
        return (f"LogCluster(cluster_id={self.cluster_id}, template_id={self.template_id!r}, "
                f"size={self.size}, template={self.get_template()!r})")

    def __str__(self) -> str:
        return f"ID={str(self.cluster_id).ljust(5)} : size={str(self.size).ljust(10)}: {self.get_template()}"


class _DrainView:
    """``miner.drain`` compatibility view (``clusters``, ``id_to_cluster``, ``clusters_counter``)."""

    def __init__(self, miner: TemplateMiner) -> None:
        self._miner = miner

    @property
    def clusters(self) -> list[LogCluster]:
        return self._miner.clusters

    @property
    def id_to_cluster(self) -> dict[int, LogCluster]:
        return {c.cluster_id: c for c in self._miner.clusters}

    @property
    def clusters_counter(self) -> int:
        return len(self._miner._tree)

    def get_total_cluster_size(self) -> int:
        return sum(c.size for c in self._miner.clusters)


def template_id(template: str) -> str:
    """Content-derived id of a template: ``"E"`` + 8 hex digits of a stable FNV-1a hash of
    the whitespace-normalised text (equal on every machine and run)."""
    return _loglm.template_id(require_str(template, "template"))


def template_matches(template: str, line: str, param_str: str = "<*>") -> bool:
    """Whether ``template`` (``<*>`` = any text, whitespace runs equivalent) matches ``line``."""
    return _loglm.template_matches(require_str(template, "template"), require_str(line, "line"),
                                   require_str(param_str, "param_str"), True)


# loghub-2.0 template conventions (Jiang et al. 2024, "A large-scale evaluation for log
# parsing techniques"; the corrected ground truth of loghub_2k_corrected): a variable is a
# whole token, not glued to a prefix (``blk_<*>``, ``/<*>``, ``<*>:<*>`` are ``<*>``), paths,
# URLs, pure numbers and the values true / false / null / root are variables, and adjacent
# variables joined by ``.`` ``:`` ``/`` ``@`` ``#`` or nothing are one. Each rule was kept
# because it raises the share of training lines (lines 1-200 of each loghub-2k system) whose
# original template, canonicalised, equals its corrected one (EVALUATION.md, issue 16).
_CANON_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\[\](){},;\"']*<\*>[^\s\[\](){},;\"']*")
_CANON_SCHEME = re.compile(r"(?<![\w:])(?:https?|hdfs|s3a?|ftp|file|jdbc|tcp|udp):<\*>")
_CANON_PATH_SPLIT = re.compile(r"(\s|[,!;:=|\"'\[\](){}])")
_CANON_TOKEN_SPLIT = re.compile(r"(\s|[,!;:=|\"'\[\](){}.\-+@#$%&])")
_CANON_PATH = re.compile(r"^(?:/[^/]+)+$")
_CANON_GLUED = re.compile(r"^[^\s/]*<\*>[^\s/]*$")
_CANON_NAMED = frozenset({"true", "false", "null", "root"})
_CANON_JOINS = ("<*>.<*>", "<*><*>", "<*>:<*>", "<*>#<*>", "<*>/<*>", "<*>@<*>", "#<*>#")


def canonical_template(template: str, param_str: str = "<*>") -> str:
    """``template`` rewritten to the loghub-2.0 (corrected ground truth) conventions:
    whitespace runs collapsed; URLs and absolute paths holding or being variables, pure
    numbers and the words true / false / null / root become ``<*>``; a sub-token glued to a
    ``<*>`` (``blk_<*>``, ``<*>ms``, ``D<*>``; sub-tokens split at punctuation such as
    ``.-:=,[]()``) becomes ``<*>``; adjacent variables joined by ``.``, ``:``, ``/``, ``@``,
    ``#`` or nothing merge into one. Only literal text turns into ``<*>``, so a template
    that matched a line still matches it. Templates using another ``param_str`` are only
    whitespace-normalised."""
    t = " ".join(str(template).split())
    if param_str != "<*>":
        return t
    t = _CANON_SCHEME.sub("<*>", _CANON_URL.sub("<*>", t))
    t = "".join("<*>" if _CANON_PATH.match(p) else p for p in _CANON_PATH_SPLIT.split(t))
    out = []
    for tok in _CANON_TOKEN_SPLIT.split(t):
        if (tok.lower() in _CANON_NAMED or (tok.isascii() and tok.isdigit())
                or (tok != "<*>/<*>" and _CANON_GLUED.match(tok))):
            tok = "<*>"
        out.append(tok)
    t = "".join(out)
    prev = None
    while prev != t:
        prev = t
        for join in _CANON_JOINS:
            t = t.replace(join, "<*>")
        t = t.replace(" #<*> ", " <*> ")
    return t


_KEYED = re.compile(r"^[A-Za-z_-]+[:=]")


def _variable_token(token: str, param_str: str = "<*>") -> bool:
    """Whether the tree (masking) or the template conventions take a token for a variable:
    it holds a digit or canonicalises to ``<*>``; a ``key=value`` / ``Key:value`` token is
    not one (its key is constant)."""
    if _KEYED.match(token) and "://" not in token:
        return False
    return any(c.isdigit() for c in token) or canonical_template(token, param_str) == param_str


#: Words of dates and times: a timestamp under one ``<*>`` may keep its month fixed
#: (all lines of June) without that month being template text.
_DATE_WORDS = frozenset("jan feb mar apr may jun jul aug sep sept oct nov dec "
                        "mon tue wed thu fri sat sun am pm utc gmt".split())


def _fixed_token(token: str, param_str: str = "<*>") -> bool:
    """A token that stays template text when it never changes: a ``key=`` / ``Key:`` key,
    bare punctuation (``:``, ``-``, ``|``), or a word that is no variable by masking or
    conventions and no date word."""
    if _KEYED.match(token) is not None or not any(c.isalnum() for c in token):
        return True
    return not _variable_token(token, param_str) and token.lower().strip(".,:;") not in _DATE_WORDS


def _wildcards_constant(values: Sequence[str], param_str: str = "<*>") -> bool:
    """Whether the values one ``<*>`` covers on the lines it matches (one or more) show it
    covering a constant: the same value everywhere (or one line) holding a token that is
    no variable by masking or conventions; values of one shape (token count) with a token
    that never changes at one position -- a key, bare punctuation or a word that is no
    variable (``iar <*>`` over ``00106570 dear 0245f884``: ``dear`` is template text; a
    date word such as a month is not); or values that all end in the same ``.`` ``,``
    ``;`` ``:`` (punctuation the tree keeps out of its ``<*>``) unless the conventions make
    the whole value one variable (a path with its dot)."""
    split = [v.split() for v in values]
    if (values[0] and values[0][-1] in ".,;:" and all(v.endswith(values[0][-1]) for v in values)
            and canonical_template(values[0], param_str) != param_str):
        return True
    if all(v == values[0] for v in values):
        return not all(_variable_token(t, param_str) for t in split[0])
    if len({len(t) for t in split}) > 1:
        return False
    return any(all(t == toks[0] for t in toks) and _fixed_token(toks[0], param_str) for toks in zip(*split))


def _decode(line: str | bytes) -> tuple[str, bool]:
    if isinstance(line, bytes):
        try:
            return line.decode("utf-8"), False
        except UnicodeDecodeError:
            return line.decode("utf-8", errors="replace"), True
    if not isinstance(line, str):
        raise InvalidInputError(f"log lines must be str or bytes, got {type(line).__name__}")
    return line, False


def templates_table(df: Any) -> "pd.DataFrame":
    """logparser's ``_templates.csv`` from a parsed DataFrame (EventId, EventTemplate):
    one row per template with its ``Occurrences``, most frequent first."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise InvalidTypeError(f"df must be a pandas DataFrame (from parse), not {type(df).__name__}")
    if len(df) == 0:
        return pd.DataFrame({"EventId": [], "EventTemplate": [], "Occurrences": []})
    missing = [c for c in ("EventId", "EventTemplate") if c not in df.columns]
    if missing:
        raise InvalidInputError(f"df has no {' or '.join(missing)} column (columns: {', '.join(map(str, df.columns))})")
    t = df.groupby(["EventId", "EventTemplate"], sort=False).size().reset_index(name="Occurrences")
    return t.sort_values("Occurrences", ascending=False, kind="stable").reset_index(drop=True)


class ExampleRetriever:
    """Labelled ``(line, template)`` examples, retrieved for a line by the cosine of their
    sentence vectors (the MiniLM encoder of :mod:`loglm.embed` by default), as LILAC /
    LogPrompt choose their demonstrations. Neighbours with a template already chosen are
    skipped, so the ``k`` examples show ``k`` different templates where the pool has them.

    The search is :class:`loglm.retrieval.ExampleBank`'s (``parsing`` examples: a line is
    embedded by its first 1,000 characters); the encoder loads and the examples are
    embedded here, when the retriever is made."""

    def __init__(self, examples: Iterable[tuple[str, str]], encoder: Any = None) -> None:
        from loglm.retrieval import ExampleBank

        self.examples = [(str(a), str(b)) for a, b in examples]
        if not self.examples:
            raise InvalidInputError("ExampleRetriever needs at least one (line, template) example")
        self._bank = ExampleBank([{"task": "parsing", "input": a, "output": b} for a, b in self.examples],
                                 encoder=encoder)
        self._bank.vectors()

    @property
    def encoder(self) -> Any:
        """The sentence encoder."""
        return self._bank.encoder

    def nearest(self, lines: Sequence[str], k: int) -> list[list[tuple[str, str]]]:
        """Per line, up to ``k`` examples, nearest first (ties: pool order)."""
        if k <= 0 or not lines:
            return [[] for _ in lines]
        sims, _ = self._bank.similarities(list(lines))
        out = []
        for row in sims:
            picked: list[tuple[str, str]] = []
            templates: set[str] = set()
            for j in np.argsort(-row, kind="stable").tolist():
                if self.examples[j][1] not in templates:
                    picked.append(self.examples[j])
                    templates.add(self.examples[j][1])
                    if len(picked) == k:
                        break
            out.append(picked)
        return out


class TemplateMiner:
    """Online log template miner: Drain tree in Rust, optional LLM for new patterns.

    Parameters follow drain3: ``persistence_handler`` (drain3's protocol) and ``config``
    (a ``drain3.TemplateMinerConfig``, :class:`loglm.parsing.TemplateMinerConfig`, any
    object with its attributes, or the path of a drain3 ``.ini`` file); keywords override
    the config. With a config, the miner behaves as drain3: its masking instructions are
    applied (Python ``re``, named masks such as ``<:IP:>`` in templates), loglm's own
    masking is off unless ``masking=True``, ``drain_max_clusters`` bounds the live
    clusters with drain3's LRU eviction, and snapshots follow ``snapshot_compress_state``
    and ``snapshot_interval_minutes``. Settings loglm does not support raise (another
    engine) or warn (profiling, unknown attributes). Without a config, ``masking=True``
    (the default) masks obvious variables (numbers, hex, IPs, ids, paths with digits)
    before the tree; ``masking=False`` reproduces drain3's default clusters.
    ``model`` enables the LLM loop: lines matching no verified template are sent, batched
    (``batch_size``) with up to ``few_shot`` similar cached (line, template) examples, to
    ``model.propose_templates(lines, examples)``; a returned template enters the cache only
    if it matches its line, otherwise the tree's template is used and the line is flagged.
    The LLM loop does not combine with masking instructions or ``max_clusters``
    (:class:`loglm.InvalidInputError`). ``threads`` caps the Rust worker threads of batch
    calls (default: all cores).

    In batch calls (``parse``, ``add_log_messages``) a model template must also agree with
    the tree's evidence, the other lines the tree groups with its line (see
    ``_supported``); otherwise the tree's template is kept (counted in ``llm_refused``).
    ``examples`` (labelled ``(line, template)`` pairs, or an :class:`ExampleRetriever`)
    replaces the few-shot examples taken from the cache by the nearest labelled ones.
    ``labelled`` (``(line, template)`` pairs, or a DataFrame with ``Content`` and
    ``EventTemplate`` columns, e.g. a hand-checked sample of the same system) seeds the
    cache with trusted templates (:meth:`add_labelled`): a line matching one gets it
    verbatim, with or without a model, and the model only sees the rest.
    ``canonical`` (default: on without a drain3 config, off with one) rewrites model
    templates and the templates of ``parse`` output to the loghub-2.0 conventions
    (:func:`canonical_template`); ``add_log_message`` and ``clusters`` keep the tree's
    own (drain3-style) templates.
    """

    def __init__(self, persistence_handler: Any = None, config: Any = None, *,
                 model: Any = None, sim_th: float | None = None, depth: int | None = None,
                 max_children: int | None = None, masking: bool | None = None,
                 extra_delimiters: Sequence[str] | None = None, param_str: str | None = None,
                 parametrize_numeric_tokens: bool | None = None, max_clusters: int | None = None,
                 few_shot: int = 3, batch_size: int = 32, threads: int | None = None,
                 canonical: bool | None = None,
                 examples: ExampleRetriever | Iterable[tuple[str, str]] | None = None,
                 labelled: Any = None) -> None:
        d3 = resolve_config(config)

        def pick(value: Any, key: str, default: Any) -> Any:
            if value is not None:
                return value
            return d3[key] if d3 is not None else default

        if param_str is None and d3 is not None:
            param_str = f"{d3['mask_prefix']}*{d3['mask_suffix']}"
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        if few_shot < 0:
            raise InvalidInputError(f"few_shot must be >= 0, got {few_shot}")
        if masking is None:
            masking = d3 is None
        max_clusters = pick(max_clusters, "drain_max_clusters", None)
        instructions = list(d3["masking_instructions"]) if d3 is not None else []
        prefix, suffix = (d3["mask_prefix"], d3["mask_suffix"]) if d3 is not None else ("<", ">")
        if model is not None and (instructions or max_clusters is not None):
            raise InvalidInputError("the LLM loop (model=...) does not support masking instructions or max_clusters")
        self._tree = _loglm.TemplateTree(
            sim_th=float(pick(sim_th, "drain_sim_th", 0.4)),
            depth=int(pick(depth, "drain_depth", 4)),
            max_children=int(pick(max_children, "drain_max_children", 100)),
            param_str=param_str or "<*>",
            parametrize_numeric_tokens=bool(pick(parametrize_numeric_tokens, "parametrize_numeric_tokens", True)),
            extra_delimiters=[str(x) for x in pick(extra_delimiters, "drain_extra_delimiters", [])],
            masking=bool(masking),
            max_clusters=None if max_clusters is None else int(max_clusters),
        )
        self.masker = LogMasker(instructions, prefix, suffix)
        self._mask = self.masker.mask if instructions else None
        self._param_regex = parameter_regex_factory(
            self.masker, int(d3["parameter_extraction_cache_capacity"]) if d3 is not None else 3000)
        self._compress = bool(d3["snapshot_compress_state"]) if d3 is not None else False
        self._snapshot_interval = float(d3["snapshot_interval_minutes"]) * 60 if d3 is not None else None
        self._last_save = time.time()
        self._refresh_settings()
        self.config = config
        self.model = model
        self.few_shot = few_shot
        self.batch_size = batch_size
        self.threads = threads
        self.canonical = (d3 is None) if canonical is None else bool(canonical)
        if examples is not None and not isinstance(examples, ExampleRetriever):
            examples = ExampleRetriever(examples)
        self.retriever = examples
        self._llm_refused = 0
        self.persistence_handler = persistence_handler
        self._llm_calls = 0
        self._labelled_rejected = 0
        self._llm_lines = 0
        self._seconds = 0.0
        self._model_seconds = 0.0
        if persistence_handler is not None:
            self.load_state()
        if labelled is not None:
            self.add_labelled(labelled)

    def add_labelled(self, labelled: Any) -> dict[str, int]:
        """Seed the template cache with labelled examples: ``(line, template)`` pairs or a
        DataFrame with ``Content`` and ``EventTemplate`` columns (loghub's structured CSV).
        Each template is checked like a model template (it must match its own line and hold
        a literal letter: a shape such as ``<*>=<*>`` is not an event; otherwise it is
        skipped and counted as ``rejected``), then trusted:
        later lines it matches join it (the most specific matching template wins), with or
        without a model, and ``parse`` output keeps it verbatim (no :func:`canonical_template`
        rewriting: the labels' conventions win). A labelled cluster counts no line until one
        arrives. Labelled templates are not the model's few-shot examples (those stay its own
        accepted templates, which it imitates better; ``examples=`` shows labelled ones).
        Returns ``{"created", "joined", "rejected"}`` counts."""
        if hasattr(labelled, "columns"):
            missing = [c for c in ("Content", "EventTemplate") if c not in labelled.columns]
            if missing:
                raise InvalidInputError(f"labelled DataFrame has no {' or '.join(missing)} column "
                                        f"(columns: {', '.join(map(str, labelled.columns))})")
            pairs: Iterable[Any] = zip(labelled["Content"], labelled["EventTemplate"])
        elif isinstance(labelled, (str, bytes)):
            raise InvalidTypeError("labelled must be (line, template) pairs or a DataFrame, not a string")
        else:
            pairs = labelled
        out = {"created": 0, "joined": 0, "rejected": 0}
        for k, pair in enumerate(pairs):
            try:
                line, template = pair
            except (TypeError, ValueError):
                raise InvalidInputError(f"labelled example {k} is not a (line, template) pair: {pair!r:.80}") from None
            if not isinstance(line, str) or not isinstance(template, str):
                raise InvalidTypeError(f"labelled example {k}: line and template must be str, "
                                       f"got {type(line).__name__} and {type(template).__name__}")
            status, _ = self._tree.seed(line, template)
            out[status] += 1
        self._labelled_rejected += out["rejected"]
        return out

    def _refresh_settings(self) -> None:
        cfg = self._tree.config()
        self._max_clusters = cfg["max_clusters"]
        self._delimiters = list(cfg["extra_delimiters"])
        # clusters evicted before a load (a drain3 snapshot); later evictions only happen
        # when max_clusters are live, so the live count follows without scanning
        self._evicted_at_load = len(self._tree) - len(self._tree.live_clusters()) if len(self._tree) else 0

    def _live_count(self) -> int:
        n = len(self._tree) - self._evicted_at_load
        return n if self._max_clusters is None else min(n, int(self._max_clusters))

    # ---- drain3 surface -------------------------------------------------------------
    @property
    def param_str(self) -> str:
        """The parameter placeholder (``<*>``)."""
        return self._tree.config()["param_str"]

    @property
    def drain(self) -> _DrainView:
        """drain3 compatibility: ``miner.drain.clusters`` etc."""
        return _DrainView(self)

    @property
    def clusters(self) -> list[LogCluster]:
        """All live clusters (not evicted by ``max_clusters``), in creation order."""
        if self._max_clusters is None and not self._evicted_at_load:
            return [self._cluster(i) for i in range(len(self._tree))]
        return [self._cluster(i) for i in self._tree.live_clusters()]

    def _cluster(self, index: int) -> LogCluster:
        return LogCluster(*self._tree.cluster(index))

    def _result(self, index: int, change_type: str, **extra: Any) -> dict:
        cid, template, tid, size, locked, _ = self._tree.cluster(index)
        out = {
            "change_type": change_type,
            "cluster_id": cid,
            "cluster_size": size,
            "template_mined": template,
            "cluster_count": self._live_count(),
            "template_id": tid,
        }
        out.update(extra)
        return out

    def add_log_message(self, log_message: str | bytes) -> dict:
        """Add one line; returns drain3's dict (``change_type``, ``cluster_id``,
        ``cluster_size``, ``template_mined``, ``cluster_count``) plus ``template_id`` and,
        with a model, ``cache_hit`` and ``llm_rejected``."""
        t0 = time.perf_counter()
        line, bad = _decode(log_message)
        if bad:
            self._tree.add_non_utf8(1)
        if self.model is None:
            idx, change = self._tree.add(self._mask(line) if self._mask is not None else line)
            res = self._result(idx, change)
        else:
            hit = self._tree.hit_batch([line], 1)[0]
            if hit >= 0:
                res = self._result(int(hit), "none", cache_hit=True, llm_rejected=False)
            else:
                (idx, change, rejected), = self._ask_model([line])
                res = self._result(idx, change, cache_hit=False, llm_rejected=rejected)
        if bad:
            res["non_utf8"] = True
        self._seconds += time.perf_counter() - t0
        self._maybe_persist(res)
        return res

    def match(self, log_message: str, full_search_strategy: str = "never") -> LogCluster | None:
        """Cluster whose template matches the (masked) line exactly (nothing is changed), or None."""
        if self._mask is not None:
            log_message = self._mask(log_message)
        idx = self._tree.match_line(log_message, full_search_strategy)
        return None if idx is None else self._cluster(idx)

    def extract_parameters(self, log_template: str, log_message: str,
                           exact_matching: bool = True) -> list[ExtractedParameter] | None:
        """Parameters of ``log_message`` under ``log_template`` (drain3 semantics: each
        ``<*>`` matches a non-empty text; a named mask such as ``<:IP:>`` matches what its
        masking instructions match when ``exact_matching``, any text otherwise), or None
        when the line does not match."""
        if self._mask is None and not self._delimiters:
            values = _loglm.template_parameters(log_template, log_message, self.param_str, False)
            if values is None:
                return None
            return [ExtractedParameter(v, "*") for v in values]
        try:
            for d in self._delimiters:
                log_message = re.sub(d, " ", log_message)  # drain3 treats delimiters as regexes here
            regex, names = self._param_regex(log_template, bool(exact_matching))
            m = re.match(regex, log_message)
        except re.error as e:
            raise InvalidInputError(f"cannot build the parameter regex of {log_template!r}: {e}") from None
        if m is None:
            return None
        return [ExtractedParameter(v, names[g]) for g, v in m.groupdict().items() if g in names]

    def get_parameter_list(self, log_template: str, log_message: str) -> list[str]:
        """drain3's deprecated helper: parameter values, ``[]`` on mismatch."""
        params = self.extract_parameters(log_template, log_message, exact_matching=False)
        return [p.value for p in params] if params else []

    # ---- state ----------------------------------------------------------------------
    def save_state(self, snapshot_reason: str | None = None) -> str:
        """JSON state (versioned schema ``loglm.template_miner`` v1; no pickle). Also written
        to the persistence handler (drain3 protocol, bytes; base64 + zlib compressed when
        the drain3 config says ``snapshot_compress_state``) when there is one."""
        state = self._tree.to_json()
        if self.persistence_handler is not None:
            data = state.encode("utf-8")
            if self._compress:
                data = base64.b64encode(zlib.compress(data))
            self.persistence_handler.save_state(data)
        return state

    def load_state(self, state: str | bytes | None = None) -> None:
        """Replace the tree by a saved state: loglm's JSON, or a drain3 snapshot (jsonpickle
        JSON, plain or compressed; read as data, never unpickled; tree settings then come
        from this miner, as in drain3). None reads the persistence handler, where a missing
        state is a no-op.

        Raises:
            InvalidInputError: not a state loglm can read (another drain3 version included).
        """
        if state is None:
            if self.persistence_handler is None:
                raise InvalidInputError("load_state() needs a state or a persistence_handler")
            state = self.persistence_handler.load_state()
            if state is None:
                return
        text = decode_state(state)
        if '"py/object"' in text[:4096]:
            try:
                doc = json.loads(text)
            except ValueError as e:
                raise InvalidInputError(f"drain3 snapshot is not valid JSON: {e}") from None
            mine = dict(self._tree.config())
            text = drain3_snapshot_to_state(doc, config=mine)
        self._tree = _loglm.TemplateTree.from_json(text)
        self._refresh_settings()

    def _maybe_persist(self, res: dict) -> None:
        if self.persistence_handler is None:
            return
        if res["change_type"] != "none":
            reason = f"{res['change_type']} ({res['cluster_id']})"
        elif self._snapshot_interval is not None and time.time() - self._last_save >= self._snapshot_interval:
            reason = "periodic"
        else:
            return
        self.save_state(reason)
        self._last_save = time.time()

    def templates_table(self) -> "pd.DataFrame":
        """logparser's ``_templates.csv`` for the live clusters: EventId, EventTemplate,
        Occurrences (lines per template; clusters with the same template are summed), most
        frequent first. Labelled templates (:meth:`add_labelled`) no line matched are left out."""
        import pandas as pd

        rows: dict[str, list] = {}
        for c in self.clusters:
            if c.size == 0:  # a labelled template no line has matched yet
                continue
            t = c.get_template()
            if t in rows:
                rows[t][2] += c.size
            else:
                rows[t] = [template_id(t), t, c.size]
        df = pd.DataFrame(list(rows.values()), columns=["EventId", "EventTemplate", "Occurrences"])
        return df.sort_values("Occurrences", ascending=False, kind="stable").reset_index(drop=True)

    def save(self, path: str | Path) -> None:
        """Write the JSON state to a file."""
        Path(path).write_text(self._tree.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> TemplateMiner:
        """A miner restored from a file written by ``save`` (``kwargs`` as for the
        constructor, e.g. ``model``; tree settings come from the file). A missing file
        raises :class:`loglm.ModelNotFoundError` (a ``FileNotFoundError``)."""
        p = Path(path)
        if not p.exists():
            raise ModelNotFoundError(f"no saved TemplateMiner at {p}")
        m = cls(**kwargs)
        m.load_state(p.read_text(encoding="utf-8"))
        return m

    def merge(self, other: TemplateMiner) -> dict[int, int]:
        """Merge a miner built elsewhere (another shard) into this one. LLM-verified templates
        join by template id, tree clusters by Drain similarity. Returns ``{other cluster_id:
        cluster_id here}``."""
        mapping = self._tree.merge(other._tree)
        return {i + 1: j + 1 for i, j in enumerate(mapping)}

    # ---- counters -------------------------------------------------------------------
    @property
    def counters(self) -> dict:
        """lines, cache_hits, llm_calls (model invocations), llm_lines (lines sent),
        llm_accepted, llm_rejected (model templates not used: failed verification, or
        refused for disagreeing with the tree's evidence; the latter also in llm_refused),
        templates, over/under-merge repairs, non_utf8_lines,
        seconds (total) and model_seconds; labelled_templates (seeded by :meth:`add_labelled`)
        and labelled_rejected (labelled examples skipped). ``templates`` counts the distinct
        templates with at least one line (a labelled template no line matched is not one)."""
        c: dict[str, Any] = dict(self._tree.counters())
        c["llm_refused"] = self._llm_refused
        c["llm_rejected"] += self._llm_refused
        c["llm_calls"] = self._llm_calls
        c["llm_lines"] = self._llm_lines
        raw, labelled = self._tree.templates(), self._tree.labelled()
        used = [t for i, t in enumerate(raw) if not labelled[i] or self._tree.cluster(i)[3] > 0]
        c["templates"] = len(set(used))
        c["labelled_templates"] = sum(labelled)
        c["labelled_rejected"] = self._labelled_rejected
        c["seconds"] = self._seconds
        c["model_seconds"] = self._model_seconds
        return c

    # ---- LLM loop -------------------------------------------------------------------
    def _examples(self, lines: Sequence[str]) -> list[tuple[str, str]]:
        if self.few_shot == 0:
            return []
        seen: dict[tuple[str, str], None] = {}
        if self.retriever is not None:
            for near in self.retriever.nearest(list(lines), self.few_shot):
                for ex in near:
                    seen.setdefault(ex, None)
                    if len(seen) >= 4 * self.few_shot:
                        return list(seen)
            return list(seen)
        for line in lines:
            for ex in self._tree.similar_examples(line, self.few_shot):
                seen.setdefault((ex[0], ex[1]), None)
                if len(seen) >= 4 * self.few_shot:
                    return list(seen)
        return list(seen)

    def _ask_model(self, lines: Sequence[str], groups: Sequence[Sequence[str]] | None = None,
                   pool: Sequence[str] = ()) -> list[tuple[int, str, bool]]:
        """Send lines to the model (one call); check, verify and insert: (index, change,
        rejected). ``groups[i]`` are the lines the tree groups with ``lines[i]`` (the
        evidence a template must agree with, with the other lines of the batch, ``pool``; see
        :meth:`_supported`)."""
        examples = self._examples(lines)
        t0 = time.perf_counter()
        templates = self.model.propose_templates(list(lines), examples)
        self._model_seconds += time.perf_counter() - t0
        self._llm_calls += 1
        self._llm_lines += len(lines)
        templates = list(templates)
        if len(templates) != len(lines):
            raise InvalidInputError(f"model.propose_templates returned {len(templates)} templates "
                             f"for {len(lines)} lines")
        out = []
        for k, (line, tmpl) in enumerate(zip(lines, templates)):
            tmpl = tmpl if isinstance(tmpl, str) else ""
            if self.canonical:
                tmpl = canonical_template(tmpl, self.param_str)
            if tmpl and groups is not None and not self._supported(tmpl, line, groups[k], pool):
                self._llm_refused += 1
                idx, change = self._tree.fallback(line)
                out.append((idx, change, True))
                continue
            status, idx = self._tree.accept(line, tmpl)
            if status == "rejected":
                idx, change = self._tree.fallback(line)
                out.append((idx, change, True))
            else:
                out.append((idx, "cluster_created" if status == "created" else "none", False))
        return out

    #: At most this many distinct lines of a group are checked against a model template.
    EVIDENCE_SAMPLE = 64
    EVIDENCE_MIN_MATCHED = 2

    def _supported(self, template: str, line: str, group: Sequence[str], pool: Sequence[str] = ()) -> bool:
        """Whether a model template agrees with the tree's evidence: ``group``, the lines
        the tree clusters with ``line``, and ``pool``, other lines of the same batch.

        * It must match every distinct line of the group, or at least
          ``EVIDENCE_MIN_MATCHED`` of them (then the constants it keeps where the tree saw
          values vary are shared by several lines: the tree merged events, and the lines
          it does not match go back to the model); a template matching its own line alone
          in a larger group keeps constant what varies.
        * No ``<*>`` may cover a word the tree saw constant: over the lines it matches
          (group and pool), a value that is the same everywhere (or on the one line)
          may hold only tokens that the masking or the template conventions make
          variables (a digit, a path, an URL, ``true``...); values that vary may not keep
          a ``key=`` / ``Key:`` token or bare punctuation fixed at one position, nor all
          end in the same ``.,;:`` (see ``_wildcards_constant``).
        """
        def sample(xs: list[str], k: int) -> list[str]:
            if len(xs) <= k:
                return xs
            step = (len(xs) - 1) / (k - 1)
            return [xs[0]] + [xs[1 + int(i * step)] for i in range(k - 1)]

        p = self.param_str
        distinct = sample(list(dict.fromkeys([line, *group])), self.EVIDENCE_SAMPLE)
        values = [v for v in (_loglm.template_parameters(template, g, p, True) for g in distinct) if v is not None]
        if not values or (len(distinct) > 1 and len(values) < self.EVIDENCE_MIN_MATCHED):
            return False
        seen = set(distinct)
        extra = sample([x for x in dict.fromkeys(pool) if x not in seen], 4 * self.EVIDENCE_SAMPLE)
        values += [v for v in (_loglm.template_parameters(template, g, p, True) for g in extra) if v is not None]
        return not any(_wildcards_constant(col, p) for col in zip(*values))

    def _resolve(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Cluster index per line, with the model for cache misses; and the rejected flags."""
        idx = self._tree.hit_batch(lines, self.threads).astype(np.int64)
        rejected = np.zeros(len(lines), dtype=bool)
        pending = np.flatnonzero(idx < 0).tolist()
        while pending:
            keys = self._tree.group_keys([lines[i] for i in pending])
            reps: dict[int, int] = {}
            for i, k in zip(pending, keys.tolist()):
                reps.setdefault(k, i)
            rep_ids = list(reps.values())
            members: dict[int, list[str]] = {}
            for i, k in zip(pending, keys.tolist()):
                members.setdefault(k, []).append(lines[i])
            key_of = dict(zip(pending, keys.tolist()))
            pool = [lines[i] for i in pending]
            todo = rep_ids
            while todo:
                chunk, todo = todo[:self.batch_size], todo[self.batch_size:]
                asked = self._ask_model([lines[i] for i in chunk], [members[key_of[i]] for i in chunk], pool)
                for i, (j, _, rej) in zip(chunk, asked):
                    idx[i] = j
                    rejected[i] = rej
                if todo:  # templates accepted so far may already cover later groups
                    hits = self._tree.hit_batch([lines[i] for i in todo], self.threads)
                    for i, h in zip(todo, hits.tolist()):
                        if h >= 0:
                            idx[i] = h
                    todo = [i for i, h in zip(todo, hits.tolist()) if h < 0]
            rep_set = set(rep_ids)
            failed_groups = {key_of[i] for i in rep_ids if rejected[i]}
            rest = [i for i in pending if i not in rep_set]
            if not rest:
                break
            hits = self._tree.hit_batch([lines[i] for i in rest], self.threads)
            nxt = []
            for i, h in zip(rest, hits.tolist()):
                if h >= 0:
                    idx[i] = h
                elif key_of[i] in failed_groups:
                    # the model could not parse this pattern: keep the tree's template
                    idx[i] = self._tree.fallback(lines[i])[0]
                else:
                    nxt.append(i)
            pending = nxt
        return idx, rejected

    # ---- batch ----------------------------------------------------------------------
    def add_log_messages(self, lines: Iterable[str | bytes], *, progress: bool = False) -> np.ndarray:
        """Add many lines (parallel in Rust without a model; same result as adding them one
        by one). Returns the cluster index (``cluster_id - 1``) of each line."""
        idx, _, _ = self._add_many(lines, progress)
        return idx

    def _add_many(self, lines: Iterable[str | bytes], progress: bool,
                  total: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        bar = _progress(progress, total)
        parts, bads, rejs = [], [], []
        buf: list[str] = []
        bad_buf: list[bool] = []

        def flush() -> None:
            if not buf:
                return
            if self.model is None:
                todo = [self._mask(x) for x in buf] if self._mask is not None else buf
                parts.append(self._tree.add_batch(todo, self.threads).astype(np.int64))
                rejs.append(np.zeros(len(buf), dtype=bool))
            else:
                i, r = self._resolve(buf)
                parts.append(i)
                rejs.append(r)
            nbad = int(sum(bad_buf))
            if nbad:
                self._tree.add_non_utf8(nbad)
            bads.append(np.array(bad_buf, dtype=bool))
            if bar is not None:
                bar.update(len(buf))
            buf.clear()
            bad_buf.clear()

        try:
            for raw in lines:
                line, bad = _decode(raw)
                buf.append(line)
                bad_buf.append(bad)
                if len(buf) >= _CHUNK:
                    flush()
            flush()
        finally:
            if bar is not None:
                bar.close()
        self._seconds += time.perf_counter() - t0
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, bool)
        return np.concatenate(parts), np.concatenate(bads), np.concatenate(rejs)

    def parse(self, lines: Iterable[str | bytes], *, progress: bool = False,
              parameters: bool = True) -> "pd.DataFrame":
        """Parse lines (an iterable of str/bytes) into the loghub DataFrame: LineId, Content,
        EventId, EventTemplate, ParameterList, NonUtf8 (bytes that were not valid UTF-8,
        decoded with U+FFFD) and, with a model, LlmRejected. Templates are the final ones of
        each cluster, in the loghub-2.0 conventions (:func:`canonical_template`) unless the
        miner was made with ``canonical=False``; ParameterList holds the values under that
        template. The tree keeps learning: lines are added to it."""
        contents: list[str] = []

        def tee() -> Iterable[str | bytes]:
            for raw in lines:
                line, _ = _decode(raw)
                contents.append(line)
                yield raw

        total = len(lines) if isinstance(lines, Sized) else None
        idx, bad, rej = self._add_many(tee(), progress, total)
        return self._frame(contents, idx, bad, rej, parameters)

    def parse_file(self, path: str | Path | Sequence[str | Path], log_format: str | None = "auto", *,
                   progress: bool = True, parameters: bool = True, record_start: bool | str | None = None) -> "pd.DataFrame":
        """Parse log files (one path, a glob, ``"-"`` for stdin, or a list of them; plain or
        gzip, LF or CRLF; invalid UTF-8 decoded lossily and flagged, never dropped; see
        :func:`loglm.read_log_lines`). ``log_format``: the default ``"auto"`` recognises
        common headers (timestamp, pid, level, ``[thread]``, logger; see
        :func:`loglm.inputs.split_header`), keeps them out of the templates as columns and
        leaves lines without one whole; ``None`` parses whole lines; a loghub format such
        as ``"<Date> <Time> <Level>: <Content>"`` (or ``"json"``) splits exactly: the
        headers become columns and only ``Content`` is parsed; lines that do not fit keep
        the whole line as Content and get ``FormatMismatch=True``. With several files a ``File`` column is added and
        ``LineId`` is the line number inside its file. ``record_start`` (``True`` or a
        regex) joins multi-line records (stack traces) first."""
        from loglm.inputs import read_log_lines

        lines = read_log_lines(path, log_format=log_format, record_start=record_start)
        return self.parse_lines(lines, progress=progress, parameters=parameters, log_format=log_format)

    def parse_lines(self, lines: Any, *, progress: bool = False, parameters: bool = True,
                    log_format: str | None = "auto") -> pd.DataFrame:
        """Parse a :class:`loglm.LogLines` (from :func:`loglm.read_log_lines` or
        :func:`loglm.inputs.as_log_lines`) or any log input of :func:`as_log_lines`: as
        :meth:`parse`, plus the input's columns (File, log_format headers, FormatMismatch)
        and its NonUtf8 flags. ``log_format`` as for :meth:`parse_file` (lines already
        split by a format stay as they are with the default ``"auto"``)."""
        from loglm.inputs import add_input_columns, as_log_lines

        lines = as_log_lines(lines, log_format=log_format)
        content = list(lines)
        idx, _, rej = self._add_many(content, progress, len(content))
        bad = np.asarray(lines.non_utf8, dtype=bool)
        nbad = int(bad.sum())
        if nbad:
            self._tree.add_non_utf8(nbad)
        df = self._frame(content, idx, bad, rej, parameters)
        return add_input_columns(df, lines)

    def _frame(self, contents: list[str], idx: np.ndarray, bad: np.ndarray, rej: np.ndarray,
               parameters: bool) -> Any:
        import pandas as pd

        raw = self._tree.templates()
        canon = ([t if lab else canonical_template(t, self.param_str) for t, lab in zip(raw, self._tree.labelled())]
                 if self.canonical else raw)
        templates = np.array(canon + [""], dtype=object)
        ids = np.array([template_id(t) for t in templates[:-1]] + [""], dtype=object)
        data = {
            "LineId": np.arange(1, len(contents) + 1),
            "Content": contents,
            "EventId": ids[idx] if len(idx) else np.array([], dtype=object),
            "EventTemplate": templates[idx] if len(idx) else np.array([], dtype=object),
        }
        if parameters and (self._mask is not None or self._delimiters):
            data["ParameterList"] = [
                [p.value for p in (self.extract_parameters(str(templates[i]), line) or [])]
                for line, i in zip(contents, idx.tolist())]
        elif parameters:
            params = self._tree.parameters_batch(contents, idx.astype(np.uint32), self.threads)
            changed = np.array([a != b for a, b in zip(raw, canon)] + [False], dtype=bool)
            p = self.param_str
            for i in np.flatnonzero(changed[idx]).tolist():  # values under the canonical template
                params[i] = _loglm.template_parameters(canon[idx[i]], contents[i], p, True) or []
            data["ParameterList"] = params
        data["NonUtf8"] = bad
        if self.model is not None:
            data["LlmRejected"] = rej
        return pd.DataFrame(data)


def _progress(enabled: bool, total: int | None) -> Any:
    from loglm.progress import progress_bar

    return progress_bar(enabled, total, "parsing", "lines")
