//! API keys: what every door accepts as a client's credentials, written once.
//!
//! A client sends `Authorization: Bearer <key>` (the `openai` SDK does with its `api_key`;
//! tritonclient with `headers={"Authorization": "Bearer <key>"}`, over HTTP or as gRPC
//! metadata). Health routes stay open, so probes need no key.

/// The keys a server accepts; empty accepts every request. Its `Debug` shows how many,
/// never the keys.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiKeys {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

/// The message of a refused request; it never hints which keys exist.
pub const UNAUTHORIZED: &str =
    "missing or wrong API key: send the header 'Authorization: Bearer <key>'";

impl ApiKeys {
    /// Accepts these keys (blank ones are ignored).
    pub fn new<S: AsRef<str>>(keys: impl IntoIterator<Item = S>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .map(|k| k.as_ref().trim().as_bytes().to_vec())
                .filter(|k| !k.is_empty())
                .collect(),
        }
    }

    /// Whether keys are required at all.
    pub fn required(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Whether an `Authorization` header value carries an accepted key. Every key is
    /// compared in full whatever matched, so timing does not tell a near miss.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        if !self.required() {
            return true;
        }
        let Some(token) = authorization.and_then(bearer) else {
            return false;
        };
        self.keys
            .iter()
            .fold(false, |found, key| found | constant_time_eq(key, token))
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}

/// Whether `a` and `b` are equal, in a time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_keys_are_checked_and_none_means_open() {
        let open = ApiKeys::new(Vec::<String>::new());
        assert!(!open.required() && open.allows(None));
        let keys = ApiKeys::new(["alpha", " beta ", ""]);
        assert!(keys.required());
        assert!(keys.allows(Some(b"Bearer alpha")));
        assert!(keys.allows(Some(b"bearer beta")));
        assert!(keys.allows(Some(b"Bearer  alpha ")));
        for refused in [
            &b"Bearer alph"[..],
            b"Bearer alphaa",
            b"Basic alpha",
            b"alpha",
            b"Bearer ",
            b"",
        ] {
            assert!(
                !keys.allows(Some(refused)),
                "{:?}",
                String::from_utf8_lossy(refused)
            );
        }
        assert!(!keys.allows(None));
    }
}
