"""Start, identify and stop the control-plane processes.

Each component runs in its own session (so it outlives the ``qms-cluster up``
command and its whole process group can be signalled), with stdout and stderr
in a log file. A process is identified by pid *and* its start time from
/proc, so a reused pid is never mistaken for a component, nor signalled.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Popen objects of the components this Python process started, so that they
# are reaped (no zombies, no ResourceWarning) and their exit is seen at once.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Proc:
    name: str
    pid: int
    start_time: int  # /proc/<pid>/stat field 22, 0 where /proc is missing
    log: Path
    argv: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "start_time": self.start_time,
            "log": str(self.log),
            "argv": list(self.argv),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Proc:
        return cls(d["name"], int(d["pid"]), int(d["start_time"]), Path(d["log"]), tuple(d["argv"]))


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of a pid, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1.

    Chosen below the ephemeral range, so that no outgoing connection takes
    one between this check and the component's own bind.
    """
    low, high = 20000, max(20000 + 4 * n, _ephemeral_low())
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", random.randrange(low, high)))
            except OSError:
                s.close()
                continue
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    _CHILDREN[p.pid] = p
    st = _stat(p.pid)
    return Proc(name, p.pid, st[1] if st else 0, log, tuple(argv))


def alive(proc: Proc) -> bool:
    child = _CHILDREN.get(proc.pid)
    if child is not None:
        return child.poll() is None
    st = _stat(proc.pid)
    if st is None:
        if not Path("/proc/self/stat").exists():  # no /proc: best effort
            try:
                os.kill(proc.pid, 0)
            except OSError:
                return False
            return True
        return False
    state, start = st
    if start != proc.start_time:
        return False  # the pid was reused by another process
    if state in ("Z", "X"):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(proc.pid, os.WNOHANG)
        return False
    return True


def exit_code(proc: Proc) -> int | None:
    child = _CHILDREN.get(proc.pid)
    return child.poll() if child is not None else None


def stop(procs: list[Proc], grace: float = 10.0) -> None:
    """SIGTERM every live process group, then SIGKILL what is left after grace."""
    live = [p for p in procs if alive(p)]
    for p in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        time.sleep(0.05)
        live = [p for p in live if alive(p)]
    for p in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while live and time.monotonic() < deadline:
        time.sleep(0.05)
        live = [p for p in live if alive(p)]
    for p in procs:
        child = _CHILDREN.pop(p.pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
    if live:
        names = ", ".join(f"{p.name} (pid {p.pid})" for p in live)
        raise RuntimeError(f"could not stop {names}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(data.splitlines()[-lines:])


def run_showing(
    argv: list[str],
    log: Callable[[str], None],
    what: str,
    show: Callable[[str], str | None],
    step: Callable[[str], bool] = lambda _: True,
    tick: float = 30.0,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Run a long command (a build, apt): log what ``show`` makes of each output line
    (None: nothing) and, every ``tick`` seconds, how long it has run and the last line
    ``step`` picked; a failure raises with the output's tail."""
    t0 = time.monotonic()
    last = ["start"]
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    done = threading.Event()
    tail: list[str] = []

    def ticker() -> None:
        while not done.wait(tick):
            log(f"  {what}: {time.monotonic() - t0:.0f}s, still at: {last[0][:100]}")

    threading.Thread(target=ticker, daemon=True).start()
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = [*tail[-60:], line]
        if step(line):
            last[0] = line
        said = show(line)
        if said is not None:
            log(said)
    rc = proc.wait()
    done.set()
    if rc != 0:
        raise RuntimeError(f"{what} failed (rc={rc}):\n" + "\n".join(tail))
