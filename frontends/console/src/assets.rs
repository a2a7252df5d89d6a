//! The console's files, embedded at build time from `assets/` (see `build.rs`).

/// One embedded file.
#[derive(Debug)]
pub(crate) struct Asset {
    /// File name, as requested under `/console/`.
    pub(crate) name: &'static str,
    pub(crate) bytes: &'static [u8],
    pub(crate) content_type: &'static str,
    /// A strong entity tag of the bytes, quoted.
    pub(crate) etag: &'static str,
}

static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The embedded file called `name`.
pub(crate) fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_entry_module_are_embedded() {
        let page = find("index.html").expect("index.html is embedded");
        assert!(page.content_type.starts_with("text/html"));
        assert!(page.etag.starts_with('"') && page.etag.ends_with('"'));
        assert!(find("../Cargo.toml").is_none());
        assert!(ASSETS
            .iter()
            .any(|asset| asset.content_type.starts_with("text/javascript")));
    }

    #[test]
    fn tags_differ_between_files() {
        let mut tags: Vec<_> = ASSETS.iter().map(|asset| asset.etag).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }
}
