//! TLS and mutual TLS from Triton's flags, through rustls with certificates that reload on
//! SIGHUP or when their files change (`nereid-tls`), and the accepted connections
//! handshaken concurrently, so a slow or silent client never holds up the next one.

use std::time::Duration;

use anyhow::bail;
use nereid_tls::{ServerTls, TlsFiles, TlsStream, ALPN_H2_HTTP1};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;

use crate::GrpcArgs;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Finished handshakes waiting for the server to take them.
const HANDSHAKED_BACKLOG: usize = 64;

/// The server's TLS, or `None` when TLS is off. Missing or unreadable files are errors
/// naming the flag or the file, so a misconfigured server fails at start instead of at the
/// first handshake. HTTP/1.1 is offered besides HTTP/2 for gRPC-Web.
pub(crate) fn server_tls(args: &GrpcArgs) -> anyhow::Result<Option<ServerTls>> {
    if !args.tls_enabled() {
        if args.grpc_server_cert.is_some() || args.grpc_server_key.is_some() {
            tracing::warn!(
                "--grpc-server-cert/--grpc-server-key are ignored without --grpc-use-ssl"
            );
        }
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&args.grpc_server_cert, &args.grpc_server_key) else {
        bail!("--grpc-use-ssl needs both --grpc-server-cert and --grpc-server-key");
    };
    let mut files = TlsFiles::new(cert, key);
    if args.grpc_use_ssl_mutual {
        let Some(root) = &args.grpc_root_cert else {
            bail!("--grpc-use-ssl-mutual needs --grpc-root-cert to verify client certificates against");
        };
        files = files.with_client_ca(root);
    }
    ServerTls::load("gRPC", files, ALPN_H2_HTTP1).map(Some)
}

/// The connections accepted on `listener`, each through a TLS handshake with the
/// configuration in force when it arrived. Runs until the server drops the stream.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: ServerTls,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(HANDSHAKED_BACKLOG);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "gRPC accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Nagle's algorithm would hold small responses back for a delayed ACK.
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "gRPC TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "gRPC TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked() {
        assert!(server_tls(&GrpcArgs::default()).unwrap().is_none());
        let args = GrpcArgs {
            grpc_use_ssl: true,
            ..GrpcArgs::default()
        };
        assert!(server_tls(&args)
            .unwrap_err()
            .to_string()
            .contains("--grpc-server-cert"));
        let args = GrpcArgs {
            grpc_use_ssl_mutual: true,
            grpc_server_cert: Some("/nonexistent/cert.pem".into()),
            grpc_server_key: Some("/nonexistent/key.pem".into()),
            ..GrpcArgs::default()
        };
        assert!(server_tls(&args)
            .unwrap_err()
            .to_string()
            .contains("--grpc-root-cert"));
        let args = GrpcArgs {
            grpc_use_ssl: true,
            grpc_server_cert: Some("/nonexistent/cert.pem".into()),
            grpc_server_key: Some("/nonexistent/key.pem".into()),
            ..GrpcArgs::default()
        };
        assert!(format!("{:#}", server_tls(&args).unwrap_err()).contains("/nonexistent/cert.pem"));
    }
}
