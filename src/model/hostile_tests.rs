//! Crafted model files (issue 19): numbers that would reach an allocation, NaN
//! or zero where that cannot work, shard paths out of the model folder, NaN
//! weights. Each must give a clear error, never an abort or a NaN answer.
use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};

use super::forward::{Chunk, Logits};
use super::tests::{tiny_config, tiny_model, tiny_tensors, write_tiny_gguf};
use super::*;

fn load_gguf_with(extra: &[(&str, Value)]) -> Result<(Config, Weights)> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.gguf");
    write_tiny_gguf(&p, &tiny_config(Arch::Llama), 1, GgmlDType::Q8_0, extra);
    let mut g = gguf::GgufFile::open(&p)?;
    gguf::load(&mut g)
}

#[test]
fn crafted_gguf_numbers_are_refused_before_allocating() {
    let cases: Vec<(&str, Value)> = vec![
        ("llama.block_count", Value::U32(u32::MAX)),
        ("llama.block_count", Value::U64(1 << 40)),
        ("llama.block_count", Value::I32(-1)),
        ("llama.block_count", Value::U32(0)),
        ("llama.embedding_length", Value::U64(u64::MAX)),
        ("llama.feed_forward_length", Value::U64(1 << 50)),
        ("llama.attention.head_count", Value::U32(0)),
        ("llama.attention.head_count", Value::U64(1 << 33)),
        ("llama.attention.head_count_kv", Value::U32(3)),
        ("llama.attention.key_length", Value::U64(1 << 40)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(f32::NAN)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(-1e-5)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(0.0)),
        ("llama.rope.freq_base", Value::F32(0.0)),
        ("llama.rope.freq_base", Value::F32(f32::NAN)),
        ("llama.rope.freq_base", Value::F64(f64::INFINITY)),
        ("general.alignment", Value::U32(0)),
        ("general.alignment", Value::U32(3)),
    ];
    for (key, v) in cases {
        let shown = format!("{key}={v:?}");
        match load_gguf_with(&[(key, v)]) {
            Err(Error::ModelFormat(m)) | Err(Error::Unsupported(m)) => assert!(!m.is_empty()),
            Err(e) => panic!("{shown}: wrong error {e:?}"),
            Ok(_) => panic!("{shown}: loaded"),
        }
    }
    assert!(load_gguf_with(&[]).is_ok());
}

#[test]
fn crafted_gguf_header_counts_are_refused() {
    // A header claiming 2^40 tensors / metadata entries / a string of 2^60 bytes.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("h.gguf");
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 40).to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&[0u8; 64]);
    std::fs::write(&p, &b).unwrap();
    assert!(matches!(gguf::GgufFile::open(&p), Err(Error::ModelFormat(_))));
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&(1u64 << 60).to_le_bytes());
    b.extend_from_slice(b"general.name");
    std::fs::write(&p, &b).unwrap();
    assert!(matches!(gguf::GgufFile::open(&p), Err(Error::ModelFormat(_))));
}

#[test]
fn nan_weights_raise_instead_of_answering() {
    let cfg = tiny_config(Arch::Qwen2);
    let mut m = tiny_model(&cfg, 3, GgmlDType::F32);
    m.weights.out_norm[0] = f32::NAN;
    let mut c = KvCache::new(&m.cfg, 16);
    let r = m.forward(&mut [Chunk { cache: &mut c, tokens: &[1, 2, 3], logits: Logits::Last }]);
    assert!(matches!(r, Err(Error::NonFinite(_))), "{:?}", r.err());
    // Logits::None asks for nothing: nothing to check, no error.
    let mut c = KvCache::new(&m.cfg, 16);
    assert!(m.forward(&mut [Chunk { cache: &mut c, tokens: &[1, 2], logits: Logits::None }]).is_ok());
}

#[test]
fn all_finite_finds_every_kind_of_non_finite() {
    for n in [0, 1, 7, 8, 9, 100] {
        let v = vec![1.5f32; n];
        assert!(all_finite(&v));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in 0..n {
                let mut w = v.clone();
                w[at] = bad;
                assert!(!all_finite(&w), "{n} {at} {bad}");
            }
        }
    }
    assert!(all_finite(&[f32::MAX, -f32::MAX, f32::MIN_POSITIVE]));
}

/// A tiny qwen2 HF folder (config.json + model.safetensors) in `dir`.
fn write_hf_folder(dir: &std::path::Path, conf_extra: serde_json::Value) {
    let cfg = tiny_config(Arch::Qwen2);
    std::fs::create_dir_all(dir).unwrap();
    let rename = |n: &str| -> String {
        match n {
            "token_embd.weight" => return "model.embed_tokens.weight".into(),
            "output_norm.weight" => return "model.norm.weight".into(),
            _ => {}
        }
        let (i, t) = n.strip_prefix("blk.").unwrap().split_once('.').unwrap();
        let t = t
            .replace("attn_norm", "input_layernorm")
            .replace("ffn_norm", "post_attention_layernorm")
            .replace("attn_q", "self_attn.q_proj")
            .replace("attn_k", "self_attn.k_proj")
            .replace("attn_v", "self_attn.v_proj")
            .replace("attn_output", "self_attn.o_proj")
            .replace("ffn_gate", "mlp.gate_proj")
            .replace("ffn_up", "mlp.up_proj")
            .replace("ffn_down", "mlp.down_proj");
        format!("model.layers.{i}.{t}")
    };
    let m: HashMap<String, Tensor> = tiny_tensors(&cfg, 5)
        .into_iter()
        .filter(|(n, _, _)| n != "output.weight")
        .map(|(n, s, v)| (rename(&n), Tensor::from_vec(v, s, &Device::Cpu).unwrap()))
        .collect();
    candle_core::safetensors::save(&m, dir.join("model.safetensors")).unwrap();
    let mut conf = serde_json::json!({
        "model_type": "qwen2", "hidden_size": cfg.n_embd, "intermediate_size": cfg.n_ff,
        "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_head_kv, "vocab_size": cfg.vocab_size,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 256,
        "tie_word_embeddings": true
    });
    if let (Some(c), Some(e)) = (conf.as_object_mut(), conf_extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    std::fs::write(dir.join("config.json"), conf.to_string()).unwrap();
}

#[test]
fn crafted_config_json_numbers_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let ok = root.path().join("ok");
    write_hf_folder(&ok, serde_json::json!({}));
    assert!(hf::load(&ok, hf::DenseAs::F32).is_ok());
    for (i, extra) in [
        serde_json::json!({"num_hidden_layers": 1_000_000_000_000u64}),
        serde_json::json!({"num_hidden_layers": 1e12}),
        serde_json::json!({"hidden_size": u64::MAX}),
        serde_json::json!({"vocab_size": 1u64 << 40}),
        serde_json::json!({"head_dim": 1u64 << 40}),
        serde_json::json!({"num_key_value_heads": 0}),
        serde_json::json!({"rms_norm_eps": -1.0}),
        serde_json::json!({"rms_norm_eps": 0.0}),
        serde_json::json!({"rope_theta": 0.0}),
        serde_json::json!({"rope_theta": -5.0}),
    ]
    .into_iter()
    .enumerate()
    {
        let d = root.path().join(format!("bad{i}"));
        write_hf_folder(&d, extra.clone());
        let r = hf::load(&d, hf::DenseAs::F32);
        assert!(matches!(r, Err(Error::ModelFormat(_))), "{extra}: {:?}", r.err());
    }
}

#[cfg(unix)]
#[test]
fn shard_paths_stay_inside_the_model_folder() {
    let root = tempfile::tempdir().unwrap();
    let secret = root.path().join("secret.safetensors");
    let dir = root.path().join("model");
    write_hf_folder(&dir, serde_json::json!({}));
    std::fs::copy(dir.join("model.safetensors"), &secret).unwrap();
    let index = |shard: &str| {
        let idx = serde_json::json!({"weight_map": {"model.embed_tokens.weight": shard}});
        std::fs::write(dir.join("model.safetensors.index.json"), idx.to_string()).unwrap();
    };
    for shard in ["../secret.safetensors", "/dev/zero", "/etc/passwd", "", "sub/../../secret.safetensors"] {
        index(shard);
        let r = hf::load(&dir, hf::DenseAs::F32);
        assert!(matches!(r, Err(Error::ModelFormat(_))), "{shard:?}: {:?}", r.err());
    }
    // A symlink out of the folder, and one to a device.
    std::os::unix::fs::symlink(&secret, dir.join("escape.safetensors")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.safetensors")).unwrap();
    for shard in ["escape.safetensors", "zero.safetensors"] {
        index(shard);
        let r = hf::load(&dir, hf::DenseAs::F32);
        assert!(matches!(r, Err(Error::ModelFormat(_))), "{shard:?}: {:?}", r.err());
    }
    // The single-file layout is held to the same rule.
    std::fs::remove_file(dir.join("model.safetensors.index.json")).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("model.safetensors")).unwrap();
    assert!(matches!(hf::load(&dir, hf::DenseAs::F32), Err(Error::ModelFormat(_))));
    // config.json as a device is refused too (not read without bound).
    std::fs::remove_file(dir.join("config.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("config.json")).unwrap();
    assert!(matches!(hf::load(&dir, hf::DenseAs::F32), Err(Error::ModelFormat(_))));
}

#[cfg(unix)]
#[test]
fn hub_snapshot_symlinks_into_blobs_are_allowed() {
    // <repo>/snapshots/<rev>/model.safetensors -> ../../blobs/<hash>, as huggingface_hub lays it out.
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("models--x--tiny");
    let snap = repo.join("snapshots").join("abc123");
    write_hf_folder(&snap, serde_json::json!({}));
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::rename(snap.join("model.safetensors"), repo.join("blobs").join("deadbeef")).unwrap();
    std::os::unix::fs::symlink("../../blobs/deadbeef", snap.join("model.safetensors")).unwrap();
    assert!(hf::load(&snap, hf::DenseAs::F32).is_ok());
}

#[test]
fn gguf_tensor_with_a_zero_dimension_is_refused() {
    // Found by fuzz/harness.rs: candle cannot cast the (dangling) data pointer of an
    // empty tensor and panics; the file is refused before that.
    fn s(b: &mut Vec<u8>, x: &str) {
        b.extend_from_slice(&(x.len() as u64).to_le_bytes());
        b.extend_from_slice(x.as_bytes());
    }
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    s(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes());
    s(&mut b, "llama");
    s(&mut b, "token_embd.weight");
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&4u64.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    while b.len() % 32 != 0 {
        b.push(0);
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("z.gguf");
    std::fs::write(&p, &b).unwrap();
    match gguf::GgufFile::open(&p) {
        Err(Error::ModelFormat(m)) => assert!(m.contains("zero dimension"), "{m}"),
        Err(e) => panic!("wrong error {e:?}"),
        Ok(_) => panic!("opened"),
    }
}
