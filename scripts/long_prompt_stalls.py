#!/usr/bin/env python3
"""How a long prompt affects streams already running on a generator, over the OpenAI route.

Three streams of up to 150 tokens start; a second later one request with a prompt of
WORDS extra words (about 4 tokens each) arrives. Prints the long prompt's time to first
token and the gaps between tokens of the running streams (p50, p99, max): the pauses a
prefill chunk puts into their output.

    .venv/bin/python scripts/long_prompt_stalls.py http://127.0.0.1:8000 [WORDS=600] [MODEL=smollm2]

Uses `requests` from the test clients' venv (scripts/test-all.sh installs it).
"""

import json
import sys
import threading
import time

import requests


def stream(url, model, seed, max_tokens, content, gaps=None):
    """Streams one chat completion; returns seconds to the first token with text."""
    body = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "seed": seed,
        "stream": True,
        "messages": [{"role": "user", "content": content}],
    }
    started, first, last = time.time(), None, None
    with requests.post(url, json=body, stream=True, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if not chunk.get("choices") or not chunk["choices"][0]["delta"].get("content"):
                continue
            now = time.time()
            if first is None:
                first = now - started
            if gaps is not None and last is not None:
                gaps.append(now - last)
            last = now
    return first


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    words = int(sys.argv[2]) if len(sys.argv) > 2 else 600
    model = sys.argv[3] if len(sys.argv) > 3 else "smollm2"
    url = base.rstrip("/") + "/v1/chat/completions"
    gaps = []
    running = [
        threading.Thread(target=stream, args=(url, model, i, 150, f"Story {i}: tell me about the sea.", gaps))
        for i in range(3)
    ]
    for t in running:
        t.start()
    time.sleep(1.0)
    long_prompt = "Summarise this text. " + " ".join(f"word{i}" for i in range(words))
    ttft = stream(url, model, 99, 1, long_prompt)
    for t in running:
        t.join()
    gaps.sort()
    ms = lambda s: f"{s * 1000:.0f} ms"
    print(f"long prompt ({words} words): time to first token {ms(ttft)}")
    print(
        f"running streams: {len(gaps)} gaps, p50 {ms(gaps[len(gaps) // 2])}, "
        f"p99 {ms(gaps[int(len(gaps) * 0.99)])}, max {ms(gaps[-1])}"
    )


if __name__ == "__main__":
    main()
