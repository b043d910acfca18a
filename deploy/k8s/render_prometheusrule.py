"""Write the Kubernetes PrometheusRule from deploy/prometheus/alerts.yml, so both stay one set of rules.

.venv/bin/python deploy/k8s/render_prometheusrule.py          # rewrite base/prometheusrule.yaml
.venv/bin/python deploy/k8s/render_prometheusrule.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[1]
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
TARGET = DEPLOY / "k8s" / "base" / "prometheusrule.yaml"
HEADER = (
    "# Generated from deploy/prometheus/alerts.yml by deploy/k8s/render_prometheusrule.py; do not edit.\n"
    "# The rules are unit-tested with promtool against alerts.yml (deploy/prometheus/alerts_test.yml).\n"
)


class _BlockDumper(yaml.SafeDumper):
    """Dumps multi-line strings (PromQL expressions) as literal blocks, as they are written by hand."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def render(alerts_path: Path = ALERTS) -> str:
    """The PrometheusRule manifest (YAML text) carrying the groups of ``alerts_path``."""
    groups = yaml.safe_load(alerts_path.read_text())["groups"]
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "echoseg",
            "labels": {"app.kubernetes.io/name": "echoseg", "release": "prometheus"},
        },
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(manifest, Dumper=_BlockDumper, sort_keys=False, width=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file on disk differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date; run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
