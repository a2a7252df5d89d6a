//! Model control through the gateway: a load or unload goes to every healthy engine (each
//! engine's control mode decides whether it is allowed), and the routing table is rebuilt
//! before the call returns, so a loaded model is routable at once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::future::join_all;
use nereid_engine::{EngineError, ModelConfig, Result};
use nereid_proto::inference::model_repository_parameter::ParameterChoice;
use nereid_proto::inference::{
    ModelRepositoryParameter, RepositoryModelLoadRequest, RepositoryModelUnloadRequest,
};

use crate::backend::Backend;
use crate::{discovery, Shared};

/// Loads (or reloads) a model on every healthy engine.
pub(crate) async fn load(shared: &Shared, name: &str, config: Option<ModelConfig>) -> Result<()> {
    let mut parameters = HashMap::new();
    if let Some(config) = config {
        let json = nereid_proto::model_config_to_json(&config).to_string();
        parameters.insert(
            "config".to_string(),
            ModelRepositoryParameter {
                parameter_choice: Some(ParameterChoice::StringParam(json)),
            },
        );
    }
    let request = RepositoryModelLoadRequest {
        repository_name: String::new(),
        model_name: name.to_string(),
        parameters,
    };
    on_every_healthy_engine(shared, "load", |backend| {
        let request = request.clone();
        async move {
            let client = backend.client();
            client
                .raw()
                .repository_model_load(client.request(request))
                .await
        }
    })
    .await
}

/// Unloads a model on every healthy engine.
pub(crate) async fn unload(shared: &Shared, name: &str) -> Result<()> {
    let request = RepositoryModelUnloadRequest {
        repository_name: String::new(),
        model_name: name.to_string(),
        parameters: HashMap::new(),
    };
    on_every_healthy_engine(shared, "unload", |backend| {
        let request = request.clone();
        async move {
            let client = backend.client();
            client
                .raw()
                .repository_model_unload(client.request(request))
                .await
        }
    })
    .await
}

/// Makes one call on every healthy engine at once, then rebuilds the routing table.
async fn on_every_healthy_engine<T, F, Call>(shared: &Shared, what: &str, call: F) -> Result<()>
where
    F: Fn(Arc<Backend>) -> Call,
    Call: Future<Output = std::result::Result<T, tonic::Status>>,
{
    let backends: Vec<_> = shared
        .backends
        .read()
        .iter()
        .filter(|b| b.is_healthy())
        .cloned()
        .collect();
    if backends.is_empty() {
        return Err(EngineError::unavailable(format!(
            "no healthy engine to {what} the model on"
        )));
    }
    let outcomes: Vec<_> = join_all(backends.into_iter().map(call)).await;
    discovery::refresh_catalog(shared).await;
    first_error(outcomes)
}

/// Every engine's answer counts: the first refusal is the caller's answer.
fn first_error<T>(outcomes: Vec<std::result::Result<T, tonic::Status>>) -> Result<()> {
    match outcomes.into_iter().find_map(|o| o.err()) {
        Some(status) => Err(nereid_grpc::status::from_status(&status)),
        None => Ok(()),
    }
}
