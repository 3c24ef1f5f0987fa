"""The device (candle tensor) forward path that ``device="cuda"`` uses.

Without a GPU it is exercised on candle's CPU backend through the hidden
``device="candle-cpu"`` and compared with the native CPU engine on the default
model; the ``cuda`` tests run the same comparison on a GPU when the extension
was built with the ``cuda`` feature and one is present.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

import loglm
from loglm import LogLM

PROMPTS = [
    "What does this log line mean? 081109 203615 148 INFO dfs.DataNode$PacketResponder: "
    "PacketResponder 1 for block blk_38865049064139660 terminating",
    "Is this log normal or abnormal? kernel: EXT4-fs error (device sda1): ext4_find_entry:1455: "
    "inode #2: comm bash: reading directory lblock 0",
    "Summarise: sshd[24200]: Failed password for root from 218.188.2.4 port 45678 ssh2",
]
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def native() -> LogLM:
    return LogLM.load(threads=1, adapter=None)  # Q4_1 as stored (the adapter re-encodes to Q8_0)


@pytest.fixture(scope="module")
def candle_cpu() -> LogLM:
    return LogLM.load(device="candle-cpu", threads=1, adapter=None)


def _compare_greedy(native: LogLM, other: LogLM) -> None:
    """The other backend's greedy tokens, scored by the native engine along the
    same sequence (teacher forcing): every token it picked is the native top-1
    or within a near-tie of it. The two backends quantize activations
    differently (candle: Q8_0 / Q8_K, native: Q8_1 or f32 prefill), so their
    logits differ by up to ~2 on a 35-wide range, and free-running greedy
    decoding of a 135M model can part at a near-tie and never rejoin;
    comparing token by token under the same context does not have that problem."""
    got = other.generate(PROMPTS, max_new_tokens=NEW_TOKENS, max_batch=3)
    agree = total = 0
    for prompt, g in zip(PROMPTS, got):
        assert g.finish_reason in ("stop", "length")
        ids = native.encode_prompt(prompt)
        seq = ids + list(g.token_ids)
        logits = native.logits(seq[:-1])
        for pos in range(len(ids) - 1, len(seq) - 1):
            row = logits[pos]
            picked = seq[pos + 1]
            gap = float(row.max() - row[picked])
            assert gap < 3.0, (prompt, pos, gap, g.text)
            agree += int(gap == 0.0)
            total += 1
    assert agree / total >= 0.8, (agree, total)


def test_candle_cpu_greedy_matches_native(native: LogLM, candle_cpu: LogLM) -> None:
    assert candle_cpu.info["device"] == "candle-cpu"
    assert candle_cpu.info["weight_types"] == native.info["weight_types"]
    assert candle_cpu.info["weight_bytes"] == native.info["weight_bytes"]
    _compare_greedy(native, candle_cpu)


def test_candle_cpu_batched_equals_one_by_one(candle_cpu: LogLM) -> None:
    batch = candle_cpu.generate(PROMPTS, max_new_tokens=12, max_batch=3)
    alone = [candle_cpu.generate(p, max_new_tokens=12) for p in PROMPTS]
    assert [r.token_ids for r in batch] == [r.token_ids for r in alone]


def test_candle_cpu_stream_and_scores(native: LogLM, candle_cpu: LogLM) -> None:
    r = candle_cpu.generate(PROMPTS[2], max_new_tokens=10)
    assert "".join(candle_cpu.stream(PROMPTS[2], max_new_tokens=10)) == r.text
    q = "Classify the given log entries into normal and abnormal categories.\n" + PROMPTS[1]
    a = native.score_choices(q, ["normal", "abnormal"]).probs
    b = candle_cpu.score_choices(q, ["normal", "abnormal"]).probs
    assert a == pytest.approx(b, abs=0.05)


def test_candle_cpu_errors(candle_cpu: LogLM) -> None:
    with pytest.raises(loglm.ContextLengthError):
        candle_cpu.generate("x " * 9000, max_new_tokens=4)


def _has_gpu() -> bool:
    if not loglm.build_info()["cuda"] or shutil.which("nvidia-smi") is None:
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


@pytest.mark.cuda
@pytest.mark.skipif(not _has_gpu(), reason="needs a CUDA build of loglm and an NVIDIA GPU")
def test_cuda_greedy_matches_native(native: LogLM) -> None:
    gpu = LogLM.load(device="cuda")
    assert gpu.info["device"] == "cuda:0"
    _compare_greedy(native, gpu)
    batch = gpu.generate(PROMPTS, max_new_tokens=12, max_batch=3)
    assert all(r.text for r in batch)


def test_cuda_unavailable_is_a_device_error() -> None:
    if _has_gpu():
        pytest.skip("a GPU is present")
    with pytest.raises(loglm.DeviceError):
        LogLM.load(device="cuda:0")
