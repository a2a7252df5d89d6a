//! Prompt prefixes a generator has already run, kept so the next prompt that starts the
//! same way skips recomputing them.
//!
//! The key and value of a position depend only on the tokens up to it, so any common
//! prefix of two prompts has the same KV cache. Chat requests share a long one: SmolLM2's
//! default system prompt and the user turn's header are 27 of the 43 tokens of a one-line
//! question, and on a CPU already decoding eight sequences a prompt token costs as much as
//! a generated one. An instance keeps the caches of the prompts it finished reading, up to a byte
//! budget (least recently used out first), and a new prompt starts from the longest
//! common prefix with any of them.

/// Caches of prompt prefixes `T` (a KV-cache copy), looked up by longest common prefix.
pub(crate) struct PrefixCache<T> {
    /// Least recently used first.
    entries: Vec<Entry<T>>,
    bytes: usize,
    budget: usize,
}

struct Entry<T> {
    tokens: Vec<u32>,
    value: T,
    bytes: usize,
}

/// The part of a cached prompt a new prompt can reuse.
pub(crate) struct Hit<'a, T> {
    /// Leading tokens of the new prompt that the cached value covers.
    pub len: usize,
    /// The cached value, which covers at least `len` positions.
    pub value: &'a T,
}

impl<T> PrefixCache<T> {
    /// An empty cache holding at most `budget` bytes; 0 turns it off.
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            entries: Vec::new(),
            bytes: 0,
            budget,
        }
    }

    /// How many positions of `bytes_per_position` each the budget holds: a longer prompt
    /// keeps only its start.
    pub(crate) fn positions(&self, bytes_per_position: usize) -> usize {
        self.budget / bytes_per_position.max(1)
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The longest prefix of `prompt` that some cached prompt shares, short of the whole
    /// prompt: its last token must still go through the model to give the next logits.
    pub(crate) fn lookup(&mut self, prompt: &[u32]) -> Option<Hit<'_, T>> {
        let usable = prompt.len().saturating_sub(1);
        let (best, len) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, &prompt[..usable])))
            .max_by_key(|&(i, len)| (len, i))?;
        if len == 0 {
            return None;
        }
        let entry = self.entries.remove(best);
        self.entries.push(entry);
        let value = &self.entries.last().expect("pushed above").value;
        Some(Hit { len, value })
    }

    /// Keeps the cache of `tokens`, taking `bytes`, as `value` makes it, unless it exceeds
    /// the whole budget or a cached prompt already starts with `tokens` (then `value` is
    /// not called). Cached prompts that `tokens` extend are dropped: the new entry covers
    /// them.
    pub(crate) fn insert_with<E>(
        &mut self,
        tokens: Vec<u32>,
        bytes: usize,
        value: impl FnOnce() -> Result<T, E>,
    ) -> Result<(), E> {
        if bytes > self.budget || tokens.is_empty() {
            return Ok(());
        }
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| e.tokens.starts_with(&tokens))
        {
            let entry = self.entries.remove(i);
            self.entries.push(entry);
            return Ok(());
        }
        let value = value()?;
        self.entries.retain(|e| !tokens.starts_with(&e.tokens));
        self.bytes = self.entries.iter().map(|e| e.bytes).sum();
        while self.bytes + bytes > self.budget {
            let oldest = self.entries.remove(0);
            self.bytes -= oldest.bytes;
        }
        self.bytes += bytes;
        self.entries.push(Entry {
            tokens,
            value,
            bytes,
        });
        Ok(())
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(cache: &mut PrefixCache<&'static str>, prompt: &[u32]) -> Option<(usize, &'static str)> {
        cache.lookup(prompt).map(|h| (h.len, *h.value))
    }

    impl PrefixCache<&'static str> {
        fn insert(&mut self, tokens: Vec<u32>, value: &'static str, bytes: usize) {
            self.insert_with(tokens, bytes, || Ok::<_, ()>(value))
                .unwrap();
        }
    }

    #[test]
    fn finds_the_longest_common_prefix_but_never_the_whole_prompt() {
        let mut cache = PrefixCache::new(100);
        cache.insert(vec![1, 2, 3, 4], "a", 10);
        cache.insert(vec![1, 2, 9], "b", 10);
        assert_eq!(hit(&mut cache, &[1, 2, 3, 7, 8]), Some((3, "a")));
        assert_eq!(hit(&mut cache, &[1, 2, 9, 9]), Some((3, "b")));
        // The same prompt again: all but its last token.
        assert_eq!(hit(&mut cache, &[1, 2, 3, 4]), Some((3, "a")));
        assert_eq!(hit(&mut cache, &[5, 1, 2]), None);
        assert_eq!(hit(&mut cache, &[1]), None);
        assert_eq!(hit(&mut cache, &[]), None);
    }

    #[test]
    fn evicts_the_least_recently_used_to_stay_in_budget() {
        let mut cache = PrefixCache::new(25);
        cache.insert(vec![1, 1], "a", 10);
        cache.insert(vec![2, 2], "b", 10);
        assert!(hit(&mut cache, &[1, 1, 5]).is_some()); // "a" is now the most recent
        cache.insert(vec![3, 3], "c", 10);
        assert_eq!(cache.bytes(), 20);
        assert_eq!(hit(&mut cache, &[2, 2, 5]), None);
        assert_eq!(hit(&mut cache, &[1, 1, 5]), Some((2, "a")));
        assert_eq!(hit(&mut cache, &[3, 3, 5]), Some((2, "c")));
    }

    #[test]
    fn longer_prompts_replace_their_prefixes_and_shorter_ones_are_not_kept() {
        let mut cache = PrefixCache::new(100);
        cache.insert(vec![1, 2], "short", 10);
        cache.insert(vec![1, 2, 3], "long", 15);
        assert_eq!(cache.bytes(), 15);
        let made = cache.insert_with(vec![1, 2], 10, || Err("made a value already covered"));
        assert_eq!(made, Ok(()));
        assert_eq!(cache.bytes(), 15);
        assert_eq!(hit(&mut cache, &[1, 2, 3, 4]), Some((3, "long")));
    }

    #[test]
    fn a_zero_budget_or_an_oversized_value_keeps_nothing() {
        let mut off = PrefixCache::new(0);
        assert_eq!(off.positions(4), 0);
        off.insert(vec![1, 2], "a", 1);
        assert_eq!(hit(&mut off, &[1, 2, 3]), None);
        let mut small = PrefixCache::new(5);
        assert_eq!(small.positions(2), 2);
        small.insert(vec![1, 2], "a", 6);
        assert_eq!(small.bytes(), 0);
        assert_eq!(hit(&mut small, &[1, 2, 3]), None);
    }
}
