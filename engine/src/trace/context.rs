//! What a request carries between processes: the W3C trace context (`traceparent`) and
//! its request id (`X-Request-ID`), and the random ids both need.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// The header (HTTP) and metadata key (gRPC) of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The header (HTTP) and metadata key (gRPC) of the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest request id taken from a client; a longer one is replaced by a generated id.
const MAX_REQUEST_ID: usize = 128;

/// A W3C trace context: the trace a request belongs to, the span that sent it, and whether
/// that caller sampled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id, never all zeros.
    pub trace_id: [u8; 16],
    /// The caller's span, never all zeros.
    pub span_id: [u8; 8],
    /// The caller traced this request (flag `01`).
    pub sampled: bool,
}

impl TraceParent {
    /// Reads a `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`); `None` for anything
    /// else, which the W3C rules say to ignore (a new trace starts).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let mut parts = text.split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        // Version 00 has exactly four parts; later versions may add more.
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let trace_id = hex_array::<16>(trace)?;
        let span_id = hex_array::<8>(span)?;
        let flags = hex_array::<1>(flags)?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }
}

impl fmt::Display for TraceParent {
    /// The `traceparent` header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            u8::from(self.sampled)
        )
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    // Upper-case hex is not valid W3C trace context.
    text.bytes().all(|b| !b.is_ascii_uppercase()).then_some(out)
}

/// A request id a client sent, if it is one to keep: printable ASCII without spaces, at
/// most 128 characters.
pub fn accept_request_id(text: &str) -> Option<&str> {
    (!text.is_empty() && text.len() <= MAX_REQUEST_ID && text.bytes().all(|b| b.is_ascii_graphic()))
        .then_some(text)
}

/// A fresh request id: 16 hex digits.
pub fn new_request_id() -> String {
    hex(&random_u64().to_be_bytes())
}

/// A fresh trace id (never zero).
pub fn new_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&random_u64().to_be_bytes());
    id[8..].copy_from_slice(&(random_u64() | 1).to_be_bytes());
    id
}

/// A fresh span id (never zero).
pub fn new_span_id() -> [u8; 8] {
    (random_u64() | 1).to_be_bytes()
}

/// A random 64-bit number: splitmix64 over a per-thread counter seeded from the process's
/// random hasher keys and a global sequence, so ids differ across threads, processes and
/// restarts without a lock or a system call per id.
fn random_u64() -> u64 {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed(SEQUENCE.fetch_add(1, Ordering::Relaxed)));
    }
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

fn seed(thread: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(thread);
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_refuses_what_the_w3c_rules_refuse() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceParent::parse(text).unwrap();
        assert!(parent.sampled);
        assert_eq!(parent.to_string(), text);
        assert!(
            !TraceParent::parse(&text.replace("-01", "-00"))
                .unwrap()
                .sampled
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_are_fresh_and_request_ids_are_checked() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| new_span_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert_ne!(new_trace_id(), new_trace_id());
        assert_eq!(new_request_id().len(), 16);
        assert_eq!(accept_request_id("abc-1"), Some("abc-1"));
        assert_eq!(accept_request_id("a b"), None);
        assert_eq!(accept_request_id(&"x".repeat(129)), None);
        assert_eq!(accept_request_id(""), None);
    }
}
