"""The Compose stack: parsed, its services, ports and mounts checked against the files they use."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _container_port(service: dict, published: int) -> int:
    for spec in service["ports"]:
        host, container = str(spec).split(":")[-2:]
        if int(host) == published:
            return int(container)
    raise AssertionError(f"port {published} is not published")


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match[1]) * (60 if match[2] == "m" else 1)


def _bind_mounts(service: dict) -> dict[str, str]:
    """container path -> host path (relative to deploy/) of the service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = source
    return mounts


def test_services_and_ports(compose):
    services = compose["services"]
    assert set(services) == {"echoseg", "prometheus", "grafana"}
    assert _container_port(services["echoseg"], 8000) == 8000
    assert _container_port(services["prometheus"], 9090) == 9090
    assert _container_port(services["grafana"], 3000) == 3000


def test_service_is_hardened_and_drains(compose):
    svc = compose["services"]["echoseg"]
    assert svc["read_only"] is True
    assert any(t.startswith("/tmp") for t in svc["tmpfs"])
    assert not svc["user"].startswith("0")
    assert svc["cap_drop"] == ["ALL"]
    cache = svc["environment"]["ECHOSEG_CACHE_DIR"]
    assert any(v.split(":")[1] == cache for v in svc["volumes"]), "the cache dir must be a volume"
    drain = float(svc["environment"]["ECHOSEG_DRAIN_TIMEOUT_S"])
    assert _seconds(svc["stop_grace_period"]) > drain
    assert "/readyz" in " ".join(svc["healthcheck"]["test"])
    assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).exists()


def test_service_settings_are_real(compose):
    from service.core.config import Settings

    fields = {f"ECHOSEG_{name.upper()}" for name in Settings.model_fields}
    for name in ("compose.yaml", "compose.gpu.yaml", "compose.tls.yaml"):
        env = yaml.safe_load((DEPLOY / name).read_text())["services"]["echoseg"]["environment"]
        unknown = sorted(k for k in env if k not in fields)
        assert not unknown, f"{name}: not service settings: {unknown}"


def test_prometheus_scrapes_the_service(compose):
    services = compose["services"]
    mounts = _bind_mounts(services["prometheus"])
    config_path = next(a for a in services["prometheus"]["command"] if a.startswith("--config.file="))
    config_path = config_path.split("=", 1)[1]
    config = yaml.safe_load((DEPLOY / mounts[config_path]).read_text())
    # Rule files are resolved beside the config, where alerts.yml must be mounted.
    for rule_file in config["rule_files"]:
        target = str(Path(config_path).parent / rule_file)
        assert target in mounts, f"{rule_file} is not mounted at {target}"
        assert (DEPLOY / mounts[target]).resolve() == (DEPLOY / "prometheus" / "alerts.yml").resolve()
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "echoseg"]
    (target,) = [t for sc in job["static_configs"] for t in sc["targets"]]
    host, port = target.split(":")
    assert host == "echoseg" and int(port) == _container_port(services["echoseg"], 8000)
    assert job["metrics_path"] == "/metrics"


def test_grafana_is_provisioned(compose):
    mounts = _bind_mounts(compose["services"]["grafana"])
    provisioning = DEPLOY / mounts["/etc/grafana/provisioning"]
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (ds,) = datasource["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "echoseg.yml").read_text())["providers"]
    dashboards_path = providers[0]["options"]["path"]
    assert dashboards_path in mounts, "the dashboard provider reads a directory that is not mounted"
    assert (DEPLOY / mounts[dashboards_path] / "echoseg.json").exists()


def test_gpu_override_reserves_a_gpu():
    svc = yaml.safe_load((DEPLOY / "compose.gpu.yaml").read_text())["services"]["echoseg"]
    (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert svc["build"]["dockerfile"] == "deploy/Dockerfile.gpu"
    env = svc["environment"]
    assert (env["ECHOSEG_BACKEND"], env["ECHOSEG_DEVICE"]) == ("tensorrt", "cuda")


@pytest.mark.parametrize(
    "files", [["compose.yaml"], ["compose.yaml", "compose.gpu.yaml"], ["compose.yaml", "compose.tls.yaml"]]
)
def test_docker_compose_accepts_the_files(files, helpers):
    """Compose's own schema validation and merge (no engine needed for `config`)."""
    tool = helpers.require_tool("docker-compose", "Debian package docker-compose")
    args = [tool]
    for name in files:
        args += ["-f", str(DEPLOY / name)]
    merged = yaml.safe_load(helpers.run([*args, "config"], cwd=DEPLOY).stdout)
    assert set(merged["services"]) == {"echoseg", "prometheus", "grafana"}
    expected = "deploy/Dockerfile.gpu" if "compose.gpu.yaml" in files else "deploy/Dockerfile.cpu"
    assert merged["services"]["echoseg"]["build"]["dockerfile"] == expected


def test_tls_example_certificate_serves_https(helpers, tmp_path):
    """deploy/make-dev-cert.sh makes a CA and a certificate the service serves and clients verify,
    under the names Compose uses (localhost, 127.0.0.1, echoseg)."""
    import httpx

    from service.core.config import Settings
    from service.core.tls import client_context
    from service.main import create_app
    from tests.service.conftest import LiveServer, fake_backend

    helpers.require_tool("openssl", "Debian package openssl")
    helpers.run(["bash", str(DEPLOY / "make-dev-cert.sh"), str(tmp_path)])
    tls = yaml.safe_load((DEPLOY / "compose.tls.yaml").read_text())["services"]["echoseg"]["environment"]
    files = {k: tmp_path / Path(v).name for k, v in tls.items() if k.startswith("ECHOSEG_SSL_")}
    assert files and all(f.exists() for f in files.values()), files
    settings = Settings(model="unused", ssl_certfile=str(files["ECHOSEG_SSL_CERTFILE"]),
                        ssl_keyfile=str(files["ECHOSEG_SSL_KEYFILE"]))  # fmt: skip
    with LiveServer(create_app(settings, backend=fake_backend())) as server:
        resp = httpx.get(f"{server.url}/readyz", verify=client_context(str(tmp_path / "ca.pem")), timeout=10)
        assert resp.status_code == 200
