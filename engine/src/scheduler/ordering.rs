//! `preserve_ordering`: batches may finish out of order on several instances, but their
//! responses leave in dispatch order.

use std::collections::BTreeMap;

use parking_lot::Mutex;

/// Releases completed batches strictly in sequence-number order.
pub(crate) struct Sequencer<T> {
    state: Mutex<(u64, BTreeMap<u64, T>)>,
}

impl<T> Sequencer<T> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new((0, BTreeMap::new())),
        }
    }

    /// Records batch `seq` as done and releases, in order, every batch now unblocked.
    pub(crate) fn complete(&self, seq: u64, item: T, mut release: impl FnMut(T)) {
        let mut guard = self.state.lock();
        let (next, waiting) = &mut *guard;
        waiting.insert(seq, item);
        while let Some(item) = waiting.remove(next) {
            release(item);
            *next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_in_sequence_order() {
        let s = Sequencer::new();
        let mut out = Vec::new();
        s.complete(1, "b", |x| out.push(x));
        s.complete(2, "c", |x| out.push(x));
        assert!(out.is_empty());
        s.complete(0, "a", |x| out.push(x));
        assert_eq!(out, vec!["a", "b", "c"]);
    }
}
