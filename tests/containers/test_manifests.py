"""deploy/kubernetes: the core manifests (engines, HPA, gateway) against the Kubernetes
OpenAPI schemas (kubernetes-validate, strict: unknown fields fail), and the custom resources
(KServe, Prometheus Operator), whose schemas no PyPI package ships, by their required fields,
their references to one another, and their embedded containers validated as a Pod's."""

import copy
import re

import kubernetes_validate
import pytest
import yaml

from conftest import ROOT

K8S = ROOT / "deploy" / "kubernetes"
# The newest schema kubernetes-validate ships, and an older still-supported release.
VERSIONS = ["1.37.0", "1.31.0"]


def docs(name):
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def by_kind(name, kind):
    found = [d for d in docs(name) if d["kind"] == kind]
    assert len(found) == 1, (name, kind, found)
    return found[0]


def validate(doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


CORE = [d for f in ("engines.yaml", "hpa.yaml", "gateway.yaml", "batch-job.yaml") for d in docs(f)]


@pytest.mark.parametrize("version", VERSIONS)
def test_core_manifests_match_the_kubernetes_schemas(version):
    assert {d["kind"] for d in CORE} == {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                                         "Job", "PersistentVolumeClaim"}
    for doc in CORE:
        validate(doc, version)


def test_the_validator_rejects_a_broken_manifest():
    # Proof the check above can fail: a misspelt field and a wrong type are both refused.
    deployment = copy.deepcopy(by_kind("engines.yaml", "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, VERSIONS[0])
    deployment = copy.deepcopy(by_kind("engines.yaml", "Deployment"))
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, VERSIONS[0])


def flag(args, name):
    values = [a.split("=", 1)[1] for a in args if a.startswith("--%s=" % name)]
    assert len(values) == 1, (name, args)
    return values[0]


def test_engines_drain_within_the_grace_period_and_probe_real_routes():
    deployment = by_kind("engines.yaml", "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    exit_timeout = int(flag(container["args"], "exit-timeout-secs"))
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # preStop, then SIGTERM and the drain; SIGKILL must come only after both.
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + exit_timeout
    assert pod["runtimeClassName"] == "nvidia"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["livenessProbe"]["grpc"]["port"] == ports["grpc"]

    labels = deployment["spec"]["template"]["metadata"]["labels"]
    services = [d for d in docs("engines.yaml") if d["kind"] == "Service"]
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
    assert len(headless) == 1
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items(), service
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports
    pdb = by_kind("engines.yaml", "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()

    hpa = by_kind("hpa.yaml", "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    # The image exports this gauge: tests/containers/test_image.py checks it on /metrics.
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "nv_inference_pending_request_count"


def test_gateway_discovers_the_engines_headless_service():
    deployment = by_kind("gateway.yaml", "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["nereid", "gateway"]
    args = container["args"]
    # --backend-dns names the headless Service of engines.yaml, in the pod's own namespace
    # (Kubernetes expands $(POD_NAMESPACE) from the container's env), on its gRPC port.
    headless = [s for s in docs("engines.yaml") if s["kind"] == "Service" and s["spec"].get("clusterIP") == "None"]
    assert len(headless) == 1
    grpc_port = [p["port"] for p in headless[0]["spec"]["ports"] if p["name"] == "grpc"]
    assert flag(args, "backend-dns") == "%s.$(POD_NAMESPACE).svc.cluster.local:%d" % (
        headless[0]["metadata"]["name"], grpc_port[0])
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    for name in ("discovery-interval-ms", "health-interval-ms", "eject-after", "retries"):
        assert int(flag(args, name)) > 0

    # Stopping: the same arithmetic as the engines'.
    exit_timeout = int(flag(args, "exit-timeout-secs"))
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + exit_timeout
    # No GPU, and the engines' hardening.
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert "runtimeClassName" not in pod
    engines_pod = by_kind("engines.yaml", "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == engines_pod["securityContext"]
    assert container["securityContext"] == engines_pod["containers"][0]["securityContext"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    # Liveness must not follow readiness: with every engine down the gateway is not
    # ready, and must not be restarted for it.
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"

    # Its Service and PDB select the gateway pods and no engine; the engines' Services and
    # PDB select no gateway pod.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    engine_labels = by_kind("engines.yaml", "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = by_kind("gateway.yaml", "Service")
    pdb = by_kind("gateway.yaml", "PodDisruptionBudget")
    for selector in (service["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items() and not selector.items() <= engine_labels.items()
    for doc in docs("engines.yaml"):
        if doc["kind"] in ("Service", "PodDisruptionBudget"):
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            assert not selector.items() <= labels.items(), doc["metadata"]["name"]
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports


def test_batch_job_gives_each_index_one_shard_and_resumes():
    job = by_kind("batch-job.yaml", "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["nereid", "batch"]
    args = container["args"]
    # One shard per index: JOB_COMPLETION_INDEX (0..completions-1) is --shard-index's
    # default, so the args must not pin it, and the count must match the completions.
    assert int(flag(args, "shard-count")) == spec["completions"]
    assert not [a for a in args if a.startswith("--shard-index")], args
    assert "JOB_COMPLETION_INDEX" not in {e["name"] for e in container.get("env", [])}
    assert spec["parallelism"] <= spec["completions"]
    # A retried pod continues its shard: without --resume it would refuse its own folder.
    assert "--resume" in args
    assert spec.get("backoffLimitPerIndex", spec.get("backoffLimit", 6)) > 0
    # backoffLimitPerIndex and podFailurePolicy both need pods that are never restarted in place.
    assert pod["restartPolicy"] == "Never"
    # --server names the gateway Service on its gRPC port.
    gateway = by_kind("gateway.yaml", "Service")
    grpc_port = [p["port"] for p in gateway["spec"]["ports"] if p["name"] == "grpc"]
    assert flag(args, "server") == "%s:%d" % (gateway["metadata"]["name"], grpc_port[0])
    # Input and output on the claim this file declares, mounted where the args point.
    claim = by_kind("batch-job.yaml", "PersistentVolumeClaim")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    data = volumes[mounts["/data"]]
    assert data["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert flag(args, "input").startswith("/data/") and flag(args, "output").startswith("/data/")
    # The engines' hardening, as for the gateway.
    engines_pod = by_kind("engines.yaml", "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == engines_pod["securityContext"]
    assert container["securityContext"] == engines_pod["containers"][0]["securityContext"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})


def test_service_monitors_scrape_engines_and_gateways_once_each():
    monitors = {d["metadata"]["name"]: d for d in docs("servicemonitor.yaml")}
    assert set(monitors) == {"nereid", "nereid-gateway"}
    services = [s for f in ("engines.yaml", "gateway.yaml") for s in docs(f) if s["kind"] == "Service"]
    for name, expected in (("nereid", "nereid-engines"), ("nereid-gateway", "nereid-gateway")):
        monitor = monitors[name]
        assert monitor["kind"] == "ServiceMonitor"
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        selector = monitor["spec"]["selector"]["matchLabels"]
        matching = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        with_port = [s for s in matching if any(p["name"] == monitor["spec"]["endpoints"][0]["port"]
                                               for p in s["spec"]["ports"])]
        # Exactly one Service offers the metrics port, so each pod is scraped once.
        assert [s["metadata"]["name"] for s in with_port] == [expected], name
    # The gateway's copy of the per-model counters is dropped (the engines' are the truth).
    drops = monitors["nereid-gateway"]["spec"]["endpoints"][0]["metricRelabelings"]
    assert {"sourceLabels": ["__name__"], "regex": "nv_inference_.*", "action": "drop"} in drops


def as_pod(containers, extra=None):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"},
            "spec": {"containers": containers, **(extra or {})}}


def test_kserve_runtime_and_inference_service():
    runtime = by_kind("kserve-runtime.yaml", "ClusterServingRuntime")
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    spec = runtime["spec"]
    assert set(spec["protocolVersions"]) == {"v2", "grpc-v2"}
    container = spec["containers"][0]
    # KServe routes to the container named kserve-container.
    assert container["name"] == "kserve-container"
    args = container["args"]
    assert flag(args, "model-repository") == "/mnt/models"
    assert int(flag(args, "http-port")) == container["ports"][0]["containerPort"]
    assert container["readinessProbe"]["httpGet"]["port"] == int(flag(args, "http-port"))
    assert flag(args, "metrics-port") == spec["annotations"]["prometheus.kserve.io/port"]
    # The containers are core v1 Containers: the Pod schema checks them, strictly.
    for version in VERSIONS:
        validate(as_pod(spec["containers"]), version)

    service = by_kind("kserve-inferenceservice.yaml", "InferenceService")
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in spec["supportedModelFormats"]}
    assert model["protocolVersion"] in spec["protocolVersions"]
    assert re.match(r"^(pvc|s3|gs|https?)://", model["storageUri"])
    assert predictor["terminationGracePeriodSeconds"] > int(flag(args, "exit-timeout-secs"))
    # The predictor carries PodSpec fields inline and the model a Container's resources.
    pod_fields = {k: predictor[k] for k in ("runtimeClassName", "terminationGracePeriodSeconds")}
    merged = dict(container, resources=model["resources"])
    for version in VERSIONS:
        validate(as_pod([merged], pod_fields), version)
