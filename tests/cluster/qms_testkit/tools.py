"""Client tools that cannot share the project venv (lm-eval's typepy wants
python-dateutil<3, kubernetes >=3): each in its own venv under
~/.cache/qms/tools-<name>-<version>/, built once under a file lock (concurrent test
runs wait for the first build), pip's cache kept warm. Like checkov in
scripts/check-deploy.sh.

    python tests/cluster/qms_testkit/tools.py lm-eval 'lm-eval[api]==0.4.13'
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("QMS_CACHE", str(Path.home() / ".cache" / "qms")))


def tool_venv(name: str, requirement: str, *extra: str) -> Path:
    """The venv (its directory) holding `requirement` (pinned: `pkg[extra]==version`) and
    `extra` requirements; built on first use, rebuilt when the requirements change."""
    match = re.search(r"==\s*([\w.+-]+)", requirement)
    if match is None:
        raise ValueError(f"{requirement!r}: pin the version (pkg==x.y.z)")
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"tools-{name}-{match.group(1)}"
    ready = venv / ".ready"  # holds the requirements it was built with
    wanted = "\n".join([requirement, *extra])
    if ready.exists() and ready.read_text() == wanted:
        return venv
    with open(root / f"tools-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.exists() and ready.read_text() == wanted:  # built while we waited
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "install", "--quiet", requirement, *extra], check=True)
        ready.write_text(wanted)
    return venv


def tool_bin(venv: Path, command: str) -> Path:
    return venv / "bin" / command


if __name__ == "__main__":
    print(tool_venv(sys.argv[1], sys.argv[2], *sys.argv[3:]))
