//! LoRA tests on tiny random models: name mapping (peft / Hugging Face /
//! GGUF), configuration checks, the merge arithmetic against a naive
//! reference, rope-permuted GGUF bases against Hugging Face folders, and bad
//! adapters.
use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::*;
use crate::model::tests::{max_rel_diff, reference_logits, run_chunks, tiny_config, tiny_model, tiny_tensors, tokens};
use crate::model::{gguf, hf, Arch, Model};

fn randn(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0f32..1.0) * scale).collect()
}

fn dense(l: &Linear) -> Vec<f32> {
    let mut v = vec![0f32; l.out_dim * l.in_dim];
    for (r, row) in v.chunks_mut(l.in_dim).enumerate() {
        l.row_f32(r, row);
    }
    v
}

fn lora_name(layer: usize, m: Module, part: &str) -> String {
    format!("base_model.model.model.layers.{layer}.{}.lora_{part}.weight", m.hf_path())
}

/// Random A/B for the given modules of every layer, as peft names them.
fn random_lora(cfg: &Config, r: usize, modules: &[Module], seed: u64) -> HashMap<String, Tensor> {
    let mut t = HashMap::new();
    for layer in 0..cfg.n_layer {
        for (k, &m) in modules.iter().enumerate() {
            let (out, inp) = m.shape(cfg);
            let s = seed * 1000 + layer as u64 * 10 + k as u64;
            let a = Tensor::from_vec(randn(s, r * inp, 0.2), (r, inp), &Device::Cpu).unwrap();
            let b = Tensor::from_vec(randn(s + 500, out * r, 0.2), (out, r), &Device::Cpu).unwrap();
            t.insert(lora_name(layer, m, "A"), a);
            t.insert(lora_name(layer, m, "B"), b);
        }
    }
    t
}

fn base_config(r: usize, alpha: f64, modules: &[Module]) -> serde_json::Value {
    json!({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
        "target_modules": modules.iter().map(|m| m.hf_name()).collect::<Vec<_>>(),
        "bias": "none", "use_rslora": false, "use_dora": false, "fan_in_fan_out": false,
        "modules_to_save": null, "base_model_name_or_path": "tiny-random",
    })
}

fn write_adapter(dir: &Path, config: &serde_json::Value, tensors: &HashMap<String, Tensor>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(CONFIG_FILE), config.to_string()).unwrap();
    candle_core::safetensors::save(tensors, dir.join(WEIGHTS_FILE)).unwrap();
}

fn adapter_from(config: serde_json::Value, tensors: &HashMap<String, Tensor>) -> Result<Adapter> {
    let dir = Path::new("mem");
    Adapter::from_tensors(dir, AdapterConfig::from_json(&config, dir)?, tensors)
}

#[test]
fn tensor_names_map_to_hf_and_gguf_weights() {
    let cases = [
        ("q_proj", "self_attn", "attn_q"),
        ("k_proj", "self_attn", "attn_k"),
        ("v_proj", "self_attn", "attn_v"),
        ("o_proj", "self_attn", "attn_output"),
        ("gate_proj", "mlp", "ffn_gate"),
        ("up_proj", "mlp", "ffn_up"),
        ("down_proj", "mlp", "ffn_down"),
    ];
    for (hf_name, group, gg) in cases {
        for part in ["A", "B"] {
            let n = format!("base_model.model.model.layers.3.{group}.{hf_name}.lora_{part}.weight");
            let (layer, m, p) = parse_tensor_name(&n).unwrap_or_else(|| panic!("{n}"));
            assert_eq!((layer, m.hf_name(), m.gguf_name()), (3, hf_name, gg));
            assert_eq!(p, if part == "A" { Part::A } else { Part::B });
            assert_eq!(gguf_target(&n).unwrap(), format!("blk.3.{gg}.weight"));
            assert_eq!(hf_target(&n).unwrap(), format!("model.layers.3.{group}.{hf_name}.weight"));
            assert_eq!(Module::from_gguf(gg), Some(m));
            // without the peft prefix, and with an adapter name (raw state dicts)
            let bare = format!("model.layers.3.{group}.{hf_name}.lora_{part}.default.weight");
            assert_eq!(parse_tensor_name(&bare).map(|x| (x.0, x.1)), Some((3, m)));
        }
    }
    for bad in [
        "base_model.model.lm_head.lora_A.weight",
        "base_model.model.model.embed_tokens.lora_embedding_A",
        "base_model.model.model.layers.0.mlp.q_proj.lora_A.weight", // wrong group
        "base_model.model.model.layers.x.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_C.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
        "base_model.model.model.layers.0.self_attn.q_proj.weight",
        "blk.0.attn_q.weight",
    ] {
        assert_eq!(parse_tensor_name(bad), None, "{bad}");
    }
}

#[test]
fn config_scales_and_patterns() {
    let dir = Path::new("x");
    let mut c = base_config(4, 8.0, &[Module::Q]);
    let a = AdapterConfig::from_json(&c, dir).unwrap();
    assert_eq!(a.scale(4, 8.0), 2.0);
    c["use_rslora"] = json!(true);
    let a = AdapterConfig::from_json(&c, dir).unwrap();
    assert_eq!(a.scale(4, 8.0), 4.0);
    c["rank_pattern"] = json!({"layers.1.self_attn.q_proj": 2});
    c["alpha_pattern"] = json!({"k_proj": 16});
    c["target_modules"] = json!(["q_proj", "k_proj"]);
    let a = AdapterConfig::from_json(&c, dir).unwrap();
    assert_eq!(a.rank_alpha("model.layers.1.self_attn.q_proj"), (2, 8.0));
    assert_eq!(a.rank_alpha("model.layers.11.self_attn.q_proj"), (4, 8.0));
    assert_eq!(a.rank_alpha("model.layers.0.self_attn.k_proj"), (4, 16.0));
    // target_modules given as a regex or "all-linear": checked through the tensor names
    c["target_modules"] = json!("all-linear");
    assert!(AdapterConfig::from_json(&c, dir).unwrap().target_modules.is_none());
}

#[test]
fn config_rejects_what_cannot_be_merged() {
    let dir = Path::new("x");
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("use_dora", json!(true), "DoRA"),
        ("modules_to_save", json!(["lm_head"]), "modules_to_save"),
        ("bias", json!("all"), "bias"),
        ("lora_bias", json!(true), "lora_B"),
        ("peft_type", json!("IA3"), "LoRA adapters only"),
        ("target_modules", json!(["q_proj", "lm_head"]), "\"lm_head\" is not supported"),
        ("target_modules", json!(["embed_tokens"]), "not supported"),
        ("r", json!(0), "positive"),
        ("layer_replication", json!([[0, 2]]), "layer_replication"),
        ("alora_invocation_tokens", json!([1, 2]), "activated LoRA"),
    ];
    for (key, val, want) in cases {
        let mut c = base_config(4, 8.0, &[Module::Q]);
        c[key] = val;
        let e = AdapterConfig::from_json(&c, dir).err().unwrap_or_else(|| panic!("{key} must be refused"));
        assert!(matches!(e, Error::Adapter(_)), "{key}: {e:?}");
        assert!(e.to_string().contains(want), "{key}: {e}");
    }
    // Options that do not change the merge are fine.
    let mut c = base_config(4, 8.0, &[Module::Q]);
    c["modules_to_save"] = json!([]);
    c["lora_dropout"] = json!(0.1);
    c["init_lora_weights"] = json!("gaussian");
    c["layers_to_transform"] = json!([0]);
    AdapterConfig::from_json(&c, dir).unwrap();
}

#[test]
fn merge_is_w_plus_scaled_b_times_a_in_order() {
    let cfg = tiny_config(Arch::Qwen2); // Neox rope: no row permutation
    let mut m = tiny_model(&cfg, 3, GgmlDType::F32);
    let before: Vec<Vec<f32>> = Module::ALL.iter().map(|&md| dense(md.linear(&m.weights.layers[1]))).collect();
    let t1 = random_lora(&cfg, 4, &Module::ALL, 1);
    let t2 = random_lora(&cfg, 2, &[Module::Q, Module::Down], 2);
    let a1 = adapter_from(base_config(4, 8.0, &Module::ALL), &t1).unwrap();
    let mut c2 = base_config(2, 3.0, &[Module::Q, Module::Down]);
    c2["use_rslora"] = json!(true);
    let a2 = adapter_from(c2, &t2).unwrap();
    let stats = merge(&cfg, &mut m.weights, &[a1, a2], MergeAs::Auto).unwrap();
    assert_eq!(stats.matrices, 7 * cfg.n_layer);
    assert_eq!(stats.pairs, 9 * cfg.n_layer);
    for (k, &md) in Module::ALL.iter().enumerate() {
        let (out, inp) = md.shape(&cfg);
        let mut want = before[k].clone();
        let mut add = |t: &HashMap<String, Tensor>, r: usize, s: f32| {
            let a: Vec<f32> = t[&lora_name(1, md, "A")].flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = t[&lora_name(1, md, "B")].flatten_all().unwrap().to_vec1().unwrap();
            for i in 0..out {
                for j in 0..inp {
                    let d: f64 = (0..r).map(|q| b[i * r + q] as f64 * a[q * inp + j] as f64).sum();
                    want[i * inp + j] += s * d as f32;
                }
            }
        };
        add(&t1, 4, 2.0);
        if matches!(md, Module::Q | Module::Down) {
            add(&t2, 2, (3.0 / 2f64.sqrt()) as f32);
        }
        let got = dense(md.linear(&m.weights.layers[1]));
        let diff = got.iter().zip(&want).fold(0f32, |x, (a, b)| x.max((a - b).abs()));
        assert!(diff < 1e-5, "{md:?}: {diff}");
        assert_eq!(md.linear(&m.weights.layers[1]).kind(), "f32");
    }
}

#[test]
fn quantized_base_is_dequantized_merged_and_requantized() {
    let cfg = tiny_config(Arch::Qwen2);
    let t = random_lora(&cfg, 4, &[Module::V, Module::Up], 4);
    for (merge_as, want_kind) in [(MergeAs::Auto, "q8_0"), (MergeAs::F32, "f32"), (MergeAs::Q8_0, "q8_0")] {
        let mut m = tiny_model(&cfg, 5, GgmlDType::Q4_1);
        let base_v = dense(&m.weights.layers[0].wv);
        let a = adapter_from(base_config(4, 4.0, &[Module::V, Module::Up]), &t).unwrap();
        merge(&cfg, &mut m.weights, &[a], merge_as).unwrap();
        let l = &m.weights.layers[0];
        assert_eq!(l.wv.kind(), want_kind, "{merge_as:?}");
        assert_eq!(l.w_up.kind(), want_kind, "{merge_as:?}");
        assert_eq!(l.wq.kind(), "q4_1", "untouched matrices keep their type");
        let a: Vec<f32> = t[&lora_name(0, Module::V, "A")].flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = t[&lora_name(0, Module::V, "B")].flatten_all().unwrap().to_vec1().unwrap();
        let (out, inp) = Module::V.shape(&cfg);
        let got = dense(&l.wv);
        let mut worst = 0f32;
        for i in 0..out {
            for j in 0..inp {
                let d: f32 = (0..4).map(|q| b[i * 4 + q] * a[q * inp + j]).sum();
                worst = worst.max((got[i * inp + j] - (base_v[i * inp + j] + d)).abs());
            }
        }
        let tol = if want_kind == "f32" { 1e-5 } else { 0.02 };
        assert!(worst < tol, "{merge_as:?}: {worst}");
    }
}

#[test]
fn fan_in_fan_out_adapters_merge_the_same() {
    // peft keeps lora_A [r, in] / lora_B [out, r] with fan_in_fan_out; the flag only
    // transposes the delta for bases stored [in, out], which loglm's never are.
    let cfg = tiny_config(Arch::Qwen2);
    let t = random_lora(&cfg, 4, &[Module::O], 6);
    let mut m1 = tiny_model(&cfg, 1, GgmlDType::F32);
    let mut m2 = tiny_model(&cfg, 1, GgmlDType::F32);
    merge(&cfg, &mut m1.weights, &[adapter_from(base_config(4, 8.0, &[Module::O]), &t).unwrap()], MergeAs::F32).unwrap();
    let mut c = base_config(4, 8.0, &[Module::O]);
    c["fan_in_fan_out"] = json!(true);
    merge(&cfg, &mut m2.weights, &[adapter_from(c, &t).unwrap()], MergeAs::F32).unwrap();
    assert_eq!(dense(&m1.weights.layers[1].wo), dense(&m2.weights.layers[1].wo));
}

fn rename_to_hf(n: &str) -> String {
    match n {
        "token_embd.weight" => return "model.embed_tokens.weight".into(),
        "output_norm.weight" => return "model.norm.weight".into(),
        _ => {}
    }
    let rest = n.strip_prefix("blk.").unwrap();
    let (i, t) = rest.split_once('.').unwrap();
    let (base, suffix) = t.split_once('.').unwrap();
    let base = match base {
        "attn_norm" => "input_layernorm".to_string(),
        "ffn_norm" => "post_attention_layernorm".to_string(),
        other => Module::from_gguf(other).unwrap().hf_path().to_string(),
    };
    format!("model.layers.{i}.{base}.{suffix}")
}

/// The same tiny model as a Hugging Face folder (rotate_half rope) and as a
/// GGUF file whose q/k rows were permuted like `convert_hf_to_gguf.py` does.
fn write_hf_and_gguf(dir: &Path, cfg: &Config, seed: u64, gguf_dtype: GgmlDType) -> (std::path::PathBuf, std::path::PathBuf) {
    let tensors = tiny_tensors(cfg, seed);
    let hf_dir = dir.join("hf");
    std::fs::create_dir_all(&hf_dir).unwrap();
    let st: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(n, s, v)| (rename_to_hf(n), Tensor::from_vec(v.clone(), s.clone(), &Device::Cpu).unwrap()))
        .collect();
    candle_core::safetensors::save(&st, hf_dir.join("model.safetensors")).unwrap();
    let conf = json!({
        "model_type": cfg.arch.name(), "hidden_size": cfg.n_embd, "intermediate_size": cfg.n_ff,
        "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_head_kv, "vocab_size": cfg.vocab_size,
        "rms_norm_eps": cfg.rms_eps, "rope_theta": cfg.rope_theta,
        "max_position_embeddings": 256, "tie_word_embeddings": true
    });
    std::fs::write(hf_dir.join("config.json"), conf.to_string()).unwrap();
    let arch = cfg.arch.name();
    let md: Vec<(String, gguf_file::Value)> = vec![
        ("general.architecture".into(), gguf_file::Value::String(arch.into())),
        (format!("{arch}.block_count"), gguf_file::Value::U32(cfg.n_layer as u32)),
        (format!("{arch}.embedding_length"), gguf_file::Value::U32(cfg.n_embd as u32)),
        (format!("{arch}.feed_forward_length"), gguf_file::Value::U32(cfg.n_ff as u32)),
        (format!("{arch}.attention.head_count"), gguf_file::Value::U32(cfg.n_head as u32)),
        (format!("{arch}.attention.head_count_kv"), gguf_file::Value::U32(cfg.n_head_kv as u32)),
        (format!("{arch}.rope.freq_base"), gguf_file::Value::F32(cfg.rope_theta)),
        (format!("{arch}.attention.layer_norm_rms_epsilon"), gguf_file::Value::F32(cfg.rms_eps)),
        (format!("{arch}.context_length"), gguf_file::Value::U32(256)),
    ];
    let interleaved = cfg.arch == Arch::Llama;
    let qts: Vec<(String, QTensor)> = tensors
        .into_iter()
        .map(|(n, s, mut v)| {
            if interleaved && n.ends_with("attn_q.weight") {
                v = permute_rows_for_interleaved_rope(&v, s[0], s[1], cfg.n_head);
            } else if interleaved && n.ends_with("attn_k.weight") {
                v = permute_rows_for_interleaved_rope(&v, s[0], s[1], cfg.n_head_kv);
            }
            let dt = if s.len() == 2 { gguf_dtype } else { GgmlDType::F32 };
            (n, QTensor::quantize(&Tensor::from_vec(v, s, &Device::Cpu).unwrap(), dt).unwrap())
        })
        .collect();
    let gguf_path = dir.join("tiny.gguf");
    let md_refs: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qts.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut std::fs::File::create(&gguf_path).unwrap(), &md_refs, &t_refs).unwrap();
    (hf_dir, gguf_path)
}

fn load_hf(dir: &Path) -> Model {
    let (c, w) = hf::load(dir, hf::DenseAs::F32).unwrap();
    Model::new(c, w, Some(64), Some(1)).unwrap()
}

fn load_gguf(p: &Path) -> Model {
    let mut g = gguf::GgufFile::open(p).unwrap();
    let (c, w) = gguf::load(&mut g).unwrap();
    Model::new(c, w, Some(64), Some(1)).unwrap()
}

#[test]
fn gguf_and_hf_bases_merge_to_the_same_model() {
    for arch in [Arch::Llama, Arch::Qwen2] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tiny_config(arch);
        let (hf_dir, gguf_path) = write_hf_and_gguf(tmp.path(), &cfg, 21, GgmlDType::F32);
        let ad = tmp.path().join("adapter");
        write_adapter(&ad, &base_config(4, 8.0, &Module::ALL), &random_lora(&cfg, 4, &Module::ALL, 9));
        let toks = tokens(20, 5, cfg.vocab_size);

        let mut h = load_hf(&hf_dir);
        let mut g = load_gguf(&gguf_path);
        assert_eq!(h.cfg.rope_style, RopeStyle::Neox);
        let want_style = if arch == Arch::Llama { RopeStyle::Interleaved } else { RopeStyle::Neox };
        assert_eq!(g.cfg.rope_style, want_style);
        let hb = run_chunks(&h, &toks, 20);
        let gb = run_chunks(&g, &toks, 20);
        for (x, y) in hb.iter().zip(&gb) {
            assert!(max_rel_diff(x, y) < 1e-4, "{arch:?} bases differ: {}", max_rel_diff(x, y));
        }
        let adapter = Adapter::load(&ad).unwrap();
        merge(&h.cfg.clone(), &mut h.weights, std::slice::from_ref(&adapter), MergeAs::F32).unwrap();
        merge(&g.cfg.clone(), &mut g.weights, std::slice::from_ref(&adapter), MergeAs::F32).unwrap();
        let ha = run_chunks(&h, &toks, 20);
        let ga = run_chunks(&g, &toks, 20);
        let mut moved = 0f32;
        for ((x, y), b) in ha.iter().zip(&ga).zip(&hb) {
            assert!(max_rel_diff(x, y) < 1e-4, "{arch:?} merged models differ: {}", max_rel_diff(x, y));
            moved = moved.max(max_rel_diff(x, b));
        }
        assert!(moved > 0.05, "{arch:?}: the adapter should change the logits ({moved})");
        // and the merged model is exactly the reference forward on its weights
        let want = reference_logits(&h, &toks);
        for (x, y) in ha.iter().zip(&want) {
            assert!(max_rel_diff(x, y) < 1e-4);
        }
    }
}

#[test]
fn engine_loads_adapters_from_options() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(Arch::Llama);
    let (hf_dir, gguf_path) = write_hf_and_gguf(tmp.path(), &cfg, 22, GgmlDType::Q8_0);
    let ad = tmp.path().join("adapter");
    write_adapter(&ad, &base_config(4, 8.0, &Module::ALL), &random_lora(&cfg, 4, &Module::ALL, 10));
    // A GGUF base needs a tokenizer: use a tiny WordLevel tokenizer.json.
    let vocab: serde_json::Map<String, serde_json::Value> =
        (0..50).map(|i| (format!("w{i}"), json!(i))).collect();
    let tok = json!({"version": "1.0", "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"},
                     "pre_tokenizer": {"type": "Whitespace"}});
    std::fs::write(hf_dir.join("tokenizer.json"), tok.to_string()).unwrap();
    for (dtype, kind) in [("auto", "q8_0"), ("f32", "f32"), ("q8_0", "q8_0")] {
        let opts = crate::engine::LoadOptions {
            dtype: dtype.into(),
            tokenizer: Some(hf_dir.join("tokenizer.json")),
            adapters: vec![ad.clone()],
            threads: Some(1),
            ..Default::default()
        };
        let e = crate::engine::Engine::load(&gguf_path, &opts).unwrap();
        assert_eq!(e.adapters, vec![std::fs::canonicalize(&ad).unwrap()]);
        assert_eq!(cpu(&e).weights.layers[1].wk.kind(), kind, "{dtype}");
    }
    let opts = crate::engine::LoadOptions { adapters: vec![ad.clone(), ad.clone()], ..Default::default() };
    let e2 = crate::engine::Engine::load(&hf_dir, &opts).unwrap();
    assert_eq!(e2.adapters.len(), 2);
    assert_eq!(cpu(&e2).weights.layers[0].wq.kind(), "f32");
    let opts = crate::engine::LoadOptions { adapters: vec![ad.clone()], dtype: "q8_0".into(), ..Default::default() };
    let e3 = crate::engine::Engine::load(&hf_dir, &opts).unwrap();
    assert_eq!(cpu(&e3).weights.layers[0].wq.kind(), "q8_0");
    assert_eq!(cpu(&e3).weights.embed.kind(), "q8_0");
}

#[test]
fn bad_adapters_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(Arch::Qwen2);
    let good = random_lora(&cfg, 4, &[Module::Q, Module::K], 1);
    let conf = base_config(4, 8.0, &[Module::Q, Module::K]);
    let d = |n: &str| tmp.path().join(n);

    // missing folder / files
    let e = Adapter::load(&d("nope")).unwrap_err();
    assert!(matches!(e, Error::AdapterNotFound(_)) && e.to_string().contains("not found"), "{e}");
    std::fs::create_dir_all(d("empty")).unwrap();
    let e = Adapter::load(&d("empty")).unwrap_err();
    assert!(matches!(e, Error::AdapterNotFound(_)) && e.to_string().contains(CONFIG_FILE), "{e}");
    write_adapter(&d("noweights"), &conf, &good);
    std::fs::remove_file(d("noweights").join(WEIGHTS_FILE)).unwrap();
    let e = Adapter::load(&d("noweights")).unwrap_err();
    assert!(matches!(e, Error::AdapterNotFound(_)) && e.to_string().contains(WEIGHTS_FILE), "{e}");
    std::fs::write(d("noweights").join("adapter_model.bin"), b"pickle").unwrap();
    let e = Adapter::load(&d("noweights")).unwrap_err();
    assert!(e.to_string().contains("safe_serialization"), "{e}");

    // the path of one of its files is fine
    write_adapter(&d("ok"), &conf, &good);
    Adapter::load(&d("ok").join(CONFIG_FILE)).unwrap();

    // corrupt safetensors, truncated safetensors, bad JSON
    write_adapter(&d("corrupt"), &conf, &good);
    std::fs::write(d("corrupt").join(WEIGHTS_FILE), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
    let e = Adapter::load(&d("corrupt")).unwrap_err();
    assert!(matches!(e, Error::Adapter(_)) && e.to_string().contains("not a valid safetensors"), "{e}");
    write_adapter(&d("trunc"), &conf, &good);
    let bytes = std::fs::read(d("trunc").join(WEIGHTS_FILE)).unwrap();
    std::fs::write(d("trunc").join(WEIGHTS_FILE), &bytes[..bytes.len() - 64]).unwrap();
    assert!(matches!(Adapter::load(&d("trunc")), Err(Error::Adapter(_))));
    write_adapter(&d("badjson"), &conf, &good);
    std::fs::write(d("badjson").join(CONFIG_FILE), "{r: 4").unwrap();
    let e = Adapter::load(&d("badjson")).unwrap_err();
    assert!(e.to_string().contains("not valid JSON"), "{e}");

    // unknown tensor name, module outside target_modules, lone factor, rank mismatch
    let mut t = good.clone();
    t.insert("base_model.model.lm_head.lora_A.weight".into(), Tensor::zeros((4, 64), candle_core::DType::F32, &Device::Cpu).unwrap());
    let e = adapter_from(conf.clone(), &t).unwrap_err();
    assert!(e.to_string().contains("unknown tensor") && e.to_string().contains("lm_head"), "{e}");
    let e = adapter_from(base_config(4, 8.0, &[Module::Q]), &good).unwrap_err();
    assert!(e.to_string().contains("not in target_modules"), "{e}");
    let mut t = good.clone();
    t.remove(&lora_name(1, Module::K, "B"));
    let e = adapter_from(conf.clone(), &t).unwrap_err();
    assert!(e.to_string().contains("only one of lora_A / lora_B"), "{e}");
    let e = adapter_from(base_config(8, 8.0, &[Module::Q, Module::K]), &good).unwrap_err();
    assert!(e.to_string().contains("says r=8"), "{e}");
    let mut t = good.clone();
    t.insert(
        "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector".into(),
        Tensor::zeros(64, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    assert!(adapter_from(conf.clone(), &t).unwrap_err().to_string().contains("DoRA"));
    assert!(adapter_from(conf.clone(), &HashMap::new()).unwrap_err().to_string().contains("no LoRA tensors"));

    // shapes that do not fit the model: nothing is changed
    let other = tiny_config(Arch::Llama);
    let mut wide = cfg.clone();
    wide.n_embd = 96;
    let bad_shapes = adapter_from(conf.clone(), &random_lora(&wide, 4, &[Module::Q, Module::K], 1)).unwrap();
    let mut m = tiny_model(&cfg, 2, GgmlDType::Q8_0);
    let ok = adapter_from(conf.clone(), &good).unwrap();
    let before = dense(&m.weights.layers[0].wq);
    let e = merge(&cfg, &mut m.weights, &[ok.clone(), bad_shapes], MergeAs::Auto).unwrap_err();
    assert!(matches!(e, Error::Adapter(_)), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("shape mismatch") && msg.contains("blk.0.attn_q.weight") && msg.contains("tiny-random"), "{msg}");
    assert_eq!(dense(&m.weights.layers[0].wq), before, "a failed merge must not change the weights");
    assert_eq!(m.weights.layers[0].wq.kind(), "q8_0");
    // more layers than the model
    let mut deep = other.clone();
    deep.n_layer = 3;
    deep.arch = Arch::Qwen2;
    let deep_ad = adapter_from(conf.clone(), &random_lora(&deep, 4, &[Module::Q, Module::K], 1)).unwrap();
    let e = merge(&cfg, &mut m.weights, &[deep_ad], MergeAs::Auto).unwrap_err();
    assert!(e.to_string().contains("layer 2 but the model has 2 layers"), "{e}");
}

/// The native model of an engine loaded on "cpu".
fn cpu(e: &crate::engine::Engine) -> &crate::model::Model {
    match &e.backend {
        crate::model::backend::Backend::Cpu(m) => m,
        _ => panic!("not a cpu engine"),
    }
}
