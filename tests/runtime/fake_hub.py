"""FAKE Hugging Face Hub: a loopback HTTP server standing in for the remote service only.

It answers exactly what huggingface_hub 2.4's `snapshot_download` and `HfApi` call
(read from its source: hf_api.model_info, _iter_repo_tree_pages, file_download's
get_hf_file_metadata and http_get), with the headers the client needs:

- `GET /api/models/{repo}/revision/{rev}` -> `{"id", "sha", "siblings"}`
- `GET /api/models/{repo}/tree/{commit}?recursive=...` -> `[{"type": "file", "path",
  "size", "oid" (git blob sha1), "lfs": {"oid" (sha256), "size", "pointerSize"}}]`
  (LFS for `*.safetensors`, as the Hub's default .gitattributes does)
- `HEAD /{repo}/resolve/{commit}/{path}` -> `X-Repo-Commit`, `ETag` (git sha1), for LFS
  files `X-Linked-Etag` (sha256) and `X-Linked-Size`, `Content-Length`
- `GET /{repo}/resolve/{commit}/{path}`, with `Range: bytes=N-` answered 206

Errors as the Hub sends them: 404 + `X-Error-Code: RepoNotFound` (or `RevisionNotFound`),
401 + `X-Error-Code: RepoNotFound` for a private repo without a token, 401 +
`X-Error-Message: Invalid credentials in Authorization header` for a wrong one.
Test knobs: `corrupt` (bytes served instead of a file's own, hashes unchanged) and
`cut_once` (the first GET of a file sends half its body, then the connection closes).
Every request is recorded in `requests`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    commit: str
    refs: dict[str, str]
    token: str | None = None  # set: a private repo

    def is_lfs(self, path: str) -> bool:
        return path.endswith(".safetensors")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    corrupt: dict[tuple[str, str], bytes] = field(default_factory=dict)
    cut_once: set[tuple[str, str]] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_repo(
        self,
        repo_id: str,
        source: Path,
        *,
        skip: tuple[str, ...] = (),
        extra: dict[str, bytes] | None = None,
        token: str | None = None,
    ) -> FakeRepo:
        """The files of `source` (but `skip`), plus `extra`, as one commit on main."""
        files = {
            str(p.relative_to(source)): p.read_bytes()
            for p in sorted(source.rglob("*"))
            if p.is_file() and str(p.relative_to(source)) not in skip
        }
        files.update(extra or {})
        commit = hashlib.sha1(repo_id.encode() + b"".join(files.values())).hexdigest()
        repo = FakeRepo(repo_id, files, commit, {"main": commit}, token)
        self.repos[repo_id] = repo
        return repo

    def file_gets(self) -> list[tuple[str, str | None]]:
        """(file path, Range header) of every GET of a file, in order."""
        return [
            (r.path.split("/resolve/", 1)[1].split("/", 1)[1], r.range)
            for r in self.requests
            if r.method == "GET" and "/resolve/" in r.path
        ]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle(head=False)

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def _reply(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        head: bool = False,
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, head: bool) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code is not None:
            headers["X-Error-Code"] = code
        self._reply(status, json.dumps({"error": message}).encode(), headers, head)

    def _handle(self, head: bool) -> None:
        hub = self.server.hub
        path = unquote(urlsplit(self.path).path)
        with hub.lock:
            hub.requests.append(
                Request(
                    self.command, path, self.headers.get("Range"), self.headers.get("Authorization")
                )
            )
        api = path.startswith("/api/models/")
        rest = path.removeprefix("/api/models/") if api else path.removeprefix("/")
        repo = next((r for r in hub.repos.values() if rest.startswith(r.repo_id + "/")), None)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", head)
            return
        if repo.token is not None:
            given = self.headers.get("Authorization")
            if given is None:
                self._error(401, "RepoNotFound", "Invalid username or password.", head)
                return
            if given != f"Bearer {repo.token}":
                self._error(401, None, "Invalid credentials in Authorization header", head)
                return
        action, _, tail = rest.removeprefix(repo.repo_id + "/").partition("/")
        revision, _, filename = tail.partition("/")
        commit = repo.refs.get(revision, revision if revision == repo.commit else None)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
            return
        if api and action == "revision" and not filename:
            info = {
                "id": repo.repo_id,
                "sha": commit,
                "siblings": [{"rfilename": name} for name in repo.files],
            }
            self._reply(200, json.dumps(info).encode(), {"Content-Type": "application/json"})
        elif api and action == "tree":
            self._reply(
                200, json.dumps(self._tree(repo)).encode(), {"Content-Type": "application/json"}
            )
        elif not api and action == "resolve" and filename in repo.files:
            self._file(repo, commit, filename, head)
        elif not api and action == "resolve":
            self._error(404, "EntryNotFound", f"{filename} does not exist", head)
        else:
            self._error(404, None, "Not found", head)

    @staticmethod
    def _tree(repo: FakeRepo) -> list[dict[str, Any]]:
        entries = []
        for name, data in repo.files.items():
            entry: dict[str, Any] = {
                "type": "file",
                "path": name,
                "size": len(data),
                "oid": git_blob_sha1(data),
            }
            if repo.is_lfs(name):
                entry["lfs"] = {
                    "oid": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                }
            entries.append(entry)
        return entries

    def _file(self, repo: FakeRepo, commit: str, filename: str, head: bool) -> None:
        hub = self.server.hub
        data = repo.files[filename]
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{git_blob_sha1(data)}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if repo.is_lfs(filename):
            headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(data))
        if head:
            self._reply(200, data, headers, head=True)
            return
        body = hub.corrupt.get((repo.repo_id, filename), data)
        wanted = self.headers.get("Range")
        if wanted is not None:
            start = int(wanted.removeprefix("bytes=").split("-", 1)[0])
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            self._reply(206, body[start:], headers)
            return
        key = (repo.repo_id, filename)
        with hub.lock:
            cut = key in hub.cut_once
            hub.cut_once.discard(key)
        if not cut:
            self._reply(200, body, headers)
            return
        # Interrupted: the full length announced, half the body sent, the connection gone.
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True  # the server closes the socket, short of the length


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: FakeHub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub


class RunningFakeHub:
    """The FAKE on a loopback port, in a thread, until `stop()`."""

    def __init__(self) -> None:
        self.hub = FakeHub()
        self._server = _Server(self.hub)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
