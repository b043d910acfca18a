"""The Grafana dashboard: the panels operators need, the provisioned datasource, and PromQL that
Prometheus itself accepts (each query goes through `promtool check rules` as a recording rule)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
GRAFANA = DEPLOY / "grafana"
REQUIRED_PANELS = (
    "Frame latency p50 / p99 (32 ms budget)",
    "Budget-miss rate",
    "Active streams",
    "Frames per second by outcome",
    "Batch size distribution",
    "Errors by code",
    "Inference time by backend (p50 / p99)",
)


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((GRAFANA / "dashboards" / "echoseg.json").read_text())


def _by_title(dashboard: dict) -> dict[str, dict]:
    return {p["title"]: p for p in dashboard["panels"]}


def _exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_required_panels(dashboard):
    panels = _by_title(dashboard)
    missing = [t for t in REQUIRED_PANELS if t not in panels]
    assert not missing, f"missing panels: {missing}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "echoseg-service"


def test_latency_panel_shows_the_budget_line(dashboard):
    panel = _by_title(dashboard)["Frame latency p50 / p99 (32 ms budget)"]
    exprs = " ".join(t["expr"] for t in panel["targets"])
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["unit"] == "s"
    assert [s["value"] for s in defaults["thresholds"]["steps"]] == [None, 0.032]
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "line"


def test_panels_use_the_provisioned_datasource(dashboard):
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = provisioned["datasources"][0]["uid"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"]), panel["title"]


def test_every_query_is_valid_promql(dashboard, promtool, helpers, tmp_path):
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "1m")}
        for i, expr in enumerate(_exprs(dashboard))
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = helpers.run([promtool, "check", "rules", str(path)])
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout
