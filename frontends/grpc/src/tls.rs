//! TLS and mutual TLS (rustls, through tonic) from Triton's flags.

use anyhow::{bail, Context};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::GrpcArgs;

fn read(path: &std::path::Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the gRPC {what} {}", path.display()))
}

/// The server's TLS configuration, or `None` when TLS is off. Missing or unreadable
/// files are errors naming the flag, so a misconfigured server fails at start instead of
/// at the first handshake.
pub(crate) fn server_config(args: &GrpcArgs) -> anyhow::Result<Option<ServerTlsConfig>> {
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
    let identity = Identity::from_pem(read(cert, "server certificate")?, read(key, "server key")?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if args.grpc_use_ssl_mutual {
        let Some(root) = &args.grpc_root_cert else {
            bail!("--grpc-use-ssl-mutual needs --grpc-root-cert to verify client certificates against");
        };
        config = config
            .client_ca_root(Certificate::from_pem(read(root, "root certificate")?))
            .client_auth_optional(false);
    }
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked() {
        assert!(server_config(&GrpcArgs::default()).unwrap().is_none());
        let args = GrpcArgs {
            grpc_use_ssl: true,
            ..GrpcArgs::default()
        };
        assert!(server_config(&args)
            .unwrap_err()
            .to_string()
            .contains("--grpc-server-cert"));
        let args = GrpcArgs {
            grpc_use_ssl_mutual: true,
            grpc_server_cert: Some("/nonexistent/cert.pem".into()),
            grpc_server_key: Some("/nonexistent/key.pem".into()),
            ..GrpcArgs::default()
        };
        assert!(server_config(&args)
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/cert.pem"));
    }
}
