#!/usr/bin/env python3
"""The Python side of scripts/soak.sh (issue 13, the memory soak).

`load`: the minilm and smollm2 clients. Runs until SIGTERM/SIGINT (or --seconds), then
writes its counts as JSON to --out.
  * minilm: --minilm threads in a closed loop, alternating OpenAI `POST /v1/embeddings`
    and KServe `POST /v2/models/minilm/infer` (TYPE_STRING input), texts of varying length.
  * smollm2: --chat threads streaming OpenAI chat completions with the `openai` package
    (stream=True, --max-tokens); every --abandon-every-th stream is closed after its first
    chunk (a client that leaves mid-stream), 0 never.

`report`: reads what soak.sh collected (RSS samples, `nereid bench` counts, the clients'
JSON, the server's statistics) and prints the summary with a PASS/FAIL line; exits 1 on FAIL.
"""

import argparse
import csv
import json
import random
import signal
import sys
import threading
import time
from pathlib import Path

WORDS = (
    "memory soak server request tensor batch model stream token embedding vector queue "
    "latency throughput allocator arena page heap thread worker socket frame header body "
    "the a of and to in is it that for on with as at by from this be or"
).split()


def text(rng, lo, hi):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}
        self.first_error = {}

    def ok(self, key, n=1):
        with self.lock:
            self.c.setdefault(key, {"ok": 0, "errors": 0})["ok"] += n

    def err(self, key, e):
        with self.lock:
            self.c.setdefault(key, {"ok": 0, "errors": 0})["errors"] += 1
            self.first_error.setdefault(key, f"{type(e).__name__}: {e}"[:300])

    def extra(self, key, field, n):
        with self.lock:
            d = self.c.setdefault(key, {"ok": 0, "errors": 0})
            d[field] = d.get(field, 0) + n


def minilm_worker(i, base, stop, counts, timeout):
    import requests

    rng = random.Random(1000 + i)
    session = requests.Session()
    turn = 0
    while not stop.is_set():
        t = text(rng, 3, 60)
        try:
            if turn % 2 == 0:
                key = "minilm /v1/embeddings"
                r = session.post(
                    f"{base}/v1/embeddings",
                    json={"model": "minilm", "input": [t], "encoding_format": "float"},
                    timeout=timeout,
                )
                r.raise_for_status()
                vec = r.json()["data"][0]["embedding"]
            else:
                key = "minilm KServe infer"
                body = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [t]}]}
                r = session.post(f"{base}/v2/models/minilm/infer", json=body, timeout=timeout)
                r.raise_for_status()
                vec = r.json()["outputs"][0]["data"]
            if len(vec) != 384:
                raise ValueError(f"embedding of {len(vec)} values, expected 384")
            counts.ok(key)
        except Exception as e:  # noqa: BLE001 - every failure is counted, the loop goes on
            counts.err(key, e)
            stop.wait(0.2)
        turn += 1


def chat_worker(i, base, stop, counts, max_tokens, abandon_every, timeout):
    import openai

    client = openai.OpenAI(base_url=f"{base}/v1", api_key="soak", timeout=timeout, max_retries=0)
    rng = random.Random(2000 + i)
    turn = 0
    while not stop.is_set():
        turn += 1
        abandon = abandon_every > 0 and turn % abandon_every == 0
        key = "smollm2 chat stream (abandoned)" if abandon else "smollm2 chat stream"
        try:
            stream = client.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": f"{turn}: {text(rng, 4, 20)}?"}],
                max_tokens=max_tokens,
                temperature=0.7,
                seed=rng.randint(0, 2**31),
                stream=True,
            )
            chunks, finish = 0, None
            for chunk in stream:
                chunks += 1
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
                if abandon:
                    break
            stream.close()
            if not abandon and finish is None:
                raise ValueError(f"stream ended after {chunks} chunks without a finish_reason")
            counts.ok(key)
            counts.extra(key, "chunks", chunks)
        except Exception as e:  # noqa: BLE001
            counts.err(key, e)
            stop.wait(0.5)


def load(args):
    base = f"http://{args.http}"
    stop = threading.Event()
    counts = Counts()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threads = [
        threading.Thread(target=minilm_worker, args=(i, base, stop, counts, args.timeout), daemon=True)
        for i in range(args.minilm)
    ] + [
        threading.Thread(
            target=chat_worker,
            args=(i, base, stop, counts, args.max_tokens, args.abandon_every, args.timeout),
            daemon=True,
        )
        for i in range(args.chat)
    ]
    start = time.monotonic()
    for t in threads:
        t.start()
    while not stop.is_set():
        stop.wait(1.0)
        if args.seconds and time.monotonic() - start >= args.seconds:
            stop.set()
    for t in threads:
        t.join(args.timeout + 5)
    result = {
        "seconds": round(time.monotonic() - start, 1),
        "counts": counts.c,
        "first_error": counts.first_error,
        "unfinished_threads": sum(t.is_alive() for t in threads),
    }
    Path(args.out).write_text(json.dumps(result, indent=1))


def read_bench_counts(out):
    """Per door: (requests, errors, runs, failed runs) from the count-DOOR files soak.sh wrote."""
    doors = {}
    for f in sorted(Path(out).glob("count-*")):
        ok = errors = runs = failed = 0
        for line in f.read_text().split("\n"):
            parts = line.split()
            if len(parts) >= 3:
                ok += int(parts[0])
                errors += int(parts[1])
                runs += 1
                failed += parts[2] != "0"
        doors[f.name[len("count-"):]] = (ok, errors, runs, failed)
    return doors


def server_stats(path):
    """Per model: (success, fail) from the saved `GET /v2/models/{m}/stats` answers."""
    stats = {}
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return stats
    for model, answer in doc.items():
        try:
            s = answer["model_stats"]
            stats[model] = (
                sum(v["inference_stats"]["success"]["count"] for v in s),
                sum(v["inference_stats"]["fail"]["count"] for v in s),
            )
        except (KeyError, TypeError, IndexError):
            stats[model] = None
    return stats


def mb(kb):
    return f"{kb / 1024:.1f} MiB"


def report(args):
    out = Path(args.out)
    rows = []
    with open(out / "rss.csv") as f:
        for r in csv.DictReader(f):
            rows.append((float(r["elapsed_s"]), int(r["rss_kb"]), int(r["hwm_kb"]), int(r["threads"]), r["phase"]))
    load_rows = [r for r in rows if r[4] == "load"]
    idle_rows = [r for r in rows if r[4] == "idle"]
    load_s = args.load_seconds
    # Warm-up: WARMUP_S if given, else WARMUP_PCT% of the load but at least WARMUP_MIN_S
    # (smollm2's prompt-prefix cache, 64 MiB by default, fills in its first few dozen
    # chats), and never more than half the load.
    if args.warmup_seconds is not None:
        warm_s, warm_rule = args.warmup_seconds, "WARMUP_S"
    else:
        warm_s = min(max(load_s * args.warmup_pct / 100, args.warmup_min_seconds), load_s / 2)
        warm_rule = f"max({args.warmup_pct:g}% of the load, {args.warmup_min_seconds:g} s), at most half"
    after = [r for r in load_rows if r[0] >= warm_s]
    fail = []

    print()
    print("================ nereid memory soak: summary ================")
    print(f"binary:      {args.bin}")
    print(f"allocator:   {args.allocator}")
    print(f"load:        {load_s:.0f} s ({args.mode}); machine {args.cores} cores")
    print("requests:")
    total_simple = total_simple_err = 0
    for door, (ok, errors, runs, failed) in read_bench_counts(out).items():
        total_simple += ok
        total_simple_err += errors
        note = f", {failed} bench runs failed" if failed else ""
        print(f"  simple  {door:<26} {ok:>10} ok {errors:>6} errors  ({runs} bench runs{note})")
        if failed:
            fail.append(f"{failed} `nereid bench` runs on {door} exited non-zero")
    print(f"  simple  {'all doors (client count)':<26} {total_simple:>10} ok {total_simple_err:>6} errors")
    clients = {}
    try:
        clients = json.loads((out / "clients.json").read_text())
    except (OSError, ValueError) as e:
        fail.append(f"no counts from the Python clients ({e})")
    py_err = 0
    for key, c in sorted(clients.get("counts", {}).items()):
        extra = f"  ({c['chunks']} chunks)" if "chunks" in c else ""
        print(f"  {key:<34} {c['ok']:>10} ok {c['errors']:>6} errors{extra}")
        py_err += c["errors"]
    for key, e in clients.get("first_error", {}).items():
        print(f"    first error of {key}: {e}")
    if clients.get("unfinished_threads"):
        fail.append(f"{clients['unfinished_threads']} Python client threads never finished")
    stats = server_stats(out / "server-stats.json")
    if stats:
        print("server statistics (GET /v2/models/{m}/stats, whole run):")
        for model, s in stats.items():
            print(f"  {model:<10} " + (f"{s[0]:>10} success {s[1]:>6} fail" if s else "unreadable"))
    if "smollm2 chat stream (abandoned)" in clients.get("counts", {}):
        print("  (the server counts a stream its client closed early as failed: smollm2's fail count includes them)")
    errors = total_simple_err + py_err
    print(f"errors:      {errors} client-side" + (f" ({total_simple_err} simple, {py_err} Python clients)" if errors else ""))

    if not load_rows or not after:
        print("RESULT: FAIL (no RSS samples after the warm-up)")
        return 1
    warm = after[0]
    end = load_rows[-1]
    peak = max(rows, key=lambda r: r[1])
    growth = (end[1] - warm[1]) / warm[1] * 100
    peak_after = max(r[1] for r in after)
    # Least-squares slope of RSS after the warm-up, in MiB per minute.
    n = len(after)
    slope = 0.0
    if n >= 2:
        mx = sum(r[0] for r in after) / n
        my = sum(r[1] for r in after) / n
        var = sum((r[0] - mx) ** 2 for r in after)
        slope = sum((r[0] - mx) * (r[1] - my) for r in after) / var * 60 / 1024 if var else 0.0
    print(f"RSS samples: {len(rows)} every {args.sample_s} s in {out / 'rss.csv'} ({len(load_rows)} under load)")
    print(f"warm-up:     the first {warm_s:.0f} s of the load ({warm_rule})")
    print(f"RSS at start of load:  {mb(load_rows[0][1])}")
    print(f"RSS after warm-up:     {mb(warm[1])} (t={warm[0]:.0f} s)")
    print(f"RSS at end of load:    {mb(end[1])} (t={end[0]:.0f} s)")
    print(f"max RSS:               {mb(peak[1])} (t={peak[0]:.0f} s; after warm-up {mb(peak_after)}; kernel VmHWM {mb(max(r[2] for r in rows))})")
    if idle_rows:
        print(f"RSS idle after load:   {mb(idle_rows[-1][1])} ({idle_rows[-1][0] - end[0]:.0f} s after the load stopped)")
    print(f"threads:               {warm[3]} after warm-up, {end[3]} at end")
    print(f"growth after warm-up:  {growth:+.2f}% (end vs after warm-up); max after warm-up {(peak_after - warm[1]) / warm[1] * 100:+.2f}%; trend {slope:+.2f} MiB/min")
    grew = growth >= args.max_growth
    print(f"RSS growth: {'FAIL' if grew else 'PASS'} ({growth:+.2f}% {'>=' if grew else '<'} {args.max_growth:g}%)")
    if errors:
        fail.append(f"{errors} client-side errors")
    if grew:
        fail.append(f"RSS grew {growth:.2f}% after the warm-up (limit {args.max_growth:g}%)")
    if fail:
        print(f"RESULT: FAIL (growth {growth:+.2f}% vs < {args.max_growth:g}%): " + "; ".join(fail))
        return 1
    print(f"RESULT: PASS (growth {growth:+.2f}% < {args.max_growth:g}%, no errors)")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    l = sub.add_parser("load", help="minilm and smollm2 clients until SIGTERM")
    l.add_argument("--http", required=True, help="host:port of the HTTP door")
    l.add_argument("--minilm", type=int, default=2, help="minilm client threads")
    l.add_argument("--chat", type=int, default=2, help="smollm2 streaming chat threads")
    l.add_argument("--max-tokens", type=int, default=16)
    l.add_argument("--abandon-every", type=int, default=5, help="close every Nth stream after its first chunk (0: never)")
    l.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    l.add_argument("--seconds", type=float, default=0, help="stop on its own after this long (0: on SIGTERM only)")
    l.add_argument("--out", required=True, help="JSON file for the counts")
    r = sub.add_parser("report", help="print the soak's summary")
    r.add_argument("--out", required=True, help="the soak's output folder")
    r.add_argument("--load-seconds", type=float, required=True)
    r.add_argument("--warmup-pct", type=float, default=20)
    r.add_argument("--warmup-seconds", type=float, default=None)
    r.add_argument("--warmup-min-seconds", type=float, default=60)
    r.add_argument("--max-growth", type=float, default=5)
    r.add_argument("--sample-s", type=float, default=2)
    r.add_argument("--bin", default="")
    r.add_argument("--allocator", default="")
    r.add_argument("--mode", default="")
    r.add_argument("--cores", default="?")
    a = p.parse_args()
    if a.cmd == "load":
        load(a)
        return 0
    return report(a)


if __name__ == "__main__":
    sys.exit(main())
