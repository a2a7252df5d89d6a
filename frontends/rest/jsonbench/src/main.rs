//! Measures the three JSON libraries nereid-rest could use on the work it does most:
//! reading a KServe infer request whose `data` is a long FP32 array straight into a
//! little-endian byte buffer (serde visitor, no heap allocation per element), and writing
//! an FP32 output from tensor bytes. Run: `cargo run --release` (optionally with
//! `RUSTFLAGS="-C target-cpu=native"`, which sonic-rs needs for its SIMD paths).

use std::fmt;
use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Deserializer, Serialize, Serializer};

/// Flattens nested numeric arrays into `out` as f32 little-endian.
struct Elems<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Elems<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Elems<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("numbers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Elems(&mut *self.0))?.is_some() {}
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.extend_from_slice(&(v as f32).to_le_bytes());
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.visit_f64(v as f64)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.visit_f64(v as f64)
    }
}

/// `{"inputs":[{"name":..,"data":[..],..}]}` -> the bytes of the first input's data.
struct Request;

impl<'de> Visitor<'de> for Request {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("request")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::new();
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if k == "inputs" {
                map.next_value_seed(Inputs(&mut out))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

struct Inputs<'a>(&'a mut Vec<u8>);
impl<'de> DeserializeSeed<'de> for Inputs<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}
impl<'de> Visitor<'de> for Inputs<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("inputs")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Input(&mut *self.0))?.is_some() {}
        Ok(())
    }
}
struct Input<'a>(&'a mut Vec<u8>);
impl<'de> DeserializeSeed<'de> for Input<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}
impl<'de> Visitor<'de> for Input<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("input")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if k == "data" {
                self.0.reserve(4 << 20);
                map.next_value_seed(Elems(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct ReqSeed;
impl<'de> DeserializeSeed<'de> for ReqSeed {
    type Value = Vec<u8>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_map(Request)
    }
}

/// Writes f32 elements straight from little-endian bytes.
struct Out<'a>(&'a [u8]);
impl Serialize for Out<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("out", 4)?;
        st.serialize_field("name", "OUTPUT0")?;
        st.serialize_field("datatype", "FP32")?;
        st.serialize_field("shape", &[1, self.0.len() / 4])?;
        st.serialize_field("data", &Data(self.0))?;
        st.end()
    }
}
struct Data<'a>(&'a [u8]);
impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len() / 4))?;
        for c in self.0.chunks_exact(4) {
            seq.serialize_element(&f32::from_le_bytes(c.try_into().unwrap()))?;
        }
        seq.end()
    }
}

fn time<T>(label: &str, bytes: usize, iters: u32, mut f: impl FnMut() -> T) {
    for _ in 0..2 {
        black_box(f());
    }
    let mut best = Duration::MAX;
    for _ in 0..iters {
        let t = Instant::now();
        black_box(f());
        best = best.min(t.elapsed());
    }
    let mbps = bytes as f64 / best.as_secs_f64() / 1e6;
    println!(
        "{label:<44} {:>10.1} us  {mbps:>8.0} MB/s",
        best.as_secs_f64() * 1e6
    );
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 20);
    // Values as numpy's tolist() + json.dumps writes them: shortest round-trip f32 digits
    // printed through f64, so many carry 8-17 significant digits.
    let mut x = 0x1234_5678u32;
    let values: Vec<f32> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect();
    let data: Vec<String> = values.iter().map(|v| format!("{}", *v as f64)).collect();
    let body = format!(
        r#"{{"id":"1","inputs":[{{"name":"INPUT0","shape":[1,{n}],"datatype":"FP32","data":[{}]}}],"outputs":[{{"name":"OUTPUT0"}}]}}"#,
        data.join(",")
    );
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    println!("{n} FP32 elements, request body {} bytes", body.len());

    let check = |out: Vec<u8>| assert_eq!(out.len(), n * 4);
    check(
        serde_json::Deserializer::from_slice(body.as_bytes())
            .deserialize_map(Request)
            .unwrap(),
    );
    check(
        sonic_rs::Deserializer::from_slice(body.as_bytes())
            .deserialize_map(Request)
            .unwrap(),
    );
    let mut scratch = body.clone().into_bytes();
    check(
        ReqSeed
            .deserialize(&mut simd_json::Deserializer::from_slice(&mut scratch).unwrap())
            .unwrap(),
    );

    let iters = if n < 10_000 { 20_000 } else { 15 };
    time(
        "parse serde_json (visitor -> LE bytes)",
        body.len(),
        iters,
        || {
            serde_json::Deserializer::from_slice(body.as_bytes())
                .deserialize_map(Request)
                .unwrap()
        },
    );
    time("parse sonic-rs (same visitor)", body.len(), iters, || {
        sonic_rs::Deserializer::from_slice(body.as_bytes())
            .deserialize_map(Request)
            .unwrap()
    });
    time(
        "parse simd-json (tape, then visitor; +copy)",
        body.len(),
        iters,
        || {
            // simd-json parses in place, so a real server would need a mutable copy too.
            let mut buf = body.clone().into_bytes();
            ReqSeed
                .deserialize(&mut simd_json::Deserializer::from_slice(&mut buf).unwrap())
                .unwrap()
        },
    );
    time(
        "parse serde_json -> Value (baseline)",
        body.len(),
        iters,
        || serde_json::from_slice::<serde_json::Value>(body.as_bytes()).unwrap(),
    );

    let out_len = serde_json::to_vec(&Out(&raw)).unwrap().len();
    time("write serde_json (bytes -> ryu)", out_len, iters, || {
        let mut v = Vec::with_capacity(out_len);
        serde_json::to_writer(&mut v, &Out(&raw)).unwrap();
        v
    });
    time("write sonic-rs", out_len, iters, || {
        let mut v = Vec::with_capacity(out_len);
        sonic_rs::to_writer(&mut v, &Out(&raw)).unwrap();
        v
    });
    time("write simd-json", out_len, iters, || {
        let mut v = Vec::with_capacity(out_len);
        simd_json::to_writer(&mut v, &Out(&raw)).unwrap();
        v
    });
}
