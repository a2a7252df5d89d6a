//! The per-sequence KV cache, kept outside the model so one forward pass can carry many
//! sequences at different positions, and copies of its first positions for reuse.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

use super::Llama;

/// The KV cache of one sequence: per layer, keys and values `(n_kv_head, capacity, head_dim)`
/// of which the first `len` positions are filled; capacity doubles as the sequence grows.
pub struct KvCache {
    pub(super) layers: Vec<Option<(Tensor, Tensor)>>,
    pub(super) len: usize,
    pub(super) capacity: usize,
}

impl KvCache {
    /// An empty cache for a model.
    pub fn new(model: &Llama) -> Self {
        Self {
            layers: vec![None; model.cfg.n_layer],
            len: 0,
            capacity: 0,
        }
    }

    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached. (Only the `testing` feature exports the cache, and an
    /// exported `len` wants its `is_empty`.)
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy of the first `len` cached positions, for [`Llama::cache_from_prefix`].
    pub fn prefix(&self, len: usize) -> Result<KvLayers> {
        if len == 0 || len > self.len {
            bail!("a prefix of {len} positions from a cache of {}", self.len);
        }
        self.layers
            .iter()
            .map(|slot| {
                let (k, v) = slot.as_ref().expect("a filled cache has every layer");
                Ok((
                    k.narrow(1, 0, len)?.force_contiguous()?,
                    v.narrow(1, 0, len)?.force_contiguous()?,
                ))
            })
            .collect()
    }
}

/// A copy of a cache's first positions: per layer, keys and values `(n_kv_head, len,
/// head_dim)` ([`KvCache::prefix`]).
pub(crate) type KvLayers = Vec<(Tensor, Tensor)>;

impl Llama {
    /// Bytes a [`KvCache`] holds per position: keys and values of every layer.
    pub fn kv_bytes_per_position(&self) -> usize {
        let cfg = &self.cfg;
        cfg.n_layer * 2 * cfg.n_kv_head * cfg.head_dim * DType::F32.size_in_bytes()
    }

    /// A cache holding the first `len` positions of `prefix` (from [`KvCache::prefix`] of a
    /// cache of this model), ready to take the tokens after them.
    pub fn cache_from_prefix(&self, prefix: &[(Tensor, Tensor)], len: usize) -> Result<KvCache> {
        if prefix.len() != self.cfg.n_layer {
            bail!(
                "a prefix of {} layers for a model of {}",
                prefix.len(),
                self.cfg.n_layer
            );
        }
        let capacity = self.capacity_for(len);
        let mut layers = Vec::with_capacity(prefix.len());
        for (k, v) in prefix {
            if k.dim(1)? < len || v.dim(1)? < len {
                bail!("a prefix of {} positions asked for {len}", k.dim(1)?);
            }
            layers.push(Some((
                self.grow(k, len, capacity)?,
                self.grow(v, len, capacity)?,
            )));
        }
        Ok(KvCache {
            layers,
            len,
            capacity,
        })
    }

    /// Positions to allocate for a cache that must hold `need`: doubling, from 64 up to the
    /// context.
    fn capacity_for(&self, need: usize) -> usize {
        need.next_power_of_two()
            .clamp(64, self.cfg.context.next_power_of_two())
    }

    /// Appends `(n_kv, t, hd)` keys and values to a layer's cache, growing it if needed, and
    /// returns views of everything cached `(n_kv, len + t, hd)`.
    pub(super) fn append(
        &self,
        layer: usize,
        cache: &mut KvCache,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let t = k.dim(1)?;
        let need = cache.len + t;
        if need > cache.capacity {
            let capacity = self.capacity_for(need);
            for slot in cache.layers.iter_mut() {
                let grown = match slot.take() {
                    Some((ok, ov)) => (
                        self.grow(&ok, cache.len, capacity)?,
                        self.grow(&ov, cache.len, capacity)?,
                    ),
                    None => (self.empty(capacity)?, self.empty(capacity)?),
                };
                *slot = Some(grown);
            }
            cache.capacity = capacity;
        }
        let (kb, vb) = cache.layers[layer].as_ref().expect("allocated above");
        kb.slice_set(k, 1, cache.len)?;
        vb.slice_set(v, 1, cache.len)?;
        Ok((kb.narrow(1, 0, need)?, vb.narrow(1, 0, need)?))
    }

    fn empty(&self, capacity: usize) -> Result<Tensor> {
        Ok(Tensor::zeros(
            (self.cfg.n_kv_head, capacity, self.cfg.head_dim),
            DType::F32,
            &self.device,
        )?)
    }

    /// A buffer of `capacity` positions holding the first `len` positions of `old`.
    fn grow(&self, old: &Tensor, len: usize, capacity: usize) -> Result<Tensor> {
        let new = self.empty(capacity)?;
        if len > 0 {
            new.slice_set(&old.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
        }
        Ok(new)
    }
}
