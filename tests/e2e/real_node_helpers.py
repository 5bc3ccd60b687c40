"""Helpers for the real-node e2e tests: the machine's state, the pods, the load client."""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
from cluster_helpers import condition as condition

from qms_cluster import Cluster


def _lines(*argv: str) -> set[str]:
    r = subprocess.run(argv, capture_output=True, text=True)
    return set(r.stdout.splitlines()) if r.returncode == 0 else set()


def _iptables_rules() -> set[str]:
    rules = set()
    for table in ("filter", "nat", "mangle", "raw"):
        for line in _lines("iptables-save", "-t", table):
            if line.startswith(("-A", ":")):
                rules.add(f"{table} {line.split(' [')[0]}")  # no packet counters
    return rules


def host_snapshot() -> dict[str, set[str]]:
    """What a real node could leave behind on the machine."""
    mounts = {ln.split()[1] for ln in Path("/proc/mounts").read_text().splitlines()}
    links = {ln.split(":")[1].strip().split("@")[0] for ln in _lines("ip", "-o", "link", "show")}
    netns = {ln.split()[0] for ln in _lines("ip", "netns", "list") if ln.strip()}
    addrs = {" ".join(ln.split()[1:4]) for ln in _lines("ip", "-o", "addr", "show")}
    routes = {ln.strip() for ln in _lines("ip", "route", "show", "table", "all")}
    return {
        "routes": routes,
        "mounts": mounts,
        "links": links,
        "addresses": addrs,
        "netns": netns,
        "iptables": _iptables_rules(),
    }


def leftovers(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, list[str]]:
    return {k: sorted(after[k] - before[k]) for k in before if after[k] - before[k]}


def kube_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube_json(
        cluster, "get", "pods", "-n", namespace, "-l", selector
    )["items"]
    return items


def ready_pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = []
    for p in pods(cluster, namespace, selector):
        conds = {c["type"]: c["status"] for c in p.get("status", {}).get("conditions", [])}
        if conds.get("Ready") == "True" and not p["metadata"].get("deletionTimestamp"):
            out.append(p)
    return out


def exec_in(
    cluster: Cluster, namespace: str, pod: str, command: str
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("exec", "-n", namespace, pod, "--", *shlex.split(command), check=False)


@dataclass
class LoadCounts:
    """What a client saw: each request succeeded, was refused before it was
    accepted (connection refused, 503 or 429 before any answer), or failed."""

    sent: int = 0
    succeeded: int = 0
    refused: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        return (
            f"sent={self.sent} succeeded={self.succeeded} "
            f"refused_before_acceptance={self.refused} failed={self.failed}"
        )

    def add(self, outcome: str, detail: str = "") -> None:
        """One request's outcome: "ok", "refused" or anything else (failed)."""
        self.sent += 1
        if outcome == "ok":
            self.succeeded += 1
        elif outcome == "refused":
            self.refused += 1
            self.refusals[detail] += 1
        else:
            self.failed += 1
            self.failures.append(detail)


class LoadClient:
    """Threads that keep asking the model through the Service, one new connection
    per request (so each one goes through kube-proxy's current endpoints)."""

    def __init__(self, base_url: str, model: str, threads: int = 3) -> None:
        self.base_url, self.model = base_url, model
        self.counts = LoadCounts()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> LoadClient:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)

    def _record(self, outcome: str, detail: str = "") -> None:
        with self._lock:
            self.counts.add(outcome, detail)

    def _one(self, client: httpx.Client, i: int) -> None:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": f"count to {i % 7}"}],
            "max_tokens": 12,
            "temperature": 0,
        }
        try:
            r = client.post(f"{self.base_url}/v1/chat/completions", json=body)
        except httpx.ConnectError as e:
            self._record("refused", f"connect: {type(e).__name__}")
            return
        except httpx.HTTPError as e:
            self._record("failed", f"{type(e).__name__}: {e}")
            return
        if r.status_code in (429, 503):
            self._record("refused", str(r.status_code))
            return
        if r.status_code != 200:
            self._record("failed", f"{r.status_code}: {r.text[:200]}")
            return
        choice = r.json()["choices"][0]
        if choice["finish_reason"] not in ("stop", "length"):
            self._record("failed", f"finish_reason {choice['finish_reason']}")
            return
        self._record("ok")

    def _run(self) -> None:
        i = 0
        # No keep-alive: a connection pinned to a terminating pod would hide what
        # a new client sees, and each request tests the Service's endpoints anew.
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0), limits=limits) as client:
            while not self._stop.is_set():
                self._one(client, i)
                i += 1
                time.sleep(0.05)


class KeepAliveLoad:
    """What users run: threads each with the official openai client and its default
    connection pool (connections kept alive, pinned by kube-proxy to the pod they were
    opened to), ``max_retries=0`` so that nothing is hidden; ``streams`` of the threads
    stream their answers. Counts per kind: "keep-alive" and "stream"."""

    def __init__(self, base_url: str, model: str, threads: int = 3, streams: int = 1) -> None:
        self.base_url, self.model = base_url, model
        self.counts = {"keep-alive": LoadCounts(), "stream": LoadCounts()}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        kinds = ["stream"] * streams + ["keep-alive"] * threads
        self._threads = [
            threading.Thread(target=self._run, args=(kind,), daemon=True) for kind in kinds
        ]

    def __enter__(self) -> KeepAliveLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)

    @property
    def succeeded(self) -> int:
        return sum(c.succeeded for c in self.counts.values())

    def snapshot(self) -> dict[str, tuple[int, int, int, int]]:
        """(sent, succeeded, refused, failed) per kind, now."""
        with self._lock:
            return {k: (c.sent, c.succeeded, c.refused, c.failed) for k, c in self.counts.items()}

    def since(
        self, before: dict[str, tuple[int, int, int, int]]
    ) -> dict[str, tuple[int, int, int, int]]:
        now = self.snapshot()
        return {
            k: (
                now[k][0] - before[k][0],
                now[k][1] - before[k][1],
                now[k][2] - before[k][2],
                now[k][3] - before[k][3],
            )
            for k in now
        }

    def line(self) -> str:
        return "; ".join(f"{kind}: {c.line()}" for kind, c in self.counts.items())

    def _record(self, kind: str, outcome: str, detail: str = "") -> None:
        with self._lock:
            self.counts[kind].add(outcome, detail)

    def _one(self, client: openai.OpenAI, kind: str, i: int) -> None:
        messages: Any = [{"role": "user", "content": f"count to {i % 7}"}]
        try:
            if kind == "stream":
                finish = None
                for chunk in client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=12, temperature=0, stream=True
                ):
                    if chunk.choices and chunk.choices[0].finish_reason:
                        finish = chunk.choices[0].finish_reason
            else:
                answer = client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=12, temperature=0
                )
                finish = answer.choices[0].finish_reason
        except openai.APIStatusError as e:
            outcome = "refused" if e.status_code in (429, 503) else "failed"
            self._record(kind, outcome, f"{e.status_code}: {str(e)[:200]}")
            return
        except openai.APIConnectionError as e:
            # The openai client carries an httpx of its own (httpx2): go by the name.
            cause = type(e.__cause__).__name__
            refused = cause == "ConnectError"
            self._record(
                kind,
                "refused" if refused else "failed",
                f"{cause}: {e.__cause__} at {time.strftime('%H:%M:%S')}",
            )
            return
        if finish not in ("stop", "length"):
            self._record(kind, "failed", f"finish_reason {finish}")
            return
        self._record(kind, "ok")

    def _run(self, kind: str) -> None:
        i = 0
        client = openai.OpenAI(
            base_url=f"{self.base_url}/v1", api_key="unused", max_retries=0, timeout=60.0
        )
        with client:
            while not self._stop.is_set():
                self._one(client, kind, i)
                i += 1
                time.sleep(0.05)


class EndpointWatch:
    """`kubectl get endpointslices -w` in the background (started again when a watch
    ends, as it does when the API server stalls), each change with its time: what
    kube-proxy was told while a fault ran (printed when a fault test loses requests)."""

    TEMPLATE = (
        "{.type} {range .object.endpoints[*]}{.targetRef.name}={.addresses[0]}"
        " ready={.conditions.ready} serving={.conditions.serving}"
        ' terminating={.conditions.terminating}; {end}{"\\n"}'
    )

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.argv = [
            str(cluster.bin_dir / "kubectl"), "--kubeconfig", str(cluster.kubeconfig),
            "get", "endpointslices", "-n", namespace, "-w", "--output-watch-events",
            "-o", f"jsonpath={self.TEMPLATE}",
        ]  # fmt: skip
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            self._proc = subprocess.Popen(
                self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                self.lines.append(f"{time.strftime('%H:%M:%S')} {line.rstrip()}")
            self._proc.wait()
            time.sleep(0.2)

    def stop(self) -> list[str]:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
        self._reader.join(10)
        return self.lines
