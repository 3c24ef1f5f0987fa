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
    """Root of the shared datasets (loghub_2k, loglm, logprompt, hdfs)."""
    d = _data_dir()
    if not d.is_dir():
        pytest.fail(f"datasets not found at {d}; set LOGLM_DATA_DIR to the shared data folder")
    return d
