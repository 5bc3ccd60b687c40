"""Start-up you can watch: the phase the server is in (checking-fit, verifying, loading,
warming-up, then ready, or failed), how far it is where that can be counted (verifying:
files and bytes), how fast and when it should be done. Shown in /ready's body while the
server is not ready (the status code stays 503), as Prometheus gauges, and as log lines
at phase changes and at most every `log_every` seconds between them; the last line
breaks the start-up down by phase. Updated from the loading thread, read by requests."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Gauge

log = logging.getLogger(__name__)

StartupPhase = Literal["starting", "checking-fit", "verifying", "loading", "warming-up", "ready",
                       "failed"]  # fmt: skip
PHASES: tuple[StartupPhase, ...] = (
    "starting", "checking-fit", "verifying", "loading", "warming-up", "ready", "failed",
)  # fmt: skip


def _size(count: float) -> str:
    return f"{count / 1024**3:.1f} GiB" if count >= 1024**3 // 10 else f"{count / 1024**2:.0f} MiB"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


class StartupProgress:
    def __init__(
        self,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.monotonic,
        log_every: float = 5.0,
    ) -> None:
        self._clock = clock
        self._log_every = log_every
        self._lock = threading.Lock()
        self._began = clock()
        self.phase: StartupPhase = "starting"
        self._phase_began = self._began
        self._last_log = self._began
        self._files = (0, 0)  # done, total
        self._bytes = (0, 0)
        self.durations: dict[str, float] = {}  # seconds per phase that ended
        self._phase_gauge = Gauge(
            "qms_startup_phase",
            "1 for the start-up phase the server is in (ready once serving).",
            ["phase"],
            registry=registry,
        )
        self._bytes_gauge = Gauge(
            "qms_startup_bytes",
            "Bytes of the current start-up phase (verifying: the listed files), done and total.",
            ["state"],
            registry=registry,
        )
        self._files_gauge = Gauge(
            "qms_startup_files",
            "Files of the current start-up phase (verifying), done and total.",
            ["state"],
            registry=registry,
        )
        self._set_gauges()

    def begin(self, phase: StartupPhase, files: int = 0, nbytes: int = 0) -> None:
        """Enter `phase`; `files` and `nbytes` are its totals where it counts them."""
        with self._lock:
            now = self._clock()
            self.durations[self.phase] = now - self._phase_began
            self.phase, self._phase_began, self._last_log = phase, now, now
            self._files, self._bytes = (0, files), (0, nbytes)
            self._set_gauges()
        if phase == "ready":
            parts = ", ".join(
                f"{name} {seconds:.1f}s" for name, seconds in self.durations.items()
                if name != "starting"
            )  # fmt: skip
            log.info("startup: ready after %.1fs (%s)", now - self._began, parts)
        elif phase != "failed":
            counted = f" ({files} files, {_size(nbytes)})" if files else ""
            log.info("startup: %s%s", phase, counted)

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        """Count `files` and `nbytes` more done in the current phase."""
        with self._lock:
            done_files, total_files = self._files
            done_bytes, total_bytes = self._bytes
            self._files = (done_files + files, total_files)
            self._bytes = (done_bytes + nbytes, total_bytes)
            self._set_gauges()
            now = self._clock()
            due = now - self._last_log >= self._log_every
            if due:
                self._last_log = now
        if due:
            log.info("startup: %s", self.describe())

    def snapshot(self) -> dict[str, Any]:
        """What /ready's body shows while not ready."""
        with self._lock:
            now = self._clock()
            body: dict[str, Any] = {
                "phase": self.phase,
                "phaseSeconds": round(now - self._phase_began, 1),
                "startedSecondsAgo": round(now - self._began, 1),
            }
            (done_files, total_files), (done_bytes, total_bytes) = self._files, self._bytes
            elapsed = now - self._phase_began
        if total_files:
            body.update(filesDone=done_files, filesTotal=total_files)
        if total_bytes:
            body.update(bytesDone=done_bytes, bytesTotal=total_bytes,
                        percent=round(100 * done_bytes / total_bytes, 1))  # fmt: skip
            if done_bytes and elapsed > 0:
                rate = done_bytes / elapsed
                body.update(bytesPerSecond=int(rate),
                            etaSeconds=round((total_bytes - done_bytes) / rate, 1))  # fmt: skip
        return body

    def describe(self) -> str:
        """One line: `verifying 41% (7/16 files, 12.3/30.1 GiB, 85 MB/s, ETA 3m30s)`."""
        body = self.snapshot()
        line = str(body["phase"])
        if "percent" in body:
            line += f" {body['percent']:.0f}%"
        details = []
        if "filesTotal" in body:
            details.append(f"{body['filesDone']}/{body['filesTotal']} files")
        if "bytesTotal" in body:
            done, total = body["bytesDone"], body["bytesTotal"]
            details.append(f"{_size(done).split()[0]}/{_size(total)}")
        if "bytesPerSecond" in body:
            details.append(f"{body['bytesPerSecond'] / 1e6:.0f} MB/s")
            details.append(f"ETA {_duration(body['etaSeconds'])}")
        if not details:
            details.append(f"{_duration(body['phaseSeconds'])} so far")
        return f"{line} ({', '.join(details)})"

    def _set_gauges(self) -> None:
        for phase in PHASES:
            self._phase_gauge.labels(phase).set(1 if phase == self.phase else 0)
        for gauge, (done, total) in ((self._files_gauge, self._files),
                                     (self._bytes_gauge, self._bytes)):  # fmt: skip
            gauge.labels("done").set(done)
            gauge.labels("total").set(total)
