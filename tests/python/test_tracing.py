"""Traces of the real binary, read with a collector of our own (tests/python/otlp.py).

With `--trace-config` (or the OTEL_* environment) every sampled request becomes one
OpenTelemetry trace per process, exported over OTLP/HTTP (protobuf) or OTLP/gRPC; the spans
have Triton's names and timings (`InferRequest`, `queue`, `compute`,
`compute_input`/`_infer`/`_output`, decoupled response events), continue a W3C
`traceparent`, and a gateway's `forward` span parents the engine's root. Sampling follows
the level, rate, count and the traceparent's sampled flag; Triton's trace settings APIs
read and change all of that at run time over REST and gRPC (tritonclient's own calls); a bad
`--trace-config` stops the server before it is announced.
"""

import http.client
import http.server
import json
import subprocess
import time

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import BIN, Server, start_server

from otlp import (
    CLIENT_KIND,
    DOOR_ROLE,
    SERVER_KIND,
    STATUS_ERROR,
    attr,
    check_engine_tree,
    check_nesting,
    engine_tree_complete,
    grpc_infer,
    http_infer,
    one_root,
    ready,
    receiver,  # the OTLP receiver fixture
    repeat_stream,
    rid,
    subtree,
    traced,
    traceparent,
    tracing,
    wait_for_spans,
)

pytestmark = pytest.mark.timeout(180)


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
