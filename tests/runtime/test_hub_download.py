"""`qms-runtime download`: the real huggingface_hub client (in a `qms-runtime` process, as
in the init container) against a FAKE Hub on loopback (tests/runtime/fake_hub.py)
serving a tiny model written by `write_tiny_model`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fake_hub import FakeRepo, RunningFakeHub

from qms_runtime.models.checksums import parse_manifest, verify_model_dir
from qms_runtime.models.hub import snapshot_path
from qms_testkit.processes import start_server

pytestmark = pytest.mark.runtime

REPO = "qms-test/tiny-qwen3"
TOKEN = "hf_fake_token_for_tests"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    termination: str | None  # the termination-message file, if written


@pytest.fixture
def fake_hub() -> Iterator[RunningFakeHub]:
    running = RunningFakeHub()
    yield running
    running.stop()


def _env(endpoint: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env.pop("HF_TOKEN", None)
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(home),  # no saved token, no cache of the developer's
        HF_HUB_OFFLINE="1",  # as in the image: the download command turns it off itself
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


def _command(
    cache: Path,
    termination: Path,
    revision: str = "main",
    repo: str = REPO,
    token_file: Path | None = None,
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "qms_runtime.cli",
        "download",
        "--repo-id",
        repo,
        "--revision",
        revision,
        "--cache-dir",
        str(cache),
        "--termination-log-path",
        str(termination),
    ]
    if token_file is not None:
        command += ["--token-file", str(token_file)]
    return command


def _download(hub: RunningFakeHub, tmp_path: Path, name: str = "run", **options: object) -> Run:
    termination = tmp_path / f"{name}.termination-log"
    result = subprocess.run(
        _command(tmp_path / "cache", termination, **options),  # type: ignore[arg-type]
        env=_env(hub.url, tmp_path / "hf-home"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    message = termination.read_text() if termination.exists() else None
    return Run(result.returncode, result.stdout, result.stderr, message)


def _public(hub: RunningFakeHub, model: Path, **options: object) -> FakeRepo:
    return hub.hub.add_repo(REPO, model, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qms_runtime.tools.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("hub-model") / "tiny", "qwen3")


def test_download_verifies_then_a_second_pod_makes_no_request(
    fake_hub: RunningFakeHub, model: Path, tmp_path: Path
) -> None:
    repo = _public(fake_hub, model)
    names = sorted(repo.files)
    first = _download(fake_hub, tmp_path)
    target = snapshot_path(tmp_path / "cache", REPO, "main")
    assert (first.code, first.termination) == (0, None), first.stderr
    assert first.stdout == (
        f"downloaded {REPO}@main (commit {repo.commit}, {len(names)} files) in {target}\n"
    )
    assert target == tmp_path / "cache" / "qms-test--tiny-qwen3" / "main"
    for name in names:
        assert (target / name).read_bytes() == repo.files[name], name
    verify_model_dir(target)  # the serving container's own check passes
    # One lookup of the revision, the tree twice (huggingface_hub's, then ours), each file
    # once by HEAD and once by GET, no Range.
    requests = [(r.method, r.path) for r in fake_hub.hub.requests]
    assert requests.count(("GET", f"/api/models/{REPO}/revision/main")) == 1
    assert requests.count(("GET", f"/api/models/{REPO}/tree/{repo.commit}")) == 2
    assert sorted(fake_hub.hub.file_gets()) == [(name, None) for name in names]
    heads = sorted(p for m, p in requests if m == "HEAD")
    assert heads == [f"/{REPO}/resolve/{repo.commit}/{name}" for name in names]
    assert len(requests) == 3 + 2 * len(names)
    marker = json.loads((target.parent / "main.complete").read_text())
    assert marker == {"repoId": REPO, "revision": "main", "commit": repo.commit, "files": names}

    fake_hub.hub.requests.clear()
    second = _download(fake_hub, tmp_path, "second")
    assert (second.code, second.termination) == (0, None), second.stderr
    assert second.stdout == (
        f"already downloaded {REPO}@main (commit {repo.commit}, {len(names)} files) in {target}\n"
    )
    assert fake_hub.hub.requests == []  # the second pod downloads nothing, asks nothing


def test_the_runtime_serves_what_was_downloaded(
    fake_hub: RunningFakeHub, model: Path, tmp_path: Path
) -> None:
    """The init container's output is a model directory `serve` verifies and loads (its
    SHA256SUMS written by the download, huggingface_hub's .cache/ beside the files)."""
    _public(fake_hub, model, skip=("SHA256SUMS",))
    assert _download(fake_hub, tmp_path).code == 0
    target = snapshot_path(tmp_path / "cache", REPO, "main")
    assert (target / ".cache" / "huggingface").is_dir()
    server = start_server(target, tmp_path, served_model_name="hub-model")
    try:
        reply = httpx.post(
            f"{server.base_url}/v1/completions",
            json={"model": "hub-model", "prompt": "hello", "max_tokens": 3, "ignore_eos": True},
            timeout=60,
        )
    finally:
        assert server.stop() == 0
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] == 3
    log = server.log_path.read_text()
    assert f"verifying checksums in {target}" in log
    assert "startup: verifying (" in log and "checksums ok: " in log


def test_concurrent_pods_download_each_file_once(
    fake_hub: RunningFakeHub, model: Path, tmp_path: Path
) -> None:
    repo = _public(fake_hub, model)
    env = _env(fake_hub.url, tmp_path / "hf-home")
    pods = [
        subprocess.Popen(
            _command(tmp_path / "cache", tmp_path / f"pod{i}.log"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [pod.communicate(timeout=120) for pod in pods]
    assert [pod.returncode for pod in pods] == [0, 0], outputs
    assert sorted(out.split(" ", 1)[0] for out, _ in outputs) == ["already", "downloaded"]
    assert sorted(fake_hub.hub.file_gets()) == [(name, None) for name in sorted(repo.files)]


def test_a_repo_without_a_manifest_gets_one_of_the_verified_files(
    fake_hub: RunningFakeHub, model: Path, tmp_path: Path
) -> None:
    _public(fake_hub, model, skip=("SHA256SUMS",))
    run = _download(fake_hub, tmp_path)
    assert run.code == 0, run.stderr
    target = snapshot_path(tmp_path / "cache", REPO, "main")
    written = parse_manifest((target / "SHA256SUMS").read_text(), "sha256", "SHA256SUMS")
    shipped = parse_manifest((model / "SHA256SUMS").read_text(), "sha256", "SHA256SUMS")
    assert written.entries == shipped.entries
    verify_model_dir(target)


def test_a_corrupted_file_fails_naming_it_and_only_it_is_fetched_again(
    fake_hub: RunningFakeHub, model: Path, tmp_path: Path
) -> None:
    repo = _public(fake_hub, model)
    good = repo.files[WEIGHTS]
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    fake_hub.hub.corrupt[(REPO, WEIGHTS)] = bytes(bad)
    run = _download(fake_hub, tmp_path)
    assert run.code == 1
    expected_line = (
        f"qms-runtime download: checksum verification failed for {WEIGHTS}: sha256 mismatch: "
        f"expected {hashlib.sha256(good).hexdigest()}, got {hashlib.sha256(bad).hexdigest()}"
    )
    assert run.termination == expected_line + "\n"
    assert run.stderr.splitlines()[-1] == expected_line
    target = snapshot_path(tmp_path / "cache", REPO, "main")
    assert not (target / WEIGHTS).exists()  # removed, so a retry fetches it again
    assert not (target.parent / "main.complete").exists()

    del fake_hub.hub.corrupt[(REPO, WEIGHTS)]
    fake_hub.hub.requests.clear()
    retry = _download(fake_hub, tmp_path, "retry")
    assert (retry.code, retry.termination) == (0, None), retry.stderr
    assert fake_hub.hub.file_gets() == [(WEIGHTS, None)]  # the other files were kept
    assert (target / WEIGHTS).read_bytes() == good


def test_an_unknown_repo_is_a_404_naming_it(
    fake_hub: RunningFakeHub, model: Path, tmp_path: Path
) -> None:
    _public(fake_hub, model)
    run = _download(fake_hub, tmp_path, repo="qms-test/no-such-model")
    assert run.code == 1
    assert run.termination == (
        f"qms-runtime download: HTTP 404 from {fake_hub.url}: repository "
        "qms-test/no-such-model not found\n"
    )
    assert [(r.method, r.path) for r in fake_hub.hub.requests] == [
        ("GET", "/api/models/qms-test/no-such-model/revision/main")
    ]


def test_an_unknown_revision_names_it(
    fake_hub: RunningFakeHub, model: Path, tmp_path: Path
) -> None:
    _public(fake_hub, model)
    run = _download(fake_hub, tmp_path, revision="v9")
    assert run.code == 1
    assert run.termination == (
        f"qms-runtime download: HTTP 404 from {fake_hub.url}: revision v9 not found in {REPO}\n"
    )


def test_a_private_repo_is_a_401_without_the_token_and_downloads_with_it(
    fake_hub: RunningFakeHub, model: Path, tmp_path: Path
) -> None:
    repo = _public(fake_hub, model, token=TOKEN)
    without = _download(fake_hub, tmp_path, "without")
    assert without.code == 1
    assert without.termination == (
        f"qms-runtime download: HTTP 401 from {fake_hub.url}: {REPO} needs a token "
        "(private or gated, or it does not exist) and none was given\n"
    )
    assert [r.authorization for r in fake_hub.hub.requests] == [None]

    wrong_file = tmp_path / "wrong-token"
    wrong_file.write_text("hf_not_the_token\n")
    wrong = _download(fake_hub, tmp_path, "wrong", token_file=wrong_file)
    assert wrong.code == 1
    assert wrong.termination == (
        f"qms-runtime download: HTTP 401 from {fake_hub.url}: the token from {wrong_file} "
        f"was refused for {REPO}\n"
    )

    empty_file = tmp_path / "empty-token"
    empty_file.write_text("\n")
    empty = _download(fake_hub, tmp_path, "empty", token_file=empty_file)
    assert (empty.code, empty.termination) == (
        1,
        f"qms-runtime download: token file {empty_file} is empty\n",
    )

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")  # as a mounted Secret may hold it
    fake_hub.hub.requests.clear()
    with_token = _download(fake_hub, tmp_path, "with", token_file=token_file)
    assert (with_token.code, with_token.termination) == (0, None), with_token.stderr
    assert {r.authorization for r in fake_hub.hub.requests} == {f"Bearer {TOKEN}"}
    target = snapshot_path(tmp_path / "cache", REPO, "main")
    assert (target / WEIGHTS).read_bytes() == repo.files[WEIGHTS]


def test_an_interrupted_file_is_resumed_with_a_range_request(
    fake_hub: RunningFakeHub, model: Path, tmp_path: Path
) -> None:
    """huggingface_hub writes what it receives in DOWNLOAD_CHUNK_SIZE (10 MiB) pieces and
    resumes after the last whole one: a 24 MiB file cut at 12 MiB resumes at 10 MiB."""
    from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE

    big = "original/consolidated.safetensors"
    data = hashlib.shake_256(b"qms").digest(24 * 2**20)
    repo = _public(fake_hub, model, skip=("SHA256SUMS",), extra={big: data})
    fake_hub.hub.cut_once.add((REPO, big))
    run = _download(fake_hub, tmp_path)
    assert (run.code, run.termination) == (0, None), run.stderr
    assert DOWNLOAD_CHUNK_SIZE == 10 * 2**20
    assert [g for g in fake_hub.hub.file_gets() if g[0] == big] == [
        (big, None),
        (big, f"bytes={DOWNLOAD_CHUNK_SIZE}-"),
    ]
    assert f"{big}: peer closed connection without sending complete message body" in run.stderr
    target = snapshot_path(tmp_path / "cache", REPO, "main")
    assert (target / big).read_bytes() == repo.files[big]
    verify_model_dir(target)  # the written SHA256SUMS lists the big file too


def test_bad_input_is_refused_before_any_request(
    fake_hub: RunningFakeHub, model: Path, tmp_path: Path
) -> None:
    _public(fake_hub, model)
    run = _download(fake_hub, tmp_path, repo="../etc")
    assert run.code == 1
    assert run.termination == (
        "qms-runtime download: invalid repo id '../etc': expected 'namespace/name' "
        "(letters, digits, '-', '_', '.')\n"
    )
    missing = tmp_path / "no-such-token"
    run = _download(fake_hub, tmp_path, "token", token_file=missing)
    assert run.termination == (
        f"qms-runtime download: cannot read token file {missing}: No such file or directory\n"
    )
    assert fake_hub.hub.requests == []
