//! TLS for every listener of Nereid (HTTP, gRPC, metrics): a rustls server configuration
//! read from PEM files, optionally verifying client certificates (mutual TLS), that can be
//! re-read while the server runs.
//!
//! A [`ServerTls`] is shared by a listener's accept loop, which takes a fresh
//! [`acceptor`](ServerTls::acceptor) per connection: after [`reload`](ServerTls::reload),
//! new handshakes present the new certificate while open connections carry on with the
//! one they negotiated, so nothing is dropped. [`ServerTls::reload_on_change`] reloads on
//! SIGHUP and when the files change on disk (a Kubernetes Secret or cert-manager renewal
//! replaces them in place). A reload that fails keeps the certificate in use and says why.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use nereid_tls::{ServerTls, TlsFiles, ALPN_H2_HTTP1};
//!
//! let files = TlsFiles::new("server.pem", "server.key");
//! let tls = ServerTls::load("HTTP", files, ALPN_H2_HTTP1)?;
//! let acceptor = tls.acceptor(); // one per accepted connection
//! # let _ = acceptor;
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio_rustls::TlsAcceptor;

pub use tokio_rustls::server::TlsStream;

/// ALPN for a door that speaks HTTP/2 and HTTP/1.1 (REST, gRPC with gRPC-Web, metrics).
pub const ALPN_H2_HTTP1: &[&[u8]] = &[b"h2", b"http/1.1"];

/// How often [`ServerTls::reload_on_change`] looks at the files.
pub const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// The PEM files a listener's TLS is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates a client certificate must chain to; `None`: no client certificate
    /// is asked for.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Server certificate and key, no client certificates.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
        }
    }

    /// Requires client certificates that chain to the CAs in `ca` (mutual TLS).
    pub fn with_client_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.client_ca = Some(ca.into());
        self
    }

    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }

    /// What the files look like on disk now: changes when any is replaced or rewritten.
    fn fingerprint(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.paths()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }
}

/// A listener's TLS configuration, shared by its accept loop and reloadable in place.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    door: &'static str,
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("door", &self.inner.door)
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the files for the listener named `door` (used in messages), offering `alpn`.
    /// Errors name the file and what is wrong with it.
    pub fn load(door: &'static str, files: TlsFiles, alpn: &[&[u8]]) -> anyhow::Result<Self> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let config = server_config(&files, &alpn)?;
        Ok(Self {
            inner: Arc::new(Inner {
                door,
                files,
                alpn,
                current: RwLock::new(Arc::new(config)),
            }),
        })
    }

    /// An acceptor with the configuration in force now; take one per connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config())
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The files this configuration is read from.
    pub fn files(&self) -> &TlsFiles {
        &self.inner.files
    }

    /// Re-reads the files. On error the configuration in force stays, and the error says
    /// which file is wrong.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = server_config(&self.inner.files, &self.inner.alpn)?;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// Spawns a task on the current Tokio runtime that reloads on SIGHUP and when the files
    /// change (checked every [`FILE_CHECK_INTERVAL`]); it ends once every clone of this
    /// `ServerTls` is dropped. Each outcome is logged.
    pub fn reload_on_change(&self) -> tokio::task::JoinHandle<()> {
        self.reload_on_change_every(FILE_CHECK_INTERVAL)
    }

    /// [`reload_on_change`](Self::reload_on_change), looking at the files every `every`.
    pub fn reload_on_change_every(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let door = self.inner.door;
        let mut seen = self.inner.files.fingerprint();
        tokio::spawn(async move {
            let mut hangup = hangup_signal();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let why = tokio::select! {
                    _ = recv_hangup(&mut hangup) => "SIGHUP",
                    _ = tick.tick() => "file change",
                };
                let Some(tls) = upgrade(&weak) else { return };
                if why == "file change" {
                    let now = tls.inner.files.fingerprint();
                    if now == seen {
                        continue;
                    }
                    seen = now;
                }
                match tls.reload() {
                    Ok(()) => tracing::info!(door, trigger = why, "TLS certificate reloaded"),
                    Err(e) => tracing::error!(
                        door,
                        trigger = why,
                        error = %format!("{e:#}"),
                        "TLS reload failed; the certificate in use stays"
                    ),
                }
            }
        })
    }
}

fn upgrade(weak: &Weak<Inner>) -> Option<ServerTls> {
    weak.upgrade().map(|inner| ServerTls { inner })
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

#[cfg(unix)]
async fn recv_hangup(hangup: &mut Hangup) {
    match hangup {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}
#[cfg(not(unix))]
async fn recv_hangup(_: &mut Hangup) {
    std::future::pending().await
}

/// A rustls server configuration from the files, with the ring provider named explicitly
/// so the process needs no default provider installed.
fn server_config(files: &TlsFiles, alpn: &[Vec<u8>]) -> anyhow::Result<rustls::ServerConfig> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("cannot read a PEM private key from {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("rustls protocol versions")?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .with_context(|| format!("a CA certificate in {} is unusable", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("cannot verify clients against {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "the certificate {} and key {} do not form a usable pair",
            files.cert.display(),
            files.key.display()
        )
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read the certificate file {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot parse the certificates in {}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no PEM certificate",
        path.display()
    );
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (cert.pem(), signing_key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[tokio::test]
    async fn replaced_files_are_picked_up_without_a_signal() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed("one.test");
        let files = TlsFiles::new(
            write(dir.path(), "c.pem", &cert),
            write(dir.path(), "k.pem", &key),
        );
        let tls = ServerTls::load("HTTP", files, ALPN_H2_HTTP1).unwrap();
        let first = tls.config();
        let watcher = tls.reload_on_change_every(Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            Arc::ptr_eq(&first, &tls.config()),
            "nothing changed, nothing reloaded"
        );

        // A bigger key file than before: the fingerprint changes even within one mtime tick.
        let (cert, key) = self_signed("a-longer-name-than-before.test");
        write(dir.path(), "c.pem", &cert);
        write(dir.path(), "k.pem", &key);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while Arc::ptr_eq(&first, &tls.config()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the new files were not loaded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(tls);
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("the watcher ends with its ServerTls")
            .unwrap();
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsFiles::new(dir.path().join("none.pem"), dir.path().join("none.key"));
        let err = format!(
            "{:#}",
            ServerTls::load("HTTP", missing, ALPN_H2_HTTP1).unwrap_err()
        );
        assert!(err.contains("none.pem"), "{err}");
        let empty = write(dir.path(), "empty.pem", "");
        let (_, key) = self_signed("localhost");
        let key = write(dir.path(), "k.pem", &key);
        let err = format!(
            "{:#}",
            ServerTls::load("HTTP", TlsFiles::new(&empty, &key), ALPN_H2_HTTP1).unwrap_err()
        );
        assert!(err.contains("holds no PEM certificate"), "{err}");
    }

    #[test]
    fn a_reload_swaps_the_certificate_and_a_bad_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed("one.test");
        let files = TlsFiles::new(
            write(dir.path(), "c.pem", &cert),
            write(dir.path(), "k.pem", &key),
        );
        let tls = ServerTls::load("gRPC", files.clone(), ALPN_H2_HTTP1).unwrap();
        let first = tls.config();
        assert_eq!(
            first.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );

        let (cert, key) = self_signed("two.test");
        write(dir.path(), "c.pem", &cert);
        write(dir.path(), "k.pem", &key);
        tls.reload().unwrap();
        let second = tls.config();
        assert!(!Arc::ptr_eq(&first, &second));

        write(dir.path(), "c.pem", "not a certificate");
        let err = format!("{:#}", tls.reload().unwrap_err());
        assert!(err.contains("c.pem"), "{err}");
        assert!(
            Arc::ptr_eq(&tls.config(), &second),
            "a failed reload keeps the old one"
        );
    }
}
