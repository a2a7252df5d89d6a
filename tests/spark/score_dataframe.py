"""Scores a Spark DataFrame against a Nereid fleet: the Spark recipe of docs/BATCH.md.

The pattern NVIDIA documents for Triton: `pyspark.ml.functions.predict_batch_udf` with a
`make_predict_fn` that opens one stock `tritonclient` connection per Python worker and
returns a `predict` that sends each batch of rows as one KServe v2 inference request. The
URL is a `nereid gateway`'s (or one `nereid serve`'s) gRPC address, `host:port`.

As a library:

    from score_dataframe import score
    scored = score(df, "nereid-gateway:8001", "minilm", output_col="embedding")

As a command (makes a DataFrame for a demo model, scores it, checks every row):

    python score_dataframe.py --url 127.0.0.1:8001 --model minilm --rows 2000
"""

import argparse
import functools
import inspect
import json
import os
import sys
import time

import numpy as np

# KServe v2 datatypes -> numpy (requests) and Spark SQL types (the UDF's return type).
NP_TYPES = {
    "BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}
SPARK_TYPES = {
    "BOOL": "BooleanType", "INT8": "ByteType", "INT16": "ShortType", "INT32": "IntegerType",
    "INT64": "LongType", "UINT8": "ShortType", "UINT16": "IntegerType", "UINT32": "LongType",
    "FP32": "FloatType", "FP64": "DoubleType", "BYTES": "StringType",
}


def client_module(protocol):
    """tritonclient.grpc or tritonclient.http: the same API over either door."""
    if protocol == "grpc":
        import tritonclient.grpc as module
    elif protocol == "http":
        import tritonclient.http as module
    else:
        raise ValueError(f"protocol is grpc or http, not {protocol!r}")
    return module


def model_info(client, model, protocol):
    """(metadata, config) as plain dicts, the same for both protocols (shapes as ints)."""
    if protocol == "grpc":
        meta = client.get_model_metadata(model, as_json=True)
        config = client.get_model_config(model, as_json=True)["config"]
    else:
        meta, config = client.get_model_metadata(model), client.get_model_config(model)
    for tensor in meta["inputs"] + meta["outputs"]:
        tensor["shape"] = [int(d) for d in tensor["shape"]]
    return meta, config


def triton_fn(url, model, protocol="grpc"):
    """The `make_predict_fn` of predict_batch_udf: runs once in each Python worker (Spark
    caches what it returns), opens a client to the fleet and returns `predict`, which takes
    one numpy array per input column (one row per element) and sends them as one request."""
    import numpy as np

    lib = client_module(protocol)
    client = lib.InferenceServerClient(url)
    meta, _ = model_info(client, model, protocol)
    inputs, outputs = meta["inputs"], meta["outputs"]

    def predict(*columns):
        rows = len(columns[0])
        request = []
        for spec, column in zip(inputs, columns):
            # [-1, 1] for a text per row: Spark hands a 1-D array of strings.
            array = np.asarray(column).reshape([rows] + spec["shape"][1:])
            tensor = lib.InferInput(spec["name"], list(array.shape), spec["datatype"])
            tensor.set_data_from_numpy(array.astype(NP_TYPES[spec["datatype"]]))
            request.append(tensor)
        wanted = [lib.InferRequestedOutput(o["name"]) for o in outputs]
        response = infer_with_retries(client, model, request, wanted)
        results = {}
        for spec in outputs:
            array = response.as_numpy(spec["name"])
            if spec["datatype"] == "BYTES":
                array = np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(array)
            # One value per row comes back 1-D (a Spark scalar), a tensor per row 2-D (an array).
            results[spec["name"]] = array.reshape(rows) if row_is_scalar(spec) else array.reshape(rows, -1)
        return results[outputs[0]["name"]] if len(outputs) == 1 else results

    # predict_batch_udf counts predict's parameters to hand it one array per column.
    predict.__signature__ = inspect.Signature(
        [inspect.Parameter(spec["name"], inspect.Parameter.POSITIONAL_ONLY) for spec in inputs])
    return predict


def infer_with_retries(client, model, request, wanted, attempts=4):
    """client.infer, tried again after 0.5, 1 and 2 s when the fleet answers UNAVAILABLE
    (no engine could take the request: none ran it, so it is safe to send again). Spark would
    otherwise fail the task and run the whole partition again."""
    from tritonclient.utils import InferenceServerException

    for attempt in range(attempts):
        try:
            return client.infer(model, inputs=request, outputs=wanted)
        except InferenceServerException as error:
            unavailable = str(error.status()) in ("StatusCode.UNAVAILABLE", "503")
            if not unavailable or attempt == attempts - 1:
                raise
            print(f"nereid: {model}: {error.message()}; trying again", file=sys.stderr)
            time.sleep(0.5 * 2 ** attempt)


def row_is_scalar(spec):
    """Whether one row of this batched tensor ([-1, ...]) is a single value."""
    return int(np.prod(spec["shape"][1:])) == 1


def return_type(outputs):
    """The Spark type of the UDF's column: the output's, or a struct of all outputs."""
    from pyspark.sql import types

    def spark_type(spec):
        if any(d < 0 for d in spec["shape"][1:]):
            raise ValueError(f"output {spec['name']} has a variable shape {spec['shape']}")
        element = getattr(types, SPARK_TYPES[spec["datatype"]])()
        return element if row_is_scalar(spec) else types.ArrayType(element)

    if len(outputs) == 1:
        return spark_type(outputs[0])
    return types.StructType([types.StructField(o["name"], spark_type(o)) for o in outputs])


def score(df, url, model, input_cols=None, output_col="prediction", batch_size=None,
          protocol="grpc"):
    """`df` with one more column, `output_col`, the model's output for each row (a struct of
    the outputs when the model has several), computed lazily by Spark's executors.

    url: a `nereid gateway` (the fleet) or a `nereid serve`, `host:port` of its gRPC door
    (or its HTTP door with protocol="http"). input_cols: one column per model input, in the
    model's order; default: the inputs' own names. A tensor input is an array column holding
    the row's values flattened. batch_size: rows per request; default: the model's
    max_batch_size (a larger request is refused, as by Triton)."""
    from pyspark.ml.functions import predict_batch_udf

    lib = client_module(protocol)
    client = lib.InferenceServerClient(url)
    meta, config = model_info(client, model, protocol)
    client.close()
    max_batch = int(config.get("max_batch_size", 0))
    if max_batch <= 0:
        raise ValueError(f"model {model} does not batch (max_batch_size 0): score it row by row")
    for spec in meta["inputs"]:
        if any(d < 0 for d in spec["shape"][1:]):
            raise ValueError(f"input {spec['name']} has a variable shape {spec['shape']}")
    input_cols = input_cols or [spec["name"] for spec in meta["inputs"]]
    shapes = [None if row_is_scalar(spec) else spec["shape"][1:] for spec in meta["inputs"]]

    # Executors import this module to unpickle triton_fn: ship it with the job.
    context = df.sparkSession.sparkContext
    if __name__ != "__main__" and not any(f.endswith("/" + os.path.basename(__file__))
                                          for f in context.listFiles):
        context.addPyFile(os.path.abspath(__file__))

    udf = predict_batch_udf(
        functools.partial(triton_fn, url, model, protocol),
        return_type=return_type(meta["outputs"]),
        batch_size=min(batch_size or max_batch, max_batch),
        input_tensor_shapes=shapes if any(shapes) else None,
    )
    return df.withColumn(output_col, udf(*input_cols))


def make_embed_fn(url, model="minilm"):
    """docs/BATCH.md's excerpt, word for word: the recipe written out for one model."""
    # Runs once per Python worker: one connection to the fleet, reused by every batch.
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)

    def predict(texts: np.ndarray) -> np.ndarray:
        # Spark hands [rows] strings; the model takes TEXT as BYTES [rows, 1].
        batch = texts.astype(np.object_).reshape(-1, 1)
        text = grpcclient.InferInput("TEXT", list(batch.shape), "BYTES")
        text.set_data_from_numpy(batch)
        wanted = [grpcclient.InferRequestedOutput("EMBEDDING")]
        response = client.infer(model, inputs=[text], outputs=wanted)
        return response.as_numpy("EMBEDDING")  # FP32 [rows, 384]

    return predict


# --- Demo data and checks for the built-in models (the CLI and tests/spark) ---------------

SENTENCES = [
    "A man is playing a guitar.", "Someone plays the guitar on stage.",
    "The stock market fell sharply today.", "Shares dropped at the close of trading.",
    "A cat sleeps on the warm windowsill.", "The kitten is napping in the sun.",
    "Rust guarantees memory safety without a garbage collector.",
    "How do I bake sourdough bread at home?", "The train to Paris leaves at nine.",
    "Quantum computers use qubits instead of bits.", "It is raining in Lisbon.",
    "Nereid serves models over the KServe v2 protocol.",
]


def make_dataframe(spark, model, rows, partitions=4):
    """`rows` rows with an `id` (0..rows-1) and the model's input columns, made by Spark."""
    from pyspark.sql import functions as F

    df = spark.range(0, rows, numPartitions=partitions)
    if model == "simple":
        k = F.sequence(F.lit(0), F.lit(15))
        return (df.withColumn("INPUT0", F.transform(k, lambda i: ((F.col("id") * 7 + i) % 1000).cast("int")))
                  .withColumn("INPUT1", F.transform(k, lambda i: ((F.col("id") + i * 3) % 500).cast("int"))))
    if model == "minilm":
        # Many rows share a text (id mod 97): the same text must give the same vector
        # whichever batch, partition and worker it went through.
        sentence = F.element_at(F.array(*[F.lit(s) for s in SENTENCES]),
                                (F.col("id") % 97 % len(SENTENCES) + 1).cast("int"))
        return df.withColumn("TEXT", F.concat(sentence, F.lit(" #"), (F.col("id") % 97).cast("string")))
    raise ValueError(f"no demo data for model {model!r} (simple or minilm)")


def check(model, result, rows):
    """Checks a collected pandas frame (`id` + `prediction`): every id once, every value right.
    Returns a dict of facts about the result."""
    ids = result["id"].to_numpy()
    assert len(ids) == rows, f"{len(ids)} rows came back, {rows} went in"
    assert np.array_equal(np.sort(ids), np.arange(rows)), "rows lost or duplicated"
    result = result.sort_values("id")
    facts = {"rows": rows}
    if model == "simple":
        ids = result["id"].to_numpy()[:, None].astype(np.int64)
        k = np.arange(16)[None, :]
        in0, in1 = ((ids * 7 + k) % 1000).astype(np.int32), ((ids + k * 3) % 500).astype(np.int32)
        out0 = np.stack([np.asarray(p["OUTPUT0"]) for p in result["prediction"]])
        out1 = np.stack([np.asarray(p["OUTPUT1"]) for p in result["prediction"]])
        assert np.array_equal(out0, in0 + in1), "OUTPUT0 is not INPUT0 + INPUT1"
        assert np.array_equal(out1, in0 - in1), "OUTPUT1 is not INPUT0 - INPUT1"
    elif model == "minilm":
        # minilm gives its vector and the text's token count: a struct of the two.
        vectors = np.stack([np.asarray(p["EMBEDDING"], dtype=np.float32) for p in result["prediction"]])
        assert vectors.shape == (rows, 384), vectors.shape
        assert all(p["TOKENS"] >= 3 for p in result["prediction"]), "[CLS], a word piece, [SEP]"
        assert np.all(np.isfinite(vectors))
        norms = np.linalg.norm(vectors, axis=1)
        assert np.allclose(norms, 1.0, atol=1e-4), (norms.min(), norms.max())
        texts = result["TEXT"].to_numpy()
        first, worst = {}, 0.0
        for text, vector in zip(texts, vectors):
            if text in first:
                worst = max(worst, float(np.abs(first[text] - vector).max()))
            else:
                first[text] = vector
        # Equal up to rounding: a text's batch mates (padding) may change the sums' order, and
        # the demo's packed dense layers (`matmul_weights: auto`) round each row to BF16 or
        # 16-bit integers, which can turn a last-bit difference into a few 1e-4.
        assert worst < 1e-3, f"one text, two vectors: max difference {worst}"
        distinct = np.stack(list(first.values()))
        cosine = distinct @ distinct.T
        np.fill_diagonal(cosine, -1)
        assert cosine.max() < 0.9999, "two different texts gave the same vector"
        facts.update(distinct_texts=len(first), max_same_text_difference=worst)
        # The model means something: a paraphrase is nearer than an unrelated sentence.
        by_text = {t.split(" #")[0]: v for t, v in first.items()}
        guitar, guitar2, stocks = (by_text[SENTENCES[i]] for i in (0, 1, 2))
        assert guitar @ guitar2 > guitar @ stocks + 0.2, (guitar @ guitar2, guitar @ stocks)
        facts["paraphrase_cosine"] = round(float(guitar @ guitar2), 3)
        facts["unrelated_cosine"] = round(float(guitar @ stocks), 3)
    return facts


def spark_session(master="local[2]"):
    from pyspark.sql import SparkSession

    # Python workers run this interpreter (the venv with tritonclient), not `python3`.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # Local mode stays on the loopback interface.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = (SparkSession.builder.master(master).appName("nereid-spark-recipe")
             .config("spark.ui.enabled", "false")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .config("spark.driver.memory", "1g")
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    return spark


def run(spark, url, model, rows, partitions=4, batch_size=None, protocol="grpc"):
    """Scores `rows` demo rows, collects and checks them; returns the figures."""
    df = make_dataframe(spark, model, rows, partitions)
    scored = score(df, url, model, batch_size=batch_size, protocol=protocol)
    keep = ["id", "prediction"] + (["TEXT"] if model == "minilm" else [])
    start = time.perf_counter()
    result = scored.select(*keep).toPandas()
    seconds = time.perf_counter() - start
    facts = check(model, result, rows)
    facts.update(model=model, protocol=protocol, partitions=partitions,
                 seconds=round(seconds, 2), rows_per_s=round(rows / seconds, 1))
    return facts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="gRPC (or HTTP) host:port of a gateway or engine")
    parser.add_argument("--model", default="simple", help="simple or minilm (demo data)")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch-size", type=int, help="rows per request (default: max_batch_size)")
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args(argv)
    spark = spark_session(args.master)
    try:
        facts = run(spark, args.url, args.model, args.rows, args.partitions, args.batch_size,
                    args.protocol)
    finally:
        spark.stop()
    print("SPARK_RECIPE " + json.dumps(facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
