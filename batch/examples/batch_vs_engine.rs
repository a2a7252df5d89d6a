//! `nereid batch` against the model's own in-process throughput: the same texts, the same
//! engine, the same cores, the same requests in flight, rounds alternating so drift hits
//! both sides alike.
//!
//! The engine side sends the texts, held in memory, straight to `Engine::infer` in
//! requests of the model's `max_batch_size`; the batch side reads them from a Parquet
//! file and writes the embeddings to Parquet. The ratio is what reading, tokenising
//! order, converting and writing cost beyond the model.
//!
//! ```text
//! cargo run --release -p nereid-batch --example batch_vs_engine -- [ROWS] [ROUNDS] [MODEL]
//! ```
//! MODEL is `minilm` (default) or `smollm2` (prompts; tokens per second are reported).

use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use clap::Parser;
use futures::StreamExt;
use nereid_batch::BatchArgs;
use nereid_engine::builtin::demo::write_repository;
use nereid_engine::{
    BackendRegistry, Engine, EngineOptions, InferRequest, ModelControlMode, ParamValue, Tensor,
};
use parquet::arrow::ArrowWriter;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BatchArgs,
}

const WORDS: [&str; 24] = [
    "river", "engine", "quiet", "market", "signal", "garden", "orbit", "paper", "winter", "copper",
    "lantern", "harbor", "violet", "thunder", "meadow", "silver", "canyon", "rocket", "velvet",
    "island", "anchor", "ember", "falcon", "glacier",
];

/// A short sentence, different for every row.
fn text(i: usize) -> String {
    let w = |k: usize| WORDS[(i / k + k) % WORDS.len()];
    format!(
        "the {} {} near the {} {} number {i}",
        w(1),
        w(3),
        w(7),
        w(11)
    )
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let rounds: usize = args.next().map_or(Ok(3), |a| a.parse())?;
    let model = args.next().unwrap_or_else(|| "minilm".into());
    let generator = model == "smollm2";
    let dir = tempfile::tempdir()?;
    let repo = dir.path().join("models");
    write_repository(&repo, nereid_models::demo::DEMO_MODELS)?;
    let mut backends = BackendRegistry::with_builtins();
    nereid_models::register(&mut backends);
    let engine = Engine::start(
        EngineOptions {
            repository: Some(repo),
            control_mode: ModelControlMode::Explicit,
            startup_models: vec![model.clone()],
            ..Default::default()
        },
        backends,
    )?;
    let spec = engine.model(&model, None)?.spec;
    let input = dir.path().join("texts.parquet");
    let texts: Vec<String> = (0..rows).map(text).collect();
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..rows as i64)) as ArrayRef,
        ),
        (
            "text",
            Arc::new(StringArray::from_iter_values(&texts)) as ArrayRef,
        ),
    ])?;
    let mut writer = ArrowWriter::try_new(File::create(&input)?, batch.schema(), None)?;
    writer.write(&batch)?;
    writer.close()?;

    let input_name = spec.inputs[0].name.clone();
    let request_rows = if generator { 1 } else { spec.max_batch_size };
    let in_flight = if generator {
        2 * spec.instances.len() * spec.max_sequences
    } else {
        (2 * spec.instances.len()).max(4)
    };
    let max_tokens = 32;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!("model {model}: {rows} rows, {request_rows} rows per request, {in_flight} in flight");
    println!("| round | engine rows/s | batch rows/s | ratio | engine tokens/s | batch tokens/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    runtime.block_on(async {
        for round in 0..rounds {
            // The model alone: requests straight from memory.
            let started = Instant::now();
            let tokens: u64 = futures::stream::iter(texts.chunks(request_rows))
                .map(|chunk| {
                    let (engine, model, name) = (engine.clone(), model.clone(), input_name.clone());
                    async move {
                        let shape = if generator {
                            vec![1, 1]
                        } else {
                            vec![chunk.len() as i64, 1]
                        };
                        let mut request = InferRequest::new(
                            model,
                            vec![Tensor::from_strings(name, shape, chunk)],
                        );
                        if !generator {
                            engine.infer(request).await.expect("inference");
                            0
                        } else {
                            request
                                .parameters
                                .insert("max_tokens".into(), ParamValue::Int(max_tokens));
                            let mut stream = engine.infer_stream(request).expect("queued");
                            let mut last = 0;
                            while let Some(r) = stream.recv().await {
                                let r = r.expect("generation");
                                if let Some(t) = r.output("completion_tokens") {
                                    last = nereid_engine::generation::read_count(t).unwrap_or(last);
                                }
                                if r.is_final {
                                    break;
                                }
                            }
                            last
                        }
                    }
                })
                .buffered(in_flight)
                .fold(0u64, |a, b| async move { a + b })
                .await;
            let engine_wall = started.elapsed().as_secs_f64();

            let out = dir.path().join(format!("out-{round}"));
            let mut flags = vec![
                "batch".to_string(),
                "--model".into(),
                model.clone(),
                "--input".into(),
                input.display().to_string(),
                "--output".into(),
                out.display().to_string(),
                "--input-column".into(),
                format!("text={input_name}"),
                "--key-column".into(),
                "id".into(),
            ];
            if generator {
                flags.extend(["--parameter".into(), format!("max_tokens={max_tokens}")]);
            }
            let args = Cli::try_parse_from(flags).expect("flags").args;
            let summary = nereid_batch::run(engine.clone(), &args)
                .await
                .expect("batch job");
            assert_eq!(summary.rows_written as usize, rows);
            let batch_wall = summary.wall.as_secs_f64();
            let (e, b) = (rows as f64 / engine_wall, rows as f64 / batch_wall);
            println!(
                "| {round} | {e:.1} | {b:.1} | {:.3} | {:.1} | {:.1} |",
                b / e,
                tokens as f64 / engine_wall,
                summary.tokens_per_second()
            );
        }
    });
    Ok(())
}
