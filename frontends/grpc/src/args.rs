//! Command-line flags of the gRPC frontend, named as Triton's where Triton has them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, ValueEnum};
use nereid_kserve::{ApiKeys, Restriction};

/// Default largest message in either direction: Triton's (`i32::MAX` bytes, just under
/// 2 GiB), so large tensors that work against Triton work here. Lower it to bound the
/// memory one request can take.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = i32::MAX as usize;

/// Default HTTP/2 keepalive ping interval in milliseconds (Triton's: 2 hours).
pub(crate) const DEFAULT_KEEPALIVE_TIME_MS: u64 = 7_200_000;

/// Default wait for a keepalive ping's answer in milliseconds (Triton's: 20 seconds).
pub(crate) const DEFAULT_KEEPALIVE_TIMEOUT_MS: u64 = 20_000;

/// Compression of inference responses (Triton's `--grpc-infer-response-compression-level`).
/// Requests are always accepted gzip-compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum CompressionLevel {
    /// Never compress responses.
    #[default]
    None,
    /// gzip responses to clients that accept gzip (tonic has one gzip level: all three
    /// levels mean the same).
    Low,
    /// As `low`.
    Medium,
    /// As `low`.
    High,
}

/// Flags of the gRPC frontend. The listening address and port belong to the binary, which
/// binds the listener and hands it to [`crate::serve`].
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct GrpcArgs {
    /// Serve gRPC over TLS (needs --grpc-server-cert and --grpc-server-key).
    #[arg(long, env = "NEREID_GRPC_USE_SSL", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = false, default_missing_value = "true")]
    pub grpc_use_ssl: bool,

    /// Require and verify client certificates against --grpc-root-cert (mutual TLS);
    /// implies --grpc-use-ssl.
    #[arg(long, env = "NEREID_GRPC_USE_SSL_MUTUAL", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = false, default_missing_value = "true")]
    pub grpc_use_ssl_mutual: bool,

    /// PEM file of the server's certificate chain.
    #[arg(long, env = "NEREID_GRPC_SERVER_CERT", value_name = "PEM")]
    pub grpc_server_cert: Option<PathBuf>,

    /// PEM file of the server's private key.
    #[arg(long, env = "NEREID_GRPC_SERVER_KEY", value_name = "PEM")]
    pub grpc_server_key: Option<PathBuf>,

    /// PEM file of the CA certificates client certificates must chain to (mutual TLS).
    #[arg(long, env = "NEREID_GRPC_ROOT_CERT", value_name = "PEM")]
    pub grpc_root_cert: Option<PathBuf>,

    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, env = "NEREID_GRPC_MAX_MESSAGE_SIZE", value_name = "BYTES",
          default_value_t = DEFAULT_MAX_MESSAGE_SIZE)]
    pub grpc_max_message_size: usize,

    /// Interval of HTTP/2 keepalive pings to idle clients, in milliseconds (0 disables them).
    #[arg(long, env = "NEREID_GRPC_KEEPALIVE_TIME", value_name = "MS",
          default_value_t = DEFAULT_KEEPALIVE_TIME_MS)]
    pub grpc_keepalive_time: u64,

    /// How long to wait for a keepalive ping's answer before closing the connection, in
    /// milliseconds.
    #[arg(long, env = "NEREID_GRPC_KEEPALIVE_TIMEOUT", value_name = "MS",
          default_value_t = DEFAULT_KEEPALIVE_TIMEOUT_MS)]
    pub grpc_keepalive_timeout: u64,

    /// Compress inference responses with gzip for clients that accept it.
    #[arg(long, env = "NEREID_GRPC_INFER_RESPONSE_COMPRESSION_LEVEL", value_enum,
          default_value_t = CompressionLevel::None)]
    pub grpc_infer_response_compression_level: CompressionLevel,

    /// The API keys the inference service requires as `authorization: Bearer <key>`
    /// metadata (the binary's `--api-key`, shared with the HTTP door); health and
    /// reflection stay open. None: open.
    #[arg(skip)]
    pub api_keys: ApiKeys,

    /// Restrict API groups to calls carrying a header (Triton's flag):
    /// `GROUP[,GROUP...]:HEADER=VALUE`, repeatable; groups: health, metadata, inference,
    /// shared-memory, model-config, model-repository, statistics, trace, logging.
    /// A call without the header is PERMISSION_DENIED.
    #[arg(long = "grpc-restricted-protocol", value_name = "GROUPS:HEADER=VALUE")]
    pub grpc_restricted_protocol: Vec<Restriction>,

    /// One access log line per call (the binary's `--access-log`, shared with the HTTP door).
    #[arg(skip)]
    pub access_log: bool,
}

impl Default for GrpcArgs {
    fn default() -> Self {
        Self {
            grpc_use_ssl: false,
            grpc_use_ssl_mutual: false,
            grpc_server_cert: None,
            grpc_server_key: None,
            grpc_root_cert: None,
            grpc_max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            grpc_keepalive_time: DEFAULT_KEEPALIVE_TIME_MS,
            grpc_keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT_MS,
            grpc_infer_response_compression_level: CompressionLevel::None,
            api_keys: ApiKeys::default(),
            grpc_restricted_protocol: Vec::new(),
            access_log: false,
        }
    }
}

impl GrpcArgs {
    /// Whether TLS is on (mutual TLS implies it).
    pub fn tls_enabled(&self) -> bool {
        self.grpc_use_ssl || self.grpc_use_ssl_mutual
    }

    /// The keepalive ping interval, `None` when disabled.
    pub fn keepalive_interval(&self) -> Option<Duration> {
        (self.grpc_keepalive_time > 0).then(|| Duration::from_millis(self.grpc_keepalive_time))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        grpc: GrpcArgs,
    }

    #[test]
    fn defaults_match_default_and_triton_spellings_parse() {
        assert_eq!(Cli::parse_from(["nereid"]).grpc, GrpcArgs::default());
        let a = Cli::parse_from([
            "nereid",
            "--grpc-use-ssl=true",
            "--grpc-use-ssl-mutual",
            "--grpc-server-cert",
            "c.pem",
            "--grpc-max-message-size",
            "1024",
            "--grpc-infer-response-compression-level",
            "high",
        ])
        .grpc;
        assert!(a.grpc_use_ssl && a.grpc_use_ssl_mutual && a.tls_enabled());
        assert_eq!(a.grpc_server_cert, Some(PathBuf::from("c.pem")));
        assert_eq!(a.grpc_max_message_size, 1024);
        assert_eq!(
            a.grpc_infer_response_compression_level,
            CompressionLevel::High
        );
        let off = Cli::parse_from([
            "nereid",
            "--grpc-use-ssl",
            "false",
            "--grpc-keepalive-time",
            "0",
        ])
        .grpc;
        assert!(!off.tls_enabled());
        assert_eq!(off.keepalive_interval(), None);
    }
}
