"""The OTLP receiver and span, request and log-line helpers the observability tests share:
a collector of our own (OTLP/HTTP protobuf and OTLP/gRPC) that keeps every span it is sent
with its resource, and readers of the spans, the access log and the metrics."""

import collections
import concurrent.futures
import gzip
import http.client
import http.server
import queue
import re
import secrets
import threading
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from tritonclient.utils import InferenceServerException

from conftest import THROUGH_GATEWAY

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
