//! Servers to measure: the real Nereid (engine and frontends) and the bare tonic / axum
//! servers, hosted in this process on a runtime of their own, or a `nereid serve` binary
//! spawned with ports 0 and read from its `NEREID_READY` line.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use nereid_engine::builtin::demo::{write_repository, BUILTIN_MODELS};
use nereid_engine::{BackendRegistry, Engine, EngineOptions};
use tokio::sync::watch;

use crate::cpu::CpuSource;

/// A running server: where it listens, and what keeps it alive (dropping stops it).
pub struct RunningServer {
    /// The HTTP/REST address, when it serves REST.
    pub http: Option<SocketAddr>,
    /// The gRPC address, when it serves gRPC.
    pub grpc: Option<SocketAddr>,
    /// Where its CPU time is read.
    pub cpu: CpuSource,
    guard: Guard,
}

enum Guard {
    Process(Child),
    Hosted {
        runtime: Option<tokio::runtime::Runtime>,
        stop: watch::Sender<bool>,
        _repository: Option<tempfile::TempDir>,
    },
}

impl RunningServer {
    /// `http://` URL of the REST endpoint.
    pub fn http_url(&self) -> anyhow::Result<String> {
        self.http
            .map(|a| format!("http://{a}"))
            .ok_or_else(|| anyhow!("this server has no HTTP endpoint"))
    }

    /// `http://` URL of the gRPC endpoint.
    pub fn grpc_url(&self) -> anyhow::Result<String> {
        self.grpc
            .map(|a| format!("http://{a}"))
            .ok_or_else(|| anyhow!("this server has no gRPC endpoint"))
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        match &mut self.guard {
            Guard::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Guard::Hosted { runtime, stop, .. } => {
                let _ = stop.send(true);
                if let Some(runtime) = runtime.take() {
                    // Allowed from async code, unlike dropping the runtime.
                    runtime.shutdown_background();
                }
            }
        }
    }
}

/// A runtime of its own for servers hosted in this process, so they do not share worker
/// threads with the load generator (they still share the machine's cores).
struct Host {
    runtime: tokio::runtime::Runtime,
    stop: watch::Sender<bool>,
}

impl Host {
    fn new(name: &str, threads: usize) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            .enable_all()
            .build()?;
        Ok(Self {
            runtime,
            stop: watch::channel(false).0,
        })
    }

    fn bind(&self) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let _entered = self.runtime.enter();
        Ok((tokio::net::TcpListener::from_std(listener)?, addr))
    }

    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    fn spawn(
        &self,
        what: &'static str,
        server: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.runtime.spawn(async move {
            if let Err(e) = server.await {
                eprintln!("{what} server failed: {e:#}");
            }
        });
    }

    fn into_server(
        self,
        http: Option<SocketAddr>,
        grpc: Option<SocketAddr>,
        repo: Option<tempfile::TempDir>,
        threads: Vec<String>,
    ) -> RunningServer {
        RunningServer {
            http,
            grpc,
            cpu: CpuSource::Threads(threads),
            guard: Guard::Hosted {
                runtime: Some(self.runtime),
                stop: self.stop,
                _repository: repo,
            },
        }
    }
}

/// The default worker count of hosted servers: the machine's cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// Starts the real Nereid in this process: the engine over the built-in demo models, the
/// gRPC and REST frontends with their default flags, on loopback ports. Blocking (the
/// engine loads models): call it from a blocking thread.
pub fn nereid_in_process(threads: usize) -> anyhow::Result<RunningServer> {
    let repository = tempfile::tempdir()?;
    write_repository(repository.path(), BUILTIN_MODELS)?;
    let options = EngineOptions {
        repository: Some(repository.path().to_path_buf()),
        ..EngineOptions::default()
    };
    let engine = Engine::start(options, BackendRegistry::with_builtins())
        .context("cannot start the engine")?;
    let host = Host::new("nereid-server", threads)?;
    let (http, grpc) = serve_doors(&host, engine)?;
    Ok(host.into_server(Some(http), Some(grpc), Some(repository), engine_threads()))
}

/// The threads of the in-process engine and its frontends: the runtime's, and each
/// model's scheduler and instances (named `<model>-sched`, `<model>-inst<i>`).
fn engine_threads() -> Vec<String> {
    std::iter::once("nereid-server".to_string())
        .chain(BUILTIN_MODELS.iter().map(|(name, _)| format!("{name}-")))
        .collect()
}

/// Starts `nereid gateway` in this process, in front of the engine at `engine_grpc`: the
/// same frontends over an engine that forwards to it. Blocking (the gateway learns its
/// engine's models first): call it from a blocking thread.
pub fn gateway_in_process(
    threads: usize,
    engine_grpc: SocketAddr,
) -> anyhow::Result<RunningServer> {
    let host = Host::new("nereid-gateway", threads)?;
    let options = nereid_gateway::GatewayOptions {
        backends: vec![engine_grpc.to_string()],
        ..Default::default()
    };
    let gateway = host
        .runtime
        .block_on(nereid_gateway::Gateway::start(options))
        .map_err(|e| anyhow!(e))?;
    let engine = Engine::with_upstream(EngineOptions::default(), std::sync::Arc::new(gateway));
    if !engine.is_ready() {
        bail!("the gateway found no healthy engine at {engine_grpc}");
    }
    let (http, grpc) = serve_doors(&host, engine)?;
    Ok(host.into_server(Some(http), Some(grpc), None, vec!["nereid-gateway".into()]))
}

/// The gRPC and REST frontends of `engine`, with their default flags, on `host`.
fn serve_doors(host: &Host, engine: Engine) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let (grpc_listener, grpc) = host.bind()?;
    let (http_listener, http) = host.bind()?;
    let grpc_args = nereid_grpc::GrpcArgs::default();
    host.spawn(
        "gRPC",
        nereid_grpc::serve(engine.clone(), grpc_listener, grpc_args, host.stopped()),
    );
    let rest_args = nereid_rest::RestArgs::default();
    let router = nereid_rest::router(engine, &rest_args);
    let stopped = host.stopped();
    host.spawn("HTTP", async move {
        nereid_rest::serve(router, http_listener, &rest_args, stopped).await
    });
    Ok((http, grpc))
}

/// Starts the bare axum server of `nereid-rest` (answers `simple` without the engine).
pub fn bare_rest(threads: usize) -> anyhow::Result<RunningServer> {
    let host = Host::new("bare-rest", threads)?;
    let (listener, http) = host.bind()?;
    host.spawn(
        "bare HTTP",
        nereid_rest::serve_bare(listener, host.stopped()),
    );
    Ok(host.into_server(Some(http), None, None, vec!["bare-rest".into()]))
}

/// Starts the bare tonic server of `nereid-grpc` (answers `simple` without the engine).
pub fn bare_grpc(threads: usize) -> anyhow::Result<RunningServer> {
    let host = Host::new("bare-grpc", threads)?;
    let (listener, grpc) = host.bind()?;
    host.spawn(
        "bare gRPC",
        nereid_grpc::bare::serve_bare(listener, host.stopped()),
    );
    Ok(host.into_server(None, Some(grpc), None, vec!["bare-grpc".into()]))
}

/// Parses `NEREID_READY http=H:P grpc=H:P metrics=H:P`.
pub fn parse_ready_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix("NEREID_READY")?;
    let mut http = None;
    let mut grpc = None;
    for part in rest.split_whitespace() {
        match part.split_once('=') {
            Some(("http", a)) => http = a.parse().ok(),
            Some(("grpc", a)) => grpc = a.parse().ok(),
            _ => {}
        }
    }
    Some((http?, grpc?))
}

/// Spawns `binary serve` on ephemeral loopback ports with the weightless demo models and
/// waits (at most `timeout`) for its ready line. The process is killed on drop.
pub fn spawn_binary(binary: &Path, timeout: Duration) -> anyhow::Result<RunningServer> {
    let mut child = Command::new(binary)
        .args([
            "serve",
            "--address",
            "127.0.0.1",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .args(["--demo-models", "builtin"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(addrs) = parse_ready_line(&line) {
                let _ = tx.send(addrs);
            }
        }
    });
    match rx.recv_timeout(timeout) {
        Ok((http, grpc)) => Ok(RunningServer {
            http: Some(http),
            grpc: Some(grpc),
            cpu: CpuSource::Process(child.id()),
            guard: Guard::Process(child),
        }),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().ok();
            bail!(
                "{} printed no NEREID_READY line within {timeout:?} (exit: {status:?})",
                binary.display()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_parses() {
        let (http, grpc) = parse_ready_line(
            "NEREID_READY http=127.0.0.1:8000 grpc=127.0.0.1:8001 metrics=127.0.0.1:8002",
        )
        .unwrap();
        assert_eq!(http.port(), 8000);
        assert_eq!(grpc.port(), 8001);
        assert!(parse_ready_line("hello").is_none());
    }
}
