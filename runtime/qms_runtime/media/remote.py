"""Remote media (http(s) image and video URLs), fetched only where the settings allow.

Off unless `allow_remote_media`; then, for the URL and for every redirect it leads to:

1. the scheme is http or https (`unsupported_url_scheme` otherwise);
2. the host is in `allowed_media_domains`: an exact entry, or a `*.` suffix entry for
   its subdomains (`remote_host_not_allowed`; for a redirect
   `remote_redirect_not_allowed`);
3. the host is resolved and every address it has is checked: loopback, link-local,
   private, shared, reserved and cloud-metadata addresses are refused
   (`remote_address_not_allowed`) unless an exact entry names the host itself. A suffix
   entry never opens a private network;
4. the connection goes to an address checked in 3 (so a second DNS answer cannot
   swap it), with TLS verified against the host name.

All of that is decided before a connection opens. Size (`limit` bytes) and time
(`TIMEOUT_SECONDS` per hop, `TOTAL_SECONDS` in all) are bounded; at most
`MAX_REDIRECTS` redirects are followed. Error messages name the URL's host only: never
its path or query (signed URLs carry secrets), the fetched body or internal details.
Proxies from the environment are not used.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from qms_runtime.quoting import echo
from qms_runtime.types import MediaError, media_too_large

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[IPAddress]]
Connector = Callable[[tuple[str, int], float], socket.socket]

TIMEOUT_SECONDS = 10.0
TOTAL_SECONDS = 30.0
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 1 << 16
# Instance metadata services: AWS/GCP/Azure/OpenStack, AWS ECS tasks, AWS over IPv6,
# Alibaba. All but the last two are link-local anyway; named so messages say what it is.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address of `host` (getaddrinfo, the pod's DNS)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def system_connector(address: tuple[str, int], timeout: float) -> socket.socket:
    return socket.create_connection(address, timeout=timeout)


def address_class(address: IPAddress) -> str | None:
    """What makes an address off limits ('a private address', ...), or None if public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if not address.is_global or address.is_multicast:
        return "a non-public address"
    return None


@dataclass(frozen=True)
class MediaHosts:
    """The allow-list: exact hosts and `*.` suffixes, lowercased."""

    exact: frozenset[str]
    suffixes: tuple[str, ...]

    @classmethod
    def of(cls, entries: tuple[str, ...]) -> MediaHosts:
        exact = frozenset(e for e in entries if not e.startswith("*."))
        return cls(exact, tuple(e[1:] for e in entries if e.startswith("*.")))

    def allows(self, host: str) -> bool:
        return host in self.exact or any(host.endswith(suffix) for suffix in self.suffixes)

    def names(self, host: str) -> bool:
        """Named by an exact entry: then even a private address is the operator's choice."""
        return host in self.exact


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # lowercased; an IPv6 address without brackets
    port: int
    path: str  # path and query, as sent


class RemoteFetcher:
    def __init__(
        self,
        allowed: tuple[str, ...],
        resolver: Resolver | None = None,
        connector: Connector | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.hosts = MediaHosts.of(allowed)
        self._resolve = resolver or system_resolver
        self._connect = connector or system_connector
        self._tls = tls

    def fetch(self, url: str, kind: str, limit: int, param: str) -> bytes:
        """The body behind `url` (at most `limit` + 1 bytes), or a MediaError."""
        deadline = time.monotonic() + TOTAL_SECONDS
        target = self._target(url, kind, param, redirect=False)
        for _ in range(MAX_REDIRECTS + 1):
            addresses = self._addresses(target, kind, param)
            status, location, body = self._get(target, addresses, kind, limit, param, deadline)
            if status not in _REDIRECTS:
                if status != 200:
                    raise _failed(kind, target.host, param, f"HTTP {status}")
                return body
            if location is None:
                raise _failed(kind, target.host, param, f"HTTP {status} without a Location")
            url = urljoin(_url_of(target), location)
            target = self._target(url, kind, param, redirect=True)
        raise _failed(kind, target.host, param, f"more than {MAX_REDIRECTS} redirects")

    # ------------------------------------------------------------------ checks
    def _target(self, url: str, kind: str, param: str, redirect: bool) -> _Target:
        via = "redirects to" if redirect else "is"
        try:
            parts = urlsplit(url.strip())
            scheme = parts.scheme.lower()
            host = (parts.hostname or "").rstrip(".")
            port = parts.port
        except ValueError as exc:
            raise MediaError(f"{param}: the {kind} URL is not a valid URL", param) from exc
        if scheme not in ("http", "https"):
            raise MediaError(
                f"{param}: the {kind} URL {via} a {echo(scheme, 16)}: URL; remote media "
                "must be http or https",
                param,
                "unsupported_url_scheme",
            )
        if not host.isascii():
            try:
                host = host.encode("idna").decode("ascii")
            except UnicodeError:
                host = ""
        if not _valid_host(host) or not self.hosts.allows(host):
            shown = echo(host) if host else "no host"
            if redirect:
                raise MediaError(
                    f"{param}: the {kind} URL redirects to {shown}, which is not in "
                    "allowed_media_domains",
                    param,
                    "remote_redirect_not_allowed",
                )
            raise MediaError(
                f"{param}: remote {kind} URLs from {shown} are not allowed on this server "
                "(not in allowed_media_domains)",
                param,
                "remote_host_not_allowed",
            )
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return _Target(scheme, host, port or (443 if scheme == "https" else 80), path)

    def _addresses(self, target: _Target, kind: str, param: str) -> list[IPAddress]:
        try:
            literal: IPAddress | None = ipaddress.ip_address(target.host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                addresses = self._resolve(target.host, target.port)
            except (OSError, UnicodeError) as exc:
                raise _failed(kind, target.host, param, "the host name does not resolve") from exc
            if not addresses:
                raise _failed(kind, target.host, param, "the host name does not resolve")
        if not self.hosts.names(target.host):
            for address in addresses:
                what = address_class(address)
                if what is not None:
                    raise MediaError(
                        f"{param}: {echo(target.host)} resolves to {what}, which remote "
                        f"{kind} may reach only when allowed_media_domains names the host "
                        "exactly",
                        param,
                        "remote_address_not_allowed",
                    )
        return addresses

    # ------------------------------------------------------------------ fetching
    def _get(
        self,
        target: _Target,
        addresses: list[IPAddress],
        kind: str,
        limit: int,
        param: str,
        deadline: float,
    ) -> tuple[int, str | None, bytes]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _failed(kind, target.host, param, "timed out")
        connection = self._connection(target, addresses, min(left, TIMEOUT_SECONDS))
        try:
            connection.request("GET", target.path, headers={"Accept": "*/*"})
            response = connection.getresponse()
            if response.status in _REDIRECTS:
                return response.status, response.getheader("Location"), b""
            if response.status != 200:
                return response.status, None, b""
            declared = response.getheader("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise media_too_large(kind, limit, param)  # before reading any of it
            data = bytearray()
            while len(data) <= limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _failed(kind, target.host, param, "timed out")
                if connection.sock is not None:
                    connection.sock.settimeout(min(left, TIMEOUT_SECONDS))
                chunk = response.read1(min(_CHUNK, limit + 1 - len(data)))
                if not chunk:
                    break
                data.extend(chunk)
            return 200, None, bytes(data)
        except MediaError:
            raise
        except TimeoutError as exc:
            raise _failed(kind, target.host, param, "timed out") from exc
        except ssl.SSLError as exc:
            raise _failed(kind, target.host, param, "TLS failed") from exc
        except ConnectionRefusedError as exc:
            raise _failed(kind, target.host, param, "connection refused") from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _failed(kind, target.host, param, "the connection failed") from exc
        finally:
            connection.close()

    def _connection(
        self, target: _Target, addresses: list[IPAddress], timeout: float
    ) -> http.client.HTTPConnection:
        host = f"[{target.host}]" if ":" in target.host else target.host
        connect = self._connect

        def open_socket(timeout: float) -> socket.socket:
            last: OSError = OSError("no address")
            for address in addresses:  # only addresses _addresses() checked
                try:
                    return connect((str(address), target.port), timeout)
                except OSError as exc:
                    last = exc
            raise last

        if target.scheme == "https":
            tls = self._tls or ssl.create_default_context()
            return _PinnedHTTPS(host, target.port, open_socket, timeout, tls)
        return _PinnedHTTP(host, target.port, open_socket, timeout)


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(
        self, host: str, port: int, open_socket: Callable[[float], socket.socket], timeout: float
    ):
        super().__init__(host, port, timeout=timeout)
        self._open_socket = open_socket
        self._timeout = timeout

    def connect(self) -> None:
        self.sock = self._open_socket(self._timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(
        self,
        host: str,
        port: int,
        open_socket: Callable[[float], socket.socket],
        timeout: float,
        tls: ssl.SSLContext,
    ):
        super().__init__(host, port, timeout=timeout, context=tls)
        self._open_socket = open_socket
        self._timeout = timeout
        self._tls_context = tls

    def connect(self) -> None:
        sock = self._open_socket(self._timeout)
        self.sock = self._tls_context.wrap_socket(sock, server_hostname=self.host)


_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


def _valid_host(host: str) -> bool:
    if _HOST_NAME.match(host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _url_of(target: _Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{target.scheme}://{host}:{target.port}{target.path}"


def _failed(kind: str, host: str, param: str, reason: str) -> MediaError:
    return MediaError(
        f"{param}: could not fetch the {kind} from {echo(host)}: {reason}",
        param,
        "remote_fetch_failed",
    )
