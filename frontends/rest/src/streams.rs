//! Event streams open per client address (`--http-max-streams-per-client`): a server-sent
//! event stream (generate_stream, OpenAI `stream: true`) holds a slot of its client's IP
//! address until its body is dropped, so one address cannot hold every sequence slot of a
//! model. The accept loop tags each request with its peer ([`ClientAddr`]); the one layer
//! stack admits or refuses a response once the route has said it is an event stream.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use futures::StreamExt;
use parking_lot::Mutex;

/// The peer address of the connection a request came on, set by [`crate::listen`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddr(pub(crate) IpAddr);

/// Open event streams per client address, at most `max` each.
#[derive(Clone, Debug)]
pub(crate) struct StreamLimit {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl StreamLimit {
    /// A limit of `max` streams per address; `None` for 0 (no limit).
    pub(crate) fn new(max: usize) -> Option<Self> {
        (max > 0).then(|| Self {
            max,
            open: Arc::default(),
        })
    }

    /// The limit.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// A slot for one more stream of `client`, or `None` when it has `max` open.
    pub(crate) fn admit(&self, client: IpAddr) -> Option<StreamSlot> {
        let mut open = self.open.lock();
        let count = open.entry(client).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            limit: self.clone(),
            client,
        })
    }

    #[cfg(test)]
    fn open(&self, client: IpAddr) -> usize {
        self.open.lock().get(&client).copied().unwrap_or(0)
    }
}

/// One open stream; dropping it frees the slot (an address with none open is forgotten,
/// so the table holds only addresses with a stream open).
#[derive(Debug)]
pub(crate) struct StreamSlot {
    limit: StreamLimit,
    client: IpAddr,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.limit.open.lock();
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// Whether a response is a server-sent event stream.
pub(crate) fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// `response` with its body holding `slot` until the body is dropped: when the stream ends
/// or the client goes away.
pub(crate) fn hold(response: Response, slot: StreamSlot) -> Response {
    response.map(|body| {
        Body::from_stream(body.into_data_stream().map(move |chunk| {
            let _held = &slot;
            chunk
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_address_and_freed_on_drop() {
        let limit = StreamLimit::new(2).unwrap();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "::1".parse().unwrap());
        let first = limit.admit(a).unwrap();
        let second = limit.admit(a).unwrap();
        assert!(limit.admit(a).is_none(), "a third stream of one address");
        let other = limit.admit(b).expect("another address has its own slots");
        drop(first);
        assert_eq!(limit.open(a), 1);
        let third = limit.admit(a).expect("a freed slot is taken again");
        drop((second, third, other));
        assert!(
            limit.open.lock().is_empty(),
            "addresses with nothing open are forgotten"
        );
        assert!(StreamLimit::new(0).is_none());
    }

    #[tokio::test]
    async fn a_held_body_keeps_its_slot_until_dropped() {
        let limit = StreamLimit::new(1).unwrap();
        let client: IpAddr = "127.0.0.1".parse().unwrap();
        let response = hold(
            Response::new(Body::from("data: 1\n\n")),
            limit.admit(client).unwrap(),
        );
        assert_eq!(limit.open(client), 1);
        let text = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&text[..], b"data: 1\n\n");
        assert_eq!(limit.open(client), 0);
    }
}
