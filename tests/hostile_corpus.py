"""A structure-aware corpus of crafted model files, adapters and state files
(issue 19), written by code rather than kept as binary blobs, and a runner.

``python tests/hostile_corpus.py FAMILY DIR`` writes the cases of one family
into ``DIR``, loads each with loglm and prints one JSON line per case:
``{"case": ..., "outcome": "ok" | "<exception class>", "message": ...}``. A
case that aborts the process cuts the output short, which is what
``tests/test_hostile.py`` (running this in a subprocess) detects. Families:
``gguf``, ``hf``, ``adapter``, ``state``, ``template``.
"""
from __future__ import annotations

import json
import os
import random
import struct
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

VOCAB, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FF, LAYERS = 64, 32, 2, 1, 16, 48, 2

# GGUF value types (ggml docs/gguf.md)
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_PACK = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?",
         U64: "<Q", I64: "<q", F64: "<d"}


def gguf_string(s: str | bytes, length: Optional[int] = None) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b) if length is None else length) + b


def gguf_value(typ: int, v: Any) -> bytes:
    if typ == STR:
        return gguf_string(v)
    if typ == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(gguf_value(et, x) for x in items)
    return struct.pack(_PACK[typ], v)


def tiny_tensors(seed: int = 0) -> Dict[str, np.ndarray]:
    """A tiny random llama in GGUF tensor names."""
    rng = np.random.default_rng(seed)
    t = {"token_embd.weight": rng.normal(0, 0.5, (VOCAB, HIDDEN)),
         "output_norm.weight": rng.uniform(0.8, 1.2, HIDDEN)}
    for i in range(LAYERS):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = rng.uniform(0.8, 1.2, HIDDEN)
        t[p + "ffn_norm.weight"] = rng.uniform(0.8, 1.2, HIDDEN)
        t[p + "attn_q.weight"] = rng.normal(0, 0.2, (HEADS * HEAD_DIM, HIDDEN))
        t[p + "attn_k.weight"] = rng.normal(0, 0.2, (KV_HEADS * HEAD_DIM, HIDDEN))
        t[p + "attn_v.weight"] = rng.normal(0, 0.2, (KV_HEADS * HEAD_DIM, HIDDEN))
        t[p + "attn_output.weight"] = rng.normal(0, 0.2, (HIDDEN, HEADS * HEAD_DIM))
        t[p + "ffn_gate.weight"] = rng.normal(0, 0.2, (FF, HIDDEN))
        t[p + "ffn_up.weight"] = rng.normal(0, 0.2, (FF, HIDDEN))
        t[p + "ffn_down.weight"] = rng.normal(0, 0.2, (HIDDEN, FF))
    return t


def base_metadata() -> List[Tuple[str, int, Any]]:
    a = "llama"
    return [("general.architecture", STR, a), (f"{a}.block_count", U32, LAYERS),
            (f"{a}.embedding_length", U32, HIDDEN), (f"{a}.feed_forward_length", U32, FF),
            (f"{a}.attention.head_count", U32, HEADS), (f"{a}.attention.head_count_kv", U32, KV_HEADS),
            (f"{a}.rope.freq_base", F32, 10000.0), (f"{a}.attention.layer_norm_rms_epsilon", F32, 1e-5),
            (f"{a}.context_length", U32, 128)]


def write_gguf(path: Path, metadata: List[Tuple[str, int, Any]], tensors: Dict[str, np.ndarray], *,
               tensor_count: Optional[int] = None, kv_count: Optional[int] = None,
               tensor_info: Optional[Callable[[str, np.ndarray, int], bytes]] = None) -> bytes:
    """GGUF v3 with f32 tensors; the counts and each tensor-info record can be overridden."""
    md: Dict[str, Tuple[int, Any]] = {}
    for k, typ, v in metadata:
        md[k] = (typ, v)
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors) if tensor_count is None else tensor_count,
                                len(md) if kv_count is None else kv_count)
    for k, (typ, v) in md.items():
        out += gguf_string(k) + struct.pack("<I", typ) + gguf_value(typ, v)
    data, offset = b"", 0
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr, dtype="<f4")
        if tensor_info is not None:
            out += tensor_info(name, a, offset)
        else:
            out += gguf_string(name) + struct.pack("<I", a.ndim) + b"".join(struct.pack("<Q", d) for d in a.shape[::-1])
            out += struct.pack("<IQ", 0, offset)
        b = a.tobytes() + b"\0" * (-a.nbytes % 32)
        data += b
        offset += len(b)
    out += b"\0" * (-len(out) % 32)
    blob = out + data
    path.write_bytes(blob)
    return blob


def write_tokenizer(folder: Path, chat_template: Optional[str] = None) -> Path:
    """A word-level tokenizer.json (``w0`` ... ``wN``), plus a tokenizer_config.json
    when a chat template is given."""
    tj = {"version": "1.0", "added_tokens": [], "normalizer": None,
          "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
          "model": {"type": "WordLevel", "vocab": {f"w{i}": i for i in range(VOCAB)}, "unk_token": "w0"}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(tj))
    if chat_template is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": chat_template}))
    return folder / "tokenizer.json"


def save_safetensors(path: Path, tensors: Dict[str, np.ndarray], header_extra: Optional[Dict[str, Any]] = None,
                     header_len: Optional[int] = None) -> None:
    header: Dict[str, Any] = {}
    blobs, offset = [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    header.update(header_extra or {})
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h) if header_len is None else header_len) + h + b"".join(blobs))


HF_NAMES = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
            "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
            "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def hf_tensors(seed: int = 0) -> Dict[str, np.ndarray]:
    out = {}
    for k, v in tiny_tensors(seed).items():
        if k == "token_embd.weight":
            out["model.embed_tokens.weight"] = v
        elif k == "output_norm.weight":
            out["model.norm.weight"] = v
        else:
            _, i, rest = k.split(".", 2)
            mod = rest.rsplit(".", 1)[0]
            out[f"model.layers.{i}.{HF_NAMES[mod]}.weight"] = v
    return out


def hf_config(**over: Any) -> Dict[str, Any]:
    c: Dict[str, Any] = {"model_type": "llama", "hidden_size": HIDDEN, "intermediate_size": FF,
                         "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
                         "vocab_size": VOCAB, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
                         "max_position_embeddings": 128, "tie_word_embeddings": True}
    c.update(over)
    return c


def write_hf(folder: Path, config: Optional[Dict[str, Any]] = None, chat_template: Optional[str] = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(folder / "model.safetensors", hf_tensors())
    (folder / "config.json").write_text(json.dumps(config or hf_config()))
    write_tokenizer(folder, chat_template)
    return folder


# ----------------------------------------------------------------------------- families

Case = Tuple[str, Callable[[], Any]]


def gguf_cases(d: Path) -> Iterator[Case]:
    import loglm

    tok = write_tokenizer(d / "tok")
    t = tiny_tensors()

    def load(p: Path) -> Any:
        m = loglm.LogLM.load(p, adapter=None, tokenizer=tok, threads=1)
        m.generate("w1 w2", max_new_tokens=2, raw=True)
        return m

    def md_case(name: str, key: str, typ: int, v: Any) -> Case:
        def run() -> Any:
            md = [x for x in base_metadata() if x[0] != key] + [(key, typ, v)]
            p = d / f"{name}.gguf"
            write_gguf(p, md, t)
            return load(p)
        return name, run

    def raw_case(name: str, make: Callable[[Path], None]) -> Case:
        def run() -> Any:
            p = d / f"{name}.gguf"
            make(p)
            return load(p)
        return name, run

    yield raw_case("valid", lambda p: write_gguf(p, base_metadata(), t))
    for name, key, typ, v in [
        ("block_count_u32_max", "llama.block_count", U32, 2**32 - 1),
        ("block_count_u64_huge", "llama.block_count", U64, 2**40),
        ("block_count_negative", "llama.block_count", I32, -1),
        ("block_count_zero", "llama.block_count", U32, 0),
        ("embedding_length_huge", "llama.embedding_length", U64, 2**62),
        ("feed_forward_huge", "llama.feed_forward_length", U64, 2**50),
        ("head_count_zero", "llama.attention.head_count", U32, 0),
        ("head_count_huge", "llama.attention.head_count", U64, 2**33),
        ("head_count_kv_zero", "llama.attention.head_count_kv", U32, 0),
        ("head_count_kv_not_divisor", "llama.attention.head_count_kv", U32, 3),
        ("key_length_huge", "llama.attention.key_length", U64, 2**40),
        ("rms_eps_nan", "llama.attention.layer_norm_rms_epsilon", F32, float("nan")),
        ("rms_eps_negative", "llama.attention.layer_norm_rms_epsilon", F32, -1e-5),
        ("rms_eps_zero", "llama.attention.layer_norm_rms_epsilon", F32, 0.0),
        ("rope_base_zero", "llama.rope.freq_base", F32, 0.0),
        ("rope_base_nan", "llama.rope.freq_base", F32, float("nan")),
        ("rope_base_inf", "llama.rope.freq_base", F64, float("inf")),
        ("alignment_zero", "general.alignment", U32, 0),
        ("alignment_three", "general.alignment", U32, 3),
        ("context_length_huge", "llama.context_length", U64, 2**63),
        ("architecture_not_string", "general.architecture", U32, 7),
    ]:
        yield md_case(name, key, typ, v)

    yield raw_case("tensor_count_huge", lambda p: write_gguf(p, base_metadata(), t, tensor_count=2**40))
    yield raw_case("kv_count_huge", lambda p: write_gguf(p, base_metadata(), t, kv_count=2**40))
    yield raw_case("string_length_huge", lambda p: p.write_bytes(
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string(b"general.name", 2**60)))
    yield raw_case("array_length_huge", lambda p: p.write_bytes(
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string("tokenizer.ggml.tokens")
        + struct.pack("<IIQ", ARR, STR, 2**40) + gguf_string("a")))
    yield raw_case("nested_arrays_deep", lambda p: p.write_bytes(
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string("x") + struct.pack("<I", ARR)
        + struct.pack("<IQ", ARR, 1) * 100_000 + struct.pack("<IQ", U8, 0)))

    def info(override: Callable[[str, np.ndarray, int], Optional[bytes]]) -> Callable[[str, np.ndarray, int], bytes]:
        def f(name: str, a: np.ndarray, offset: int) -> bytes:
            got = override(name, a, offset)
            if got is not None:
                return got
            return (gguf_string(name) + struct.pack("<I", a.ndim) + b"".join(struct.pack("<Q", x) for x in a.shape[::-1])
                    + struct.pack("<IQ", 0, offset))
        return f

    emb = "token_embd.weight"
    yield raw_case("tensor_dims_overflow", lambda p: write_gguf(p, base_metadata(), t, tensor_info=info(
        lambda n, a, o: gguf_string(n) + struct.pack("<IQQ", 2, 2**40, 2**40) + struct.pack("<IQ", 0, o)
        if n == emb else None)))
    yield raw_case("tensor_five_dims", lambda p: write_gguf(p, base_metadata(), t, tensor_info=info(
        lambda n, a, o: gguf_string(n) + struct.pack("<I", 5) + struct.pack("<Q", 1) * 5 + struct.pack("<IQ", 0, o)
        if n == emb else None)))
    yield raw_case("tensor_offset_past_end", lambda p: write_gguf(p, base_metadata(), t, tensor_info=info(
        lambda n, a, o: gguf_string(n) + struct.pack("<I", a.ndim) + b"".join(struct.pack("<Q", x) for x in a.shape[::-1])
        + struct.pack("<IQ", 0, 2**62) if n == emb else None)))
    yield raw_case("tensor_zero_dim", lambda p: write_gguf(p, base_metadata(), t, tensor_info=info(
        lambda n, a, o: gguf_string(n) + struct.pack("<IQQ", 2, 0, HIDDEN) + struct.pack("<IQ", 0, o)
        if n == emb else None)))
    yield raw_case("tensor_unknown_dtype", lambda p: write_gguf(p, base_metadata(), t, tensor_info=info(
        lambda n, a, o: gguf_string(n) + struct.pack("<I", a.ndim) + b"".join(struct.pack("<Q", x) for x in a.shape[::-1])
        + struct.pack("<IQ", 99, o) if n == emb else None)))
    yield raw_case("embedding_transposed", lambda p: write_gguf(p, base_metadata(), {**t, emb: t[emb].T.copy()}))
    bad = dict(t)
    bad["output_norm.weight"] = np.full(HIDDEN, np.nan)
    yield raw_case("nan_weights", lambda p: write_gguf(p, base_metadata(), bad))
    blob = write_gguf(d / "valid_copy.gguf", base_metadata(), t)
    for k in range(1, 8):
        cut = len(blob) * k // 8
        yield raw_case(f"truncated_{k}_of_8", lambda p, cut=cut: p.write_bytes(blob[:cut]))
    rng = random.Random(19)
    header_end = blob.index(b"blk.1.ffn_down.weight") + 64
    for k in range(40):
        b = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(8, header_end)] = rng.randrange(256)
        yield raw_case(f"flipped_{k}", lambda p, b=bytes(b): p.write_bytes(b))


def hf_cases(d: Path) -> Iterator[Case]:
    import loglm

    def load(folder: Path) -> Any:
        m = loglm.LogLM.load(folder, adapter=None, threads=1)
        m.generate("w1 w2", max_new_tokens=2, raw=True)
        return m

    def cfg_case(name: str, **over: Any) -> Case:
        return name, lambda: load(write_hf(d / name, hf_config(**over)))

    yield cfg_case("valid")
    yield cfg_case("layers_1e12", num_hidden_layers=10**12)
    yield cfg_case("layers_float", num_hidden_layers=1e12)
    yield cfg_case("hidden_huge", hidden_size=2**63)
    yield cfg_case("vocab_huge", vocab_size=2**40)
    yield cfg_case("heads_zero", num_attention_heads=0)
    yield cfg_case("kv_heads_zero", num_key_value_heads=0)
    yield cfg_case("head_dim_huge", head_dim=2**40)
    yield cfg_case("rms_eps_negative", rms_norm_eps=-1.0)
    yield cfg_case("rms_eps_zero", rms_norm_eps=0.0)
    yield cfg_case("rope_theta_zero", rope_theta=0.0)
    yield cfg_case("rope_theta_negative", rope_theta=-10.0)

    def index_case(name: str, shard: str, setup: Optional[Callable[[Path], None]] = None) -> Case:
        def run() -> Any:
            f = write_hf(d / name)
            os.replace(f / "model.safetensors", f / "model-00001-of-00001.safetensors")
            if setup:
                setup(f)
            wm = {k: shard for k in hf_tensors()}
            (f / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
            return load(f)
        return name, run

    yield index_case("index_valid", "model-00001-of-00001.safetensors")
    yield index_case("index_dotdot", "../index_valid/model-00001-of-00001.safetensors")
    yield index_case("index_absolute", str((d / "index_valid" / "model-00001-of-00001.safetensors").resolve()))
    yield index_case("index_dev_zero", "/dev/zero")
    yield index_case("index_etc_passwd", "/etc/passwd")
    yield index_case("index_symlink_escape", "link.safetensors", lambda f: os.symlink(
        (d / "index_valid" / "model-00001-of-00001.safetensors").resolve(), f / "link.safetensors"))
    yield index_case("index_symlink_dev_zero", "zero.safetensors", lambda f: os.symlink("/dev/zero", f / "zero.safetensors"))
    yield index_case("index_folder", "sub", lambda f: (f / "sub").mkdir())

    def st_case(name: str, write: Callable[[Path], None]) -> Case:
        def run() -> Any:
            f = write_hf(d / name)
            write(f / "model.safetensors")
            return load(f)
        return name, run

    yield st_case("st_header_len_huge", lambda p: save_safetensors(p, hf_tensors(), header_len=2**63))
    yield st_case("st_header_len_past_end", lambda p: save_safetensors(p, hf_tensors(), header_len=10**6))
    yield st_case("st_offsets_past_end", lambda p: save_safetensors(p, hf_tensors(), {"model.norm.weight": {
        "dtype": "F32", "shape": [HIDDEN], "data_offsets": [0, 2**40]}}))
    yield st_case("st_shape_overflow", lambda p: save_safetensors(p, hf_tensors(), {"model.norm.weight": {
        "dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 128]}}))
    yield st_case("st_dtype_unknown", lambda p: save_safetensors(p, hf_tensors(), {"model.norm.weight": {
        "dtype": "Q99", "shape": [HIDDEN], "data_offsets": [0, 128]}}))
    yield st_case("st_not_json", lambda p: p.write_bytes(struct.pack("<Q", 8) + b"{{{{{{{{" + b"\0" * 64))
    yield st_case("st_empty", lambda p: p.write_bytes(b""))
    yield "config_dev_zero", lambda: load(_config_link(write_hf(d / "config_dev_zero")))


def _config_link(f: Path) -> Path:
    (f / "config.json").unlink()
    os.symlink("/dev/zero", f / "config.json")
    return f


def adapter_cases(d: Path) -> Iterator[Case]:
    import loglm

    base = write_hf(d / "base")
    rng = np.random.default_rng(1)

    def adapter(name: str, alpha: Any = 8, r: int = 4, nan: bool = False, **cfg: Any) -> Path:
        f = d / name
        f.mkdir(parents=True, exist_ok=True)
        t = {}
        for i in range(LAYERS):
            p = f"base_model.model.model.layers.{i}.self_attn.q_proj"
            t[p + ".lora_A.weight"] = rng.normal(0, 0.3, (r, HIDDEN))
            t[p + ".lora_B.weight"] = rng.normal(0, 0.3, (HEADS * HEAD_DIM, r))
        if nan:
            t[p + ".lora_B.weight"][0, 0] = np.nan
        c = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": ["q_proj"], "bias": "none"}
        c.update(cfg)
        (f / "adapter_config.json").write_text(json.dumps(c))
        save_safetensors(f / "adapter_model.safetensors", t)
        return f

    def case(name: str, **kw: Any) -> Case:
        def run() -> Any:
            m = loglm.LogLM.load(base, adapter=adapter(name, **kw), threads=1)
            m.generate("w1 w2", max_new_tokens=2, raw=True)
            return m
        return name, run

    yield case("valid")
    yield case("alpha_1e300", alpha=1e300)
    yield case("alpha_negative_huge", alpha=-1e30)
    yield case("nan_weights", nan=True)
    yield case("alpha_pattern_huge", alpha_pattern={"q_proj": 1e300})


def state_cases(d: Path) -> Iterator[Case]:
    from loglm import TemplateMiner

    m = TemplateMiner()
    for line in ["connection from 10.0.0.1 closed", "connection from 10.0.0.2 closed", "disk full on /dev/sda1"]:
        m.add_log_message(line)
    good = json.loads(m.save_state())

    def case(name: str, mutate: Callable[[Dict[str, Any]], Optional[str]]) -> Case:
        def run() -> Any:
            s = json.loads(json.dumps(good))
            text = mutate(s)
            t = TemplateMiner()
            t.load_state(text if text is not None else json.dumps(s))
            t.add_log_message("connection from 10.0.0.3 closed")
            return t
        return name, run

    def set_size(v: Any) -> Callable[[Dict[str, Any]], None]:
        return lambda s: s["clusters"][0].__setitem__("size", v)

    yield case("valid", lambda s: None)
    yield case("size_u64_max", set_size(2**64 - 1))
    yield case("size_zero", set_size(0))
    yield case("size_negative", set_size(-1))
    yield case("size_overflows_u64", set_size(2**70))
    yield case("counter_u64_max", lambda s: s["counters"].__setitem__("lines", 2**64 - 1))
    yield case("cluster_id_wrong", lambda s: s["clusters"][0].__setitem__("cluster_id", 99))
    yield case("version_wrong", lambda s: s.__setitem__("version", 999))
    yield case("clusters_not_list", lambda s: s.__setitem__("clusters", "x"))
    yield case("deep_json", lambda s: json.dumps(s)[:-1] + ', "extra": ' + "[" * 100_000 + "]" * 100_000 + "}")


HOSTILE_TEMPLATES = {
    "nested_loops": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "string_doubling": "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(64) %}"
                       "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "list_doubling": "{% set ns = namespace(l=['a']) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}"
                     "{% endfor %}{{ ns.l|length }}",
    "repeat_multiply": "{{ 'x' * 100000000 * 1000 }}",
    "indent_huge": "{{ 'x\ny'|indent(1000000000000) }}",
    "join_huge": "{{ (['x' * 1000000] * 1000)|join('') }}",
    "replace_huge": "{{ ('x' * 1000000).replace('', 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy') }}",
    "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "literal_flood": "{% for i in range(100000) %}{% for j in range(100) %}some literal text{% endfor %}{% endfor %}",
}


def template_cases(d: Path) -> Iterator[Case]:
    import loglm

    def case(name: str, tpl: str) -> Case:
        def run() -> Any:
            m = loglm.LogLM.load(write_hf(d / name, chat_template=tpl), adapter=None, threads=1)
            return m.render("hello")
        return name, run

    yield case("valid", "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}")
    for name, tpl in HOSTILE_TEMPLATES.items():
        yield case(name, tpl)


FAMILIES = {"gguf": gguf_cases, "hf": hf_cases, "adapter": adapter_cases, "state": state_cases,
            "template": template_cases}


def main(family: str, d: str) -> None:
    out = Path(d)
    out.mkdir(parents=True, exist_ok=True)
    for name, run in FAMILIES[family](out):
        print(json.dumps({"case": name, "start": True}), flush=True)
        try:
            run()
            rec = {"case": name, "outcome": "ok", "message": ""}
        except Exception as e:  # noqa: BLE001 - the class is the result
            rec = {"case": name, "outcome": type(e).__name__, "message": str(e)[:300],
                   "loglm": type(e).__module__.startswith("loglm")}
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
