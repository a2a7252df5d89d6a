//! Embeds every file of `assets/` (flat) in the crate: writes a table of name, bytes,
//! content type and entity tag into `$OUT_DIR/assets.rs`, so a page added to the folder
//! is served with no code change.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("frontends/console/assets is readable")
        .map(|entry| entry.expect("an assets entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    let mut table = String::from("&[\n");
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path
            .file_name()
            .unwrap()
            .to_str()
            .expect("asset names are UTF-8");
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let content_type = match extension {
            "html" => "text/html; charset=utf-8",
            "js" | "mjs" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "json" => "application/json",
            "svg" => "image/svg+xml",
            "png" => "image/png",
            "ico" => "image/x-icon",
            "txt" | "md" => "text/plain; charset=utf-8",
            other => panic!("assets/{name}: no content type for .{other} files"),
        };
        let bytes = std::fs::read(path).expect("an asset is readable");
        // FNV-1a: a stable tag of the content, so a browser revalidates with a 304.
        let tag = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        writeln!(
            table,
            "    Asset {{ name: {name:?}, bytes: include_bytes!({path:?}), content_type: {content_type:?}, etag: \"\\\"{tag:016x}\\\"\" }},",
            path = path.display().to_string(),
        )
        .unwrap();
    }
    table.push(']');
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("assets.rs");
    std::fs::write(out, table).expect("OUT_DIR is writable");
}
