"""Kubernetes manifests: rendered with kustomize, validated against the Kubernetes schemas, and held
to what operating the service needs (probes, drain, non-root, GPU, custom-metric HPA)."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBE_VERSION = latest_version()
CRD_KINDS = ("ServiceMonitor", "PrometheusRule")
EXPECTED_KINDS = {
    "Namespace", "ServiceAccount", "ConfigMap", "Service", "Deployment", "HorizontalPodAutoscaler",
    "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule",
}  # fmt: skip

_META = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": {"type": "object"}},
}
_SELECTOR = {
    "type": "object",
    "properties": {"matchLabels": {"type": "object"}},
    "additionalProperties": False,
}
# The parts of the Prometheus Operator CRDs (monitoring.coreos.com/v1) these manifests use.
CRD_SCHEMAS = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": _SELECTOR,
                    "namespaceSelector": {"type": "object"},
                    "jobLabel": {"type": "string"},
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "scheme": {"enum": ["http", "https"]},
                                "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["groups"],
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "interval": {"type": "string"},
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "alert": {"type": "string"},
                                            "record": {"type": "string"},
                                            "expr": {"type": "string"},
                                            "for": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                            "labels": {"type": "object"},
                                            "annotations": {"type": "object"},
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
}


@pytest.fixture(scope="module", params=["base", "overlays/gpu"])
def rendered(request, kubectl, helpers) -> tuple[str, list[dict]]:
    out = helpers.run([kubectl, "kustomize", str(K8S / request.param)])
    return request.param, [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _container(docs: list[dict]) -> dict:
    return _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def _settings(docs: list[dict]) -> dict[str, str]:
    return _one(docs, "ConfigMap")["data"]


def test_all_kinds_rendered(rendered):
    overlay, docs = rendered
    assert {d["kind"] for d in docs} == EXPECTED_KINDS | ({"Ingress"} if overlay == "overlays/gpu" else set())
    assert all(d["metadata"].get("namespace", "echoseg") == "echoseg" for d in docs)


def test_builtin_kinds_match_kubernetes_schemas(rendered):
    _, docs = rendered
    for doc in docs:
        if doc["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_crds_match_operator_schema(rendered):
    _, docs = rendered
    for kind in CRD_KINDS:
        jsonschema.validate(_one(docs, kind), CRD_SCHEMAS[kind])


def test_schema_check_catches_a_mistake(rendered):
    """The validation is not vacuous: a misspelt field is rejected."""
    _, docs = rendered
    deployment = yaml.safe_load(yaml.safe_dump(_one(docs, "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def test_probes_on_health_endpoints(rendered):
    _, docs = rendered
    c = _container(docs)
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port_names = {p["name"] for p in c["ports"]}
    for probe in ("livenessProbe", "startupProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] in port_names


def test_grace_period_outlasts_prestop_and_drain(rendered):
    _, docs = rendered
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    command = _container(docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain = float(_settings(docs)["ECHOSEG_DRAIN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] > float(command[1]) + drain


def test_non_root_and_read_only_root(rendered):
    _, docs = rendered
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = _container(docs)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    # Everything the process writes goes to a volume: /tmp and the export/engine cache.
    mounts = {m["mountPath"] for m in _container(docs)["volumeMounts"]}
    assert {"/tmp", _settings(docs)["ECHOSEG_CACHE_DIR"]} <= mounts


def test_settings_are_real_service_settings(rendered):
    from service.core.config import Settings

    _, docs = rendered
    fields = {f"ECHOSEG_{name.upper()}" for name in Settings.model_fields}
    names = set(_settings(docs)) | {e["name"] for e in _container(docs).get("env", [])}
    unknown = sorted(n for n in names if n not in fields)
    assert not unknown, f"not service settings: {unknown}"
    Settings(**{k.removeprefix("ECHOSEG_").lower(): v for k, v in _settings(docs).items()})


def test_api_keys_come_from_a_secret(rendered):
    _, docs = rendered
    env = {e["name"]: e for e in _container(docs)["env"]}
    ref = env["ECHOSEG_API_KEYS"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "echoseg-api-keys" and ref["key"] == "api-keys"
    assert "ECHOSEG_API_KEYS" not in _settings(docs)


def test_gpu_overlay_requests_a_gpu(rendered):
    name, docs = rendered
    resources = _container(docs)["resources"]
    settings = _settings(docs)
    if name == "base":
        assert "nvidia.com/gpu" not in resources.get("limits", {})
        assert (settings["ECHOSEG_BACKEND"], settings["ECHOSEG_DEVICE"]) == ("onnxruntime", "cpu")
        assert _container(docs)["image"].endswith(":cpu")
    else:
        assert resources["limits"]["nvidia.com/gpu"] == 1
        assert resources["requests"]["nvidia.com/gpu"] == 1
        assert (settings["ECHOSEG_BACKEND"], settings["ECHOSEG_DEVICE"]) == ("tensorrt", "cuda")
        assert _container(docs)["image"].endswith(":gpu")


def test_hpa_scales_on_active_streams_served_by_the_adapter(rendered):
    _, docs = rendered
    hpa = _one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == _one(docs, "Deployment")["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    target = float(metric["pods"]["target"]["averageValue"])
    assert 0 < target <= int(_settings(docs)["ECHOSEG_MAX_STREAMS"])
    rules = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())["rules"]["custom"]
    served = [r for r in rules if r["name"]["as"] == name]
    assert len(served) == 1, f"prometheus-adapter serves no metric named {name}"
    rule = served[0]
    assert re.match(r"^\s*" + name + r"\{", rule["seriesQuery"])
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}
    assert "<<.Series>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]


def test_pdb_and_service_select_the_pods(rendered):
    _, docs = rendered
    pod_labels = _one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for kind, selector in (
        ("PodDisruptionBudget", _one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]),
        ("Service", _one(docs, "Service")["spec"]["selector"]),
        ("NetworkPolicy", _one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"]),
    ):
        assert selector.items() <= pod_labels.items(), f"{kind} does not select the pods"
    assert _one(docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2  # a PDB can then allow one down


def test_servicemonitor_scrapes_the_service_port(rendered):
    _, docs = rendered
    monitor = _one(docs, "ServiceMonitor")
    service = _one(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # The job label is the Service name; the alert rules select up{job="echoseg"}.
    assert service["metadata"]["name"] == "echoseg"


def test_networkpolicy_admits_the_service_port(rendered):
    _, docs = rendered
    policy = _one(docs, "NetworkPolicy")["spec"]
    ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert ports == {"http"}
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}


def test_gpu_ingress_is_tls_only_with_long_websocket_timeouts(rendered):
    overlay, docs = rendered
    if overlay != "overlays/gpu":
        pytest.skip("the Ingress is part of the GPU overlay")
    ingress = _one(docs, "Ingress")
    spec, notes = ingress["spec"], ingress["metadata"]["annotations"]
    hosts = {h for rule in spec["rules"] for h in [rule["host"]]}
    assert hosts <= {h for t in spec["tls"] for h in t["hosts"]}, "every host is served over TLS"
    assert notes["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[f"nginx.ingress.kubernetes.io/{key}"]) >= 3600, "long streams are not cut"
    backends = [p["backend"]["service"] for r in spec["rules"] for p in r["http"]["paths"]]
    service = _one(docs, "Service")
    assert all(b["name"] == service["metadata"]["name"] for b in backends)
    assert all(b["port"]["name"] in {p["name"] for p in service["spec"]["ports"]} for b in backends)
    assert [p["path"] for r in spec["rules"] for p in r["http"]["paths"]] == ["/v1"], "no /metrics outside"


def test_key_file_secret_is_mounted_so_updates_reach_the_pod(rendered):
    _, docs = rendered
    spec = _one(docs, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "api-key-file")
    assert volume["secret"]["secretName"] == "echoseg-api-key-file" and volume["secret"]["optional"]
    mount = next(m for m in _container(docs)["volumeMounts"] if m["name"] == "api-key-file")
    assert mount["readOnly"] and "subPath" not in mount, "a subPath mount never sees Secret updates"
