"""`nereid batch` as the real binary: a job killed with SIGKILL and resumed, scoring against
a running server (`--server`) and in-process, text generation, shards from Kubernetes'
JOB_COMPLETION_INDEX, and bad invocations.

Inputs are written and outputs read with pyarrow. Jobs that never talk to a server are
marked engine_only: under NEREID_E2E_GATEWAY=1 they would only run a second time, while the
`--server` test then scores through a gateway.
"""

import csv
import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import BIN, SIMPLE_CONFIG, SLEEP_CONFIG, start_server

pytestmark = pytest.mark.timeout(600)

IN_PROCESS = pytest.mark.engine_only("an in-process job: no server for a gateway to front")

SUMMARY = re.compile(
    r"^(\d+) rows written, (\d+) failed, (\d+) resumed of (\d+) in [\d.]+ s \([\d.]+ rows/s\), (\d+) parts"
    r"(?:, (\d+) tokens \([\d.]+ tokens/s\))?$", re.M)


def environment(extra=None):
    """The test's environment without shard or key variables a caller may have set."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("JOB_COMPLETION_INDEX", "NEREID_SHARD_COUNT", "NEREID_API_KEY")}
    env.update(extra or {})
    return env


def command(*args):
    return [BIN, "batch", *map(str, args)]


def batch(*args, env=None, check=True, timeout=300):
    """Runs `nereid batch ARGS` to its end; with `check`, it must succeed."""
    result = subprocess.run(command(*args), capture_output=True, text=True, timeout=timeout,
                            env=environment(env))
    if check:
        assert result.returncode == 0, "exit %d:\n%s" % (result.returncode, result.stderr[-4000:])
    return result


def summary(stderr):
    """The summary line as a dict (tokens None when the line names none)."""
    found = SUMMARY.findall(stderr)
    assert len(found) == 1, stderr[-4000:]
    written, failed, resumed, total, parts, tokens = found[0]
    return {"written": int(written), "failed": int(failed), "resumed": int(resumed), "total": int(total),
            "parts": int(parts), "tokens": int(tokens) if tokens else None}


def errors(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def part_files(out, ext="parquet"):
    """Committed part files, in name order (temporary files are hidden `.name.tmp`)."""
    return sorted(p for p in out.iterdir() if re.fullmatch(r"[^.].*\.part-\d{5}\." + ext, p.name))


def output(out):
    """Every committed part's rows, in part order."""
    files = part_files(out)
    assert files, sorted(p.name for p in out.iterdir())
    return pa.concat_tables([pq.read_table(p) for p in files])


def temporaries(out):
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))


def repository(root, **models):
    """A model repository of config texts, each with an empty version folder."""
    for name, config in models.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(config)
    return root


# Kill and resume -------------------------------------------------------------------------

@IN_PROCESS
def test_a_killed_job_resumes_to_exactly_the_rows_of_a_clean_run(tmp_path):
    repo = repository(tmp_path / "models", sleep=SLEEP_CONFIG)
    rows = 400
    ids = [1000 + 3 * i for i in range(rows)]
    ms = [5 + i % 11 for i in range(rows)]  # 10 ms a row on average: about 4 s a run.
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "MS": pa.array(ms, pa.int64())}),
                   tmp_path / "in" / "data.parquet")

    def job(part_rows=40):
        return ["--model", "sleep", "--model-repository", repo, "--input", tmp_path / "in",
                "--key-column", "id", "--part-rows", part_rows, "--concurrency", 1]

    flags = job()
    parts = rows // 40

    clean = tmp_path / "clean"
    result = batch(*flags, "--output", clean)
    assert summary(result.stderr) == {"written": rows, "failed": 0, "resumed": 0, "total": rows,
                                      "parts": parts, "tokens": None}
    expected = output(clean)
    assert expected.column_names == ["id", "OUT"]
    assert expected["id"].to_pylist() == ids
    assert expected["OUT"].to_pylist() == ms

    out = tmp_path / "out"
    proc = subprocess.Popen(command(*flags, "--output", out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=environment())
    try:
        # Killed once a part is committed and the next one is half written (its hidden
        # temporary file exists): resume must keep the one and redo the other.
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if out.is_dir() and part_files(out) and temporaries(out):
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the job ended before it could be killed:\n" + proc.stderr.read()[-4000:]
        assert part_files(out) and temporaries(out), "no part committed and another begun within 120 s"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    committed = part_files(out)
    assert 1 <= len(committed) < parts, [p.name for p in committed]
    before = {p.name: p.read_bytes() for p in committed}

    # The folder holds this job: without --resume the rerun refuses and touches no part.
    refused = batch(*flags, "--output", out, check=False)
    assert refused.returncode != 0
    assert len(errors(refused.stderr)) == 1 and "--resume" in errors(refused.stderr)[0], refused.stderr
    # Another job's flags with --resume: refused, naming what differs.
    other = batch(*job(part_rows=50), "--output", out, "--resume", check=False)
    assert other.returncode != 0
    assert len(errors(other.stderr)) == 1 and "part_rows" in errors(other.stderr)[0], other.stderr
    assert {p.name: p.read_bytes() for p in part_files(out)} == before

    resumed = batch(*flags, "--output", out, "--resume")
    done = len(before) * 40
    assert summary(resumed.stderr) == {"written": rows - done, "failed": 0, "resumed": done, "total": rows,
                                       "parts": parts - len(before), "tokens": None}
    # Parts committed before the kill are kept as they were.
    assert {name: (out / name).read_bytes() for name in before} == before
    got = output(out)
    assert got.schema == expected.schema
    assert got["id"].to_pylist() == ids, "rows missing, duplicated or out of order"
    assert got.equals(expected)
    assert len(part_files(out)) == parts
    assert temporaries(out) == []
    assert not list(out.glob("*.errors.jsonl"))

    # A finished job resumed again does nothing.
    again = batch(*flags, "--output", out, "--resume")
    assert summary(again.stderr) == {"written": 0, "failed": 0, "resumed": rows, "total": rows,
                                     "parts": 0, "tokens": None}


# Against a running server, and in-process ------------------------------------------------

@pytest.fixture(scope="module")
def minilm_server():
    """A server over the demo repository that loads minilm alone (no generator to load)."""
    srv = start_server(["--model-control-mode", "explicit", "--load-model", "minilm"])
    yield srv
    srv.stop()


WORDS = ["river", "engine", "violet", "harbour", "lantern", "meadow", "quartz", "saffron", "tundra", "whistle"]
BAD = 137  # the row whose text is not UTF-8


def text(i):
    extra = " café" if i % 7 == 0 else (" 日本語の文" if i % 11 == 0 else "")
    return "a short sentence %d about the %s and the %s%s" % (i, WORDS[i % 10], WORDS[(i // 10) % 10], extra)


def test_minilm_against_a_server_matches_in_process_and_fails_only_the_bad_row(minilm_server, tmp_path):
    rows = 300
    ids = [10 * i + 7 for i in range(rows)]
    texts = [text(i).encode() for i in range(rows)]
    texts[BAD] = b"\xff\xfe not text \xc3"
    source = tmp_path / "in" / "texts.parquet"
    source.parent.mkdir()
    # Binary, not string: a Parquet string column could not hold the bad row.
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "text": pa.array(texts, pa.binary())}), source)
    flags = ["--model", "minilm", "--input", source, "--input-column", "text=TEXT", "--key-column", "id",
             "--part-rows", 128]

    remote = tmp_path / "remote"
    result = batch(*flags, "--output", remote, "--server", minilm_server.grpc)
    assert summary(result.stderr) == {"written": rows - 1, "failed": 1, "resumed": 0, "total": rows,
                                      "parts": 3, "tokens": None}
    assert [p.name for p in part_files(remote)] == ["texts.part-%05d.parquet" % i for i in range(3)]
    # Row 137 is in the second part (rows 128..255): its errors file and no other.
    assert [p.name for p in remote.glob("*.errors.jsonl")] == ["texts.part-00001.errors.jsonl"]
    failed = [json.loads(line) for line in (remote / "texts.part-00001.errors.jsonl").read_text().splitlines()]
    assert len(failed) == 1, failed
    assert failed[0]["row"] == BAD and failed[0]["key"] == {"id": ids[BAD]}, failed
    assert failed[0]["input"].endswith("texts.parquet")
    assert "utf-8" in failed[0]["error"].lower(), failed
    assert temporaries(remote) == []

    table = output(remote)
    assert table.column_names == ["id", "EMBEDDING", "TOKENS"]
    assert table.schema.field("EMBEDDING").type == pa.list_(pa.float32(), 384)
    # Each text's token count: [CLS] and [SEP] and at least one word piece.
    assert all(count >= 3 for count in table["TOKENS"].to_pylist())
    assert table["id"].to_pylist() == ids[:BAD] + ids[BAD + 1:]
    vectors = np.array(table["EMBEDDING"].to_pylist(), dtype=np.float32)
    assert vectors.shape == (rows - 1, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    # Different texts, different vectors: no row was written with another's output.
    similarity = vectors @ vectors.T
    assert (similarity[~np.eye(rows - 1, dtype=bool)] < 0.9999).all()

    local = tmp_path / "local"
    result = batch(*flags, "--output", local)
    assert summary(result.stderr)["failed"] == 1
    local_table = output(local)
    assert local_table["id"].to_pylist() == table["id"].to_pylist()
    # In-process and served batches differ, and the demo's packed dense layers (BF16 or 16-bit
    # integers, `matmul_weights: auto`) round each row: a last-bit difference from another
    # batch shape can move a rounding, a few 1e-4 at most (docs/MODELS.md).
    np.testing.assert_allclose(np.array(local_table["EMBEDDING"].to_pylist(), dtype=np.float32), vectors,
                               atol=1e-3)
    assert json.loads((local / "texts.part-00001.errors.jsonl").read_text())["key"] == {"id": ids[BAD]}

    # JSONL and CSV inputs, JSONL output: the same texts give the same vectors. A CSV key
    # is text (CSV has no types); a JSONL key keeps its JSON type.
    by_id = dict(zip(table["id"].to_pylist(), vectors))
    picked = [i for i in range(40) if i != BAD]
    (tmp_path / "mixed").mkdir()
    with open(tmp_path / "mixed" / "lines.jsonl", "w") as f:
        for i in picked[:20]:
            f.write(json.dumps({"id": ids[i], "text": text(i)}) + "\n")
    with open(tmp_path / "mixed" / "cells.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "id"])
        for i in picked[20:]:
            writer.writerow([text(i), ids[i]])
    mixed = tmp_path / "mixed-out"
    result = batch("--model", "minilm", "--input", tmp_path / "mixed" / "lines.jsonl",
                   "--input", tmp_path / "mixed" / "*.csv", "--input-column", "text=TEXT", "--key-column", "id",
                   "--output-format", "jsonl", "--output", mixed, "--server", minilm_server.grpc)
    assert summary(result.stderr)["written"] == len(picked)
    assert sorted(p.name for p in part_files(mixed, "jsonl")) == ["cells.part-00000.jsonl", "lines.part-00000.jsonl"]
    lines = [json.loads(l) for l in (mixed / "lines.part-00000.jsonl").read_text().splitlines()]
    cells = [json.loads(l) for l in (mixed / "cells.part-00000.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == [ids[i] for i in picked[:20]]
    assert [r["id"] for r in cells] == [str(ids[i]) for i in picked[20:]]
    for r in lines + cells:
        assert set(r) == {"id", "EMBEDDING", "TOKENS"}
        np.testing.assert_allclose(np.array(r["EMBEDDING"], dtype=np.float32), by_id[int(r["id"])], atol=1e-3)


# Generation -------------------------------------------------------------------------------

PROMPTS = ["The capital of France is", "Write one word about the sea:", "Two plus two equals",
           "A haiku about snow:", "The opposite of hot is", "Name a colour:"]


@IN_PROCESS
def test_smollm2_generates_every_row_within_max_tokens(tmp_path):
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps({"id": "p%d" % i, "text_input": p}) + "\n" for i, p in enumerate(PROMPTS)))
    out = tmp_path / "out"
    result = batch("--model", "smollm2", "--input", source, "--output", out, "--key-column", "id",
                   "--parameter", "max_tokens=8", "--parameter", "temperature=0")
    table = output(out)
    assert table.column_names == ["id", "text_output", "prompt_tokens", "completion_tokens", "cached_tokens",
                                  "finish_reason"]
    assert table["id"].to_pylist() == ["p%d" % i for i in range(len(PROMPTS))]
    rows = table.to_pylist()
    for row in rows:
        assert row["text_output"].strip(), row
        assert 1 <= row["completion_tokens"] <= 8, row
        assert row["prompt_tokens"] > 0, row
        assert row["finish_reason"] in ("length", "stop"), row
    stats = summary(result.stderr)
    assert (stats["written"], stats["failed"], stats["total"]) == (len(PROMPTS), 0, len(PROMPTS))
    assert stats["tokens"] == sum(r["completion_tokens"] for r in rows)
    assert not list(out.glob("*.errors.jsonl"))

    # Greedy decoding: the same job again (JSONL out) generates the same rows. Not
    # cached_tokens: which prompt's shared prefix is cached first depends on arrival order.
    again = tmp_path / "again"
    batch("--model", "smollm2", "--input", source, "--output", again, "--key-column", "id",
          "--parameter", "max_tokens=8", "--parameter", "temperature=0", "--output-format", "jsonl")
    lines = (again / "prompts.part-00000.jsonl").read_text().splitlines()
    uncached = [{k: v for k, v in row.items() if k != "cached_tokens"} for row in rows]
    assert [{k: v for k, v in json.loads(line).items() if k != "cached_tokens"} for line in lines] == uncached


# Shards -------------------------------------------------------------------------------------

@IN_PROCESS
def test_shards_from_job_completion_index_cover_the_input_exactly_once(tmp_path):
    repo = repository(tmp_path / "models", simple=SIMPLE_CONFIG)
    (tmp_path / "in").mkdir()
    expected = {}
    for name, count, start in (("a", 45, 0), ("b", 30, 45)):
        ids = list(range(start, start + count))
        first = [[i + k for k in range(16)] for i in ids]
        second = [[k - i for k in range(16)] for i in ids]
        pq.write_table(pa.table({"id": ids, "INPUT0": pa.array(first, pa.list_(pa.int32())),
                                 "INPUT1": pa.array(second, pa.list_(pa.int32()))}),
                       tmp_path / "in" / ("%s.parquet" % name))
        expected.update({i: (f, s) for i, f, s in zip(ids, first, second)})
    out = tmp_path / "out"
    # Parts of 10 rows: a.parquet has 5 (the last of 5 rows), b.parquet 3; part i (a's
    # first, then b's) belongs to shard i % 3.
    procs = [subprocess.Popen(command("--model", "simple", "--model-repository", repo, "--input", tmp_path / "in",
                                      "--output", out, "--key-column", "id", "--part-rows", 10,
                                      "--shard-count", 3),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=environment({"JOB_COMPLETION_INDEX": str(index)}))
             for index in range(3)]
    stats = []
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-4000:]
        stats.append(summary(stderr))
    # Shard 0: a.part-00000, a.part-00003, b.part-00001; shard 1: a.part-00001, a.part-00004
    # (5 rows), b.part-00002; shard 2: a.part-00002, b.part-00000.
    assert [(s["total"], s["written"], s["parts"]) for s in stats] == [(30, 30, 3), (25, 25, 3), (20, 20, 2)]
    assert sorted(p.name for p in out.glob("_nereid_batch.shard-*.json")) == [
        "_nereid_batch.shard-%d-of-3.json" % i for i in range(3)]
    assert [p.name for p in part_files(out)] == ["a.part-%05d.parquet" % i for i in range(5)] + [
        "b.part-%05d.parquet" % i for i in range(3)]
    table = output(out)
    assert table.column_names == ["id", "OUTPUT0", "OUTPUT1"]
    got = table["id"].to_pylist()
    assert sorted(got) == sorted(expected) and len(got) == len(set(got)), "a row missing or scored twice"
    for row in table.to_pylist():
        first, second = expected[row["id"]]
        assert row["OUTPUT0"] == [x + y for x, y in zip(first, second)]
        assert row["OUTPUT1"] == [x - y for x, y in zip(first, second)]
    assert temporaries(out) == []


# Bad invocations ----------------------------------------------------------------------------

@IN_PROCESS
@pytest.mark.parametrize("case", ["missing column", "unknown model", "unknown tensor", "shard index",
                                  "no input", "no server"])
def test_a_bad_invocation_fails_with_one_error_line_before_any_work(tmp_path, case):
    repo = repository(tmp_path / "models", simple=SIMPLE_CONFIG)
    source = tmp_path / "in.parquet"
    columns = {"id": [1, 2], "INPUT0": pa.array([[1] * 16] * 2, pa.list_(pa.int32()))}
    if case != "missing column":
        columns["INPUT1"] = columns["INPUT0"]
    pq.write_table(pa.table(columns), source)
    out = tmp_path / "out"
    flags = {"--model": "simple", "--input": source, "--output": out, "--model-repository": repo}
    env = {}
    named = {"missing column": "INPUT1", "unknown model": "nosuch", "unknown tensor": "NOPE",
             "shard index": "--shard-count", "no input": "absent.parquet",
             "no server": "no server answered"}[case]
    extra = []
    if case == "unknown model":
        flags["--model"] = "nosuch"
    elif case == "unknown tensor":
        extra = ["--input-column", "INPUT0=NOPE"]
    elif case == "shard index":
        env["JOB_COMPLETION_INDEX"] = "3"
        extra = ["--shard-count", "3"]
    elif case == "no input":
        flags["--input"] = tmp_path / "absent.parquet"
    elif case == "no server":
        # Nothing listens on port 1: after the wait, the error says so (not "unknown model").
        del flags["--model-repository"]
        extra = ["--server", "127.0.0.1:1", "--server-wait-secs", "1"]
    args = [x for kv in flags.items() for x in kv] + extra
    result = batch(*args, env=env, check=False, timeout=120)
    assert result.returncode != 0
    lines = errors(result.stderr)
    assert len(lines) == 1, result.stderr[-4000:]
    assert named in lines[0], lines[0]
    assert not SUMMARY.search(result.stderr)
    assert not out.exists(), sorted(p.name for p in out.iterdir())
