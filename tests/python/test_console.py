"""The web console (frontends/console/assets, served under /console/) in Debian's Chromium
through Playwright, against real servers: every page loads without a console error or a
CSP violation, the Try it panels infer, stream and embed over REST, SSE and gRPC-Web with
the right answers, the Live charts move under load, the Compare page measures the three
encodings, and the API key, explicit model control, TLS, keyboard and narrow-window
behaviour hold.

Every test saves screenshots to target/test-artifacts/console/; with NEREID_CONSOLE_DOCS=1
the tests also write one 1280x800 screenshot per page to docs/console-<page>.png.
"""

import math
import os
import re
import threading
import time

import pytest
import requests

from conftest import ROOT, THROUGH_GATEWAY, start_server

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # reported by the browser fixture, or the module is skipped below
    sync_playwright = None

CHROMIUM = os.environ.get("NEREID_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "target" / "test-artifacts" / "console"
DOCS = os.environ.get("NEREID_CONSOLE_DOCS") == "1"

if sync_playwright is None and not os.path.exists(CHROMIUM):
    pytest.skip("the console tests need Chromium (%s, or $NEREID_CHROMIUM) and the playwright "
                "Python package; neither is installed" % CHROMIUM, allow_module_level=True)

# The full demo's first start downloads minilm and smollm2 into the cache.
pytestmark = pytest.mark.timeout(900)

# simple's inputs in the tests: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1.
INPUT0 = list(range(16))
INPUT1 = [2 * i + 1 for i in range(16)]
TRANSPORTS = {"rest-json": "REST, JSON tensors", "rest-binary": "REST, binary tensors", "grpc-web": "gRPC-Web"}


# --- Fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        pytest.fail("the playwright Python package is missing (pip install playwright)")
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing at %s (apt-get install chromium, or set NEREID_CHROMIUM)" % CHROMIUM)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def demo():
    """The full demo (built-ins, minilm, smollm2): what most pages are shown against."""
    srv = start_server([])
    yield srv
    srv.stop()


class Console:
    """One browser context on a server's console, collecting console errors and page errors."""

    def __init__(self, browser, server, test, scheme="http", **context_options):
        self.context = browser.new_context(viewport={"width": 1280, "height": 800}, **context_options)
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.base = "%s://%s/console/" % (scheme, server.http)
        self.test = re.sub(r"[^\w.-]+", "_", test)
        self.errors = []
        # Console errors a test provokes on purpose (a wrong key's 401), as regexes.
        self.expected_errors = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append("console error: %s" % m.text))
        self.page.on("pageerror", lambda e: self.errors.append("page error: %s" % e))

    def open(self, route="#/models"):
        self.page.goto(self.base + route)
        return self.page

    def by(self, testid):
        return self.page.get_by_test_id(testid)

    def shot(self, step):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / ("%s-%s.png" % (self.test, step))))

    def docs(self, name):
        """docs/console-<name>.png, the viewport at 1280x800, when NEREID_CONSOLE_DOCS=1."""
        if DOCS:
            path = ROOT / "docs" / ("console-%s.png" % name)
            self.page.set_viewport_size({"width": 1280, "height": 800})
            self.page.screenshot(path=str(path))
            assert path.stat().st_size < 200_000, "%s is too large for the docs" % path

    def assert_clean(self):
        unexpected = [e for e in self.errors if not any(re.search(p, e) for p in self.expected_errors)]
        assert not unexpected, "the console logged errors:\n" + "\n".join(unexpected)


@pytest.fixture
def console(browser, request):
    """console(server, **context_options) opens a fresh browser context on that server."""
    opened = []

    def open_console(server, **options):
        c = Console(browser, server, request.node.name, **options)
        opened.append(c)
        return c

    yield open_console
    for c in opened:
        c.context.close()


# --- Helpers ------------------------------------------------------------------------------

def numbers(text):
    return [int(v) for v in re.findall(r"-?\d+", text)]


def infer_simple(c, transport):
    """Sends simple's INPUT0/INPUT1 from the Try page over `transport`; returns the
    outputs and the body sizes shown."""
    page = c.page
    page.select_option("[data-testid=infer-model]", "simple")
    c.by("infer-input-INPUT0").fill(", ".join(map(str, INPUT0)))
    c.by("infer-input-INPUT1").fill(", ".join(map(str, INPUT1)))
    page.select_option("[data-testid=infer-transport]", transport)
    c.by("infer-result").evaluate("el => el.replaceChildren()")
    c.by("infer-send").click()
    expect(c.by("infer-stats")).to_contain_text(TRANSPORTS[transport])
    expect(c.by("infer-error")).to_be_hidden()
    return {
        "OUTPUT0": numbers(c.by("infer-output-OUTPUT0").inner_text()),
        "OUTPUT1": numbers(c.by("infer-output-OUTPUT1").inner_text()),
        "request": int(c.by("infer-request-bytes").get_attribute("data-value")),
        "response": int(c.by("infer-response-bytes").get_attribute("data-value")),
    }


# Records every distinct text of the element `read` each time anything under `observe`
# changes (a MutationObserver inside the page), so a test sees the steps a streamed answer
# went through however fast they came.
WATCH = """([observe, read, key]) => {
  window[key] = [];
  const record = () => {
    const text = document.querySelector(read)?.textContent ?? "";
    if (window[key].at(-1) !== text) window[key].push(text);
  };
  new MutationObserver(record).observe(document.querySelector(observe), { subtree: true, childList: true, characterData: true });
}"""


def chat(c, transport, prompt):
    """Sends `prompt` on the chat panel over `transport`; returns the reply's distinct texts."""
    page = c.page
    page.select_option("[data-testid=chat-model]", "smollm2")
    page.select_option("[data-testid=chat-transport]", transport)
    # Long enough that a busy machine still shows the reply growing over several frames.
    c.by("chat-max-tokens").fill("96")
    c.by("chat-clear").click()
    c.by("chat-input").fill(prompt)
    page.evaluate(WATCH, ["[data-testid=chat-log]", "[data-testid=chat-reply]", "__chatSteps"])
    c.by("chat-send").click()
    expect(c.by("chat-stats")).to_contain_text("pieces streamed", timeout=120_000)
    expect(c.by("chat-error")).to_be_hidden()
    return page.evaluate("window.__chatSteps")


def in_thread(work):
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def load(server, seconds):
    """Sends simple infer requests over REST from a thread for `seconds`."""
    url = "http://%s/v2/models/simple/infer" % server.http
    body = {"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": INPUT0},
                       {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": INPUT1}]}

    def run():
        with requests.Session() as session:
            deadline = time.time() + seconds
            while time.time() < deadline:
                session.post(url, json=body, timeout=10).raise_for_status()

    return in_thread(run)


def generate(server, count):
    """Streams `count` chat completions from smollm2 one after another, from a thread."""
    def run():
        for _ in range(count):
            with requests.post("http://%s/v1/chat/completions" % server.http, stream=True, timeout=120, json={
                    "model": "smollm2", "stream": True, "max_tokens": 48,
                    "messages": [{"role": "user", "content": "Tell me about the sea."}]}) as answer:
                answer.raise_for_status()
                for _ in answer.iter_lines():
                    pass

    return in_thread(run)


# --- Tests --------------------------------------------------------------------------------

def test_console_loads_and_lists_the_models_with_their_states(console, demo):
    c = console(demo)
    page = c.open()
    expect(page).to_have_title(re.compile("Models"))
    cards = c.by("model-card")
    expect(cards.first).to_be_visible()
    for name in ("simple", "identity_fp32", "repeat_int32", "minilm", "smollm2"):
        card = page.locator("[data-testid=model-card][data-model=%s]" % name)
        expect(card).to_have_attribute("data-state", "READY")
        expect(card.get_by_test_id("model-state").first).to_contain_text("READY")
    simple = page.locator("[data-testid=model-card][data-model=simple]")
    expect(simple.get_by_test_id("model-config")).to_contain_text("Max batch size8")
    expect(simple.get_by_test_id("model-config")).to_contain_text("dynamic batching")
    expect(simple.get_by_test_id("model-config")).to_contain_text("INPUT0INT32[-1, 16]")
    expect(page.locator("[data-testid=model-card][data-model=repeat_int32]").get_by_test_id("model-config")).to_contain_text("yes (streams responses)")
    buttons = page.locator("[data-testid=model-load], [data-testid=model-unload]")
    if THROUGH_GATEWAY:
        # A gateway passes load and unload on to its engines, which decide.
        expect(c.by("server-info")).to_contain_text("model control: explicit")
        expect(buttons.first).to_be_visible()
    else:
        # Not explicit mode: no load or unload buttons.
        expect(buttons).to_have_count(0)
        expect(c.by("server-info")).to_contain_text("model control: none")
    c.shot("models")
    c.docs("models")
    # Every page shows without an error (CSP violations would be console errors).
    for name in ("live", "try", "compare", "models"):
        c.by("nav-" + name).click()
        expect(page.locator("#page-%s" % name)).to_be_visible()
        expect(c.by("nav-" + name)).to_have_attribute("aria-current", "page")
        c.shot("page-" + name)
    c.assert_clean()


def test_simple_gives_the_same_sums_over_grpc_web_rest_json_and_rest_binary(console, demo):
    c = console(demo)
    c.open("#/try")
    results = {}
    for transport in ("grpc-web", "rest-json", "rest-binary"):
        results[transport] = infer_simple(c, transport)
        c.shot(transport)
    expected0 = [a + b for a, b in zip(INPUT0, INPUT1)]
    expected1 = [a - b for a, b in zip(INPUT0, INPUT1)]
    for transport, r in results.items():
        assert r["OUTPUT0"] == expected0, transport
        assert r["OUTPUT1"] == expected1, transport
    # Binary and protobuf carry the 2 x 16 INT32 values as 128 raw bytes (for numbers this
    # small JSON is no longer: the Compare test checks sizes on a larger tensor).
    for transport in ("rest-binary", "grpc-web"):
        assert results[transport]["request"] > 128 and results[transport]["response"] > 128
    c.docs("try")
    c.assert_clean()


def test_server_errors_are_shown_as_the_server_gave_them(console, demo):
    c = console(demo)
    # The browser itself logs the REST answer's 400; nothing else may be logged.
    c.expected_errors.append(r"status of 400")
    page = c.open("#/try")
    # A sequence model needs a correlation id, which the form does not send.
    page.select_option("[data-testid=infer-model]", "simple_sequence")
    c.by("infer-input-INPUT").fill("1")
    for transport, shape in (("grpc-web", "gRPC INVALID_ARGUMENT: "), ("rest-json", "400 Bad Request — ")):
        page.select_option("[data-testid=infer-transport]", transport)
        c.by("infer-send").click()
        expect(c.by("infer-error")).to_contain_text(shape + "inference request to model 'simple_sequence' must specify")
        c.shot(transport)
    # A value the form can check itself never reaches the server.
    page.select_option("[data-testid=infer-model]", "simple")
    c.by("infer-input-INPUT0").fill("1, 2, 3")
    c.by("infer-send").click()
    expect(c.by("infer-error")).to_have_text("INPUT0: shape [16] takes 16 values, got 3")
    c.assert_clean()


@pytest.mark.parametrize("transport", ["sse", "grpc-chat", "grpc-prompt"])
def test_a_chat_reply_streams_token_by_token(console, demo, transport):
    c = console(demo)
    c.open("#/try")
    steps = chat(c, transport, "Name three colours.")
    reply = c.by("chat-reply").text_content()
    assert reply.strip(), "empty reply"
    growing = [s for s in steps if s.strip()]
    # Each token came as its own message, and the page showed the reply growing in place
    # (pieces that arrive in one network read are drawn together, so fewer steps than
    # pieces: at least two texts before the final one).
    pieces = int(re.match(r"(\d+) pieces streamed", c.by("chat-stats").inner_text()).group(1))
    assert pieces >= 5, c.by("chat-stats").inner_text()
    assert len(growing) >= 3, "the reply did not stream: %r" % growing
    assert all(b.startswith(a) for a, b in zip(growing, growing[1:])), growing
    assert growing[-1] == reply
    c.shot("reply")
    c.assert_clean()


def test_repeat_int32_streams_its_responses_one_by_one_over_grpc_web(console, demo):
    c = console(demo)
    page = c.open("#/try")
    page.select_option("[data-testid=infer-model]", "repeat_int32")
    expect(page.locator("[data-testid=infer-transport] option")).to_have_count(1)
    c.by("infer-input-IN").fill("10, 20, 30, 40")
    c.by("infer-input-DELAY").fill("250000, 250000, 250000, 250000")  # microseconds
    page.evaluate(WATCH, ["[data-testid=infer-result]", "[data-testid=infer-result]", "__repeatSteps"])
    c.by("infer-send").click()
    expect(c.by("infer-stream-status")).to_contain_text("after 4 responses")
    texts = c.by("infer-response").all_inner_texts()
    assert [re.search(r"OUT = (-?\d+)", t).group(1) for t in texts] == ["10", "20", "30", "40"]
    assert [re.search(r"IDX = (\d+)", t).group(1) for t in texts] == ["0", "1", "2", "3"]
    # Each response was shown on its own while the stream was still open...
    steps = page.evaluate("window.__repeatSteps")
    shown_while_streaming = {len(re.findall(r"\+[\d.]+ m?s:", s)) for s in steps if "Streaming…" in s}
    assert {1, 2, 3} <= shown_while_streaming, steps
    # ...and when it arrived: 250 ms apart, as the model sent them.
    arrived = [float(v) * (1 if unit == "ms" else 1000) for v, unit in
               (re.search(r"\+([\d.]+) (m?s):", t).groups() for t in texts)]
    assert all(b - a > 150 for a, b in zip(arrived, arrived[1:])), arrived
    c.shot("all-responses")
    c.assert_clean()


def test_the_embeddings_panel_shows_the_cosine_of_v1_embeddings(console, demo):
    texts = ["A cat sits on the mat.", "The stock market fell sharply today."]
    c = console(demo)
    page = c.open("#/try")
    page.select_option("[data-testid=embed-model]", "minilm")
    c.by("embed-a").fill(texts[0])
    c.by("embed-b").fill(texts[1])
    c.by("embed-run").click()
    expect(c.by("embed-cosine")).to_be_visible()
    shown = float(c.by("embed-cosine").get_attribute("data-value"))
    answer = requests.post("http://%s/v1/embeddings" % demo.http, json={"model": "minilm", "input": texts}, timeout=60)
    answer.raise_for_status()
    a, b = (d["embedding"] for d in sorted(answer.json()["data"], key=lambda d: d["index"]))
    expected = sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    assert shown == pytest.approx(expected, abs=1e-6)
    assert c.by("embed-cosine").inner_text() == "%.6f" % shown
    c.shot("cosine")
    c.assert_clean()


def test_the_rerank_panel_lists_passages_best_first_as_v1_rerank_scores_them(console, demo):
    query = "What is the capital of France?"
    passages = ["The cat sat on the mat.", "Paris is the capital and largest city of France.",
                "France is a country in Western Europe."]
    c = console(demo)
    page = c.open("#/try")
    page.select_option("[data-testid=rerank-model]", "minilm_rerank")
    c.by("rerank-query").fill(query)
    c.by("rerank-documents").fill("\n".join(passages))
    c.by("rerank-run").click()
    rows = c.by("rerank-row")
    expect(rows).to_have_count(3)
    shown = [(int(rows.nth(i).get_attribute("data-index")), float(rows.nth(i).get_attribute("data-score")))
             for i in range(3)]
    answer = requests.post("http://%s/v1/rerank" % demo.http, timeout=60,
                           json={"model": "minilm_rerank", "query": query, "documents": passages})
    answer.raise_for_status()
    want = [(r["index"], r["relevance_score"]) for r in answer.json()["results"]]
    assert [i for i, _ in shown] == [i for i, _ in want]
    for (_, got), (_, expected) in zip(shown, want):
        assert got == pytest.approx(expected, abs=1e-6)
    assert passages[shown[0][0]] in rows.nth(0).inner_text()
    c.shot("rerank")
    c.assert_clean()


def test_the_live_charts_move_under_load_and_keep_their_history(console, demo):
    c = console(demo)
    page = c.open("#/live")
    rps = c.by("chart-rps")
    expect(rps).to_have_attribute("data-points", re.compile(r"^[1-9]"))
    before = float(rps.get_attribute("data-max"))
    threads = [load(demo, 10), generate(demo, 3)]
    deadline = time.time() + 30
    shown = 0.0
    while time.time() < deadline and shown <= 0:
        text = c.by("live-rps").inner_text()
        shown = float(text) if text != "—" else 0.0
        time.sleep(0.25)
    assert shown > 0, "the requests/s figure never rose above 0"
    expect(c.by("live-p50")).not_to_have_text("—")
    assert float(rps.get_attribute("data-max")) > before
    expect(c.by("chart-batch")).to_have_attribute("data-points", re.compile(r"^[1-9]"))
    # One model's view: simple is listed once it has recorded something.
    page.select_option("[data-testid=live-model]", "simple")
    expect(c.by("live-rps")).not_to_have_text(re.compile(r"^(0\.0|—)$"))
    c.shot("simple-under-load")
    page.select_option("[data-testid=live-model]", "")
    for thread in threads:
        thread.join()
    # smollm2's tokens (through the OpenAI route) show as tokens/s.
    expect(c.by("chart-tps")).not_to_have_attribute("data-max", "0")
    expect(c.by("live-tps")).not_to_have_text("—")
    c.shot("after-load")
    c.docs("live")
    # Another page and back: the samples were kept (and kept coming) meanwhile.
    points = int(rps.get_attribute("data-points"))
    c.by("nav-models").click()
    page.wait_for_timeout(3200)
    c.by("nav-live").click()
    # Sampling runs every 1.5 s whatever the page; on a busy machine a sample may land
    # late, so wait for it rather than count on the clock.
    deadline = time.time() + 10
    while int(rps.get_attribute("data-points")) < points + 2 and time.time() < deadline:
        page.wait_for_timeout(250)
    assert int(rps.get_attribute("data-points")) >= points + 2
    c.shot("after-switch")
    c.assert_clean()


def test_the_compare_page_measures_the_three_encodings(console, demo):
    c = console(demo)
    page = c.open("#/compare")
    page.select_option("[data-testid=compare-model]", "identity_fp32")
    page.select_option("[data-testid=compare-n]", "4096")
    c.by("compare-k").fill("5")
    c.by("compare-run").click()
    expect(c.by("compare-check")).to_contain_text("identical", timeout=60_000)
    rows = {t: c.by("compare-row-" + t) for t in TRANSPORTS}
    expect(page.locator("[data-testid^=compare-row-]")).to_have_count(3)

    def size(transport, which):
        return int(rows[transport].get_by_test_id("compare-%s-bytes" % which).get_attribute("data-value"))

    # 4096 FP32 values: 16 KiB raw each way; JSON spells each one out.
    for which in ("req", "resp"):
        assert size("rest-binary", which) < size("rest-json", which)
        assert size("grpc-web", which) < size("rest-json", which)
        assert size("grpc-web", which) >= 4096 * 4
    for t in TRANSPORTS:
        assert float(rows[t].get_by_test_id("compare-median").get_attribute("data-value")) > 0
    c.shot("identity_fp32")
    c.docs("compare")
    c.assert_clean()


def test_an_api_key_is_asked_once_kept_for_the_tab_and_a_wrong_one_is_refused(console):
    srv = start_server(["--demo-models", "builtin", "--api-key", "console-key"])
    try:
        c = console(srv)
        # The wrong key's 401 answers are logged by the browser itself; nothing else may be.
        c.expected_errors.append(r"status of 401")
        page = c.open()
        expect(c.by("key-dialog")).to_be_visible()
        expect(c.by("key-input")).to_be_focused()
        c.shot("asked")
        c.by("key-input").fill("wrong-key")
        c.by("key-submit").click()
        expect(c.by("key-error")).to_contain_text("401")
        expect(c.by("key-dialog")).to_be_visible()
        c.shot("wrong-key")
        c.by("key-input").fill("console-key")
        c.by("key-submit").click()
        expect(c.by("key-dialog")).to_be_hidden()
        expect(page.locator("[data-testid=model-card][data-model=simple]")).to_have_attribute("data-state", "READY")
        c.shot("accepted")
        # A reload keeps the key (sessionStorage): no question, the models load.
        page.reload()
        expect(page.locator("[data-testid=model-card][data-model=simple]")).to_have_attribute("data-state", "READY")
        expect(c.by("key-dialog")).to_be_hidden()
        # gRPC-Web carries the key too, and Live's metrics load with it.
        c.by("nav-try").click()
        assert infer_simple(c, "grpc-web")["OUTPUT0"] == [a + b for a, b in zip(INPUT0, INPUT1)]
        c.by("nav-live").click()
        expect(c.by("chart-rps")).to_have_attribute("data-points", re.compile(r"^[1-9]"))
        expect(c.by("live-error")).to_be_hidden()
        # A key the server stops taking (here: replaced behind the page's back) is asked for again.
        page.evaluate("sessionStorage.setItem('nereid.console.apiKey', 'stale')")
        c.by("nav-models").click()
        expect(c.by("key-dialog")).to_be_visible()
        expect(page.locator("#key-reason")).to_contain_text("refused")
        c.by("key-input").fill("console-key")
        c.by("key-submit").click()
        expect(c.by("key-dialog")).to_be_hidden()
        c.shot("asked-again")
        c.assert_clean()
    finally:
        srv.stop()


def test_explicit_mode_unloads_and_loads_simple_from_the_models_page(console):
    srv = start_server(["--demo-models", "builtin", "--model-control-mode", "explicit", "--load-model", "simple"])
    try:
        c = console(srv)
        page = c.open()
        card = page.locator("[data-testid=model-card][data-model=simple]")
        expect(card).to_have_attribute("data-state", "READY")
        c.shot("loaded")
        card.get_by_test_id("model-unload").click()
        expect(card).not_to_have_attribute("data-state", "READY")
        expect(card.get_by_test_id("model-state").first).not_to_contain_text("READY")
        c.shot("unloaded")
        card.get_by_test_id("model-load").click()
        expect(card).to_have_attribute("data-state", "READY")
        expect(c.by("models-error")).to_be_hidden()
        c.shot("reloaded")
        c.assert_clean()
    finally:
        srv.stop()


@pytest.mark.engine_only("a gateway in front would need the engine's CA; its listeners are the same code")
def test_over_tls_the_console_and_grpc_web_work(console, tmp_path):
    from test_tls import make_cert

    cert, key = make_cert(tmp_path, "console", "nereid-console")
    srv = start_server([
        "--demo-models", "builtin",
        "--http-use-ssl", "--http-server-cert", str(cert), "--http-server-key", str(key),
        "--grpc-use-ssl", "--grpc-server-cert", str(cert), "--grpc-server-key", str(key),
    ])
    try:
        c = console(srv, scheme="https", ignore_https_errors=True)
        page = c.open("#/try")
        assert page.url.startswith("https://")
        r = infer_simple(c, "grpc-web")
        assert r["OUTPUT0"] == [a + b for a, b in zip(INPUT0, INPUT1)]
        assert infer_simple(c, "rest-binary")["OUTPUT1"] == [a - b for a, b in zip(INPUT0, INPUT1)]
        c.shot("grpc-web")
        c.assert_clean()
    finally:
        srv.stop()


def test_keyboard_navigation_and_a_narrow_window(console, demo):
    c = console(demo)
    page = c.open()
    expect(c.by("model-card").first).to_be_visible()
    # Tab from the top of the page reaches the nav; Enter follows the link.
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.testid") == "nav-live":
            break
    else:
        pytest.fail("Tab never reached the Live link")
    c.shot("focus-on-nav")
    page.keyboard.press("Enter")
    expect(page.locator("#page-live")).to_be_visible()
    assert page.evaluate("location.hash") == "#/live"
    expect(page.locator("#h-live")).to_be_focused()
    # At 400 px every page fits the window: no horizontal scrolling, the nav wraps.
    page.set_viewport_size({"width": 400, "height": 800})
    for name in ("models", "live", "try", "compare"):
        c.by("nav-" + name).click()
        expect(page.locator("#page-%s" % name)).to_be_visible()
        page.wait_for_timeout(200)
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], "%s overflows at 400px: %r" % (name, widths)
        c.shot("narrow-" + name)
    c.assert_clean()
