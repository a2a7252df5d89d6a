//! Turns generated token bytes into text pieces that are always whole UTF-8 characters, and
//! stops at stop strings without ever sending part of one.

/// Assembles a completion's text.
#[derive(Debug, Default)]
pub(crate) struct TextStream {
    /// Bytes of a character not yet complete.
    partial: Vec<u8>,
    /// Decoded text not yet sent.
    unsent: String,
    stops: Vec<String>,
}

impl TextStream {
    /// A stream that ends at the first of `stops` (empty strings are ignored).
    pub(crate) fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            ..Self::default()
        }
    }

    /// Adds a token's bytes. Returns true when a stop string appeared: the text before it
    /// is kept and the completion is over.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> bool {
        self.partial.extend_from_slice(bytes);
        loop {
            match std::str::from_utf8(&self.partial) {
                Ok(s) => {
                    self.unsent.push_str(s);
                    self.partial.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    self.unsent.push_str(
                        std::str::from_utf8(&self.partial[..valid]).expect("valid prefix"),
                    );
                    match e.error_len() {
                        // Invalid bytes: replace them and go on.
                        Some(bad) => {
                            self.unsent.push(char::REPLACEMENT_CHARACTER);
                            self.partial.drain(..valid + bad);
                        }
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.partial.drain(..valid);
                            break;
                        }
                    }
                }
            }
        }
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.unsent.find(s.as_str()))
            .min();
        if let Some(at) = hit {
            self.unsent.truncate(at);
            self.partial.clear();
            return true;
        }
        false
    }

    /// Text safe to send now: everything but a tail that could begin a stop string.
    pub(crate) fn take_ready(&mut self) -> String {
        let hold = self
            .stops
            .iter()
            .map(|stop| {
                (1..stop.len())
                    .rev()
                    .filter(|&n| stop.is_char_boundary(n))
                    .find(|&n| self.unsent.ends_with(&stop[..n]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let cut = self.unsent.len() - hold;
        let rest = self.unsent.split_off(cut);
        std::mem::replace(&mut self.unsent, rest)
    }

    /// Everything left, at the end of the completion (an incomplete character becomes U+FFFD).
    pub(crate) fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.unsent);
        if !self.partial.is_empty() {
            out.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.partial)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_across_tokens_are_sent_whole() {
        let mut t = TextStream::new(vec![]);
        let e = "é".as_bytes();
        assert!(!t.push(&[b'a', e[0]]));
        assert_eq!(t.take_ready(), "a");
        assert!(!t.push(&e[1..]));
        assert_eq!(t.take_ready(), "é");
        t.push(&[0xff, b'b']);
        assert_eq!(t.take_ready(), "\u{fffd}b");
        t.push(&[0xe2, 0x82]);
        assert_eq!(t.finish(), "\u{fffd}");
    }

    #[test]
    fn stop_strings_are_held_back_then_cut() {
        let mut t = TextStream::new(vec!["\nUser:".into(), String::new()]);
        assert!(!t.push(b"Paris.\nU"));
        assert_eq!(t.take_ready(), "Paris.");
        assert!(!t.push(b"se"));
        assert_eq!(t.take_ready(), "");
        assert!(t.push(b"r: hi"));
        assert_eq!(t.finish(), "");
        let mut t = TextStream::new(vec!["\nUser:".into()]);
        t.push(b"a\nb");
        assert_eq!(t.take_ready(), "a\nb", "a false start is released");
    }
}
