//! Tests of the generated types and the embedded descriptors.

use bytes::Bytes;
use prost::Message;
use prost_reflect::Kind;

use super::*;
use crate::inference::{infer_parameter::ParameterChoice, model_infer_request::InferInputTensor};

#[test]
fn descriptor_pool_has_the_service_and_every_rpc() {
    let pool = descriptor_pool();
    let service = pool.get_service_by_name(SERVICE_NAME).expect("service");
    let methods: Vec<_> = service.methods().map(|m| m.name().to_owned()).collect();
    assert_eq!(
        methods,
        [
            "ServerLive",
            "ServerReady",
            "ModelReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelInfer",
            "ModelStreamInfer",
            "ModelConfig",
            "ModelStatistics",
            "RepositoryIndex",
            "RepositoryModelLoad",
            "RepositoryModelUnload",
            "SystemSharedMemoryStatus",
            "SystemSharedMemoryRegister",
            "SystemSharedMemoryUnregister",
            "CudaSharedMemoryStatus",
            "CudaSharedMemoryRegister",
            "CudaSharedMemoryUnregister",
            "TraceSetting",
            "LogSettings",
        ]
    );
    let stream = service
        .methods()
        .find(|m| m.name() == "ModelStreamInfer")
        .unwrap();
    assert!(stream.is_client_streaming() && stream.is_server_streaming());
    assert_eq!(
        stream.output().full_name(),
        "inference.ModelStreamInferResponse"
    );
    // Same pointer on every call: built once.
    assert!(std::ptr::eq(pool, descriptor_pool()));
}

/// Field numbers of Triton's protocol that clients depend on.
#[test]
fn wire_field_numbers_match_triton() {
    let pool = descriptor_pool();
    let number = |message: &str, field: &str| {
        pool.get_message_by_name(message)
            .unwrap_or_else(|| panic!("{message}"))
            .get_field_by_name(field)
            .unwrap_or_else(|| panic!("{message}.{field}"))
            .number()
    };
    let expected = [
        ("inference.ModelInferRequest", "model_name", 1),
        ("inference.ModelInferRequest", "raw_input_contents", 7),
        ("inference.ModelInferResponse", "raw_output_contents", 6),
        ("inference.InferTensorContents", "bytes_contents", 8),
        ("inference.InferParameter", "uint64_param", 5),
        ("inference.ModelStreamInferResponse", "infer_response", 2),
        ("inference.ModelStatistics", "response_stats", 9),
        ("inference.InferResponseStatistics", "cancel", 6),
        ("inference.ModelRepositoryParameter", "bytes_param", 4),
        ("inference.CudaSharedMemoryRegisterRequest", "raw_handle", 2),
        ("inference.ModelConfig", "backend", 17),
        ("inference.ModelConfig", "runtime", 25),
        ("inference.ModelConfig", "version_policy", 3),
        ("inference.ModelConfig", "optimization", 12),
        ("inference.ModelConfig", "dynamic_batching", 11),
        ("inference.ModelConfig", "sequence_batching", 13),
        ("inference.ModelConfig", "ensemble_scheduling", 15),
        ("inference.ModelConfig", "instance_group", 7),
        ("inference.ModelConfig", "parameters", 14),
        ("inference.ModelConfig", "model_warmup", 16),
        ("inference.ModelConfig", "model_transaction_policy", 19),
        ("inference.ModelConfig", "batch_input", 20),
        ("inference.ModelConfig", "model_repository_agents", 23),
        ("inference.ModelConfig", "response_cache", 24),
        ("inference.ModelConfig", "model_metrics", 26),
        ("inference.ModelInstanceGroup", "kind", 4),
        ("inference.ModelInstanceGroup", "host_policy", 9),
        ("inference.ModelInput", "is_non_linear_format_io", 9),
        ("inference.ModelOutput", "label_filename", 4),
        ("inference.ModelOutput", "is_non_linear_format_io", 7),
        ("inference.ModelQueuePolicy", "max_queue_size", 4),
        ("inference.ModelDynamicBatching", "priority_queue_policy", 7),
        ("inference.ModelSequenceBatching", "iterative_sequence", 6),
    ];
    for (message, field, n) in expected {
        assert_eq!(number(message, field), n, "{message}.{field}");
    }
    let data_type = pool.get_enum_by_name("inference.DataType").unwrap();
    assert_eq!(
        data_type.get_value_by_name("TYPE_STRING").unwrap().number(),
        13
    );
    assert_eq!(
        data_type.get_value_by_name("TYPE_BF16").unwrap().number(),
        14
    );
    let kind = pool
        .get_message_by_name("inference.ModelDynamicBatching")
        .unwrap()
        .get_field_by_name("priority_queue_policy")
        .unwrap()
        .kind();
    assert!(matches!(kind, Kind::Message(m) if m.is_map_entry()));
}

#[test]
fn raw_tensor_contents_are_zero_copy() {
    let payload = Bytes::from(vec![7u8; 64]);
    let request = ModelInferRequest {
        model_name: "simple".into(),
        inputs: vec![InferInputTensor {
            name: "INPUT0".into(),
            datatype: "INT32".into(),
            shape: vec![1, 16],
            ..Default::default()
        }],
        parameters: [(
            "sequence_id".to_owned(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::Uint64Param(42)),
            },
        )]
        .into(),
        raw_input_contents: vec![payload.clone()],
        ..Default::default()
    };
    let wire = Bytes::from(request.encode_to_vec());
    let decoded = ModelInferRequest::decode(wire.clone()).expect("decodes");
    assert_eq!(decoded, request);

    // The decoded tensor bytes point into the received buffer.
    let raw = &decoded.raw_input_contents[0];
    let wire_range = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
    assert!(wire_range.contains(&(raw.as_ptr() as usize)));
    assert_eq!(raw.as_ref(), payload.as_ref());

    let contents = InferTensorContents {
        bytes_contents: vec![Bytes::from_static(b"hello")],
        ..Default::default()
    };
    let back = InferTensorContents::decode(Bytes::from(contents.encode_to_vec())).unwrap();
    assert_eq!(back.bytes_contents[0], Bytes::from_static(b"hello"));

    let response = ModelInferResponse {
        raw_output_contents: vec![Bytes::from_static(&[1, 2, 3])],
        ..Default::default()
    };
    let back = ModelInferResponse::decode(Bytes::from(response.encode_to_vec())).unwrap();
    assert_eq!(back.raw_output_contents, response.raw_output_contents);
}

#[test]
fn file_descriptor_set_decodes() {
    let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("decodes");
    let names: Vec<_> = fds.file.iter().filter_map(|f| f.name.as_deref()).collect();
    assert!(names.contains(&"grpc_service.proto"), "{names:?}");
    assert!(names.contains(&"model_config.proto"), "{names:?}");
}
