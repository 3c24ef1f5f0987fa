"""drain3 compatibility for :class:`loglm.TemplateMiner` (follows drain3 0.9.11):
``TemplateMinerConfig`` objects and ``.ini`` files, regex masking instructions with their
names (``<:IP:>``), drain3's exact parameter extraction, and reading drain3 snapshots.

Masking runs here, in Python's ``re``, because drain3's instructions are Python regular
expressions (look-behind, named back-references) that the Rust ``regex`` crate does not
support; the masked line then goes to the Rust template tree, exactly as drain3 masks the
line before its Drain tree.

drain3 snapshots are jsonpickle documents. They are read as plain JSON and only the
known structure (Drain settings, prefix tree, clusters, LRU order) is taken from them:
nothing in a snapshot is imported, called or unpickled. An unknown object type (another
drain3 version or engine) raises :class:`loglm.InvalidInputError`.
"""
from __future__ import annotations

import ast
import base64
import binascii
import configparser
import json
import os
import re
import warnings
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from loglm.errors import InvalidInputError, LogFileNotFoundError

__all__ = ["TemplateMinerConfig", "MaskingInstruction", "LogMasker", "resolve_config",
           "drain3_snapshot_to_state", "decode_state"]


class MaskingInstruction:
    """drain3's ``MaskingInstruction``: occurrences of the regex ``pattern`` are replaced by
    ``mask_prefix + mask_with + mask_suffix``."""

    def __init__(self, pattern: str, mask_with: str) -> None:
        try:
            self.regex = re.compile(pattern)
        except re.error as e:
            raise InvalidInputError(f"bad masking regex {pattern!r}: {e}") from None
        self.mask_with = str(mask_with)

    @property
    def pattern(self) -> str:
        """The regex source."""
        return self.regex.pattern

    def mask(self, content: str, mask_prefix: str, mask_suffix: str) -> str:
        """``content`` with every match replaced by the named mask."""
        return self.regex.sub(mask_prefix + self.mask_with + mask_suffix, content)

    def __repr__(self) -> str:
        return f"MaskingInstruction({self.pattern!r}, {self.mask_with!r})"


class TemplateMinerConfig:
    """drain3's ``TemplateMinerConfig`` (same attribute names and defaults, same ``.ini``
    format), so a drain3 configuration works unchanged with :class:`loglm.TemplateMiner`."""

    def __init__(self) -> None:
        self.profiling_enabled = False
        self.profiling_report_sec = 60
        self.snapshot_interval_minutes = 5
        self.snapshot_compress_state = True
        self.drain_extra_delimiters: List[str] = []
        self.drain_sim_th = 0.4
        self.drain_depth = 4
        self.drain_max_children = 100
        self.drain_max_clusters: Optional[int] = None
        self.masking_instructions: List[Any] = []
        self.mask_prefix = "<"
        self.mask_suffix = ">"
        self.parameter_extraction_cache_capacity = 3000
        self.parametrize_numeric_tokens = True
        self.drain_engine = "Drain"

    def load(self, config_filename: str | os.PathLike) -> None:
        """Read a drain3 ``.ini`` file ([DRAIN], [MASKING], [SNAPSHOT], [PROFILING]).

        Raises:
            LogFileNotFoundError: the file does not exist (drain3 only logs a warning).
            InvalidInputError: a value that cannot be read.
        """
        p = Path(os.fspath(config_filename))
        if not p.is_file():
            raise LogFileNotFoundError(f"drain3 config file not found: {p}")
        parser = configparser.ConfigParser()
        try:
            parser.read(p, encoding="utf-8")
            self.profiling_enabled = parser.getboolean("PROFILING", "enabled", fallback=self.profiling_enabled)
            self.profiling_report_sec = parser.getint("PROFILING", "report_sec", fallback=self.profiling_report_sec)
            self.snapshot_interval_minutes = parser.getint("SNAPSHOT", "snapshot_interval_minutes",
                                                           fallback=self.snapshot_interval_minutes)
            self.snapshot_compress_state = parser.getboolean("SNAPSHOT", "compress_state",
                                                             fallback=self.snapshot_compress_state)
            delims = parser.get("DRAIN", "extra_delimiters", fallback=None)
            if delims is not None:
                self.drain_extra_delimiters = list(ast.literal_eval(delims))  # literals only, never code
            self.drain_sim_th = parser.getfloat("DRAIN", "sim_th", fallback=self.drain_sim_th)
            self.drain_depth = parser.getint("DRAIN", "depth", fallback=self.drain_depth)
            self.drain_max_children = parser.getint("DRAIN", "max_children", fallback=self.drain_max_children)
            self.drain_max_clusters = parser.getint("DRAIN", "max_clusters", fallback=self.drain_max_clusters)
            self.parametrize_numeric_tokens = parser.getboolean("DRAIN", "parametrize_numeric_tokens",
                                                                fallback=self.parametrize_numeric_tokens)
            self.drain_engine = parser.get("DRAIN", "engine", fallback=self.drain_engine)
            self.mask_prefix = parser.get("MASKING", "mask_prefix", fallback=self.mask_prefix)
            self.mask_suffix = parser.get("MASKING", "mask_suffix", fallback=self.mask_suffix)
            self.parameter_extraction_cache_capacity = parser.getint(
                "MASKING", "parameter_extraction_cache_capacity", fallback=self.parameter_extraction_cache_capacity)
            masking = parser.get("MASKING", "masking", fallback=None)
            if masking is not None:
                self.masking_instructions = [MaskingInstruction(m["regex_pattern"], m["mask_with"])
                                             for m in json.loads(masking)]
        except (configparser.Error, ValueError, SyntaxError, KeyError, TypeError) as e:
            raise InvalidInputError(f"cannot read drain3 config {p}: {e}") from None


#: drain3 settings and what loglm does with them
_KNOWN = {
    "profiling_enabled", "profiling_report_sec", "snapshot_interval_minutes", "snapshot_compress_state",
    "drain_extra_delimiters", "drain_sim_th", "drain_depth", "drain_max_children", "drain_max_clusters",
    "masking_instructions", "mask_prefix", "mask_suffix", "parameter_extraction_cache_capacity",
    "parametrize_numeric_tokens", "drain_engine", "engine",
}


def resolve_config(config: Any) -> Optional[Dict[str, Any]]:
    """The drain3 settings of ``config`` (a ``TemplateMinerConfig`` of drain3 or loglm, any
    object with its attributes, or the path of a drain3 ``.ini`` file) as a dict; ``None``
    for no config. Unsupported settings raise (another engine) or warn (profiling,
    attributes loglm does not know)."""
    if config is None:
        return None
    if isinstance(config, (str, os.PathLike)):
        c = TemplateMinerConfig()
        c.load(config)
        config = c
    d = TemplateMinerConfig().__dict__.copy()
    for k in list(d):
        if hasattr(config, k):
            d[k] = getattr(config, k)
    engine = getattr(config, "drain_engine", getattr(config, "engine", "Drain"))
    if str(engine) != "Drain":
        raise InvalidInputError(f"drain3 engine {engine!r} is not supported (loglm implements Drain only)")
    extra = sorted(k for k in getattr(config, "__dict__", {}) if k not in _KNOWN and not k.startswith("_"))
    if extra:
        warnings.warn(f"drain3 config settings not supported by loglm, ignored: {', '.join(extra)}",
                      UserWarning, stacklevel=3)
    if d["profiling_enabled"]:
        warnings.warn("drain3 profiling (profiling_enabled) is not supported by loglm and is ignored; "
                      "see TemplateMiner.counters for timings", UserWarning, stacklevel=3)
    if d["drain_max_clusters"] is not None and int(d["drain_max_clusters"]) < 1:
        raise InvalidInputError(f"drain_max_clusters must be >= 1 or None, got {d['drain_max_clusters']}")
    for name in ("mask_prefix", "mask_suffix"):
        if not isinstance(d[name], str):
            raise InvalidInputError(f"{name} must be a str, not {type(d[name]).__name__}")
    for mi in d["masking_instructions"]:
        if not (callable(getattr(mi, "mask", None)) and hasattr(mi, "mask_with")):
            raise InvalidInputError(f"masking instruction {mi!r} has no mask(content, prefix, suffix) / mask_with")
    return d


class LogMasker:
    """drain3's ``LogMasker``: the instructions applied in order, each on the output of the
    previous one."""

    def __init__(self, instructions: Sequence[Any], mask_prefix: str, mask_suffix: str) -> None:
        self.masking_instructions = list(instructions)
        self.mask_prefix = mask_prefix
        self.mask_suffix = mask_suffix
        self.mask_name_to_instructions: Dict[str, List[Any]] = {}
        for mi in self.masking_instructions:
            self.mask_name_to_instructions.setdefault(mi.mask_with, []).append(mi)

    def mask(self, content: str) -> str:
        """The masked line."""
        for mi in self.masking_instructions:
            content = mi.mask(content, self.mask_prefix, self.mask_suffix)
        return content

    @property
    def mask_names(self) -> List[str]:
        """Names of the masks (``mask_with`` values)."""
        return list(self.mask_name_to_instructions)

    def instructions_by_mask_name(self, mask_name: str) -> List[Any]:
        """The instructions that insert ``mask_name``."""
        return self.mask_name_to_instructions.get(mask_name, [])


def parameter_regex_factory(masker: LogMasker, capacity: int) -> Callable[[str, bool], Tuple[str, Dict[str, str]]]:
    """A cached builder of drain3's parameter-extraction regex: for a template, the regex
    whose named groups capture each mask (``<*>`` = any text, a named mask = the patterns of
    its instructions when ``exact_matching``) and the group -> mask-name map."""

    @lru_cache(maxsize=max(int(capacity), 1))
    def build(log_template: str, exact_matching: bool) -> Tuple[str, Dict[str, str]]:
        group_to_mask: Dict[str, str] = {}
        counter = [0]

        def next_name() -> str:
            name = f"p_{counter[0]}"
            counter[0] += 1
            return name

        def capture(mask_name: str) -> str:
            allowed = []
            if exact_matching:
                for mi in masker.instructions_by_mask_name(mask_name):
                    if hasattr(mi, "regex"):
                        groups = list(mi.regex.groupindex)
                        pattern = mi.pattern
                    else:
                        groups, pattern = [], ".+?"
                    for g in groups:  # named groups get unique names in the big regex
                        new = next_name()
                        pattern = pattern.replace(f"(?P={g}", f"(?P={new}").replace(f"(?P<{g}>", f"(?P<{new}>")
                    pattern = re.sub(r"\\(?!0)\d{1,2}", r"(?:.+?)", pattern)  # unnamed back-references
                    allowed.append(pattern)
            if not exact_matching or mask_name == "*":
                allowed.append(r".+?")
            name = next_name()
            group_to_mask[name] = mask_name
            return f"(?P<{name}>{'|'.join(allowed)})"

        names = set(masker.mask_names)
        names.add("*")
        pre, suf = re.escape(masker.mask_prefix), re.escape(masker.mask_suffix)
        regex = re.escape(log_template)
        for mask_name in names:
            needle = pre + re.escape(mask_name) + suf
            while True:
                new = regex.replace(needle, capture(mask_name), 1)
                if new == regex:
                    break
                regex = new
        regex = re.sub(r"\\ ", r"\\s+", regex)
        return "^" + regex + "$", group_to_mask

    return build


# ---- state documents -------------------------------------------------------------------

def decode_state(state: str | bytes) -> str:
    """A saved state as JSON text: plain JSON, or drain3's compressed form
    (base64 of zlib), recognised by its first byte."""
    if isinstance(state, str):
        raw = state.encode("utf-8")
    elif isinstance(state, (bytes, bytearray, memoryview)):
        raw = bytes(state)
    else:
        raise InvalidInputError(f"a state must be str or bytes, not {type(state).__name__}")
    s = raw.lstrip()
    if s[:1] in (b"{", b"["):
        try:
            return s.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInputError("state is not UTF-8 JSON") from None
    try:
        out = zlib.decompressobj().decompress(base64.b64decode(s, validate=False), 1 << 31)
        return out.decode("utf-8")
    except (binascii.Error, zlib.error, ValueError, UnicodeDecodeError):
        raise InvalidInputError("state is neither JSON nor a compressed (base64 + zlib) drain3 snapshot") from None


def _state_of(obj: Any, kind: str) -> Dict[str, Any]:
    """The attribute dict of a jsonpickle object of class ``kind``."""
    if not isinstance(obj, dict):
        raise InvalidInputError(f"drain3 snapshot: expected a {kind} object, got {type(obj).__name__}")
    if "py/id" in obj or "py/ref" in obj:
        raise InvalidInputError("drain3 snapshot uses object references loglm does not read (another drain3 version?)")
    cls = obj.get("py/object")
    if cls is not None and cls != kind:
        raise InvalidInputError(f"drain3 snapshot: expected {kind}, got {cls!r} (another drain3 version or engine?)")
    st = obj.get("py/state", obj)
    if isinstance(st, dict) and "py/tuple" in st:  # __slots__ objects: (dict, slots dict)
        merged: Dict[str, Any] = {}
        for part in st["py/tuple"]:
            if isinstance(part, dict):
                merged.update(part)
        st = merged
    if not isinstance(st, dict):
        raise InvalidInputError(f"drain3 snapshot: unreadable {kind} state")
    return st


def _unkey(k: str) -> Any:
    """jsonpickle ``keys=True`` encodes non-str keys as ``"json://<json>"``."""
    if isinstance(k, str) and k.startswith("json://"):
        try:
            return json.loads(k[7:])
        except ValueError:
            raise InvalidInputError(f"drain3 snapshot: bad key {k[:40]!r}") from None
    return k


def _tuple(v: Any) -> List[Any]:
    if isinstance(v, dict) and "py/tuple" in v:
        v = v["py/tuple"]
    if not isinstance(v, list):
        raise InvalidInputError("drain3 snapshot: expected a list/tuple")
    return v


def drain3_snapshot_to_state(doc: Dict[str, Any], config: Optional[Dict[str, Any]] = None) -> str:
    """A loglm state (JSON text) holding the same clusters, ids, sizes, tree paths and LRU
    order as a drain3 ``Drain`` snapshot (its jsonpickle JSON, already parsed). The tree
    settings are ``config`` (a ``TemplateTree.config()`` dict; drain3 also keeps its own
    config when loading) or, without it, the snapshot's.

    Tree nodes left behind by evicted clusters are kept (they route lines in drain3), each
    branch carried by one evicted id."""
    st = _state_of(doc, "drain3.drain.Drain")
    try:
        depth = int(st["log_cluster_depth"])
        cfg: Dict[str, Any] = {
            "sim_th": float(st["sim_th"]),
            "depth": depth,
            "max_children": int(st["max_children"]),
            "param_str": str(st.get("param_str", "<*>")),
            "parametrize_numeric_tokens": bool(st.get("parametrize_numeric_tokens", True)),
            "extra_delimiters": [str(x) for x in _tuple(st.get("extra_delimiters", []))],
            "masking": False,
        }
        max_clusters = st.get("max_clusters")
        if max_clusters is not None:
            cfg["max_clusters"] = int(max_clusters)
        if config is not None:
            cfg = {k: config[k] for k in ("sim_th", "depth", "max_children", "param_str",
                                          "parametrize_numeric_tokens", "extra_delimiters", "masking")}
            cfg["extra_delimiters"] = list(cfg["extra_delimiters"])
            max_clusters = config.get("max_clusters")
            if max_clusters is not None:
                cfg["max_clusters"] = int(max_clusters)
            depth = int(cfg["depth"])
        counter = int(st["clusters_counter"])
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInputError(f"drain3 snapshot: missing or bad setting ({e})") from None
    # clusters (plain dict, or drain3's LogClusterCache with its LRU order)
    itc = st.get("id_to_cluster", {})
    order: List[int] = []
    if isinstance(itc, dict) and itc.get("py/object") in ("drain3.drain.LogClusterCache", "cachetools.LRUCache"):
        cache = _state_of(itc, itc["py/object"])
        data = cache.get("_Cache__data", {})
        od = cache.get("_LRUCache__order")
        if isinstance(od, dict) and "py/reduce" in od:
            try:
                items = _tuple(od["py/reduce"][4])
                order = [int(_unkey(_tuple(it)[0]) if isinstance(_tuple(it)[0], str) else _tuple(it)[0]) for it in items]
            except (IndexError, TypeError, ValueError):
                raise InvalidInputError("drain3 snapshot: unreadable LRU order") from None
    elif isinstance(itc, dict) and "py/object" not in itc:
        data = itc
    else:
        raise InvalidInputError(f"drain3 snapshot: unknown cluster store {itc.get('py/object') if isinstance(itc, dict) else itc!r}")
    clusters: Dict[int, Dict[str, Any]] = {}
    for k, v in data.items():
        c = _state_of(v, "drain3.drain.LogCluster")
        try:
            cid = int(_unkey(k))
            clusters[cid] = {"tokens": [str(t) for t in _tuple(c["log_template_tokens"])],
                             "size": int(c["size"]), "cluster_id": int(c.get("cluster_id", cid))}
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInputError(f"drain3 snapshot: bad cluster {k!r} ({e})") from None
        if clusters[cid]["cluster_id"] != cid or not 1 <= cid <= counter:
            raise InvalidInputError(f"drain3 snapshot: cluster id {cid} out of place")
    # tree paths: walk the prefix tree (first level = token count)
    paths: Dict[int, Tuple[int, List[str]]] = {}
    stale: Dict[int, Tuple[int, List[str]]] = {}  # evicted ids still listed in a leaf
    ends: List[Tuple[int, List[str]]] = []  # nodes without children
    root = _state_of(st["root_node"], "drain3.drain.Node")
    stack: List[Tuple[Dict[str, Any], int, List[str]]] = []
    for n_key, child in (root.get("key_to_child_node") or {}).items():
        try:
            n = int(_unkey(n_key))
        except (TypeError, ValueError):
            raise InvalidInputError(f"drain3 snapshot: bad token-count key {str(n_key)[:40]!r}") from None
        stack.append((_state_of(child, "drain3.drain.Node"), n, []))
    seen_nodes = 0
    while stack:
        node, n, path = stack.pop()
        seen_nodes += 1
        if seen_nodes > 10_000_000:
            raise InvalidInputError("drain3 snapshot: tree too large")
        for cid in node.get("cluster_ids") or []:
            cid = int(cid)
            if cid in clusters:
                paths.setdefault(cid, (n, path))
            elif 1 <= cid <= counter:
                stale.setdefault(cid, (n, path))
        children = node.get("key_to_child_node") or {}
        if not children:
            ends.append((n, path))
        for key, child in children.items():
            if len(path) > depth:
                raise InvalidInputError("drain3 snapshot: tree deeper than its depth")
            stack.append((_state_of(child, "drain3.drain.Node"), n, path + [str(key)]))
    missing = [cid for cid in clusters if cid not in paths]
    if missing:
        raise InvalidInputError(f"drain3 snapshot: cluster(s) {missing[:5]} are not in the prefix tree")
    for cid, (n, _) in paths.items():
        if len(clusters[cid]["tokens"]) != n:
            raise InvalidInputError(f"drain3 snapshot: cluster {cid} is under the wrong token count")
    # nodes left by evicted clusters route lines in drain3 (a missing node sends a line to
    # the wildcard child instead): give each uncovered branch to an evicted id
    covered = {(n, tuple(p[:i])) for n, p in list(paths.values()) + list(stale.values()) for i in range(len(p) + 1)}
    free = [cid for cid in range(1, counter + 1) if cid not in clusters and cid not in stale]
    orphan: Dict[int, Tuple[int, List[str]]] = {}
    for n, p in sorted(ends, key=lambda e: (e[0], e[1])):
        if (n, tuple(p)) in covered:
            continue
        if not free:
            raise InvalidInputError("drain3 snapshot: more tree branches than clusters")
        orphan[free.pop(0)] = (n, p)
        covered.update((n, tuple(p[:i])) for i in range(len(p) + 1))
    placeholders = {**stale, **orphan}
    param = str(cfg["param_str"])
    rank = {cid: i + 1 for i, cid in enumerate(order)}
    out = []
    for cid in range(1, counter + 1):
        c = clusters.get(cid)  # type: ignore[assignment]
        if c is None:  # evicted by drain3's LRU bound: only its tree branch is kept
            n, p = placeholders.get(cid, (0, []))
            out.append({"cluster_id": cid, "tokens": [param] * n, "size": 0, "path": list(p), "evicted": True})
        else:
            rec = {"cluster_id": cid, "tokens": c["tokens"], "size": c["size"], "path": paths[cid][1]}
            if max_clusters is not None:
                rec["last_used"] = rank.get(cid, 0)
            out.append(rec)
    total = sum(c["size"] for c in clusters.values())
    return json.dumps({"format": "loglm.template_miner", "version": 1, "config": cfg, "clusters": out,
                       "counters": {"lines": total, "cache_hits": 0, "llm_accepted": 0, "llm_rejected": 0,
                                    "over_merge_repairs": 0, "under_merge_repairs": 0, "non_utf8_lines": 0}})
