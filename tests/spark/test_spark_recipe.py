"""The Spark recipe of docs/BATCH.md end to end: PySpark in local mode (local[2]) scores
DataFrames with predict_batch_udf and the stock tritonclient against a real fleet, two
`nereid serve` engines behind a `nereid gateway`, and every row's result is checked.

Run by scripts/spark-recipe.sh (which installs Java and pyspark); skipped when pyspark or
Java is missing. NEREID_BIN names the binary (default target/debug/nereid);
SPARK_RECIPE_ROWS scales the row counts; each test prints a `SPARK_RECIPE {json}` line with
its figures and appends it to the file named by SPARK_RECIPE_RESULTS, when set.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

pytest.importorskip("pyspark", reason="pyspark is not installed: run scripts/spark-recipe.sh")
if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
    pytest.skip("no Java runtime: run scripts/spark-recipe.sh", allow_module_level=True)

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import score_dataframe  # noqa: E402

ROOT = HERE.parents[1]
BIN = os.environ.get("NEREID_BIN", str(ROOT / "target" / "debug" / "nereid"))
READY = re.compile(r"NEREID_READY http=(\S+) grpc=(\S+) metrics=(\S+)")
SCALE = float(os.environ.get("SPARK_RECIPE_ROWS", "4000")) / 4000
ENGINE_ARGS = ["--demo-models", "all", "--model-control-mode", "explicit",
               "--load-model", "simple", "--load-model", "minilm", "--load-model", "identity_fp32"]


class Process:
    """A `nereid serve` or `nereid gateway` on free loopback ports, read from its READY line."""

    def __init__(self, command, args):
        self.log = []
        self.proc = subprocess.Popen(
            [BIN, command, "--address", "127.0.0.1", "--http-port", "0", "--grpc-port", "0",
             "--metrics-port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline, match = time.time() + 300, None  # the first start fetches minilm's weights
        while time.time() < deadline and not match:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.append(line)
            match = READY.search(line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"nereid {command} did not start:\n" + "".join(self.log))
        self.http, self.grpc, self.metrics = match.groups()
        threading.Thread(target=lambda: self.log.extend(self.proc.stdout), daemon=True).start()

    def count(self, model):
        """Rows this engine has run for `model` (nv_inference_count)."""
        text = urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10).read().decode()
        pattern = rf'^nv_inference_count{{model="{model}",version="1"}} (\S+)$'
        return sum(float(m) for m in re.findall(pattern, text, re.M))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def fleet():
    """Two engines and a gateway in front; yields (gateway, engines)."""
    engines, gateway = [], None
    try:
        engines = [Process("serve", ENGINE_ARGS) for _ in range(2)]
        # The gateway's default health checks (every 1 s, 1 s timeout), as deployed.
        gateway = Process("gateway", [f"--backend={e.grpc}" for e in engines]
                          + ["--discovery-interval-ms", "500"])
        wait_routable(gateway, ["simple", "minilm"])
        yield gateway, engines
    finally:
        for process in [gateway, *engines]:
            if process:
                assert process.stop() == 0, "".join(process.log[-20:])


def wait_routable(gateway, models, timeout=30):
    """Until the gateway has discovered both engines' models."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(gateway.grpc)
    deadline = time.time() + timeout
    while not all(client.is_model_ready(m) for m in models):
        assert time.time() < deadline, "the gateway did not find the models"
        time.sleep(0.2)
    client.close()


@pytest.fixture(scope="module")
def spark():
    session = score_dataframe.spark_session("local[2]")
    yield session
    session.stop()


def record(facts, started):
    facts["wall_s_with_checks"] = round(time.perf_counter() - started, 2)
    line = json.dumps(facts)
    print("\nSPARK_RECIPE " + line)
    if os.environ.get("SPARK_RECIPE_RESULTS"):
        with open(os.environ["SPARK_RECIPE_RESULTS"], "a") as out:
            out.write(line + "\n")


def score_and_check(spark, fleet, model, rows, protocol="grpc", batch_size=None):
    gateway, engines = fleet
    started = time.perf_counter()
    before = [e.count(model) for e in engines]
    url = gateway.grpc if protocol == "grpc" else gateway.http
    facts = score_dataframe.run(spark, url, model, rows, partitions=4, batch_size=batch_size,
                                protocol=protocol)
    ran = [e.count(model) - b for e, b in zip(engines, before)]
    # Every row ran exactly once in the fleet (no Spark or gateway retry scored one twice).
    assert sum(ran) == rows, f"the engines ran {ran} rows, the DataFrame has {rows}"
    facts["rows_per_engine"] = [int(r) for r in ran]
    facts["url"] = "gateway " + protocol
    record(facts, started)
    return facts


@pytest.mark.timeout(300)
def test_simple_through_gateway(spark, fleet):
    """simple (sum and difference of two INT32[16]) over 4000 rows, 8 rows a request."""
    score_and_check(spark, fleet, "simple", int(4000 * SCALE))


@pytest.mark.timeout(300)
def test_simple_over_http(spark, fleet):
    """The same recipe with tritonclient.http against the gateway's HTTP door."""
    score_and_check(spark, fleet, "simple", int(1000 * SCALE), protocol="http")


@pytest.mark.timeout(300)
def test_minilm_embeddings(spark, fleet):
    """Real sentence embeddings: 384-d, unit norm, one vector per text whatever its batch."""
    facts = score_and_check(spark, fleet, "minilm", int(1000 * SCALE))
    assert facts["distinct_texts"] == min(97, int(1000 * SCALE))


def test_score_refuses_a_variable_row_shape(spark, fleet):
    """identity_fp32 takes FP32 [-1, -1]: rows of any length, which a flattened Spark array
    column cannot be reshaped into; the recipe says so before Spark runs anything."""
    gateway, _ = fleet
    wait_routable(gateway, ["identity_fp32"])
    with pytest.raises(ValueError, match="variable shape"):
        score_dataframe.score(spark.range(4), gateway.grpc, "identity_fp32", input_cols=["id"])


def test_predict_sends_again_only_on_unavailable(monkeypatch, capsys):
    """UNAVAILABLE (no engine took the request) is sent again; any other error is not."""
    from tritonclient.utils import InferenceServerException

    class Client:
        def __init__(self, errors):
            self.errors, self.calls = list(errors), 0

        def infer(self, model, inputs, outputs):
            self.calls += 1
            if self.errors:
                raise self.errors.pop(0)
            return "response"

    monkeypatch.setattr(score_dataframe.time, "sleep", lambda seconds: None)
    unavailable = InferenceServerException("no healthy engine", status="StatusCode.UNAVAILABLE")
    client = Client([unavailable, unavailable])
    assert score_dataframe.infer_with_retries(client, "m", [], []) == "response"
    assert client.calls == 3
    client = Client([InferenceServerException("bad input", status="StatusCode.INVALID_ARGUMENT")])
    with pytest.raises(InferenceServerException):
        score_dataframe.infer_with_retries(client, "m", [], [])
    assert client.calls == 1
    client = Client([unavailable] * 4)
    with pytest.raises(InferenceServerException):
        score_dataframe.infer_with_retries(client, "m", [], [])
    assert client.calls == 4
    assert capsys.readouterr().err.count("trying again") == 2 + 3


@pytest.mark.timeout(300)
def test_docs_excerpt_gives_the_same_vectors(spark, fleet):
    """docs/BATCH.md's hand-written UDF (make_embed_fn) agrees with score() row for row."""
    from functools import partial

    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType

    gateway, _ = fleet
    df = score_dataframe.make_dataframe(spark, "minilm", 200, partitions=2)
    embed = predict_batch_udf(partial(score_dataframe.make_embed_fn, gateway.grpc),
                              return_type=ArrayType(FloatType()), batch_size=32)
    both = score_dataframe.score(df, gateway.grpc, "minilm").withColumn("excerpt", embed("TEXT"))
    rows = both.select("id", "prediction", "excerpt").toPandas()
    assert sorted(rows["id"]) == list(range(200))
    for generic, excerpt in zip(rows["prediction"], rows["excerpt"]):
        assert len(excerpt) == 384
        # Different batches: equal within the demo's packed dense layers' rounding.
        assert max(abs(a - b) for a, b in zip(generic["EMBEDDING"], excerpt)) < 1e-3
