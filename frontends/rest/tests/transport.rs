//! Transport: gzip/deflate both ways, HTTP/2 cleartext by prior knowledge, TLS (HTTP/1.1
//! and HTTP/2 by ALPN), many concurrent requests, graceful shutdown, the bare server.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use nereid_engine::ModelControlMode;
use nereid_rest::RestArgs;
use serde_json::json;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn gzip_and_deflate_both_ways() {
    let s = start_default().await;
    let body = simple_request().to_string();

    let r = post_raw(
        &s,
        "/v2/models/simple/infer",
        &[("content-encoding", "gzip"), ("accept-encoding", "gzip")],
        gzip(body.as_bytes()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_simple_answer(&Reply {
        status: 200,
        headers: Default::default(),
        body: plain.into(),
    });

    // tritonclient's "deflate" is zlib-wrapped, both ways.
    let r = post_raw(
        &s,
        "/v2/models/simple/infer",
        &[
            ("content-encoding", "deflate"),
            ("accept-encoding", "deflate"),
        ],
        zlib(body.as_bytes()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-encoding").as_deref(), Some("deflate"));
    let mut plain = Vec::new();
    flate2::read::ZlibDecoder::new(&r.body[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_simple_answer(&Reply {
        status: 200,
        headers: Default::default(),
        body: plain.into(),
    });

    // Binary answers keep their header length (of the uncompressed body) when compressed.
    let mut req = simple_request();
    req["parameters"] = json!({"binary_data_output": true});
    let r = post_raw(
        &s,
        "/v2/models/simple/infer",
        &[("accept-encoding", "gzip")],
        req.to_string(),
    )
    .await;
    let n: usize = r
        .header("inference-header-content-length")
        .unwrap()
        .parse()
        .unwrap();
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_end(&mut plain)
        .unwrap();
    let head: serde_json::Value = serde_json::from_slice(&plain[..n]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 64);
    assert_eq!(plain.len(), n + 128);

    // An encoding the server lacks is a 415 with a JSON error.
    let r = post_raw(
        &s,
        "/v2/models/simple/infer",
        &[("content-encoding", "br")],
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(r.error().contains("Content-Encoding"), "{}", r.error());

    // A corrupt gzip body is a 400, and the server goes on.
    let r = post_raw(
        &s,
        "/v2/models/simple/infer",
        &[("content-encoding", "gzip")],
        &b"\x1f\x8bnot gzip at all"[..],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_still_serves(&s).await;
    s.stop().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_and_concurrency() {
    let s = start_default().await;
    let h2: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let body = simple_request().to_string();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (h2, url, body) = (h2.clone(), s.url("/v2/models/simple/infer"), body.clone());
        tasks.push(tokio::spawn(async move {
            let req = hyper::Request::post(url)
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let resp = h2.request(req).await.unwrap();
            assert_eq!(resp.version(), hyper::Version::HTTP_2);
            let status = resp.status().as_u16();
            Reply {
                status,
                headers: resp.headers().clone(),
                body: resp.into_body().collect().await.unwrap().to_bytes(),
            }
        }));
    }
    for t in tasks {
        assert_simple_answer(&t.await.unwrap());
    }
    // HTTP/1.1 on the same port, concurrently too.
    let h1 = client();
    let url = s.url("/v2/models/simple/infer");
    let replies =
        futures::future::join_all((0..64).map(|_| send(&h1, "POST", &url, &[], body.clone())))
            .await;
    replies.iter().for_each(assert_simple_answer);
    let stats = get(&s, "/v2/models/simple/stats").await.json();
    assert_eq!(
        stats["model_stats"][0]["inference_stats"]["success"]["count"],
        128
    );
    s.stop().await;
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test]
async fn tls_with_http1_and_http2() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let args = RestArgs {
        http_use_ssl: true,
        http_server_cert: Some(fixture("localhost.crt")),
        http_server_key: Some(fixture("localhost.key")),
        ..RestArgs::default()
    };
    let s = start(ModelControlMode::None, args).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixture("localhost.crt")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let io = TokioIo::new(tls);
        let body = Full::new(Bytes::from(simple_request().to_string()));
        let req = hyper::Request::post(format!(
            "https://localhost:{}/v2/models/simple/infer",
            s.addr.port()
        ));
        let resp = if alpn == b"h2" {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender.send_request(req.body(body).unwrap()).await.unwrap()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            sender
                .send_request(req.header("host", "localhost").body(body).unwrap())
                .await
                .unwrap()
        };
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_simple_answer(&Reply {
            status,
            headers: Default::default(),
            body,
        });
    }
    // Cleartext on a TLS port gets nowhere.
    let r = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>()
        .get(s.url("/v2/health/live").parse().unwrap())
        .await;
    assert!(r.is_err() || r.unwrap().status() != 200);
    s.stop().await;
}

#[tokio::test]
async fn tls_config_errors_are_clear() {
    let args = |cert: &str, key: &str| nereid_rest::RestArgs {
        http_use_ssl: true,
        http_server_cert: Some(fixture(cert)),
        http_server_key: Some(fixture(key)),
        ..Default::default()
    };
    let missing = args("nope.crt", "localhost.key").tls().unwrap_err();
    assert!(format!("{missing:#}").contains("nope.crt"), "{missing:#}");
    let swapped = args("localhost.key", "localhost.crt").tls().unwrap_err();
    assert!(format!("{swapped:#}").contains("localhost"), "{swapped:#}");
    let no_files = nereid_rest::RestArgs {
        http_use_ssl: true,
        ..Default::default()
    };
    let err = no_files.tls().unwrap_err().to_string();
    assert!(err.contains("--http-server-cert"), "{err}");
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let s = start_default().await;
    let addr = s.addr;
    assert_still_serves(&s).await;
    s.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn bare_server_answers_like_the_real_one() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(nereid_rest::serve_bare(listener, async move {
        let _ = rx.await;
    }));
    let r = send(
        &client(),
        "POST",
        &format!("http://{addr}/v2/models/simple/infer"),
        &[],
        simple_request().to_string(),
    )
    .await;
    assert_simple_answer(&r);
    assert_eq!(r.json()["id"], "req-1");
    let r = send(
        &client(),
        "POST",
        &format!("http://{addr}/v2/models/other/infer"),
        &[],
        simple_request().to_string(),
    )
    .await;
    assert_eq!(r.status, 404);
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn http2_connections_are_bounded_in_streams_and_header_size() {
    let s = start_default().await;
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = |path: &str| {
        http::Request::get(format!("http://{}{path}", s.addr))
            .body(())
            .unwrap()
    };
    // The first exchange carries the server's SETTINGS.
    let (response, _) = client
        .send_request(request("/v2/health/live"), true)
        .unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    assert_eq!(
        client.current_max_send_streams(),
        nereid_rest::MAX_CONCURRENT_STREAMS as usize
    );

    let mut big = request("/v2/health/live");
    let filler = "x".repeat(nereid_rest::MAX_HEADER_LIST_SIZE as usize);
    big.headers_mut()
        .insert("x-filler", filler.parse().unwrap());
    let mut client = client.ready().await.unwrap();
    let (response, _) = client.send_request(big, true).unwrap();
    match response.await {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => assert_eq!(e.reason(), Some(h2::Reason::REFUSED_STREAM), "{e}"),
    }
    // The connection stays usable.
    let mut client = client.ready().await.unwrap();
    let (response, _) = client
        .send_request(request("/v2/health/live"), true)
        .unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    s.stop().await;
}
