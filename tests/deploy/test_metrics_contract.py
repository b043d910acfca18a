"""Every metric the dashboard, the alert rules and the autoscaler use is one a running service exports,
with the labels docs/architecture.md gives it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# Labels Prometheus attaches at scrape time (or Kubernetes discovery), and the histogram's `le`.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "le"}
# Series Prometheus makes itself rather than the service.
PROMETHEUS_SERIES = {"up"}
METRIC = re.compile(r"\b(echoseg_[a-z0-9_]+|up)\b(\{[^}]*\})?")
BY_CLAUSE = re.compile(r"\b(?:by|on)\s*\(([^)]*)\)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _queries() -> dict[str, str]:
    """Where each PromQL text comes from -> the text."""
    queries = {}
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "echoseg.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queries[f"dashboard {panel['title']!r} {target['refId']}"] = target["expr"]
    for group in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            queries[f"alert {rule['alert']}"] = rule["expr"]
    adapter = yaml.safe_load((DEPLOY / "k8s" / "prometheus-adapter" / "values.yaml").read_text())
    for i, rule in enumerate(adapter["rules"]["custom"]):
        queries[f"prometheus-adapter rule {i}"] = rule["seriesQuery"]
    hpa = yaml.safe_load((DEPLOY / "k8s" / "base" / "hpa.yaml").read_text())
    for metric in hpa["spec"]["metrics"]:
        queries["HPA metric"] = metric["pods"]["metric"]["name"]
    return queries


def _contract() -> dict[str, set[str]]:
    """The metric table of docs/architecture.md: family name -> label names."""
    table = {}
    for line in (REPO / "docs" / "architecture.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`echoseg_"):
            # "`transport` (`ws`,`rest`)": the label names, not their values in parentheses.
            table[cells[0].strip("`")] = set(re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", cells[2])))
    assert table, "no metric table found in docs/architecture.md"
    return table


def _family(sample_name: str) -> str:
    """The name docs/architecture.md gives a series: histograms without suffix, counters with _total."""
    for suffix in HISTOGRAM_SUFFIXES:
        if sample_name.endswith(suffix):
            return sample_name[: -len(suffix)]
    return sample_name


def _exported_samples(text: str) -> dict[str, str]:
    """Sample names the exposition offers (even before a first observation) -> their family."""
    names = {}
    for family in text_string_to_metric_families(text):
        if family.type == "histogram":
            for suffix in HISTOGRAM_SUFFIXES:
                names[family.name + suffix] = family.name
        else:
            name = _contract_name(family)
            names[name] = name
    return names


def _contract_name(family) -> str:
    """The parser drops a counter's _total from the family name; the contract keeps it."""
    return family.name + "_total" if family.type == "counter" else family.name


@pytest.fixture(scope="module")
def exposition(echoseg_server) -> str:
    resp = httpx.get(f"{echoseg_server}/metrics", timeout=10.0)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return resp.text


def test_used_metrics_are_exported(exposition):
    exported = _exported_samples(exposition)
    missing = {}
    for source, query in _queries().items():
        for name, _ in METRIC.findall(query):
            if name not in exported and name not in PROMETHEUS_SERIES:
                missing.setdefault(name, []).append(source)
    assert not missing, f"metrics used but not exported by the service: {missing}"


def test_every_contract_metric_is_exported_and_used(exposition):
    exported = set(_exported_samples(exposition).values())
    contract = _contract()
    assert set(contract) <= exported, f"not exported: {sorted(set(contract) - exported)}"
    used = {_family(name) for q in _queries().values() for name, _ in METRIC.findall(q)}
    assert set(contract) <= used, f"not on the dashboard or in a rule: {sorted(set(contract) - used)}"


def test_used_labels_are_contract_labels():
    contract = _contract()
    for source, query in _queries().items():
        families = {_family(name) for name, _ in METRIC.findall(query)} - PROMETHEUS_SERIES
        allowed = TARGET_LABELS.union(*(contract[f] for f in families)) if families else TARGET_LABELS
        used = set()
        for _, matchers in METRIC.findall(query):
            used |= set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", matchers))
        for clause in BY_CLAUSE.findall(query):
            if "<<" not in clause:  # prometheus-adapter template, filled in by the adapter
                used |= {label.strip() for label in clause.split(",") if label.strip()}
        assert used <= allowed, f"{source}: labels {sorted(used - allowed)} are not in the contract"


def test_exported_labels_keep_to_the_contract(exposition):
    contract = _contract()
    for family in text_string_to_metric_families(exposition):
        name = _contract_name(family)
        if name not in contract:
            continue
        for sample in family.samples:
            labels = set(sample.labels) - {"le"}
            assert labels <= contract[name], f"{sample.name} has labels {sorted(labels)}"
