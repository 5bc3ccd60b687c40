"""A registry on loopback (`crane registry serve`) for signing and verifying images,
and the environment every signing tool runs with (no proxy, no public Sigstore)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from . import build

Log = Callable[[str], None]

# Loopback only: never through a proxy named in the environment.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _quiet(_: str) -> None:
    pass


def tool_env(password: str = "") -> dict[str, str]:
    env = dict(os.environ, COSIGN_PASSWORD=password)
    # Nothing of the public Sigstore instance is used; keep any TUF cache out of $HOME.
    env.setdefault("TUF_ROOT", str(Path(tempfile.gettempdir()) / "qms-cosign-tuf"))
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(proxy, None)  # loopback only
    return env


class LocalRegistry:
    """``crane registry serve`` on 127.0.0.1 with a free port; removed with all it held on exit.

    Manifests are kept in memory, blobs in a temporary directory.
    """

    def __init__(self, log: Log = _quiet) -> None:
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.host = ""

    def __enter__(self) -> LocalRegistry:
        self._dir = tempfile.TemporaryDirectory(prefix="qms-registry-")
        logfile = Path(self._dir.name) / "registry.log"
        blobs = Path(self._dir.name) / "blobs"  # on disk: a runtime image is gigabytes
        blobs.mkdir()
        argv = [str(build.binary("crane")), "registry", "serve", "--address", "127.0.0.1:0"]
        argv += ["--disk", str(blobs)]
        self._log("$ " + shlex.join(["crane", *argv[1:]]))
        with logfile.open("wb") as out:
            self._proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=tool_env()
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = re.search(rb"serving on port (\d+)", logfile.read_bytes())
            if m:
                self.host = f"127.0.0.1:{int(m.group(1))}"
                if self._ping():
                    self._log(f"registry on {self.host}")
                    return self
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        text = logfile.read_text(errors="replace")
        self.__exit__(None, None, None)
        raise RuntimeError(f"crane registry did not start on 127.0.0.1:\n{text}")

    def _ping(self) -> bool:
        try:
            with DIRECT.open(f"http://{self.host}/v2/", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def __exit__(self, *_: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"
