"""Prometheus configuration and alert rules: promtool's own checks and unit tests, and the
Kubernetes PrometheusRule kept identical to alerts.yml."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROM = DEPLOY / "prometheus"


def _alerts() -> list[dict]:
    groups = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_config(promtool, helpers):
    out = helpers.run([promtool, "check", "config", str(PROM / "prometheus.yml")])
    assert "SUCCESS" in out.stdout


def test_promtool_check_rules(promtool, helpers):
    out = helpers.run([promtool, "check", "rules", str(PROM / "alerts.yml")])
    assert f"SUCCESS: {len(_alerts())} rules found" in out.stdout


def test_promtool_test_rules(promtool, helpers):
    out = helpers.run([promtool, "test", "rules", str(PROM / "alerts_test.yml")])
    assert "SUCCESS" in out.stdout


def test_every_alert_has_a_firing_and_a_silent_case():
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    cases = [case for t in tests for case in t.get("alert_rule_test", [])]
    for rule in _alerts():
        name = rule["alert"]
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c.get("exp_alerts") for c in mine), f"{name}: no case where it fires"
        assert any(not c.get("exp_alerts") for c in mine), f"{name}: no case where it stays silent"


def test_every_alert_is_documented_with_a_runbook():
    doc = (DEPLOY.parent / "docs" / "deploy.md").read_text()
    for rule in _alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["runbook_url"] == f"docs/deploy.md#{name.lower()}", name
        assert f"### {name}" in doc, f"{name} is not explained in docs/deploy.md"


def _renderer():
    path = DEPLOY / "k8s" / "render_prometheusrule.py"
    spec = importlib.util.spec_from_file_location("render_prometheusrule", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prometheusrule_is_alerts_yml():
    """The PrometheusRule on disk is exactly what the renderer makes from alerts.yml."""
    on_disk = (DEPLOY / "k8s" / "base" / "prometheusrule.yaml").read_text()
    assert on_disk == _renderer().render(), "run deploy/k8s/render_prometheusrule.py"
    groups = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
    assert yaml.safe_load(on_disk)["spec"]["groups"] == groups


def test_prometheusrule_passes_promtool(promtool, helpers, tmp_path):
    spec = yaml.safe_load((DEPLOY / "k8s" / "base" / "prometheusrule.yaml").read_text())["spec"]
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(spec))
    helpers.run([promtool, "check", "rules", str(rules)])
