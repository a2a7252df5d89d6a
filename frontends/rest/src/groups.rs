//! Which of Triton's API groups an HTTP path belongs to, for `--http-restricted-api`:
//! the KServe v2 routes, and the OpenAI and WebSocket doors served on the same port.

use nereid_kserve::ApiGroup;

/// The group of a request path; `None` for paths in no group (the OpenAPI document and
/// its page, unknown paths).
pub(crate) fn api_group(path: &str) -> Option<ApiGroup> {
    if let Some(openai) = path.strip_prefix("/v1/") {
        return Some(if openai == "models" || openai.starts_with("models/") {
            ApiGroup::Metadata
        } else {
            ApiGroup::Inference
        });
    }
    if path == "/console/metrics" {
        return Some(ApiGroup::Statistics);
    }
    match path {
        "/health" => return Some(ApiGroup::Health),
        "/" => return Some(ApiGroup::Inference), // TEI's compat route
        _ => {}
    }
    if let Some(tei) = tei_route(path) {
        return Some(if tei == "info" {
            ApiGroup::Metadata
        } else {
            ApiGroup::Inference
        });
    }
    let rest = path.strip_prefix("/v2")?;
    Some(match rest {
        "" | "/" => ApiGroup::Metadata,
        "/health/live" | "/health/ready" => ApiGroup::Health,
        "/models/stats" => ApiGroup::Statistics,
        "/trace/setting" => ApiGroup::Trace,
        "/logging" => ApiGroup::Logging,
        "/ws" => ApiGroup::Inference,
        _ if rest.starts_with("/repository/") => ApiGroup::ModelRepository,
        _ if rest.starts_with("/systemsharedmemory") || rest.starts_with("/cudasharedmemory") => {
            ApiGroup::SharedMemory
        }
        _ if rest.starts_with("/models/") => {
            // /v2/models/{m}[/versions/{v}][/<verb>...]
            let mut segments = rest.trim_end_matches('/').split('/').skip(3).peekable();
            if segments.next_if_eq(&"versions").is_some() {
                segments.next();
            }
            match segments.next() {
                None => ApiGroup::Metadata,
                Some("ready") => ApiGroup::Health,
                Some("config") => ApiGroup::ModelConfig,
                Some("stats") => ApiGroup::Statistics,
                Some("trace") => ApiGroup::Trace,
                Some("infer" | "generate" | "generate_stream") => ApiGroup::Inference,
                Some(_) => return None,
            }
        }
        _ => return None,
    })
}

/// The TEI route a path names (`embed`, `info`, ... at the root or under
/// `/tei/{model}/`; `""` for the compat route `/tei/{model}`), if it names one.
fn tei_route(path: &str) -> Option<&str> {
    const ROUTES: &[&str] = &[
        "embed",
        "embed_all",
        "similarity",
        "rerank",
        "predict",
        "classify",
        "tokenize",
        "decode",
        "info",
    ];
    if let Some(model_route) = path.strip_prefix("/tei/") {
        return match model_route.split_once('/') {
            None => Some(""),
            Some((_, route)) => ROUTES.contains(&route).then_some(route),
        };
    }
    path.strip_prefix('/').filter(|r| ROUTES.contains(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_the_group_triton_gives_it() {
        for (path, group) in [
            ("/v2", Some(ApiGroup::Metadata)),
            ("/console/metrics", Some(ApiGroup::Statistics)),
            ("/console/app.js", None),
            ("/v2/health/ready", Some(ApiGroup::Health)),
            ("/v2/models/m", Some(ApiGroup::Metadata)),
            ("/v2/models/m/versions/2", Some(ApiGroup::Metadata)),
            ("/v2/models/m/ready", Some(ApiGroup::Health)),
            ("/v2/models/m/versions/2/ready", Some(ApiGroup::Health)),
            ("/v2/models/m/config", Some(ApiGroup::ModelConfig)),
            ("/v2/models/stats", Some(ApiGroup::Statistics)),
            ("/v2/models/m/versions/1/stats", Some(ApiGroup::Statistics)),
            ("/v2/models/m/infer", Some(ApiGroup::Inference)),
            (
                "/v2/models/m/versions/1/generate_stream",
                Some(ApiGroup::Inference),
            ),
            ("/v2/models/m/infer/ws", Some(ApiGroup::Inference)),
            ("/v2/ws", Some(ApiGroup::Inference)),
            ("/v2/repository/index", Some(ApiGroup::ModelRepository)),
            (
                "/v2/repository/models/m/load",
                Some(ApiGroup::ModelRepository),
            ),
            (
                "/v2/systemsharedmemory/status",
                Some(ApiGroup::SharedMemory),
            ),
            ("/v2/trace/setting", Some(ApiGroup::Trace)),
            ("/v2/models/m/trace/setting", Some(ApiGroup::Trace)),
            ("/v2/logging", Some(ApiGroup::Logging)),
            ("/v1/chat/completions", Some(ApiGroup::Inference)),
            ("/v1/embeddings", Some(ApiGroup::Inference)),
            ("/v1/models", Some(ApiGroup::Metadata)),
            ("/v1/models/smollm2", Some(ApiGroup::Metadata)),
            ("/v1/rerank", Some(ApiGroup::Inference)),
            ("/embed", Some(ApiGroup::Inference)),
            ("/rerank", Some(ApiGroup::Inference)),
            ("/info", Some(ApiGroup::Metadata)),
            ("/tei/m", Some(ApiGroup::Inference)),
            ("/tei/m/predict", Some(ApiGroup::Inference)),
            ("/tei/m/info", Some(ApiGroup::Metadata)),
            ("/tei/m/other", None),
            ("/health", Some(ApiGroup::Health)),
            ("/", Some(ApiGroup::Inference)),
            ("/openapi.json", None),
            ("/docs", None),
        ] {
            assert_eq!(api_group(path), group, "{path}");
        }
    }
}
