//! Batch jobs on an in-process engine serving the built-in models: formats, column
//! mapping, order, shards, resume, error rows and bad invocations.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, Int64Array, ListArray, RecordBatch, StringArray};
use clap::Parser;
use nereid_batch::{BatchArgs, Summary};
use nereid_engine::builtin::demo::{write_repository, BUILTIN_MODELS};
use nereid_engine::{BackendRegistry, Engine, EngineOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BatchArgs,
}

fn engine(dir: &Path) -> Engine {
    let repo = dir.join("models");
    write_repository(&repo, BUILTIN_MODELS).unwrap();
    Engine::start(
        EngineOptions {
            repository: Some(repo),
            ..Default::default()
        },
        BackendRegistry::with_builtins(),
    )
    .unwrap()
}

async fn job<S: AsRef<str>>(engine: &Engine, flags: &[S]) -> anyhow::Result<Summary> {
    let args =
        Cli::try_parse_from(std::iter::once("batch").chain(flags.iter().map(AsRef::as_ref)))?.args;
    nereid_batch::run(engine.clone(), &args).await
}

/// Flags of a job of `simple` over `input` into `out`: columns `a` and `b` feed INPUT0 and
/// INPUT1, `id` is the key; then `extra`.
fn simple_job(input: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let (input, out) = (input.to_str().unwrap(), out.to_str().unwrap());
    [
        "--model",
        "simple",
        "--input",
        input,
        "--output",
        out,
        "--input-column",
        "a=INPUT0",
        "--input-column",
        "b=INPUT1",
        "--key-column",
        "id",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect()
}

/// A row for `simple`: id, INPUT0, INPUT1.
type SimpleRow = (i64, Vec<i32>, Vec<i32>);

/// `n` rows for `simple`: id, INPUT0 = [i; 16], INPUT1 = [1; 16].
fn simple_rows(n: i64) -> Vec<SimpleRow> {
    (0..n)
        .map(|i| (100 + i, vec![i as i32; 16], vec![1; 16]))
        .collect()
}

fn write_parquet(path: &Path, rows: &[SimpleRow], row_group: usize) {
    let list = |f: fn(&SimpleRow) -> &Vec<i32>| -> ArrayRef {
        Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
            rows.iter()
                .map(|r| Some(f(r).iter().map(|v| Some(*v)).collect::<Vec<_>>())),
        ))
    };
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        ("a", list(|r| &r.1)),
        ("b", list(|r| &r.2)),
        (
            "note",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| format!("n{}", r.0)),
            )) as ArrayRef,
        ),
    ])
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group))
        .build();
    let mut w =
        ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn write_jsonl(path: &Path, rows: &[SimpleRow]) {
    let text: String = rows
        .iter()
        .map(|r| serde_json::json!({"id": r.0, "a": r.1, "b": r.2}).to_string() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

fn write_csv(path: &Path, rows: &[SimpleRow]) {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(["id", "a", "b"]).unwrap();
    for r in rows {
        w.write_record([
            r.0.to_string(),
            serde_json::to_string(&r.1).unwrap(),
            serde_json::to_string(&r.2).unwrap(),
        ])
        .unwrap();
    }
    w.flush().unwrap();
}

/// Every Parquet output file in `dir`, in name order, concatenated.
fn read_output(dir: &Path) -> Vec<RecordBatch> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|p| {
            ParquetRecordBatchReaderBuilder::try_new(File::open(p).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap())
        })
        .collect()
}

/// (id, OUTPUT0[0], OUTPUT1[0]) of every output row.
fn simple_outputs(batches: &[RecordBatch]) -> Vec<(i64, i32, i32)> {
    let mut out = Vec::new();
    for b in batches {
        let ids = b.column_by_name("id").unwrap();
        let sum = b.column_by_name("OUTPUT0").unwrap().as_fixed_size_list();
        let diff = b.column_by_name("OUTPUT1").unwrap().as_fixed_size_list();
        for row in 0..b.num_rows() {
            let id = match ids.data_type() {
                arrow_schema::DataType::Utf8 => ids.as_string::<i32>().value(row).parse().unwrap(),
                _ => ids.as_primitive::<Int64Type>().value(row),
            };
            let s = sum.value(row);
            let d = diff.value(row);
            assert_eq!(s.len(), 16);
            out.push((
                id,
                s.as_primitive::<Int32Type>().value(0),
                d.as_primitive::<Int32Type>().value(0),
            ));
        }
    }
    out
}

fn expected(rows: &[SimpleRow]) -> Vec<(i64, i32, i32)> {
    rows.iter().map(|r| (r.0, r.1[0] + 1, r.1[0] - 1)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_jsonl_and_csv_score_alike_in_input_order_with_keys() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let rows = simple_rows(50);
    write_parquet(&dir.path().join("t.parquet"), &rows, 7);
    write_jsonl(&dir.path().join("t.jsonl"), &rows);
    write_csv(&dir.path().join("t.csv"), &rows);
    for input in ["t.parquet", "t.jsonl", "t.csv"] {
        let out = dir.path().join(format!("out-{input}"));
        let summary = job(
            &engine,
            &simple_job(
                &dir.path().join(input),
                &out,
                &["--part-rows", "20", "--batch-rows", "3"],
            ),
        )
        .await
        .unwrap();
        assert_eq!(
            (
                summary.rows_written,
                summary.rows_failed,
                summary.parts_written
            ),
            (50, 0, 3),
            "{input}"
        );
        assert_eq!(
            simple_outputs(&read_output(&out)),
            expected(&rows),
            "{input}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_of_any_length_round_trip_and_jsonl_output_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let lines: String = (0..20)
        .map(|i| serde_json::json!({"INPUT0": vec![i as f32 * 0.5; 1 + i % 4]}).to_string() + "\n")
        .collect();
    std::fs::write(dir.path().join("v.jsonl"), lines).unwrap();
    let out = dir.path().join("out");
    let summary = job(
        &engine,
        &[
            "--model",
            "identity_fp32",
            "--input",
            dir.path().join("v.jsonl").to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--output-format",
            "jsonl",
            "--output-column",
            "OUTPUT0=echo",
        ],
    )
    .await
    .unwrap();
    assert_eq!(summary.rows_written, 20);
    let text = std::fs::read_to_string(out.join("v.part-00000.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 20);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["_row"], i as u64);
        let echo: Vec<f32> = serde_json::from_value(row["echo"].clone()).unwrap();
        assert_eq!(echo, vec![i as f32 * 0.5; 1 + i % 4]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_cover_the_input_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let (x, y) = (simple_rows(35), simple_rows(12));
    write_parquet(&dir.path().join("x.parquet"), &x, 5);
    write_jsonl(&dir.path().join("y.jsonl"), &y);
    let out = dir.path().join("out");
    let mut total = 0;
    for index in 0..3 {
        let summary = job(
            &engine,
            &simple_job(
                dir.path(),
                &out,
                &[
                    "--part-rows",
                    "10",
                    "--shard-count",
                    "3",
                    "--shard-index",
                    &index.to_string(),
                ],
            ),
        )
        .await
        .unwrap();
        total += summary.rows_written;
    }
    assert_eq!(total, 47);
    // x has 4 parts, y 2; every one was written once.
    let mut got = simple_outputs(&read_output(&out));
    let mut want = expected(&x);
    want.extend(expected(&y));
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(out.join("_nereid_batch.shard-2-of-3.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_writes_only_the_missing_parts_and_refuses_another_job() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let rows = simple_rows(30);
    write_parquet(&dir.path().join("t.parquet"), &rows, 4);
    let out = dir.path().join("out");
    let input = dir.path().join("t.parquet");
    let flags = |extra: &'static [&'static str]| -> Vec<String> {
        let mut f = simple_job(&input, &out, &["--part-rows", "10"]);
        f.extend(extra.iter().map(|s| s.to_string()));
        f
    };
    let run = |f: Vec<String>| {
        let engine = engine.clone();
        async move { job(&engine, &f).await }
    };
    run(flags(&[])).await.unwrap();
    // A crash between parts: the second part never committed, a temporary file is left.
    std::fs::remove_file(out.join("t.part-00001.parquet")).unwrap();
    std::fs::write(out.join(".t.part-00001.parquet.tmp"), b"half a part").unwrap();
    let first = std::fs::metadata(out.join("t.part-00000.parquet"))
        .unwrap()
        .modified()
        .unwrap();
    let err = run(flags(&[])).await.unwrap_err().to_string();
    assert!(err.contains("--resume"), "{err}");
    let summary = run(flags(&["--resume"])).await.unwrap();
    assert_eq!(
        (
            summary.rows_written,
            summary.rows_resumed,
            summary.parts_written
        ),
        (10, 20, 1)
    );
    assert_eq!(
        std::fs::metadata(out.join("t.part-00000.parquet"))
            .unwrap()
            .modified()
            .unwrap(),
        first
    );
    assert_eq!(simple_outputs(&read_output(&out)), expected(&rows));
    let err = run(flags(&[
        "--resume",
        "--batch-rows",
        "2",
        "--output-column",
        "OUTPUT0=OUTPUT0",
    ]))
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("output_columns"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_go_to_the_errors_file_or_stop_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let good =
        |id: i64| serde_json::json!({"id": id, "a": vec![id; 16], "b": vec![0; 16]}).to_string();
    let lines = [
        good(1),
        "{not json".to_string(),
        serde_json::json!({"id": 3, "a": vec![1; 15], "b": vec![0; 16]}).to_string(),
        serde_json::json!({"id": 4, "a": null, "b": vec![0; 16]}).to_string(),
        serde_json::json!({"id": 5, "a": vec![1; 16], "b": vec!["x"; 16]}).to_string(),
        good(6),
    ];
    let input = dir.path().join("bad.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("out");
    let summary = job(&engine, &simple_job(&input, &out, &[])).await.unwrap();
    assert_eq!((summary.rows_written, summary.rows_failed), (2, 4));
    let ids: Vec<i64> = simple_outputs(&read_output(&out))
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(ids, vec![1, 6]);
    let errors: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join("bad.part-00000.errors.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let rows: Vec<u64> = errors.iter().map(|e| e["row"].as_u64().unwrap()).collect();
    assert_eq!(rows, vec![1, 2, 3, 4]);
    assert_eq!(errors[1]["key"]["id"], 3);
    assert!(errors[0]["error"]
        .as_str()
        .unwrap()
        .contains("not a JSON object"));
    assert!(errors[1]["error"].as_str().unwrap().contains("INPUT0"));
    assert!(errors[2]["error"].as_str().unwrap().contains("is null"));
    assert!(errors[3]["error"].as_str().unwrap().contains("column 'b'"));

    let err = job(
        &engine,
        &simple_job(&input, &dir.path().join("out2"), &["--on-error", "fail"]),
    )
    .await
    .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("row 1") && err.contains("--on-error fail"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_invocations_fail_before_any_work_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    write_parquet(&dir.path().join("t.parquet"), &simple_rows(5), 5);
    let input = dir.path().join("t.parquet");
    let input = input.to_str().unwrap();
    std::fs::write(dir.path().join("file"), b"").unwrap();
    let unwritable = dir.path().join("file").join("out");
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--model", "nope", "--input", input, "--output", out],
            "nope",
        ),
        (
            vec!["--model", "simple", "--input", input, "--output", out],
            "no column 'INPUT0'",
        ),
        (
            vec![
                "--model",
                "simple",
                "--input",
                input,
                "--output",
                out,
                "--input-column",
                "a=INPUT9",
            ],
            "no input 'INPUT9'",
        ),
        (
            vec![
                "--model",
                "simple",
                "--input",
                input,
                "--output",
                out,
                "--input-column",
                "note=INPUT0",
                "--input-column",
                "b=INPUT1",
            ],
            "column 'note'",
        ),
        (
            vec![
                "--model",
                "simple",
                "--input",
                input,
                "--output",
                out,
                "--input-column",
                "a=INPUT0",
                "--input-column",
                "b=INPUT1",
                "--batch-rows",
                "9",
            ],
            "--batch-rows 9",
        ),
        (
            vec![
                "--model",
                "simple",
                "--input",
                "/nonexistent.parquet",
                "--output",
                out,
            ],
            "no such file",
        ),
        (
            vec![
                "--model",
                "simple",
                "--input",
                input,
                "--output",
                unwritable.to_str().unwrap(),
                "--input-column",
                "a=INPUT0",
                "--input-column",
                "b=INPUT1",
            ],
            "--output",
        ),
        (
            vec!["--model", "repeat_int32", "--input", input, "--output", out],
            "not a text generator",
        ),
        (
            vec![
                "--model",
                "simple",
                "--input",
                input,
                "--output",
                out,
                "--input-column",
                "a=INPUT0",
                "--input-column",
                "b=INPUT1",
                "--shard-index",
                "2",
                "--shard-count",
                "2",
            ],
            "--shard-index 2",
        ),
    ];
    for (flags, needle) in cases {
        let err = format!("{:#}", job(&engine, &flags).await.unwrap_err());
        assert!(err.contains(needle), "{flags:?}: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
    assert!(!Path::new(out).exists(), "nothing was written");
}
