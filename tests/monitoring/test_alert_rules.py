"""The PrometheusRule under promtool: rules check, alert unit tests, and tests of the tests.

tests/monitoring/*.test.yaml gives input series and the alerts expected at
given times. Every alert has a case where it fires and one where it stays silent,
and the unit tests fail when an alert's expression is replaced by one that never
or always holds, so a case that asserts nothing is caught.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from qms_testkit import prometheus_rules

ALERTS = [rule["alert"] for rule in prometheus_rules.rules() if "alert" in rule]
RECORDS = [rule["record"] for rule in prometheus_rules.rules() if "record" in rule]


def _promtool(prometheus_bin: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(prometheus_bin / "promtool"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _test_files(rules_dir: Path) -> list[str]:
    return sorted(p.name for p in rules_dir.glob("*.test.yaml"))


def _cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in sorted(prometheus_rules.ALERT_TESTS.glob("*.test.yaml")):
        cases.extend(yaml.safe_load(path.read_text())["tests"])
    return cases


def test_the_rule_file_has_the_expected_rules() -> None:
    assert ALERTS == [
        "QMSServerNotReady", "QMSServerDegraded", "QMSServerMetricsAbsent",
        "QMSRuntimeTargetsAbsent", "QMSOperatorDown", "QMSHighErrorRate",
        "QMSQueueGrowing", "QMSSlowFirstToken",
    ]  # fmt: skip
    assert RECORDS == [
        "qms:deployment_replicas_desired", "qms:deployment_replicas_ready",
        "qms:requests:rate5m", "qms:generation_tokens:rate5m",
    ]  # fmt: skip


def test_promtool_check_rules(prometheus_bin: Path, rules_dir: Path) -> None:
    result = _promtool(
        prometheus_bin, "check", "rules", prometheus_rules.RULE_FILE_NAME, cwd=rules_dir
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS) + len(RECORDS)} rules found" in result.stdout


def test_promtool_alert_unit_tests_pass(prometheus_bin: Path, rules_dir: Path) -> None:
    result = _promtool(prometheus_bin, "test", "rules", *_test_files(rules_dir), cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("alert", ALERTS)
def test_every_alert_has_a_firing_and_a_silent_case(alert: str) -> None:
    checks = [c for case in _cases() for c in case.get("alert_rule_test", [])]
    fires = [c for c in checks if c["alertname"] == alert and c["exp_alerts"]]
    silent = [c for c in checks if c["alertname"] == alert and not c["exp_alerts"]]
    assert fires, f"no case where {alert} fires"
    assert silent, f"no case where {alert} stays silent"


@pytest.mark.parametrize("broken", ["vector(1) == 0", "vector(1)"], ids=["never", "always"])
@pytest.mark.parametrize("alert", ALERTS)
def test_the_unit_tests_catch_a_broken_alert(
    prometheus_bin: Path, rules_dir: Path, alert: str, broken: str
) -> None:
    rule_file = prometheus_rules.rule_file()
    for group in rule_file["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = broken
    (rules_dir / prometheus_rules.RULE_FILE_NAME).write_text(yaml.safe_dump(rule_file))
    result = _promtool(prometheus_bin, "test", "rules", *_test_files(rules_dir), cwd=rules_dir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"alertname: {alert}," in result.stdout + result.stderr
