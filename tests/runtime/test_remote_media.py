# ruff: noqa: E501  (the case tables read best as one case per line)
"""Remote media, locked down: only allow-listed hosts, http(s) only, no redirect off the
list, no loopback/link-local/private/metadata address unless an exact entry names the
host, and errors that name the host but never the fetched body.

Nothing here sends a packet beyond loopback. The refusals are decided before any
connection opens; private and metadata addresses are reached through host names that a
resolver stub maps to them (in process: `StubNetwork`; in the server process:
`stub_network_serve.py`), and the stubs record every lookup and connection, so each
test asserts what was (not) attempted. The stubs also refuse any connection that is not
loopback, whatever the code under test does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from remote_media_helpers import SECRET_BODY, StubNetwork, media_files

from qms_runtime.api.http.errors import APIError, to_api_error
from qms_runtime.media.decode import IMAGE_MIME_TYPES, url_bytes
from qms_runtime.media.remote import RemoteFetcher, address_class
from qms_runtime.settings import RuntimeSettings, load_settings
from qms_runtime.tools.tiny_processor import TINY_VIDEO_KWARGS
from qms_runtime.types import MediaError
from qms_testkit.media import chat, image_part, png, video_part
from qms_testkit.processes import RuntimeServer, start_server

pytestmark = pytest.mark.runtime

IMAGE = png(40, 56)
BIG = png(120, 120)  # over the 20,000-byte image limit below
TEXT = {"type": "text", "text": "What is this?"}
HOSTS = {
    "media.test": ["127.0.0.1"],  # named exactly in the allow-list: loopback is allowed
    "loop.cdn.test": ["127.0.0.1"],  # only under *.cdn.test: loopback is refused
    "private.cdn.test": ["10.20.30.40"],
    "meta.cdn.test": ["169.254.169.254"],
    "mixed.cdn.test": ["93.184.215.14", "10.0.0.7"],
    "mapped.cdn.test": ["::ffff:192.168.1.10"],
    "public.cdn.test": ["93.184.215.14"],
}
ALLOWED = ("media.test", "127.0.0.1", "*.cdn.test")


@pytest.fixture(scope="module")
def files() -> Iterator[str]:
    with media_files({"/image.png": IMAGE, "/big.png": BIG}) as base:
        yield base


@pytest.fixture(scope="module")
def port(files: str) -> int:
    return int(files.rsplit(":", 1)[1])


def _fetch(
    url: str, net: StubNetwork, allowed: tuple[str, ...] = ALLOWED, limit: int = 20_000
) -> bytes:
    return RemoteFetcher(allowed, net.resolve, net.connect).fetch(url, "image", limit, "p")


def _refused(url: str, net: StubNetwork, allowed: tuple[str, ...] = ALLOWED) -> APIError:
    with pytest.raises(MediaError) as caught:
        _fetch(url, net, allowed)
    error = to_api_error(caught.value, 1)  # the API layer's answer to this media error
    assert (error.status, error.param) == (400, "p"), error.message
    return error


# ------------------------------------------------------------- in process, stubbed
def test_allowed_host_on_loopback_is_fetched(port: int) -> None:
    net = StubNetwork(HOSTS)
    assert _fetch(f"http://media.test:{port}/image.png", net) == IMAGE
    assert net.lookups == ["media.test"]
    assert net.connections == [("127.0.0.1", port)]
    literal = StubNetwork({})
    assert _fetch(f"http://127.0.0.1:{port}/image.png", literal) == IMAGE
    assert literal.lookups == []  # an address literal is not looked up


def test_redirect_within_the_list_is_followed(port: int) -> None:
    net = StubNetwork(HOSTS)
    url = f"http://media.test:{port}/redirect?to=http://127.0.0.1:{port}/image.png"
    assert _fetch(url, net) == IMAGE
    assert net.connections == [("127.0.0.1", port), ("127.0.0.1", port)]


REFUSED = [
    # name, url ({port} filled in), code, words in the message, lookups expected
    ("host not in the list", "http://example.com/a.png", "remote_host_not_allowed", "'example.com'", []),
    ("private literal not in the list", "http://10.0.0.1/a.png", "remote_host_not_allowed", "'10.0.0.1'", []),
    ("metadata literal not in the list", "http://169.254.169.254/latest/meta-data/", "remote_host_not_allowed", "'169.254.169.254'", []),
    ("userinfo names another host", "http://media.test@evil.test/a.png", "remote_host_not_allowed", "'evil.test'", []),
    ("suffix entry is not its parent", "http://cdn.test/a.png", "remote_host_not_allowed", "'cdn.test'", []),
    ("private address", "http://private.cdn.test/a.png", "remote_address_not_allowed", "a private address", ["private.cdn.test"]),
    ("metadata address", "http://meta.cdn.test/latest/meta-data/", "remote_address_not_allowed", "a cloud metadata address", ["meta.cdn.test"]),
    ("loopback under a suffix entry", "http://loop.cdn.test:{port}/image.png", "remote_address_not_allowed", "a loopback address", ["loop.cdn.test"]),
    ("one private address among public ones", "http://mixed.cdn.test/a.png", "remote_address_not_allowed", "a private address", ["mixed.cdn.test"]),
    ("ipv4-mapped ipv6 private address", "http://mapped.cdn.test/a.png", "remote_address_not_allowed", "a private address", ["mapped.cdn.test"]),
    ("redirect to another host", "http://media.test:{port}/redirect?to=http://elsewhere.test/a.png", "remote_redirect_not_allowed", "'elsewhere.test'", ["media.test"]),
    ("redirect to a private address", "http://media.test:{port}/redirect?to=http://private.cdn.test/a.png", "remote_address_not_allowed", "a private address", ["media.test", "private.cdn.test"]),
    ("redirect to metadata literal", "http://media.test:{port}/redirect?to=http://169.254.169.254/latest", "remote_redirect_not_allowed", "'169.254.169.254'", ["media.test"]),
    ("redirect to another scheme", "http://media.test:{port}/redirect?to=file:///etc/passwd", "unsupported_url_scheme", "'file'", ["media.test"]),
    ("ftp scheme", "ftp://media.test/a.png", "unsupported_url_scheme", "'ftp'", []),
    ("host does not resolve", "http://nowhere.cdn.test/a.png", "remote_fetch_failed", "does not resolve", ["nowhere.cdn.test"]),
    ("redirect loop", "http://media.test:{port}/loop", "remote_fetch_failed", "more than 5 redirects", ["media.test"] * 6),
    ("not found", "http://media.test:{port}/secret?token=hush", "remote_fetch_failed", "HTTP 404", ["media.test"]),
    ("over the size limit", "http://media.test:{port}/big.png", "media_too_large", "20000 bytes", ["media.test"]),
    ("https to a plain http server", "https://media.test:{port}/image.png", "remote_fetch_failed", "TLS failed", ["media.test"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "url", "code", "words", "lookups"), REFUSED, ids=[c[0] for c in REFUSED]
)
def test_remote_media_refusals(
    port: int, name: str, url: str, code: str, words: str, lookups: list[str]
) -> None:
    net = StubNetwork(HOSTS)
    error = _refused(url.format(port=port), net)
    assert error.code == code, error.message
    assert words in error.message, error.message
    assert net.lookups == lookups
    # Refusals of a host or an address come before any connection to it; what was
    # opened at all is loopback (the test server's first hop) and nothing else.
    assert all(host == "127.0.0.1" for host, _ in net.connections), net.connections
    if code in ("remote_host_not_allowed", "remote_address_not_allowed", "unsupported_url_scheme"):
        first_hop_only = 1 if "redirect" in name else 0
        assert len(net.connections) == first_hop_only, net.connections
    # The host is named; the body, the path and its query are not.
    assert SECRET_BODY.decode() not in error.message
    assert "hush" not in error.message and "/secret" not in error.message


def test_fetches_are_bounded_in_time(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from qms_runtime.media import remote

    monkeypatch.setattr(remote, "TIMEOUT_SECONDS", 0.2)
    started = time.monotonic()
    error = _refused(f"http://media.test:{port}/slow", StubNetwork(HOSTS))
    assert (error.code, "timed out" in error.message) == ("remote_fetch_failed", True)
    assert time.monotonic() - started < 0.9  # the server would answer after 1 s
    monkeypatch.setattr(remote, "TIMEOUT_SECONDS", 10.0)
    monkeypatch.setattr(remote, "TOTAL_SECONDS", 0.0)  # nothing left for a first step
    error = _refused(f"http://media.test:{port}/image.png", StubNetwork(HOSTS))
    assert "timed out" in error.message


def test_a_public_address_passes_the_checks() -> None:
    net = StubNetwork(HOSTS)
    error = _refused("http://public.cdn.test/a.png", net)  # the stub refuses to connect
    assert error.code == "remote_fetch_failed" and "connection refused" in error.message
    assert net.connections == [("93.184.215.14", 80)]  # checked, then attempted (stubbed)


def test_address_classes() -> None:
    import ipaddress

    cases = {
        "127.0.0.1": "a loopback address",
        "::1": "a loopback address",
        "169.254.169.254": "a cloud metadata address",
        "fd00:ec2::254": "a cloud metadata address",
        "169.254.1.1": "a link-local address",
        "fe80::1": "a link-local address",
        "10.1.2.3": "a private address",
        "172.16.0.1": "a private address",
        "192.168.0.1": "a private address",
        "fc00::1": "a private address",
        "100.64.0.1": "a non-public address",
        "0.0.0.0": "a private address",
        "93.184.215.14": None,
        "2606:4700::1111": None,
    }
    assert {a: address_class(ipaddress.ip_address(a)) for a in cases} == cases


def _settings(**values: Any) -> RuntimeSettings:
    return load_settings(model_dir="/nonexistent", **values)


def test_scheme_and_switch_are_checked_before_the_fetcher() -> None:
    off = _settings()
    with pytest.raises(MediaError) as caught:
        url_bytes("http://media.test/a.png", "image", IMAGE_MIME_TYPES, 10, off, "p")
    assert caught.value.code == "remote_media_disabled"
    on = _settings(allow_remote_media="true", allowed_media_domains="media.test")
    for url in (
        "file:///etc/passwd",
        "gopher://media.test/",
        "javascript:alert(1)",
        "//media.test/a",
    ):
        with pytest.raises(MediaError) as caught:
            url_bytes(url, "image", IMAGE_MIME_TYPES, 10, on, "p")
        assert caught.value.code == "unsupported_url_scheme", url


def test_settings_need_an_allow_list_and_check_its_entries() -> None:
    with pytest.raises(ValidationError, match="allow_remote_media needs allowed_media_domains"):
        _settings(allow_remote_media="true")
    for bad in ("http://media.test", "*", "media.test/path", "a..b"):
        with pytest.raises(ValidationError, match="allowed_media_domains"):
            _settings(allowed_media_domains=bad)
    parsed = _settings(allowed_media_domains="Media.Test, *.CDN.test [::1] 127.0.0.1.")
    assert parsed.allowed_media_domains == ("media.test", "*.cdn.test", "::1", "127.0.0.1")


# ------------------------------------------------------- a real server, stubbed DNS
@pytest.fixture(scope="module")
def stub_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stub-network") / "network.jsonl"


@pytest.fixture(scope="module")
def server(
    tiny_model: Any, stub_log: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RuntimeServer]:
    server = start_server(
        tiny_model("qwen3_omni_moe"), tmp_path_factory.mktemp("remote-media"),
        launcher=Path(__file__).with_name("stub_network_serve.py"),
        extra_env={"STUB_NETWORK_HOSTS": json.dumps(HOSTS), "STUB_NETWORK_LOG": str(stub_log)},
        served_model_name="tiny-omni", mm_processor_kwargs=json.dumps(TINY_VIDEO_KWARGS),
        allow_remote_media="true", allowed_media_domains=",".join(ALLOWED), max_image_bytes=20_000,
    )  # fmt: skip
    yield server
    assert server.stop() == 0


def _network(stub_log: Path) -> list[dict[str, Any]]:
    if not stub_log.exists():
        return []
    return [json.loads(line) for line in stub_log.read_text().splitlines()]


def test_server_fetches_from_an_allowed_host(
    server: RuntimeServer, files: str, port: int, stub_log: Path
) -> None:
    url = server.base_url + "/v1/chat/completions"
    inline = httpx.post(url, json=chat([image_part(IMAGE), TEXT]), timeout=120)
    assert inline.status_code == 200, inline.text
    for remote in (f"http://media.test:{port}/image.png", f"{files}/image.png"):
        part = {"type": "image_url", "image_url": {"url": remote}}
        fetched = httpx.post(url, json=chat([part, TEXT]), timeout=120)
        assert fetched.status_code == 200, fetched.text
        assert fetched.json()["choices"][0]["token_ids"] == inline.json()["choices"][0]["token_ids"]
    assert {"lookup": "media.test"} in _network(stub_log)
    assert {"connect": ["127.0.0.1", port]} in _network(stub_log)


SERVER_REFUSED = [
    ("redirect to another host", "image_url", "http://media.test:{port}/redirect?to=http://elsewhere.test/a.png", "remote_redirect_not_allowed"),
    ("private address", "image_url", "http://private.cdn.test/a.png", "remote_address_not_allowed"),
    ("metadata address", "image_url", "http://meta.cdn.test/latest/meta-data/", "remote_address_not_allowed"),
    ("non-http scheme", "image_url", "ftp://media.test/a.png", "unsupported_url_scheme"),
    ("file scheme", "video_url", "file:///etc/passwd", "unsupported_url_scheme"),
    ("host not in the list", "video_url", "http://example.com/v.mp4", "remote_host_not_allowed"),
    ("not found, body not echoed", "image_url", "http://media.test:{port}/secret", "remote_fetch_failed"),
    ("over the size limit", "image_url", "http://media.test:{port}/big.png", "media_too_large"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "kind", "remote", "code"), SERVER_REFUSED, ids=[c[0] for c in SERVER_REFUSED]
)
def test_server_refuses_with_the_exact_code(
    server: RuntimeServer, port: int, stub_log: Path, name: str, kind: str, remote: str, code: str
) -> None:
    before = len(_network(stub_log))
    part = {"type": kind, kind: {"url": remote.format(port=port)}}
    response = httpx.post(
        server.base_url + "/v1/chat/completions", json=chat([part, TEXT]), timeout=60
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (
        code,
        "messages.0.content.0",
        "invalid_request_error",
    )
    assert SECRET_BODY.decode() not in response.text
    attempted = _network(stub_log)[before:]
    connects = [entry["connect"][0] for entry in attempted if "connect" in entry]
    assert all(address == "127.0.0.1" for address in connects), attempted
    assert {"lookup": "elsewhere.test"} not in attempted
    if code in ("remote_address_not_allowed", "remote_host_not_allowed", "unsupported_url_scheme"):
        assert connects == [], attempted  # decided before any connection opened
    assert (
        httpx.post(
            server.base_url + "/v1/chat/completions", json=chat([TEXT]), timeout=60
        ).status_code
        == 200
    )


def test_server_checks_video_urls_the_same_way(server: RuntimeServer, stub_log: Path) -> None:
    part = video_part(b"")
    part["video_url"]["url"] = "http://private.cdn.test/v.mp4"
    response = httpx.post(
        server.base_url + "/v1/chat/completions", json=chat([part, TEXT]), timeout=60
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "remote_address_not_allowed"
