//! The console's routes: its files, `settings.json` and `metrics`, every answer with the
//! page's security headers.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::assets::{self, Asset};
use crate::ConsoleSettings;

/// The console's routes under [`crate::PREFIX`], to merge into the HTTP door's router
/// (whose layer stack then covers them: API keys for `metrics`, compression).
pub fn router(settings: ConsoleSettings) -> Router {
    let settings = Arc::new(settings);
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(|headers: HeaderMap| async move { file_named("index.html", &headers) }),
        )
        .route("/console/settings.json", get(settings_document))
        .route("/console/metrics", get(metrics))
        .route(
            "/console/{file}",
            get(|Path(file): Path<String>, headers: HeaderMap| async move {
                file_named(&file, &headers)
            }),
        )
        .layer(middleware::from_fn_with_state(settings.clone(), secure))
        .with_state(settings)
}

/// An embedded file, or 304 when the browser's copy is current.
fn file_named(name: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = assets::find(name) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "error": format!("the console has no file {name}") }).to_string(),
        )
            .into_response();
    };
    let current = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    let cached = [
        (header::ETAG, asset.etag),
        // Revalidated on every load: a new binary's page is never mixed with old modules.
        (header::CACHE_CONTROL, "no-cache"),
    ];
    if current {
        return (StatusCode::NOT_MODIFIED, cached).into_response();
    }
    let Asset {
        bytes,
        content_type,
        ..
    } = asset;
    (
        cached,
        [(header::CONTENT_TYPE, *content_type)],
        Body::from(*bytes),
    )
        .into_response()
}

async fn settings_document(State(settings): State<Arc<ConsoleSettings>>) -> Response {
    let body = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "role": settings.role.as_str(),
        "grpc_web": { "port": settings.grpc_port, "tls": settings.grpc_tls },
        "api_key_required": settings.api_key_required,
        "model_control_mode": settings.model_control_mode,
    });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(settings): State<Arc<ConsoleSettings>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; version=0.0.4"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        (settings.metrics)(),
    )
        .into_response()
}

/// Adds the security headers to every console answer: a policy that lets the page run
/// only its own files and connect only to this server's HTTP and gRPC ports.
async fn secure(
    State(settings): State<Arc<ConsoleSettings>>,
    request: Request,
    next: Next,
) -> Response {
    let policy = policy(&settings, host_of(&request));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The Content-Security-Policy for a page loaded from `host`.
fn policy(settings: &ConsoleSettings, host: Option<&str>) -> String {
    let grpc = match host {
        Some(host) => {
            let scheme = if settings.grpc_tls { "https" } else { "http" };
            format!(" {scheme}://{host}:{}", settings.grpc_port)
        }
        None => String::new(),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'{grpc}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// The host name (without port) the browser reached the page at, when it is a plain
/// name or address (anything else could inject into the policy, so it is left out).
fn host_of(request: &Request) -> Option<&str> {
    let authority = request.uri().host().or_else(|| {
        request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
    })?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => &authority[..v6.find(']')? + 2],
        None => authority.split(':').next()?,
    };
    let plain = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    (plain && !host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn settings() -> ConsoleSettings {
        ConsoleSettings {
            role: Role::Gateway,
            grpc_port: 9001,
            grpc_tls: true,
            api_key_required: true,
            model_control_mode: "explicit",
            metrics: Arc::new(|| "nv_inference_count{model=\"simple\"} 3\n".to_string()),
        }
    }

    async fn get(path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        router(settings())
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn text(response: Response) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_page_is_served_with_its_policy_and_revalidated_by_tag() {
        let redirect = get("/console", &[]).await;
        assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(redirect.headers()[header::LOCATION], "/console/");

        let page = get("/console/", &[("host", "example.org:8000")]).await;
        assert_eq!(page.status(), StatusCode::OK);
        let policy = page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(
            policy.contains("connect-src 'self' https://example.org:9001;"),
            "{policy}"
        );
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert_eq!(page.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let tag = page.headers()[header::ETAG].to_str().unwrap().to_string();
        assert!(text(page).await.contains("<html"));

        let again = get("/console/", &[("if-none-match", &tag)]).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(again
            .headers()
            .contains_key(header::CONTENT_SECURITY_POLICY));
        let stale = get("/console/index.html", &[("if-none-match", "\"0\"")]).await;
        assert_eq!(stale.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn settings_say_where_grpc_web_is_and_metrics_are_the_exporters_text() {
        let settings = get("/console/settings.json", &[]).await;
        let body: serde_json::Value = serde_json::from_str(&text(settings).await).unwrap();
        assert_eq!(body["role"], "gateway");
        assert_eq!(body["grpc_web"]["port"], 9001);
        assert_eq!(body["grpc_web"]["tls"], true);
        assert_eq!(body["api_key_required"], true);
        assert_eq!(body["model_control_mode"], "explicit");
        let metrics = text(get("/console/metrics", &[]).await).await;
        assert!(metrics.starts_with("nv_inference_count"));
    }

    #[tokio::test]
    async fn an_unknown_file_is_a_json_404() {
        let missing = get("/console/nope.js", &[]).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert!(text(missing).await.contains("nope.js"));
    }

    #[test]
    fn hosts_that_could_break_the_policy_are_left_out() {
        let host = |value: &str| {
            let request = Request::get("/console/")
                .header("host", value)
                .body(Body::empty())
                .unwrap();
            host_of(&request).map(str::to_string)
        };
        assert_eq!(host("localhost:8000").as_deref(), Some("localhost"));
        assert_eq!(host("[::1]:8000").as_deref(), Some("[::1]"));
        assert_eq!(host("10.0.0.2").as_deref(), Some("10.0.0.2"));
        assert_eq!(host("evil; script-src *"), None);
        assert_eq!(
            policy(&settings(), None),
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        );
    }
}
