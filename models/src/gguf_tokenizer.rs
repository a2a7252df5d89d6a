//! A `tokenizers` byte-level BPE tokenizer rebuilt from a GGUF file's metadata
//! (`tokenizer.ggml.tokens`, `merges`, `token_type`, `pre`, special token ids), since GGUF
//! models ship no `tokenizer.json`; plus each token's raw bytes, for streaming text that stays
//! valid UTF-8 across token boundaries.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use candle_core::quantized::gguf_file::Content;
#[cfg(any(test, feature = "testing"))]
use candle_core::quantized::gguf_file::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// GGUF token types (llama.cpp's `llama_token_type`).
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// Pre-tokenizer regexes of llama.cpp's `tokenizer.ggml.pre` names.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A GGUF model's tokenizer.
pub struct GgufTokenizer {
    tokenizer: Tokenizer,
    /// Raw bytes of each token; empty for control tokens.
    bytes: Vec<Vec<u8>>,
    /// Token ids that end generation.
    pub eos: Vec<u32>,
    /// Prepended to prompts when the model asks for it.
    pub bos: Option<u32>,
    /// The Jinja chat template, if the file has one.
    pub chat_template: Option<String>,
    /// Text of the BOS and EOS tokens, for chat templates that print them.
    pub bos_text: String,
    /// Text of the EOS token.
    pub eos_text: String,
}

fn strings(content: &Content, key: &str) -> Result<Vec<String>> {
    let value = content
        .metadata
        .get(key)
        .ok_or_else(|| anyhow!("GGUF metadata lacks {key}"))?;
    value
        .to_vec()?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| anyhow!("{key}: {e}")))
        .collect()
}

fn u32_of(content: &Content, key: &str) -> Option<u32> {
    content.metadata.get(key).and_then(|v| v.to_u32().ok())
}

fn string_of(content: &Content, key: &str) -> Option<String> {
    content
        .metadata
        .get(key)
        .and_then(|v| v.to_string().ok())
        .cloned()
}

impl GgufTokenizer {
    /// Builds the tokenizer from GGUF metadata. Only byte-level BPE (`tokenizer.ggml.model`
    /// = `gpt2`) is supported, with the `pre` types smollm, gpt2, llama-bpe and qwen2.
    pub fn from_gguf(content: &Content) -> Result<Self> {
        let model = string_of(content, "tokenizer.ggml.model").unwrap_or_default();
        if model != "gpt2" {
            bail!("tokenizer.ggml.model '{model}' is not supported (only byte-level BPE, 'gpt2')");
        }
        let tokens = strings(content, "tokenizer.ggml.tokens")?;
        let merges = strings(content, "tokenizer.ggml.merges")?;
        let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()?
                .iter()
                .map(|t| t.to_i32().unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        let pre = string_of(content, "tokenizer.ggml.pre").unwrap_or_else(|| "default".into());
        let tokenizer = build(&tokens, &merges, &types, &pre)?;
        let decode = byte_decoder();
        let bytes = tokens
            .iter()
            .zip(types.iter().chain(std::iter::repeat(&1)))
            .map(|(t, &ty)| match ty {
                TYPE_CONTROL => Vec::new(),
                TYPE_USER_DEFINED => t.as_bytes().to_vec(),
                _ => t.chars().flat_map(|c| byte_of(&decode, c)).collect(),
            })
            .collect();
        let eos_id = u32_of(content, "tokenizer.ggml.eos_token_id");
        let mut eos: Vec<u32> = eos_id.into_iter().collect();
        if let Some(eot) = u32_of(content, "tokenizer.ggml.eot_token_id") {
            eos.push(eot);
        }
        // Chat models end a turn with their end-of-turn marker even when EOS differs.
        for marker in ["<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"] {
            if let Some(id) = tokens.iter().position(|t| t == marker) {
                eos.push(id as u32);
            }
        }
        eos.sort_unstable();
        eos.dedup();
        let add_bos = content
            .metadata
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        let bos_id = u32_of(content, "tokenizer.ggml.bos_token_id");
        let text_of = |id: Option<u32>| {
            id.and_then(|i| tokens.get(i as usize).cloned())
                .unwrap_or_default()
        };
        Ok(Self {
            tokenizer,
            bytes,
            eos,
            bos: bos_id.filter(|_| add_bos),
            chat_template: string_of(content, "tokenizer.chat_template"),
            bos_text: text_of(bos_id),
            eos_text: text_of(eos_id),
        })
    }

    /// Token ids of `text`; special tokens written in the text (`<|im_start|>`) map to their
    /// ids. Starts with BOS when the model asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow!("tokenizer: {e}"))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        ids.extend(self.bos);
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// The raw bytes a token stands for (empty for control tokens).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Decodes ids to text, dropping control tokens.
    #[cfg(test)]
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| self.token_bytes(id).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    /// Whether `id` ends generation.
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos.contains(&id)
    }
}

fn build(tokens: &[String], merges: &[String], types: &[i32], pre: &str) -> Result<Tokenizer> {
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| anyhow!("bad merge '{m}'"))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| anyhow!("cannot build BPE: {e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);
    let byte_level =
        |use_regex: bool| PreTokenizerWrapper::from(ByteLevel::new(false, true, use_regex));
    let split = |regex: &str| -> Result<PreTokenizerWrapper> {
        Ok(Split::new(
            SplitPattern::Regex(regex.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| anyhow!("bad pre-tokenizer regex: {e}"))?
        .into())
    };
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level(true)]).into()
        }
        "gpt2" | "default" | "gpt-2" => byte_level(true),
        "llama-bpe" | "llama3" | "falcon3" | "pixtral" => {
            Sequence::new(vec![split(LLAMA3_REGEX)?, byte_level(false)]).into()
        }
        "qwen2" | "deepseek-r1-qwen" => {
            Sequence::new(vec![split(QWEN2_REGEX)?, byte_level(false)]).into()
        }
        other => {
            bail!("tokenizer.ggml.pre '{other}' is not supported (smollm, gpt2, llama-bpe, qwen2)")
        }
    };
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let added: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, &ty)| ty == TYPE_CONTROL || ty == TYPE_USER_DEFINED)
        .map(|(t, &ty)| AddedToken::from(t.clone(), ty == TYPE_CONTROL))
        .collect();
    tokenizer.add_special_tokens(&added);
    Ok(tokenizer)
}

/// GPT-2's byte-to-character table, inverted: the character standing for each byte.
fn byte_decoder() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut extra = 0;
    for b in 0..=255u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .filter_map(|(b, c)| Some((char::from_u32(c)?, b as u8)))
        .collect()
}

fn byte_of(decode: &HashMap<char, u8>, c: char) -> Vec<u8> {
    match decode.get(&c) {
        Some(&b) => vec![b],
        None => c.to_string().into_bytes(),
    }
}

/// Metadata values of a tokenizer, for tests that write GGUF files.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn metadata(
    tokens: &[&str],
    merges: &[&str],
    types: &[i32],
    pre: &str,
) -> Vec<(String, Value)> {
    let arr = |v: Vec<Value>| Value::Array(v);
    vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
        (
            "tokenizer.ggml.tokens".into(),
            arr(tokens
                .iter()
                .map(|t| Value::String(t.to_string()))
                .collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            arr(merges
                .iter()
                .map(|t| Value::String(t.to_string()))
                .collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            arr(types.iter().map(|&t| Value::I32(t)).collect()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> GgufTokenizer {
        // Byte-level alphabet for "hello world" plus merges and two control tokens.
        let tokens = [
            "<|endoftext|>",
            "<|im_end|>",
            "h",
            "e",
            "l",
            "o",
            "Ġ",
            "w",
            "r",
            "d",
            "he",
            "ll",
            "hell",
            "hello",
            "1",
            "2",
            "Ã",
            "©",
        ];
        let merges = ["h e", "l l", "he ll", "hell o"];
        let mut types = vec![1; tokens.len()];
        types[0] = TYPE_CONTROL;
        types[1] = TYPE_CONTROL;
        let mut content = Content {
            magic: candle_core::quantized::gguf_file::VersionedMagic::GgufV3,
            metadata: metadata(&tokens, &merges, &types, "smollm")
                .into_iter()
                .collect(),
            tensor_infos: HashMap::new(),
            tensor_data_offset: 0,
        };
        content
            .metadata
            .insert("tokenizer.ggml.eos_token_id".into(), Value::U32(0));
        GgufTokenizer::from_gguf(&content).unwrap()
    }

    #[test]
    fn encodes_with_merges_and_special_tokens() {
        let t = tiny();
        let ids = t.encode("hello world<|im_end|>").unwrap();
        assert_eq!(ids[0], 13, "'hello' merges into one token: {ids:?}");
        assert_eq!(*ids.last().unwrap(), 1, "control token text maps to its id");
        assert_eq!(t.decode(&ids), "hello world");
        assert!(t.is_eos(0) && t.is_eos(1) && !t.is_eos(2));
        // Digits split one by one.
        assert_eq!(t.encode("12").unwrap(), vec![14, 15]);
    }

    #[test]
    fn token_bytes_are_raw_bytes() {
        let t = tiny();
        assert_eq!(t.token_bytes(6), b" ");
        // "é" is two bytes, two byte-level tokens.
        let ids = t.encode("é").unwrap();
        assert_eq!(ids.len(), 2);
        assert_eq!(t.token_bytes(ids[0]).len() + t.token_bytes(ids[1]).len(), 2);
        assert_eq!(t.decode(&ids), "é");
        assert_eq!(t.token_bytes(0), b"");
    }
}
