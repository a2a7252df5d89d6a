//! System shared memory (Triton's extension): POSIX shared-memory objects that a client on
//! the same host registers by key, from which inputs are read and into which outputs are
//! written instead of travelling in the request and response. One registry per server,
//! shared by both doors.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};
use parking_lot::RwLock;

use crate::{EngineError, InferResponse, ParamValue, Parameters, RequestedOutput, Result};

/// Tensor parameter naming the region a tensor is in.
pub const REGION_PARAMETER: &str = "shared_memory_region";
/// Tensor parameter giving the tensor's size in bytes in its region.
pub const BYTE_SIZE_PARAMETER: &str = "shared_memory_byte_size";
/// Tensor parameter giving the tensor's offset in its region (0 when absent).
pub const OFFSET_PARAMETER: &str = "shared_memory_offset";

/// Where POSIX shared-memory objects live (what `shm_open` opens on Linux).
const SHM_ROOT: &str = "/dev/shm";

/// A registered region, as the status APIs report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMemoryRegion {
    /// The name clients use in tensor parameters.
    pub name: String,
    /// The shared-memory object's key, as given (`/name`).
    pub key: String,
    /// Where the region starts in the object.
    pub offset: u64,
    /// The region's size in bytes.
    pub byte_size: u64,
}

/// A tensor's place in a region, from its `shared_memory_*` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMemoryRef {
    /// The region's name.
    pub region: String,
    /// Offset of the tensor in the region.
    pub offset: u64,
    /// Bytes the tensor takes (for an output: the room it has).
    pub byte_size: u64,
}

impl SharedMemoryRef {
    /// The region a tensor's parameters place it in, if they name one; `what` names the
    /// tensor in errors (`input 'X'`).
    pub fn from_params(params: &Parameters, what: &str) -> Result<Option<Self>> {
        let Some(region) = params.get(REGION_PARAMETER) else {
            if params.contains_key(BYTE_SIZE_PARAMETER) || params.contains_key(OFFSET_PARAMETER) {
                return Err(EngineError::invalid(format!(
                    "{what} sets shared-memory parameters but no '{REGION_PARAMETER}'"
                )));
            }
            return Ok(None);
        };
        let ParamValue::String(region) = region else {
            return Err(EngineError::invalid(format!(
                "{what}: parameter '{REGION_PARAMETER}' must be a string"
            )));
        };
        let number = |key: &str, required: bool| -> Result<u64> {
            match params.get(key) {
                None if !required => Ok(0),
                None => Err(EngineError::invalid(format!(
                    "{what} names shared-memory region '{region}' but no '{key}'"
                ))),
                Some(v) => v.as_u64().ok_or_else(|| {
                    EngineError::invalid(format!(
                        "{what}: parameter '{key}' must be a non-negative integer"
                    ))
                }),
            }
        };
        Ok(Some(Self {
            region: region.clone(),
            byte_size: number(BYTE_SIZE_PARAMETER, true)?,
            offset: number(OFFSET_PARAMETER, false)?,
        }))
    }

    /// The parameters a response gives an output placed here.
    pub fn to_params(&self) -> Parameters {
        let mut params = Parameters::new();
        params.insert(
            REGION_PARAMETER.into(),
            ParamValue::String(self.region.clone()),
        );
        params.insert(BYTE_SIZE_PARAMETER.into(), ParamValue::Uint(self.byte_size));
        if self.offset > 0 {
            params.insert(OFFSET_PARAMETER.into(), ParamValue::Uint(self.offset));
        }
        params
    }
}

struct Mapping {
    region: SharedMemoryRegion,
    /// The region's bytes, `region.byte_size` long, mapped shared with the client.
    map: MmapRaw,
}

/// The server's registered regions.
#[derive(Default)]
pub struct SharedMemory {
    regions: RwLock<BTreeMap<String, Arc<Mapping>>>,
    /// Set for the registry of a door that reads no shared memory: why, for its errors.
    refusal: Option<&'static str>,
}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory")
            .field("regions", &self.regions.read().len())
            .finish()
    }
}

impl SharedMemory {
    /// Maps `byte_size` bytes at `offset` of the object `key` under `name`.
    pub fn register(&self, name: &str, key: &str, offset: u64, byte_size: u64) -> Result<()> {
        if name.is_empty() {
            return Err(EngineError::invalid(
                "a shared-memory region needs a non-empty name",
            ));
        }
        if byte_size == 0 {
            return Err(EngineError::invalid(format!(
                "shared-memory region '{name}': byte_size must be above 0"
            )));
        }
        let path = object_path(key)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| {
                EngineError::invalid(format!(
                    "shared-memory region '{name}': cannot open key '{key}' ({}): {e}",
                    path.display()
                ))
            })?;
        let size = file
            .metadata()
            .map_err(|e| EngineError::internal(format!("cannot read {}: {e}", path.display())))?
            .len();
        if offset.checked_add(byte_size).is_none_or(|end| end > size) {
            return Err(EngineError::invalid(format!(
                "shared-memory region '{name}': offset {offset} + byte_size {byte_size} is past \
                 the end of key '{key}', whose size is {size} bytes"
            )));
        }
        let map = MmapOptions::new()
            .offset(offset)
            .len(byte_size as usize)
            .map_raw(&file)
            .map_err(|e| {
                EngineError::invalid(format!(
                    "shared-memory region '{name}': cannot map key '{key}': {e}"
                ))
            })?;
        let mut regions = self.regions.write();
        if regions.contains_key(name) {
            return Err(EngineError::invalid(format!(
                "shared-memory region '{name}' is already registered; unregister it first"
            )));
        }
        let region = SharedMemoryRegion {
            name: name.into(),
            key: key.into(),
            offset,
            byte_size,
        };
        regions.insert(name.into(), Arc::new(Mapping { region, map }));
        Ok(())
    }

    /// Unregisters `name`, or every region when `name` is empty. Unregistering a name that
    /// is not registered is not an error (as in Triton). A request reading or writing the
    /// region keeps its mapping until it is done.
    pub fn unregister(&self, name: &str) {
        let mut regions = self.regions.write();
        if name.is_empty() {
            regions.clear();
        } else {
            regions.remove(name);
        }
    }

    /// Every region, or the one named (an unknown name is NotFound).
    pub fn status(&self, name: &str) -> Result<Vec<SharedMemoryRegion>> {
        let regions = self.regions.read();
        if name.is_empty() {
            return Ok(regions.values().map(|m| m.region.clone()).collect());
        }
        regions
            .get(name)
            .map(|m| vec![m.region.clone()])
            .ok_or_else(|| {
                EngineError::NotFound(format!("shared-memory region '{name}' is not registered"))
            })
    }

    /// The CUDA regions registered: this server registers none (it has no CUDA shared
    /// memory; registering is refused), so the list is empty and a name is NotFound. A
    /// client's unregister of CUDA regions, as perf_analyzer sends on exit, has nothing to
    /// do and succeeds, as on a Triton built without GPUs.
    pub fn cuda_status(&self, name: &str) -> Result<Vec<SharedMemoryRegion>> {
        if name.is_empty() {
            return Ok(Vec::new());
        }
        Err(EngineError::NotFound(format!(
            "CUDA shared-memory region '{name}' is not registered: this server has no CUDA \
             shared memory"
        )))
    }

    /// An empty registry for a door that reads no shared memory; a tensor naming a region
    /// is refused with `why` (say, "WebSocket frames carry their tensors").
    pub fn refused(why: &'static str) -> Self {
        Self {
            regions: RwLock::default(),
            refusal: Some(why),
        }
    }

    /// The mapping `at` names and the byte range it covers in it, bounds checked.
    fn locate(&self, at: &SharedMemoryRef, what: &str) -> Result<(Arc<Mapping>, usize, usize)> {
        if let Some(why) = self.refusal {
            return Err(EngineError::invalid(format!(
                "{what} names shared-memory region '{}', but shared memory is not read here: {why}",
                at.region
            )));
        }
        let mapping = self
            .regions
            .read()
            .get(&at.region)
            .cloned()
            .ok_or_else(|| {
                EngineError::invalid(format!(
                    "{what} names shared-memory region '{}', which is not registered",
                    at.region
                ))
            })?;
        let size = mapping.region.byte_size;
        match at.offset.checked_add(at.byte_size) {
            Some(end) if end <= size => Ok((mapping, at.offset as usize, at.byte_size as usize)),
            _ => Err(EngineError::invalid(format!(
                "{what}: offset {} + byte_size {} is past the end of shared-memory region '{}' \
                 ({size} bytes)",
                at.offset, at.byte_size, at.region
            ))),
        }
    }

    /// A copy of the bytes `at` names: the one copy between the client's memory and the
    /// model.
    pub fn read(&self, at: &SharedMemoryRef, what: &str) -> Result<Bytes> {
        let (mapping, offset, len) = self.locate(at, what)?;
        let mut out = vec![0u8; len];
        // SAFETY: `locate` checked offset + len <= the mapping's length, and `mapping` (an
        // Arc) keeps the map alive for the copy. The client may write the region meanwhile,
        // as Triton's contract allows: bytes are copied through raw pointers, no reference
        // into the shared memory is formed, and `out` is a separate allocation of len bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(mapping.map.as_ptr().add(offset), out.as_mut_ptr(), len);
        }
        Ok(out.into())
    }

    /// Writes `data` where `at` says; `data` must fit in `at.byte_size`.
    pub fn write(&self, at: &SharedMemoryRef, data: &[u8], what: &str) -> Result<()> {
        if data.len() as u64 > at.byte_size {
            return Err(EngineError::invalid(format!(
                "{what} takes {} bytes, more than the {} given to it in shared-memory region '{}'",
                data.len(),
                at.byte_size,
                at.region
            )));
        }
        let (mapping, offset, _) = self.locate(at, what)?;
        // SAFETY: `locate` checked offset + at.byte_size <= the mapping's length and
        // data.len() <= at.byte_size was checked above; the map is writable (opened read-write,
        // shared) and kept alive by `mapping`. No reference into the shared memory is formed.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                mapping.map.as_mut_ptr().add(offset),
                data.len(),
            );
        }
        Ok(())
    }

    /// Writes every output that `requested` places in shared memory into its region,
    /// leaving its data empty in `response`; returns each placed output's parameters, by
    /// output position, for the door to report (empty when none is placed).
    pub fn place_outputs(
        &self,
        requested: &[RequestedOutput],
        response: &mut InferResponse,
    ) -> Result<Vec<Option<Parameters>>> {
        let mut placed = Vec::new();
        for wanted in requested {
            let what = format!("output '{}'", wanted.name);
            let Some(at) = SharedMemoryRef::from_params(&wanted.parameters, &what)? else {
                continue;
            };
            let Some(i) = response.outputs.iter().position(|t| t.name == wanted.name) else {
                continue;
            };
            let tensor = &mut response.outputs[i];
            self.write(&at, &tensor.data, &what)?;
            tensor.data = Bytes::new();
            placed.resize(response.outputs.len(), None);
            placed[i] = Some(at.to_params());
        }
        Ok(placed)
    }

    /// Takes the shared-memory placement out of `outputs`, returning the outputs it
    /// placed (with their parameters) for [`place_outputs`](Self::place_outputs): the door
    /// writes them, and what it hands on (to an engine behind a gateway, say) asks for the
    /// bytes.
    pub fn take_placements(outputs: &mut [RequestedOutput]) -> Vec<RequestedOutput> {
        let mut placed = Vec::new();
        for output in outputs {
            if output.parameters.contains_key(REGION_PARAMETER) {
                placed.push(output.clone());
                output.parameters.retain(|k, _| {
                    ![REGION_PARAMETER, BYTE_SIZE_PARAMETER, OFFSET_PARAMETER].contains(&k.as_str())
                });
            }
        }
        placed
    }
}

/// `/dev/shm/NAME` for the key `/NAME` (or `NAME`), refusing keys that would leave it.
fn object_path(key: &str) -> Result<PathBuf> {
    let name = key.strip_prefix('/').unwrap_or(key);
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(EngineError::invalid(format!(
            "shared-memory key '{key}' is not a POSIX shared-memory name ('/name', no other '/')"
        )));
    }
    Ok(PathBuf::from(SHM_ROOT).join(name))
}

#[cfg(test)]
mod tests;
