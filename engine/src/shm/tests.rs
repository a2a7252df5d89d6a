use super::*;
use crate::{DataType, Tensor};

/// A shared-memory object of `size` bytes (0, 1, 2, ...), removed on drop.
struct Object(String);

impl Object {
    fn new(tag: &str, size: usize) -> Self {
        let name = format!("nereid-test-{tag}-{}", std::process::id());
        let bytes: Vec<u8> = (0..size).map(|i| i as u8).collect();
        std::fs::write(PathBuf::from(SHM_ROOT).join(&name), bytes).unwrap();
        Self(name)
    }

    fn key(&self) -> String {
        format!("/{}", self.0)
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(PathBuf::from(SHM_ROOT).join(&self.0)).unwrap()
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(PathBuf::from(SHM_ROOT).join(&self.0));
    }
}

fn at(region: &str, offset: u64, byte_size: u64) -> SharedMemoryRef {
    SharedMemoryRef {
        region: region.into(),
        offset,
        byte_size,
    }
}

#[test]
fn regions_read_and_write_the_clients_bytes_at_their_offsets() {
    let object = Object::new("rw", 64);
    let shm = SharedMemory::default();
    shm.register("r", &object.key(), 16, 32).unwrap();
    let got = shm.read(&at("r", 4, 4), "input 'X'").unwrap();
    assert_eq!(
        &got[..],
        [20, 21, 22, 23],
        "region offset plus tensor offset"
    );
    shm.write(&at("r", 0, 8), &[9, 9, 9], "output 'Y'").unwrap();
    assert_eq!(&object.bytes()[14..20], [14, 15, 9, 9, 9, 19]);
    assert_eq!(
        shm.status("").unwrap(),
        [SharedMemoryRegion {
            name: "r".into(),
            key: object.key(),
            offset: 16,
            byte_size: 32
        }]
    );
}

#[test]
fn registration_errors_name_the_region_and_key() {
    let object = Object::new("reg", 64);
    let shm = SharedMemory::default();
    for (name, key, offset, size, says) in [
        (
            "a",
            "/nereid-no-such-object".to_string(),
            0,
            8,
            "cannot open key '/nereid-no-such-object'",
        ),
        (
            "b",
            object.key(),
            32,
            64,
            "offset 32 + byte_size 64 is past the end of key",
        ),
        ("c", object.key(), 0, 0, "byte_size must be above 0"),
        (
            "d",
            "/../etc/passwd".to_string(),
            0,
            8,
            "is not a POSIX shared-memory name",
        ),
        ("", object.key(), 0, 8, "non-empty name"),
    ] {
        let err = shm
            .register(name, &key, offset, size)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{name}: {err}");
    }
    assert!(
        shm.status("").unwrap().is_empty(),
        "nothing registered by a failed call"
    );
    shm.register("r", &object.key(), 0, 64).unwrap();
    let twice = shm
        .register("r", &object.key(), 0, 8)
        .unwrap_err()
        .to_string();
    assert!(twice.contains("'r' is already registered"), "{twice}");
    assert_eq!(
        shm.status("r").unwrap()[0].byte_size,
        64,
        "the first stands"
    );
    let unknown = shm.status("nope").unwrap_err();
    assert!(matches!(unknown, EngineError::NotFound(ref m) if m.contains("'nope'")));
}

#[test]
fn tensors_outside_their_region_and_unknown_regions_are_refused() {
    let object = Object::new("bounds", 64);
    let shm = SharedMemory::default();
    shm.register("r", &object.key(), 0, 32).unwrap();
    let past = shm
        .read(&at("r", 30, 4), "input 'X'")
        .unwrap_err()
        .to_string();
    assert!(
        past.contains(
            "input 'X': offset 30 + byte_size 4 is past the end of shared-memory region 'r'"
        ),
        "{past}"
    );
    let gone = shm
        .read(&at("q", 0, 4), "input 'X'")
        .unwrap_err()
        .to_string();
    assert!(
        gone.contains("input 'X' names shared-memory region 'q', which is not registered"),
        "{gone}"
    );
    let big = shm
        .write(&at("r", 0, 4), &[0; 8], "output 'Y'")
        .unwrap_err()
        .to_string();
    assert!(
        big.contains("output 'Y' takes 8 bytes, more than the 4"),
        "{big}"
    );
    shm.unregister("r");
    assert!(shm.read(&at("r", 0, 4), "input 'X'").is_err());
    shm.register("a", &object.key(), 0, 8).unwrap();
    shm.register("b", &object.key(), 8, 8).unwrap();
    shm.unregister("");
    assert!(shm.status("").unwrap().is_empty());
}

#[test]
fn parameters_name_the_tensor_and_outputs_are_placed_by_position() {
    let mut params = Parameters::new();
    assert_eq!(
        SharedMemoryRef::from_params(&params, "input 'X'").unwrap(),
        None
    );
    params.insert(BYTE_SIZE_PARAMETER.into(), ParamValue::Uint(4));
    let err = SharedMemoryRef::from_params(&params, "input 'X'")
        .unwrap_err()
        .to_string();
    assert!(err.contains("input 'X' sets shared-memory parameters but no 'shared_memory_region'"));
    params.insert(REGION_PARAMETER.into(), ParamValue::String("r".into()));
    params.insert(OFFSET_PARAMETER.into(), ParamValue::Int(8));
    assert_eq!(
        SharedMemoryRef::from_params(&params, "input 'X'").unwrap(),
        Some(at("r", 8, 4))
    );
    params.insert(OFFSET_PARAMETER.into(), ParamValue::Int(-1));
    let err = SharedMemoryRef::from_params(&params, "input 'X'")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'shared_memory_offset' must be a non-negative integer"),
        "{err}"
    );

    let object = Object::new("place", 16);
    let shm = SharedMemory::default();
    shm.register("out", &object.key(), 0, 16).unwrap();
    let mut response = InferResponse {
        outputs: vec![
            Tensor::from_vec("A", DataType::Uint8, vec![2], vec![1u8, 2]),
            Tensor::from_vec("B", DataType::Uint8, vec![2], vec![3u8, 4]),
        ],
        ..Default::default()
    };
    let requested = vec![RequestedOutput {
        name: "B".into(),
        parameters: at("out", 4, 2).to_params(),
    }];
    let mut asked = vec![
        RequestedOutput {
            name: "A".into(),
            parameters: Parameters::new(),
        },
        requested[0].clone(),
    ];
    assert_eq!(SharedMemory::take_placements(&mut asked), requested);
    assert!(
        asked.iter().all(|o| o.parameters.is_empty()),
        "what goes on asks for the bytes"
    );
    let placed = shm.place_outputs(&requested, &mut response).unwrap();
    assert_eq!(placed, [None, Some(at("out", 4, 2).to_params())]);
    assert!(response.outputs[1].data.is_empty() && response.outputs[0].data.len() == 2);
    assert_eq!(&object.bytes()[4..6], [3, 4]);
}
