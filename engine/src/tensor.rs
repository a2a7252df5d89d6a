//! Typed tensors holding little-endian, row-major bytes, shared without copies.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{DataType, EngineError, Result};

#[cfg(target_endian = "big")]
compile_error!(
    "Nereid keeps tensor bytes in the wire's little-endian order and needs a little-endian host"
);

/// A named tensor. `data` is the raw KServe form: little-endian row-major elements, or for
/// BYTES each element as a 4-byte little-endian length followed by its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Tensor name as in the model config.
    pub name: String,
    /// Element type.
    pub dtype: DataType,
    /// Shape, including the batch dimension for batching models.
    pub shape: Vec<i64>,
    /// Raw bytes; cloning shares them.
    pub data: Bytes,
}

impl Tensor {
    /// A tensor over existing raw bytes (no copy).
    pub fn new(name: impl Into<String>, dtype: DataType, shape: Vec<i64>, data: Bytes) -> Self {
        Self {
            name: name.into(),
            dtype,
            shape,
            data,
        }
    }

    /// A tensor of fixed-size elements from a vector, without copying the elements: the
    /// vector itself becomes the owner of the shared bytes.
    pub fn from_vec<T: bytemuck::Pod>(
        name: impl Into<String>,
        dtype: DataType,
        shape: Vec<i64>,
        values: Vec<T>,
    ) -> Self {
        debug_assert_eq!(dtype.element_size(), Some(std::mem::size_of::<T>()));
        // A byte vector is handed over as is; wider elements cannot be (a `Vec<u8>` must be
        // freed with the alignment of u8), so the typed vector stays the allocation's owner.
        let data = match bytemuck::try_cast_vec::<T, u8>(values) {
            Ok(bytes) => Bytes::from(bytes),
            Err((_, values)) => Bytes::from_owner(PodVec(values)),
        };
        Self::new(name, dtype, shape, data)
    }

    /// A BYTES tensor from byte strings.
    pub fn from_strings<I, S>(name: impl Into<String>, shape: Vec<i64>, items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        Self::new(name, DataType::Bytes, shape, encode_bytes_elements(items))
    }

    /// Number of elements the shape describes.
    pub fn element_count(&self) -> Result<usize> {
        element_count(&self.shape)
    }

    /// The elements copied out as `T` (works whatever the alignment of the bytes).
    pub fn to_vec<T: bytemuck::Pod>(&self) -> Result<Vec<T>> {
        let size = std::mem::size_of::<T>();
        if self.dtype.element_size() != Some(size) || !self.data.len().is_multiple_of(size) {
            return Err(EngineError::internal(format!(
                "tensor '{}' of {} cannot be read as {}-byte elements",
                self.name, self.dtype, size
            )));
        }
        Ok(bytemuck::pod_collect_to_vec(&self.data))
    }

    /// The BYTES elements, each sharing this tensor's buffer.
    pub fn string_elements(&self) -> Result<Vec<Bytes>> {
        decode_bytes_elements(&self.data)
            .map_err(|e| EngineError::invalid(format!("input '{}': {e}", self.name)))
    }

    /// Checks that the byte length agrees with shape and dtype.
    pub fn check_byte_size(&self) -> Result<()> {
        let count = self
            .element_count()
            .map_err(|e| EngineError::invalid(format!("tensor '{}': {e}", self.name)))?;
        match self.dtype.element_size() {
            Some(size) => {
                let expected = count.checked_mul(size).ok_or_else(|| {
                    EngineError::invalid(format!("tensor '{}': shape is too large", self.name))
                })?;
                if self.data.len() != expected {
                    return Err(EngineError::invalid(format!(
                        "tensor '{}': shape {:?} of {} needs {expected} bytes, got {}",
                        self.name,
                        self.shape,
                        self.dtype,
                        self.data.len()
                    )));
                }
            }
            None => {
                let found = count_bytes_elements(&self.data)
                    .map_err(|e| EngineError::invalid(format!("tensor '{}': {e}", self.name)))?;
                if found != count {
                    return Err(EngineError::invalid(format!(
                        "tensor '{}': shape {:?} has {count} elements, but the BYTES data holds {found}",
                        self.name, self.shape
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A typed vector seen as its bytes, so it can own a [`Bytes`] without a copy.
struct PodVec<T>(Vec<T>);

// SAFETY: a `PodVec` is only ever read as plain bytes (`as_ref`) and finally dropped, which
// frees the allocation without running any element destructor (`Pod` types are `Copy`, so
// have none). Neither depends on which thread does it, even for a `Pod` type that is not
// `Send` itself (a raw pointer is only an address among the bytes here, never followed).
unsafe impl<T: bytemuck::Pod> Send for PodVec<T> {}

impl<T: bytemuck::Pod> AsRef<[u8]> for PodVec<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// Number of elements of a shape; negative dimensions and overflow are errors.
pub fn element_count(shape: &[i64]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        if d < 0 {
            return Err(EngineError::invalid(format!(
                "shape {shape:?} has a negative dimension"
            )));
        }
        acc.checked_mul(d as usize)
            .ok_or_else(|| EngineError::invalid(format!("shape {shape:?} is too large")))
    })
}

/// Encodes byte strings in the raw BYTES form (4-byte LE length, then the bytes).
pub fn encode_bytes_elements<I, S>(items: I) -> Bytes
where
    I: IntoIterator<Item = S>,
    S: AsRef<[u8]>,
{
    let mut out = BytesMut::new();
    for item in items {
        let item = item.as_ref();
        out.reserve(4 + item.len());
        out.put_u32_le(item.len() as u32);
        out.put_slice(item);
    }
    out.freeze()
}

/// Splits raw BYTES data into its elements without copying.
pub fn decode_bytes_elements(data: &Bytes) -> std::result::Result<Vec<Bytes>, String> {
    let mut items = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let (start, end) = next_bytes_element(data, pos)?;
        items.push(data.slice(start..end));
        pos = end;
    }
    Ok(items)
}

/// Counts the elements of raw BYTES data, checking every length prefix.
pub fn count_bytes_elements(data: &[u8]) -> std::result::Result<usize, String> {
    let mut count = 0usize;
    let mut pos = 0usize;
    while pos < data.len() {
        pos = next_bytes_element(data, pos)?.1;
        count += 1;
    }
    Ok(count)
}

/// Byte offset just past the first `n` BYTES elements of `data`.
pub fn bytes_elements_end(data: &[u8], n: usize) -> std::result::Result<usize, String> {
    let mut pos = 0usize;
    for _ in 0..n {
        pos = next_bytes_element(data, pos)?.1;
    }
    Ok(pos)
}

fn next_bytes_element(data: &[u8], pos: usize) -> std::result::Result<(usize, usize), String> {
    let header = data.get(pos..pos + 4).ok_or_else(|| {
        format!("BYTES data is truncated at byte {pos}: no room for a 4-byte length")
    })?;
    let len = u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize;
    let start = pos + 4;
    let end = start
        .checked_add(len)
        .filter(|&end| end <= data.len())
        .ok_or_else(|| {
            format!(
                "BYTES element at byte {pos} declares {len} bytes but only {} remain",
                data.len() - start
            )
        })?;
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_size_round_trip_and_size_check() {
        let t = Tensor::from_vec("x", DataType::Fp32, vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0]);
        assert_eq!(t.data.len(), 16);
        t.check_byte_size().unwrap();
        assert_eq!(t.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        let short = Tensor::new("x", DataType::Fp32, vec![2, 3], t.data.clone());
        let err = short.check_byte_size().unwrap_err().to_string();
        assert!(err.contains("'x'") && err.contains("24"), "{err}");
    }

    #[test]
    fn from_vec_shares_the_vector_without_copying() {
        let values: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let before = values.as_ptr() as *const u8;
        let t = Tensor::from_vec("x", DataType::Fp32, vec![1000], values);
        assert_eq!(t.data.as_ptr(), before, "FP32 elements were copied");
        assert_eq!(t.data.len(), 4000);
        assert_eq!(t.to_vec::<f32>().unwrap()[999], 999.0);

        let wide = vec![7i64, -8];
        let before = wide.as_ptr() as *const u8;
        let t = Tensor::from_vec("y", DataType::Int64, vec![2], wide);
        assert_eq!(t.data.as_ptr(), before, "INT64 elements were copied");
        let shared = t.clone();
        assert_eq!(shared.data.as_ptr(), before, "a clone shares the bytes");
        drop(t);
        assert_eq!(shared.to_vec::<i64>().unwrap(), vec![7, -8]);

        let narrow = vec![1u8, 2, 3];
        let before = narrow.as_ptr();
        let t = Tensor::from_vec("z", DataType::Uint8, vec![3], narrow);
        assert_eq!(t.data.as_ptr(), before, "UINT8 elements were copied");
    }

    #[test]
    fn bytes_elements_round_trip_and_truncation() {
        let t = Tensor::from_strings("s", vec![3], ["a", "", "hello"]);
        t.check_byte_size().unwrap();
        let items = t.string_elements().unwrap();
        assert_eq!(
            items,
            vec![Bytes::from("a"), Bytes::new(), Bytes::from("hello")]
        );
        let cut = t.data.slice(..t.data.len() - 1);
        assert!(decode_bytes_elements(&cut)
            .unwrap_err()
            .contains("declares 5 bytes"));
        let wrong = Tensor::new("s", DataType::Bytes, vec![2], t.data.clone());
        assert!(wrong
            .check_byte_size()
            .unwrap_err()
            .to_string()
            .contains("holds 3"));
        assert_eq!(bytes_elements_end(&t.data, 2).unwrap(), 9);
    }

    #[test]
    fn negative_and_huge_shapes_are_errors() {
        assert!(element_count(&[2, -1]).is_err());
        assert!(element_count(&[i64::MAX, i64::MAX]).is_err());
        assert_eq!(element_count(&[]).unwrap(), 1);
    }
}
