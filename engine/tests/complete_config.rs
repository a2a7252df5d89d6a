//! A backend's auto-complete (`Backend::complete_config`): what it fills into a config that
//! leaves its tensors out is validated and served as the model's config, it sees the
//! newest version's folder, and an error from it fails the load with its message.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nereid_engine::{
    Backend, BackendRegistry, BatchedInstance, DataType, Device, Engine, EngineOptions, ExecBatch,
    Instance, LoadedModel, ModelSpec, Result, Tensor,
};
use nereid_proto::inference::{ModelConfig, ModelInput, ModelOutput};
use parking_lot::Mutex;

/// Reads its tensors from a file `io` in the version folder ("ok", else it refuses).
struct Completing(Arc<Mutex<Vec<PathBuf>>>);
struct Doubler;

impl Backend for Completing {
    fn complete_config(&self, config: &mut ModelConfig, version_dir: &Path) -> Result<()> {
        self.0.lock().push(version_dir.to_path_buf());
        let said = std::fs::read_to_string(version_dir.join("io")).unwrap_or_default();
        if said.trim() != "ok" {
            return Err(nereid_engine::EngineError::invalid(format!(
                "model '{}': the graph in {} is unreadable",
                config.name,
                version_dir.display()
            )));
        }
        if config.input.is_empty() {
            config.input.push(ModelInput {
                name: "X".into(),
                data_type: DataType::Int32.to_config(),
                dims: vec![2],
                ..Default::default()
            });
        }
        if config.output.is_empty() {
            config.output.push(ModelOutput {
                name: "Y".into(),
                data_type: DataType::Int32.to_config(),
                dims: vec![2],
                ..Default::default()
            });
        }
        Ok(())
    }

    fn load(&self, _spec: &ModelSpec, _dir: &Path) -> Result<Arc<dyn LoadedModel>> {
        Ok(Arc::new(Doubler))
    }
}

impl LoadedModel for Doubler {
    fn create_instance(&self, _device: Device, _index: usize) -> Result<Instance> {
        Ok(Instance::Batched(Box::new(Doubler)))
    }
}

impl BatchedInstance for Doubler {
    fn execute(&mut self, batch: &ExecBatch) -> Result<Vec<Tensor>> {
        let x = batch.require("X")?;
        let y: Vec<i32> = x.to_vec::<i32>()?.iter().map(|v| v * 2).collect();
        Ok(vec![Tensor::from_vec(
            "Y",
            DataType::Int32,
            x.shape.clone(),
            y,
        )])
    }
}

fn start(versions: &[(&str, &str)]) -> (Engine, Arc<Mutex<Vec<PathBuf>>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    for (version, io) in versions {
        std::fs::create_dir_all(model.join(version)).unwrap();
        std::fs::write(model.join(version).join("io"), io).unwrap();
    }
    std::fs::write(
        model.join("config.pbtxt"),
        r#"name: "m" backend: "completing" max_batch_size: 4
        version_policy { all { } }"#,
    )
    .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut registry = BackendRegistry::new();
    registry.register("completing", Arc::new(Completing(seen.clone())));
    let options = EngineOptions {
        repository: Some(dir.path().into()),
        ..Default::default()
    };
    (Engine::start(options, registry).unwrap(), seen, dir)
}

#[tokio::test]
async fn filled_in_tensors_are_validated_served_and_inferred() {
    let (engine, seen, _dir) = start(&[("1", "stale"), ("3", "ok")]);
    assert!(
        seen.lock().iter().all(|d| d.ends_with("m/3")),
        "{:?}",
        seen.lock()
    );
    let config = engine.model_config("m", None).unwrap();
    assert_eq!(config.input[0].name, "X");
    assert_eq!(config.output[0].dims, vec![2]);
    let x = Tensor::from_vec("X", DataType::Int32, vec![1, 2], vec![3, 4]);
    let response = engine
        .infer(nereid_engine::InferRequest::new("m", vec![x]))
        .await
        .unwrap();
    assert_eq!(
        response.output("Y").unwrap().to_vec::<i32>().unwrap(),
        vec![6, 8]
    );
}

#[test]
fn an_error_completing_fails_the_load_with_its_message() {
    let (engine, _, _dir) = start(&[("1", "garbage")]);
    let entry = engine
        .repository_index(false)
        .into_iter()
        .find(|e| e.name == "m")
        .unwrap();
    assert!(entry.reason.contains("unreadable"), "{}", entry.reason);
}
