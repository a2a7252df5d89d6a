//! Bridges the gap between Triton's text-format parser (protobuf C++) and
//! prost-reflect's.
//!
//! Triton configs write repeated message fields as `input [ { ... }, { ... } ]`:
//! the colon before a list of messages is optional in protobuf text format
//! and C++ accepts its absence, but prost-reflect requires it. Before parsing
//! we therefore insert the missing `:` between a field name and a `[`, and
//! remember where, so that error positions still point into the original
//! text.

/// A config text with the missing list colons inserted.
pub(super) struct Normalized {
    /// The text handed to the parser.
    pub(super) text: String,
    /// Byte offsets, in the original text, of the `[`s that got a `:` in
    /// front of them (ascending).
    inserted: Vec<usize>,
}

impl Normalized {
    /// Maps a byte offset in [`Normalized::text`] back to the original text.
    /// An offset pointing at an inserted `:` maps to the `[` after it.
    pub(super) fn original_offset(&self, offset: usize) -> usize {
        let shifted = self
            .inserted
            .iter()
            .enumerate()
            .take_while(|&(k, &at)| at + k < offset)
            .count();
        offset - shifted
    }
}

/// What the last significant token was.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    /// An identifier: a field name, or an enum / keyword value.
    Ident,
    /// Anything else (punctuation, number, string) or nothing yet.
    Other,
}

/// Inserts `:` before every `[` that directly follows an identifier, skipping
/// `#` comments and string literals.
///
/// A `[` after an identifier only occurs in valid text format when the
/// identifier is a field name opening a list; after a `:` (already a list
/// value), a value or punctuation (an extension name) nothing is inserted.
pub(super) fn insert_list_colons(src: &str) -> Normalized {
    let bytes = src.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut inserted = Vec::new();
    let mut last = Last::Other;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(bytes.len());
                last = Last::Other;
            }
            b'[' => {
                if last == Last::Ident {
                    out.push(b':');
                    inserted.push(i);
                }
                i += 1;
                last = Last::Other;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                last = Last::Ident;
            }
            c if c.is_ascii_digit() => {
                // Numbers, including suffixes such as `1e5`, `0x1F`, `2.5f`.
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
                {
                    i += 1;
                }
                last = Last::Other;
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                i += 1;
                last = Last::Other;
            }
        }
        out.extend_from_slice(&bytes[start..i.min(bytes.len())]);
    }
    let text = String::from_utf8(out)
        .expect("only ASCII is inserted, at ASCII positions, so the text stays UTF-8");
    Normalized { text, inserted }
}

/// The field whose value starts at byte `offset` of `text`, for errors about a value
/// (`max_batch_size: "four"`, `dims: [ 1, x ]`): the identifier before the nearest `:`
/// that no `{`, `}` or `:` separates from the value. `None` when the token at `offset` is
/// itself a field name (followed by `:`, `{` or `[`), or no field can be told.
pub(super) fn field_of_value(text: &str, offset: usize) -> Option<&str> {
    let offset = offset.min(text.len());
    let after = text.get(offset..)?;
    let token_end = after
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(after.len());
    if token_end > 0
        && matches!(
            after[token_end..].trim_start().chars().next(),
            Some(':' | '{' | '[' | '<')
        )
    {
        return None;
    }
    let before = text.get(..offset)?;
    // Skip back over the list the value may sit in; quotes may hide a `:`, so a value
    // after a string in the same list is not attributed.
    let colon = before.rfind([':', '{', '}', '"', '\''])?;
    if before.as_bytes()[colon] != b':' {
        return None;
    }
    let name = before[..colon].trim_end();
    let start = name
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let name = &name[start..];
    (!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit())).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_colons_before_message_lists_only() {
        let src = "input [ { dims: [ 16 ] } ]\nkind: KIND_CPU\nx: \"a [b\" # y [\nz[]";
        let n = insert_list_colons(src);
        assert_eq!(
            n.text,
            "input :[ { dims: [ 16 ] } ]\nkind: KIND_CPU\nx: \"a [b\" # y [\nz:[]"
        );
        // Offsets before, at and after the first insertion.
        assert_eq!(n.original_offset(0), 0);
        assert_eq!(n.original_offset(6), 6);
        assert_eq!(n.original_offset(7), 6);
        assert_eq!(n.original_offset(8), 7);
        // After both insertions.
        let z = src.rfind('z').unwrap();
        assert_eq!(n.original_offset(z + 1), z);
        assert_eq!(n.original_offset(z + 3), z + 1);
        assert_eq!(n.original_offset(n.text.len()), src.len());
    }

    #[test]
    fn finds_the_field_a_value_belongs_to() {
        fn at<'t>(text: &'t str, token: &str) -> Option<&'t str> {
            field_of_value(text, text.find(token).unwrap())
        }
        let text = "name: \"m\"\nmax_batch_size: \"four\"\n";
        assert_eq!(at(text, "\"four"), Some("max_batch_size"));
        let text = "input [ { name: \"x\" dims: [ 16, x ] } ]";
        assert_eq!(at(text, "x ]"), Some("dims"));
        // A field name is not a value; a value after a string in its list is not told.
        assert_eq!(at("a: 1\nmax_batch: 8", "max_batch"), None);
        assert_eq!(at("input { x: 1 }", "input"), None);
        assert_eq!(at("s: [ \"a:b\", 3 ]", "3"), None);
        assert_eq!(at("{ 5 }", "5"), None);
    }

    #[test]
    fn leaves_escaped_quotes_and_unicode_alone() {
        let src = "name: \"é\\\" [\" input\n[ ]";
        let n = insert_list_colons(src);
        assert_eq!(n.text, "name: \"é\\\" [\" input\n:[ ]");
    }
}
