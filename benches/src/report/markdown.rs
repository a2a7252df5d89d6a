//! The report as markdown: a generated section between markers in `docs/BENCHMARKS.md`,
//! with the verdict on the seed article's claims, the issue targets, and the tables.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::{BareComparison, ReportData};
use crate::stats::Summary;

/// Start marker of the generated section.
pub const START: &str = "<!-- nereid-bench:report:start -->";
/// End marker of the generated section.
pub const END: &str = "<!-- nereid-bench:report:end -->";

/// Today's UTC date, `YYYY-MM-DD`.
pub fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Howard Hinnant's civil-from-days.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Cores and CPU model of this machine.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {cpu}, {}", std::env::consts::OS)
}

/// The 1-minute load average (Linux), a hint of how busy the machine was.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Finds a matrix cell by payload prefix, transport label and concurrency.
pub fn cell<'a>(
    data: &'a ReportData,
    payload: &str,
    transport: &str,
    concurrency: usize,
) -> Option<&'a Summary> {
    data.matrix
        .iter()
        .find(|m| {
            m.payload.starts_with(payload)
                && m.transport == transport
                && m.concurrency == concurrency
        })
        .map(|m| &m.summary)
}

fn bare<'a>(data: &'a ReportData, transport_prefix: &str) -> Vec<&'a BareComparison> {
    data.bare
        .iter()
        .filter(|b| b.transport.starts_with(transport_prefix))
        .collect()
}

/// Nereid's best throughput over the bare server's best, across concurrencies.
pub fn bare_ratio(data: &ReportData, transport_prefix: &str) -> Option<(f64, f64, f64)> {
    let rows = bare(data, transport_prefix);
    let n = rows
        .iter()
        .map(|b| b.nereid.requests_per_sec)
        .fold(0.0, f64::max);
    let b = rows
        .iter()
        .map(|b| b.bare.requests_per_sec)
        .fold(0.0, f64::max);
    (b > 0.0).then(|| (n / b, n, b))
}

fn ratio(a: Option<&Summary>, b: Option<&Summary>, f: impl Fn(&Summary) -> f64) -> Option<f64> {
    let (a, b) = (f(a?), f(b?));
    (b > 0.0).then_some(a / b)
}

fn status(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

fn fmt_opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}{unit}"))
}

/// The targets of the issues, as (target, measured, status) rows.
pub fn targets(data: &ReportData) -> Vec<(String, String, &'static str)> {
    let hi = data.high_concurrency;
    let mut rows = Vec::new();
    let p50 = cell(data, "simple", "gRPC", 1).map(|s| s.p50_us);
    rows.push((
        "gRPC `simple` p50 at concurrency 1 <= 60 us".into(),
        fmt_opt(p50, " us"),
        status(p50.map(|v| v <= 60.0)),
    ));
    let g = bare_ratio(data, "gRPC");
    rows.push((
        "gRPC `simple` max throughput >= 0.85x bare tonic".into(),
        g.map_or("-".into(), |(r, n, b)| {
            format!("{r:.2}x ({n:.0} vs {b:.0} req/s)")
        }),
        status(g.map(|(r, ..)| r >= 0.85)),
    ));
    for c in [1, hi] {
        for (transport, limit) in [("REST-binary h1", 1.1), ("REST-JSON h1", 1.5)] {
            let r = ratio(
                cell(data, "768", transport, c),
                cell(data, "768", "gRPC", c),
                |s| s.p50_us,
            );
            rows.push((
                format!(
                    "768-d `identity_fp32` {transport} p50 <= {limit}x gRPC at concurrency {c}"
                ),
                fmt_opt(r, "x"),
                status(r.map(|r| r <= limit)),
            ));
        }
    }
    let r = bare_ratio(data, "REST");
    rows.push((
        "`simple` REST max throughput >= 0.85x bare axum".into(),
        r.map_or("-".into(), |(r, n, b)| {
            format!("{r:.2}x ({n:.0} vs {b:.0} req/s)")
        }),
        status(r.map(|(r, ..)| r >= 0.85)),
    ));
    rows
}

/// Plain statements of where the seed article's claims held on Nereid and where not.
pub fn verdict_lines(data: &ReportData) -> Vec<String> {
    let mut out = Vec::new();
    let large = format!("{}", data.large_elements);
    for (payload, label) in [
        ("768", "768-d FP32".to_string()),
        (
            large.as_str(),
            format!("{}-element FP32", data.large_elements),
        ),
    ] {
        for c in [1, data.high_concurrency] {
            let grpc = cell(data, payload, "gRPC", c);
            let json = ratio(cell(data, payload, "REST-JSON h1", c), grpc, |s| s.p50_us);
            let binary = ratio(cell(data, payload, "REST-binary h1", c), grpc, |s| s.p50_us);
            let tput = ratio(grpc, cell(data, payload, "REST-JSON h1", c), |s| {
                s.requests_per_sec
            });
            let (Some(json), Some(binary)) = (json, binary) else {
                continue;
            };
            let held = if json >= 5.0 {
                "**held**"
            } else if json >= 2.0 {
                "**held only in part**"
            } else {
                "**did not hold**"
            };
            out.push(format!(
                "- {label}, concurrency {c}: REST-JSON p50 is {json:.1}x gRPC's (claim \"5-10x slower\" {held}); \
                 gRPC moves {}x REST-JSON's requests/s; REST with binary tensors is {binary:.2}x gRPC's p50.",
                tput.map_or("-".into(), |t| format!("{t:.1}")),
            ));
        }
    }
    let proto = data
        .wire
        .iter()
        .find(|w| w.encoding == "gRPC")
        .map(|w| w.body_bytes as f64);
    let json = data
        .wire
        .iter()
        .find(|w| w.encoding == "REST-JSON h1")
        .map(|w| w.body_bytes as f64);
    let binary = data
        .wire
        .iter()
        .find(|w| w.encoding == "REST-binary h1")
        .map(|w| w.body_bytes as f64);
    if let (Some(p), Some(j), Some(b)) = (proto, json, binary) {
        out.push(format!(
            "- Size: a 768-d FP32 vector is {:.1}x larger as JSON than as protobuf; with the binary extension REST's body \
             is {:.2}x protobuf's. JSON's cost is the text encoding, not REST.",
            j / p,
            b / p
        ));
    }
    for c in [1, data.high_concurrency] {
        let h1 = cell(data, "768", "REST-binary h1", c);
        let h2 = cell(data, "768", "REST-binary h2", c);
        if let Some(r) = ratio(h2, h1, |s| s.p50_us) {
            out.push(format!(
                "- HTTP/2 vs HTTP/1.1 (768-d, binary, concurrency {c}): h2 p50 is {r:.2}x h1's, throughput {}x.",
                fmt_opt(ratio(h2, h1, |s| s.requests_per_sec), "")
            ));
        }
    }
    out
}

fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else {
        format!("{v:.0} us")
    }
}

/// The server's CPU per request, or a dash where it was not read.
fn cpu(summary: &Summary) -> String {
    summary
        .server_cpu_us
        .map_or_else(|| "-".into(), |v| format!("{v:.1} us"))
}

/// `side`'s throughput over `baseline`'s (0 when the baseline measured nothing).
fn throughput_ratio(side: &Summary, baseline: &Summary) -> f64 {
    if baseline.requests_per_sec > 0.0 {
        side.requests_per_sec / baseline.requests_per_sec
    } else {
        0.0
    }
}

/// The gateway's cost against going straight to the engine.
fn gateway_section(s: &mut String, data: &ReportData) {
    let _ = writeln!(s, "\n### Through `nereid gateway` (`simple`)\n");
    let _ = writeln!(
        s,
        "The same client and requests straight to the engine, and to a gateway in front of it that forwards each \
         request over gRPC (the hybrid: REST outside, gRPC inside). Each side ran twice, alternating, and keeps its \
         best run. Engine, gateway and client share this machine's cores, so the throughput ratio includes the \
         gateway's CPU competing with the engine's; on its own host the gateway adds its latency only.\n"
    );
    let _ = writeln!(
        s,
        "| client side | concurrency | direct req/s | gateway req/s | ratio | direct p50 | gateway p50 | added p50 | engine CPU/request | gateway + engine CPU/request |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for g in &data.gateway {
        let ratio = throughput_ratio(&g.gateway, &g.direct);
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0} | {ratio:.2}x | {} | {} | {} | {} | {} |",
            g.transport,
            g.concurrency,
            g.direct.requests_per_sec,
            g.gateway.requests_per_sec,
            us(g.direct.p50_us),
            us(g.gateway.p50_us),
            us(g.gateway.p50_us - g.direct.p50_us),
            cpu(&g.direct),
            cpu(&g.gateway)
        );
    }
}

/// Renders the generated section, markers included; `svg_prefix` is prepended to plot
/// file names in links.
pub fn render(data: &ReportData, svg_prefix: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{START}");
    let _ = writeln!(s, "## gRPC or REST? Measured on Nereid\n");
    let _ = writeln!(
        s,
        "Generated by `nereid bench-report` on {} in one run of {:.0} s. Machine: {}. Servers: {}. Each scenario is a \
         closed loop: {} ms warm-up, then {} ms measured; latency is what the client saw, from building the request to \
         the decoded response.\n",
        data.date,
        data.elapsed.as_secs_f64(),
        data.machine,
        data.server_note,
        data.warmup_ms,
        data.duration_ms
    );
    let load = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.2}"));
    let _ = writeln!(
        s,
        "1-minute load average: {} before the run, {} after it.\n",
        load(data.load.0),
        load(data.load.1)
    );
    let _ = writeln!(
        s,
        "**Caveat:** the load generator and the server share the same cores, so the client's response decoding \
         competes with the server for CPU. Request bodies are encoded once per input set, as perf_analyzer \
         prepares its inputs (\"client send\" is then near zero); \"client recv\" includes decoding every \
         response. Absolute numbers are pessimistic; the ratios, measured minutes apart in one run, are the \
         result. Re-run with `nereid bench-report` (about 2 minutes).\n"
    );
    let _ = writeln!(
        s,
        "### Verdict on the seed article (\"REST is 5-10x slower than gRPC for such payloads\")\n"
    );
    for line in verdict_lines(data) {
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(
        s,
        "\n### Targets\n\n| target | measured | status |\n|---|---|---|"
    );
    for (target, measured, status) in targets(data) {
        let _ = writeln!(s, "| {target} | {measured} | {status} |");
    }
    let _ = writeln!(
        s,
        "\n### Bytes on the wire: one 768-d FP32 vector to `identity_fp32` and back\n"
    );
    let _ = writeln!(s, "| encoding | request body / message | request on the wire | response on the wire |\n|---|---:|---:|---:|");
    for w in &data.wire {
        let wire = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0} B"));
        let _ = writeln!(
            s,
            "| {} | {} B | {} | {} |",
            w.encoding,
            w.body_bytes,
            wire(w.request_wire),
            wire(w.response_wire)
        );
    }
    let _ = writeln!(
        s,
        "\nOn the wire means TCP payload per request after warm-up, headers and HTTP/2 framing included.\n\n\
         ![bytes on the wire]({svg_prefix}bench-wire-bytes.svg)\n"
    );
    let _ = writeln!(s, "### Latency and throughput\n");
    let _ = writeln!(
        s,
        "| payload | transport | concurrency | p50 | p99 | req/s | client send | client recv | server queue + compute |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for m in &data.matrix {
        let x = &m.summary;
        let server = x.server.as_ref().map_or("-".into(), |b| {
            us(b.queue_us + b.compute_input_us + b.compute_infer_us + b.compute_output_us)
        });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} |",
            m.payload,
            m.transport,
            m.concurrency,
            us(x.p50_us),
            us(x.p99_us),
            x.requests_per_sec,
            us(x.client_send_us),
            us(x.client_recv_us),
            server
        );
    }
    let _ = writeln!(
        s,
        "\n![p50 relative to gRPC]({svg_prefix}bench-latency.svg)\n\n![throughput relative to gRPC]({svg_prefix}bench-throughput.svg)\n"
    );
    let _ = writeln!(s, "### Nereid against bare servers (`simple`)\n");
    let _ = writeln!(
        s,
        "Each side ran twice, alternating, and keeps its best run. The bare servers answer `simple` in the frontend \
         itself, with the same transport and codec, so the gap is what the engine (validation, queue, batcher, worker \
         thread) costs. CPU/request is the server threads' user + system time over the requests of the run (from \
         /proc, warm-up included on both sides of the division; the load generator's threads are not counted).\n"
    );
    let _ = writeln!(
        s,
        "| transport | concurrency | Nereid req/s | bare req/s | ratio | Nereid p50 | bare p50 | Nereid CPU/request | bare CPU/request |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for b in &data.bare {
        let r = throughput_ratio(&b.nereid, &b.bare);
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0} | {r:.2}x | {} | {} | {} | {} |",
            b.transport,
            b.concurrency,
            b.nereid.requests_per_sec,
            b.bare.requests_per_sec,
            us(b.nereid.p50_us),
            us(b.bare.p50_us),
            cpu(&b.nereid),
            cpu(&b.bare)
        );
    }
    if !data.bare.is_empty() {
        let _ = writeln!(s, "\n![Nereid vs bare]({svg_prefix}bench-bare.svg)");
    }
    if !data.gateway.is_empty() {
        gateway_section(&mut s, data);
    }
    if !data.notes.is_empty() {
        let _ = writeln!(s, "\n### Not measured\n");
        for n in &data.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    let _ = writeln!(s, "{END}");
    s
}

/// Replaces the generated section of `text` (or appends it).
pub fn splice(text: &str, section: &str) -> String {
    match (text.find(START), text.find(END)) {
        (Some(a), Some(b)) if a < b => format!(
            "{}{}{}",
            &text[..a],
            section.trim_end(),
            &text[b + END.len()..]
        ),
        _ => {
            let mut out = text.trim_end().to_string();
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(section.trim_end());
            out.push('\n');
            out
        }
    }
}

/// Rewrites the generated section of the markdown file, creating the file if needed.
pub fn splice_file(path: &Path, section: &str) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".into(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, splice(&text, section))
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_only_the_section() {
        let old = format!("# B\n\nintro\n\n{START}\nold\n{END}\n\n## Other\nkept\n");
        let new = splice(&old, &format!("{START}\nnew\n{END}\n"));
        assert_eq!(
            new,
            format!("# B\n\nintro\n\n{START}\nnew\n{END}\n\n## Other\nkept\n")
        );
        let appended = splice("# B\n", &format!("{START}\nx\n{END}\n"));
        assert!(appended.starts_with("# B\n\n<!--"));
    }

    #[test]
    fn date_is_iso() {
        let d = utc_date();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }
}
