//! `POST /tokenize` (texts to tokens with their byte offsets) and `POST /decode` (token
//! ids to text), with the model's own tokenizer, on a blocking thread.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use bytes::Bytes;
use nereid_engine::{EngineError, TextCodec};
use serde::{Deserialize, Serialize};

use super::{check_batch, Kind, Tei, TeiError, TeiModel, TeiResult};

super::tei_request!(TokenizeRequest, DecodeRequest);

const EVERY_KIND: &[Kind] = &[Kind::Embedder, Kind::Classifier, Kind::Reranker];

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Texts {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct TokenizeRequest {
    inputs: Texts,
    #[serde(default)]
    model: Option<String>,
    #[serde(default = "yes")]
    add_special_tokens: bool,
    #[serde(default)]
    prompt_name: Option<String>,
}

fn yes() -> bool {
    true
}

/// A token as TEI shows it: offsets are `null` for special tokens.
#[derive(Debug, Serialize)]
pub(super) struct Token {
    id: u32,
    text: String,
    special: bool,
    start: Option<usize>,
    stop: Option<usize>,
}

/// The model's tokenizer; through a gateway there is none to reach (424).
fn codec(tei: &Tei, model: &TeiModel) -> TeiResult<Arc<dyn TextCodec>> {
    tei.engine
        .text_codec(&model.name, None)
        .map_err(|e| match e {
            EngineError::Unimplemented(message) => TeiError::backend(message),
            other => other.into(),
        })
}

/// Runs tokenizer work on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> nereid_engine::Result<T> + Send + 'static,
) -> TeiResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| TeiError::backend(format!("tokenizer task failed: {e}")))?
        .map_err(|e| TeiError::new(super::error::ErrorType::Tokenizer, e.to_string()))
}

/// `POST /tokenize`: `[[{id, text, special, start, stop}, ...], ...]`, one list per text.
pub(super) async fn tokenize(
    State(tei): State<Tei>,
    model: Option<String>,
    body: Bytes,
) -> TeiResult<Json<Vec<Vec<Token>>>> {
    let (request, model) = tei.route::<TokenizeRequest>(model, &body, EVERY_KIND)?;
    if request.prompt_name.is_some() {
        return Err(TeiError::validation(
            "`prompt_name` is not supported by /tokenize: put the prompt in the text",
        ));
    }
    let texts = match request.inputs {
        Texts::One(text) => vec![text],
        Texts::Many(texts) => texts,
    };
    check_batch(texts.len(), "inputs")?;
    let codec = codec(&tei, &model)?;
    let special = request.add_special_tokens;
    let tokens = blocking(move || {
        texts
            .iter()
            .map(|text| codec.tokenize(text, special))
            .collect::<nereid_engine::Result<Vec<_>>>()
    })
    .await?;
    Ok(Json(
        tokens
            .into_iter()
            .map(|list| {
                list.into_iter()
                    .map(|t| Token {
                        id: t.id,
                        text: t.text,
                        special: t.special,
                        start: t.span.map(|s| s.0),
                        stop: t.span.map(|s| s.1),
                    })
                    .collect()
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Ids {
    One(Vec<u32>),
    Many(Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize)]
struct DecodeRequest {
    ids: Ids,
    #[serde(default)]
    model: Option<String>,
    #[serde(default = "yes")]
    skip_special_tokens: bool,
}

/// `POST /decode`: `[text, ...]`, one per id list.
pub(super) async fn decode(
    State(tei): State<Tei>,
    model: Option<String>,
    body: Bytes,
) -> TeiResult<Json<Vec<String>>> {
    let (request, model) = tei.route::<DecodeRequest>(model, &body, EVERY_KIND)?;
    let lists = match request.ids {
        Ids::One(ids) => vec![ids],
        Ids::Many(lists) => lists,
    };
    check_batch(lists.len(), "ids")?;
    if lists.iter().any(Vec::is_empty) {
        return Err(TeiError::validation(
            "Input validation error: `input_ids` cannot be empty",
        ));
    }
    let codec = codec(&tei, &model)?;
    let skip = request.skip_special_tokens;
    let texts = blocking(move || {
        lists
            .iter()
            .map(|ids| codec.decode(ids, skip))
            .collect::<nereid_engine::Result<Vec<_>>>()
    })
    .await?;
    Ok(Json(texts))
}
