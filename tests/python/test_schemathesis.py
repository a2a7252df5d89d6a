"""Property-based tests of the HTTP API from its own OpenAPI document (`/openapi.json`) with
schemathesis: for every documented operation, schema-valid and schema-violating requests
(a bounded, derandomized number of each, no shrinking) must never get a 5xx, and every
answer must be a documented status with a body of the documented shape and content type.
Generated requests name models that do not exist, so a second table sends requests to the
real demo models and checks those answers (metadata, configs, inference results) against
the document too.

Model load and unload change the server's models, so they run against their own
explicit-mode server; everything else shares the demo server.
"""

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import start_server

pytestmark = pytest.mark.timeout(300)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Examples per operation and generation mode: every documented operation gets valid and
# invalid input while the file stays well within a minute on two cores.
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 12}


def op(method, path, *marks):
    return pytest.param(method, path, id="%s %s" % (method, path), marks=list(marks))


# Every operation the document lists (a test checks the document lists exactly these).
OPERATIONS = [
    op("GET", "/v2"),
    op("GET", "/v2/health/live"),
    op("GET", "/v2/health/ready"),
    op("GET", "/v2/models/stats"),
    op("GET", "/v2/models/{model}"),
    op("GET", "/v2/models/{model}/config"),
    op("POST", "/v2/models/{model}/generate"),
    op("POST", "/v2/models/{model}/generate_stream"),
    op("POST", "/v2/models/{model}/infer"),
    op("GET", "/v2/models/{model}/ready"),
    op("GET", "/v2/models/{model}/stats"),
    op("GET", "/v2/models/{model}/versions/{version}"),
    op("GET", "/v2/models/{model}/versions/{version}/config"),
    op("POST", "/v2/models/{model}/versions/{version}/generate"),
    op("POST", "/v2/models/{model}/versions/{version}/generate_stream"),
    op("POST", "/v2/models/{model}/versions/{version}/infer"),
    op("GET", "/v2/models/{model}/versions/{version}/ready"),
    op("GET", "/v2/models/{model}/versions/{version}/stats"),
    op("POST", "/v2/repository/index"),
    op("POST", "/v2/repository/models/{model}/load"),
    op("POST", "/v2/repository/models/{model}/unload"),
    op("GET", "/v2/trace/setting"),
    op("POST", "/v2/trace/setting"),
    op("GET", "/v2/models/{model}/trace/setting"),
    op("POST", "/v2/models/{model}/trace/setting"),
    op("GET", "/v2/logging"),
    op("POST", "/v2/logging"),
    op("GET", "/v2/systemsharedmemory/status"),
    op("GET", "/v2/systemsharedmemory/region/{region}/status"),
    op("POST", "/v2/systemsharedmemory/region/{region}/register"),
    op("POST", "/v2/systemsharedmemory/region/{region}/unregister"),
    op("POST", "/v2/systemsharedmemory/unregister"),
    op("GET", "/v2/cudasharedmemory/status"),
    op("GET", "/v2/cudasharedmemory/region/{region}/status"),
    op("POST", "/v2/cudasharedmemory/region/{region}/unregister"),
    op("POST", "/v2/cudasharedmemory/unregister"),
]
MODEL_CONTROL = "/v2/repository/models/"


@pytest.fixture(scope="module")
def control_server():
    """Explicit model control over the built-in models, all of them loaded, under strict
    readiness: generated loads the server refuses must not take it (or, behind a gateway,
    its engine) out of rotation."""
    srv = start_server(["--demo-models", "builtin", "--model-control-mode", "explicit", "--load-model", "*"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def schemas(server, control_server):
    """(schema, base URL) of the demo server and of the model-control server."""
    def load(srv):
        url = "http://%s" % srv.http
        return schemathesis.openapi.from_url(url + "/openapi.json", timeout=30), url
    return {"demo": load(server), "control": load(control_server)}


def target(schemas, path):
    return schemas["control" if path.startswith(MODEL_CONTROL) else "demo"]


def fuzz(operation, base_url):
    """Runs generated requests against one operation; returns {mode: first failure}."""
    failures = {}
    for mode, examples in EXAMPLES.items():
        @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case):
            case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30)

        try:
            run()
        except Unsatisfiable:
            # Nothing can break this operation's schema (no parameters, no body): its
            # positive examples cover it.
            assert mode == GenerationMode.NEGATIVE, operation.label
        except (Exception, BaseExceptionGroup) as e:  # failed checks, with the case that failed them
            failures[mode.value] = str(e)
    return failures


def test_the_document_lists_every_operation(schemas):
    for name, (schema, _) in schemas.items():
        listed = {(o.ok().method.upper(), o.ok().path) for o in schema.get_all_operations()}
        assert listed == {tuple(p.values) for p in OPERATIONS}, name


@pytest.mark.parametrize("method,path", OPERATIONS)
def test_generated_requests_are_answered_as_documented(schemas, method, path):
    schema, base_url = target(schemas, path)
    failures = fuzz(schema[path][method], base_url)
    assert not failures, "\n\n".join("%s examples:\n%s" % (mode, text[:3000]) for mode, text in failures.items())
    # The server still serves.
    assert schema_still_served(base_url)


def schema_still_served(base_url):
    import urllib.request
    with urllib.request.urlopen(base_url + "/v2/health/live", timeout=30) as r:
        return r.status == 200


# Requests to the real models ------------------------------------------------------------

SIMPLE = {"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": list(range(16))},
                     {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16}]}
REPEAT = {"inputs": [{"name": "IN", "shape": [2], "datatype": "INT32", "data": [1, 2]}]}
GENERATE = {"INPUT0": [1.0, 2.0]}


def real(method, path, status, body=None, marks=(), **params):
    label = "%s %s -> %d" % (method, path.format(**params), status)
    return pytest.param(method, path, params, body, status, id=label, marks=list(marks))


REAL = [
    real("GET", "/v2", 200),
    real("GET", "/v2/health/live", 200),
    real("GET", "/v2/health/ready", 200),
    real("GET", "/v2/models/stats", 200),
    real("GET", "/v2/models/{model}", 200, model="simple"),
    real("GET", "/v2/models/{model}", 404, model="nope"),
    real("GET", "/v2/models/{model}/config", 200, model="simple"),
    real("GET", "/v2/models/{model}/config", 200, model="repeat_int32"),
    real("POST", "/v2/models/{model}/generate", 200, GENERATE, model="identity_fp32"),
    real("POST", "/v2/models/{model}/generate", 400, {"NOPE": 1}, model="identity_fp32"),
    real("POST", "/v2/models/{model}/generate_stream", 200, GENERATE, model="identity_fp32"),
    real("POST", "/v2/models/{model}/generate_stream", 200, {"IN": [3, 4]},
         model="repeat_int32"),
    real("POST", "/v2/models/{model}/generate_stream", 400, {"NOPE": 1}, model="identity_fp32"),
    real("POST", "/v2/models/{model}/infer", 200, SIMPLE, model="simple"),
    real("POST", "/v2/models/{model}/infer", 200, {**SIMPLE, "parameters": {"binary_data_output": False}},
         model="simple"),
    real("POST", "/v2/models/{model}/infer", 400, {"inputs": []}, model="simple"),
    real("POST", "/v2/models/{model}/infer", 501, REPEAT, model="repeat_int32"),
    real("GET", "/v2/models/{model}/ready", 200, model="simple"),
    real("GET", "/v2/models/{model}/ready", 400, model="nope"),
    real("GET", "/v2/models/{model}/stats", 200, model="simple"),
    real("GET", "/v2/models/{model}/stats", 404, model="nope"),
    real("GET", "/v2/models/{model}/versions/{version}", 200, model="simple", version="1"),
    real("GET", "/v2/models/{model}/versions/{version}", 404, model="simple", version="7"),
    real("GET", "/v2/models/{model}/versions/{version}", 400, model="simple", version="x"),
    real("GET", "/v2/models/{model}/versions/{version}/config", 200, model="simple", version="1"),
    real("POST", "/v2/models/{model}/versions/{version}/generate", 200, GENERATE, model="identity_fp32",
         version="1"),
    real("POST", "/v2/models/{model}/versions/{version}/generate", 404, GENERATE, model="identity_fp32", version="7"),
    real("POST", "/v2/models/{model}/versions/{version}/generate_stream", 200, GENERATE,
         model="identity_fp32", version="1"),
    real("POST", "/v2/models/{model}/versions/{version}/infer", 200, SIMPLE, model="simple", version="1"),
    real("POST", "/v2/models/{model}/versions/{version}/infer", 400, SIMPLE, model="simple", version="-1"),
    real("POST", "/v2/models/{model}/versions/{version}/infer", 501, REPEAT, model="repeat_int32", version="1"),
    real("GET", "/v2/models/{model}/versions/{version}/ready", 200, model="simple", version="1"),
    real("GET", "/v2/models/{model}/versions/{version}/stats", 200, model="simple", version="1"),
    real("GET", "/v2/models/{model}/versions/{version}/stats", 404, model="simple", version="7"),
    real("GET", "/v2/trace/setting", 200),
    real("POST", "/v2/trace/setting", 200, {"trace_rate": "1000"}),
    real("POST", "/v2/trace/setting", 400, {"trace_rate": "often"}),
    real("GET", "/v2/models/{model}/trace/setting", 200, model="simple"),
    real("GET", "/v2/models/{model}/trace/setting", 404, model="nope"),
    real("POST", "/v2/models/{model}/trace/setting", 200, {"trace_level": None}, model="simple"),
    real("GET", "/v2/logging", 200),
    real("POST", "/v2/logging", 200, {"log_verbose_level": 0}),
    real("POST", "/v2/logging", 400, {"log_verbose_level": "loud"}),
    real("POST", "/v2/repository/index", 200, {}),
    real("POST", "/v2/repository/index", 200, {"ready": True}),
    real("POST", "/v2/repository/index", 400, {"ready": "yes"}),
    real("POST", "/v2/repository/models/{model}/unload", 200, {}, model="identity_fp32"),
    real("POST", "/v2/repository/models/{model}/load", 200, {}, model="identity_fp32"),
    real("POST", "/v2/repository/models/{model}/load", 404, {}, model="not_there"),
    real("POST", "/v2/repository/models/{model}/load", 400, {"parameters": {"config": "{nope"}},
         model="identity_fp32"),
    real("POST", "/v2/repository/models/{model}/load", 501, {"parameters": {"file:1/model.bin": "AAAA"}},
         model="identity_fp32"),
    # An unload of a model the server never knew (404) has its own test with its own server in
    # test_malformed.py: today it deadlocks the server (FINDING 15).
    real("POST", "/v2/repository/models/{model}/unload", 400, {"parameters": []}, model="identity_fp32"),
    real("GET", "/v2/systemsharedmemory/status", 200),
    real("GET", "/v2/systemsharedmemory/region/{region}/status", 404, region="nope"),
    real("POST", "/v2/systemsharedmemory/region/{region}/register", 400,
         {"key": "/nereid-no-such-object", "byte_size": 8}, region="r"),
    real("POST", "/v2/systemsharedmemory/region/{region}/register", 400, {"key": "/k", "byte_size": "8"}, region="r"),
    real("POST", "/v2/systemsharedmemory/region/{region}/unregister", 200, region="nope"),
    real("GET", "/v2/cudasharedmemory/status", 200),
    real("GET", "/v2/cudasharedmemory/region/{region}/status", 404, region="nope"),
    real("POST", "/v2/cudasharedmemory/region/{region}/unregister", 200, region="nope"),
    real("POST", "/v2/cudasharedmemory/unregister", 200),
]


@pytest.mark.parametrize("method,path,params,body,status", REAL)
def test_real_models_are_answered_as_documented(schemas, method, path, params, body, status):
    schema, base_url = target(schemas, path)
    kwargs = {"path_parameters": params} if params else {}
    if body is not None:
        kwargs.update(body=body, media_type="application/json")
    case = schema[path][method].Case(**kwargs)
    # A 5xx these rows expect is a documented refusal (501 unsupported, 503 not explicit).
    checks = CHECKS if status < 500 else [c for c in CHECKS if c is not not_a_server_error]
    response = case.call_and_validate(base_url=base_url, checks=checks, timeout=30)
    assert response.status_code == status, response.text


def test_model_control_outside_explicit_mode_is_documented(schemas):
    # The demo server is not in explicit mode: load and unload are 503 there.
    schema, _ = schemas["control"]
    _, demo_url = schemas["demo"]
    for action in ("load", "unload"):
        case = schema[MODEL_CONTROL + "{model}/" + action]["POST"].Case(path_parameters={"model": "simple"})
        checks = [c for c in CHECKS if c is not not_a_server_error]  # 503 is the documented refusal
        response = case.call_and_validate(base_url=demo_url, checks=checks, timeout=30)
        assert response.status_code == 503, response.text
        assert "explicit" in json.loads(response.text)["error"]
