//! Both backends through a real engine on tiny random-weight models the test writes: fast,
//! no network, every loading path exercised.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nereid_engine::builtin::demo::write_repository;
use nereid_engine::{EngineError, InferRequest, Tensor};

/// The demo configs, renamed, without weight sources, with the tiny models' sizes.
fn tiny_repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let strip = |text: &str| {
        text.lines()
            .filter(|l| !l.contains("\"pypi_"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let st = strip(nereid_models::demo::MINILM)
        .replace("\"minilm\"", "\"tiny_st\"")
        .replace("[ 384 ]", "[ 32 ]");
    let llm = strip(nereid_models::demo::SMOLLM2)
        .replace("\"smollm2\"", "\"tiny_llm\"")
        .replace("max_batch_size: 8", "max_batch_size: 2");
    let no_reuse = nereid_models::testing::with_parameter(
        &llm.replace("\"tiny_llm\"", "\"tiny_llm_no_reuse\""),
        "prefix_cache_mb",
        "0",
    );
    write_repository(
        dir.path(),
        [
            ("tiny_st", st.as_str()),
            ("tiny_llm", llm.as_str()),
            ("tiny_llm_no_reuse", no_reuse.as_str()),
        ],
    )
    .unwrap();
    nereid_models::testing::write_tiny_sentence_transformer(&dir.path().join("tiny_st/1")).unwrap();
    for llm in ["tiny_llm", "tiny_llm_no_reuse"] {
        let file = dir.path().join(llm).join("1/tiny.gguf");
        nereid_models::testing::write_tiny_gguf(&file).unwrap();
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_are_unit_vectors_and_batch_invariant() {
    let repo = tiny_repository();
    let engine = engine(repo.path());
    assert_ready(&engine, "tiny_st");
    let texts = [
        "this is an example sentence",
        "cat",
        "the cat sat on the mat , each one gets a vector",
    ];
    let together = embed(&engine, "tiny_st", &texts).await;
    assert_eq!(together.len(), 3);
    for (text, v) in texts.iter().zip(&together) {
        assert_eq!(v.len(), 32);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "normalised: {norm}");
        let alone = embed(&engine, "tiny_st", &[text]).await;
        assert!(
            cosine_distance(&alone[0], v) < 1e-5,
            "'{text}' batched differs from alone"
        );
    }
    // Concurrent single requests are batched by the engine and still agree.
    let futures: Vec<_> = texts
        .iter()
        .map(|t| embed(&engine, "tiny_st", std::slice::from_ref(t)))
        .collect();
    for (got, want) in futures::future::join_all(futures)
        .await
        .iter()
        .zip(&together)
    {
        assert!(cosine_distance(&got[0], want) < 1e-5);
    }
    // Longer than max_seq_length (12): truncated, not an error.
    let long = "the cat sat on the mat ".repeat(40);
    let v = embed(&engine, "tiny_st", &[long.as_str()]).await;
    assert_eq!(v[0].len(), 32);
    let bad = engine
        .infer(embed_request("tiny_st", &["x"; 33]))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("batch size 33"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_that_is_not_utf8_fails_only_its_own_request() {
    let repo = tiny_repository();
    let engine = engine(repo.path());
    assert_ready(&engine, "tiny_st");
    let latin1 = |name: &str| Tensor::from_strings(name, vec![1, 1], [b"caf\xe9".as_slice()]);
    // Submitted together, so without the per-request check they would share a batch.
    let bad = engine.infer(InferRequest::new("tiny_st", vec![latin1("TEXT")]));
    let good = engine.infer(embed_request("tiny_st", &["cat"]));
    let (bad, good) = tokio::join!(bad, good);
    let err = bad.unwrap_err();
    assert!(
        matches!(&err, EngineError::InvalidArgument(m) if m.contains("input 'TEXT'") && m.contains("not UTF-8")),
        "{err:?}"
    );
    let good = good.expect("the good request of the batch succeeds");
    assert_eq!(good.output("EMBEDDING").unwrap().shape, vec![1, 32]);

    assert_ready(&engine, "tiny_llm");
    let mut prompt = generate_request("tiny_llm", "x", 2, false);
    prompt.inputs[0] = latin1("text_input");
    let err = engine.infer_stream(prompt).unwrap_err();
    assert!(
        matches!(&err, EngineError::InvalidArgument(m) if m.contains("input 'text_input' is not UTF-8")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_streams_counts_and_limits() {
    let repo = tiny_repository();
    let engine = engine(repo.path());
    assert_ready(&engine, "tiny_llm");
    let stream = engine
        .infer_stream(generate_request("tiny_llm", "Hello there", 12, true))
        .unwrap();
    let g = collect(stream).await;
    assert!(
        g.completion_tokens >= 1 && g.completion_tokens <= 12,
        "{g:?}"
    );
    assert!(
        g.prompt_tokens > 11,
        "the chat template wrapped the prompt: {g:?}"
    );
    assert!(
        g.finish_reason == "length" || g.finish_reason == "stop",
        "{g:?}"
    );
    assert_eq!(g.cached_tokens, 0, "nothing read before: {g:?}");
    // Greedy is deterministic, also when the prompt's cache is reused: all of it but the
    // last token, which must go through the model for the next logits.
    let again = generate(&engine, "tiny_llm", "Hello there", 12, true).await;
    assert_eq!(again.text, g.text);
    assert_eq!(again.cached_tokens, g.prompt_tokens - 1, "{again:?}");
    // Another chat shares the chat template's opening with it, not the question.
    let other = generate(&engine, "tiny_llm", "Goodbye now", 4, true).await;
    assert!(
        other.cached_tokens > 0 && other.cached_tokens < g.prompt_tokens - 1,
        "{other:?}"
    );
    // With prefix reuse off, the same prompt twice is read twice, to the same answer.
    assert_ready(&engine, "tiny_llm_no_reuse");
    for _ in 0..2 {
        let plain = generate(&engine, "tiny_llm_no_reuse", "Hello there", 12, true).await;
        assert_eq!(
            (plain.cached_tokens, &plain.text),
            (0, &g.text),
            "{plain:?}"
        );
    }
    // Raw completion prompt: no template.
    let raw = generate(&engine, "tiny_llm", "Hello there", 3, false).await;
    assert_eq!(
        raw.prompt_tokens, 8,
        "bytes and the tiny merges (Ġthe): {raw:?}"
    );
    // max_tokens 0 answers at once.
    let none = generate(&engine, "tiny_llm", "Hi", 0, false).await;
    assert_eq!(
        (
            none.completion_tokens,
            none.finish_reason.as_str(),
            none.text.as_str()
        ),
        (0, "length", "")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_generations_complete_and_a_dropped_stream_frees_its_slot() {
    let repo = tiny_repository();
    let engine = engine(repo.path());
    assert_ready(&engine, "tiny_llm");
    // Two slots (max_batch_size 2): both sequences decode together.
    let a = engine
        .infer_stream(generate_request("tiny_llm", "first prompt", 20, false))
        .unwrap();
    let b = engine
        .infer_stream(generate_request(
            "tiny_llm",
            "the second, longer prompt",
            20,
            false,
        ))
        .unwrap();
    let (a, b) = tokio::join!(collect(a), collect(b));
    assert!(a.completion_tokens >= 1 && b.completion_tokens >= 1);
    // Each alone gives the same text as together (greedy, separate caches).
    let a_alone = generate(&engine, "tiny_llm", "first prompt", 20, false).await;
    assert_eq!(a_alone.text, a.text);

    // Fill both slots with long generations, drop one stream, and a third request runs.
    let long = |p: &str| {
        engine
            .infer_stream(generate_request("tiny_llm", p, 200, false))
            .unwrap()
    };
    let mut keep = long("keep going");
    let dropped = long("drop me");
    assert!(keep.recv().await.is_some());
    drop(dropped);
    let started = Instant::now();
    let third = tokio::time::timeout(
        Duration::from_secs(60),
        collect(
            engine
                .infer_stream(generate_request("tiny_llm", "third", 2, false))
                .unwrap(),
        ),
    )
    .await
    .expect("the dropped stream's slot was freed");
    assert!(third.completion_tokens >= 1);
    assert!(started.elapsed() < Duration::from_secs(60));
    drop(keep);
}

/// `matmul_weights` of a sentence transformer: a wrong value fails the load naming the
/// parameter and the values it takes.
#[test]
fn a_wrong_matmul_weights_fails_the_load_naming_the_parameter() {
    let repo = tiny_repository();
    let config = std::fs::read_to_string(repo.path().join("tiny_st/config.pbtxt")).unwrap();
    let load = |value: &str| {
        let text = nereid_models::testing::with_parameter(&config, "matmul_weights", value);
        let spec =
            nereid_engine::ModelSpec::from_config(nereid_proto::parse_model_config(&text).unwrap())
                .unwrap();
        nereid_models::testing::Embedder::load(&spec, &repo.path().join("tiny_st/1"))
    };
    let err = load("int4").err().expect("int4 is refused").to_string();
    assert!(
        err.contains("parameter 'matmul_weights' = 'int4': use fp32, int16, bf16 or auto"),
        "{err}"
    );
    for value in ["fp32", "BF16", "int16", "auto"] {
        assert!(load(value).is_ok(), "{value}");
    }
}
