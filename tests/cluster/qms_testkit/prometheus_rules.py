"""The project's rules as Prometheus reads them, from deploy/monitoring/prometheusrule.yaml.

The Prometheus Operator turns a PrometheusRule's `spec` into a rule file; this does
the same for promtool and for the Prometheus the tests start:

    python3 tests/cluster/qms_testkit/prometheus_rules.py OUT.yaml [PROMETHEUSRULE.yaml]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS_RULE = ROOT / "deploy" / "monitoring" / "prometheusrule.yaml"
ALERT_TESTS = ROOT / "tests" / "monitoring"  # the *.test.yaml files
RULE_FILE_NAME = "qms-rules.yaml"  # the name the alert tests' rule_files use


def rule_file(path: Path = PROMETHEUS_RULE) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    if doc.get("kind") != "PrometheusRule":
        raise ValueError(f"{path}: not a PrometheusRule")
    return {"groups": doc["spec"]["groups"]}


def rules(path: Path = PROMETHEUS_RULE) -> list[dict[str, Any]]:
    return [rule for group in rule_file(path)["groups"] for rule in group["rules"]]


def write_rule_file(out: Path, path: Path = PROMETHEUS_RULE) -> Path:
    out.write_text(yaml.safe_dump(rule_file(path), sort_keys=False))
    return out


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    source = Path(sys.argv[2]) if len(sys.argv) == 3 else PROMETHEUS_RULE
    write_rule_file(Path(sys.argv[1]), source)
