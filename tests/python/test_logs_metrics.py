"""Logs, request ids and metrics of the real binary, read with stock clients: Triton's log
settings over REST and gRPC switch debug lines on and off, request ids are echoed or
generated on both doors, `--access-log` writes one line per request, and /metrics holds the
duration histograms (with `--metrics-config` buckets) and process metrics.
"""

import re
import time
import urllib.request

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from conftest import start_server

from otlp import (
    DEBUG_LINE,
    DOOR_ROLE,
    SPAN_WAIT,
    fields,
    grpc_infer,
    headers,
    http_infer,
    one_root,
    receiver,  # the OTLP receiver fixture
    rid,
    simple_inputs,
    traceparent,
    wait_for_access_line,
    wait_for_spans,
)

pytestmark = pytest.mark.timeout(180)


LOG_KEYS = ("log_file", "log_info", "log_warning", "log_error", "log_verbose_level", "log_format")

# Tests: log settings --------------------------------------------------------------------

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
        # The format it runs with is accepted as it is, and it switches while the server runs:
        # with JSON, the next debug lines are JSON objects.
        assert log_settings(rest.update_log_settings({"log_format": expected["log_format"]})) == expected
        other = "json" if expected["log_format"] == "default" else "default"
        mark = len(srv.log)
        assert log_settings(rest.update_log_settings({"log_format": other, "log_verbose_level": 1})) == {
            **expected, "log_format": other, "log_verbose_level": 1}
        deadline = time.monotonic() + 10
        while True:
            grpc_client.is_server_live()  # HTTP/2 frames log at debug level
            fresh = [line for line in list(srv.log)[mark:] if DEBUG_LINE.search(line)]
            if len(fresh) >= 10 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        # Lines written before the switch may still be on their way: judge the latest.
        assert fresh, "no debug line after the switch"
        assert all(line.lstrip().startswith("{") == (other == "json") for line in fresh[-2:]), fresh[-2:]
        rest.update_log_settings({"log_format": expected["log_format"], "log_verbose_level": 0})
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
