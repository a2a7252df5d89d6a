//! A client that goes away while its request waits in the queue costs nothing: the request
//! is dropped unanswered and never computed. Over HTTP/2 a closed stream or connection
//! drops the handler at once. (Over HTTP/1.1 the server learns of a closed connection only
//! when it writes the answer, so such a request is still computed: docs/RELIABILITY.md.)

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

fn sleep_request(ms: u32) -> hyper::Request<Full<Bytes>> {
    let body =
        format!(r#"{{"inputs":[{{"name":"MS","datatype":"UINT32","shape":[1],"data":[{ms}]}}]}}"#);
    hyper::Request::post("http://test/v2/models/sleep/infer")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_request_whose_client_left_while_queued_is_never_computed() {
    let server = common::start_default().await;
    let io = TokioIo::new(TcpStream::connect(server.addr).await.unwrap());
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    // The single instance computes for 800 ms; the second request waits behind it.
    let busy = tokio::spawn(sender.send_request(sleep_request(800)));
    wait_until("the first request computing", || {
        server.engine.inflight() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiting = tokio::spawn(sender.send_request(sleep_request(1)));
    wait_until("the second request queued", || {
        server.engine.inflight() == 2
    })
    .await;
    // The client goes away: its connection closes with both requests unanswered.
    connection.abort();
    busy.abort();
    waiting.abort();
    drop(sender);
    wait_until("the first request finished", || {
        server.engine.inflight() == 0
    })
    .await;
    let stats = server.engine.model_statistics(Some("sleep"), None).unwrap()[0].clone();
    assert_eq!(
        stats.execution_count, 1,
        "only the first request ran: {stats:?}"
    );
    server.stop().await;
}
