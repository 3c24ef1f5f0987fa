"""Shared pytest fixtures.

The datasets are read in place from ``LOGLM_DATA_DIR`` (``.ci/run`` points it at
``../shared/data``); they are never copied into the repository.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _data_dir() -> Path:
    env = os.environ.get("LOGLM_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Root of the shared datasets (loghub_2k, loglm, logprompt, hdfs).

    ``LOGLM_DATA_DIR`` names it (CI sets it; a wrong value fails). Without it, the
    checkout's ``../shared/data`` or loglm's download cache (``~/.cache/loglm/data``,
    filled by ``loglm.datasets``) is used when present; otherwise the tests that need
    the datasets are skipped, saying so."""
    env = os.environ.get("LOGLM_DATA_DIR")
    if env:
        d = Path(env)
        if not d.is_dir():
            pytest.fail(f"LOGLM_DATA_DIR={env} is not a folder; point it at the datasets folder")
        return d
    from loglm.datasets import _cache_root

    for d in (REPO.parent / "shared" / "data", _cache_root()):
        if (d / "loghub_2k").is_dir():
            return d
    pytest.skip("datasets not available: set LOGLM_DATA_DIR to the datasets folder (see README, "
                "'Running the tests')")
