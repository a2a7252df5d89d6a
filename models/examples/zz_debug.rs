use candle_core::Device;
use nereid_models::llama::{argmax, Chunk, KvCache};
fn main() -> anyhow::Result<()> {
    let spec = nereid_engine::ModelSpec::from_config(nereid_proto::parse_model_config(nereid_models::demo::SMOLLM2)?)?;
    let dir = tempfile::tempdir()?;
    let g = nereid_models::generator::Generator::load(&spec, dir.path())?;
    let t = g.tokenizer();
    let t = g.tokenizer();
    let model = g.load_weights(&Device::Cpu)?;
    for (text, chat) in [
        ("What is the capital of France?", Some(true)),
        ("What is the capital of France.", Some(true)),
        (r#"[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is the capital of France?"}]"#, None),
        ("What is the capital of France? Answer in one word.", Some(true)),
        ("The capital of France is", Some(false)),
        ("Which city is the capital of France?", Some(true)),
    ] {
        let req = nereid_models::request::GenerateRequest { text: text.into(), chat, max_tokens: None, temperature: 0.0, top_p: 1.0, seed: 0, stop: vec![] };
        let ids = g.prompt(&req)?;
        let mut cache = KvCache::new(&model);
        let mut logits = model.forward(&mut [Chunk { cache: &mut cache, tokens: &ids }])?;
        let mut out = vec![];
        for _ in 0..24 { let n = argmax(&logits.get(0)?)?; if t.is_eos(n) { break; } out.push(n); logits = model.forward(&mut [Chunk { cache: &mut cache, tokens: &[n] }])?; }
        println!("{text:?} -> {:?}", t.decode(&out));
    }
    Ok(())
}
