//! The batched quantized llama against candle-transformers' reference `quantized_llama`, on
//! tiny random GGUFs: close logits and the same greedy tokens through prefill and decode for
//! every block type our kernels take, sequences batched together equal to each alone, a KV
//! cache that grows, and one started from another's prefix.

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use nereid_models::testing::{Chunk, KvCache, Llama, MatmulWeights};

use candle_transformers::models::quantized_llama::ModelWeights;

fn tiny() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    nereid_models::testing::write_tiny_gguf(&path).unwrap();
    (dir, path)
}

fn tiny_typed(
    projections: GgmlDType,
    embedding: GgmlDType,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    nereid_models::testing::write_tiny_gguf_typed(&path, projections, embedding).unwrap();
    (dir, path)
}

fn ours(path: &std::path::Path, weights: MatmulWeights) -> Llama {
    let mut f = std::fs::File::open(path).unwrap();
    let content = Content::read(&mut f).unwrap();
    Llama::load(&content, &mut f, &Device::Cpu, 4096, weights).unwrap()
}

fn reference(path: &std::path::Path) -> ModelWeights {
    let mut f = std::fs::File::open(path).unwrap();
    let content = Content::read(&mut f).unwrap();
    ModelWeights::from_gguf(content, &mut f, &Device::Cpu).unwrap()
}

/// Our logits after one chunk of one sequence.
fn logits(model: &Llama, cache: &mut KvCache, tokens: &[u32]) -> Tensor {
    model.forward(&mut [Chunk { cache, tokens }]).unwrap()
}

/// The reference's logits for `tokens` placed from position `pos`.
fn reference_logits(reference: &mut ModelWeights, tokens: &[u32], pos: usize) -> Tensor {
    let input = Tensor::new(tokens, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    reference.forward(&input, pos).unwrap()
}

fn close(a: &Tensor, b: &Tensor) {
    close_within(a, b, 1e-3);
}

fn close_within(a: &Tensor, b: &Tensor, tolerance: f32) {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < tolerance, "logits differ by {worst}");
}

/// Dequantized weights skip the reference's Q8 rounding of activations, so they agree with
/// it closely but not to the last digit; the greedy choice is the same.
#[test]
fn dequantized_weights_match_the_quantized_reference() {
    let (_dir, path) = tiny();
    let mut reference = reference(&path);
    let prompt = [5u32, 77, 120, 9, 200, 31, 64];
    let want = reference_logits(&mut reference, &prompt, 0);
    for weights in [MatmulWeights::F32, MatmulWeights::F16] {
        let model = ours(&path, weights);
        let mut cache = KvCache::new(&model);
        let got = logits(&model, &mut cache, &prompt);
        let (g, w): (Vec<f32>, Vec<f32>) = (
            got.flatten_all().unwrap().to_vec1().unwrap(),
            want.flatten_all().unwrap().to_vec1().unwrap(),
        );
        let worst = g
            .iter()
            .zip(&w)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let scale = w.iter().map(|x| x.abs()).fold(0f32, f32::max);
        eprintln!("{weights:?}: worst {worst} of scale {scale}");
        close_within(&got, &want, 0.04 * scale.max(1.0));
        let argmax = |v: &[f32]| {
            v.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
        };
        assert_eq!(argmax(&g), argmax(&w), "{weights:?}");
    }
}

/// Our integer kernels quantize activations to 8 bits per 32 values with FP32 scales;
/// candle's reference does so with FP16 scales (and per 256 values for the K types), so the
/// two round differently: logits close, and the same greedy tokens as each picks its own.
#[test]
fn matches_candle_quantized_llama_through_prefill_and_greedy_decode_for_every_block_type() {
    let types = [
        (GgmlDType::Q4_0, GgmlDType::Q8_0),
        (GgmlDType::Q4_1, GgmlDType::Q8_0),
        (GgmlDType::Q5_0, GgmlDType::Q5_0),
        (GgmlDType::Q8_0, GgmlDType::Q6K),
        (GgmlDType::Q4K, GgmlDType::Q4_0),
        (GgmlDType::Q6K, GgmlDType::Q4K),
    ];
    for (projections, embedding) in types {
        let (_dir, path) = tiny_typed(projections, embedding);
        let (ours, mut reference) = (ours(&path, MatmulWeights::Quantized), reference(&path));
        let prompt = [5u32, 77, 120, 9, 200, 31, 64];
        let mut cache = KvCache::new(&ours);
        let mut got = logits(&ours, &mut cache, &prompt);
        let mut want = reference_logits(&mut reference, &prompt, 0);
        let mut pos = prompt.len();
        for step in 0..8 {
            let what = format!("{projections:?}/{embedding:?}, step {step}");
            near_with_the_same_argmax(&got, &want, &what);
            let token = argmax(&flat(&got)) as u32;
            got = logits(&ours, &mut cache, &[token]);
            want = reference_logits(&mut reference, &[token], pos);
            pos += 1;
        }
        assert_eq!(cache.len(), pos);
    }
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}

/// Within 10% of the reference (relative RMS over the vocabulary: random tiny models
/// amplify rounding, and two 8-bit activation roundings land 2-8% apart, each about as far
/// from the unquantized product), and the same largest wherever the reference's choice is
/// clear: its best logit ahead of its second by more than twice the largest difference
/// (near ties may break either way).
fn near_with_the_same_argmax(got: &Tensor, want: &Tensor, what: &str) {
    let (g, w) = (flat(got), flat(want));
    let (num, den) = g.iter().zip(&w).fold((0f32, 0f32), |(n, d), (x, y)| {
        (n + (x - y).powi(2), d + y * y)
    });
    let relative = (num / den).sqrt();
    let worst = g
        .iter()
        .zip(&w)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let mut sorted = w.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let margin = sorted[0] - sorted[1];
    eprintln!("{what}: relative difference {relative}, largest {worst}, margin {margin}");
    assert!(relative < 0.1, "{what}: {relative} from the reference");
    if margin > 2.0 * worst {
        assert_eq!(argmax(&g), argmax(&w), "{what}");
    } else {
        assert!(
            w[argmax(&g)] >= sorted[0] - 2.0 * worst,
            "{what}: a far-off choice"
        );
    }
}

#[test]
fn sequences_batched_together_match_each_alone() {
    let (_dir, path) = tiny();
    for weights in [
        MatmulWeights::Quantized,
        MatmulWeights::F32,
        MatmulWeights::F16,
    ] {
        batched_matches_alone(&ours(&path, weights));
    }
}

fn batched_matches_alone(model: &Llama) {
    let (a, b) = (
        [10u32, 11, 12],
        [40u32, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50],
    );
    let alone = |tokens: &[u32], next: u32| {
        let mut c = KvCache::new(model);
        logits(model, &mut c, tokens);
        logits(model, &mut c, &[next])
    };
    let (want_a, want_b) = (alone(&a, 7), alone(&b, 8));
    // Prefill of b in the same pass as a's decode, then a joint decode step.
    let (mut ca, mut cb) = (KvCache::new(model), KvCache::new(model));
    logits(model, &mut ca, &a);
    model
        .forward(&mut [
            Chunk {
                cache: &mut ca,
                tokens: &[7],
            },
            Chunk {
                cache: &mut cb,
                tokens: &b,
            },
        ])
        .unwrap();
    let mut cb2 = KvCache::new(model);
    logits(model, &mut cb2, &b);
    let both = model
        .forward(&mut [
            Chunk {
                cache: &mut cb2,
                tokens: &[8],
            },
            Chunk {
                cache: &mut cb,
                tokens: &[8],
            },
        ])
        .unwrap();
    close(&both.get(0).unwrap(), &want_b);
    close(&both.get(1).unwrap(), &want_b);
    let (mut c1, mut c2) = (KvCache::new(model), KvCache::new(model));
    model
        .forward(&mut [
            Chunk {
                cache: &mut c1,
                tokens: &a,
            },
            Chunk {
                cache: &mut c2,
                tokens: &b,
            },
        ])
        .unwrap();
    let joint = model
        .forward(&mut [
            Chunk {
                cache: &mut c1,
                tokens: &[7],
            },
            Chunk {
                cache: &mut c2,
                tokens: &[8],
            },
        ])
        .unwrap();
    close(&joint.get(0).unwrap(), &want_a);
    close(&joint.get(1).unwrap(), &want_b);
}

#[test]
fn cache_grows_past_its_first_capacity() {
    let (_dir, path) = tiny();
    let model = ours(&path, MatmulWeights::Quantized);
    let prompt: Vec<u32> = (0..70).map(|i| (i * 7 % 250) as u32).collect();
    let mut cache = KvCache::new(&model);
    logits(&model, &mut cache, &prompt[..60]);
    let got = logits(&model, &mut cache, &prompt[60..]);
    let want = logits(&model, &mut KvCache::new(&model), &prompt);
    close(&got, &want);
    let err = model
        .forward(&mut [Chunk {
            cache: &mut cache,
            tokens: &vec![1; 200],
        }])
        .unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
}

#[test]
fn a_cache_started_from_another_prompts_prefix_continues_like_a_fresh_one() {
    let (_dir, path) = tiny();
    let model = ours(&path, MatmulWeights::Quantized);
    let first: Vec<u32> = (0..50).map(|i| (i * 7 % 250) as u32).collect();
    let mut cache = KvCache::new(&model);
    logits(&model, &mut cache, &first);
    let prefix = cache.prefix(30).unwrap();
    assert_eq!(prefix[0].0.dim(1).unwrap(), 30);

    // A second prompt sharing the first 20 tokens, then going its own way; only 20 of the
    // 30 copied positions are taken.
    let mut second = first[..20].to_vec();
    second.extend((0..45).map(|i| (i * 11 % 240) as u32));
    let mut reused = model.cache_from_prefix(&prefix, 20).unwrap();
    assert_eq!(reused.len(), 20);
    let got = logits(&model, &mut reused, &second[20..]);
    let mut fresh = KvCache::new(&model);
    close(&got, &logits(&model, &mut fresh, &second));
    // Decoding on from it still matches.
    let next = logits(&model, &mut reused, &[5]);
    close(&next, &logits(&model, &mut fresh, &[5]));

    assert!(cache.prefix(51).is_err(), "more than cached");
    assert!(cache.prefix(0).is_err(), "an empty prefix");
    assert!(
        model.cache_from_prefix(&prefix, 31).is_err(),
        "more than copied"
    );
    assert!(
        model.cache_from_prefix(&prefix[1..], 10).is_err(),
        "a layer short"
    );
}

/// A seeded request must sample the same tokens however its prompt was read: whole, in
/// chunks, after a reused prefix, or beside another sequence. With 8-bit activation
/// rounding any last-bit difference can change a logit, so the logits must be equal, not
/// close.
#[test]
fn a_prompts_logits_are_the_same_bits_however_it_was_read() {
    let (_dir, path) = tiny();
    let model = ours(&path, MatmulWeights::Quantized);
    let prompt: Vec<u32> = (0..40).map(|i| (i * 13 % 250) as u32).collect();
    let bits = |t: &Tensor| -> Vec<u32> { flat(t).iter().map(|v| v.to_bits()).collect() };
    let whole = bits(&logits(&model, &mut KvCache::new(&model), &prompt));

    let mut chunked = KvCache::new(&model);
    logits(&model, &mut chunked, &prompt[..17]);
    logits(&model, &mut chunked, &prompt[17..39]);
    assert_eq!(
        bits(&logits(&model, &mut chunked, &prompt[39..])),
        whole,
        "in chunks"
    );

    let mut first = KvCache::new(&model);
    logits(&model, &mut first, &prompt);
    let prefix = first.prefix(39).unwrap();
    let mut reused = model.cache_from_prefix(&prefix, 39).unwrap();
    assert_eq!(
        bits(&logits(&model, &mut reused, &prompt[39..])),
        whole,
        "reused prefix"
    );

    let (mut other, mut mine) = (KvCache::new(&model), KvCache::new(&model));
    logits(&model, &mut other, &[7, 8, 9]);
    let both = model
        .forward(&mut [
            Chunk {
                cache: &mut other,
                tokens: &[10],
            },
            Chunk {
                cache: &mut mine,
                tokens: &prompt,
            },
        ])
        .unwrap();
    assert_eq!(
        bits(&both.get(1).unwrap()),
        whole,
        "beside another sequence"
    );
}
