//! Command-line options of the HTTP frontend, flattened into `nereid serve`.

use std::path::PathBuf;

use nereid_kserve::{ApiKeys, Restriction};

/// Default `--http-max-input-size`: 64 MiB, as Triton's.
pub const DEFAULT_MAX_INPUT_SIZE: usize = 64 << 20;

/// Options of the HTTP/REST frontend (Triton's `--http-*` flags, plus TLS which Triton's
/// HTTP endpoint lacks).
#[derive(clap::Args, Clone, Debug)]
pub struct RestArgs {
    /// Largest request body accepted, after decompression, in bytes (suffixes K, M, G, KiB,
    /// MiB, GiB accepted); larger bodies get 413.
    #[arg(
        long = "http-max-input-size",
        env = "NEREID_HTTP_MAX_INPUT_SIZE",
        default_value = "64MiB",
        value_parser = parse_size
    )]
    pub http_max_input_size: usize,

    /// Serve HTTPS (TLS through rustls) instead of cleartext HTTP; needs
    /// `--http-server-cert` and `--http-server-key`.
    #[arg(long = "http-use-ssl", env = "NEREID_HTTP_USE_SSL")]
    pub http_use_ssl: bool,

    /// PEM file with the server certificate chain (leaf first).
    #[arg(
        long = "http-server-cert",
        env = "NEREID_HTTP_SERVER_CERT",
        requires = "http_server_key"
    )]
    pub http_server_cert: Option<PathBuf>,

    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long = "http-server-key",
        env = "NEREID_HTTP_SERVER_KEY",
        requires = "http_server_cert"
    )]
    pub http_server_key: Option<PathBuf>,

    /// The API keys every route but health requires (the binary's `--api-key`, shared
    /// with the gRPC door); none: open.
    #[arg(skip)]
    pub api_keys: ApiKeys,

    /// Restrict API groups to requests carrying a header (Triton's flag):
    /// `GROUP[,GROUP...]:HEADER=VALUE`, repeatable; groups: health, metadata, inference,
    /// shared-memory, model-config, model-repository, statistics, trace, logging.
    /// A request without the header is 403.
    #[arg(long = "http-restricted-api", value_name = "GROUPS:HEADER=VALUE")]
    pub http_restricted_api: Vec<Restriction>,

    /// Server-sent event streams (generate_stream, OpenAI `stream: true`) one client IP
    /// address may have open at once; past it a new stream is 429 with `Retry-After`.
    /// 0: no limit (the default, as clients behind one proxy share its address).
    #[arg(
        long = "http-max-streams-per-client",
        env = "NEREID_HTTP_MAX_STREAMS_PER_CLIENT",
        default_value_t = 0
    )]
    pub http_max_streams_per_client: usize,

    /// One access log line per request (the binary's `--access-log`, shared with the gRPC
    /// door).
    #[arg(skip)]
    pub access_log: bool,
}

impl Default for RestArgs {
    /// The defaults of the command line: 64 MiB bodies, cleartext, no stream limit.
    fn default() -> Self {
        Self {
            http_max_input_size: DEFAULT_MAX_INPUT_SIZE,
            http_use_ssl: false,
            http_server_cert: None,
            http_server_key: None,
            api_keys: ApiKeys::default(),
            http_restricted_api: Vec::new(),
            http_max_streams_per_client: 0,
            access_log: false,
        }
    }
}

impl RestArgs {
    /// The HTTP door's TLS from `--http-use-ssl` and its files; `None` when off. Every
    /// problem with the files is an error here, before the server is announced.
    pub fn tls(&self) -> anyhow::Result<Option<nereid_tls::ServerTls>> {
        if !self.http_use_ssl {
            return Ok(None);
        }
        let (Some(cert), Some(key)) = (&self.http_server_cert, &self.http_server_key) else {
            anyhow::bail!("--http-use-ssl needs --http-server-cert and --http-server-key");
        };
        let files = nereid_tls::TlsFiles::new(cert, key);
        nereid_tls::ServerTls::load("HTTP", files, nereid_tls::ALPN_H2_HTTP1).map(Some)
    }
}

/// Parses a byte size: a plain number of bytes, or one with a decimal (K, M, G) or binary
/// (KiB, MiB, GiB) suffix.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size in bytes (like 67108864 or 64MiB)"))?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "'{text}' has an unknown unit; use K, M, G, KiB, MiB or GiB"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64MiB").unwrap(), DEFAULT_MAX_INPUT_SIZE);
        assert_eq!(parse_size("2K").unwrap(), 2000);
        assert!(parse_size("12 parsecs").unwrap_err().contains("unit"));
        assert!(parse_size("MiB").is_err());
    }
}
