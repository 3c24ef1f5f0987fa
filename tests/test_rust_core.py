"""Run the Rust core's own tests (`cargo test --release`) as part of the suite.

The core is tested without Python (tiny random-weight models, kernels, scheduler,
tokenizer parity, metrics, template tree); this test makes `python -m pytest`
the one command that runs everything. It is skipped when the sources or cargo
are not available (an installed wheel).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("cargo") is None or not (REPO / "Cargo.toml").is_file(),
                    reason="needs cargo and the source tree")
def test_cargo_test_release() -> None:
    from loglm.errors import LoglmError
    from loglm.models import default_model_path, qwen25_coder_path

    env = dict(os.environ)
    env.setdefault("RAYON_NUM_THREADS", "2")
    # Real GGUF files for the tokenizer parity tests (skipped there when absent).
    env.setdefault("LOGLM_SMOLLM2_GGUF", str(default_model_path()))
    try:
        env.setdefault("LOGLM_QWEN25_GGUF", str(qwen25_coder_path()))
    except LoglmError:
        pass
    proc = subprocess.run(
        ["cargo", "test", "--release", "--quiet"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=3000,
    )
    tail = "\n".join(proc.stdout.splitlines()[-60:])
    assert proc.returncode == 0, f"cargo test failed:\n{tail}"
    assert "test result: ok" in proc.stdout, tail
