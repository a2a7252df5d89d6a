//! Tensor `data` in JSON, both ways, without a heap allocation per element: a serde
//! visitor writes each element of a flat or nested array straight into the little-endian
//! buffer that becomes `Tensor::data`, and a serializer writes output elements straight
//! from a tensor's bytes.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use half::{bf16, f16};
use nereid_engine::tensor::element_count;
use nereid_engine::{DataType, EngineError, Tensor};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::{self, SerializeSeq};
use serde::{Deserializer, Serialize, Serializer};

/// Deepest nesting of `data` accepted for any shape: far beyond any real tensor rank, far
/// below serde_json's recursion limit.
pub const MAX_DATA_DEPTH: usize = 32;

/// Collects the elements of one input's `data` as raw little-endian bytes.
pub(crate) struct DataSink<'a> {
    name: &'a str,
    dtype: DataType,
    shape: &'a [i64],
    expected: usize,
    count: usize,
    max_depth: usize,
    buf: Vec<u8>,
}

impl<'a> DataSink<'a> {
    /// A sink for `shape` elements of `dtype`, whose JSON text is at most `text_len` bytes.
    /// A shape that text that short cannot fill is refused here, before a buffer of its
    /// size is allocated: a request declaring `[1000000000000]` costs nothing.
    pub(crate) fn new(
        name: &'a str,
        dtype: DataType,
        shape: &'a [i64],
        text_len: usize,
    ) -> Result<Self, String> {
        let expected = element_count(shape).map_err(|e| format!("input '{name}': {e}"))?;
        // n elements need at least n characters and n - 1 commas.
        if expected > text_len / 2 + 1 {
            return Err(format!(
                "input '{name}': shape {shape:?} declares {expected} elements, more than the \
                 {text_len} bytes of JSON can hold"
            ));
        }
        let capacity = match dtype.element_size() {
            Some(size) => expected * size,
            None => expected * 8, // a guess for strings; the buffer grows if needed
        };
        Ok(Self {
            name,
            dtype,
            shape,
            expected,
            count: 0,
            // Any consistent nesting has at most one level per dimension; rank 0 allows [x].
            max_depth: shape.len().clamp(1, MAX_DATA_DEPTH),
            buf: Vec::with_capacity(capacity),
        })
    }

    /// Parses `data` from `deserializer` into the sink.
    pub(crate) fn read<'de, D: Deserializer<'de>>(
        &mut self,
        deserializer: D,
    ) -> Result<(), D::Error> {
        Level {
            sink: self,
            depth: 0,
        }
        .deserialize(deserializer)
    }

    /// The bytes, once exactly the shape's element count arrived.
    pub(crate) fn finish(self) -> Result<Bytes, String> {
        if self.count != self.expected {
            return Err(format!(
                "input '{}': shape {:?} needs {} elements but 'data' has {}",
                self.name, self.shape, self.expected, self.count
            ));
        }
        Ok(Bytes::from(self.buf))
    }

    fn next(&mut self) -> Result<(), String> {
        if self.count == self.expected {
            return Err(format!(
                "input '{}': 'data' has more than the {} elements of shape {:?}",
                self.name, self.expected, self.shape
            ));
        }
        self.count += 1;
        Ok(())
    }

    fn mismatch(&self, what: impl fmt::Display) -> String {
        format!(
            "input '{}': element {} is {what}, which is not a {} value",
            self.name, self.count, self.dtype
        )
    }

    fn push_int(&mut self, v: i128) -> Result<(), String> {
        self.next()?;
        macro_rules! int {
            ($t:ty) => {
                match <$t>::try_from(v) {
                    Ok(x) => self.buf.extend_from_slice(&x.to_le_bytes()),
                    Err(_) => return Err(self.mismatch(v)),
                }
            };
        }
        match self.dtype {
            DataType::Bool => match v {
                0 | 1 => self.buf.push(v as u8),
                _ => return Err(self.mismatch(v)),
            },
            DataType::Uint8 => int!(u8),
            DataType::Uint16 => int!(u16),
            DataType::Uint32 => int!(u32),
            DataType::Uint64 => int!(u64),
            DataType::Int8 => int!(i8),
            DataType::Int16 => int!(i16),
            DataType::Int32 => int!(i32),
            DataType::Int64 => int!(i64),
            DataType::Fp16 => self
                .buf
                .extend_from_slice(&f16::from_f64(v as f64).to_le_bytes()),
            DataType::Bf16 => self
                .buf
                .extend_from_slice(&bf16::from_f64(v as f64).to_le_bytes()),
            DataType::Fp32 => self.buf.extend_from_slice(&(v as f32).to_le_bytes()),
            DataType::Fp64 => self.buf.extend_from_slice(&(v as f64).to_le_bytes()),
            DataType::Bytes => return Err(self.mismatch(format!("the number {v}"))),
        }
        Ok(())
    }

    fn push_float(&mut self, v: f64) -> Result<(), String> {
        match self.dtype {
            DataType::Fp16 => self.buf.extend_from_slice(&f16::from_f64(v).to_le_bytes()),
            DataType::Bf16 => self.buf.extend_from_slice(&bf16::from_f64(v).to_le_bytes()),
            DataType::Fp32 => self.buf.extend_from_slice(&(v as f32).to_le_bytes()),
            DataType::Fp64 => self.buf.extend_from_slice(&v.to_le_bytes()),
            // An integral float (3.0) is accepted for integer types; 3.5 is not.
            _ if v.fract() == 0.0 && v.abs() < 1e19 => return self.push_int(v as i128),
            _ => {
                self.next()?;
                return Err(self.mismatch(v));
            }
        }
        self.next()
    }

    fn push_bool(&mut self, v: bool) -> Result<(), String> {
        self.next()?;
        match self.dtype {
            DataType::Bool => self.buf.push(v as u8),
            _ => return Err(self.mismatch(v)),
        }
        Ok(())
    }

    fn push_str(&mut self, v: &str) -> Result<(), String> {
        self.next()?;
        if self.dtype != DataType::Bytes {
            return Err(self.mismatch(format!("the string {v:?}")));
        }
        let len = u32::try_from(v.len()).map_err(|_| self.mismatch("a string over 4 GiB"))?;
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(v.as_bytes());
        Ok(())
    }
}

/// One level of (possibly nested) `data`.
struct Level<'s, 'a> {
    sink: &'s mut DataSink<'a>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Level<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let kind = if self.sink.dtype == DataType::Bytes {
            "strings"
        } else {
            "numbers"
        };
        write!(
            f,
            "{kind} for input '{}' ({}), in a flat or nested array",
            self.sink.name, self.sink.dtype
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= self.sink.max_depth {
            return Err(de::Error::custom(format!(
                "input '{}': 'data' is nested deeper than its shape {:?} allows",
                self.sink.name, self.sink.shape
            )));
        }
        let depth = self.depth + 1;
        while seq
            .next_element_seed(Level {
                sink: &mut *self.sink,
                depth,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.sink.push_bool(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.sink.push_int(v.into()).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.sink.push_int(v.into()).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.sink.push_float(v).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.sink.push_str(v).map_err(E::custom)
    }
}

/// A tensor from a JSON value as the generate extension writes inputs: a scalar is shape
/// `[1]`, an array has the shape of its nesting (read along first elements); `batched`
/// puts a batch dimension of 1 in front. `text_len` is the length of the JSON text the
/// value came from, which bounds the element count a shape may claim.
pub fn tensor_from_json(
    name: &str,
    dtype: DataType,
    batched: bool,
    value: &serde_json::Value,
    text_len: usize,
) -> Result<Tensor, EngineError> {
    let mut shape = Vec::with_capacity(4);
    if batched {
        shape.push(1);
    }
    match value {
        serde_json::Value::Array(_) => {
            let mut v = value;
            while let serde_json::Value::Array(items) = v {
                shape.push(items.len() as i64);
                match items.first() {
                    Some(first) => v = first,
                    None => break,
                }
            }
        }
        _ => shape.push(1),
    }
    let mut sink = DataSink::new(name, dtype, &shape, text_len).map_err(EngineError::invalid)?;
    sink.read(value)
        .map_err(|e| EngineError::invalid(e.to_string()))?;
    let data = sink.finish().map_err(EngineError::invalid)?;
    Ok(Tensor::new(name, dtype, shape, data))
}

/// Writes a tensor's elements as JSON straight from its bytes: a flat array, or the bare
/// element when `scalar` is set and there is exactly one (the generate extension's form).
pub(crate) struct DataJson<'a> {
    /// The tensor to write.
    pub tensor: &'a Tensor,
    /// Write a single element without its array.
    pub scalar: bool,
}

macro_rules! each_fixed {
    ($dtype:expr, $data:expr, $emit:ident) => {
        match $dtype {
            DataType::Bool => $emit!(1, |c: &[u8]| c[0] != 0),
            DataType::Uint8 => $emit!(1, |c: &[u8]| c[0]),
            DataType::Int8 => $emit!(1, |c: &[u8]| c[0] as i8),
            DataType::Uint16 => $emit!(2, |c: &[u8]| u16::from_le_bytes([c[0], c[1]])),
            DataType::Int16 => $emit!(2, |c: &[u8]| i16::from_le_bytes([c[0], c[1]])),
            DataType::Fp16 => $emit!(2, |c: &[u8]| f16::from_le_bytes([c[0], c[1]]).to_f32()),
            DataType::Bf16 => $emit!(2, |c: &[u8]| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
            DataType::Uint32 => $emit!(4, |c: &[u8]| u32::from_le_bytes(c.try_into().unwrap())),
            DataType::Int32 => $emit!(4, |c: &[u8]| i32::from_le_bytes(c.try_into().unwrap())),
            DataType::Fp32 => $emit!(4, |c: &[u8]| f32::from_le_bytes(c.try_into().unwrap())),
            DataType::Uint64 => $emit!(8, |c: &[u8]| u64::from_le_bytes(c.try_into().unwrap())),
            DataType::Int64 => $emit!(8, |c: &[u8]| i64::from_le_bytes(c.try_into().unwrap())),
            DataType::Fp64 => $emit!(8, |c: &[u8]| f64::from_le_bytes(c.try_into().unwrap())),
            DataType::Bytes => unreachable!("BYTES is written element by element"),
        }
    };
}

impl Serialize for DataJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let t = self.tensor;
        let data: &[u8] = &t.data;
        if t.dtype == DataType::Bytes {
            let mut items = BytesElements { data, pos: 0 };
            if self.scalar && t.shape.iter().all(|&d| d == 1) {
                if let Some(item) = items.next() {
                    return serializer.serialize_str(&lossy(item.map_err(ser::Error::custom)?));
                }
            }
            let mut seq = serializer.serialize_seq(None)?;
            for item in items {
                seq.serialize_element(&*lossy(item.map_err(ser::Error::custom)?))?;
            }
            return seq.end();
        }
        let size = t.dtype.element_size().expect("fixed-size dtype");
        if self.scalar && data.len() == size {
            macro_rules! one {
                ($n:literal, $read:expr) => {
                    return ($read)(data).serialize(serializer)
                };
            }
            each_fixed!(t.dtype, data, one);
        }
        let mut seq = serializer.serialize_seq(Some(data.len() / size))?;
        macro_rules! all {
            ($n:literal, $read:expr) => {
                for c in data.chunks_exact($n) {
                    seq.serialize_element(&($read)(c))?;
                }
            };
        }
        each_fixed!(t.dtype, data, all);
        seq.end()
    }
}

/// A BYTES element as text: borrowed when it is UTF-8, which it nearly always is.
fn lossy(item: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(item)
}

/// The elements of raw BYTES data, each borrowed.
struct BytesElements<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for BytesElements<'a> {
    type Item = Result<&'a [u8], &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        let Some(len) = self.data.get(self.pos..self.pos + 4) else {
            self.pos = self.data.len();
            return Some(Err("BYTES output is truncated inside a length prefix"));
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let start = self.pos + 4;
        match self.data.get(start..start + len) {
            Some(item) => {
                self.pos = start + len;
                Some(Ok(item))
            }
            None => {
                self.pos = self.data.len();
                Some(Err("BYTES output is truncated inside an element"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(dtype: DataType, shape: &[i64], text: &str) -> Result<Bytes, String> {
        let mut sink = DataSink::new("X", dtype, shape, text.len())?;
        let mut de = serde_json::Deserializer::from_str(text);
        sink.read(&mut de).map_err(|e| e.to_string())?;
        sink.finish()
    }

    fn write(t: &Tensor, scalar: bool) -> String {
        serde_json::to_string(&DataJson { tensor: t, scalar }).unwrap()
    }

    #[test]
    fn flat_and_nested_arrays_fill_little_endian_bytes() {
        let flat = parse(DataType::Int32, &[2, 2], "[1, -2, 3, 4]").unwrap();
        let nested = parse(DataType::Int32, &[2, 2], "[[1, -2], [3, 4]]").unwrap();
        assert_eq!(flat, nested);
        assert_eq!(&flat[..8], &[1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff]);
        let f = parse(DataType::Fp32, &[3], "[1.5, 2, -0.25]").unwrap();
        let t = Tensor::new("X", DataType::Fp32, vec![3], f);
        assert_eq!(t.to_vec::<f32>().unwrap(), vec![1.5, 2.0, -0.25]);
        assert_eq!(write(&t, false), "[1.5,2.0,-0.25]");
        let b = parse(DataType::Bool, &[2], "[true, false]").unwrap();
        assert_eq!(&b[..], &[1, 0]);
    }

    #[test]
    fn every_fixed_dtype_round_trips() {
        for dtype in DataType::ALL.into_iter().filter(|d| *d != DataType::Bytes) {
            let text = if dtype == DataType::Bool {
                "[true,false,true]"
            } else {
                "[1,0,2]"
            };
            let bytes = parse(dtype, &[3], text).unwrap();
            assert_eq!(bytes.len(), 3 * dtype.element_size().unwrap(), "{dtype}");
            let out = write(&Tensor::new("X", dtype, vec![3], bytes), false);
            let expect = match dtype {
                DataType::Bool => "[true,false,true]",
                DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64 => {
                    "[1.0,0.0,2.0]"
                }
                _ => "[1,0,2]",
            };
            assert_eq!(out, expect, "{dtype}");
        }
    }

    #[test]
    fn strings_become_length_prefixed_bytes() {
        let b = parse(DataType::Bytes, &[2], r#"["hi", "\u00e9\n"]"#).unwrap();
        let t = Tensor::new("X", DataType::Bytes, vec![2], b.clone());
        assert_eq!(
            t.string_elements().unwrap(),
            vec![Bytes::from("hi"), Bytes::from("é\n")]
        );
        assert_eq!(write(&t, false), r#"["hi","é\n"]"#);
        let one = Tensor::from_strings("X", vec![1], ["only"]);
        assert_eq!(write(&one, true), r#""only""#);
        assert_eq!(write(&one, false), r#"["only"]"#);
    }

    #[test]
    fn bad_data_names_the_input_and_the_problem() {
        let e = parse(DataType::Int32, &[3], "[1, 2]").unwrap_err();
        assert!(e.contains("needs 3 elements but 'data' has 2"), "{e}");
        let e = parse(DataType::Int32, &[1], "[1, 2]").unwrap_err();
        assert!(e.contains("more than the 1 elements"), "{e}");
        let e = parse(DataType::Int8, &[1], "[300]").unwrap_err();
        assert!(e.contains("element 1 is 300") && e.contains("INT8"), "{e}");
        let e = parse(DataType::Int32, &[1], "[1.5]").unwrap_err();
        assert!(e.contains("1.5"), "{e}");
        let e = parse(DataType::Fp32, &[1], r#"["a"]"#).unwrap_err();
        assert!(e.contains("string") && e.contains("FP32"), "{e}");
        let e = parse(DataType::Int32, &[1], "[[[1]]]").unwrap_err();
        assert!(e.contains("nested deeper"), "{e}");
        let e = parse(DataType::Int32, &[1_000_000_000_000], "[1]").unwrap_err();
        assert!(e.contains("declares 1000000000000 elements"), "{e}");
        let e = parse(DataType::Int32, &[-1], "[1]").unwrap_err();
        assert!(e.contains("negative"), "{e}");
        let e = parse(DataType::Int32, &[1], "[null]").unwrap_err();
        assert!(e.contains("input 'X'"), "{e}");
    }
}
