//! The listener loop: HTTP/1.1 and HTTP/2 (h2c by prior knowledge, or ALPN under TLS) on
//! one port, optional TLS through rustls (reloaded on SIGHUP or when its files change),
//! graceful shutdown.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use nereid_tls::ServerTls;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::streams::ClientAddr;
use crate::RestArgs;

/// How long open connections may take to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// HTTP/2 streams (requests) one connection may have open at once; a client past it
/// waits (its HTTP/2 stack queues the request).
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Largest HTTP/2 header block of one request, in bytes. HTTP/1.1 headers are bounded by
/// hyper's read buffer (about 400 KiB, at most 100 headers) and answered 431 past it.
pub const MAX_HEADER_LIST_SIZE: u32 = 16 << 10;

/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` resolves: HTTP/1.1 and HTTP/2 on the same
/// port (HTTP/2 cleartext by prior knowledge, or negotiated by ALPN under TLS), TLS when
/// `--http-use-ssl`. On shutdown it stops accepting, lets open connections finish their
/// requests (at most [`SHUTDOWN_GRACE`]) and returns.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    args: &RestArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    server(router, listener, args, shutdown)?.await
}

/// Builds the HTTP server and returns the future that runs it ([`serve`] in two steps).
/// A wrong TLS configuration fails here, before the server is announced.
pub fn server(
    router: Router,
    listener: TcpListener,
    args: &RestArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<impl Future<Output = anyhow::Result<()>> + Send> {
    args.http_restricted_api
        .iter()
        .cloned()
        .collect::<nereid_kserve::Restrictions>()
        .validate()
        .map_err(anyhow::Error::msg)
        .context("--http-restricted-api")?;
    let tls = args.tls()?;
    Ok(listen(router, listener, tls, shutdown))
}

/// Serves any router on `listener` (the HTTP door, the metrics door) with optional TLS,
/// until `shutdown` resolves: the loop [`serve`] runs, for a caller that built its TLS.
pub fn listen(
    router: Router,
    listener: TcpListener,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = anyhow::Result<()>> + Send {
    accept_loop(router, listener, tls, shutdown)
}

async fn accept_loop(
    router: Router,
    listener: TcpListener,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Ends on its own once this loop and its connections drop their `ServerTls`.
    let _reloading = tls.as_ref().map(ServerTls::reload_on_change);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A timer lets HTTP/1 time out clients that never finish their headers.
    builder.http1().timer(TokioTimer::new());
    // Large tensors over HTTP/2 need more than the 64 KiB default window to stream well.
    builder
        .http2()
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_SIZE);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        // The per-client limits of the layer stack read the peer from the request.
        let client = ClientAddr(peer.ip());
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(client);
                request
            },
        ));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        // The configuration in force when the connection arrives, reloads included.
        let tls = tls.as_ref().map(ServerTls::acceptor);
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    watcher
                        .watch(
                            builder
                                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                                .into_owned(),
                        )
                        .await
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                return tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                        };
                    watcher
                        .watch(
                            builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .into_owned(),
                        )
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("HTTP connections still open {SHUTDOWN_GRACE:?} after shutdown began; closing them");
        }
    }
    Ok(())
}
