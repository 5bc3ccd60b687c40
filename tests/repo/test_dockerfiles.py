"""Static checks of Dockerfile.runtime and Dockerfile.operator (no Docker engine here)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
COMPILERS = {"gcc", "g++", "clang", "build-essential", "cmake", "make", "cuda-nvcc"}


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / name).read_text()
    logical = re.sub(r"\\\n", " ", re.sub(r"(?m)^\s*#.*\n", "", text))
    out = []
    for line in logical.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def stages(name: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(name):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def args(name: str) -> dict[str, str]:
    return dict(a.split("=", 1) for i, a in instructions(name) if i == "ARG" and "=" in a)


def pip_installs(stage: list[tuple[str, str]]) -> list[str]:
    return [a for i, a in stage if i == "RUN" and "pip install" in a]


def apt_packages(stage: list[tuple[str, str]]) -> set[str]:
    pkgs: set[str] = set()
    for i, a in stage:
        for m in re.finditer(r"apt-get install ([^&;]*)", a if i == "RUN" else ""):
            pkgs |= {w.split("=")[0] for w in m.group(1).split() if not w.startswith("-")}
    return pkgs


def constraints() -> dict[str, str]:
    lines = (ROOT / ".ci/constraints.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))


def test_hadolint_passes_on_both_dockerfiles() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    proc = subprocess.run(
        [hadolint, "--config", ".hadolint.yaml", "Dockerfile.runtime", "Dockerfile.operator"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


@pytest.mark.parametrize(
    ("dockerfile", "extra", "source"),
    [
        ("Dockerfile.runtime", "runtime", "runtime/"),
        ("Dockerfile.operator", "operator", "operator/"),
    ],
)
def test_builder_installs_only_its_extra_with_the_constraints(
    dockerfile: str, extra: str, source: str
) -> None:
    python, requirements, deps, builder, final = stages(dockerfile)
    assert [st[0][1] for st in (python, requirements, deps, builder)] == [
        "${BASE_IMAGE} AS python",
        "python AS requirements",
        "python AS deps",
        "deps AS builder",
    ]
    # The dependency list is read from pyproject's extra in a stage of its own...
    assert [a for i, a in requirements if i == "COPY"] == ["pyproject.toml /src/"]
    (listing,) = [a for i, a in requirements if i == "RUN"]
    assert re.findall(r'\["optional-dependencies"\]\["([a-z]+)"\]', listing) == [extra]
    # ...then installed into the venv, keyed by that list and the constraints only
    # (pip's cache in a cache mount)...
    (install,) = pip_installs(deps)
    assert install.startswith("--mount=type=cache,target=/root/.cache/pip,sharing=locked ")
    assert "--only-binary=:all: -c .ci/constraints.txt -r requirements.txt" in install
    assert [a.split()[0] for i, a in deps if i == "COPY"] == [
        ".ci/constraints.txt",
        "--from=requirements",
    ]
    # ...and the code alone, without dependencies, into /opt/qms/app.
    (code,) = pip_installs(builder)
    assert re.findall(r"\.\[([a-z,]+)\]", code) == [extra]
    assert "--no-cache-dir --no-deps --target /opt/qms/app -c .ci/constraints.txt" in code
    assert [a.split()[0] for i, a in builder if i == "COPY"] == ["pyproject.toml", source]
    # The final stage takes only the venv and the app, and runs as non-root.
    assert [a for i, a in final if i == "COPY"] == [
        "--from=deps /opt/qms/venv /opt/qms/venv",
        "--from=builder /opt/qms/app /opt/qms/app",
    ]
    assert pip_installs(final) == []
    assert [a for i, a in final if i == "USER"] == ["65532:65532"]
    assert not (apt_packages(builder) | apt_packages(final)) & COMPILERS


def test_runtime_base_matches_the_torch_cuda_build() -> None:
    """The CUDA base image is the CUDA release torch's wheel was built for (seed 4.1)."""
    assert metadata.version("torch") == constraints()["torch"]
    toolkit = [r for r in metadata.requires("torch") or [] if r.startswith("cuda-toolkit")]
    assert len(toolkit) == 1, toolkit
    pinned = str(Requirement(toolkit[0]).specifier).removeprefix("==")
    assert args("Dockerfile.runtime")["CUDA_VERSION"] == pinned
    # torch/version.py records the CUDA it was built with (read as text: no torch import).
    version_py = Path(str(metadata.distribution("torch").locate_file("torch/version.py")))
    built = re.search(r"^cuda: .* = '([0-9.]+)'$", version_py.read_text(), re.M)
    assert built is not None and pinned.startswith(built.group(1) + ".")
    # Both stages build on BASE_IMAGE, whose default is that CUDA base (a local
    # Debian base replaces it only where no registry is reachable).
    assert args("Dockerfile.runtime")["BASE_IMAGE"] == (
        "nvidia/cuda:${CUDA_VERSION}-${CUDA_FLAVOR}-ubuntu24.04"
    )
    froms = [stage[0][1] for stage in stages("Dockerfile.runtime")]
    assert [f for f in froms if not f.startswith(("python AS ", "deps AS "))] == [
        "${BASE_IMAGE} AS python",
        "${BASE_IMAGE} AS runtime",
    ]
    assert args("Dockerfile.runtime")["CUDA_FLAVOR"] == "runtime"


def test_runtime_image_bakes_no_model_by_default() -> None:
    final = stages("Dockerfile.runtime")[-1]
    assert ("ENTRYPOINT", '["qms-runtime"]') in final
    assert ("CMD", '["serve"]') in final
    env = " ".join(a for i, a in final if i == "ENV")
    assert "QMS_MODEL_DIR=/models " in env and "QMS_PORT=8080" in env
    assert "HF_HOME=/tmp/hf-home" in env  # /tmp is the writable emptyDir
    assert not any("model" in a.lower() for i, a in final if i in {"COPY", "ADD"})


def test_dockerignore_lets_through_what_the_dockerfiles_copy() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for name in ("Dockerfile.runtime", "Dockerfile.operator"):
        for i, a in instructions(name):
            if i == "COPY" and not a.startswith("--from"):
                assert a.split()[0].rstrip("/") in allowed, (name, a)


def _requires(name: str, extras: set[str]) -> list[Requirement]:
    out = []
    for raw in metadata.requires(name) or []:
        req = Requirement(raw)
        env_ok = [not req.marker or req.marker.evaluate({"extra": e}) for e in extras | {""}]
        if any(env_ok):
            out.append(req)
    return out


def operator_closure() -> set[str]:
    """Every distribution `pip install .[operator]` pulls, from installed metadata."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    todo += [Requirement(r) for r in project["optional-dependencies"]["operator"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        todo += _requires(name, set(req.extras))
    return seen


def test_operator_extra_pulls_no_torch() -> None:
    closure = operator_closure()
    assert {"kopf", "kubernetes", "pydantic", "prometheus-client"} <= closure
    heavy = {"torch", "transformers", "accelerate", "torchao", "triton", "tokenizers"}
    assert not closure & heavy
    assert not {n for n in closure if n.startswith(("nvidia-", "cuda-"))}


def test_pip_resolves_the_operator_extra_without_torch(tmp_path: Path) -> None:
    """What the operator image's `pip install` resolves, asked of pip itself."""
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--only-binary=:all:",
            "--no-binary=qms",
            "--no-build-isolation",
            "--report",
            str(report),
            "-c",
            ".ci/constraints.txt",
            ".[operator]",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if proc.returncode != 0 and re.search(r"(?i)connection|resolve|network|index", proc.stderr):
        pytest.skip(f"pip cannot reach a package index here: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr
    installs = json.loads(report.read_text())["install"]
    names = {canonicalize_name(i["metadata"]["name"]) for i in installs}
    assert "qms" in names and "kopf" in names
    assert "torch" not in names
    assert not {n for n in names if n.startswith(("nvidia-", "cuda-"))}
    assert names - {"qms"} <= operator_closure()


def test_bake_model_makes_small_verified_layers(tmp_path: Path) -> None:
    """deploy/image/bake_model.py: chunks under the limit, same tensors, valid manifest."""
    np = pytest.importorskip("numpy")
    st = pytest.importorskip("safetensors.numpy")
    sys.path.insert(0, str(ROOT / "deploy/image"))
    try:
        import bake_model
    finally:
        sys.path.pop(0)
    model = tmp_path / "model"
    model.mkdir()
    tensors = {f"layer{i}.weight": np.full((16, 16), i, dtype=np.float32) for i in range(6)}
    st.save_file(dict(list(tensors.items())[:4]), str(model / "model-00001-of-00002.safetensors"))
    st.save_file(dict(list(tensors.items())[4:]), str(model / "model-00002-of-00002.safetensors"))
    weight_map = {
        k: f"model-0000{1 if i < 4 else 2}-of-00002.safetensors" for i, k in enumerate(tensors)
    }
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (model / "config.json").write_text("{}")
    subprocess.run("sha256sum * > SHA256SUMS", shell=True, cwd=model, check=True)

    limit = 2500  # bytes: forces the first shard (4 KiB of tensors) to be split
    n = bake_model.bake(model, tmp_path / "out", "qms-runtime:test", limit=limit)
    out = tmp_path / "out"
    chunks = sorted((out / "chunks").iterdir())
    assert len(chunks) == n > 2
    for chunk in chunks:
        assert 0 < sum(f.stat().st_size for f in chunk.rglob("*") if f.is_file()) <= limit
    dockerfile = (out / "Dockerfile").read_text().splitlines()
    assert dockerfile[1] == "FROM qms-runtime:test"
    assert [x for x in dockerfile if x.startswith("COPY")] == [
        f"COPY chunks/{i:03d}/ /opt/qms/model/" for i in range(n)
    ]
    assert "RUN sha256sum --check --strict --quiet SHA256SUMS" in dockerfile
    merged = tmp_path / "merged"
    for chunk in chunks:
        shutil.copytree(chunk, merged, dirs_exist_ok=True)
    subprocess.run(
        ["sha256sum", "--check", "--strict", "--quiet", "SHA256SUMS"], cwd=merged, check=True
    )
    index = json.loads((merged / "model.safetensors.index.json").read_text())["weight_map"]
    assert sorted(index) == sorted(tensors)
    for name, array in tensors.items():
        assert (st.load_file(str(merged / index[name]))[name] == array).all()

    (model / "config.json").write_text('{"changed": true}')
    with pytest.raises(SystemExit, match=re.escape("checksum mismatch: config.json")):
        bake_model.bake(model, tmp_path / "out2", "qms-runtime:test")


@pytest.mark.parametrize(
    ("dockerfile", "base"),
    [
        ("Dockerfile.runtime", "nvidia/cuda:${CUDA_VERSION}-${CUDA_FLAVOR}-ubuntu24.04"),
        ("Dockerfile.operator", "python:3.12-slim-trixie"),
    ],
)
def test_every_stage_builds_on_the_base_argument_with_a_pinned_default(
    dockerfile: str, base: str
) -> None:
    """checkov cannot resolve FROM ${BASE_IMAGE} (CKV_DOCKER_7 is skipped for that):
    the default is a pinned, non-latest tag, and no stage names another base."""
    assert args(dockerfile)["BASE_IMAGE"] == base
    assert not base.endswith(":latest") and ":" in base
    froms = [stage[0][1].split()[0] for stage in stages(dockerfile)]
    assert set(froms) <= {"${BASE_IMAGE}", "python", "deps"}
