"""One argument policy for the numbers and strings callers hand to loglm.

The Rust core takes fixed-width integers: a Python int out of their range
would surface as ``OverflowError`` and a float as ``TypeError``, neither a
:class:`~loglm.errors.LoglmError`. These helpers check first and raise
:class:`~loglm.errors.InvalidInputError` naming the allowed range (or
:class:`~loglm.errors.InvalidTypeError`, also a ``TypeError``, for a value of
the wrong type). ``threads`` above the machine's cores is capped with a
warning; ``stop="the"`` is one stop string, not three.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Union

from loglm.errors import InvalidInputError, InvalidTypeError

U64_MAX = 2**64 - 1
#: Largest ``context_length`` a model may be loaded with (``model::limits::MAX_CONTEXT``).
MAX_CONTEXT = 1 << 20
#: Largest ``max_new_tokens`` / ``top_k`` passed on (larger ones cannot mean anything more).
MAX_TOKENS = 2**31 - 1
MAX_THREADS = 1 << 20
MAX_BATCH = 1 << 12


def integer(name: str, value: Any, lo: int, hi: int) -> int:
    """``value`` as an int in ``[lo, hi]``; ``InvalidTypeError`` for a non-integer
    (``True`` / ``False`` included), ``InvalidInputError`` naming the range otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidTypeError(f"{name} must be an integer from {lo} to {hi}, got {type(value).__name__} {value!r}")
    v = int(value)
    if not lo <= v <= hi:
        raise InvalidInputError(f"{name} must be from {lo} to {hi}, got {v}")
    return v


def optional_integer(name: str, value: Any, lo: int, hi: int) -> Optional[int]:
    """:func:`integer`, with ``None`` passed through."""
    return None if value is None else integer(name, value, lo, hi)


def real(name: str, value: Any) -> float:
    """``value`` as a finite float; ranges are checked by the core."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidTypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise InvalidInputError(f"{name} must be a finite number, got {v}")
    return v


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where there is one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads(value: Any) -> Optional[int]:
    """``threads`` for loading: ``None`` (the default), or 1 to the machine's
    cores; more is capped at the cores with a ``RuntimeWarning`` (a 10000-thread
    pool makes a 2-token generate take minutes)."""
    t = optional_integer("threads", value, 1, MAX_THREADS)
    cores = available_cores()
    if t is not None and t > cores:
        warnings.warn(f"threads={t} is more than the {cores} CPU cores available; using {cores}",
                      RuntimeWarning, stacklevel=3)
        t = cores
    return t


def context_length(value: Any) -> Optional[int]:
    """``context_length`` for loading: ``None`` or 1 to 2^20."""
    return optional_integer("context_length", value, 1, MAX_CONTEXT)


def token_ids(name: str, ids: Any) -> List[int]:
    """A sequence of token ids, each an integer from 0 to 2^32-1 (ids past the
    vocabulary are refused by the core with the vocabulary size)."""
    if isinstance(ids, (str, bytes)):
        raise InvalidTypeError(f"{name} must be a sequence of token ids, not a string")
    try:
        items = list(ids)
    except TypeError:
        raise InvalidTypeError(f"{name} must be a sequence of token ids, got {type(ids).__name__}") from None
    return [integer(f"{name}[{i}]", t, 0, 2**32 - 1) for i, t in enumerate(items)]


def stop_strings(stop: Union[None, str, Sequence[str]]) -> List[str]:
    """``stop`` as a list: ``None`` -> ``[]``, a string -> that one stop string."""
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, (bytes, bytearray)):
        raise InvalidTypeError("stop must be a string or a list of strings, not bytes")
    try:
        items = list(stop)
    except TypeError:
        raise InvalidTypeError(f"stop must be a string or a list of strings, got {type(stop).__name__}") from None
    for i, s in enumerate(items):
        if not isinstance(s, str):
            raise InvalidTypeError(f"stop[{i}] must be a string, got {type(s).__name__}")
    return items


def sampling(*, max_new_tokens: Any, temperature: Any, top_k: Any, top_p: Any, repetition_penalty: Any,
             seed: Any, stop: Any, **rest: Any) -> Dict[str, Any]:
    """The sampling arguments of ``generate`` / ``stream``, checked and
    normalised (``rest``, e.g. ``max_batch``, is checked when known)."""
    out: Dict[str, Any] = dict(
        max_new_tokens=integer("max_new_tokens", max_new_tokens, 1, MAX_TOKENS),
        temperature=real("temperature", temperature),
        top_k=integer("top_k", top_k, 0, MAX_TOKENS),
        top_p=real("top_p", top_p),
        repetition_penalty=real("repetition_penalty", repetition_penalty),
        seed=integer("seed", seed, 0, U64_MAX),
        stop=stop_strings(stop),
    )
    for k, v in rest.items():
        if k == "max_batch":
            v = integer("max_batch", v, 1, MAX_BATCH)
        out[k] = v
    return out


def json_schema(value: Any) -> Optional[str]:
    """A JSON Schema for constrained decoding (a dict, or its JSON text) as JSON text
    for the core, which compiles it; ``None`` passed through. The subset supported
    and the limits are in the README ("Structured output")."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, dict):
        try:
            text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError) as e:
            raise InvalidInputError(f"json_schema cannot be compiled: not JSON data ({e})") from None
    else:
        raise InvalidTypeError(f"json_schema must be a dict (or its JSON text), got {type(value).__name__}")
    return text
