//! The listener loop: HTTP/1.1 and HTTP/2 (h2c by prior knowledge, or ALPN under TLS) on
//! one port, optional TLS through rustls, graceful shutdown.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::RestArgs;

/// How long open connections may take to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

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
    let tls = if args.http_use_ssl {
        let (Some(cert), Some(key)) = (&args.http_server_cert, &args.http_server_key) else {
            anyhow::bail!("--http-use-ssl needs --http-server-cert and --http-server-key");
        };
        Some(TlsAcceptor::from(Arc::new(tls_config(cert, key)?)))
    } else {
        None
    };
    Ok(accept_loop(router, listener, tls, shutdown))
}

async fn accept_loop(
    router: Router,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A timer lets HTTP/1 time out clients that never finish their headers.
    builder.http1().timer(TokioTimer::new());
    // Large tensors over HTTP/2 need more than the 64 KiB default window to stream well.
    builder
        .http2()
        .timer(TokioTimer::new())
        .adaptive_window(true);
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
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
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

/// A rustls server config from PEM files, offering HTTP/2 and HTTP/1.1 by ALPN. The ring
/// provider is named explicitly, so the process needs no default provider installed.
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the certificate file {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot parse the certificates in {}", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no PEM certificate",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a PEM private key from {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("rustls protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not form a usable pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
