"""A real Prometheus for the tests: loopback only, a temp dir, sub-second scrapes.

`PrometheusServer` writes a config with static scrape targets (the labels the
PodMonitor's Kubernetes relabelling would give them: job, namespace, pod,
app_kubernetes_io_instance), loads the project's rules and answers PromQL through
Prometheus's HTTP API. `adapter_query` expands the Prometheus Adapter's
`metricsQuery` template as the adapter does for named pods.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from qms_testkit import prometheus_rules
from qms_testkit.net import free_port

ROOT = prometheus_rules.ROOT
ADAPTER_VALUES = ROOT / "deploy" / "monitoring" / "prometheus-adapter-values.yaml"
DASHBOARD = ROOT / "deploy" / "monitoring" / "qms-dashboard.json"
SCRAPE_INTERVAL = "500ms"


class PrometheusServer:
    """`prometheus` on 127.0.0.1:<free port>, its TSDB and config in `workdir`."""

    def __init__(
        self, prometheus_bin: Path, workdir: Path, jobs: dict[str, list[dict[str, Any]]]
    ) -> None:
        """`jobs`: job name -> static_configs ({"targets": [...], "labels": {...}})."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        rules = prometheus_rules.write_rule_file(workdir / prometheus_rules.RULE_FILE_NAME)
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {"job_name": job, "scrape_timeout": SCRAPE_INTERVAL, "static_configs": statics}
                for job, statics in jobs.items()
            ],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                str(prometheus_bin / "prometheus"),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=self._log,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited {self.process.returncode}: {self.logs()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready after {timeout}s: {self.logs()}")

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    # ---- HTTP API
    def _get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=30)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query; the vector's samples as {"metric": {...}, "value": [t, "v"]}."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", **params)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        values: list[str] = self._get(f"/api/v1/label/{label}/values", **{"match[]": match})
        return values

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._get("/api/v1/targets")["activeTargets"]
        return active

    def rule_health(self) -> dict[str, str]:
        """Each rule's name -> its health after evaluation ("ok", "err", "unknown")."""
        groups = self._get("/api/v1/rules")["groups"]
        return {rule.get("name", ""): rule["health"] for group in groups for rule in group["rules"]}

    def wait_for(self, expr: str, want: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Poll `expr` until `want(result)` holds (a bounded wait on scrapes)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if want(result) or time.monotonic() > deadline:
                return result
            time.sleep(0.2)


def values_by(result: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(sample["metric"].get(label, "") for label in labels): float(sample["value"][1])
        for sample in result
    }


def adapter_rule() -> dict[str, Any]:
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    (rule,) = [r for r in values["rules"]["custom"] if r["name"]["as"] == "requests_per_second"]
    return dict(rule)


def adapter_query(namespace: str, pods: list[str]) -> str:
    """The adapter rule's metricsQuery for these pods, expanded as prometheus-adapter does.

    For a namespaced Pods metric the adapter fills <<.Series>> with the series name,
    <<.LabelMatchers>> with `namespace="NS",pod="NAME"` (`pod=~"A|B"` for several
    pods, labels from the rule's resource overrides), <<.GroupBy>> with `pod`.
    """
    rule = adapter_rule()
    overrides = rule["resources"]["overrides"]
    by_resource = {v["resource"]: label for label, v in overrides.items()}
    namespace_label, pod_label = by_resource["namespace"], by_resource["pod"]
    series = rule["name"]["matches"].removeprefix("^").removesuffix("$")
    if len(pods) == 1:
        pod_matcher = f'{pod_label}="{pods[0]}"'
    else:
        pod_matcher = f'{pod_label}=~"{"|".join(pods)}"'
    template: str = rule["metricsQuery"]
    return (
        template.replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", f'{namespace_label}="{namespace}",{pod_matcher}')
        .replace("<<.GroupBy>>", pod_label)
    )
