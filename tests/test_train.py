"""``loglm.train.finetune``: LoRA tuning on a tiny random llama (the ``train`` extra).

The base is a 2-layer ``LlamaForCausalLM`` with tied embeddings (like SmolLM2) saved
as a Hugging Face folder, with a small byte-level BPE ``tokenizer.json`` and a ChatML
template, so loglm's engine tokenizes the prompts exactly as it would at inference.
Tests that need torch / transformers / peft are skipped without them; the data and
CLI checks run everywhere.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

import loglm
from loglm.prompts import ANOMALY_INSTRUCTION, PARSING_INSTRUCTION, alpaca_prompt
from loglm.train import IGNORE, FinetuneSettings, build_example, end_of_turn_id, load_records, split_heldout

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
          "+ '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

RECORDS: List[Dict[str, str]] = [
    {"instruction": PARSING_INSTRUCTION, "input": "Connection from 10.0.0.1 closed",
     "output": "Connection from <*> closed"},
    {"instruction": PARSING_INSTRUCTION, "input": "Receiving block blk_123 src: /10.0.0.2:5000",
     "output": "Receiving block <*> src: <*>"},
    {"instruction": ANOMALY_INSTRUCTION, "input": "ciod: failed to read message prefix", "output": "abnormal"},
    {"instruction": ANOMALY_INSTRUCTION, "input": "generating core.1234", "output": "normal"},
    {"instruction": "Interpret the given log and explain its content.", "input": "kernel panic at boot",
     "output": "The kernel stopped because of an unrecoverable error during startup."},
    {"instruction": "Identify the root cause of the log error.", "input": "disk quota exceeded",
     "output": "The user wrote more data than the quota allows."},
    {"instruction": ANOMALY_INSTRUCTION, "input": "instruction cache parity error corrected", "output": "normal"},
    {"instruction": PARSING_INSTRUCTION, "input": "Closing socket 7", "output": "Closing socket <*>"},
]


def _write_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([r["instruction"] + " " + r["input"] + " " + r["output"] for r in RECORDS], trainer)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": CHATML, "eos_token": "<|im_end|>", "bos_token": "<|im_start|>", "add_bos_token": False}))


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    pytest.importorskip("tokenizers")
    d = tmp_path_factory.mktemp("tiny_llama")
    _write_tokenizer(d)
    vocab = json.loads((d / "tokenizer.json").read_text())["model"]["vocab"]
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(vocab) + 3, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=512, tie_word_embeddings=True, rms_norm_eps=1e-5,
                                   bos_token_id=1, eos_token_id=2)
    transformers.LlamaForCausalLM(cfg).save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def engine(tiny_base: Path) -> loglm.LogLM:
    from loglm.train import _load_engine

    return _load_engine(tiny_base)


@pytest.fixture(scope="module")
def trained(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    from loglm.train import finetune

    out = tmp_path_factory.mktemp("run") / "adapter"
    data = out.parent / "data.json"
    data.write_text(json.dumps(RECORDS))
    res = finetune(tiny_base, data, out, max_steps=3, batch_size=2, grad_accum=2, lr=1e-3, rank=4,
                   heldout=0.25, eval_steps=2, save_steps=2, threads=1, seed=1, progress=False)
    return {"res": res, "out": out, "data": data}


# ---------------------------------------------------------------- example builder

def test_end_of_turn_is_im_end(engine: loglm.LogLM) -> None:
    eot = end_of_turn_id(engine)
    assert engine.detokenize([eot], skip_special=False) == "<|im_end|>"


def test_labels_mask_exactly_the_prompt(engine: loglm.LogLM) -> None:
    rec = RECORDS[0]
    eot = end_of_turn_id(engine)
    ex = build_example(engine, rec["instruction"], rec["input"], rec["output"], eot_id=eot, max_length=512)
    assert ex is not None and not ex.truncated
    prompt = engine.encode_prompt(alpaca_prompt(rec["instruction"], rec["input"]))
    response = engine.tokenize(rec["output"])
    assert ex.input_ids == prompt + response + [eot]
    assert ex.n_prompt == len(prompt)
    assert ex.labels[:len(prompt)] == [IGNORE] * len(prompt)
    assert ex.labels[len(prompt):] == response + [eot]
    assert IGNORE not in ex.labels[len(prompt):]
    # the prompt is what inference sends: the rendered chat ends with the generation prompt
    assert engine.detokenize(ex.input_ids[:ex.n_prompt], skip_special=False).endswith("<|im_start|>assistant\n")


def test_truncation_cuts_the_response_and_drops_long_prompts(engine: loglm.LogLM) -> None:
    rec = RECORDS[4]
    eot = end_of_turn_id(engine)
    full = build_example(engine, rec["instruction"], rec["input"], rec["output"], eot_id=eot, max_length=512)
    assert full is not None
    cut = build_example(engine, rec["instruction"], rec["input"], rec["output"], eot_id=eot,
                        max_length=full.n_prompt + 3)
    assert cut is not None and cut.truncated and len(cut) == full.n_prompt + 3
    assert cut.labels[cut.n_prompt:] == full.labels[full.n_prompt:full.n_prompt + 3]
    assert eot not in cut.labels[cut.n_prompt:]
    assert build_example(engine, rec["instruction"], rec["input"], rec["output"], eot_id=eot,
                         max_length=full.n_prompt) is None


# ---------------------------------------------------------------- finetune

def test_finetune_smoke(trained: Dict[str, Any]) -> None:
    import math

    res, out = trained["res"], trained["out"]
    assert res.steps == 3
    assert math.isfinite(res.train_loss) and res.train_loss > 0
    assert res.heldout_loss is not None and math.isfinite(res.heldout_loss)
    assert res.train_examples == 6 and res.heldout_examples == 2
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 8
    assert sorted(cfg["target_modules"]) == sorted(MODULES)
    assert not Path(cfg["base_model_name_or_path"]).is_absolute()
    from safetensors import safe_open

    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())
    for layer in (0, 1):
        for m in MODULES:
            group = "self_attn" if m in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            for ab in ("lora_A", "lora_B"):
                assert f"base_model.model.model.layers.{layer}.{group}.{m}.{ab}.weight" in names
    assert len(names) == 2 * 2 * len(MODULES)
    assert (out / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()


def test_training_log(trained: Dict[str, Any]) -> None:
    import hashlib

    res, data = trained["res"], trained["data"]
    log = json.loads(res.log_path.read_text())
    assert res.log_path == trained["out"] / "training_log.json"
    assert [s["step"] for s in log["steps"]] == [1, 2, 3]
    assert all(s["target_tokens"] > 0 and s["loss"] > 0 for s in log["steps"])
    assert [h["step"] for h in log["heldout"]] == [0, 2, 3]
    assert log["final_heldout_loss"] == log["heldout"][-1]["loss"] == res.heldout_loss
    assert log["data_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert set(log["base_sha256"]) >= {"model.safetensors", "tokenizer.json"}
    assert log["args"]["rank"] == 4 and log["args"]["max_steps"] == 3
    assert log["base_check"]["top1_agree"] and log["base_check"]["max_abs_logprob_diff_top10"] < 1e-3
    assert len(log["heldout_indices"]) == 2


def test_adapter_loads_in_peft_and_changes_the_model(trained: Dict[str, Any], tiny_base: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loglm.train import _quiet_libraries

    x = torch.tensor([[1, 5, 9, 30, 60]])
    with _quiet_libraries(), torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(str(tiny_base))
        before = base(input_ids=x).logits
        tuned = PeftModel.from_pretrained(base, str(trained["out"]))
        after = tuned(input_ids=x).logits
    assert torch.isfinite(after).all()
    assert (after - before).abs().max() > 1e-6  # lr 1e-3 for 3 steps moved B away from zero


def test_training_lowers_the_loss(tiny_base: Path, tmp_path: Path) -> None:
    """Overfitting two records for a few steps must lower their response loss."""
    from loglm.train import finetune

    res = finetune(tiny_base, RECORDS[:2] * 4, tmp_path / "a", max_steps=15, batch_size=8, lr=2e-2, rank=8,
                   heldout=0.0, threads=1, progress=False, check_base=False)
    steps = json.loads(res.log_path.read_text())["steps"]
    assert res.heldout_loss is None
    assert steps[-1]["loss"] < 0.92 * steps[0]["loss"]  # 5.77 -> 5.03 when written


def test_continue_from_an_adapter(trained: Dict[str, Any], tiny_base: Path, tmp_path: Path) -> None:
    """``init_adapter`` starts from the saved weights (the first loss is the old adapter's,
    not the base's), keeps its rank and modules, and writes a new adapter."""
    from safetensors.torch import load_file

    from loglm.train import finetune

    stage1 = trained["out"]
    fresh = finetune(tiny_base, RECORDS, tmp_path / "fresh",
                     settings=FinetuneSettings(max_steps=1, batch_size=8, lr=1e-9, rank=4, heldout=0.0, threads=1,
                                               progress=False, check_base=False))
    fresh_args = json.loads(fresh.log_path.read_text())["args"]
    assert (fresh_args["lr"], fresh_args["rank"], fresh_args["max_steps"], fresh_args["heldout"]) == (1e-9, 4, 1, 0.0)
    cont = finetune(tiny_base, RECORDS, tmp_path / "cont", max_steps=2, batch_size=8, lr=1e-3, rank=16,
                    heldout=0.0, threads=1, progress=False, check_base=False, init_adapter=stage1)
    log = json.loads(cont.log_path.read_text())
    assert log["args"]["init_adapter"] == str(stage1) and log["args"]["rank"] == 4
    first_fresh = json.loads(fresh.log_path.read_text())["steps"][0]["loss"]
    assert abs(log["steps"][0]["loss"] - first_fresh) > 1e-4  # not the zero-initialised adapter's loss
    a = load_file(str(stage1 / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cont" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) > 0  # it trained on
    with pytest.raises(loglm.InvalidInputError, match="one adapter folder"):
        finetune(tiny_base, RECORDS, tmp_path / "x", max_steps=1, init_adapter=[stage1, stage1])
    with pytest.raises(loglm.AdapterNotFoundError):
        finetune(tiny_base, RECORDS, tmp_path / "y", max_steps=1, init_adapter=tmp_path / "missing")


def test_split_is_deterministic_and_disjoint() -> None:
    tr, ho = split_heldout(100, 0.05, seed=3)
    assert len(ho) == 5 and not set(tr) & set(ho) and sorted(tr + ho) == list(range(100))
    assert split_heldout(100, 0.05, seed=3) == (tr, ho)
    assert split_heldout(100, 0.05, seed=4) != (tr, ho)
    assert split_heldout(10, 0.0) == (list(range(10)), [])
    with pytest.raises(ValueError):
        split_heldout(10, 1.0)


# ---------------------------------------------------------------- bad input (no torch needed)

def test_bad_data(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_records(tmp_path / "nope.json")
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(loglm.InvalidInputError, match="no instruction records"):
        load_records(empty)
    blank = tmp_path / "blank.json"
    blank.write_text("")
    with pytest.raises(loglm.InvalidInputError, match="no instruction records"):
        load_records(blank)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"instruction": "x", ')
    with pytest.raises(loglm.InvalidInputError, match="not valid JSON"):
        load_records(broken)
    no_output = tmp_path / "no_output.json"
    no_output.write_text(json.dumps([RECORDS[0], {"instruction": "x", "input": "y"}]))
    with pytest.raises(loglm.InvalidInputError, match="record 1 has no 'output'"):
        load_records(no_output)
    with pytest.raises(loglm.InvalidInputError, match="record 0 has a non-string 'output'"):
        load_records([{"instruction": "x", "output": 3}])
    obj = tmp_path / "obj.json"
    obj.write_text("{}")
    with pytest.raises(loglm.InvalidInputError, match="expected a JSON list"):
        load_records(obj)
    with pytest.raises(loglm.InvalidInputError, match="must be a JSON file"):
        load_records(tmp_path)


def test_jsonl_and_defaults(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps({k: v for k, v in r.items() if k != "input"}) for r in RECORDS[:3]) + "\n")
    recs, source, digest = load_records(p)
    assert len(recs) == 3 and all(r["input"] == "" for r in recs) and source == str(p) and len(digest) == 64


def test_bad_arguments_fail_before_loading_anything(tmp_path: Path) -> None:
    from loglm.train import finetune

    data = tmp_path / "d.json"
    data.write_text(json.dumps(RECORDS))
    for kw in ({"lr": 0}, {"batch_size": 0}, {"max_steps": 0}, {"rank": -1}, {"dropout": 1.5},
               {"save_dtype": "int8"}, {"epochs": float("nan")}, {"target_modules": []}):
        with pytest.raises(ValueError):
            finetune(tmp_path / "no-model.gguf", data, tmp_path / "out", **kw)
    with pytest.raises(FileNotFoundError):
        finetune(tmp_path / "no-model.gguf", data, tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        finetune(tmp_path / "no-model.gguf", tmp_path / "no-data.json", tmp_path / "out")


def test_settings_object_matches_the_keyword_arguments() -> None:
    """``finetune``'s keyword arguments are exactly ``FinetuneSettings``' fields, with the
    same defaults, so the two ways to configure a run cannot drift apart."""
    import inspect

    from loglm.train import finetune

    params = {n: p.default for n, p in inspect.signature(finetune).parameters.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "settings"}
    fields = {f.name: f.default for f in dataclasses.fields(FinetuneSettings)}
    assert params == fields


def test_settings_are_checked_when_built(tmp_path: Path) -> None:
    for kw in ({"lr": 0}, {"epochs": float("inf")}, {"max_steps": 0}, {"dropout": -0.1}, {"heldout": 1.0},
               {"dtype": "float16"}, {"max_seconds": 0}, {"save_dtype": "int8"}, {"target_modules": ()},
               {"threads": 0}, {"rank": "8"}):
        with pytest.raises(loglm.InvalidInputError):
            FinetuneSettings(**kw)  # type: ignore[arg-type]
    s = FinetuneSettings(lr=1e-3, max_steps=2)
    assert (s.lr, s.max_steps, s.rank) == (1e-3, 2, 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.lr = 1.0  # type: ignore[misc]


def test_settings_or_keywords_not_both(tmp_path: Path) -> None:
    from loglm.train import finetune

    data = tmp_path / "d.json"
    data.write_text(json.dumps(RECORDS))
    with pytest.raises(loglm.InvalidInputError, match="not both.*lr"):
        finetune(tmp_path / "no-model.gguf", data, tmp_path / "out", settings=FinetuneSettings(), lr=1e-3)
    with pytest.raises(loglm.InvalidInputError, match="FinetuneSettings"):
        finetune(tmp_path / "no-model.gguf", data, tmp_path / "out", settings={"lr": 1e-3})  # type: ignore[arg-type]
    # keywords left at their defaults are fine: the settings object decides (and the base is missing)
    with pytest.raises(FileNotFoundError):
        finetune(tmp_path / "no-model.gguf", data, tmp_path / "out", settings=FinetuneSettings(lr=1e-3),
                 rank=8, target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))


def test_schedule_warms_up_then_decays() -> None:
    from loglm.train import _schedule

    sch = _schedule(10, FinetuneSettings(batch_size=2, grad_accum=1, epochs=2, warmup_ratio=0.2))
    assert (sch.steps_per_epoch, sch.total) == (5, 10)
    lrs = [sch.lr_at(i) for i in range(sch.total)]
    assert lrs[:3] == [1 / 3, 2 / 3, 1.0]  # two warm-up steps, then the peak
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))  # cosine decay
    assert _schedule(10, FinetuneSettings(batch_size=4, grad_accum=2, max_steps=7)).total == 7
    assert _schedule(10, FinetuneSettings(batch_size=4, grad_accum=2)).steps_per_epoch == 2


def test_import_loglm_does_not_import_torch() -> None:
    code = "import sys, loglm, loglm.train; print('torch' in sys.modules, 'peft' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_cli_without_the_extra(tmp_path: Path) -> None:
    """With torch hidden, `loglm finetune` exits non-zero with the install hint."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from loglm.cli import main\n"
            f"sys.exit(main(['finetune', '--data', {str(tmp_path / 'd.json')!r}, '--out', {str(tmp_path / 'o')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0
    assert "pip install 'loglm[train]'" in r.stderr
    assert not (tmp_path / "o").exists()


def test_cli_finetune(tiny_base: Path, tmp_path: Path) -> None:
    from loglm.cli import main

    data = tmp_path / "d.json"
    data.write_text(json.dumps(RECORDS))
    out = tmp_path / "adapter"
    rc = main(["finetune", "--base", str(tiny_base), "--data", str(data), "--out", str(out), "--max-steps", "1",
               "--batch-size", "4", "--rank", "2", "--threads", "1", "--no-progress", "--json",
               "--save-dtype", "float16", "--dtype", "bfloat16"])
    assert rc == 0
    from safetensors import safe_open

    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        assert all(str(f.get_tensor(k).dtype) == "torch.float16" for k in f.keys())
    assert json.loads((out / "training_log.json").read_text())["steps_done"] == 1
    bad = main(["finetune", "--base", str(tiny_base), "--data", str(tmp_path / "missing.json"), "--out", str(out)])
    assert bad == 2
