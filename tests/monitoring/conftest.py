"""Monitoring tests: Debian's Prometheus 2.42 and promtool (qms_testkit.prometheus_binaries)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

# The runtime tests' helpers (real `qms-runtime serve` processes), reused as they are.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))

import pytest

from qms_testkit import prometheus_binaries, prometheus_rules


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    """The directory of `prometheus` and `promtool`, unpacked from Debian's package once."""
    return prometheus_binaries.ensure()


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The rules extracted from the PrometheusRule, beside copies of the alert tests."""
    prometheus_rules.write_rule_file(tmp_path / prometheus_rules.RULE_FILE_NAME)
    for test_file in prometheus_rules.ALERT_TESTS.glob("*.test.yaml"):
        shutil.copy(test_file, tmp_path / test_file.name)
    return tmp_path
