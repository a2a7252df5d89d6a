"""deploy/docker-compose.yml end to end: three engines, the gateway and Prometheus come up
healthy, inference works through the gateway, Prometheus scrapes every engine and the
gateway, and every query of the provisioned Grafana dashboard runs against it (the
dashboard is only JSON here: Grafana cannot be installed)."""

import json
import os
import re
import shutil
import urllib.parse
import urllib.request

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml

from conftest import ROOT, docker, free_port, infer_simple, run, wait_for

COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "nereid.json"
DATASOURCE = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
LLM_METRICS_SOURCE = ROOT / "frontends" / "stream" / "src" / "metrics.rs"


def compose_command():
    """docker-compose 1.x where installed (Debian's), else the `docker compose` plugin."""
    return ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def query(prometheus, expr):
    return get_json("http://%s/api/v1/query?%s" % (prometheus, urllib.parse.urlencode({"query": expr})))


@pytest.fixture
def stack(cpu_image, prometheus_image):
    """The compose stack under a unique project name, on free host ports; `down` removes
    its containers, network and volumes whatever happened."""
    ports = {name: free_port() for name in (
        "ENGINE1_HTTP_PORT", "ENGINE1_GRPC_PORT", "ENGINE2_HTTP_PORT", "ENGINE2_GRPC_PORT",
        "ENGINE3_HTTP_PORT", "ENGINE3_GRPC_PORT", "GATEWAY_HTTP_PORT", "GATEWAY_GRPC_PORT",
        "GATEWAY_METRICS_PORT", "PROMETHEUS_PORT")}
    env = {**{k: str(v) for k, v in ports.items()}, "NEREID_IMAGE": cpu_image, "PROMETHEUS_IMAGE": prometheus_image,
           "COMPOSE_PROJECT_NAME": "nereid-test-%d" % os.getpid()}
    compose = compose_command() + ["-f", str(COMPOSE_FILE)]
    run(compose + ["config", "--quiet"], env=env)
    try:
        # depends_on waits for the engines' healthchecks before the gateway starts, and for
        # the gateway's before Prometheus starts.
        run(compose + ["up", "-d", "--no-build"], env=env, timeout=240)
        yield ports
    finally:
        run(compose + ["down", "--volumes", "--remove-orphans", "--timeout", "40"], env=env, timeout=240)
        left = docker("ps", "-aq", "--filter", "label=com.docker.compose.project=%s"
                      % env["COMPOSE_PROJECT_NAME"]).stdout.split()
        assert not left, "compose left containers behind: %s" % left


def test_prometheus_scrapes_every_engine_and_the_dashboard_queries_run(stack):
    prometheus = "127.0.0.1:%d" % stack["PROMETHEUS_PORT"]

    # Traffic on every engine through its published ports, so the counters move.
    for n in (1, 2, 3):
        for module, port in ((httpclient, stack["ENGINE%d_HTTP_PORT" % n]), (grpcclient, stack["ENGINE%d_GRPC_PORT" % n])):
            infer_simple(module, module.InferenceServerClient("127.0.0.1:%d" % port))

    def engines_up():
        targets = get_json("http://%s/api/v1/targets" % prometheus)["data"]["activeTargets"]
        engines = {t["labels"]["instance"]: t["health"] for t in targets if t["labels"]["job"] == "nereid"}
        return engines if engines == {"engine-%d:8002" % n: "up" for n in (1, 2, 3)} else None

    wait_for(engines_up, 60, "Prometheus to scrape engine-1..3 successfully", interval=1)

    # The gateway: its published doors serve the engines' models, and Prometheus scrapes it
    # as its own job, where it reports all three engines healthy and the requests it
    # forwarded to them.
    gateway_requests = 20
    for module, port in ((httpclient, stack["GATEWAY_HTTP_PORT"]), (grpcclient, stack["GATEWAY_GRPC_PORT"])):
        client = module.InferenceServerClient("127.0.0.1:%d" % port)
        assert client.is_server_ready()
        for _ in range(gateway_requests // 2):
            infer_simple(module, client)
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % stack["GATEWAY_METRICS_PORT"], timeout=5) as r:
        assert "nereid_gateway_backend_healthy{" in r.read().decode()

    def gateway_scraped():
        targets = get_json("http://%s/api/v1/targets" % prometheus)["data"]["activeTargets"]
        gateway = {t["labels"]["instance"]: t["health"] for t in targets if t["labels"]["job"] == "nereid-gateway"}
        if gateway != {"gateway:8002": "up"}:
            return None
        healthy = query(prometheus, 'nereid_gateway_backend_healthy{job="nereid-gateway"}')["data"]["result"]
        forwarded = query(prometheus, 'sum(nereid_gateway_requests_total{job="nereid-gateway",outcome="ok"})')
        forwarded = forwarded["data"]["result"]
        return (len(healthy) == 3 and all(r["value"][1] == "1" for r in healthy)
                and forwarded and float(forwarded[0]["value"][1]) >= gateway_requests) or None

    wait_for(gateway_scraped, 60, "Prometheus to scrape the gateway (up, 3 healthy backends, requests)", interval=1)
    # The gateway's own per-model request counters are dropped at scrape: the dashboard
    # sums nv_inference_* over every job, and the engines count each request already.
    assert not query(prometheus, '{job="nereid-gateway",__name__=~"nv_inference_.*"}')["data"]["result"]

    # The dashboard: valid JSON, its data source is the provisioned one, and every metric
    # it names is one an engine exports (live) or the generation metrics' source declares.
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load(DATASOURCE.read_text())["datasources"][0]
    targets = [t for p in dashboard["panels"] for t in p["targets"]]
    assert targets and all(t["datasource"]["uid"] == datasource["uid"] for t in targets)
    exported = {m["metric"]["__name__"] for m in query(prometheus, '{job="nereid"}')["data"]["result"]}
    llm = set(re.findall(r'pub const \w+: &str = "(nv_llm_\w+)";', LLM_METRICS_SOURCE.read_text()))
    assert "nv_inference_pending_request_count" in exported and llm

    def names(expr):
        return {re.sub(r"_bucket$", "", n) for n in re.findall(r"\b(nv_\w+|up)\b(?=\s*[{\[)])", expr)}

    for target in targets:
        unknown = names(target["expr"]) - exported - llm - {"up"}
        assert not unknown, (target["expr"], unknown)

    # Every query runs; those on engine metrics return data once Prometheus holds two
    # scrapes of the traffic above (rate() needs two points). Generation metrics have no
    # series with the builtin demo models, so only their syntax is checked.
    def all_answer():
        empty = []
        for target in targets:
            expr = target["expr"].replace("$model", ".*")
            answer = query(prometheus, expr)
            assert answer["status"] == "success", (expr, answer)
            if not names(expr) & llm and not answer["data"]["result"]:
                empty.append(expr)
        return not empty or None

    wait_for(all_answer, 60, "every dashboard query on engine metrics to return data", interval=2)
