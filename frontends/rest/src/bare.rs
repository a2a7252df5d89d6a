//! A bare axum server that answers `simple` infer requests itself, without the engine,
//! through the same JSON/binary codec as the real route. `nereid bench` runs it beside the
//! real server: the difference is what the engine (queueing, batching, workers) costs.

use std::future::Future;

use axum::body::Body;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use nereid_engine::{DataType, InferResponse, Tensor};
use tokio::net::TcpListener;

use crate::binary;
use crate::body::read_body;
use crate::error::{ApiError, ApiResult};
use crate::RestArgs;

/// Serves `POST /v2/models/simple/infer` (add_sub over INT32 `[batch, 16]`) on `listener`
/// until `shutdown` resolves, with the same transport as [`crate::serve`].
pub async fn serve_bare(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    crate::serve(bare_router(), listener, &RestArgs::default(), shutdown).await
}

/// The bare server's router, with the same (de)compression layers as the real one so the
/// comparison is of the engine alone.
pub fn bare_router() -> Router {
    Router::new()
        .route("/v2/models/{model}/infer", post(bare_infer))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            crate::args::DEFAULT_MAX_INPUT_SIZE,
        ))
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        .layer(tower_http::compression::CompressionLayer::new())
}

async fn bare_infer(
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if model != "simple" {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!("unknown model '{model}'"),
        ));
    }
    let body = read_body(body, crate::args::DEFAULT_MAX_INPUT_SIZE).await?;
    let body = nereid_kserve::Body::split(body, binary::header_length(&headers)?)?;
    let decoded = nereid_kserve::decode_infer_request(body, &Default::default())?;
    let requested = decoded.header.outputs.clone();
    let parameters = decoded.header.parameters.clone();
    let request = decoded.into_request(model.clone(), None);
    let input = |name: &str| -> ApiResult<(Vec<i32>, Vec<i64>)> {
        let t = request
            .input(name)
            .filter(|t| t.dtype == DataType::Int32)
            .ok_or_else(|| ApiError::bad_request(format!("missing INT32 input '{name}'")))?;
        Ok((
            t.to_vec::<i32>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
            t.shape.clone(),
        ))
    };
    let ((a, shape), (b, _)) = (input("INPUT0")?, input("INPUT1")?);
    if a.len() != b.len() {
        return Err(ApiError::bad_request("INPUT0 and INPUT1 differ in size"));
    }
    let sum = a.iter().zip(&b).map(|(x, y)| x.wrapping_add(*y)).collect();
    let diff = a.iter().zip(&b).map(|(x, y)| x.wrapping_sub(*y)).collect();
    let mut outputs = vec![
        Tensor::from_vec("OUTPUT0", DataType::Int32, shape.clone(), sum),
        Tensor::from_vec("OUTPUT1", DataType::Int32, shape, diff),
    ];
    if !requested.is_empty() {
        outputs.retain(|t| requested.iter().any(|r| r.name == t.name));
    }
    let response = InferResponse {
        model_name: model,
        model_version: 1,
        id: request.id,
        outputs,
        parameters: Default::default(),
        is_final: true,
    };
    let flags = nereid_kserve::binary_outputs(&response, &requested, &parameters, false);
    let json = nereid_kserve::write_infer_response(
        &response,
        &flags,
        &[],
        nereid_kserve::ResponseForm::Unary,
    )?;
    Ok(binary::respond(json, &response, &flags))
}
