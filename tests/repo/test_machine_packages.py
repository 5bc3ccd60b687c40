"""What a fresh machine must have (issue 25): one declared list, installed from there.

The image engine is looked for on a PATH that this test controls; apt-get there is a
stand-in script (named so: no real apt run in a unit test) that records its argv
and, on `install`, puts the packages' commands on that PATH, as apt would.
"""

from __future__ import annotations

import ast
import os
import re
import stat
import sys
import tomllib
from pathlib import Path

import pytest

from qms_cluster import build, images, node, packages

ROOT = Path(__file__).resolve().parents[2]

FAKE_APT = """#!/bin/sh
echo "$@" >> "{log}"
if [ "$1" = install ]; then
  for p in "$@"; do
    case "$p" in -*|install) ;; *)
      printf '#!/bin/sh\\n' > "{bin}/$p"; chmod +x "{bin}/$p"; echo "Setting up $p (1.0) ..." ;;
    esac
  done
fi
"""


def _path_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, apt: bool) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if apt:
        script = bin_dir / "apt-get"
        script.write_text(FAKE_APT.format(log=tmp_path / "apt.log", bin=bin_dir))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    # sh and printf/chmod for the stand-in apt-get, and nothing else of this machine.
    for tool in ("sh", "chmod"):
        (bin_dir / tool).symlink_to(Path("/bin") / tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_images_install_buildah_and_mmdebstrap_when_no_engine_is_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _path_with(tmp_path, monkeypatch, apt=True)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    said: list[str] = []
    assert images.engine(said.append) == "buildah"
    assert (tmp_path / "apt.log").read_text().splitlines() == [
        "update -q",
        "install -y -q --no-install-recommends buildah mmdebstrap",
    ]
    assert said[0] == "installing Debian packages for building images: buildah mmdebstrap"
    assert said[1:3] == ["  Setting up buildah (1.0) ...", "  Setting up mmdebstrap (1.0) ..."]
    assert re.fullmatch(r"installed buildah mmdebstrap in \d+s", said[3])
    # Now present: a second call installs nothing.
    assert images.engine(said.append) == "buildah"
    assert len((tmp_path / "apt.log").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    ("euid", "apt", "why"), [(1000, True, "not root"), (0, False, "no apt-get")]
)
def test_images_without_root_or_apt_name_the_packages_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, euid: int, apt: bool, why: str
) -> None:
    _path_with(tmp_path, monkeypatch, apt=apt)
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    with pytest.raises(RuntimeError) as e:
        images.engine(lambda _: None)
    assert str(e.value) == (
        f"building images needs the Debian packages buildah mmdebstrap ({why}): "
        "apt-get install --no-install-recommends buildah mmdebstrap"
    )
    assert not (tmp_path / "apt.log").exists()


def test_the_real_node_installs_its_packages_from_the_same_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _path_with(tmp_path, monkeypatch, apt=True)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    cni = [c for c in node.COMMANDS if c.startswith("/")]
    assert [c.rsplit("/", 1)[1] for c in cni] == ["bridge", "host-local", "loopback", "portmap"]
    here = [c for c in node.COMMANDS if not c.startswith("/")]  # the plugins: absent here
    monkeypatch.setattr(
        node, "COMMANDS", (*here, *(f"{tmp_path}/cni/{c.rsplit('/', 1)[1]}" for c in cni))
    )
    assert node.available() == (True, "root, cgroups and Debian's packages")
    node.ensure_packages(lambda _: None)
    installed = (tmp_path / "apt.log").read_text().splitlines()[1].split()[4:]
    assert installed == [
        "containerd",
        "containernetworking-plugins",
        "gcc",
        "iproute2",
        "iptables",
        "runc",
    ]
    (bin_dir / "apt-get").unlink()
    for cmd in ("runc", "iptables", "iptables-save", "iptables-restore", "ip", "ctr"):
        (bin_dir / cmd).write_text("#!/bin/sh\n")
        (bin_dir / cmd).chmod(0o755)
    assert node.available() == (
        False,
        "missing Debian packages containernetworking-plugins and no apt-get",
    )


def test_cosign_and_crane_are_built_only_for_the_signing_tier() -> None:
    assert [s.name for s in build.ALL] == ["k8s", "etcd", "kwok"]
    assert [s.name for s in build.SIGNING] == ["cosign", "crane"]
    assert build.binary("cosign") == build.COSIGN.bin_dir / "cosign"


# ---- every command the code runs is declared --------------------------------------------

RUNNERS = {"run", "Popen", "check_output", "check_call", "call", "which", "_run", "_buildah"}
SHELL_WORDS = {
    "if", "then", "else", "elif", "fi", "for", "do", "done", "while", "case", "esac", "in",
    "echo", "exit", "export", "source", "set", "cd", "trap", "local", "return", "exec",
    "printf", "read", "shift", "wait", "true", "false", "test", "[", "[[", "]", "]]",
    "command", "eval", "unset", "declare", "break", "continue", ":", "{", "}", "(", ")",
}  # fmt: skip
# A minimal Debian system's own tools that the scripts use beside packages.BASE.
COREUTILS = {
    "basename", "cat", "curl", "date", "dirname", "grep", "head", "ls", "mktemp", "mv",
    "sed", "seq", "sleep", "sort", "tail", "tee", "touch", "tr", "wc", "xargs", "awk",
    "du", "sha256sum",
}  # fmt: skip


def _python_heads(path: Path) -> set[str]:
    heads = set()
    for call in ast.walk(ast.parse(path.read_text())):
        if not isinstance(call, ast.Call) or not call.args:
            continue
        f = call.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if name not in RUNNERS:
            continue
        first = call.args[0]
        if isinstance(first, ast.List | ast.Tuple) and first.elts:
            first = first.elts[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            heads.add("buildah" if name == "_buildah" else first.value.split()[0])
    return heads


def _shell_heads(path: Path) -> set[str]:
    """The first word of each command of a script (not of heredocs or continued lines)."""
    heads, heredoc, continued, in_array = set(), None, False, False
    text = path.read_text()
    functions = set(re.findall(r"^(\w+)\(\) \{", text, re.M))
    for raw in text.splitlines():
        line = re.sub(r"'[^']*'|\"[^\"]*\"", "''", raw.strip())  # no quoted text
        if heredoc:
            heredoc = None if raw.strip() == heredoc else heredoc
            continue
        if in_array or re.match(r"\w+\+?=\(", line):  # a bash array (over several lines)
            in_array = not line.endswith(")")
            continue
        if m := re.search(r"<<-?'?(\w+)'?", raw):
            heredoc = m.group(1)
        was_continued, continued = continued, line.endswith("\\")
        if was_continued or line.startswith("#"):
            continue
        for part in re.split(r"\|\||&&|;|\||\$\(", line):
            words = part.split()
            while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):
                words = words[1:]  # VAR=value before the command
            if words and re.fullmatch(r"[a-z][a-z0-9._+-]*", words[0]):
                heads.add(words[0])
    return heads - SHELL_WORDS - functions


def _allowed() -> set[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        project_scripts = set(tomllib.load(f)["project"]["scripts"])
    with open(ROOT / "tests/cluster/pyproject.toml", "rb") as f:
        project_scripts |= set(tomllib.load(f)["project"].get("scripts", {}))
    built = {b for s in (*build.ALL, *build.NODE, *build.SIGNING) for b in s.binaries}
    python_tools = {p.name for p in (Path(sys.prefix) / "bin").iterdir()}  # the venv's
    declared = {n.command for n in packages.NEEDS} | {Path(n.command).name for n in packages.NEEDS}
    return packages.BASE | COREUTILS | project_scripts | built | python_tools | declared


def test_every_command_the_code_runs_is_declared_in_one_list() -> None:
    heads: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if rel.parts[0].startswith(".") or not path.is_file():
            continue
        found = (
            _python_heads(path)
            if path.suffix == ".py"
            else _shell_heads(path)
            if path.suffix == ".sh"
            else set()
        )
        for head in found:
            heads.setdefault(head, set()).add(str(rel))
    assert {"buildah", "ip", "iptables", "apt-get", "gcc", "ctr"} <= set(heads)  # the scan works
    undeclared = {h: sorted(w) for h, w in heads.items() if h not in _allowed() and "/" not in h}
    assert undeclared == {}
    for head in (h for h in heads if h.startswith("/")):
        assert head in {n.command for n in packages.NEEDS} or head.startswith(
            ("/proc/", "/sys/", "/bin/", "/usr/bin/")
        ), head


def test_packages_only_downloaded_are_declared_too() -> None:
    from qms_testkit import prometheus_binaries

    assert prometheus_binaries.PACKAGE in packages.DOWNLOADED
    assert set(packages.DOWNLOADED) == {"prometheus"}
