"""Tiny BERT-family text models for the TEI tests, written into a model repository with no
download, and an independent float64 numpy reference of what each must compute.

Every model shares one WordPiece `tokenizer.json` (the JSON of the Rust tests'
`models/src/testing.rs::write_tiny_sentence_transformer`: BertNormalizer lowercasing,
BertPreTokenizer, `[CLS] A [SEP]` and `[CLS] A [SEP] B:1 [SEP]:1`) over a small vocabulary,
and seeded random float32 weights (hidden 32, 2 layers, 4 heads, intermediate 64) saved
with `safetensors.numpy`. The layouts are Hugging Face's own tensor names:

- `write_reranker`: `BertForSequenceClassification` with one label (a cross-encoder):
  `bert.embeddings.*`, `bert.encoder.layer.N.*`, `bert.pooler.dense` + tanh, `classifier`;
- `write_roberta_classifier`: `RobertaForSequenceClassification`, three labels,
  `pad_token_id` 1 so positions start at 2, one token type, eps 1e-3: `roberta.*`,
  `classifier.dense` + tanh, `classifier.out_proj`;
- `write_distilbert_classifier`: `DistilBertForSequenceClassification`, two labels,
  no token types, `distilbert.transformer.layer.N.attention.{q,k,v,out}_lin`,
  `sa_layer_norm`, `ffn.lin1/lin2`, `output_layer_norm`, `pre_classifier` + ReLU,
  `classifier`;
- `write_embedder`: a sentence-transformers model (mean pooling, `Normalize`,
  `max_seq_length` 16, the prompt `{"query": "query: "}`).

The reference ([`Reference`]) tokenises with the `tokenizers` package from the same
`tokenizer.json` (pairs through `encode(a, b)`, truncation as asked) and runs the encoder
in float64: embeddings (word + token type + position from the model's offset), LayerNorm
with the config's eps, self-attention with an additive large negative mask, exact (erf)
GELU, then the head (first token) or the pooling.
"""

import json
import math
import pathlib

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer

HIDDEN, LAYERS, HEADS, INTER, POSITIONS = 32, 2, 4, 64, 64
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "the", "a", "an", "this", "that", "is", "was", "of", "on", "in", "i", "it", "what",
    "where", "cat", "dog", "sat", "mat", "capital", "city", "paris", "france", "berlin",
    "germany", "river", "flows", "through", "good", "bad", "great", "movie", "film", "love",
    "hate", "fast", "slow", "cafe", "text", "query", "example", "sentence", "##s", ":", ".",
    ",", "?",
]
VOCAB = SPECIALS + WORDS


def tokenizer_json():
    """The WordPiece tokenizer.json, as the Rust tests write it."""
    def special(i, content):
        return {"id": i, "content": content, "single_word": False, "lstrip": False,
                "rstrip": False, "normalized": False, "special": True}
    token = lambda t, type_id: {"SpecialToken": {"id": t, "type_id": type_id}}
    seq = lambda s, type_id: {"Sequence": {"id": s, "type_id": type_id}}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [special(i, t) for i, t in enumerate(SPECIALS)],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [token("[CLS]", 0), seq("A", 0), token("[SEP]", 0)],
            "pair": [token("[CLS]", 0), seq("A", 0), token("[SEP]", 0), seq("B", 1), token("[SEP]", 1)],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                               "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}},
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": {t: i for i, t in enumerate(VOCAB)}},
    }


# Config templates (`% name`): the server's `bert_classifier` and `sentence_transformer`.
RERANKER_CONFIG = """name: "%s"
backend: "bert_classifier"
max_batch_size: 8
input [
  { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "TEXT_PAIR" data_type: TYPE_STRING dims: [ 1 ] }
]
output [
  { name: "SCORES" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "TOKENS" data_type: TYPE_INT32 dims: [ 1 ] }
]
dynamic_batching { max_queue_delay_microseconds: 2000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

ROBERTA_CONFIG = """name: "%s"
backend: "bert_classifier"
max_batch_size: 8
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "LOGITS" data_type: TYPE_FP32 dims: [ 3 ] } ]
dynamic_batching { }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

# The pair is optional: single texts and pairs both classify.
DISTILBERT_CONFIG = """name: "%s"
backend: "bert_classifier"
max_batch_size: 4
input [
  { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "TEXT_PAIR" data_type: TYPE_STRING dims: [ 1 ] optional: true }
]
output [
  { name: "LOGITS" data_type: TYPE_FP32 dims: [ 2 ] },
  { name: "NUM_TOKENS" data_type: TYPE_INT32 dims: [ 1 ] }
]
dynamic_batching { }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

EMBEDDER_CONFIG = """name: "%s"
backend: "sentence_transformer"
max_batch_size: 8
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [
  { name: "EMBEDDING" data_type: TYPE_FP32 dims: [ 32 ] },
  { name: "TOKEN_STATES" data_type: TYPE_FP32 dims: [ -1, 32 ] },
  { name: "TOKENS" data_type: TYPE_INT32 dims: [ 1 ] }
]
dynamic_batching { max_queue_delay_microseconds: 2000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

# BERT's canonical tensor names; the layouts rename them.
BERT_NAMES = {
    "word": "embeddings.word_embeddings.weight",
    "pos": "embeddings.position_embeddings.weight",
    "type": "embeddings.token_type_embeddings.weight",
    "emb_ln": "embeddings.LayerNorm",
    "q": "encoder.layer.{i}.attention.self.query",
    "k": "encoder.layer.{i}.attention.self.key",
    "v": "encoder.layer.{i}.attention.self.value",
    "o": "encoder.layer.{i}.attention.output.dense",
    "ln1": "encoder.layer.{i}.attention.output.LayerNorm",
    "up": "encoder.layer.{i}.intermediate.dense",
    "down": "encoder.layer.{i}.output.dense",
    "ln2": "encoder.layer.{i}.output.LayerNorm",
}
DISTIL_NAMES = {
    "word": "embeddings.word_embeddings.weight",
    "pos": "embeddings.position_embeddings.weight",
    "emb_ln": "embeddings.LayerNorm",
    "q": "transformer.layer.{i}.attention.q_lin",
    "k": "transformer.layer.{i}.attention.k_lin",
    "v": "transformer.layer.{i}.attention.v_lin",
    "o": "transformer.layer.{i}.attention.out_lin",
    "ln1": "transformer.layer.{i}.sa_layer_norm",
    "up": "transformer.layer.{i}.ffn.lin1",
    "down": "transformer.layer.{i}.ffn.lin2",
    "ln2": "transformer.layer.{i}.output_layer_norm",
}

# (encoder prefix, names, head dense, head activation, head output) per layout.
LAYOUTS = {
    "bert": ("bert.", BERT_NAMES, "bert.pooler.dense", "tanh", "classifier"),
    "roberta": ("roberta.", BERT_NAMES, "classifier.dense", "tanh", "classifier.out_proj"),
    "distilbert": ("distilbert.", DISTIL_NAMES, "pre_classifier", "relu", "classifier"),
    "embedder": ("", BERT_NAMES, None, None, None),
    "roberta_embedder": ("", BERT_NAMES, None, None, None),
}

_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def softmax(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


class Reference:
    """A written model: its folder, config and weights, and the float64 forward pass."""

    def __init__(self, name, folder, layout, config, weights, labels=None, max_len=None,
                 prompts=None, pooling="mean"):
        self.name, self.folder, self.layout, self.config = name, folder, layout, config
        self.w = {k: v.astype(np.float64) for k, v in weights.items()}
        self.labels = labels
        self.max_len = max_len
        self.prompts = prompts or {}
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.eps = config.get("layer_norm_eps", 1e-12)
        roberta_family = config.get("model_type") in ("roberta", "xlm-roberta", "camembert")
        self.offset = config["pad_token_id"] + 1 if roberta_family else 0
        self.pooling = pooling

    # Tokens.
    def encode(self, text, pair=None, max_len=None, direction="right"):
        """The `tokenizers` encoding of a text or pair with special tokens, cut to
        `max_len` tokens (longest first for pairs) from the `direction` end."""
        if max_len:
            self.tokenizer.enable_truncation(max_len, direction=direction)
        else:
            self.tokenizer.no_truncation()
        try:
            return self.tokenizer.encode(text, pair) if pair is not None else self.tokenizer.encode(text)
        finally:
            self.tokenizer.no_truncation()

    def count(self, text, pair=None, max_len=None, direction="right"):
        return len(self.encode(text, pair, max_len, direction).ids)

    # The encoder.
    def _tensor(self, key, i=None):
        prefix, names, *_ = LAYOUTS[self.layout]
        return prefix + names[key].format(i=i)

    def _linear(self, x, key, i=None):
        base = self._tensor(key, i)
        return x @ self.w[base + ".weight"].T + self.w[base + ".bias"]

    def _norm(self, x, key, i=None):
        base = self._tensor(key, i)
        return layer_norm(x, self.w[base + ".weight"], self.w[base + ".bias"], self.eps)

    def hidden(self, ids_rows, type_rows):
        """Hidden states (batch, seq, hidden) of rows of ids, padded and masked."""
        n, width = len(ids_rows), max(len(r) for r in ids_rows)
        ids = np.zeros((n, width), np.int64)
        types = np.zeros((n, width), np.int64)
        mask = np.zeros((n, width))
        for r, (row, trow) in enumerate(zip(ids_rows, type_rows)):
            ids[r, :len(row)], types[r, :len(row)], mask[r, :len(row)] = row, trow, 1
        x = self.w[self._tensor("word")][ids]
        if "type" in LAYOUTS[self.layout][1]:
            x = x + self.w[self._tensor("type")][types]
        x = x + self.w[self._tensor("pos")][self.offset + np.arange(width)]
        x = self._norm(x, "emb_ln")
        bias = ((mask - 1.0) * 1e9)[:, None, None, :]
        hd = HIDDEN // HEADS
        split = lambda t: t.reshape(n, width, HEADS, hd).transpose(0, 2, 1, 3)
        for i in range(self.config_layers()):
            q, k, v = (split(self._linear(x, key, i)) for key in ("q", "k", "v"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + bias
            ctx = (softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(n, width, HIDDEN)
            x = self._norm(x + self._linear(ctx, "o", i), "ln1", i)
            x = self._norm(x + self._linear(gelu(self._linear(x, "up", i)), "down", i), "ln2", i)
        return x, mask

    def config_layers(self):
        return self.config.get("num_hidden_layers", self.config.get("n_layers"))

    # Heads.
    def logits(self, text, pair=None, max_len=None, direction="right"):
        """The classification head's raw scores (num_labels,) of a text or pair."""
        _, _, dense, act, out = LAYOUTS[self.layout]
        enc = self.encode(text, pair, max_len, direction)
        states, _ = self.hidden([enc.ids], [enc.type_ids])
        first = states[0, 0]
        x = first @ self.w[dense + ".weight"].T + self.w[dense + ".bias"]
        x = np.tanh(x) if act == "tanh" else np.maximum(x, 0.0)
        return x @ self.w[out + ".weight"].T + self.w[out + ".bias"]

    def embed(self, text, normalize=True, prompt_name=None, max_len="model", direction="right"):
        """The mean-pooled (and normalised) vector of a text; cut at the model's
        max_seq_length unless `max_len` says otherwise (None: not at all)."""
        if prompt_name is not None:
            text = self.prompts[prompt_name] + text
        max_len = self.max_len if max_len == "model" else max_len
        return self.embed_ids(self.encode(text, max_len=max_len, direction=direction).ids, normalize)

    def token_states(self, text, prompt_name=None, max_len="model", direction="right"):
        """Every token's final state (tokens, hidden) of a text, before pooling."""
        if prompt_name is not None:
            text = self.prompts[prompt_name] + text
        max_len = self.max_len if max_len == "model" else max_len
        ids = self.encode(text, max_len=max_len, direction=direction).ids
        states, _ = self.hidden([ids], [[0] * len(ids)])
        return states[0]

    def embed_ids(self, ids, normalize=True):
        states, mask = self.hidden([ids], [[0] * len(ids)])
        if self.pooling == "cls":
            pooled = states[0, 0]
        else:
            pooled = (states * mask[..., None]).sum(1)[0] / mask.sum()
        return pooled / np.linalg.norm(pooled) if normalize else pooled


def _random_weights(layout, seed, labels, vocab, positions, type_vocab):
    """Random float32 tensors under the layout's names (LayerNorms near 1 and 0, so a
    server that ignored them would differ)."""
    rng = np.random.default_rng(seed)
    prefix, names, dense, _, out = LAYOUTS[layout]
    w = {}

    def put(name, *shape, scale=1.0):
        w[name] = (rng.standard_normal(shape) * scale).astype(np.float32)

    def linear(base, outputs, inputs, scale=1.0):
        put(base + ".weight", outputs, inputs, scale=scale / math.sqrt(inputs))
        put(base + ".bias", outputs, scale=0.1)

    def norm(base):
        w[base + ".weight"] = (1.0 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)
        w[base + ".bias"] = (0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)

    name = lambda key, i=None: prefix + names[key].format(i=i)
    put(name("word"), vocab, HIDDEN)
    put(name("pos"), positions, HIDDEN, scale=0.5)
    if "type" in names:
        put(name("type"), type_vocab, HIDDEN, scale=0.5)
    norm(name("emb_ln"))
    for i in range(LAYERS):
        for key in ("q", "k", "v", "o"):
            linear(name(key, i), HIDDEN, HIDDEN)
        norm(name("ln1", i))
        linear(name("up", i), INTER, HIDDEN)
        linear(name("down", i), HIDDEN, INTER)
        norm(name("ln2", i))
    if dense:
        linear(dense, HIDDEN, HIDDEN, scale=2.0)
        linear(out, labels, HIDDEN, scale=2.0)
    return w


def _write(repo, name, config_text, files, weights):
    folder = pathlib.Path(repo) / name / "1"
    folder.mkdir(parents=True)
    (folder.parent / "config.pbtxt").write_text(config_text)
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json()))
    for path, content in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(content if isinstance(content, str) else json.dumps(content))
    save_file(weights, str(folder / "model.safetensors"))
    return folder


def _labels(names):
    return {"id2label": {str(i): l for i, l in enumerate(names)},
            "label2id": {l: i for i, l in enumerate(names)}}


def _bert_config(architecture, model_type, **extra):
    return {"architectures": [architecture], "model_type": model_type, "vocab_size": len(VOCAB),
            "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
            "intermediate_size": INTER, "hidden_act": "gelu", "max_position_embeddings": POSITIONS,
            "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0, **extra}


def write_reranker(repo, name="tiny_reranker", seed=11, config_text=None):
    """A BERT cross-encoder of one label (`LABEL_0`)."""
    labels = ["LABEL_0"]
    config = _bert_config("BertForSequenceClassification", "bert", **_labels(labels))
    weights = _random_weights("bert", seed, 1, len(VOCAB), POSITIONS, 2)
    folder = _write(repo, name, config_text or RERANKER_CONFIG % name, {"config.json": config}, weights)
    return Reference(name, folder, "bert", config, weights, labels=labels, max_len=POSITIONS)


def write_roberta_classifier(repo, name="tiny_roberta", seed=12, config_text=None):
    """A RoBERTa classifier of three labels: positions from pad_token_id + 1 = 2 (the
    table holds 66 rows so 64 tokens fit), one token type, and a LayerNorm eps of 1e-3
    (real ones use 1e-5, which moves these logits by only ~3e-5 from BERT's 1e-12: too
    little for the tests to see whether the server reads it)."""
    labels = ["negative", "neutral", "positive"]
    positions = POSITIONS + 2
    config = _bert_config("RobertaForSequenceClassification", "roberta", **_labels(labels),
                          max_position_embeddings=positions, type_vocab_size=1,
                          layer_norm_eps=1e-3, pad_token_id=1)
    weights = _random_weights("roberta", seed, 3, len(VOCAB), positions, 1)
    folder = _write(repo, name, config_text or ROBERTA_CONFIG % name, {"config.json": config}, weights)
    return Reference(name, folder, "roberta", config, weights, labels=labels, max_len=POSITIONS)


def write_distilbert_classifier(repo, name="tiny_distil", seed=13, config_text=None):
    """A DistilBERT classifier of two labels (NEG, POS), DistilBERT's own config names."""
    labels = ["NEG", "POS"]
    config = {"architectures": ["DistilBertForSequenceClassification"], "model_type": "distilbert",
              "vocab_size": len(VOCAB), "dim": HIDDEN, "n_layers": LAYERS, "n_heads": HEADS,
              "hidden_dim": INTER, "activation": "gelu", "max_position_embeddings": POSITIONS,
              "pad_token_id": 0, **_labels(labels)}
    weights = _random_weights("distilbert", seed, 2, len(VOCAB), POSITIONS, 0)
    folder = _write(repo, name, config_text or DISTILBERT_CONFIG % name, {"config.json": config}, weights)
    return Reference(name, folder, "distilbert", config, weights, labels=labels, max_len=POSITIONS)


EMBEDDER_MAX_LEN = 16
PROMPTS = {"query": "query: "}


def write_embedder(repo, name="tiny_embedder", seed=14, config_text=None):
    """A sentence transformer: mean pooling, normalised, max_seq_length 16, prompts."""
    config = _bert_config("BertModel", "bert")
    weights = _random_weights("embedder", seed, 0, len(VOCAB), POSITIONS, 2)
    files = {
        "config.json": config,
        "1_Pooling/config.json": {"word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": False,
                                  "pooling_mode_mean_tokens": True},
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
        "sentence_bert_config.json": {"max_seq_length": EMBEDDER_MAX_LEN, "do_lower_case": False},
        "config_sentence_transformers.json": {"prompts": PROMPTS, "default_prompt_name": None},
    }
    folder = _write(repo, name, config_text or EMBEDDER_CONFIG % name, files, weights)
    return Reference(name, folder, "embedder", config, weights, max_len=EMBEDDER_MAX_LEN,
                     prompts=PROMPTS)


ROBERTA_EMBEDDER_CONFIG = """name: "%s"
backend: "sentence_transformer"
max_batch_size: 8
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "EMBEDDING" data_type: TYPE_FP32 dims: [ 32 ] } ]
dynamic_batching { }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


def write_roberta_embedder(repo, name="tiny_xlmr_embedder", seed=15, config_text=None):
    """An XLM-R sentence transformer laid out as sentence-transformers saves one (weights
    without a prefix), positions from pad_token_id + 1, CLS pooling, and no Normalize
    module (bge-style: its vectors are not unit length unless a request asks)."""
    positions = POSITIONS + 2
    config = _bert_config("XLMRobertaModel", "xlm-roberta", max_position_embeddings=positions,
                          type_vocab_size=1, layer_norm_eps=1e-3, pad_token_id=1)
    weights = _random_weights("roberta_embedder", seed, 0, len(VOCAB), positions, 1)
    files = {
        "config.json": config,
        "1_Pooling/config.json": {"word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": True,
                                  "pooling_mode_mean_tokens": False},
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
    }
    folder = _write(repo, name, config_text or ROBERTA_EMBEDDER_CONFIG % name, files, weights)
    return Reference(name, folder, "roberta_embedder", config, weights, max_len=POSITIONS, pooling="cls")
