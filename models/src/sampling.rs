//! Picking the next token from logits: greedy at temperature 0, otherwise temperature-scaled
//! softmax restricted to the top-p nucleus, drawn from a per-sequence seeded generator (so a
//! given seed reproduces its output).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A sequence's sampling settings and random state.
pub(crate) struct Sampler {
    temperature: f32,
    top_p: f32,
    rng: StdRng,
}

impl Sampler {
    /// Temperatures at or below 1e-5 mean greedy; `top_p` outside (0, 1) means no nucleus cut.
    pub(crate) fn new(temperature: f32, top_p: f32, seed: u64) -> Self {
        Self {
            temperature,
            top_p,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Whether this sampler always takes the most likely token.
    pub(crate) fn is_greedy(&self) -> bool {
        self.temperature.is_nan() || self.temperature <= 1e-5
    }

    /// The next token for one row of logits.
    pub(crate) fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.is_greedy() {
            return argmax(logits);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // A token 30 nats below the best weighs under e^-30 of it (under 1e-8 for the
        // whole vocabulary together): skipping its `exp` changes no draw an f32 can tell
        // apart, and spares an `exp` per vocabulary entry per step for most of them.
        let floor = max - 30.0 * self.temperature;
        let mut probs: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, &l)| l >= floor)
            .map(|(i, &l)| (i as u32, ((l - max) / self.temperature).exp()))
            .filter(|(_, p)| *p > 0.0 && p.is_finite())
            .collect();
        if probs.is_empty() {
            return argmax(logits);
        }
        let total: f32 = probs.iter().map(|(_, p)| p).sum();
        if self.top_p > 0.0 && self.top_p < 1.0 {
            probs.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
            let mut cumulative = 0.0;
            let mut keep = probs.len();
            for (i, (_, p)) in probs.iter().enumerate() {
                cumulative += p / total;
                if cumulative >= self.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
        }
        let kept: f32 = probs.iter().map(|(_, p)| p).sum();
        let mut draw = self.rng.random::<f32>() * kept;
        for (id, p) in &probs {
            draw -= p;
            if draw <= 0.0 {
                return *id;
            }
        }
        probs.last().map(|(id, _)| *id).unwrap_or(0)
    }
}

/// Index of the largest value (the first on ties).
pub(crate) fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest() {
        let mut s = Sampler::new(0.0, 1.0, 1);
        assert!(s.is_greedy());
        assert_eq!(s.sample(&[0.1, 3.0, 2.0]), 1);
    }

    #[test]
    fn seeded_sampling_repeats_and_top_p_cuts_the_tail() {
        let logits = [1.0, 1.2, 0.9, -5.0];
        let draw = |seed| {
            let mut s = Sampler::new(1.0, 1.0, seed);
            (0..20).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert!(
            draw(7).iter().any(|&t| t != draw(7)[0]),
            "a warm sampler varies"
        );
        let mut s = Sampler::new(1.0, 0.3, 3);
        assert!(
            (0..50).all(|_| s.sample(&logits) == 1),
            "top_p 0.3 keeps only the best token"
        );
    }
}
