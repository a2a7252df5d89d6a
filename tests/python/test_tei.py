"""The Hugging Face text-embeddings-inference (TEI) routes and the `bert_classifier` backend,
checked against an independent float64 numpy forward pass of the same weights
(`tei_models.py`: tiny hermetic models in the layouts Hugging Face writes: a BERT
cross-encoder reranker, a RoBERTa and a DistilBERT sequence classifier, a sentence-
transformers embedder with a prompt), tokenised by the `tokenizers` package from the same
`tokenizer.json`.

Covered: `/rerank` (sigmoid and raw scores, order, `return_text`, the `model` field,
`/tei/{model}/rerank`, pair truncation), `/v1/rerank` in the Cohere shape, `/predict`
(`/classify`) with texts, pairs on a model whose pair input is optional, batches, softmax
and raw logits, labels filled from `id2label` (also in the KServe config API), `/embed`
(normalize, prompt_name, truncate and truncation_direction, dimensions), `/similarity`,
`/info` of each kind, TEI's timing headers, the same models over KServe with
tritonclient (HTTP and gRPC, request parameters), TEI's error statuses and types (as
TEI's router/src/http answers them), `huggingface_hub`'s `InferenceClient`
against the compat route `POST /tei/{model}`, `--tei-model`, and `/tokenize` + `/decode`
(answered with 424 through a gateway, which holds no tokenizer)."""

import concurrent.futures
import json

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError
from tritonclient.utils import InferenceServerException

import tei_models
from conftest import THROUGH_GATEWAY, start_server
from tei_models import cosine, sigmoid, softmax

pytestmark = pytest.mark.timeout(120)

QUERY = "What is the capital of France?"
DOCS = [
    "Paris is the capital of France.",
    "The cat sat on the mat.",
    "Berlin is the capital of Germany.",
    "a river flows through the city",
    "i love this movie",
]
TEXTS = ["I love this movie.", "this film was bad", "the cat sat on the mat", "Berlin?", "a great, fast dog"]
# 23 tokens with [CLS] and [SEP]: over the embedder's max_seq_length of 16, and with
# different words at its two ends, so cutting left and right keep different tokens.
LONG = "the cat sat on the mat . a dog was in paris , berlin is a great city of germany ."
# 100 words: with QUERY over the reranker's 64 positions.
LONG_DOC = " ".join(["paris is a great city of france ."] * 12 + ["dog", "cat", "mat", "sat"])


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    repo = tmp_path_factory.mktemp("tei-repo")
    models = {
        "reranker": tei_models.write_reranker(repo, "tiny_reranker"),
        "roberta": tei_models.write_roberta_classifier(repo, "tiny_roberta"),
        "distil": tei_models.write_distilbert_classifier(repo, "tiny_distil"),
        "embedder": tei_models.write_embedder(repo, "tiny_embedder"),
        "xlmr": tei_models.write_roberta_embedder(repo, "tiny_xlmr_embedder"),
    }
    models["repo"] = repo
    return models


@pytest.fixture(scope="module")
def srv(refs):
    # Two embedders: the root routes take tiny_embedder; tiny_xlmr_embedder is reached by
    # its path.
    server = start_server(["--model-repository", str(refs["repo"]), "--tei-model", "tiny_embedder"])
    yield server
    server.stop()


def post(srv, path, body, **kwargs):
    return requests.post(f"http://{srv.http}{path}", json=body, timeout=60, **kwargs)


def ok(response):
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json()


def tei_error(response, status, error_type, *words):
    """Checks a TEI error answer: the status, `error_type`, and words of `error`."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error", "error_type"}, body
    assert body["error_type"] == error_type, body
    for word in words:
        assert word in body["error"], body
    return body["error"]


# /rerank


def test_rerank_scores_are_the_sigmoid_of_the_reference_best_first(srv, refs):
    ref = refs["reranker"]
    logits = np.array([ref.logits(QUERY, d)[0] for d in DOCS])
    response = post(srv, "/rerank", {"query": QUERY, "texts": DOCS})
    ranks = ok(response)
    assert [r["index"] for r in ranks] == list(np.argsort(-logits, kind="stable"))
    assert all(set(r) == {"index", "score"} for r in ranks), "no text unless return_text"
    got = np.array([r["score"] for r in sorted(ranks, key=lambda r: r["index"])])
    np.testing.assert_allclose(got, sigmoid(logits), rtol=1e-4, atol=1e-6)
    # TEI's headers: characters count the query once per text; tokens are the model's.
    headers = response.headers
    assert int(headers["x-compute-characters"]) == sum(len(QUERY) + len(d) for d in DOCS)
    assert int(headers["x-compute-tokens"]) == sum(ref.count(QUERY, d) for d in DOCS)
    assert int(headers["x-total-time"]) >= int(headers["x-compute-time"]) >= 0


def test_rerank_raw_scores_and_return_text(srv, refs):
    ref = refs["reranker"]
    ranks = ok(post(srv, "/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": True, "return_text": True}))
    assert len(ranks) == len(DOCS)
    for r in ranks:
        assert r["text"] == DOCS[r["index"]]
        assert r["score"] == pytest.approx(ref.logits(QUERY, DOCS[r["index"]])[0], rel=1e-4, abs=1e-5)
    scores = [r["score"] for r in ranks]
    assert scores == sorted(scores, reverse=True)
    assert min(scores) < 0 or max(scores) > 1, "raw logits, not probabilities"


def test_rerank_finds_its_model_by_field_path_or_kind(srv):
    body = {"query": QUERY, "texts": DOCS[:3]}
    alone = ok(post(srv, "/rerank", body))  # the one reranker of the repository
    named = ok(post(srv, "/rerank", {**body, "model": "tiny_reranker"}))
    at_path = ok(post(srv, "/tei/tiny_reranker/rerank", body))
    compat = ok(post(srv, "/tei/tiny_reranker", body))
    assert alone == named == at_path == compat
    tei_error(post(srv, "/rerank", {**body, "model": "tiny_embedder"}), 424, "Backend",
              "not a re-ranker", "tiny_embedder")


def test_rerank_pairs_are_cut_longest_first_or_refused(srv, refs):
    ref = refs["reranker"]
    assert ref.count(QUERY, LONG_DOC) > 64
    body = {"query": QUERY, "texts": [LONG_DOC, DOCS[0]], "raw_scores": True}
    tei_error(post(srv, "/rerank", body), 413, "Validation", "at most 64 tokens",
              f"given: {ref.count(QUERY, LONG_DOC)}")
    ranks = ok(post(srv, "/rerank", {**body, "truncate": True}))
    got = {r["index"]: r["score"] for r in ranks}
    assert got[0] == pytest.approx(ref.logits(QUERY, LONG_DOC, max_len=64)[0], rel=1e-4, abs=1e-5)
    assert got[1] == pytest.approx(ref.logits(QUERY, DOCS[0])[0], rel=1e-4, abs=1e-5)
    left = ok(post(srv, "/rerank", {**body, "truncate": True, "truncation_direction": "Left"}))
    got_left = {r["index"]: r["score"] for r in left}
    want_left = ref.logits(QUERY, LONG_DOC, max_len=64, direction="left")[0]
    assert got_left[0] == pytest.approx(want_left, rel=1e-4, abs=1e-5)
    assert abs(got_left[0] - got[0]) > 1e-3, "left and right cuts keep different tokens"


# /v1/rerank (Cohere, Jina, vLLM)


def test_v1_rerank_top_n_documents_and_usage(srv, refs):
    ref = refs["reranker"]
    documents = [DOCS[0], {"text": DOCS[1]}, DOCS[2], {"text": DOCS[3]}]
    texts = DOCS[:4]
    probabilities = sigmoid([ref.logits(QUERY, t)[0] for t in texts])
    body = ok(post(srv, "/v1/rerank", {"model": "tiny_reranker", "query": QUERY, "documents": documents,
                                       "top_n": 2, "return_documents": True}))
    assert body["model"] == "tiny_reranker" and body["id"]
    best = list(np.argsort(-probabilities, kind="stable")[:2])
    assert [r["index"] for r in body["results"]] == best
    for r in body["results"]:
        assert r["relevance_score"] == pytest.approx(probabilities[r["index"]], rel=1e-4)
        assert r["document"] == {"text": texts[r["index"]]}
    # Usage counts every pair scored, not just the top_n returned.
    assert body["usage"]["total_tokens"] == sum(ref.count(QUERY, t) for t in texts)
    plain = ok(post(srv, "/v1/rerank", {"query": QUERY, "documents": texts}))
    assert len(plain["results"]) == 4 and all("document" not in r for r in plain["results"])
    assert [r["index"] for r in plain["results"]] == list(np.argsort(-probabilities, kind="stable"))
    # Cohere and vLLM cut long documents unless told not to.
    long = ok(post(srv, "/v1/rerank", {"query": QUERY, "documents": [LONG_DOC]}))
    assert long["results"][0]["relevance_score"] == pytest.approx(
        sigmoid(ref.logits(QUERY, LONG_DOC, max_len=64)[0]), rel=1e-4)
    assert long["usage"]["total_tokens"] == 64


def test_v1_rerank_errors_are_openai_shaped(srv):
    for body, status, param in [
        ({"query": QUERY, "documents": []}, 400, "documents"),
        ({"model": "no_such_model", "query": QUERY, "documents": ["a"]}, 404, None),
        ({"query": QUERY}, 400, None),
    ]:
        response = post(srv, "/v1/rerank", body)
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert {"message", "type", "param", "code"} <= set(error), error
        assert error["message"]
        if param:
            assert error["param"] == param, error


# /predict


def test_predict_is_softmax_over_labels_best_first(srv, refs):
    ref = refs["roberta"]
    text = TEXTS[0]
    logits = ref.logits(text)
    response = post(srv, "/tei/tiny_roberta/predict", {"inputs": text})
    predictions = ok(response)
    probabilities = softmax(logits)
    assert [p["label"] for p in predictions] == [ref.labels[i] for i in np.argsort(-probabilities)]
    for p in predictions:
        assert p["score"] == pytest.approx(probabilities[ref.labels.index(p["label"])], rel=1e-4, abs=1e-6)
    raw = ok(post(srv, "/tei/tiny_roberta/predict", {"inputs": text, "raw_scores": True}))
    got = {p["label"]: p["score"] for p in raw}
    np.testing.assert_allclose([got[l] for l in ref.labels], logits, rtol=1e-4, atol=1e-5)
    # /classify is the same route, and the body's `model` picks the model.
    assert ok(post(srv, "/classify", {"inputs": text, "model": "tiny_roberta"})) == predictions
    assert ok(post(srv, "/tei/tiny_roberta/classify", {"inputs": text})) == predictions


def test_roberta_layout_matches_the_reference(srv, refs):
    # Positions from pad_token_id + 1, the `roberta.` prefix, classifier.dense/out_proj.
    ref = refs["roberta"]
    batch = ok(post(srv, "/tei/tiny_roberta/predict", {"inputs": [[t] for t in TEXTS], "raw_scores": True}))
    assert len(batch) == len(TEXTS)
    for text, predictions in zip(TEXTS, batch):
        got = {p["label"]: p["score"] for p in predictions}
        np.testing.assert_allclose([got[l] for l in ref.labels], ref.logits(text), rtol=1e-4, atol=1e-5,
                                   err_msg=text)


def test_distilbert_layout_single_pair_and_mixed_batch(srv, refs):
    ref = refs["distil"]
    items = [[TEXTS[0]], [TEXTS[1], TEXTS[2]], [TEXTS[3]], [QUERY, DOCS[0]]]
    want = [ref.logits(*item) for item in items]
    response = post(srv, "/tei/tiny_distil/predict", {"inputs": items, "raw_scores": True})
    batch = ok(response)
    assert len(batch) == len(items), "one list per item, in input order"
    for item, predictions, logits in zip(items, batch, want):
        got = {p["label"]: p["score"] for p in predictions}
        np.testing.assert_allclose([got["NEG"], got["POS"]], logits, rtol=1e-4, atol=1e-5, err_msg=str(item))
        assert predictions[0]["score"] >= predictions[1]["score"]
    assert int(response.headers["x-compute-tokens"]) == sum(ref.count(*item) for item in items)
    assert int(response.headers["x-compute-characters"]) == sum(len(t) for item in items for t in item)
    # A pair alone (not a batch) answers one flat list; a single text too.
    for inputs, logits in [([TEXTS[1], TEXTS[2]], want[1]), (TEXTS[0], want[0])]:
        predictions = ok(post(srv, "/tei/tiny_distil/predict", {"inputs": inputs}))
        probabilities = softmax(logits)
        assert [p["label"] for p in predictions] == [ref.labels[i] for i in np.argsort(-probabilities)]
        for p in predictions:
            assert p["score"] == pytest.approx(probabilities[ref.labels.index(p["label"])], rel=1e-4)


def test_singles_and_pairs_in_flight_together_each_get_their_own_scores(srv, refs):
    # The optional pair: requests with and without it must not share a batch wrongly.
    ref = refs["distil"]
    items = [[TEXTS[i % 5]] if i % 2 else [TEXTS[i % 5], DOCS[i % 5]] for i in range(16)]

    def kserve(item):
        columns = {"TEXT": [item[0]], **({"TEXT_PAIR": [item[1]]} if len(item) == 2 else {})}
        return kserve_infer(srv, "grpc", "tiny_distil", columns, ["LOGITS"]).as_numpy("LOGITS")[0]

    def tei(item):
        inputs = item[0] if len(item) == 1 else item
        predictions = ok(post(srv, "/tei/tiny_distil/predict", {"inputs": inputs, "raw_scores": True}))
        got = {p["label"]: p["score"] for p in predictions}
        return [got["NEG"], got["POS"]]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: (kserve if i % 3 else tei)(items[i]), range(len(items))))
    for item, got in zip(items, answers):
        np.testing.assert_allclose(got, ref.logits(*item), rtol=1e-4, atol=1e-5, err_msg=str(item))


def test_predict_on_a_reranker_is_one_sigmoid_label(srv, refs):
    ref = refs["reranker"]
    predictions = ok(post(srv, "/tei/tiny_reranker/predict", {"inputs": [QUERY, DOCS[0]]}))
    assert [p["label"] for p in predictions] == ["LABEL_0"]
    assert predictions[0]["score"] == pytest.approx(sigmoid(ref.logits(QUERY, DOCS[0])[0]), rel=1e-4)


def test_predict_refuses_what_the_model_cannot_take(srv):
    tei_error(post(srv, "/tei/tiny_roberta/predict", {"inputs": ["a", "b"]}), 413, "Validation",
              "tiny_roberta", "single texts")
    tei_error(post(srv, "/tei/tiny_reranker/predict", {"inputs": "a"}), 413, "Validation",
              "tiny_reranker", "pairs")
    tei_error(post(srv, "/tei/tiny_roberta/predict", {"inputs": ["a", "b", "c"]}), 422, "Tokenizer", "inputs")
    tei_error(post(srv, "/tei/tiny_roberta/predict", {"inputs": [["a"], []]}), 422, "Tokenizer", "inputs[1]")
    tei_error(post(srv, "/tei/tiny_embedder/predict", {"inputs": "a"}), 424, "Backend", "not a classifier")
    # Three classifier-like models and no --tei-model: the route cannot choose.
    tei_error(post(srv, "/predict", {"inputs": "a"}), 400, "Validation",
              "tiny_distil", "tiny_reranker", "tiny_roberta", "--tei-model")


def test_labels_and_lengths_are_filled_from_the_model_files(srv, refs):
    def parameters(model):
        cfg = requests.get(f"http://{srv.http}/v2/models/{model}/config", timeout=10).json()
        return {k: v["string_value"] for k, v in cfg["parameters"].items()}

    roberta = parameters("tiny_roberta")
    assert json.loads(roberta["labels"]) == ["negative", "neutral", "positive"]
    assert roberta["max_seq_length"] == "64", "66 positions after the offset of 2"
    assert json.loads(parameters("tiny_distil")["labels"]) == ["NEG", "POS"]
    assert json.loads(parameters("tiny_reranker")["labels"]) == ["LABEL_0"]
    embedder = parameters("tiny_embedder")
    assert (embedder["max_seq_length"], embedder["pooling"]) == ("16", "mean")
    assert "labels" not in embedder


# /embed and /similarity


def test_embed_normalizes_by_default_and_not_when_asked(srv, refs):
    ref = refs["embedder"]
    response = post(srv, "/embed", {"inputs": TEXTS})
    vectors = np.array(ok(response))
    assert vectors.shape == (len(TEXTS), tei_models.HIDDEN)
    np.testing.assert_allclose(vectors, [ref.embed(t) for t in TEXTS], rtol=1e-4, atol=1e-6)
    assert int(response.headers["x-compute-tokens"]) == sum(ref.count(t) for t in TEXTS)
    assert int(response.headers["x-compute-characters"]) == sum(len(t) for t in TEXTS)
    raw = np.array(ok(post(srv, "/embed", {"inputs": TEXTS, "normalize": False})))
    np.testing.assert_allclose(raw, [ref.embed(t, normalize=False) for t in TEXTS], rtol=1e-4, atol=1e-5)
    assert abs(np.linalg.norm(raw[0]) - 1) > 0.1
    # One string is still a list of one vector.
    one = ok(post(srv, "/tei/tiny_embedder/embed", {"inputs": TEXTS[0]}))
    assert np.array(one).shape == (1, tei_models.HIDDEN)
    np.testing.assert_allclose(one[0], vectors[0], atol=1e-6)


def test_embed_many_texts_keep_their_order(srv, refs):
    ref = refs["embedder"]
    texts = [f"{a} {b}" for a in ("the cat", "a dog", "paris", "berlin", "i love")
             for b in ("sat", "is great", "flows", "was slow")]
    assert len(texts) > 8, "more than the model's max_batch_size"
    vectors = ok(post(srv, "/embed", {"inputs": texts}))
    np.testing.assert_allclose(vectors, [ref.embed(t) for t in texts], rtol=1e-4, atol=1e-6)


def test_embed_prompt_name_prepends_the_prompt(srv, refs):
    ref = refs["embedder"]
    text = "where is the cafe"
    got = ok(post(srv, "/embed", {"inputs": text, "prompt_name": "query"}))[0]
    np.testing.assert_allclose(got, ref.embed("query: " + text), rtol=1e-4, atol=1e-6)
    assert cosine(got, ref.embed(text)) < 0.9999, "the prompt changes the vector"
    tei_error(post(srv, "/embed", {"inputs": text, "prompt_name": "passage"}), 413, "Validation",
              "passage", "query")


def test_embed_truncation_refuses_or_cuts_either_end(srv, refs):
    ref = refs["embedder"]
    n = ref.count(LONG)
    assert n > 16
    tei_error(post(srv, "/embed", {"inputs": LONG}), 413, "Validation", "at most 16 tokens", f"given: {n}")
    tei_error(post(srv, "/embed", {"inputs": LONG, "truncate": False}), 413, "Validation", "at most 16 tokens")
    right = ok(post(srv, "/embed", {"inputs": LONG, "truncate": True}))[0]
    np.testing.assert_allclose(right, ref.embed(LONG, direction="right"), rtol=1e-4, atol=1e-6)
    for spelling in ("left", "Left"):
        left = ok(post(srv, "/embed", {"inputs": LONG, "truncate": True, "truncation_direction": spelling}))[0]
        np.testing.assert_allclose(left, ref.embed(LONG, direction="left"), rtol=1e-4, atol=1e-6)
    assert np.abs(np.array(left) - right).max() > 1e-3
    # The prompt's tokens count toward the limit.
    short = "the cat sat on the mat . the cat sat on the mat"
    assert ref.count(short) <= 16 < ref.count("query: " + short)
    ok(post(srv, "/embed", {"inputs": short}))
    tei_error(post(srv, "/embed", {"inputs": short, "prompt_name": "query"}), 413, "Validation", "at most 16")


def test_embed_dimensions_keeps_the_first_values_renormalized(srv, refs):
    want = refs["embedder"].embed(TEXTS[0])[:8]
    got = ok(post(srv, "/embed", {"inputs": TEXTS[0], "dimensions": 8}))[0]
    np.testing.assert_allclose(got, want / np.linalg.norm(want), rtol=1e-4, atol=1e-6)
    tei_error(post(srv, "/embed", {"inputs": TEXTS[0], "dimensions": 33}), 413, "Validation", "dimensions")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_xlm_roberta_embedder_with_cls_pooling_matches_the_reference(srv, refs, protocol):
    """An XLM-R sentence transformer (positions after the padding id, CLS pooling from
    1_Pooling, no Normalize module) over TEI's /embed (normalised by default, raw when
    asked) and over KServe (the model's own default: not normalised)."""
    ref = refs["xlmr"]
    raw = [ref.embed(t, normalize=False) for t in TEXTS]
    tei = np.array(ok(post(srv, "/tei/tiny_xlmr_embedder/embed", {"inputs": TEXTS})))
    np.testing.assert_allclose(tei, [ref.embed(t) for t in TEXTS], rtol=1e-4, atol=1e-6)
    plain = np.array(ok(post(srv, "/tei/tiny_xlmr_embedder/embed", {"inputs": TEXTS, "normalize": False})))
    np.testing.assert_allclose(plain, raw, rtol=1e-4, atol=1e-5)
    assert abs(np.linalg.norm(plain[0]) - 1) > 0.1
    module = httpclient if protocol == "http" else grpcclient
    url = srv.http if protocol == "http" else srv.grpc
    with module.InferenceServerClient(url) as client:
        text = module.InferInput("TEXT", [len(TEXTS), 1], "BYTES")
        text.set_data_from_numpy(np.array([[t.encode()] for t in TEXTS], dtype=object))
        got = client.infer("tiny_xlmr_embedder", [text]).as_numpy("EMBEDDING")
    np.testing.assert_allclose(got, raw, rtol=1e-4, atol=1e-5)
    info = ok(requests.get("http://%s/tei/tiny_xlmr_embedder/info" % srv.http, timeout=30))
    assert info["model_type"] == {"embedding": {"pooling": "cls"}}


def test_embed_all_gives_every_tokens_state(srv, refs):
    ref = refs["embedder"]
    texts = [TEXTS[0], "the cat", TEXTS[1]]  # different lengths share a padded batch
    response = post(srv, "/embed_all", {"inputs": texts, "prompt_name": "query"})
    got = ok(response)
    assert [len(t) for t in got] == [ref.count("query: " + t) for t in texts]
    for text, states in zip(texts, got):
        np.testing.assert_allclose(np.array(states), ref.token_states(text, prompt_name="query"),
                                   rtol=1e-4, atol=1e-5)
    assert int(response.headers["x-compute-tokens"]) == sum(len(t) for t in got)
    cut = ok(post(srv, "/tei/tiny_embedder/embed_all", {"inputs": LONG, "truncate": True,
                                                        "truncation_direction": "left"}))[0]
    np.testing.assert_allclose(np.array(cut), ref.token_states(LONG, direction="left"), rtol=1e-4, atol=1e-5)
    tei_error(post(srv, "/embed_all", {"inputs": LONG}), 413, "Validation", "at most 16 tokens")
    # A model that is no embedder has no token states to give.
    tei_error(post(srv, "/embed_all", {"inputs": "a", "model": "tiny_reranker"}), 424, "Backend",
              "not an embedding model")


def test_similarity_is_the_cosine_in_input_order(srv, refs):
    ref = refs["embedder"]
    source, sentences = "the cat sat on the mat", ["a dog sat on the mat", "paris is a city", "the cat sat"]
    want = [cosine(ref.embed(source), ref.embed(s)) for s in sentences]
    response = post(srv, "/similarity", {"inputs": {"source_sentence": source, "sentences": sentences}})
    np.testing.assert_allclose(ok(response), want, rtol=1e-4, atol=1e-6)
    assert int(response.headers["x-compute-tokens"]) == sum(ref.count(t) for t in [source, *sentences])
    prompted = ok(post(srv, "/tei/tiny_embedder/similarity",
                       {"inputs": {"source_sentence": source, "sentences": sentences},
                        "parameters": {"prompt_name": "query"}}))
    want = [cosine(ref.embed(source, prompt_name="query"), ref.embed(s, prompt_name="query")) for s in sentences]
    np.testing.assert_allclose(prompted, want, rtol=1e-4, atol=1e-6)
    # The compat route answers /similarity for a body with inputs.source_sentence.
    compat = ok(post(srv, "/tei/tiny_embedder", {"inputs": {"source_sentence": source, "sentences": sentences}}))
    np.testing.assert_allclose(compat, ok(response), atol=1e-6)


def test_requests_with_different_options_batch_together(srv, refs):
    ref = refs["embedder"]
    cases = [
        ({"inputs": TEXTS[0]}, ref.embed(TEXTS[0])),
        ({"inputs": TEXTS[0], "normalize": False}, ref.embed(TEXTS[0], normalize=False)),
        ({"inputs": TEXTS[1], "prompt_name": "query"}, ref.embed(TEXTS[1], prompt_name="query")),
        ({"inputs": LONG, "truncate": True}, ref.embed(LONG)),
        ({"inputs": LONG, "truncate": True, "truncation_direction": "left"}, ref.embed(LONG, direction="left")),
        ({"inputs": TEXTS[2], "normalize": False, "prompt_name": "query"},
         ref.embed(TEXTS[2], normalize=False, prompt_name="query")),
    ] * 3
    with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
        answers = list(pool.map(lambda c: post(srv, "/embed", c[0]), cases))
    for (body, want), answer in zip(cases, answers):
        np.testing.assert_allclose(ok(answer)[0], want, rtol=1e-4, atol=1e-5, err_msg=str(body))


# /info


def test_health_is_an_empty_200_while_ready(srv):
    response = requests.get(f"http://{srv.http}/health", timeout=10)
    assert (response.status_code, response.text) == (200, "")


def test_info_describes_each_kind(srv):
    def info(model):
        return ok(requests.get(f"http://{srv.http}/tei/{model}/info", timeout=10))

    reranker = info("tiny_reranker")
    assert reranker["model_id"] == "tiny_reranker"
    assert reranker["model_type"] == {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    assert (reranker["max_input_length"], reranker["max_batch_requests"]) == (64, 8)
    roberta = info("tiny_roberta")
    assert roberta["model_type"] == {"classifier": {
        "id2label": {"0": "negative", "1": "neutral", "2": "positive"},
        "label2id": {"negative": 0, "neutral": 1, "positive": 2}}}
    assert info("tiny_distil")["model_type"]["classifier"]["id2label"] == {"0": "NEG", "1": "POS"}
    embedder = info("tiny_embedder")
    assert embedder["model_type"] == {"embedding": {"pooling": "mean"}}
    assert embedder["max_input_length"] == 16
    for body in (reranker, roberta, embedder):
        assert body["max_client_batch_size"] == 512
        assert body["auto_truncate"] is False
        assert isinstance(body["version"], str) and body["model_dtype"]
    # The root /info describes the --tei-model default.
    assert ok(requests.get(f"http://{srv.http}/info", timeout=10))["model_id"] == "tiny_embedder"
    tei_error(requests.get(f"http://{srv.http}/tei/nope/info", timeout=10), 404, "Validation", "nope")


# KServe


def kserve_infer(srv, protocol, model, columns, outputs, parameters=None):
    door = httpclient if protocol == "http" else grpcclient
    client = door.InferenceServerClient(srv.http if protocol == "http" else srv.grpc)
    inputs = []
    for name, texts in columns.items():
        tensor = door.InferInput(name, [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
        inputs.append(tensor)
    wanted = [door.InferRequestedOutput(o) for o in outputs]
    return client.infer(model, inputs, outputs=wanted, parameters=parameters)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_kserve_reranker_returns_raw_logits_and_token_counts(srv, refs, protocol):
    ref = refs["reranker"]
    result = kserve_infer(srv, protocol, "tiny_reranker", {"TEXT": [QUERY] * 3, "TEXT_PAIR": DOCS[:3]},
                          ["SCORES", "TOKENS"])
    scores, tokens = result.as_numpy("SCORES"), result.as_numpy("TOKENS")
    assert scores.shape == (3, 1) and scores.dtype == np.float32
    np.testing.assert_allclose(scores[:, 0], [ref.logits(QUERY, d)[0] for d in DOCS[:3]], rtol=1e-4, atol=1e-5)
    assert tokens[:, 0].tolist() == [ref.count(QUERY, d) for d in DOCS[:3]]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_kserve_text_parameters(srv, refs, protocol):
    ref = refs["embedder"]
    # KServe truncates by default (TEI refuses by default).
    result = kserve_infer(srv, protocol, "tiny_embedder", {"TEXT": [LONG, TEXTS[0]]}, ["EMBEDDING", "TOKENS"])
    np.testing.assert_allclose(result.as_numpy("EMBEDDING"), [ref.embed(LONG), ref.embed(TEXTS[0])],
                               rtol=1e-4, atol=1e-6)
    assert result.as_numpy("TOKENS")[:, 0].tolist() == [16, ref.count(TEXTS[0])]
    left = kserve_infer(srv, protocol, "tiny_embedder", {"TEXT": [LONG]}, ["EMBEDDING"],
                        {"truncation_direction": "left", "normalize": False, "prompt_name": "query"})
    np.testing.assert_allclose(left.as_numpy("EMBEDDING")[0],
                               ref.embed(LONG, normalize=False, prompt_name="query", direction="left"),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(InferenceServerException) as err:
        kserve_infer(srv, protocol, "tiny_embedder", {"TEXT": [LONG]}, ["EMBEDDING"], {"truncate": False})
    assert "must have at most 16 tokens" in str(err.value) and f"given: {ref.count(LONG)}" in str(err.value)
    with pytest.raises(InferenceServerException) as err:
        kserve_infer(srv, protocol, "tiny_reranker", {"TEXT": [QUERY], "TEXT_PAIR": [LONG_DOC]}, ["SCORES"],
                     {"truncate": False})
    assert "at most 64 tokens" in str(err.value)


# Errors


def test_tei_errors_take_tei_statuses_and_types(srv):
    tei_error(post(srv, "/tei/nope/embed", {"inputs": "a"}), 404, "Validation", "nope")
    tei_error(post(srv, "/rerank", {"query": "a", "texts": ["b"], "model": "nope"}), 404, "Validation", "nope")
    # Malformed bodies: 422 naming the field.
    tei_error(post(srv, "/embed", {"inputs": 5}), 422, "Tokenizer", "'inputs'")
    tei_error(post(srv, "/rerank", {"query": "a", "texts": "b"}), 422, "Tokenizer", "'texts'")
    tei_error(post(srv, "/rerank", {"query": 1, "texts": ["b"]}), 422, "Tokenizer", "'query'")
    tei_error(post(srv, "/rerank", {"texts": ["b"]}), 422, "Tokenizer", "query")
    tei_error(post(srv, "/embed", {"inputs": "a", "truncation_direction": "up"}), 422, "Tokenizer",
              "truncation_direction")
    tei_error(post(srv, "/tei/tiny_embedder/similarity", {"inputs": {"sentences": ["a"]}}), 422, "Tokenizer",
              "source_sentence")
    # Empty lists: 400 Empty, naming the field as TEI does.
    assert tei_error(post(srv, "/rerank", {"query": "a", "texts": []}), 400, "Empty") == "`texts` cannot be empty"
    assert tei_error(post(srv, "/similarity", {"inputs": {"source_sentence": "a", "sentences": []}}),
                     400, "Empty") == "`inputs.sentences` cannot be empty"
    # An empty text, and a batch over 512.
    tei_error(post(srv, "/embed", {"inputs": ["a", ""]}), 413, "Validation", "cannot be empty")
    tei_error(post(srv, "/rerank", {"query": "a", "texts": ["b"] * 513}), 413, "Validation",
              "batch size 513 > maximum allowed batch size 512")
    tei_error(post(srv, "/embed", {"inputs": ["a"] * 513}), 413, "Validation", "513")
    # Token ids are TEI's, not this server's: refused naming the item.
    tei_error(post(srv, "/embed", {"inputs": ["a", [2, 5, 3]]}), 413, "Validation", "inputs[1]")
    # A model of the wrong kind: 424 Backend.
    tei_error(post(srv, "/tei/tiny_roberta/embed", {"inputs": "a"}), 424, "Backend", "not an embedding model")
    tei_error(post(srv, "/tei/tiny_embedder/rerank", {"query": "a", "texts": ["b"]}), 424, "Backend",
              "not a re-ranker")
    # Invalid JSON.
    response = requests.post(f"http://{srv.http}/embed", data=b"{nope", timeout=10,
                             headers={"content-type": "application/json"})
    assert response.status_code in (400, 422), response.text


def test_predict_reads_inputs_as_tei_does(srv, refs):
    # TEI's PredictInput: a string or a one-string list is one text, two strings a pair,
    # a list of lists a batch; [] and a list of three strings do not parse (422).
    probabilities = softmax(refs["roberta"].logits(TEXTS[0]))
    one = ok(post(srv, "/tei/tiny_roberta/predict", {"inputs": TEXTS[0]}))
    assert ok(post(srv, "/tei/tiny_roberta/predict", {"inputs": [[TEXTS[0]]]})) == [one]
    assert max(p["score"] for p in one) == pytest.approx(probabilities.max(), rel=1e-4)
    assert ok(post(srv, "/tei/tiny_roberta/predict", {"inputs": [TEXTS[0]]})) == one
    tei_error(post(srv, "/tei/tiny_roberta/predict", {"inputs": []}), 422, "Tokenizer", "inputs")


@pytest.mark.parametrize("path,body", [
    ("/embed", {"inputs": ""}),
    ("/tei/tiny_roberta/predict", {"inputs": ""}),
    ("/tei/tiny_distil/predict", {"inputs": [["a"], [""]]}),
    ("/rerank", {"query": "", "texts": [""]}),
])
def test_empty_texts_are_refused_as_tei_does(srv, path, body):
    # TEI: "Input validation error: `inputs` cannot be empty" (a pair only when both are).
    tei_error(post(srv, path, body), 413, "Validation", "cannot be empty")


# huggingface_hub


def test_huggingface_hub_inference_client(srv, refs):
    embedder, roberta = refs["embedder"], refs["roberta"]
    client = InferenceClient(model=f"http://{srv.http}/tei/tiny_embedder", timeout=60)
    vectors = client.feature_extraction(TEXTS[0])
    assert vectors.shape == (1, tei_models.HIDDEN)
    np.testing.assert_allclose(vectors[0], embedder.embed(TEXTS[0]), rtol=1e-4, atol=1e-6)
    # The client sends its parameters at the body's root, lowercase direction included.
    left = client.feature_extraction(LONG, truncate=True, truncation_direction="left", normalize=False)
    np.testing.assert_allclose(left[0], embedder.embed(LONG, normalize=False, direction="left"),
                               rtol=1e-4, atol=1e-5)
    similarities = client.sentence_similarity(TEXTS[2], other_sentences=TEXTS[:2])
    want = [cosine(embedder.embed(TEXTS[2]), embedder.embed(t)) for t in TEXTS[:2]]
    np.testing.assert_allclose(similarities, want, rtol=1e-4, atol=1e-6)
    with pytest.raises(HfHubHTTPError) as err:
        client.feature_extraction(LONG)
    assert err.value.response.status_code == 413
    assert "at most 16 tokens" in str(err.value)

    classifier = InferenceClient(model=f"http://{srv.http}/tei/tiny_roberta", timeout=60)
    result = classifier.text_classification(TEXTS[1])
    # TEI answers one flat list for one text, from which the client takes the best label
    # (the HF Inference API's list of lists would give the whole list).
    top = result[0] if isinstance(result, list) else result
    probabilities = softmax(roberta.logits(TEXTS[1]))
    assert top.label == roberta.labels[int(np.argmax(probabilities))]
    assert top.score == pytest.approx(probabilities.max(), rel=1e-4)


# --tei-model


def test_tei_model_flag_picks_the_first_default_of_the_route_kind(tmp_path):
    emb_a = tei_models.write_embedder(tmp_path, "emb_a", seed=21)
    emb_b = tei_models.write_embedder(tmp_path, "emb_b", seed=22)
    reranker = tei_models.write_reranker(tmp_path, "rr", seed=23)
    server = start_server(["--model-repository", str(tmp_path), "--tei-model", "rr", "--tei-model", "emb_b"])
    try:
        got = ok(post(server, "/embed", {"inputs": TEXTS[0]}))[0]
        np.testing.assert_allclose(got, emb_b.embed(TEXTS[0]), rtol=1e-4, atol=1e-6)
        named = ok(post(server, "/embed", {"inputs": TEXTS[0], "model": "emb_a"}))[0]
        np.testing.assert_allclose(named, emb_a.embed(TEXTS[0]), rtol=1e-4, atol=1e-6)
        similarity = ok(post(server, "/similarity", {"inputs": {"source_sentence": TEXTS[0], "sentences": [TEXTS[1]]}}))
        assert similarity[0] == pytest.approx(cosine(emb_b.embed(TEXTS[0]), emb_b.embed(TEXTS[1])), rel=1e-4)
        ranks = ok(post(server, "/rerank", {"query": QUERY, "texts": DOCS[:2], "raw_scores": True}))
        assert {r["index"]: r["score"] for r in ranks}[0] == pytest.approx(reranker.logits(QUERY, DOCS[0])[0], rel=1e-4)
        # The first default of any kind answers the root /info and TEI's compat route at the
        # root, where a client given the server's base URL posts.
        assert ok(requests.get(f"http://{server.http}/info", timeout=10))["model_id"] == "rr"
        ranked = ok(post(server, "/", {"query": QUERY, "texts": DOCS[:2], "raw_scores": True}))
        assert [r["index"] for r in ranked] == [r["index"] for r in ranks]
        embedded = ok(post(server, "/", {"inputs": TEXTS[0], "model": "emb_a"}))[0]
        np.testing.assert_allclose(embedded, emb_a.embed(TEXTS[0]), rtol=1e-4, atol=1e-6)
    finally:
        server.stop()
    # Without the flag, two embedders make /embed ambiguous; /rerank still has one model.
    server = start_server(["--model-repository", str(tmp_path)])
    try:
        tei_error(post(server, "/embed", {"inputs": TEXTS[0]}), 400, "Validation", "emb_a", "emb_b")
        ok(post(server, "/rerank", {"query": QUERY, "texts": DOCS[:2]}))
    finally:
        server.stop()


# /tokenize and /decode


def byte_offsets(text, start, stop):
    """Python's character offsets as UTF-8 byte offsets."""
    return len(text[:start].encode()), len(text[:stop].encode())


@pytest.mark.engine_only("a gateway holds no tokenizer: it answers 424 (see the next test)")
def test_tokenize_gives_ids_texts_and_byte_offsets(srv, refs):
    ref = refs["embedder"]
    text = "The café sat on the MAT."
    tokens = ok(post(srv, "/tei/tiny_embedder/tokenize", {"inputs": text}))
    assert len(tokens) == 1, "always a list per input"
    want = ref.encode(text)
    assert [t["id"] for t in tokens[0]] == want.ids
    assert "[UNK]" not in want.tokens, "the accent is stripped, so 'cafe' is in the vocabulary"
    encoded = text.encode()
    for token, piece, (start, stop), special in zip(tokens[0], want.tokens, want.offsets,
                                                    want.special_tokens_mask):
        if special:
            assert token == {"id": token["id"], "text": piece, "special": True, "start": None, "stop": None}
        else:
            b_start, b_stop = byte_offsets(text, start, stop)
            assert (token["start"], token["stop"]) == (b_start, b_stop), token
            assert token["text"] == encoded[b_start:b_stop].decode(), token
            assert token["special"] is False
    # After "café" (5 bytes, 4 characters) byte and character offsets part.
    sat = next(t for t in tokens[0] if t["text"] == "sat")
    assert (sat["start"], sat["stop"]) == (10, 13)

    plain = ok(post(srv, "/tei/tiny_embedder/tokenize", {"inputs": [text, "the cat"], "add_special_tokens": False}))
    assert len(plain) == 2
    assert [t["id"] for t in plain[0]] == want.ids[1:-1]
    assert [t["text"] for t in plain[1]] == ["the", "cat"] and not any(t["special"] for t in plain[1])
    # The body's `model` picks the model on the root route.
    root = ok(post(srv, "/tokenize", {"inputs": text, "model": "tiny_reranker"}))
    assert [t["id"] for t in root[0]] == want.ids


@pytest.mark.engine_only("a gateway holds no tokenizer: it answers 424 (see the next test)")
def test_decode_single_and_batched_ids(srv, refs):
    tokenizer = refs["embedder"].tokenizer
    first = refs["embedder"].encode("the cat sat on the mat.").ids
    second = refs["embedder"].encode("paris is a great city").ids
    got = ok(post(srv, "/tei/tiny_embedder/decode", {"ids": first}))
    assert got == [tokenizer.decode(first, skip_special_tokens=True)] == ["the cat sat on the mat."]
    both = ok(post(srv, "/tei/tiny_embedder/decode", {"ids": [first, second], "skip_special_tokens": False}))
    assert both == [tokenizer.decode(ids, skip_special_tokens=False) for ids in (first, second)]
    assert both[0].startswith("[CLS]")


@pytest.mark.skipif(not THROUGH_GATEWAY, reason="a gateway's answer; an engine tokenizes")
def test_gateway_refuses_tokenize_and_decode(srv):
    for path, body in [("/tei/tiny_embedder/tokenize", {"inputs": "the cat"}),
                       ("/tei/tiny_embedder/decode", {"ids": [2, 5, 3]})]:
        tei_error(post(srv, path, body), 424, "Backend", "gateway")


@pytest.mark.parametrize("packing", ["bf16", "int16"])
def test_packed_dense_layers_keep_a_cross_encoders_scores(tmp_path, packing):
    """`matmul_weights` on a cross-encoder: its dense layers multiplied by our packed CPU
    kernels, scores close to the float64 reference (they round weights and activations)."""
    config = tei_models.RERANKER_CONFIG % "packed" + (
        'parameters [ { key: "matmul_weights" value: { string_value: "%s" } } ]\n' % packing)
    ref = tei_models.write_reranker(tmp_path, "packed", config_text=config)
    server = start_server(["--model-repository", str(tmp_path)])
    try:
        got = ok(post(server, "/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": True}))
    finally:
        server.stop()
    want = np.array([ref.logits(QUERY, d)[0] for d in DOCS])
    scores = np.array([r["score"] for r in sorted(got, key=lambda r: r["index"])])
    # Measured: bf16 within 0.3% of the largest score, int16 within 0.03%.
    np.testing.assert_allclose(scores, want, atol=0.02 * np.abs(want).max())
    assert np.abs(scores - want).max() > 1e-5, "the packed kernels ran (FP32 matches to 1e-6)"


def test_api_key_guards_the_routes_but_not_health(tmp_path):
    """One embedder behind a key, as a TEI server is: `huggingface_hub` given the server's
    base URL and the key reaches it through the root compat route."""
    ref = tei_models.write_embedder(tmp_path, "only")
    server = start_server(["--model-repository", str(tmp_path), "--api-key", "sesame"])
    try:
        assert requests.get(f"http://{server.http}/health", timeout=10).status_code == 200
        assert post(server, "/embed", {"inputs": "a"}).status_code == 401
        assert post(server, "/", {"inputs": "a"}).status_code == 401
        with_key = post(server, "/embed", {"inputs": "a"}, headers={"Authorization": "Bearer sesame"})
        assert np.array(ok(with_key)).shape == (1, tei_models.HIDDEN)
        client = InferenceClient(model=f"http://{server.http}", token="sesame", timeout=60)
        vectors = client.feature_extraction(TEXTS[0])
        np.testing.assert_allclose(vectors[0], ref.embed(TEXTS[0]), rtol=1e-4, atol=1e-6)
    finally:
        server.stop()
