"""Hostile input, one row per case: malformed KServe JSON and binary bodies, gRPC messages,
model configs and load requests, OpenAI bodies, WebSocket frames and gRPC-Web frames.

Every row says the exact status the server must answer (HTTP code, gRPC code, WebSocket
`code`) and a piece of text the message must hold (the field or thing at fault). After
every row the same server answers a good request on REST and gRPC, so no case may leave
it broken. Rows against the demo models share one server; model control rows share one
explicit-mode server over a temporary repository of broken configs. Two requests that
break a whole server today have their own test and server (FINDINGS 10 and 15).

A row the server answers wrongly today keeps asserting the right answer and is marked
`xfail(strict=True, reason="FINDING n")`: remove the mark with the fix.
"""

import base64
import gzip
import http.client
import json
import os
import pathlib
import shutil
import struct
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import grpc
import pytest
from tritonclient.grpc import service_pb2
from websockets.sync.client import connect

from conftest import SIMPLE_CONFIG, start_server

pytestmark = pytest.mark.timeout(120)

SERVICE = "/inference.GRPCInferenceService/"
CODES = {s.value[0]: s.name for s in grpc.StatusCode}
I64_MAX = 2**63 - 1


# Requests -------------------------------------------------------------------------------

def t(name, shape, datatype, data=None, **parameters):
    """A KServe JSON input."""
    tensor = {"name": name, "shape": shape, "datatype": datatype}
    if data is not None:
        tensor["data"] = data
    if parameters:
        tensor["parameters"] = parameters
    return tensor


def in0(**over):
    tensor = t("INPUT0", [1, 16], "INT32", list(range(16)))
    tensor.update(over)
    return tensor


def in1():
    return t("INPUT1", [1, 16], "INT32", [1] * 16)


def simple(*inputs, **rest):
    """A request to `simple`: the two good inputs unless others are given."""
    return {"inputs": list(inputs) if inputs else [in0(), in1()], **rest}


GOOD_SIMPLE = simple()
GOOD_ECHO = {"inputs": [t("IN", [2], "BYTES", ["a", "bc"])]}
INT32_16 = struct.pack("<16i", *range(16))


def binary_body(header, tail):
    """A binary-extension body: the JSON header then `tail`; returns (body, header length)."""
    text = json.dumps(header, separators=(",", ":")).encode()
    return text + tail, len(text)


def binary_simple(size=64, shape=(1, 16), extra=None):
    """`simple` with INPUT0 sent binary (declaring `size` bytes) and INPUT1 as JSON."""
    first = t("INPUT0", list(shape), "INT32", binary_data_size=size)
    if extra:
        first.update(extra)
    return {"inputs": [first, in1()]}


def pb_tensor(name, shape, datatype, **contents):
    tensor = service_pb2.ModelInferRequest.InferInputTensor(name=name, shape=shape, datatype=datatype)
    for list_name, values in contents.items():
        getattr(tensor.contents, list_name).extend(values)
    return tensor


def pb_infer(model="simple", inputs=None, raw=None, outputs=(), version=""):
    """A ModelInferRequest; `simple`'s two INT32 inputs sent raw unless told otherwise."""
    if inputs is None:
        inputs = [pb_tensor("INPUT0", [1, 16], "INT32"), pb_tensor("INPUT1", [1, 16], "INT32")]
        raw = [INT32_16, INT32_16] if raw is None else raw
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version, inputs=inputs)
    request.raw_input_contents.extend(raw or [])
    for name in outputs:
        request.outputs.add(name=name)
    return request


def bytes_elements(*items):
    """BYTES tensor bytes: each element a 4-byte little-endian length, then the element."""
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def grpc_web_frame(message, flag=0, length=None):
    """One gRPC-Web data frame: flag byte, 4-byte big-endian length, message."""
    return bytes([flag]) + struct.pack(">I", len(message) if length is None else length) + message


# Rows -----------------------------------------------------------------------------------

@dataclass
class Case:
    """One hostile request: which door (`rest`, `grpc`, `grpc_stream`, `grpc_web`, `ws`),
    which server (`demo` or the explicit-mode `repo`), what is sent, what must come back."""
    door: str
    request: Any
    status: Any
    needle: str
    target: str = "demo"
    headers: dict = field(default_factory=dict)
    method: str = "ModelInfer"
    # A further check on the server after the answer: (server, repository folder) -> None.
    after: Optional[Callable] = None


def row(case_id, case, *marks):
    return pytest.param(case, id=case_id, marks=list(marks))


def finding(n):
    """The server answers this row wrongly today (see the report of the hostile-input
    table); the row asserts the right answer and is expected to fail until fixed."""
    return pytest.mark.xfail(strict=True, reason="FINDING %d" % n)


def rest(path, body, status, needle, headers=None, **kw):
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    return Case("rest", (path, body), status, needle, headers=headers or {}, **kw)


INFER = "/v2/models/simple/infer"


def kserve(body, status, needle, path=INFER, headers=None):
    return rest(path, body, status, needle, headers)


def binary(body_and_length, status, needle, header_length=None):
    body, length = body_and_length
    value = str(length) if header_length is None else header_length
    return rest(INFER, body, status, needle, {"Inference-Header-Content-Length": value,
                                               "Content-Type": "application/octet-stream"})


def rpc(request, status, needle, method="ModelInfer", target="demo", **kw):
    return Case("grpc", request, status, needle, method=method, target=target, **kw)


def openai(route, body, status, needle):
    return rest("/v1/" + route, body, status, needle)


def ws(frame, status, needle):
    return Case("ws", frame, status, needle)


def grpc_web(body, status, needle, method="ModelInfer", headers=None):
    return Case("grpc_web", body, status, needle, method=method, headers=headers or {})


def load(model, body, status, needle, **kw):
    path = "/v2/repository/models/%s/load" % urllib.parse.quote(model, safe="")
    return rest(path, body, status, needle, target="repo", **kw)


def grpc_load(model, parameters, status, needle, **kw):
    request = service_pb2.RepositoryModelLoadRequest(model_name=model)
    for key, value in parameters.items():
        if isinstance(value, bytes):
            request.parameters[key].bytes_param = value
        elif isinstance(value, int):
            request.parameters[key].int64_param = value
        else:
            request.parameters[key].string_param = value
    return rpc(request, status, needle, method="RepositoryModelLoad", target="repo", **kw)


KSERVE_JSON = [
    row("json-truncated", kserve('{"inputs": [', 400, "invalid JSON")),
    row("json-not-json", kserve("not json", 400, "invalid JSON")),
    row("json-empty-body", kserve("", 400, "invalid JSON")),
    row("json-no-inputs", kserve({}, 400, "'inputs'")),
    row("json-array-body", kserve([], 400, "inference request object")),
    row("json-inputs-not-a-list", kserve({"inputs": {"INPUT0": [1]}}, 400, "'inputs'")),
    row("json-input-without-name", kserve(simple({"shape": [1, 16], "datatype": "INT32", "data": [0] * 16}, in1()),
                                          400, "has no 'name'")),
    row("json-input-without-datatype", kserve(simple({"name": "INPUT0", "shape": [1, 16], "data": [0] * 16}, in1()),
                                              400, "'datatype'")),
    row("json-input-without-shape", kserve(simple({"name": "INPUT0", "datatype": "INT32", "data": [0] * 16}, in1()),
                                           400, "'shape'")),
    row("json-input-without-data", kserve(simple(t("INPUT0", [1, 16], "INT32"), in1()), 400, "input 'INPUT0' has no 'data'")),
    row("json-unknown-datatype", kserve(simple(in0(datatype="FLOAT32"), in1()), 400, "input 'INPUT0': unknown datatype 'FLOAT32'")),
    row("json-datatype-mismatch", kserve(simple(in0(datatype="FP32", data=[0.5] * 16), in1()), 400,
                                         "input 'INPUT0' has datatype FP32 but the model expects INT32")),
    row("json-too-few-elements", kserve(simple(in0(data=[0] * 15), in1()), 400,
                                        "shape [1, 16] needs 16 elements but 'data' has 15")),
    row("json-too-many-elements", kserve(simple(in0(data=[0] * 17), in1()), 400, "more than the 16 elements")),
    row("json-negative-dimension", kserve(simple(in0(shape=[1, -16]), in1()), 400, "negative dimension")),
    row("json-shape-product-overflows-i64", kserve(simple(in0(shape=[I64_MAX, I64_MAX], data=[1]), in1()), 400,
                                                   "too large")),
    row("json-shape-of-strings", kserve(simple(in0(shape=["1", 16]), in1()), 400,
                                        "'shape' must be an array of integers")),
    row("json-shape-wrong-rank", kserve(simple(in0(shape=[1, 4, 4]), in1()), 400, "input 'INPUT0' has shape [1, 4, 4]")),
    row("json-int32-out-of-range", kserve(simple(in0(data=[[4294967296] * 16]), in1()), 400, "4294967296")),
    row("json-string-in-int32", kserve(simple(in0(data=["a"] * 16), in1()), 400, 'the string "a"')),
    row("json-fraction-in-int32", kserve(simple(in0(data=[3.5] + [0] * 15), in1()), 400, "3.5")),
    row("json-nested-deeper-than-shape", kserve(simple(in0(data=[[[[list(range(16))]]]]), in1()), 400,
                                                "nested deeper than its shape")),
    row("json-missing-input", kserve(simple(in1()), 400, "missing input 'INPUT0'")),
    row("json-duplicate-input", kserve(simple(in0(), in0(), in1()), 400, "'INPUT0' is given more than once")),
    row("json-unknown-input", kserve(simple(in0(), in1(), t("X", [1], "INT32", [0])), 400, "unexpected input 'X'")),
    row("json-unknown-output", kserve(simple(outputs=[{"name": "OUTPUT9"}]), 400, "unknown requested output 'OUTPUT9'")),
    row("json-batch-over-max-batch-size", kserve(simple(in0(shape=[9, 16], data=[0] * 144),
                                                        t("INPUT1", [9, 16], "INT32", [0] * 144)), 400, "batch size 9")),
    row("json-priority-out-of-range", kserve(simple(parameters={"priority": 99}), 400, "'priority'")),
    row("json-timeout-negative", kserve(simple(parameters={"timeout": -5}), 400, "'timeout'")),
    row("json-unknown-model", kserve(GOOD_SIMPLE, 404, "'nope'", path="/v2/models/nope/infer")),
    row("json-version-minus-one", kserve(GOOD_SIMPLE, 400, "'-1'", path="/v2/models/simple/versions/-1/infer")),
    row("json-version-not-integer", kserve(GOOD_SIMPLE, 400, "'1.0'", path="/v2/models/simple/versions/1.0/infer")),
    row("json-unknown-version", kserve(GOOD_SIMPLE, 404, "'simple' version 7 is not found", path="/v2/models/simple/versions/7/infer")),
    row("json-generate-nesting-bomb", kserve('{"INPUT0":%s%s}' % ("[" * 5000, "]" * 5000), 400,
                                             "nested more than 128 levels", path="/v2/models/identity_fp32/generate")),
    row("json-model-name-not-a-string", kserve(simple(model_name=5), 400, "model_name")),
    row("json-outputs-not-a-list", kserve(simple(outputs=5), 400, "'outputs'")),
    row("json-output-name-not-a-string", kserve(simple(outputs=[{"name": 5}]), 400, "output #0")),
    row("json-parameters-not-an-object", kserve(simple(parameters="x"), 400, "'parameters' as an object")),
    row("json-binary-data-output-not-a-bool", kserve(simple(parameters={"binary_data_output": "yes"}), 400,
                                                     "binary_data_output")),
    row("json-binary-data-not-a-bool", kserve(simple(outputs=[{"name": "OUTPUT0", "parameters": {"binary_data": 2}}]),
                                              400, "binary_data")),
    row("json-classification-unsupported", kserve(simple(outputs=[{"name": "OUTPUT0",
                                                                   "parameters": {"classification": 2}}]),
                                                  501, "classification")),
    row("json-shared-memory-unregistered", kserve(simple(t("INPUT0", [1, 16], "INT32", shared_memory_region="r",
                                                          shared_memory_byte_size=64), in1()),
                                                 400, "input 'INPUT0' names shared-memory region 'r', which is not registered")),
    row("json-shared-memory-size-not-a-number", kserve(simple(t("INPUT0", [1, 16], "INT32", shared_memory_region="r",
                                                               shared_memory_byte_size="64"), in1()),
                                                      400, "'shared_memory_byte_size' must be a non-negative integer")),
    row("body-gzip-header-on-plain-bytes", kserve(json.dumps(GOOD_SIMPLE), 400, "gzip header",
                                                  headers={"Content-Encoding": "gzip"})),
    row("body-gzip-truncated", kserve(gzip.compress(json.dumps(GOOD_SIMPLE).encode())[:40], 400,
                                      "cannot read the request body", headers={"Content-Encoding": "gzip"})),
    row("body-unknown-content-encoding", kserve(json.dumps(GOOD_SIMPLE), 415, "Content-Encoding",
                                                headers={"Content-Encoding": "br"})),
    row("generate-not-an-object", kserve("[1]", 400, "must be a JSON object", path="/v2/models/identity_fp32/generate")),
    row("generate-unknown-input", kserve({"NOPE": 1}, 400, "has no input 'NOPE'",
                                         path="/v2/models/identity_fp32/generate")),
    row("generate-string-for-fp32", kserve({"INPUT0": "abc"}, 400, "input 'INPUT0': element 1 is the string",
                                           path="/v2/models/identity_fp32/generate")),
    row("generate-stream-unknown-input", kserve({"NOPE": 1}, 400, "has no input 'NOPE'",
                                                path="/v2/models/identity_fp32/generate_stream")),
]

BINARY = [
    row("binary-header-length-not-a-number", binary(binary_body(binary_simple(), bytes(64)), 400, "not a byte count",
                                                    header_length="ten")),
    row("binary-header-length-negative", binary(binary_body(binary_simple(), bytes(64)), 400,
                                                "Inference-Header-Content-Length", header_length="-5")),
    row("binary-header-length-past-the-body", binary(binary_body(binary_simple(), bytes(64)), 400,
                                                     "Inference-Header-Content-Length", header_length="100000")),
    row("binary-header-length-overflows-u64", binary(binary_body(binary_simple(), bytes(64)), 400,
                                                     "Inference-Header-Content-Length",
                                                     header_length="99999999999999999999999")),
    row("binary-header-length-cuts-the-json", binary(binary_body(binary_simple(), bytes(64)), 400, "invalid JSON",
                                                     header_length="10")),
    row("binary-data-size-past-the-end", binary(binary_body(binary_simple(), bytes(60)), 400, "runs past")),
    row("binary-data-sizes-do-not-sum-to-the-body", binary(binary_body(binary_simple(), bytes(70)), 400,
                                                           "add up to 64")),
    row("binary-data-size-not-the-shape", binary(binary_body(binary_simple(size=60), bytes(60)), 400,
                                                 "needs 64 bytes")),
    row("binary-data-size-huge-shape", binary(binary_body(binary_simple(shape=(10**12, 16)), bytes(64)), 400,
                                              "needs 64000000000000 bytes")),
    row("binary-data-size-negative", binary(binary_body(binary_simple(size=-64), bytes(64)), 400, "binary_data_size")),
    row("binary-data-size-not-an-integer", binary(binary_body(binary_simple(size="64"), bytes(64)), 400,
                                                  "binary_data_size")),
    row("binary-data-size-and-data", binary(binary_body(binary_simple(extra={"data": list(range(16))}), bytes(64)), 400,
                                            "both 'data'")),
    row("binary-tail-without-header-length", kserve(binary_body(binary_simple(), bytes(64))[0], 400, "invalid JSON")),
]

GRPC = [
    row("grpc-raw-contents-too-short", rpc(pb_infer(raw=[INT32_16[:60], INT32_16]), "INVALID_ARGUMENT",
                                           "'INPUT0': shape [1, 16] of INT32 needs 64 bytes, got 60")),
    row("grpc-raw-contents-too-long", rpc(pb_infer(raw=[INT32_16 + b"\0\0\0\0", INT32_16]), "INVALID_ARGUMENT",
                                          "needs 64 bytes, got 68")),
    row("grpc-raw-entries-fewer-than-inputs", rpc(pb_infer(raw=[INT32_16]), "INVALID_ARGUMENT",
                                                  "raw_input_contents")),
    row("grpc-raw-and-typed-contents-mixed",
        rpc(pb_infer(inputs=[pb_tensor("INPUT0", [1, 16], "INT32", int_contents=range(16)),
                             pb_tensor("INPUT1", [1, 16], "INT32")], raw=[INT32_16, INT32_16]),
            "INVALID_ARGUMENT", "input 'INPUT0' sets 'contents'")),
    row("grpc-shape-product-overflows-i64",
        rpc(pb_infer("identity_fp32", [pb_tensor("INPUT0", [1, 2**62], "FP32")], [b"\0" * 4]),
            "INVALID_ARGUMENT", "'INPUT0': shape is too large")),
    row("grpc-shape-max-i64-squared",
        rpc(pb_infer("identity_fp32", [pb_tensor("INPUT0", [1, I64_MAX], "FP32")], [b"\0" * 4]),
            "INVALID_ARGUMENT", "'INPUT0': shape is too large")),
    row("grpc-negative-dimension",
        rpc(pb_infer("identity_fp32", [pb_tensor("INPUT0", [1, -4], "FP32")], [b"\0" * 16]),
            "INVALID_ARGUMENT", "input 'INPUT0' has shape [1, -4]")),
    row("grpc-typed-count-short",
        rpc(pb_infer(inputs=[pb_tensor("INPUT0", [1, 16], "INT32", int_contents=range(15)),
                             pb_tensor("INPUT1", [1, 16], "INT32", int_contents=range(16))]),
            "INVALID_ARGUMENT", "int_contents holds 15")),
    row("grpc-datatype-vs-contents-list",
        rpc(pb_infer(inputs=[pb_tensor("INPUT0", [1, 16], "INT32", fp32_contents=[0.5] * 16),
                             pb_tensor("INPUT1", [1, 16], "INT32", int_contents=range(16))]),
            "INVALID_ARGUMENT", "'INPUT0': shape [1, 16] has 16 elements but int_contents holds 0")),
    row("grpc-datatype-mismatch", rpc(pb_infer(inputs=[pb_tensor("INPUT0", [1, 16], "FP32"),
                                                       pb_tensor("INPUT1", [1, 16], "INT32")],
                                               raw=[INT32_16, INT32_16]),
                                      "INVALID_ARGUMENT", "input 'INPUT0' has datatype FP32")),
    row("grpc-unknown-datatype", rpc(pb_infer(inputs=[pb_tensor("INPUT0", [1, 16], "FLOAT"),
                                                      pb_tensor("INPUT1", [1, 16], "INT32")],
                                              raw=[INT32_16, INT32_16]),
                                     "INVALID_ARGUMENT", "input 'INPUT0': unknown datatype 'FLOAT'")),
    row("grpc-fp16-in-typed-contents",
        rpc(pb_infer("identity_fp32", [pb_tensor("INPUT0", [1, 1], "FP16", fp32_contents=[1.0])]),
            "INVALID_ARGUMENT", "input 'INPUT0' is FP16")),
    row("grpc-unknown-input", rpc(pb_infer(inputs=[pb_tensor("INPUT0", [1, 16], "INT32"),
                                                   pb_tensor("INPUT1", [1, 16], "INT32"),
                                                   pb_tensor("EXTRA", [1, 16], "INT32")],
                                           raw=[INT32_16] * 3),
                                  "INVALID_ARGUMENT", "unexpected input 'EXTRA'")),
    row("grpc-unknown-output", rpc(pb_infer(outputs=["NOPE"]), "INVALID_ARGUMENT", "unknown requested output 'NOPE'")),
    row("grpc-version-minus-one", rpc(pb_infer(version="-1"), "INVALID_ARGUMENT", "'-1'")),
    row("grpc-version-with-space", rpc(pb_infer(version=" 1"), "INVALID_ARGUMENT", "' 1'")),
    row("grpc-version-not-integer", rpc(pb_infer(version="1.0"), "INVALID_ARGUMENT", "'1.0'")),
    row("grpc-unknown-version", rpc(pb_infer(version="7"), "NOT_FOUND", "7")),
    row("grpc-unknown-model", rpc(pb_infer("nope"), "NOT_FOUND", "'nope'")),
    row("grpc-metadata-version-minus-one",
        rpc(service_pb2.ModelMetadataRequest(name="simple", version="-1"), "INVALID_ARGUMENT", "'-1'",
            method="ModelMetadata")),
    row("grpc-garbage-protobuf", rpc(b"\xff\xff\xff\xff\xff", "INTERNAL", "failed to decode Protobuf message")),
    row("grpc-protobuf-field-of-the-wrong-wire-type",
        rpc(b"\x0a\x05simple\x1a\x01", "INTERNAL", "failed to decode Protobuf message")),
    row("grpc-bytes-length-prefix-past-the-end",
        rpc(pb_infer("echo_bytes", [pb_tensor("IN", [1], "BYTES")], [struct.pack("<I", 100) + b"abc"]),
            "INVALID_ARGUMENT", "'IN': BYTES element at byte 0 declares 100 bytes but only 3 remain", target="repo")),
    row("grpc-bytes-truncated-length-prefix",
        rpc(pb_infer("echo_bytes", [pb_tensor("IN", [2], "BYTES")], [bytes_elements(b"ab") + b"\x01\x00"]),
            "INVALID_ARGUMENT", "'IN': BYTES data is truncated at byte 6", target="repo")),
    row("grpc-bytes-prefix-near-u32-max",
        rpc(pb_infer("echo_bytes", [pb_tensor("IN", [1], "BYTES")], [b"\xff\xff\xff\xffabc"]),
            "INVALID_ARGUMENT", "'IN': BYTES element at byte 0 declares 4294967295 bytes", target="repo")),
    row("grpc-bytes-fewer-elements-than-shape",
        rpc(pb_infer("echo_bytes", [pb_tensor("IN", [3], "BYTES")], [bytes_elements(b"a", b"b")]),
            "INVALID_ARGUMENT", "shape [3] has 3 elements, but the BYTES data holds 2", target="repo")),
    row("grpc-bytes-typed-count-mismatch",
        rpc(pb_infer("echo_bytes", [pb_tensor("IN", [3], "BYTES", bytes_contents=[b"a"])]),
            "INVALID_ARGUMENT", "bytes_contents holds 1", target="repo")),
    row("grpc-stream-bad-request-is-an-error-message",
        Case("grpc_stream", pb_infer(outputs=["NOPE"]), "stream error_message", "unknown requested output 'NOPE'")),
]

HI = [{"role": "user", "content": "hi"}]


def chat(status, needle, **fields):
    return openai("chat/completions", {"model": "simple", "messages": HI, **fields}, status, needle)


OPENAI = [
    row("openai-chat-not-json", openai("chat/completions", "{model: simple", 400, "invalid request body")),
    row("openai-chat-missing-model", openai("chat/completions", {"messages": HI}, 400, "missing field `model`")),
    row("openai-chat-missing-messages", openai("chat/completions", {"model": "simple"}, 400,
                                               "missing field `messages`")),
    row("openai-chat-messages-not-a-list", chat(400, "invalid 'messages'", messages="hi")),
    row("openai-chat-content-wrong-type", chat(400, "invalid 'messages[0].content'",
                                               messages=[{"role": "user", "content": 5}])),
    row("openai-chat-n-zero", chat(400, "'n' must be between 1 and 16", n=0)),
    row("openai-chat-n-too-many", chat(400, "'n' must be between 1 and 16", n=17)),
    row("openai-chat-max-tokens-negative", chat(400, "invalid 'max_tokens'", max_tokens=-1)),
    row("openai-chat-max-tokens-string", chat(400, "invalid 'max_tokens'", max_tokens="ten")),
    row("openai-chat-temperature-too-high", chat(400, "'temperature' must be in [0, 2]", temperature=5)),
    row("openai-chat-temperature-string", chat(400, "invalid 'temperature'", temperature="hot")),
    row("openai-chat-top-p-too-high", chat(400, "'top_p' must be in [0, 1]", top_p=1.5)),
    row("openai-chat-too-many-stops", chat(400, "'stop' takes at most 4", stop=list("abcde"))),
    row("openai-chat-penalty-unsupported", chat(400, "'presence_penalty'", presence_penalty=0.5)),
    row("openai-chat-unknown-model", chat(404, "'no-such-model'", model="no-such-model")),
    row("openai-chat-model-not-a-generator", chat(400, "model 'simple' is not a text generator")),
    row("openai-completions-missing-prompt", openai("completions", {"model": "simple"}, 400, "'prompt' is required")),
    row("openai-completions-empty-prompt-list", openai("completions", {"model": "simple", "prompt": []}, 400,
                                                       "'prompt' must not be an empty list")),
    row("openai-completions-prompt-number", openai("completions", {"model": "simple", "prompt": 5}, 400,
                                                   "invalid 'prompt'")),
    row("openai-completions-max-tokens-float", openai("completions", {"model": "simple", "prompt": "x",
                                                                      "max_tokens": 2.5}, 400, "invalid 'max_tokens'")),
    row("openai-completions-logprobs", openai("completions", {"model": "simple", "prompt": "x", "logprobs": 2},
                                              400, "'logprobs' is not supported")),
    row("openai-completions-unknown-model", openai("completions", {"model": "no-such-model", "prompt": "x"},
                                                   404, "'no-such-model'")),
    row("openai-embeddings-missing-input", openai("embeddings", {"model": "simple"}, 400, "missing field `input`")),
    row("openai-embeddings-input-number", openai("embeddings", {"model": "simple", "input": 5}, 400,
                                                 "invalid 'input'")),
    row("openai-embeddings-model-number", openai("embeddings", {"model": 5, "input": "x"}, 400, "invalid 'model'")),
    row("openai-embeddings-bad-encoding-format", openai("embeddings", {"model": "simple", "input": "x",
                                                                       "encoding_format": "hex"},
                                                        400, "'encoding_format' must be")),
    row("openai-embeddings-unknown-model", openai("embeddings", {"model": "no-such-model", "input": "x"},
                                                  404, "'no-such-model'")),
    row("openai-embeddings-model-not-an-embedder", openai("embeddings", {"model": "simple", "input": "x"},
                                                          400, "model 'simple' does not produce embeddings")),
]

WS_GOOD = {"id": "w", "model_name": "simple", "inputs": GOOD_SIMPLE["inputs"]}
WS_BINARY = json.dumps({**WS_GOOD, **binary_simple()}).encode()

WEBSOCKET = [
    row("ws-not-json", ws("hello", 400, "invalid JSON")),
    row("ws-binary-garbage", ws(b"\x01\x02", 400, "shorter than its 4-byte header length")),
    row("ws-binary-length-past-the-frame", ws(struct.pack("<I", 1000) + b"{}", 400, "declares a 1000-byte JSON header")),
    row("ws-binary-data-size-past-the-end", ws(struct.pack("<I", len(WS_BINARY)) + WS_BINARY + bytes(10), 400,
                                               "'INPUT0': binary_data_size 64 at offset 0 runs past")),
    row("ws-inputs-not-a-list", ws({"id": "w", "model_name": "simple", "inputs": 5}, 400, "'inputs' as an array")),
    row("ws-shape-not-a-list", ws({**WS_GOOD, "inputs": [in0(shape="1x16"), in1()]}, 400,
                                  "input 'INPUT0': 'shape' as an array")),
    row("ws-model-name-number", ws({**WS_GOOD, "model_name": 5}, 400, "model_name")),
    row("ws-no-model-name", ws({"id": "w", "inputs": GOOD_SIMPLE["inputs"]}, 400, "set 'model_name'")),
    row("ws-unknown-model", ws({**WS_GOOD, "model_name": "nope"}, 404, "Request for unknown model: 'nope' is not found")),
    row("ws-version-minus-one", ws({**WS_GOOD, "model_version": "-1"}, 400, "model version '-1'")),
    row("ws-id-wrong-type", ws({**WS_GOOD, "id": [1]}, 400, "'id' as a string")),
    row("ws-unknown-output", ws({**WS_GOOD, "outputs": [{"name": "NOPE"}]}, 400, "unknown requested output 'NOPE'")),
    row("ws-cancel-unknown-id", ws({"cancel": "zz"}, 400, "no request 'zz' is in flight")),
    row("ws-cancel-not-a-string", ws({"cancel": 5}, 400, "cancel")),
]

GRPC_WEB = [
    row("grpc-web-truncated-frame-header", grpc_web(b"\x00\x00\x00", "INTERNAL", "Unexpected EOF")),
    row("grpc-web-length-past-the-body", grpc_web(grpc_web_frame(b"\x0a\x06simple", length=500), "INTERNAL",
                                                  "Unexpected EOF")),
    row("grpc-web-compressed-flag-without-encoding",
        grpc_web(grpc_web_frame(pb_infer().SerializeToString(), flag=1), "INTERNAL",
                 "compressed-flag but no grpc-encoding")),
    row("grpc-web-invalid-flag", grpc_web(grpc_web_frame(pb_infer().SerializeToString(), flag=4), "INTERNAL",
                                          "invalid compression flag: 4")),
    row("grpc-web-garbage-gzip", grpc_web(grpc_web_frame(b"not gzip at all", flag=1), "INTERNAL",
                                          "Error decompressing", headers={"grpc-encoding": "gzip"})),
    row("grpc-web-garbage-protobuf", grpc_web(grpc_web_frame(b"\xff\xff\xff\xff\xff"), "INTERNAL",
                                              "failed to decode Protobuf message")),
    row("grpc-web-empty-body", grpc_web(b"", "INTERNAL", "Missing request message")),
    row("grpc-web-unknown-encoding", grpc_web(grpc_web_frame(pb_infer().SerializeToString(), flag=1), "UNIMPLEMENTED",
                                              "`br`", headers={"grpc-encoding": "br"})),
    row("grpc-web-bad-request-inside-a-good-frame",
        grpc_web(grpc_web_frame(pb_infer(raw=[INT32_16[:60], INT32_16]).SerializeToString()), "INVALID_ARGUMENT",
                 "'INPUT0': shape [1, 16] of INT32 needs 64 bytes, got 60")),
    row("grpc-web-unknown-model", grpc_web(grpc_web_frame(pb_infer("nope").SerializeToString()), "NOT_FOUND",
                                           "Request for unknown model: 'nope' is not found")),
    row("grpc-web-unknown-method", grpc_web(grpc_web_frame(b""), "UNIMPLEMENTED", "NoSuchMethod",
                                            method="NoSuchMethod")),
]

# Model control: an explicit-mode server over a repository of broken configs -------------


ECHO_CONFIG = """name: "echo_bytes"
backend: "identity"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_STRING dims: [ -1 ] } ]
"""

# A good model outside the repository, reachable only through a traversing name.
OUTSIDE_CONFIG = """backend: "identity"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""


def cfg(name, body, io=True):
    """A config named `name` with `body`, plus one FP32 identity input and output."""
    tensors = ('input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
               'output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]\n') if io else ""
    return 'name: "%s"\n%s\n%s' % (name, body, tensors)


IDENTITY = 'backend: "identity"\nmax_batch_size: 4\n'

# folder -> (config.pbtxt text, or None for no file; text the refusal must hold; finding)
BROKEN_CONFIGS = {
    "syntax_error": (cfg("syntax_error", IDENTITY + 'input [ { name: "Z" data_type: TYPE_FP32', io=False),
                     "syntax_error/config.pbtxt: invalid model config at line 5", None),
    "unknown_field": (cfg("unknown_field", IDENTITY + "no_such_field: 3"), "field 'no_such_field' not found", None),
    "unknown_data_type": (cfg("unknown_data_type", IDENTITY +
                              'input [ { name: "X" data_type: TYPE_NOPE dims: [ -1 ] } ]\n'
                              'output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]', io=False),
                          "value 'TYPE_NOPE' was not found", None),
    "negative_max_batch_size": (cfg("negative_max_batch_size", 'backend: "identity"\nmax_batch_size: -1'),
                                "max_batch_size must be >= 0, got -1", None),
    "batch_of_four_as_text": (cfg("batch_of_four_as_text", 'backend: "identity"\nmax_batch_size: "four"'),
                              "field 'max_batch_size'", None),
    "batch_over_i32": (cfg("batch_over_i32", 'backend: "identity"\nmax_batch_size: 99999999999'),
                                "field 'max_batch_size'", None),
    "bad_dims": (cfg("bad_dims", IDENTITY + 'input [ { name: "X" data_type: TYPE_FP32 dims: [ -2 ] } ]\n'
                     'output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]', io=False),
                 "input 'X': dims [-2] has invalid dimension -2", None),
    "no_output": (cfg("no_output", IDENTITY + 'input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]', io=False),
                  "declares no output", None),
    "duplicate_input": (cfg("duplicate_input", IDENTITY + 'input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]'),
                        "input 'X': declared twice", None),
    "empty_input_name": (cfg("empty_input_name", IDENTITY +
                             'input [ { name: "" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
                             'output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]', io=False),
                         "an input has an empty name", None),
    "name_mismatch": (cfg("someone_else", IDENTITY), "holds a config named 'someone_else'", None),
    "unknown_backend": (cfg("unknown_backend", 'backend: "nope"\nmax_batch_size: 4'), "unknown backend 'nope'", None),
    "no_backend": (cfg("no_backend", "max_batch_size: 4"), "config names no backend", None),
    "sequence_batching": (cfg("sequence_batching", IDENTITY + "sequence_batching { oldest { max_candidate_sequences: 0 } }"),
                          "sequence_batching.oldest.max_candidate_sequences must be at least 1", None),
    "ensemble": (cfg("ensemble", IDENTITY + "ensemble_scheduling { }"), 'ensemble_scheduling needs platform: "ensemble"', None),
    "model_operations": (cfg("model_operations", IDENTITY + 'model_operations { op_library_filename: "libops.so" }'),
                         "field 'model_operations' is not supported: custom operation libraries", None),
    "preferred_batch_size": (cfg("preferred_batch_size", IDENTITY + "dynamic_batching { preferred_batch_size: [ 16 ] }"),
                             "preferred_batch_size 16 must be between 1 and max_batch_size 4", None),
    "default_priority_level": (cfg("default_priority_level", IDENTITY +
                                   "dynamic_batching { priority_levels: 2 default_priority_level: 5 }"),
                               "default_priority_level 5", None),
    "instance_count": (cfg("instance_count", IDENTITY + "instance_group [ { count: -1 kind: KIND_CPU } ]"),
                       "instance_group 0: count must be >= 1", None),
    "instance_kind": (cfg("instance_kind", IDENTITY + "instance_group [ { count: 1 kind: KIND_NOPE } ]"),
                      "value 'KIND_NOPE' was not found", None),
    "max_sequences": (cfg("max_sequences", IDENTITY +
                          'parameters [ { key: "max_sequences" value: { string_value: "4" } } ]'),
                      "parameter 'max_sequences' applies to decoupled models only", None),
    "execution_timeout": (cfg("execution_timeout", IDENTITY +
                              'parameters [ { key: "execution_timeout_ms" value: { string_value: "soon" } } ]'),
                          "parameter 'execution_timeout_ms' = 'soon'", None),
    "backend_rejects_types": (cfg("backend_rejects_types", IDENTITY +
                                  'input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
                                  'output [ { name: "Y" data_type: TYPE_INT32 dims: [ -1 ] } ]', io=False),
                              "output 'Y' must have the datatype of input 'X'", None),
    "no_config_file": (None, "no_config_file/config.pbtxt", None),
}

# Everything the repository server's files live in: the repository, and beside it a good
# model that only a traversing name could reach.
BASE = pathlib.Path(tempfile.gettempdir()) / ("nereid-malformed-%d" % os.getpid())
ABSOLUTE = str(BASE / "absolute" / "x")


def nothing_escaped(srv, repo):
    """No file appeared outside the repository."""
    outside = sorted(p.relative_to(BASE).as_posix() for p in BASE.rglob("*") if repo not in p.parents and p != repo)
    assert outside == ["outside", "outside/1", "outside/config.pbtxt"], outside


def outside_not_loaded(srv, repo):
    nothing_escaped(srv, repo)
    status, body = call_rest(srv, "/v2/repository/index", b"{}")
    assert status == 200 and not [m for m in body if "outside" in m["name"]], body


def leaves_no_trace(name):
    def check(srv, repo):
        status, body = call_rest(srv, "/v2/repository/index", b"{}")
        assert status == 200 and name not in {m["name"] for m in body}, body
        status, body = call_rest(srv, "/v2/models/" + name, None)
        assert status == 404, (status, body)
    return check


def echo_config_json(**over):
    config = {"name": "echo_bytes", "backend": "identity", "max_batch_size": 0,
              "input": [{"name": "IN", "data_type": "TYPE_STRING", "dims": [-1]}],
              "output": [{"name": "OUT", "data_type": "TYPE_STRING", "dims": [-1]}]}
    config.update(over)
    return json.dumps(config)


def inline(config):
    return {"parameters": {"config": config}}


OWNED = base64.b64encode(b"owned").decode()

MODEL_CONTROL = [
    *[row("config-" + name.replace("_", "-"), load(name, b"", 400, needle), *([finding(n)] if n else []))
      for name, (_, needle, n) in BROKEN_CONFIGS.items()],
    row("config-via-grpc-unknown-field", grpc_load("unknown_field", {}, "INVALID_ARGUMENT",
                                                   "field 'no_such_field' not found")),
    row("config-via-grpc-unknown-data-type", grpc_load("unknown_data_type", {}, "INVALID_ARGUMENT",
                                                       "value 'TYPE_NOPE' was not found")),
    row("load-unknown-model", load("not_there", b"", 404, "model 'not_there' is not in the repository")),
    row("load-unknown-model-leaves-no-trace", load("ghost_model", b"", 404, "model 'ghost_model' is not in the",
                                                   after=leaves_no_trace("ghost_model"))),
    row("load-body-not-json", load("echo_bytes", "{parameters", 400, "load request: invalid JSON")),
    row("load-parameters-not-an-object", load("echo_bytes", {"parameters": [1]}, 400, "parameters")),
    row("inline-config-not-json", load("echo_bytes", inline("{nope"), 400, "parameter 'config': invalid JSON")),
    row("inline-config-not-a-string", load("echo_bytes", inline({"max_batch_size": 1}), 400,
                                           "parameter 'config' must be a string")),
    row("inline-config-a-json-array", load("echo_bytes", inline("[1, 2]"), 400, "parameter 'config'")),
    row("inline-config-unknown-field", load("echo_bytes", inline('{"no_such_field": 1}'), 400,
                                            "unrecognized field name 'no_such_field'")),
    row("inline-config-wrong-type", load("echo_bytes", inline(echo_config_json(max_batch_size="x")), 400,
                                         "max_batch_size")),
    row("inline-config-negative-max-batch-size", load("echo_bytes", inline(echo_config_json(max_batch_size=-3)), 400,
                                                      "max_batch_size must be >= 0, got -3")),
    row("inline-config-unknown-data-type",
        load("echo_bytes", inline(echo_config_json(input=[{"name": "IN", "data_type": "TYPE_NOPE", "dims": [-1]}])),
             400, "unrecognized enum value 'TYPE_NOPE'")),
    row("inline-config-dims-not-integers",
        load("echo_bytes", inline(echo_config_json(input=[{"name": "IN", "data_type": "TYPE_STRING", "dims": ["x"]}])),
             400, "dims")),
    row("inline-config-unknown-backend", load("echo_bytes", inline(echo_config_json(backend="nope")), 400,
                                              "unknown backend 'nope'")),
    row("inline-config-via-grpc-not-json", grpc_load("echo_bytes", {"config": "{nope"}, "INVALID_ARGUMENT",
                                                     "load parameter 'config' is not valid JSON")),
    row("inline-config-via-grpc-int-parameter", grpc_load("echo_bytes", {"config": 5}, "INVALID_ARGUMENT",
                                                          "load parameter 'config' must be a string")),
    row("file-parameter-traversal", load("echo_bytes", {"parameters": {"config": echo_config_json(),
                                                                       "file:../../etc/x": OWNED}},
                                         501, "parameter 'file:../../etc/x'", after=nothing_escaped)),
    row("file-parameter-absolute-path", load("echo_bytes", {"parameters": {"file:" + ABSOLUTE: OWNED}},
                                             501, "parameter 'file:%s'" % ABSOLUTE, after=nothing_escaped)),
    row("file-parameter-traversal-via-grpc", grpc_load("echo_bytes", {"config": echo_config_json(),
                                                                      "file:../../etc/x": b"owned"},
                                                       "UNIMPLEMENTED", "parameter 'file:../../etc/x'",
                                                       after=nothing_escaped)),
    row("file-parameter-absolute-via-grpc", grpc_load("echo_bytes", {"file:" + ABSOLUTE: b"owned"},
                                                      "UNIMPLEMENTED", "parameter 'file:%s'" % ABSOLUTE,
                                                      after=nothing_escaped)),
    row("model-name-traversal", load("../outside", b"", 404, "'../outside'", after=outside_not_loaded)),
    row("model-name-traversal-via-grpc", grpc_load("../outside", {}, "NOT_FOUND", "'../outside'",
                                                   after=outside_not_loaded)),
    row("model-name-absolute-via-grpc", grpc_load(str(BASE / "outside"), {}, "NOT_FOUND", str(BASE / "outside"),
                                                  after=outside_not_loaded)),
]

CASES = KSERVE_JSON + BINARY + GRPC + OPENAI + WEBSOCKET + GRPC_WEB + MODEL_CONTROL


# Servers --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def repo_server():
    """An explicit-mode server over a repository of broken configs, with `simple` and
    `echo_bytes` loaded, and one good model just outside the repository."""
    shutil.rmtree(BASE, ignore_errors=True)
    base, repo = BASE, BASE / "repo"
    models = {"simple": SIMPLE_CONFIG, "echo_bytes": ECHO_CONFIG,
              **{name: text for name, (text, _, _) in BROKEN_CONFIGS.items()}}
    for name, text in models.items():
        (repo / name / "1").mkdir(parents=True)
        if text is not None:
            (repo / name / "config.pbtxt").write_text(text)
    (base / "outside" / "1").mkdir(parents=True)
    (base / "outside" / "config.pbtxt").write_text(OUTSIDE_CONFIG)
    # Strict readiness (the default): the refused loads below must not take it away.
    srv = start_server(["--model-repository", str(repo), "--model-control-mode", "explicit",
                        "--load-model", "simple", "--load-model", "echo_bytes"])
    srv.repo = repo
    yield srv
    srv.stop()
    shutil.rmtree(base, ignore_errors=True)


# Doors ----------------------------------------------------------------------------------

def call_rest(srv, path, body, headers=None, timeout=60):
    """POST `body` (GET when None); returns (status, parsed JSON or the text)."""
    request = urllib.request.Request("http://%s%s" % (srv.http, path), data=body, headers=headers or {},
                                     method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def error_text(body):
    """The message of a KServe `{"error": "..."}` or an OpenAI `{"error": {"message"}}`."""
    assert isinstance(body, dict) and "error" in body, body
    error = body["error"]
    if isinstance(error, dict):
        assert {"message", "type", "param", "code"} <= set(error), body
        return error["message"]
    return error


_channels = {}


def channel(address):
    if address not in _channels:
        _channels[address] = grpc.insecure_channel(address)
    return _channels[address]


def call_grpc(srv, method, request):
    payload = request if isinstance(request, bytes) else request.SerializeToString()
    call = channel(srv.grpc).unary_unary(SERVICE + method)
    try:
        return "OK", call(payload, timeout=60)
    except grpc.RpcError as e:
        return e.code().name, e.details() or ""


def call_grpc_stream(srv, request):
    """A bad request then a good one on one ModelStreamInfer: the first answer must be an
    error message, the second a response (the stream survives)."""
    call = channel(srv.grpc).stream_stream(SERVICE + "ModelStreamInfer")
    good = pb_infer()
    good.id = "good"
    answers = list(call(iter([request.SerializeToString(), good.SerializeToString()]), timeout=60))
    parsed = [service_pb2.ModelStreamInferResponse.FromString(a) for a in answers]
    assert len(parsed) == 2, parsed
    bad = next(p for p in parsed if p.error_message)
    ok = next(p for p in parsed if not p.error_message)
    assert ok.infer_response.id == "good" and ok.infer_response.raw_output_contents, ok
    return "stream error_message", bad.error_message


def call_grpc_web(srv, method, body, headers):
    host, port = srv.grpc.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", SERVICE + method, body=body, headers={
            "content-type": "application/grpc-web+proto", "x-grpc-web": "1", **headers})
        response = conn.getresponse()
        payload = response.read()
        trailers = {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()
    assert response.status == 200, (response.status, payload)
    # Trailers come in the headers (trailers-only answer) or as the body's last frame.
    offset = 0
    while offset + 5 <= len(payload):
        flag, length = payload[offset], struct.unpack(">I", payload[offset + 1:offset + 5])[0]
        frame = payload[offset + 5:offset + 5 + length]
        offset += 5 + length
        if flag & 0x80:
            for line in frame.decode().split("\r\n"):
                if ":" in line:
                    key, value = line.split(":", 1)
                    trailers[key.strip().lower()] = value.strip()
    assert "grpc-status" in trailers, (trailers, payload)
    return CODES[int(trailers["grpc-status"])], urllib.parse.unquote(trailers.get("grpc-message", ""))


def call_ws(srv, frame):
    """Sends one bad frame and reads its answer, then proves the socket still answers."""
    with connect("ws://%s/v2/ws" % srv.http) as socket:
        socket.send(json.dumps(frame) if isinstance(frame, dict) else frame)
        answer = socket.recv(timeout=30)
        assert isinstance(answer, str), answer
        answer = json.loads(answer)
        socket.send(json.dumps({**WS_GOOD, "id": "after"}))
        good = json.loads(socket.recv(timeout=30))
        assert good["id"] == "after" and good["outputs"], good
    assert answer.get("final") is True and "error" in answer, answer
    return answer["code"], answer["error"]


def alive(srv, target):
    """A good request on REST and on gRPC (and, on the repository server, the BYTES echo
    and the repository index) answers as it should."""
    status, body = call_rest(srv, INFER, json.dumps(GOOD_SIMPLE).encode())
    assert status == 200, body
    assert body["outputs"][0]["data"] == [i + 1 for i in range(16)], body
    code, response = call_grpc(srv, "ModelInfer", pb_infer())
    assert code == "OK", response
    if target == "repo":
        status, body = call_rest(srv, "/v2/models/echo_bytes/infer", json.dumps(GOOD_ECHO).encode())
        assert status == 200 and body["outputs"][0]["data"] == ["a", "bc"], body
        status, body = call_rest(srv, "/v2/repository/index", b"{}")
        assert status == 200 and {"simple", "echo_bytes"} <= {m["name"] for m in body}, body


# The table ------------------------------------------------------------------------------

def test_the_table_has_sixty_rows_or_more():
    assert len(CASES) >= 60, len(CASES)


@pytest.mark.parametrize("case", CASES)
def test_malformed_input_is_refused_by_name_and_the_server_serves_on(case, request):
    srv = request.getfixturevalue("repo_server" if case.target == "repo" else "server")
    if case.door == "rest":
        path, body = case.request
        status, answer = call_rest(srv, path, body, case.headers)
        message = error_text(answer) if status != 200 else json.dumps(answer)
    elif case.door == "grpc":
        status, message = call_grpc(srv, case.method, case.request)
    elif case.door == "grpc_stream":
        status, message = call_grpc_stream(srv, case.request)
    elif case.door == "grpc_web":
        status, message = call_grpc_web(srv, case.method, case.request, case.headers)
    elif case.door == "ws":
        status, message = call_ws(srv, case.request)
    else:
        raise AssertionError(case.door)
    assert status == case.status, (status, message)
    assert case.needle in str(message), (case.needle, message)
    if case.after:
        case.after(srv, getattr(srv, "repo", None))
    alive(srv, case.target)


def test_a_refused_load_leaves_the_server_ready(tmp_path):
    """A load request the server refuses is the client's mistake: under the default strict
    readiness the server must stay ready (Triton counts only live models), or one bad
    request takes it out of a load balancer's rotation (and out of a gateway's)."""
    for name, text in (("echo_bytes", ECHO_CONFIG), ("unknown_backend", BROKEN_CONFIGS["unknown_backend"][0])):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "config.pbtxt").write_text(text)
    srv = start_server(["--model-repository", str(tmp_path), "--model-control-mode", "explicit",
                        "--load-model", "echo_bytes"])
    try:
        assert call_rest(srv, "/v2/health/ready", None)[0] == 200
        status, body = call_rest(srv, "/v2/repository/models/unknown_backend/load", b"")
        assert status == 400 and "unknown backend 'nope'" in error_text(body), body
        time.sleep(1.5)  # a gateway's health checks (every 200 ms in these tests) see the engine
        status, body = call_rest(srv, "/v2/health/ready", None)
        assert status == 200, (status, body)
        # Model control still reaches the engine (through a gateway: it was not ejected).
        status, body = call_rest(srv, "/v2/repository/models/echo_bytes/load", b"")
        assert status == 200, body
    finally:
        srv.stop()


def test_unloading_a_model_the_server_never_knew_is_404_and_the_server_serves_on(tmp_path):
    """Its own server: today this request deadlocks the model table, after which nothing
    that reads it (inference, readiness, metadata, model control, SIGTERM) ever answers."""
    (tmp_path / "echo_bytes" / "1").mkdir(parents=True)
    (tmp_path / "echo_bytes" / "config.pbtxt").write_text(ECHO_CONFIG)
    srv = start_server(["--model-repository", str(tmp_path), "--model-control-mode", "explicit",
                        "--load-model", "echo_bytes"])
    try:
        status, body = call_rest(srv, "/v2/repository/models/never_loaded/unload", b"", timeout=10)
        assert status == 404 and "'never_loaded'" in error_text(body), (status, body)
        status, body = call_rest(srv, "/v2/models/echo_bytes/infer", json.dumps(GOOD_ECHO).encode(), timeout=10)
        assert status == 200 and body["outputs"][0]["data"] == ["a", "bc"], body
        assert call_rest(srv, "/v2/health/ready", None, timeout=10)[0] == 200
    finally:
        srv.stop(timeout=5)
