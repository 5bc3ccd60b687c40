"""Weights from the Hugging Face Hub: what `qms-runtime download` does (an init container).

Layout in the cache directory (a shared volume):

    <cache>/<namespace>--<name>/<revision>/           the snapshot, plain files
    <cache>/<namespace>--<name>/<revision>.lock       flock: one download at a time
    <cache>/<namespace>--<name>/<revision>.complete   JSON; once there, no request at all

The download itself is huggingface_hub's own `snapshot_download` (local_dir mode, the
endpoint from `HF_ENDPOINT`): it resumes a file cut off midway with a Range request and
keeps the files an earlier, interrupted attempt completed. It checks sizes only, not
hashes (huggingface_hub 2.4), so every file is then checked here against the Hub's tree
listing at the resolved commit: the LFS sha256 for LFS files, the git blob sha1 for the
rest; a file that does not match is removed (the next attempt fetches it again). If the
repository ships a `SHA256SUMS`/`MD5SUMS` it must verify too; if not, a `SHA256SUMS` of
the verified files is written, so the serving container verifies the same bytes at load.
Every failure is one `DownloadError` line naming the file or the HTTP status.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qms_runtime.models.checksums import (
    MD5_MANIFEST,
    SHA256_MANIFEST,
    ChecksumError,
    file_digest,
    verify_model_dir,
)

if TYPE_CHECKING:
    from huggingface_hub import HfApi

log = logging.getLogger(__name__)

# The Hub's repo ids: "name" or "namespace/name"; a revision: a branch, a tag or a commit.
# Every part starts with a letter or digit, so none is "." or "..".
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
COMPLETE_SUFFIX = ".complete"
LOCK_SUFFIX = ".lock"


class DownloadError(Exception):
    """A download that did not complete; `str()` is the one line for the pod's status."""


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    commit: str
    files: int
    downloaded: bool  # False: an earlier download had completed, nothing was requested


def snapshot_path(cache_dir: Path, repo_id: str, revision: str) -> Path:
    """`<cache>/<namespace>--<name>/<revision>` ('/' in either written as '--'); the
    operator computes the same path for the serving container's model directory."""
    return cache_dir / repo_id.replace("/", "--") / revision.replace("/", "--")


def validate(repo_id: str, revision: str) -> None:
    if not _REPO_ID.fullmatch(repo_id):
        raise DownloadError(
            f"invalid repo id {repo_id!r}: expected 'namespace/name' "
            "(letters, digits, '-', '_', '.')"
        )
    if len(revision) > 255 or not _REVISION.fullmatch(revision):
        raise DownloadError(
            f"invalid revision {revision!r}: expected a branch, a tag or a commit hash"
        )


def read_token(token_file: Path | None) -> str | None:
    if token_file is None:
        return None
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise DownloadError(f"cannot read token file {token_file}: {exc.strerror}") from exc
    if not token:
        raise DownloadError(f"token file {token_file} is empty")
    return token


def download_snapshot(
    repo_id: str,
    revision: str,
    cache_dir: Path,
    *,
    token: str | None = None,
    token_source: str | None = None,
    endpoint: str | None = None,
) -> DownloadResult:
    """Download `repo_id` at `revision` into `snapshot_path(...)` once, verified.

    `token_source` names where the token came from, for the 401 message."""
    validate(repo_id, revision)
    target = snapshot_path(cache_dir, repo_id, revision)
    complete = target.with_name(target.name + COMPLETE_SUFFIX)
    if (done := _read_complete(complete, target)) is not None:
        return done
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {target.parent}: {exc.strerror}") from exc
    with _exclusive(target.with_name(target.name + LOCK_SUFFIX)):
        # Another pod may have finished while this one waited for the lock.
        if (done := _read_complete(complete, target)) is not None:
            return done
        _remove_stale_partials(target)
        commit, files = _fetch_and_verify(repo_id, revision, target, token, token_source, endpoint)
        _write_complete(complete, repo_id, revision, commit, files)
    log.info(
        "downloaded %s@%s (commit %s, %d files) to %s",
        repo_id,
        revision,
        commit,
        len(files),
        target,
    )
    return DownloadResult(path=target, commit=commit, files=len(files), downloaded=True)


def _read_complete(complete: Path, target: Path) -> DownloadResult | None:
    if not complete.is_file():
        return None
    try:
        record = json.loads(complete.read_text(encoding="utf-8"))
        commit, files = str(record["commit"]), list(record["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DownloadError(
            f"unreadable marker {complete} ({exc}); delete it to download again"
        ) from exc
    if not target.is_dir():
        raise DownloadError(f"{complete} exists but {target} does not; delete it to download again")
    log.info("already downloaded (commit %s, %d files) in %s", commit, len(files), target)
    return DownloadResult(path=target, commit=commit, files=len(files), downloaded=False)


def _write_complete(
    complete: Path, repo_id: str, revision: str, commit: str, files: list[str]
) -> None:
    record = {"repoId": repo_id, "revision": revision, "commit": commit, "files": files}
    partial = complete.with_name(complete.name + ".tmp")
    try:
        partial.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        os.replace(partial, complete)
    except OSError as exc:
        raise DownloadError(f"cannot write {complete}: {exc.strerror}") from exc


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock (released by the kernel if the pod dies)."""
    try:
        handle = lock_path.open("a")
    except OSError as exc:
        raise DownloadError(f"cannot open lock file {lock_path}: {exc.strerror}") from exc
    with handle:
        log.info("locking %s (another pod may hold it)", lock_path)
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _remove_stale_partials(target: Path) -> None:
    """A process killed mid-file leaves huggingface_hub's temporary file; under the lock
    nobody else writes here, so they go (the completed files stay)."""
    download_meta = target / ".cache" / "huggingface" / "download"
    if download_meta.is_dir():
        for stale in download_meta.rglob("*.incomplete"):
            stale.unlink(missing_ok=True)


def _fetch_and_verify(
    repo_id: str,
    revision: str,
    target: Path,
    token: str | None,
    token_source: str | None,
    endpoint: str | None,
) -> tuple[str, list[str]]:
    import httpx2
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if constants.is_offline_mode():
        raise DownloadError("HF_HUB_OFFLINE is on in this process; the download needs it off")
    hub = (endpoint or constants.ENDPOINT).rstrip("/")
    auth: str | bool = token if token is not None else False  # never an ambient token
    api = HfApi(endpoint=hub, token=auth)
    try:
        commit = api.model_info(repo_id, revision=revision).sha
        if commit is None:
            raise DownloadError(f"{hub} sent no commit for {repo_id}@{revision}")
        log.info("downloading %s@%s (commit %s) from %s", repo_id, revision, commit, hub)
        snapshot_download(
            repo_id,
            revision=commit,
            local_dir=target,
            cache_dir=target.parent / ".hf-cache",
            endpoint=hub,
            token=auth,
            max_workers=4,
        )
        files = _verify(api, repo_id, commit, target)
    except HfHubHTTPError as exc:
        raise DownloadError(_http_problem(exc, repo_id, revision, hub, token_source)) from exc
    except (httpx2.TransportError, LocalEntryNotFoundError) as exc:
        cause = exc.__cause__ if isinstance(exc, LocalEntryNotFoundError) else exc
        raise DownloadError(f"cannot reach {hub}: {type(cause).__name__}: {cause}") from exc
    except OSError as exc:  # e.g. huggingface_hub's size check, naming the file
        raise DownloadError(f"download of {repo_id}@{revision} failed: {exc}") from exc
    return commit, files


def _http_problem(exc: Any, repo_id: str, revision: str, hub: str, token_source: str | None) -> str:
    from huggingface_hub.errors import RevisionNotFoundError

    status = exc.response.status_code
    url = str(exc.response.request.url) if exc.response.request is not None else hub
    where = f"HTTP {status} from {hub}"
    if "/resolve/" in url:
        filename = url.split("/resolve/", 1)[1].split("/", 1)[-1]
        return f"{where} for file {filename} of {repo_id}@{revision}"
    if isinstance(exc, RevisionNotFoundError):
        return f"{where}: revision {revision} not found in {repo_id}"
    if status == 401:
        if token_source is None:
            return (
                f"{where}: {repo_id} needs a token (private or gated, or it does not "
                "exist) and none was given"
            )
        return f"{where}: the token from {token_source} was refused for {repo_id}"
    if status == 403:
        return f"{where}: the token from {token_source} has no access to {repo_id}"
    if status == 404:
        return f"{where}: repository {repo_id} not found"
    return f"{where} for {url}"


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _verify(api: HfApi, repo_id: str, commit: str, target: Path) -> list[str]:
    """Every file of the Hub's listing at `commit`, present and matching; returns them."""
    from huggingface_hub import RepoFile

    entries = {
        entry.path: entry
        for entry in api.list_repo_tree(repo_id, revision=commit, recursive=True)
        if isinstance(entry, RepoFile)
    }
    sums: dict[str, str] = {}
    for path, entry in sorted(entries.items()):
        local = target / path
        if not local.is_file():
            raise DownloadError(str(ChecksumError(path, f"listed at commit {commit} but missing")))
        if entry.lfs is not None:
            algorithm, expected = "sha256", entry.lfs.sha256.lower()
            actual = sums[path] = file_digest(local, "sha256")
        else:
            data = local.read_bytes()
            algorithm, expected = "git-sha1", entry.blob_id.lower()
            actual = _git_blob_sha1(data)
            sums[path] = hashlib.sha256(data).hexdigest()
        if actual != expected:
            local.unlink()  # the next attempt downloads it again
            raise DownloadError(
                str(ChecksumError(path, f"{algorithm} mismatch: expected {expected}, got {actual}"))
            )
    if SHA256_MANIFEST in entries or MD5_MANIFEST in entries:
        try:
            verify_model_dir(target)
        except ChecksumError as exc:
            raise DownloadError(str(exc)) from exc
    else:
        manifest = target / SHA256_MANIFEST
        manifest.write_text("".join(f"{sums[p]}  {p}\n" for p in sorted(sums)), encoding="utf-8")
    return sorted(entries)
