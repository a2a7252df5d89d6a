//! The response cache (Triton's `local` cache): one per server, shared by every model whose
//! config has `response_cache { enable: true }`, holding whole responses by a 128-bit hash
//! of what decides them, least recently used evicted first within a byte budget.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use metrics::{gauge, Gauge};
use parking_lot::Mutex;

use crate::sink::{CacheFill, RequestContext};
use crate::{InferRequest, InferResponse, Tensor};

/// Request parameters that change how a request is scheduled or encoded, never what the
/// model computes, so two requests differing only in them share a cache entry.
const SCHEDULING_PARAMETERS: &[&str] = &["priority", "timeout", "binary_data_output"];

/// Fixed cost charged per entry and per tensor besides the tensor bytes (names, shapes,
/// the index), so many tiny responses cannot exceed the budget unseen.
const ENTRY_OVERHEAD: usize = 128;

/// Server-wide response cache settings (`--cache-config local,size=BYTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Most bytes the cached responses may take.
    pub size: usize,
}

impl CacheSettings {
    /// Parses Triton's `--cache-config` values, each `local,KEY=VALUE` (several may be
    /// given, as in Triton). `local` is the only implementation and `size` the only key.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Option<Self>, String> {
        let mut size = None;
        for value in values {
            let value = value.as_ref();
            let (implementation, setting) = value.split_once(',').ok_or_else(|| {
                format!("--cache-config '{value}': expected <cache>,<key>=<value>, such as local,size=1048576")
            })?;
            if implementation != "local" {
                return Err(format!(
                    "--cache-config '{value}': unknown cache '{implementation}'; this server has the 'local' cache"
                ));
            }
            match setting.split_once('=') {
                Some(("size", bytes)) => {
                    let bytes = bytes.trim().parse::<usize>().map_err(|_| {
                        format!("--cache-config '{value}': size '{bytes}' is not a number of bytes")
                    })?;
                    size = Some(bytes);
                }
                Some((key, _)) => {
                    return Err(format!(
                        "--cache-config '{value}': unknown key '{key}' of the local cache (it has 'size')"
                    ))
                }
                None => {
                    return Err(format!(
                        "--cache-config '{value}': expected <key>=<value> after 'local,'"
                    ))
                }
            }
        }
        match size {
            None if values.is_empty() => Ok(None),
            None => Err("--cache-config: the local cache needs size=BYTES".into()),
            Some(0) => Ok(None),
            Some(size) => Ok(Some(Self { size })),
        }
    }
}

/// What identifies a cached response: a 128-bit hash of the model, its version, the
/// inputs (names, types, shapes, bytes), the requested outputs and the request
/// parameters that can change the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey(u64, u64);

struct Entry {
    response: Arc<InferResponse>,
    bytes: usize,
    used: u64,
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<CacheKey, Entry>,
    /// Last use -> key, oldest first.
    by_use: BTreeMap<u64, CacheKey>,
    bytes: usize,
    clock: u64,
    /// Entries evicted since the start.
    evictions: u64,
}

struct CacheMetrics {
    entries: Gauge,
    evictions: Gauge,
    utilization: Gauge,
}

/// The server's response cache.
pub(crate) struct ResponseCache {
    size: usize,
    seeds: [RandomState; 2],
    entries: Mutex<Entries>,
    metrics: CacheMetrics,
}

impl ResponseCache {
    pub(crate) fn new(settings: CacheSettings) -> Self {
        Self {
            size: settings.size,
            seeds: [RandomState::new(), RandomState::new()],
            entries: Mutex::new(Entries::default()),
            metrics: CacheMetrics {
                entries: gauge!("nv_cache_num_entries"),
                evictions: gauge!("nv_cache_num_evictions"),
                utilization: gauge!("nv_cache_util"),
            },
        }
    }

    /// The key of `request` to `version` of its model.
    pub(crate) fn key(&self, model: &str, version: i64, request: &InferRequest) -> CacheKey {
        let [a, b] = &self.seeds;
        let (mut ha, mut hb) = (a.build_hasher(), b.build_hasher());
        for h in [&mut ha, &mut hb] {
            hash_request(h, model, version, request);
        }
        CacheKey(ha.finish(), hb.finish())
    }

    /// Looks a request up: a hit is counted and answered with the request's own id; a miss
    /// is counted and marks the request to fill the cache with its response.
    pub(crate) fn lookup(
        self: &Arc<Self>,
        request: &InferRequest,
        ctx: &mut RequestContext,
    ) -> Option<InferResponse> {
        let started = Instant::now();
        let key = self.key(&ctx.model_name, ctx.model_version, request);
        if let Some(cached) = self.get(&key) {
            ctx.stats.record_cache_hit(started.elapsed());
            return Some(InferResponse {
                id: ctx.id.clone(),
                ..(*cached).clone()
            });
        }
        ctx.stats.record_cache_miss(1, started.elapsed());
        ctx.cache_fill = Some(CacheFill {
            cache: self.clone(),
            key,
        });
        None
    }

    /// The cached response for `key`, marked as just used.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Arc<InferResponse>> {
        let mut guard = self.entries.lock();
        let entries = &mut *guard;
        entries.clock += 1;
        let now = entries.clock;
        let entry = entries.by_key.get_mut(key)?;
        entries.by_use.remove(&entry.used);
        entries.by_use.insert(now, *key);
        entry.used = now;
        Some(entry.response.clone())
    }

    /// Keeps a copy of `response` under `key`, evicting the least recently used entries
    /// to make room; a response larger than the whole cache is not kept.
    pub(crate) fn insert(&self, key: CacheKey, response: &InferResponse) {
        let bytes = ENTRY_OVERHEAD
            + response
                .outputs
                .iter()
                .map(|t| ENTRY_OVERHEAD + t.data.len())
                .sum::<usize>();
        if bytes > self.size {
            return;
        }
        // The outputs may be slices of a whole batch's buffer: copy them, so the cache
        // holds (and counts) only its own bytes.
        let response = Arc::new(InferResponse {
            model_name: response.model_name.clone(),
            model_version: response.model_version,
            id: String::new(),
            outputs: response
                .outputs
                .iter()
                .map(|t| {
                    Tensor::new(
                        t.name.clone(),
                        t.dtype,
                        t.shape.clone(),
                        Bytes::copy_from_slice(&t.data),
                    )
                })
                .collect(),
            parameters: response.parameters.clone(),
            is_final: response.is_final,
        });
        let mut evicted = 0;
        let (count, used, evictions) = {
            let mut guard = self.entries.lock();
            let entries = &mut *guard;
            if let Some(old) = entries.by_key.remove(&key) {
                entries.by_use.remove(&old.used);
                entries.bytes -= old.bytes;
            }
            while entries.bytes + bytes > self.size {
                let Some((_, oldest)) = entries.by_use.pop_first() else {
                    break;
                };
                if let Some(old) = entries.by_key.remove(&oldest) {
                    entries.bytes -= old.bytes;
                    evicted += 1;
                }
            }
            entries.clock += 1;
            let used = entries.clock;
            entries.by_use.insert(used, key);
            entries.by_key.insert(
                key,
                Entry {
                    response,
                    bytes,
                    used,
                },
            );
            entries.bytes += bytes;
            entries.evictions += evicted;
            (entries.by_key.len(), entries.bytes, entries.evictions)
        };
        if evicted > 0 {
            self.metrics.evictions.set(evictions as f64);
        }
        self.metrics.entries.set(count as f64);
        self.metrics.utilization.set(used as f64 / self.size as f64);
    }

    /// Entries and bytes held now.
    #[cfg(test)]
    fn usage(&self) -> (usize, usize) {
        let entries = self.entries.lock();
        (entries.by_key.len(), entries.bytes)
    }
}

fn hash_request(h: &mut impl Hasher, model: &str, version: i64, request: &InferRequest) {
    model.hash(h);
    version.hash(h);
    // Inputs in name order: the order a client lists them in does not change the result.
    let mut inputs: Vec<&Tensor> = request.inputs.iter().collect();
    inputs.sort_by(|a, b| a.name.cmp(&b.name));
    inputs.len().hash(h);
    for t in inputs {
        t.name.hash(h);
        t.dtype.as_str().hash(h);
        t.shape.hash(h);
        t.data.len().hash(h);
        h.write(&t.data);
    }
    let mut outputs: Vec<&str> = request.outputs.iter().map(|o| o.name.as_str()).collect();
    outputs.sort_unstable();
    outputs.hash(h);
    for (name, value) in &request.parameters {
        if !SCHEDULING_PARAMETERS.contains(&name.as_str()) {
            name.hash(h);
            format!("{value:?}").hash(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataType, ParamValue, RequestedOutput};

    fn request(values: &[f32]) -> InferRequest {
        InferRequest::new(
            "m",
            vec![Tensor::from_vec(
                "IN",
                DataType::Fp32,
                vec![values.len() as i64],
                values.to_vec(),
            )],
        )
    }

    fn response(bytes: usize) -> InferResponse {
        InferResponse {
            outputs: vec![Tensor::new(
                "OUT",
                DataType::Uint8,
                vec![bytes as i64],
                Bytes::from(vec![7u8; bytes]),
            )],
            is_final: true,
            ..Default::default()
        }
    }

    fn cache(size: usize) -> ResponseCache {
        ResponseCache::new(CacheSettings { size })
    }

    #[test]
    fn settings_read_triton_flags_and_name_what_is_wrong() {
        assert_eq!(
            CacheSettings::parse(&["local,size=1048576"]),
            Ok(Some(CacheSettings { size: 1_048_576 }))
        );
        assert_eq!(CacheSettings::parse::<&str>(&[]), Ok(None));
        assert_eq!(CacheSettings::parse(&["local,size=0"]), Ok(None));
        for (value, says) in [
            ("redis,size=1", "unknown cache 'redis'"),
            ("local,bytes=1", "unknown key 'bytes'"),
            ("local,size=big", "size 'big' is not a number"),
            ("local", "expected <cache>,<key>=<value>"),
            ("local,size", "expected <key>=<value>"),
        ] {
            let err = CacheSettings::parse(&[value]).unwrap_err();
            assert!(err.contains(says), "{value}: {err}");
        }
    }

    #[test]
    fn the_key_covers_inputs_outputs_and_result_parameters_only() {
        let c = cache(1 << 20);
        let base = c.key("m", 1, &request(&[1.0, 2.0]));
        assert_eq!(base, c.key("m", 1, &request(&[1.0, 2.0])));
        assert_ne!(base, c.key("m", 1, &request(&[1.0, 2.5])));
        assert_ne!(base, c.key("m", 2, &request(&[1.0, 2.0])));
        assert_ne!(base, c.key("other", 1, &request(&[1.0, 2.0])));
        let mut reshaped = request(&[1.0, 2.0]);
        reshaped.inputs[0].shape = vec![1, 2];
        assert_ne!(base, c.key("m", 1, &reshaped));
        let mut one_output = request(&[1.0, 2.0]);
        one_output.outputs.push(RequestedOutput {
            name: "OUT".into(),
            parameters: Default::default(),
        });
        assert_ne!(base, c.key("m", 1, &one_output));
        let mut scheduled = request(&[1.0, 2.0]);
        scheduled
            .parameters
            .insert("priority".into(), ParamValue::Uint(1));
        scheduled
            .parameters
            .insert("timeout".into(), ParamValue::Uint(5));
        scheduled.id = "another id".into();
        assert_eq!(base, c.key("m", 1, &scheduled));
        let mut custom = request(&[1.0, 2.0]);
        custom
            .parameters
            .insert("temperature".into(), ParamValue::Double(0.5));
        assert_ne!(base, c.key("m", 1, &custom));
    }

    #[test]
    fn least_recently_used_entries_leave_first_within_the_size() {
        let entry = response(1000);
        let one = ENTRY_OVERHEAD * 2 + 1000;
        let c = cache(3 * one);
        let keys: Vec<CacheKey> = (0..4)
            .map(|i| c.key("m", 1, &request(&[i as f32])))
            .collect();
        for k in &keys[..3] {
            c.insert(*k, &entry);
        }
        assert_eq!(c.usage(), (3, 3 * one));
        // Using the first makes the second the oldest.
        assert!(c.get(&keys[0]).is_some());
        c.insert(keys[3], &entry);
        assert_eq!(c.usage(), (3, 3 * one));
        assert!(c.get(&keys[1]).is_none(), "evicted");
        for k in [keys[0], keys[2], keys[3]] {
            assert_eq!(c.get(&k).unwrap().outputs[0].data.len(), 1000);
        }
        // Too big for the whole cache: not kept, nothing evicted.
        c.insert(keys[1], &response(4 * one));
        assert_eq!(c.usage(), (3, 3 * one));
        // The same key again replaces its entry.
        c.insert(keys[0], &response(10));
        assert_eq!(c.usage(), (3, 2 * one + 2 * ENTRY_OVERHEAD + 10));
    }

    #[test]
    fn a_cached_response_owns_its_bytes() {
        let c = cache(1 << 20);
        let batch = Bytes::from(vec![1u8; 4096]);
        let mut slice = response(0);
        slice.outputs[0].data = batch.slice(0..16);
        let key = c.key("m", 1, &request(&[1.0]));
        c.insert(key, &slice);
        let cached = c.get(&key).unwrap();
        assert_eq!(cached.outputs[0].data, batch.slice(0..16));
        assert_ne!(
            cached.outputs[0].data.as_ptr(),
            batch.as_ptr(),
            "copied out of the batch buffer"
        );
    }
}
