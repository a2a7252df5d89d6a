//! Attention for the decode rows of a step on CPU: each sequence's one new query against
//! its own KV cache, every sequence and KV head of a layer in one parallel pass.
//!
//! Through candle, one sequence's attention is about ten small ops (copies, two matmuls,
//! softmax), a few microseconds each whatever their size: a 30-layer step of 8 sequences
//! spent 10 of its 41 ms there, on one thread. The arithmetic is tiny (a few hundred
//! cached positions of 64-wide heads), so here it is plain loops over the cache's memory,
//! shared out over the instance's pool by (sequence, KV head).

use anyhow::{bail, Result};
use candle_core::{Layout, Storage};
use rayon::prelude::*;

use crate::cpu_op::{contiguous_f32, dot};

/// The head layout of a model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads; each serves `n_head / n_kv_head` query heads.
    pub n_kv_head: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// One sequence's new query and its cache for one layer.
pub(crate) struct DecodeQuery<'a> {
    /// The roped query, `(n_head, head_dim)`.
    pub q: &'a [f32],
    /// The layer's cached keys, `(n_kv_head, capacity, head_dim)`, new key included.
    pub keys: &'a [f32],
    /// The layer's cached values, laid out as `keys`.
    pub values: &'a [f32],
    /// Positions the cache has room for (its second dimension).
    pub capacity: usize,
    /// Positions filled, the new one included.
    pub len: usize,
}

/// Lanes of independent partial sums in a dot product of two head vectors.
const LANES: usize = 8;

/// The FP32 elements a contiguous CPU tensor's layout addresses.
pub(crate) fn cpu_f32<'a>(storage: &'a Storage, layout: &Layout) -> Result<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) => Ok(contiguous_f32("decode attention", cpu, layout)?),
        _ => bail!("decode attention needs CPU tensors"),
    }
}

/// Attention outputs `(queries.len(), n_head * head_dim)`, row-major, for the current rayon
/// pool to compute.
pub(crate) fn attend(queries: &[DecodeQuery], heads: Heads) -> Result<Vec<f32>> {
    let Heads {
        n_head,
        n_kv_head,
        head_dim,
    } = heads;
    if n_kv_head == 0 || n_head % n_kv_head != 0 || head_dim == 0 {
        bail!("decode attention: {n_head} query heads over {n_kv_head} KV heads");
    }
    for (i, query) in queries.iter().enumerate() {
        let cache = n_kv_head * query.capacity * head_dim;
        if query.q.len() != n_head * head_dim
            || query.keys.len() < cache
            || query.values.len() < cache
            || query.len == 0
            || query.len > query.capacity
        {
            bail!("decode attention: query {i} does not fit its cache");
        }
    }
    let rep = n_head / n_kv_head;
    let mut out = vec![0f32; queries.len() * n_head * head_dim];
    out.par_chunks_mut(rep * head_dim)
        .enumerate()
        .for_each(|(task, out)| {
            let (query, group) = (&queries[task / n_kv_head], task % n_kv_head);
            group_attention(query, group, rep, head_dim, out);
        });
    Ok(out)
}

/// The `rep` query heads of KV head `group` for one query, into `out (rep, head_dim)`.
fn group_attention(query: &DecodeQuery, group: usize, rep: usize, hd: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features `group_attention_avx2` is compiled for.
        return unsafe { group_attention_avx2(query, group, rep, hd, out) };
    }
    group_attention_body(query, group, rep, hd, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn group_attention_avx2(
    query: &DecodeQuery,
    group: usize,
    rep: usize,
    hd: usize,
    out: &mut [f32],
) {
    group_attention_body(query, group, rep, hd, out)
}

#[inline(always)]
fn group_attention_body(query: &DecodeQuery, group: usize, rep: usize, hd: usize, out: &mut [f32]) {
    let base = group * query.capacity * hd;
    let keys = &query.keys[base..base + query.len * hd];
    let values = &query.values[base..base + query.len * hd];
    let scale = 1.0 / (hd as f32).sqrt();
    let mut scores = vec![0f32; query.len];
    for (r, out) in out.chunks_exact_mut(hd).enumerate() {
        let head = group * rep + r;
        let q = &query.q[head * hd..(head + 1) * hd];
        let mut max = f32::NEG_INFINITY;
        for (score, key) in scores.iter_mut().zip(keys.chunks_exact(hd)) {
            *score = dot::<LANES>(q, key) * scale;
            max = max.max(*score);
        }
        let mut sum = 0f32;
        for score in scores.iter_mut() {
            *score = (*score - max).exp();
            sum += *score;
        }
        out.fill(0.0);
        for (&weight, value) in scores.iter().zip(values.chunks_exact(hd)) {
            let weight = weight / sum;
            for (o, v) in out.iter_mut().zip(value) {
                *o += weight * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward attention of one query head against `len` keys and values.
    fn reference(q: &[f32], keys: &[&[f32]], values: &[&[f32]]) -> Vec<f32> {
        let scale = 1.0 / (q.len() as f32).sqrt();
        let scores: Vec<f32> = keys
            .iter()
            .map(|k| q.iter().zip(*k).map(|(a, b)| a * b).sum::<f32>() * scale)
            .collect();
        let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f32 = e.iter().sum();
        let mut out = vec![0f32; q.len()];
        for (w, v) in e.iter().zip(values) {
            for (o, x) in out.iter_mut().zip(*v) {
                *o += w / sum * x;
            }
        }
        out
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// A query and cache the test owns.
    struct Owned {
        q: Vec<f32>,
        keys: Vec<f32>,
        values: Vec<f32>,
        len: usize,
    }

    #[test]
    fn matches_plain_attention_for_grouped_heads_and_different_lengths() {
        let heads = Heads {
            n_head: 6,
            n_kv_head: 2,
            head_dim: 12,
        };
        let (capacity, hd) = (16usize, heads.head_dim);
        let owned: Vec<Owned> = [(1usize, 1u32), (5, 2), (16, 3)]
            .iter()
            .map(|&(len, seed)| Owned {
                q: pseudo_random(heads.n_head * hd, seed),
                keys: pseudo_random(heads.n_kv_head * capacity * hd, seed + 10),
                values: pseudo_random(heads.n_kv_head * capacity * hd, seed + 20),
                len,
            })
            .collect();
        let queries: Vec<DecodeQuery> = owned
            .iter()
            .map(|o| DecodeQuery {
                q: &o.q,
                keys: &o.keys,
                values: &o.values,
                capacity,
                len: o.len,
            })
            .collect();
        let got = attend(&queries, heads).unwrap();
        for (s, o) in owned.iter().enumerate() {
            for head in 0..heads.n_head {
                let group = head / 3;
                let rows = |cache: &[f32]| -> Vec<Vec<f32>> {
                    (0..o.len)
                        .map(|j| cache[(group * capacity + j) * hd..][..hd].to_vec())
                        .collect()
                };
                let (keys, values) = (rows(&o.keys), rows(&o.values));
                let keys: Vec<&[f32]> = keys.iter().map(Vec::as_slice).collect();
                let values: Vec<&[f32]> = values.iter().map(Vec::as_slice).collect();
                let want = reference(&o.q[head * hd..][..hd], &keys, &values);
                let row = &got[(s * heads.n_head + head) * hd..][..hd];
                for (a, b) in row.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "sequence {s} head {head}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn refuses_queries_that_do_not_fit() {
        let heads = Heads {
            n_head: 2,
            n_kv_head: 1,
            head_dim: 4,
        };
        let (q, kv) = (vec![0f32; 8], vec![0f32; 8]);
        let query = |len| DecodeQuery {
            q: &q,
            keys: &kv,
            values: &kv,
            capacity: 2,
            len,
        };
        assert!(attend(&[query(2)], heads).is_ok());
        assert!(attend(&[query(3)], heads).is_err(), "longer than the cache");
        assert!(attend(&[query(0)], heads).is_err(), "nothing to attend to");
        let odd = Heads {
            n_kv_head: 3,
            ..heads
        };
        assert!(attend(&[query(1)], odd).is_err());
    }
}
