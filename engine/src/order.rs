//! [`SequenceOrder`]: keeps the requests of one sequence in their order where a door (or a
//! gateway) handles each request on a task of its own.

use std::collections::HashMap;

use tokio::sync::oneshot;

/// Sequences tracked before those whose last request is done are forgotten (a sequence
/// that idles out never sends its end).
const TRACKED_SEQUENCES: usize = 1024;

/// The live sequences of one stream (or one gateway): for each, a signal that fires when
/// the task handling its latest request is done. The task of the next request of the same
/// sequence waits for it, so a sequence's requests are forwarded, and answered, in the
/// order they came, while other requests go on.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use nereid_engine::SequenceOrder;
/// let mut order = SequenceOrder::default();
/// let (first_waits, first_done) = order.next("n:7".into(), false);
/// let (second_waits, _second_done) = order.next("n:7".into(), true);
/// assert!(first_waits.is_none());
/// drop(first_done); // the first request's task is done...
/// assert!(second_waits.unwrap().await.is_err()); // ...so the second goes on.
/// # }
/// ```
#[derive(Debug, Default)]
pub struct SequenceOrder {
    last: HashMap<String, oneshot::Receiver<()>>,
}

impl SequenceOrder {
    /// For a request of sequence `key` (see
    /// [`InferRequest::sequence_key`](crate::InferRequest::sequence_key)): what its task
    /// waits for first (the previous request's task ending), and the signal its own task
    /// drops when done. `ends`: the request ends its sequence, which is then forgotten.
    pub fn next(
        &mut self,
        key: String,
        ends: bool,
    ) -> (Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        let (done, done_rx) = oneshot::channel();
        let after = self.last.remove(&key);
        if !ends {
            if self.last.len() >= TRACKED_SEQUENCES {
                self.last.retain(|_, rx| {
                    matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty))
                });
            }
            self.last.insert(key, done_rx);
        }
        (after, done)
    }
}
