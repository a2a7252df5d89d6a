//! What our own candle CPU ops ([`crate::activation`], [`crate::skinny`]) share.

use candle_core::{CpuStorage, Layout};

/// The values of a contiguous FP32 tensor given to the op named `op`; anything else is an
/// error that names the op.
pub(crate) fn contiguous_f32<'a>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op} takes FP32 only");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} takes contiguous tensors only");
    };
    Ok(&data[start..end])
}
