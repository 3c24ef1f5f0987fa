"""LoRA adapters (peft ``save_pretrained`` folders) merged at load time.

Parity: tiny random ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` models wrapped by
peft (r=4, alpha=8, all seven projections, non-zero B) against loglm with the same
adapter, on the Hugging Face folder and on a GGUF file of the same weights (q/k rows
permuted for rope as llama.cpp's converter does). Those need torch + transformers +
peft (the ``train`` extra) and are skipped without them; the rest (errors, merge
order, ``info``, CLI / evaluation plumbing, the default model) runs on tiny models
written with numpy alone.
"""
from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

import loglm
from loglm import AdapterError, AdapterNotFoundError, LoglmError, LogLM, ModelLoadError

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GROUP = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
         "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
VOCAB, HIDDEN, FF, LAYERS, HEADS, KV_HEADS = 96, 64, 96, 2, 4, 2
HEAD_DIM = HIDDEN // HEADS
TOKENS = [1, 17, 5, 42, 63, 8, 90, 33, 2, 71, 12, 55]


# -- files written without torch -------------------------------------------------

def save_safetensors(path: Path, tensors: Dict[str, np.ndarray]) -> None:
    """A minimal safetensors writer (f32)."""
    header: Dict[str, Any] = {}
    blobs, offset = [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_tokenizer(folder: Path, vocab: int = VOCAB) -> Path:
    """A word-level tokenizer.json (`w0` ... `wN`), enough for loglm to load a folder."""
    tj = {"version": "1.0", "added_tokens": [], "normalizer": None,
          "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
          "model": {"type": "WordLevel", "vocab": {f"w{i}": i for i in range(vocab)}, "unk_token": "w0"}}
    p = folder / "tokenizer.json"
    p.write_text(json.dumps(tj))
    return p


def shape(module: str) -> Tuple[int, int]:
    """[out, in] of a projection of the tiny model."""
    return {"q_proj": (HEADS * HEAD_DIM, HIDDEN), "k_proj": (KV_HEADS * HEAD_DIM, HIDDEN),
            "v_proj": (KV_HEADS * HEAD_DIM, HIDDEN), "o_proj": (HIDDEN, HEADS * HEAD_DIM),
            "gate_proj": (FF, HIDDEN), "up_proj": (FF, HIDDEN), "down_proj": (HIDDEN, FF)}[module]


def write_numpy_llama(folder: Path, seed: int = 0) -> Path:
    """A tiny random llama checkpoint folder (config.json, model.safetensors, tokenizer.json)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t: Dict[str, np.ndarray] = {"model.embed_tokens.weight": rng.normal(0, 0.5, (VOCAB, HIDDEN)),
                                "model.norm.weight": rng.uniform(0.8, 1.2, HIDDEN),
                                "lm_head.weight": rng.normal(0, 0.2, (VOCAB, HIDDEN))}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = rng.uniform(0.8, 1.2, HIDDEN)
        t[p + "post_attention_layernorm.weight"] = rng.uniform(0.8, 1.2, HIDDEN)
        for m in MODULES:
            t[p + f"{GROUP[m]}.{m}.weight"] = rng.normal(0, 0.15, shape(m))
    save_safetensors(folder / "model.safetensors", t)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": HIDDEN, "intermediate_size": FF, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 128,
        "tie_word_embeddings": False}))
    write_tokenizer(folder)
    return folder


def lora_tensors(seed: int, r: int = 4, modules: List[str] = MODULES, layers: int = LAYERS,
                 hidden: int = HIDDEN) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = {}
    for i in range(layers):
        for m in modules:
            out, inp = shape(m)
            out = hidden if out == HIDDEN else out
            inp = hidden if inp == HIDDEN else inp
            p = f"base_model.model.model.layers.{i}.{GROUP[m]}.{m}"
            t[p + ".lora_A.weight"] = rng.normal(0, 0.3, (r, inp))
            t[p + ".lora_B.weight"] = rng.normal(0, 0.3, (out, r))
    return t


def write_adapter(folder: Path, tensors: Dict[str, np.ndarray], r: int = 4, alpha: float = 8.0,
                  **config: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
           "target_modules": MODULES, "bias": "none", "use_dora": False, "use_rslora": False,
           "fan_in_fan_out": False, "modules_to_save": None, "base_model_name_or_path": "tiny-llama"}
    cfg.update(config)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    save_safetensors(folder / "adapter_model.safetensors", tensors)
    return folder


def permute_for_gguf(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py's q/k row permutation (interleaved rope)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, arch: str, cfg: Dict[str, Any], tensors: Dict[str, np.ndarray]) -> None:
    """A minimal GGUF v3 writer: f32 tensors, u32 / f32 / string metadata."""
    def s(x: str) -> bytes:
        b = x.encode()
        return struct.pack("<Q", len(b)) + b

    kv = [("general.architecture", 8, arch)] + [(f"{arch}.{k}", 6 if isinstance(v, float) else 4, v)
                                                 for k, v in cfg.items()]
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for k, typ, v in kv:
        out += s(k) + struct.pack("<I", typ)
        out += s(v) if typ == 8 else struct.pack("<f" if typ == 6 else "<I", v)
    data, offset = b"", 0
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr, dtype="<f4")
        out += s(name) + struct.pack("<I", a.ndim) + b"".join(struct.pack("<Q", d) for d in a.shape[::-1])
        out += struct.pack("<IQ", 0, offset)
        b = a.tobytes() + b"\0" * (-a.nbytes % 32)
        data += b
        offset += len(b)
    out += b"\0" * (-len(out) % 32)
    path.write_bytes(out + data)


GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


def hf_to_gguf(arch: str, sd: Dict[str, np.ndarray], n_head: int, n_kv: int, tied: bool) -> Dict[str, np.ndarray]:
    """Rename (and for llama, permute q/k) a Hugging Face state dict to GGUF tensors."""
    out = {"token_embd.weight": sd["model.embed_tokens.weight"], "output_norm.weight": sd["model.norm.weight"]}
    if not tied:
        out["output.weight"] = sd["lm_head.weight"]
    i = 0
    while f"model.layers.{i}.input_layernorm.weight" in sd:
        p = f"model.layers.{i}."
        out[f"blk.{i}.attn_norm.weight"] = sd[p + "input_layernorm.weight"]
        out[f"blk.{i}.ffn_norm.weight"] = sd[p + "post_attention_layernorm.weight"]
        for m in MODULES:
            w = sd[p + f"{GROUP[m]}.{m}.weight"]
            if arch == "llama" and m in ("q_proj", "k_proj"):
                w = permute_for_gguf(w, n_head if m == "q_proj" else n_kv)
            out[f"blk.{i}.{GGUF_NAMES[m]}.weight"] = w
            for b in ("q_proj", "k_proj", "v_proj"):
                if m == b and p + f"self_attn.{b}.bias" in sd:
                    out[f"blk.{i}.{GGUF_NAMES[b]}.bias"] = sd[p + f"self_attn.{b}.bias"]
        i += 1
    return out


# -- parity with peft ------------------------------------------------------------

def _torch() -> Any:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    return torch


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def peft_case(request: Any, tmp_path_factory: Any) -> Dict[str, Any]:
    """A tiny random model saved as a HF folder and a GGUF file, a peft LoRA adapter
    for it, and the peft model's logits with and without the adapter."""
    torch = _torch()
    with warnings.catch_warnings():  # transformers / peft deprecation chatter is not ours
        warnings.simplefilter("ignore")
        return _make_peft_case(torch, request.param, tmp_path_factory)


def _make_peft_case(torch: Any, arch: str, tmp_path_factory: Any) -> Dict[str, Any]:
    import transformers
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp(f"peft-{arch}")
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FF, num_hidden_layers=LAYERS,
                  num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=128,
                  rms_norm_eps=1e-6, initializer_range=0.15)
    if arch == "llama":
        cfg = transformers.LlamaConfig(rope_theta=10000.0, tie_word_embeddings=False, **common)
        model = transformers.LlamaForCausalLM(cfg)
    else:
        cfg = transformers.Qwen2Config(rope_theta=1000000.0, tie_word_embeddings=True, **common)
        model = transformers.Qwen2ForCausalLM(cfg)
        with torch.no_grad():  # qwen2 q/k/v biases start at zero: make them matter
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.1)
    model = model.float().eval()
    base_dir = root / "base"
    model.save_pretrained(base_dir, safe_serialization=True)
    write_tokenizer(base_dir)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    gguf_path = root / "base.gguf"
    write_gguf(gguf_path, arch, {"block_count": LAYERS, "embedding_length": HIDDEN, "feed_forward_length": FF,
                                 "attention.head_count": HEADS, "attention.head_count_kv": KV_HEADS,
                                 "rope.freq_base": float(cfg.rope_parameters["rope_theta"]
                                                         if getattr(cfg, "rope_parameters", None)
                                                         else cfg.rope_theta),
                                 "attention.layer_norm_rms_epsilon": 1e-6, "context_length": 128},
               hf_to_gguf(arch, sd, HEADS, KV_HEADS, tied=arch == "qwen2"))
    ids = torch.tensor([TOKENS])
    with torch.no_grad():
        base_logits = model(ids).logits[0].float().numpy()
    lcfg = LoraConfig(r=4, lora_alpha=8, target_modules=list(MODULES), init_lora_weights=False,
                      lora_dropout=0.0, task_type="CAUSAL_LM")
    pm = get_peft_model(model, lcfg).eval()
    adapter_dir = root / "adapter"
    pm.save_pretrained(adapter_dir)
    with torch.no_grad():
        lora_logits = pm(ids).logits[0].float().numpy()
    return {"arch": arch, "base": base_dir, "gguf": gguf_path, "adapter": adapter_dir,
            "base_logits": base_logits, "lora_logits": lora_logits}


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def test_peft_parity_hf_folder(peft_case: Dict[str, Any]) -> None:
    c = peft_case
    files = sorted(p.name for p in c["adapter"].iterdir())
    assert files == ["README.md", "adapter_config.json", "adapter_model.safetensors"] or \
        {"adapter_config.json", "adapter_model.safetensors"} <= set(files)
    base = LogLM.load(c["base"], adapter=None, threads=1)
    assert base.info["adapter"] == []
    assert base.info["kv_cache_dtype"] == "f32"  # dense f32 weights keep an f32 cache (exact parity)
    got_base = base.logits(TOKENS)
    assert got_base.shape == (len(TOKENS), VOCAB) and got_base.dtype == np.float32
    assert _max_diff(got_base, c["base_logits"]) < 1e-4, "base model differs from transformers"
    m = LogLM.load(c["base"], adapter=c["adapter"], threads=1)
    assert m.info["adapter"] == [str(c["adapter"].resolve())]
    got = m.logits(TOKENS)
    effect = _max_diff(c["lora_logits"], c["base_logits"])
    assert effect > 0.05, f"the adapter should change the logits ({effect})"
    assert _max_diff(got, c["lora_logits"]) < 1e-4, f"{c['arch']}: {_max_diff(got, c['lora_logits'])}"
    # q8_0: merged in f32 first, then quantized
    q = LogLM.load(c["base"], adapter=c["adapter"], threads=1, dtype="q8_0").logits(TOKENS)
    assert _max_diff(q, c["lora_logits"]) < 0.05 * max(1.0, float(np.abs(c["lora_logits"]).max()))


def test_peft_parity_gguf_base(peft_case: Dict[str, Any]) -> None:
    """The same adapter on a GGUF of the same weights (llama: q/k rows permuted for
    interleaved rope) gives the peft model's logits."""
    c = peft_case
    tok = str(c["base"] / "tokenizer.json")
    base = LogLM.load(c["gguf"], adapter=None, tokenizer=tok, threads=1)
    assert base.info["format"] == "gguf"
    assert _max_diff(base.logits(TOKENS), c["base_logits"]) < 1e-4
    m = LogLM.load(c["gguf"], adapter=c["adapter"], tokenizer=tok, threads=1, dtype="f32")
    assert _max_diff(m.logits(TOKENS), c["lora_logits"]) < 1e-4
    # default dtype: touched f32 GGUF matrices stay f32 (only quantized ones become q8_0)
    auto = LogLM.load(c["gguf"], adapter=c["adapter"], tokenizer=tok, threads=1)
    assert _max_diff(auto.logits(TOKENS), c["lora_logits"]) < 1e-4


# -- numpy-only tests --------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory: Any) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-lora")
    base = write_numpy_llama(root / "base")
    a = write_adapter(root / "a", lora_tensors(1))
    b = write_adapter(root / "b", lora_tensors(2, r=2, modules=["q_proj", "down_proj"]), r=2, alpha=4.0,
                      target_modules=["q_proj", "down_proj"], use_rslora=True)
    neg = lora_tensors(1)
    for k in neg:
        if "lora_B" in k:
            neg[k] = -neg[k]
    a_neg = write_adapter(root / "a_neg", neg)
    zero = {k: (np.zeros_like(v) if "lora_B" in k else v) for k, v in lora_tensors(3).items()}
    z = write_adapter(root / "zero", zero)
    return {"root": root, "base": base, "a": a, "b": b, "a_neg": a_neg, "zero": z}


def test_merge_order_info_and_several_models_from_one_base(tiny: Dict[str, Path]) -> None:
    base = LogLM.load(tiny["base"], adapter=None, threads=1)
    ref = base.logits(TOKENS)
    assert base.info["adapter"] == []
    # B = 0: nothing changes; a then -a: back to the base (merged in order, in f32)
    z = LogLM.load(tiny["base"], adapter=tiny["zero"], threads=1)
    assert _max_diff(z.logits(TOKENS), ref) < 1e-5
    cancel = LogLM.load(tiny["base"], adapter=[tiny["a"], tiny["a_neg"]], threads=1)
    assert _max_diff(cancel.logits(TOKENS), ref) < 1e-4
    assert cancel.info["adapter"] == [str(tiny["a"].resolve()), str(tiny["a_neg"].resolve())]
    assert "adapter='a'" in repr(cancel)
    # two models with different adapters from one base, side by side
    ma = LogLM.load(tiny["base"], adapter=tiny["a"], threads=1)
    mb = LogLM.load(tiny["base"], adapter=str(tiny["b"]), threads=1)
    la, lb = ma.logits(TOKENS), mb.logits(TOKENS)
    assert _max_diff(la, ref) > 0.05 and _max_diff(lb, ref) > 0.05 and _max_diff(la, lb) > 0.05
    assert _max_diff(LogLM.load(tiny["base"], adapter=[tiny["a"]], threads=1).logits(TOKENS), la) == 0.0
    # a + b in either order: the same sum up to rounding
    ab = LogLM.load(tiny["base"], adapter=[tiny["a"], tiny["b"]], threads=1).logits(TOKENS)
    ba = LogLM.load(tiny["base"], adapter=[tiny["b"], tiny["a"]], threads=1).logits(TOKENS)
    assert _max_diff(ab, ba) < 1e-4 and _max_diff(ab, la) > 0.05
    # "auto" with an explicit base path means no adapter
    assert LogLM.load(tiny["base"], threads=1).info["adapter"] == []
    # generation works on the merged model
    assert ma.generate("w1 w2 w3", raw=True, max_new_tokens=4, ignore_eos=True).completion_tokens == 4


def test_numpy_reference_merge(tiny: Dict[str, Path]) -> None:
    """Merging the adapter by hand into the checkpoint gives the same model."""
    root = tiny["root"]
    sd = _read_safetensors(tiny["base"] / "model.safetensors")
    lt = _read_safetensors(tiny["a"] / "adapter_model.safetensors")
    for i in range(LAYERS):
        for m in MODULES:
            p = f"model.layers.{i}.{GROUP[m]}.{m}"
            delta = lt[f"base_model.model.{p}.lora_B.weight"] @ lt[f"base_model.model.{p}.lora_A.weight"]
            sd[p + ".weight"] = sd[p + ".weight"] + 2.0 * delta  # alpha / r = 8 / 4
    merged = root / "merged-by-hand"
    merged.mkdir(exist_ok=True)
    save_safetensors(merged / "model.safetensors", sd)
    (merged / "config.json").write_text((tiny["base"] / "config.json").read_text())
    write_tokenizer(merged)
    want = LogLM.load(merged, threads=1).logits(TOKENS)
    got = LogLM.load(tiny["base"], adapter=tiny["a"], threads=1).logits(TOKENS)
    assert _max_diff(got, want) < 1e-4


def _read_safetensors(path: Path) -> Dict[str, np.ndarray]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(v["shape"]).astype(np.float64)
    return out


def _load_err(tiny: Dict[str, Path], adapter: Any) -> BaseException:
    with pytest.raises(LoglmError) as e:
        LogLM.load(tiny["base"], adapter=adapter, threads=1)
    return e.value


def test_bad_adapters(tiny: Dict[str, Path]) -> None:
    root = tiny["root"]
    # missing folder and files: AdapterNotFoundError, also a FileNotFoundError
    e = _load_err(tiny, root / "nope")
    assert isinstance(e, AdapterNotFoundError) and isinstance(e, FileNotFoundError) and "not found" in str(e)
    (root / "empty").mkdir(exist_ok=True)
    e = _load_err(tiny, root / "empty")
    assert isinstance(e, AdapterNotFoundError) and "adapter_config.json" in str(e)
    d = write_adapter(root / "noweights", lora_tensors(1))
    (d / "adapter_model.safetensors").unlink()
    e = _load_err(tiny, d)
    assert isinstance(e, AdapterNotFoundError) and "adapter_model.safetensors" in str(e)
    # corrupt / truncated safetensors
    d = write_adapter(root / "corrupt", lora_tensors(1))
    (d / "adapter_model.safetensors").write_bytes(b"\x20\x00\x00\x00\x00\x00\x00\x00this is not a header")
    e = _load_err(tiny, d)
    assert isinstance(e, AdapterError) and isinstance(e, ModelLoadError) and "safetensors" in str(e)
    d = write_adapter(root / "trunc", lora_tensors(1))
    raw = (d / "adapter_model.safetensors").read_bytes()
    (d / "adapter_model.safetensors").write_bytes(raw[:-100])
    assert isinstance(_load_err(tiny, d), AdapterError)
    # shapes of another model (hidden 32 instead of 64)
    d = write_adapter(root / "wide", lora_tensors(1, modules=["q_proj"], hidden=32), target_modules=["q_proj"])
    e = _load_err(tiny, d)
    assert isinstance(e, AdapterError) and "shape mismatch" in str(e) and "tiny-llama" in str(e)
    # more layers than the base
    d = write_adapter(root / "deep", lora_tensors(1, modules=["v_proj"], layers=3), target_modules=["v_proj"])
    assert "layer 2" in str(_load_err(tiny, d))
    # unknown target module / tensor name
    d = write_adapter(root / "lmhead", lora_tensors(1), target_modules=MODULES + ["lm_head"])
    assert "lm_head" in str(_load_err(tiny, d))
    t = lora_tensors(1)
    t["base_model.model.model.embed_tokens.lora_embedding_A"] = np.zeros((4, VOCAB))
    d = write_adapter(root / "embed", t)
    e = _load_err(tiny, d)
    assert isinstance(e, AdapterError) and "unknown tensor" in str(e)
    # options loglm cannot merge
    for name, opts, msg in [("dora", {"use_dora": True}, "DoRA"),
                            ("mts", {"modules_to_save": ["lm_head"]}, "modules_to_save"),
                            ("bias", {"bias": "lora_only"}, "bias"),
                            ("ia3", {"peft_type": "IA3"}, "LoRA adapters only")]:
        d = write_adapter(root / name, lora_tensors(1), **opts)
        e = _load_err(tiny, d)
        assert isinstance(e, AdapterError) and msg in str(e), (name, str(e))
    # rank in the file disagrees with the config
    d = write_adapter(root / "rank", lora_tensors(1), r=8)
    assert "r=8" in str(_load_err(tiny, d))
    # bad argument types
    with pytest.raises(ValueError):
        LogLM.load(tiny["base"], adapter=42, threads=1)  # type: ignore[arg-type]
    # an error in the second adapter: nothing loaded, the message names it
    e = _load_err(tiny, [tiny["a"], root / "nope"])
    assert "nope" in str(e)


def test_default_model_adapter_auto_and_none() -> None:
    """No adapter folder shipped yet: ``adapter="auto"`` and ``None`` load the same
    model; once one is shipped, "auto" merges it and "none" does not."""
    from loglm.models import default_adapter_path

    shipped = default_adapter_path()
    auto = LogLM.load(threads=2)
    none = LogLM.load(adapter=None, threads=2)
    assert none.info["adapter"] == []
    ids = auto.encode_prompt("What does this log line mean? kernel: Out of memory: Kill process 1234")
    if shipped is None:
        assert auto.info["adapter"] == []
        assert np.array_equal(auto.logits(ids), none.logits(ids))
        assert auto.generate("Hello", max_new_tokens=8).text == none.generate("Hello", max_new_tokens=8).text
    else:
        assert auto.info["adapter"] == [str(shipped.resolve())]
        assert not np.array_equal(auto.logits(ids), none.logits(ids))


def test_adapter_resolution_and_cli_options(tmp_path: Path) -> None:
    from loglm.cli import _adapter, build_parser
    from loglm.models import resolve_adapters

    assert resolve_adapters(None) == []
    assert resolve_adapters("auto", "some/model.gguf") == []
    assert resolve_adapters("x") == [Path("x")]
    assert resolve_adapters([tmp_path, "y"]) == [tmp_path, Path("y")]
    with pytest.raises(loglm.InvalidInputError):
        resolve_adapters(3.5)
    ap = build_parser()
    assert _adapter(ap.parse_args(["eval", "all"])) == "auto"
    assert _adapter(ap.parse_args(["eval", "all", "--adapter", "none"])) is None
    assert _adapter(ap.parse_args(["detect", "f.log", "--adapter", "a", "--adapter", "b"])) == ["a", "b"]
    assert _adapter(ap.parse_args(["ask", "hi", "f.log", "--adapter", "a"])) == ["a"]
    from loglm.cli import main

    assert main(["eval", "all", "--adapter", "none", "--adapter", "a"]) == 2


def test_evaluation_header_records_adapters(tiny: Dict[str, Path], tmp_path: Path, monkeypatch: Any) -> None:
    from loglm.evaluate import evaluate, to_markdown, write_results
    from loglm.models import sha256_file

    m = LogLM.load(tiny["base"], adapter=[tiny["a"], tiny["b"]], threads=1)

    monkeypatch.setattr("loglm.evaluate.evaluate_parsing", lambda *a, **k: [])  # just the header
    res = evaluate("parsing", model=m, limit=1)
    ads = res["meta"]["adapter"]
    assert [a["path"] for a in ads] == [str(tiny["a"].resolve()), str(tiny["b"].resolve())]
    assert ads[0]["sha256"] == sha256_file(tiny["a"] / "adapter_model.safetensors")
    md = to_markdown(res)
    assert ads[0]["sha256"] in md and ads[1]["sha256"] in md and "LoRA adapter `a`" in md
    paths = write_results(res, tmp_path)
    assert paths["json"].name == "eval_parsing_base+a+b_limit1.json"
    assert json.loads(paths["json"].read_text())["meta"]["adapter"] == ads
    base = evaluate("parsing", model=LogLM.load(tiny["base"], adapter=None, threads=1), limit=1)
    assert base["meta"]["adapter"] == [] and "no LoRA adapter" in to_markdown(base)
