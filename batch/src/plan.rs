//! The plan of a job: its input split into parts, the parts this shard owns, and the
//! manifest that lets `--resume` continue exactly the job that was started.
//!
//! A part is a run of up to `--part-rows` consecutive rows of one input file, numbered
//! from the start of the file, so the split depends only on the files and `--part-rows`.
//! Parts are numbered across the whole input in file order and part `i` belongs to shard
//! `i % shard_count`: N shards cover every row exactly once, whatever machine each runs
//! on. Each part becomes one output file, written under a temporary name and renamed
//! when complete; a part whose output file exists is done.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::input::{Format, InputFile};

/// One unit of work and of output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Part {
    /// Index into the job's input files.
    pub file: usize,
    /// Rows of that file.
    pub rows: Range<u64>,
    /// Output file name without extension: `<input stem>.part-<NNNNN>`.
    pub name: String,
}

/// Every part of the input, in order.
pub(crate) fn parts(files: &[InputFile], part_rows: u64) -> Vec<Part> {
    let stems: Vec<String> = files
        .iter()
        .map(|f| {
            f.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for stem in &stems {
        *seen.entry(stem).or_default() += 1;
    }
    let mut out = Vec::new();
    for (i, (file, stem)) in files.iter().zip(&stems).enumerate() {
        // Two inputs of one name (a/x.parquet, b/x.parquet) are told apart by position.
        let stem = if seen[stem.as_str()] > 1 {
            format!("{i:05}-{stem}")
        } else {
            stem.clone()
        };
        let mut start = 0;
        let mut index = 0;
        while start < file.rows {
            let end = (start + part_rows).min(file.rows);
            out.push(Part {
                file: i,
                rows: start..end,
                name: format!("{stem}.part-{index:05}"),
            });
            start = end;
            index += 1;
        }
    }
    out
}

/// The parts shard `index` of `count` owns.
pub(crate) fn shard(parts: Vec<Part>, index: u32, count: u32) -> Vec<Part> {
    parts
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i as u64 % u64::from(count) == u64::from(index))
        .map(|(_, p)| p)
        .collect()
}

/// What a job is, as far as its output depends on it; `--resume` continues only the
/// same job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub model: String,
    pub model_version: i64,
    /// (path, rows) of every input file.
    pub inputs: Vec<(PathBuf, u64)>,
    /// (column, tensor) pairs.
    pub input_columns: Vec<(String, String)>,
    /// (tensor, column) pairs.
    pub output_columns: Vec<(String, String)>,
    pub key_columns: Vec<String>,
    pub parameters: Vec<(String, String)>,
    pub part_rows: u64,
    pub shard_index: u32,
    pub shard_count: u32,
    pub output_format: Format,
}

impl Manifest {
    /// The manifest's file: one per shard, so shards sharing an output folder never write
    /// the same file.
    pub(crate) fn path(&self, dir: &Path) -> PathBuf {
        dir.join(format!(
            "_nereid_batch.shard-{}-of-{}.json",
            self.shard_index, self.shard_count
        ))
    }

    /// Records the job in `dir`, or checks that `dir` holds this same job when resuming.
    /// Without `resume`, a folder that already holds this shard's work is refused.
    pub(crate) fn claim(&self, dir: &Path, resume: bool, parts: &[Part]) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("--output '{}': {e}", dir.display()))?;
        let path = self.path(dir);
        match std::fs::read(&path) {
            Ok(bytes) if resume => {
                let old: Manifest = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                if old != *self {
                    return Err(format!(
                        "--resume: {} describes another job ({}); rerun it with the same inputs and flags, or use another --output",
                        path.display(),
                        self.difference(&old)
                    ));
                }
                return Ok(());
            }
            Ok(_) => {
                return Err(format!(
                    "--output '{}' already holds a batch job ({}): pass --resume to continue it, or use another folder",
                    dir.display(),
                    path.display()
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        if let Some(done) = parts.iter().find(|p| {
            dir.join(format!("{}.{}", p.name, self.output_format.extension()))
                .exists()
        }) {
            return Err(format!(
                "--output '{}' already holds part {} of another job: use an empty folder",
                dir.display(),
                done.name
            ));
        }
        let text = serde_json::to_vec_pretty(self).expect("a manifest serialises");
        crate::output::write_atomically(&path, &text)
            .map_err(|e| format!("--output '{}' is not writable: {e}", dir.display()))
    }

    fn difference(&self, old: &Manifest) -> String {
        let (a, b) = (
            serde_json::to_value(self).expect("serialises"),
            serde_json::to_value(old).expect("serialises"),
        );
        let (a, b) = (
            a.as_object().expect("object"),
            b.as_object().expect("object"),
        );
        let differing: Vec<&str> = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, _)| k.as_str())
            .collect();
        format!("it differs in: {}", differing.join(", "))
    }
}

impl Format {
    /// The file extension of output in this format.
    pub(crate) fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, rows: u64) -> InputFile {
        InputFile {
            path: path.into(),
            format: Format::Jsonl,
            rows,
            key_fields: Vec::new(),
        }
    }

    #[test]
    fn parts_cover_each_file_and_shards_cover_the_parts_exactly_once() {
        let files = [
            file("a/x.jsonl", 25),
            file("b/x.jsonl", 0),
            file("c/y.jsonl", 10),
        ];
        let all = parts(&files, 10);
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].name, "00000-x.part-00000");
        assert_eq!(all[2].rows, 20..25);
        assert_eq!(all[3].name, "y.part-00000");
        for count in 1..6 {
            let mut covered: Vec<Part> = (0..count)
                .flat_map(|i| shard(all.clone(), i, count))
                .collect();
            covered.sort_by_key(|p| (p.file, p.rows.start));
            assert_eq!(covered, all, "{count} shards");
        }
    }

    #[test]
    fn a_resumed_job_must_be_the_same_job() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = Manifest {
            model: "m".into(),
            model_version: 1,
            inputs: vec![("in.jsonl".into(), 5)],
            input_columns: vec![],
            output_columns: vec![],
            key_columns: vec![],
            parameters: vec![],
            part_rows: 10,
            shard_index: 0,
            shard_count: 1,
            output_format: Format::Parquet,
        };
        manifest.claim(dir.path(), false, &[]).unwrap();
        assert!(manifest
            .claim(dir.path(), false, &[])
            .unwrap_err()
            .contains("--resume"));
        manifest.claim(dir.path(), true, &[]).unwrap();
        let other = Manifest {
            part_rows: 20,
            ..manifest.clone()
        };
        assert!(other
            .claim(dir.path(), true, &[])
            .unwrap_err()
            .contains("part_rows"));
    }
}
