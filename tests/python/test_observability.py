"""Observability of the real binary, read with stock clients and a collector of our own.

Traces: with `--trace-config` (or the OTEL_* environment) every sampled request becomes one
OpenTelemetry trace per process, exported over OTLP/HTTP (protobuf) or OTLP/gRPC to a
receiver this file runs; the spans have Triton's names and timings (`InferRequest`, `queue`,
`compute`, `compute_input`/`_infer`/`_output`, decoupled response events), continue a W3C
`traceparent`, and a gateway's `forward` span parents the engine's root. Sampling follows
the level, rate, count and the traceparent's sampled flag; Triton's trace and log settings
APIs read and change all of that at run time over REST and gRPC (tritonclient's own calls).
Request ids are echoed or generated on both doors, `--access-log` writes one line per
request, /metrics holds the duration histograms (with `--metrics-config` buckets) and
process metrics, and a bad `--trace-config` stops the server before it is announced.
"""

import collections
import concurrent.futures
import gzip
import http.client
import http.server
import json
import queue
import re
import secrets
import subprocess
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from conftest import BIN, THROUGH_GATEWAY, Server, start_server

pytestmark = pytest.mark.timeout(180)

# The role of the process a test talks to (its door), as its root spans name it.
DOOR_ROLE = "gateway" if THROUGH_GATEWAY else "engine"
SERVER_KIND = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
CLIENT_KIND = trace_pb2.Span.SpanKind.SPAN_KIND_CLIENT
STATUS_ERROR = trace_pb2.Status.StatusCode.STATUS_CODE_ERROR
ENGINE_CHILDREN = {"compute_input", "compute_infer", "compute_output"}
SPAN_WAIT = 10.0


# The receiver ---------------------------------------------------------------------------

Got = collections.namedtuple("Got", "transport resource span")


class Receiver:
    """An OTLP collector in this process: POST /v1/traces (protobuf) on an HTTP port and
    `TraceService/Export` on a gRPC port. Every span received is kept with its resource's
    attributes and the transport it came over."""

    GRPC_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"

    def __init__(self):
        self._lock = threading.Lock()
        self._got = []
        self.posts = []  # (path, content type) of every HTTP request
        self.resource_spans_per_export = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self._body()
                with receiver._lock:
                    receiver.posts.append((self.path, self.headers.get("Content-Type", "")))
                if self.path != "/v1/traces":
                    return self._answer(404, b"")
                try:
                    export = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                except Exception:  # noqa: BLE001 - a body that is not protobuf is the server's bug
                    return self._answer(400, b"")
                receiver._keep("http", export)
                self._answer(200, trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

            def _body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        chunk = self.rfile.read(size)
                        self.rfile.readline()
                        if size == 0:
                            break
                        chunks.append(chunk)
                    body = b"".join(chunks)
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding", "").lower() == "gzip":
                    body = gzip.decompress(body)
                return body

            def _answer(self, status, body):
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        self.http_url = "http://127.0.0.1:%d/v1/traces" % self._http.server_address[1]
        self.http_base = "http://127.0.0.1:%d" % self._http.server_address[1]

        def export(request, context):
            receiver._keep("grpc", request)
            return trace_service_pb2.ExportTraceServiceResponse()

        self._grpc = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        self._grpc.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(self.GRPC_SERVICE, {
            "Export": grpc.unary_unary_rpc_method_handler(
                export,
                request_deserializer=trace_service_pb2.ExportTraceServiceRequest.FromString,
                response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString),
        }),))
        port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()
        self.grpc_url = "http://127.0.0.1:%d" % port

    def _keep(self, transport, export):
        with self._lock:
            self.resource_spans_per_export.append(len(export.resource_spans))
            for resource_spans in export.resource_spans:
                resource = attributes(resource_spans.resource)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self._got.append(Got(transport, resource, span))

    def got(self):
        """Every span received so far, as `Got(transport, resource, span)`."""
        with self._lock:
            return list(self._got)

    def close(self):
        self._http.shutdown()
        self._http.server_close()
        self._grpc.stop(None)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


# Spans ----------------------------------------------------------------------------------

def value(any_value):
    """An OTLP AnyValue as a Python value."""
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind)


def attributes(holder):
    """The attributes of a span, event or resource as a dict."""
    return {kv.key: value(kv.value) for kv in holder.attributes}


def attr(span, key):
    return attributes(span).get(key)


def summary(got):
    return ["%s %s role=%s rid=%s" % (g.transport, g.span.name, attr(g.span, "nereid.role"),
                                      attr(g.span, "nereid.request_id")) for g in got]


def wait_for_spans(receiver, predicate, timeout=SPAN_WAIT):
    """Polls the receiver until `predicate(got)` is truthy and returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        got = receiver.got()
        found = predicate(got)
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail("spans did not arrive within %ss; received: %s" % (timeout, summary(got)))
        time.sleep(0.05)


def roots(got, request_id=None, role=None, model=None):
    """The `InferRequest` spans, optionally of one request id, process role and model."""
    return [g for g in got if g.span.name == "InferRequest"
            and (request_id is None or attr(g.span, "nereid.request_id") == request_id)
            and (role is None or attr(g.span, "nereid.role") == role)
            and (model is None or attr(g.span, "nereid.model") == model)]


def one_root(got, **match):
    """The one root matching, or None; more than one per request and process is wrong."""
    found = roots(got, **match)
    assert len(found) <= 1, ("one trace per request per process", summary(found))
    return found[0] if found else None


def subtree(got, root):
    """`root` and its descendants in the same process (stops at another process's root),
    found by parent span id alone, so a child in another trace would show."""
    spans = [g.span for g in got]
    tree, frontier = [root], [root.span_id]
    while frontier:
        parent = frontier.pop()
        for span in spans:
            if span.parent_span_id == parent and span.name != "InferRequest":
                tree.append(span)
                frontier.append(span.span_id)
    return tree


def named(spans, name):
    return [s for s in spans if s.name == name]


def check_nesting(spans):
    """One trace id; start <= end; every child within its parent's time range."""
    ids = {s.span_id: s for s in spans}
    assert len({s.trace_id for s in spans}) == 1, [s.name for s in spans]
    for span in spans:
        assert len(span.span_id) == 8 and span.span_id != bytes(8), span.name
        assert 0 < span.start_time_unix_nano <= span.end_time_unix_nano, span
        parent = ids.get(span.parent_span_id)
        if parent is not None and span is not parent:
            assert parent.start_time_unix_nano <= span.start_time_unix_nano, (parent.name, span.name)
            assert span.end_time_unix_nano <= parent.end_time_unix_nano, (parent.name, span.name)


def engine_tree_complete(got, root, decoupled=False):
    names = {s.name for s in subtree(got, root)}
    return {"queue", "compute"} <= names and (decoupled or ENGINE_CHILDREN <= names)


def traced(request_id=None, model=None, decoupled=False):
    """A predicate for wait_for_spans: the request's root at the door and at the engine
    (one span when the door is the engine), the engine's children all in; returns
    (door, engine) as `Got`s."""
    def predicate(got):
        door = one_root(got, request_id=request_id, role=DOOR_ROLE, model=model)
        engine = one_root(got, request_id=request_id, role="engine", model=model)
        if door and engine and engine_tree_complete(got, engine.span, decoupled):
            return door, engine
        return None
    return predicate


def check_engine_tree(got, root, model, decoupled=False):
    """An engine's root and its children, as the contract names and nests them."""
    assert root.name == "InferRequest" and root.kind == SERVER_KIND
    assert attr(root, "nereid.role") == "engine"
    assert attr(root, "nereid.model") == model
    assert attr(root, "nereid.model_version") == 1
    assert root.status.code != STATUS_ERROR, root.status
    spans = subtree(got, root)
    check_nesting(spans)
    (queue,) = named(spans, "queue")
    (compute,) = named(spans, "compute")
    assert queue.parent_span_id == root.span_id and compute.parent_span_id == root.span_id
    batch = attr(compute, "nereid.batch_size")
    assert isinstance(batch, int), batch
    under_compute = {s.name for s in spans if s.parent_span_id == compute.span_id}
    if decoupled:
        events = {e.name: e.time_unix_nano for e in root.events}
        assert {"first_response", "final_response"} <= set(events), list(events)
        assert root.start_time_unix_nano <= events["first_response"] <= events["final_response"]
        assert events["final_response"] <= root.end_time_unix_nano
    else:
        assert batch == 1, batch  # one request of one row, alone in its batch
        assert under_compute == ENGINE_CHILDREN, under_compute
        for name in ENGINE_CHILDREN:
            assert len(named(spans, name)) == 1, name


def traceparent(sampled=True):
    """A fresh W3C traceparent; returns (header, trace id bytes, parent span id bytes)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    header = "00-%s-%s-%s" % (trace_id, span_id, "01" if sampled else "00")
    return header, bytes.fromhex(trace_id), bytes.fromhex(span_id)


def rid(prefix):
    return "%s-%s" % (prefix, secrets.token_hex(6))


def tracing(*extra, url=None):
    """--trace-config flags: TIMESTAMPS at rate 1 with a short batch delay (plus `extra`)."""
    flags = ["level=TIMESTAMPS", "rate=1", "opentelemetry,bsp_schedule_delay=100", *extra]
    if url:
        flags.append("opentelemetry,url=" + url)
    return [arg for flag in flags for arg in ("--trace-config", flag)]


# Requests -------------------------------------------------------------------------------

def simple_inputs(module, columns=16):
    a = np.arange(columns, dtype=np.int32).reshape(1, columns)
    b = np.ones((1, 16), dtype=np.int32)
    inputs = [module.InferInput("INPUT0", [1, columns], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def identity_inputs(module):
    inputs = [module.InferInput("INPUT0", [1, 3], "FP32")]
    inputs[0].set_data_from_numpy(np.array([[1.0, 2.0, 3.0]], dtype=np.float32))
    return inputs


def headers(request_id=None, parent=None):
    h = {}
    if request_id:
        h["x-request-id"] = request_id
    if parent:
        h["traceparent"] = parent
    return h


def http_infer(srv, model, request_id=None, parent=None):
    client = httpclient.InferenceServerClient(srv.http)
    inputs = simple_inputs(httpclient) if model == "simple" else identity_inputs(httpclient)
    return client.infer(model, inputs, headers=headers(request_id, parent))


def grpc_infer(srv, model, request_id=None, parent=None):
    client = grpcclient.InferenceServerClient(srv.grpc)
    inputs = simple_inputs(grpcclient) if model == "simple" else identity_inputs(grpcclient)
    return client.infer(model, inputs, headers=headers(request_id, parent))


def repeat_stream(srv, request_id, values=(5, 6, 7), delays=(0, 20_000, 20_000)):
    """One repeat_int32 request on a gRPC stream; returns its responses."""
    client = grpcclient.InferenceServerClient(srv.grpc)
    inputs = [grpcclient.InferInput("IN", [len(values)], "INT32"),
              grpcclient.InferInput("DELAY", [len(delays)], "UINT32")]
    inputs[0].set_data_from_numpy(np.array(values, dtype=np.int32))
    inputs[1].set_data_from_numpy(np.array(delays, dtype=np.uint32))
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=headers(request_id))
    try:
        client.async_stream_infer("repeat_int32", inputs)
        results = [answers.get(timeout=30) for _ in values]
    finally:
        client.stop_stream()
    assert all(error is None for _, error in results), results
    return [result for result, _ in results]


def ready(client, model):
    """Whether `model` is ready at the client's server (False while it cannot say)."""
    try:
        return client.is_model_ready(model)
    except InferenceServerException:
        return False


# Log lines ------------------------------------------------------------------------------

FIELD = re.compile(r'(\w+)=("[^"]*"|\S*)')
DEBUG_LINE = re.compile(r"\bDEBUG\b")


def fields(line):
    return {k: v.strip('"') for k, v in FIELD.findall(line)}


def access_lines(srv, request_id):
    """The access log lines of one request."""
    return [line for line in list(srv.log)
            if re.search(r"\baccess\b", line) and fields(line).get("request_id") == request_id]


def wait_for_access_line(srv, request_id, timeout=SPAN_WAIT):
    """The one access line of `request_id` (waits for the log to show it)."""
    deadline = time.monotonic() + timeout
    while not access_lines(srv, request_id):
        if time.monotonic() > deadline:
            pytest.fail("no access line for %s in:\n%s" % (request_id, "".join(srv.log[-50:])))
        time.sleep(0.05)
    time.sleep(0.2)  # a second line for the same request would show by now
    lines = access_lines(srv, request_id)
    assert len(lines) == 1, lines
    return lines[0]


# Tests: spans ---------------------------------------------------------------------------

def test_http_exporter_continues_a_traceparent_with_named_nested_spans(receiver):
    # The flag's URL wins over an environment endpoint that leads nowhere.
    srv = start_server(["--demo-models", "builtin",
                        *tracing("opentelemetry,resource=deployment.environment=e2e", url=receiver.http_url)],
                       env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"})
    try:
        parent, trace_id, parent_span = traceparent()
        first = rid("tp")
        result = http_infer(srv, "simple", first, parent)
        assert result.as_numpy("OUTPUT0")[0][1] == 2

        door, engine = wait_for_spans(receiver, traced(first))
        root = door.span
        assert root.kind == SERVER_KIND
        assert root.trace_id == trace_id and root.parent_span_id == parent_span
        assert attr(root, "nereid.model") == "simple" and attr(root, "nereid.model_version") == 1
        assert attr(root, "nereid.request_id") == first and attr(root, "nereid.role") == DOOR_ROLE
        assert door.resource.get("service.name") == "nereid", door.resource
        assert door.resource.get("deployment.environment") == "e2e", door.resource
        # Behind a gateway the engine's root continues the same trace (its parent is the
        # gateway's forward span: test_a_gateway_forward_span_parents_the_engine_root).
        assert engine.span.trace_id == trace_id
        check_engine_tree(receiver.got(), engine.span, "simple")
        check_nesting(subtree(receiver.got(), root))

        # Without a traceparent: a fresh trace, no parent, the same spans.
        fresh = rid("fresh")
        grpc_infer(srv, "simple", fresh)
        door2, engine2 = wait_for_spans(receiver, traced(fresh))
        assert len(door2.span.trace_id) == 16 and door2.span.trace_id not in (trace_id, bytes(16))
        assert door2.span.parent_span_id == b""
        check_engine_tree(receiver.got(), engine2.span, "simple")

        # A failed request (a stream its client leaves after the first event: cancelled)
        # has a root that says ERROR with a message.
        failed = rid("failed")
        host, port = srv.http.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("POST", "/v2/models/repeat_int32/generate_stream",
                     json.dumps({"IN": [1, 2], "DELAY": [0, 3_000_000]}),
                     {"Content-Type": "application/json", "X-Request-ID": failed})
        response = conn.getresponse()
        assert response.status == 200 and b"data:" in response.readline()
        conn.close()
        bad = wait_for_spans(receiver, lambda got: one_root(got, request_id=failed, role=DOOR_ROLE))
        assert bad.span.status.code == STATUS_ERROR and bad.span.status.message, bad.span.status

        # OTLP/HTTP with protobuf bodies, one ResourceSpans per export.
        assert {g.transport for g in receiver.got()} == {"http"}
        posts = [(path, ctype.split(";")[0].strip()) for path, ctype in receiver.posts]
        assert posts and set(posts) == {("/v1/traces", "application/x-protobuf")}, receiver.posts
        assert set(receiver.resource_spans_per_export) == {1}, receiver.resource_spans_per_export
    finally:
        srv.stop()


def test_grpc_exporter_from_the_environment_with_grpc_traceparent_and_decoupled_events(receiver):
    srv = start_server(["--demo-models", "builtin", *tracing()], env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_SERVICE_NAME": "nereid-e2e",
    })
    try:
        parent, trace_id, parent_span = traceparent()
        unary = rid("unary")
        grpc_infer(srv, "identity_fp32", unary, parent)
        door, engine = wait_for_spans(receiver, traced(unary))
        assert door.span.trace_id == trace_id and door.span.parent_span_id == parent_span
        assert attr(door.span, "nereid.model") == "identity_fp32"
        check_engine_tree(receiver.got(), engine.span, "identity_fp32")

        # A decoupled model: its root marks the first and the final response.
        responses = repeat_stream(srv, rid("stream"))
        assert [r.as_numpy("OUT")[0] for r in responses] == [5, 6, 7]
        door, engine = wait_for_spans(receiver, traced(model="repeat_int32", decoupled=True))
        check_engine_tree(receiver.got(), engine.span, "repeat_int32", decoupled=True)
        events = {e.name: e.time_unix_nano for e in engine.span.events}
        # Two 20 ms delays lie between the first response and the final one.
        assert events["final_response"] - events["first_response"] >= 15_000_000, events
        assert door.span.parent_span_id == b"" and door.span.trace_id not in (trace_id, bytes(16))

        got = receiver.got()
        assert {g.transport for g in got} == {"grpc"} and not receiver.posts
        assert {g.resource.get("service.name") for g in got} == {"nereid-e2e"}
    finally:
        srv.stop()


def test_a_gateway_forward_span_parents_the_engine_root(receiver):
    engine = Server(["--demo-models", "builtin",
                     *tracing("opentelemetry,resource=test.process=engine", url=receiver.http_url)])
    try:
        gateway = Server(["--backend", engine.grpc, "--health-interval-ms", "200", "--discovery-interval-ms", "500",
                          *tracing("opentelemetry,resource=test.process=gateway", url=receiver.http_url)],
                         command="gateway")
    except Exception:
        engine.stop()
        raise
    try:
        client = grpcclient.InferenceServerClient(gateway.grpc)
        deadline = time.monotonic() + 30
        while not ready(client, "simple"):
            assert time.monotonic() < deadline, "the gateway never routed simple"
            time.sleep(0.1)

        parent, trace_id, parent_span = traceparent()
        request_id = rid("fleet")
        grpc_infer(gateway, "simple", request_id, parent)

        def complete(got):
            front = one_root(got, request_id=request_id, role="gateway")
            back = one_root(got, request_id=request_id, role="engine")
            forward = front and [s for s in subtree(got, front.span) if s.name == "forward"]
            return forward and back and engine_tree_complete(got, back.span) and (front, back)

        front, back = wait_for_spans(receiver, complete)
        assert front.resource.get("test.process") == "gateway" and back.resource.get("test.process") == "engine"
        assert front.span.trace_id == trace_id and front.span.parent_span_id == parent_span
        assert front.span.kind == SERVER_KIND and attr(front.span, "nereid.model") == "simple"
        forwards = [s for s in subtree(receiver.got(), front.span) if s.name == "forward"]
        assert len(forwards) == 1, forwards  # one attempt
        (forward,) = forwards
        assert forward.parent_span_id == front.span.span_id and forward.kind == CLIENT_KIND
        assert attr(forward, "nereid.backend") == engine.grpc
        check_nesting(subtree(receiver.got(), front.span))

        # The engine continues the gateway's trace under the forward span, with the same id.
        assert back.span.trace_id == trace_id and back.span.parent_span_id == forward.span_id
        assert attr(back.span, "nereid.request_id") == request_id
        check_engine_tree(receiver.got(), back.span, "simple")
    finally:
        gateway.stop()
        engine.stop()


def test_sampling_follows_the_rate_and_the_traceparent_sampled_flag(receiver):
    flags = ["--trace-config", "level=TIMESTAMPS", "--trace-config", "rate=3",
             "--trace-config", "opentelemetry,bsp_schedule_delay=100", "--trace-config",
             "opentelemetry,url=" + receiver.http_url]
    srv = start_server(["--demo-models", "builtin", *flags])
    try:
        plain = [rid("plain%d" % i) for i in range(6)]
        for request_id in plain:
            http_infer(srv, "identity_fp32", request_id)
        # A sampled traceparent is traced whatever the rate.
        sampled = [rid("sampled%d" % i) for i in range(2)]
        for request_id in sampled:
            http_infer(srv, "identity_fp32", request_id, traceparent()[0])
        wait_for_spans(receiver, lambda got: all(one_root(got, request_id=r, role=DOOR_ROLE) for r in sampled))
        # Spans leave in the order they end: the plain requests' are all in by now.
        selected = [r for r in plain if one_root(receiver.got(), request_id=r, role=DOOR_ROLE)]
        assert len(selected) == 2, selected  # one in three

        # At a rate that selects nothing more, an unsampled traceparent is not traced.
        httpclient.InferenceServerClient(srv.http).update_trace_settings(settings={"trace_rate": "1000000"})
        http_infer(srv, "identity_fp32", rid("warm"))
        unsampled_header, unsampled_trace, _ = traceparent(sampled=False)
        unsampled = rid("unsampled")
        http_infer(srv, "identity_fp32", unsampled, unsampled_header)
        marker = rid("marker")
        http_infer(srv, "identity_fp32", marker, traceparent()[0])
        wait_for_spans(receiver, lambda got: one_root(got, request_id=marker, role=DOOR_ROLE))
        got = receiver.got()
        assert one_root(got, request_id=unsampled, role=DOOR_ROLE) is None
        assert not [g for g in got if g.span.trace_id == unsampled_trace and attr(g.span, "nereid.role") == DOOR_ROLE]
    finally:
        srv.stop()


# Tests: settings APIs -------------------------------------------------------------------

TRACE_KEYS = ("trace_level", "trace_rate", "trace_count", "log_frequency", "trace_mode", "trace_file")


def rest_trace(settings):
    return {k: settings.get(k) for k in TRACE_KEYS}


def grpc_trace(response):
    return {k: list(v.value) for k, v in response.settings.items()}


def test_trace_settings_over_rest_with_a_per_model_override(receiver):
    srv = start_server(["--demo-models", "builtin", "--trace-config", "opentelemetry,url=" + receiver.http_url,
                        "--trace-config", "opentelemetry,bsp_schedule_delay=100"])
    try:
        client = httpclient.InferenceServerClient(srv.http)
        defaults = {"trace_level": ["OFF"], "trace_rate": "1000", "trace_count": "-1", "log_frequency": "0",
                    "trace_mode": "opentelemetry", "trace_file": ""}
        assert rest_trace(client.get_trace_settings()) == defaults
        assert rest_trace(client.get_trace_settings(model_name="simple")) == defaults

        # An update changes only what it names and answers with every setting.
        on = client.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"], "trace_rate": "1"})
        assert rest_trace(on) == {**defaults, "trace_level": ["TIMESTAMPS"], "trace_rate": "1"}
        assert rest_trace(client.get_trace_settings(model_name="simple")) == rest_trace(on)

        # A model's own level silences that model only; the global one is unchanged.
        off = client.update_trace_settings(model_name="simple", settings={"trace_level": ["OFF"]})
        assert rest_trace(off) == {**rest_trace(on), "trace_level": ["OFF"]}
        assert rest_trace(client.get_trace_settings()) == rest_trace(on)
        silent, heard = rid("silent"), rid("heard")
        http_infer(srv, "simple", silent)
        http_infer(srv, "identity_fp32", heard)
        wait_for_spans(receiver, lambda got: one_root(got, request_id=heard, role=DOOR_ROLE))
        assert one_root(receiver.got(), request_id=silent, role=DOOR_ROLE) is None

        # null clears the model's level: it follows the global one again.
        cleared = client.update_trace_settings(model_name="simple", settings={"trace_level": None})
        assert rest_trace(cleared) == rest_trace(on)
        back = rid("back")
        http_infer(srv, "simple", back)
        wait_for_spans(receiver, lambda got: one_root(got, request_id=back, role=DOOR_ROLE, model="simple"))

        # Refusals name the setting; nothing changes.
        for settings, named in (({"trace_rate": "x"}, "trace_rate"), ({"trace_level": ["LOUD"]}, "trace_level"),
                                ({"trace_colour": "blue"}, "trace_colour"), ({"trace_mode": "triton"}, "trace_mode"),
                                ({"log_frequency": "5"}, "log_frequency")):
            with pytest.raises(InferenceServerException) as refused:
                client.update_trace_settings(settings=settings)
            assert refused.value.status() == "400" and named in refused.value.message(), (settings, refused.value)
        assert rest_trace(client.get_trace_settings()) == rest_trace(on)
        for call in (lambda: client.get_trace_settings(model_name="no_such_model"),
                     lambda: client.update_trace_settings(model_name="no_such_model", settings={"trace_rate": "2"})):
            with pytest.raises(InferenceServerException) as unknown:
                call()
            assert unknown.value.status() == "404", unknown.value
    finally:
        srv.stop()


def test_trace_settings_over_grpc_with_a_count(receiver):
    srv = start_server(["--demo-models", "builtin", "--trace-config", "opentelemetry,url=" + receiver.http_url,
                        "--trace-config", "opentelemetry,bsp_schedule_delay=100"])
    try:
        client = grpcclient.InferenceServerClient(srv.grpc)
        before = grpc_trace(client.get_trace_settings())
        assert before["trace_level"] == ["OFF"] and before["trace_rate"] == ["1000"], before
        assert before["trace_count"] == ["-1"] and before["trace_mode"] == ["opentelemetry"], before

        now = grpc_trace(client.update_trace_settings(
            settings={"trace_level": ["TIMESTAMPS"], "trace_rate": "1", "trace_count": "2"}))
        assert (now["trace_level"], now["trace_rate"], now["trace_count"]) == (["TIMESTAMPS"], ["1"], ["2"]), now
        assert now["log_frequency"] == ["0"], now
        # One set of settings behind both doors.
        assert httpclient.InferenceServerClient(srv.http).get_trace_settings()["trace_count"] == "2"

        # Two traces left: the third request is not traced, and the count reads 0.
        counted = [rid("count%d" % i) for i in range(3)]
        for request_id in counted:
            grpc_infer(srv, "simple", request_id)
        wait_for_spans(receiver, lambda got: all(one_root(got, request_id=r, role=DOOR_ROLE) for r in counted[:2]))
        assert grpc_trace(client.get_trace_settings())["trace_count"] == ["0"]
        assert grpc_trace(client.update_trace_settings(settings={"trace_count": "-1"}))["trace_count"] == ["-1"]
        marker = rid("marker")
        grpc_infer(srv, "simple", marker)
        wait_for_spans(receiver, lambda got: one_root(got, request_id=marker, role=DOOR_ROLE))
        assert one_root(receiver.got(), request_id=counted[2], role=DOOR_ROLE) is None

        # A per-model OFF, then an empty value list: back to the global level.
        model = grpc_trace(client.update_trace_settings(model_name="identity_fp32", settings={"trace_level": ["OFF"]}))
        assert model["trace_level"] == ["OFF"] and model["trace_rate"] == ["1"], model
        assert grpc_trace(client.get_trace_settings())["trace_level"] == ["TIMESTAMPS"]
        model = grpc_trace(client.update_trace_settings(model_name="identity_fp32", settings={"trace_level": None}))
        assert model["trace_level"] == ["TIMESTAMPS"], model

        for settings, named in (({"trace_rate": "x"}, "trace_rate"), ({"trace_level": ["LOUD"]}, "trace_level"),
                                ({"trace_colour": "blue"}, "trace_colour")):
            with pytest.raises(InferenceServerException) as refused:
                client.update_trace_settings(settings=settings)
            assert refused.value.status() == "StatusCode.INVALID_ARGUMENT", refused.value
            assert named in refused.value.message(), refused.value
        with pytest.raises(InferenceServerException) as unknown:
            client.get_trace_settings(model_name="no_such_model")
        assert unknown.value.status() == "StatusCode.NOT_FOUND", unknown.value
    finally:
        srv.stop()


LOG_KEYS = ("log_file", "log_info", "log_warning", "log_error", "log_verbose_level", "log_format")


def log_settings(settings):
    return {k: settings.get(k) for k in LOG_KEYS}


def test_log_settings_over_both_doors_switch_debug_lines_on_and_off():
    srv = start_server(["--demo-models", "builtin", "--access-log"])
    try:
        rest = httpclient.InferenceServerClient(srv.http)
        grpc_client = grpcclient.InferenceServerClient(srv.grpc)
        settings = rest.get_log_settings()
        expected = {"log_file": "", "log_info": True, "log_warning": True, "log_error": True,
                    "log_verbose_level": 0, "log_format": settings.get("log_format")}
        assert log_settings(settings) == expected, settings
        assert all(type(settings[k]) is bool for k in ("log_info", "log_warning", "log_error")), settings
        assert type(settings["log_verbose_level"]) is int and isinstance(settings["log_format"], str)
        assert not [line for line in srv.log if DEBUG_LINE.search(line)]

        # Level 1 over REST: debug lines appear, and the server keeps serving.
        assert log_settings(rest.update_log_settings({"log_verbose_level": 1})) == {**expected, "log_verbose_level": 1}
        mark = len(srv.log)
        deadline = time.monotonic() + SPAN_WAIT
        while not [line for line in srv.log[mark:] if DEBUG_LINE.search(line)]:
            assert time.monotonic() < deadline, "no debug line at level 1:\n" + "".join(srv.log[mark:])
            requests.get("http://%s/v2/models/no_such_model" % srv.http, timeout=10)
            time.sleep(0.1)
        assert http_infer(srv, "simple").as_numpy("OUTPUT0") is not None

        # The same setting read and changed over gRPC; level 0 stops them.
        now = grpc_client.get_log_settings().settings
        assert now["log_verbose_level"].uint32_param == 1 and now["log_info"].bool_param is True
        now = grpc_client.update_log_settings({"log_verbose_level": 0}).settings
        assert now["log_verbose_level"].uint32_param == 0 and now["log_file"].string_param == ""
        assert now["log_error"].bool_param is True and now["log_format"].string_param == expected["log_format"]
        # Every line written before the switch is in before this request's access line.
        quiet = rid("quiet")
        http_infer(srv, "simple", quiet)
        start = srv.log.index(wait_for_access_line(srv, quiet))
        requests.get("http://%s/v2/models/no_such_model" % srv.http, timeout=10)
        grpc_infer(srv, "simple")
        last = rid("last")
        http_infer(srv, "simple", last)
        end = srv.log.index(wait_for_access_line(srv, last))
        assert not [line for line in srv.log[start:end] if DEBUG_LINE.search(line)], srv.log[start:end]

        # Refusals name the setting, on both doors; the settings stay as they were.
        for bad, named in (({"log_verbose_level": "loud"}, "log_verbose_level"), ({"log_info": "yes"}, "log_info"),
                           ({"log_file": "/tmp/nereid.log"}, "log_file"), ({"log_format": "xml"}, "log_format")):
            with pytest.raises(InferenceServerException) as refused:
                rest.update_log_settings(bad)
            assert refused.value.status() == "400" and named in refused.value.message(), (bad, refused.value)
        for bad, named in (({"log_file": "/tmp/nereid.log"}, "log_file"), ({"log_format": "xml"}, "log_format")):
            with pytest.raises(InferenceServerException) as refused:
                grpc_client.update_log_settings(bad)
            assert refused.value.status() == "StatusCode.INVALID_ARGUMENT", refused.value
            assert named in refused.value.message(), refused.value
        wrong_type = service_pb2.LogSettingsRequest()
        wrong_type.settings["log_info"].string_param = "yes"
        with grpc.insecure_channel(srv.grpc) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                service_pb2_grpc.GRPCInferenceServiceStub(channel).LogSettings(wrong_type, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "log_info" in refused.value.details()
        assert log_settings(rest.get_log_settings()) == expected
        # The format it runs with is accepted as it is.
        assert log_settings(rest.update_log_settings({"log_format": expected["log_format"]})) == expected
    finally:
        srv.stop()


# Tests: request ids and the access log --------------------------------------------------

def test_request_ids_are_echoed_or_generated_on_both_doors(server):
    base = "http://%s" % server.http
    body = {"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": list(range(16))},
                       {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16}]}
    for method, path, payload, status in (("GET", "/v2/health/ready", None, 200),
                                          ("POST", "/v2/models/simple/infer", body, 200),
                                          ("GET", "/v2/models/no_such_model", None, 404)):
        request_id = rid("http")
        r = requests.request(method, base + path, json=payload, headers={"X-Request-ID": request_id}, timeout=30)
        assert r.status_code == status, r.text
        assert r.headers.get("x-request-id") == request_id, (path, r.headers)
    generated = [requests.get(base + "/v2/health/live", timeout=10).headers.get("x-request-id") for _ in range(2)]
    assert all(generated) and generated[0] != generated[1], generated

    infer = service_pb2.ModelInferRequest(model_name="simple")
    for name in ("INPUT0", "INPUT1"):
        infer.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        infer.raw_input_contents.append(np.arange(16, dtype=np.int32).tobytes())
    with grpc.insecure_channel(server.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for method, message in ((stub.ServerLive, service_pb2.ServerLiveRequest()), (stub.ModelInfer, infer)):
            request_id = rid("grpc")
            _, call = method.with_call(message, metadata=[("x-request-id", request_id)], timeout=30)
            assert dict(call.initial_metadata()).get("x-request-id") == request_id, call.initial_metadata()
        generated = []
        for _ in range(2):
            _, call = stub.ServerLive.with_call(service_pb2.ServerLiveRequest(), timeout=30)
            generated.append(dict(call.initial_metadata()).get("x-request-id"))
        assert all(generated) and generated[0] != generated[1], generated


def test_access_log_writes_one_line_per_request_with_its_trace_id(receiver):
    # The exporter's full URL from the environment.
    srv = start_server(["--demo-models", "builtin", "--access-log", "--trace-config", "level=TIMESTAMPS",
                        "--trace-config", "rate=1", "--trace-config", "count=1",
                        "--trace-config", "opentelemetry,bsp_schedule_delay=100"],
                       env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.http_url})
    try:
        # A request with a traceparent: its line holds that trace's id, the one exported.
        first = rid("first")
        parent, trace_id, _ = traceparent()
        http_infer(srv, "simple", first, parent)
        line = fields(wait_for_access_line(srv, first))
        assert (line.get("door"), line.get("status"), line.get("model")) == ("http", "200", "simple"), line
        assert float(line["duration_ms"]) >= 0 and int(line["bytes_in"]) > 0 and int(line["bytes_out"]) > 0, line
        door = wait_for_spans(receiver, lambda got: one_root(got, request_id=first, role=DOOR_ROLE))
        assert line.get("trace_id") == trace_id.hex() == door.span.trace_id.hex(), line

        # The count is spent (a sampled traceparent took none of it): the next request is
        # traced, the one after is not; a line without a traceparent has no trace id.
        traced, untraced = rid("traced"), rid("second")
        grpc_infer(srv, "simple", traced)
        grpc_infer(srv, "simple", untraced)
        line = fields(wait_for_access_line(srv, untraced))
        assert (line.get("door"), line.get("status"), line.get("model")) == ("grpc", "OK", "simple"), line
        assert line.get("trace_id", "") == "", line
        assert float(line["duration_ms"]) >= 0 and line["bytes_in"] == "-" and line["bytes_out"] == "-", line
        wait_for_spans(receiver, lambda got: one_root(got, request_id=traced, role=DOOR_ROLE))
        assert one_root(receiver.got(), request_id=untraced, role=DOOR_ROLE) is None

        third = rid("third")
        with pytest.raises(InferenceServerException):
            httpclient.InferenceServerClient(srv.http).infer(
                "simple", simple_inputs(httpclient, columns=8), headers=headers(third))
        line = fields(wait_for_access_line(srv, third))
        assert (line.get("door"), line.get("status"), line.get("model")) == ("http", "400", "simple"), line
    finally:
        srv.stop()


def test_no_access_log_without_the_flag(server):
    request_id = rid("unlogged")
    http_infer(server, "simple", request_id)
    grpc_infer(server, "simple", request_id)
    time.sleep(0.5)
    assert not [line for line in list(server.log) if request_id in line or re.search(r"\baccess\b.*door=", line)]


# Tests: metrics -------------------------------------------------------------------------

def samples(text, name):
    """[(labels, value)] of one metric in Prometheus text."""
    pattern = re.compile(r"^%s(?:\{([^}]*)\})? (\S+)$" % re.escape(name), re.M)
    return [(dict(re.findall(r'(\w+)="([^"]*)"', labels or "")), float(v)) for labels, v in pattern.findall(text)]


def scrape(srv):
    with urllib.request.urlopen("http://%s/metrics" % srv.metrics, timeout=10) as r:
        return r.read().decode()


def histogram(text, name, model):
    """({le: cumulative count}, count) of one model's histogram, count 0 when absent."""
    buckets = {float(labels["le"]): v for labels, v in samples(text, name + "_bucket")
               if labels.get("model") == model and labels.get("version") == "1"}
    counts = [v for labels, v in samples(text, name + "_count") if labels.get("model") == model]
    return buckets, (counts[0] if counts else 0)


def wait_for_histograms(srv, names, model):
    deadline = time.monotonic() + SPAN_WAIT
    while True:
        text = scrape(srv)
        if all(histogram(text, name, model)[1] >= 1 for name in names):
            return text
        assert time.monotonic() < deadline, "no %s for %s in:\n%s" % (names, model, text)
        time.sleep(0.1)


DURATIONS = ("nereid_inference_request_duration_seconds", "nereid_inference_queue_duration_seconds",
             "nereid_inference_compute_duration_seconds")


PROCESS = ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds")


@pytest.mark.engine_only("reads the engine's own /metrics")
def test_metrics_hold_duration_histograms_and_process_metrics(server):
    grpc_infer(server, "simple")
    text = wait_for_histograms(server, DURATIONS, "simple")
    for name in DURATIONS:
        buckets, count = histogram(text, name, "simple")
        assert float("inf") in buckets and buckets[float("inf")] == count, (name, buckets, count)
        cumulative = [buckets[le] for le in sorted(buckets)]
        assert cumulative == sorted(cumulative), (name, buckets)

    r = requests.post("http://%s/v2/models/repeat_int32/generate_stream" % server.http, json={"IN": [1, 2]}, timeout=30)
    assert r.status_code == 200 and r.text.count("data:") == 2, r.text
    text = wait_for_histograms(server, ["nv_inference_first_response_histogram_ms"], "repeat_int32")
    buckets, count = histogram(text, "nv_inference_first_response_histogram_ms", "repeat_int32")
    assert buckets and buckets[float("inf")] == count >= 1, buckets

    # Process metrics (sampled, so they may take a moment to show on a fresh server).
    deadline = time.monotonic() + SPAN_WAIT
    while True:
        found = {name: [v for _, v in samples(text, name)] for name in PROCESS}
        if all(found.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
        text = scrape(server)
    assert all(found.values()), found
    assert found["process_resident_memory_bytes"][0] > 0 and found["process_open_fds"][0] > 0, found
    assert found["process_cpu_seconds_total"][0] >= 0, found


@pytest.mark.engine_only("the duration histograms are the engine's")
def test_metrics_config_sets_the_duration_buckets():
    srv = start_server(["--demo-models", "builtin", "--metrics-config", "duration_buckets=0.001,0.01,0.1,1"])
    try:
        http_infer(srv, "simple")
        text = wait_for_histograms(srv, DURATIONS, "simple")
        for name in DURATIONS:
            buckets, count = histogram(text, name, "simple")
            assert set(buckets) == {0.001, 0.01, 0.1, 1.0, float("inf")}, (name, buckets)
            assert buckets[float("inf")] == count >= 1
    finally:
        srv.stop()


# Tests: flags ---------------------------------------------------------------------------

PORTS = ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]


SERVE = ["serve", "--demo-models", "builtin"]


@pytest.mark.parametrize("command,config,named", [
    pytest.param(SERVE, "level=LOUD", "level", id="serve-level"),
    pytest.param(SERVE, "rate=x", "rate", id="serve-rate"),
    pytest.param(SERVE, "count=many", "count", id="serve-count"),
    pytest.param(SERVE, "log_frequency=5", "log_frequency", id="serve-log_frequency"),
    pytest.param(SERVE, "mode=triton", "mode", id="serve-mode"),
    pytest.param(["gateway", "--backend", "127.0.0.1:9"], "level=LOUD", "level", id="gateway-level"),
])
def test_a_bad_trace_config_stops_the_server_naming_the_key(command, config, named):
    result = subprocess.run([BIN, *command, *PORTS, "--trace-config", config],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "NEREID_READY" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors and any(named in line for line in errors), result.stderr
