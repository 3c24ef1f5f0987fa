//! Dev tool: print the top logits of a GGUF model for token ids given as JSON.
//! `cargo run --release --example logits -- MODEL.gguf '[1, 2, 3]'`
use loglm::model::forward::{Chunk, Logits};
use loglm::model::{gguf, KvCache, Model};

fn main() -> loglm::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut g = gguf::GgufFile::open(std::path::Path::new(&args[1]))?;
    let t0 = std::time::Instant::now();
    let (cfg, w) = gguf::load(&mut g)?;
    let model = Model::new(cfg, w, Some(2048), None)?;
    eprintln!("loaded in {:?}", t0.elapsed());
    let ids: Vec<u32> = serde_json::from_str(&args[2])?;
    let mut cache = KvCache::new(&model.cfg, ids.len() + 64);
    let t0 = std::time::Instant::now();
    let out = model.forward(&mut [Chunk { cache: &mut cache, tokens: &ids, logits: Logits::Last }])?;
    eprintln!("prefill {} tokens in {:?}", ids.len(), t0.elapsed());
    let l = &out[0].data;
    let mut idx: Vec<usize> = (0..l.len()).collect();
    idx.sort_by(|a, b| l[*b].total_cmp(&l[*a]));
    println!("{:?}", idx[..10].iter().map(|&i| (i, l[i])).collect::<Vec<_>>());
    // greedy decode 40 tokens
    let mut tok = idx[0] as u32;
    let mut gen = vec![tok];
    let t0 = std::time::Instant::now();
    for _ in 0..199 {
        let t = [tok];
        let out = model.forward(&mut [Chunk { cache: &mut cache, tokens: &t, logits: Logits::Last }])?;
        tok = loglm::generate::sampler::argmax(&out[0].data);
        gen.push(tok);
    }
    eprintln!("decode 199 tokens in {:?}", t0.elapsed());
    println!("{:?}", gen);
    Ok(())
}
