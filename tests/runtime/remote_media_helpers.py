"""Loopback media files for the remote-media tests, and the stubs that keep them on
loopback: a resolver that maps test host names to chosen addresses, and a connector that
records every connection asked for and opens only loopback ones."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SECRET_BODY = b"SECRET-BODY-0xC0FFEE: internal page that must never be echoed"


@contextmanager
def media_files(content: dict[str, bytes]) -> Iterator[str]:
    """A loopback HTTP server for `content` (path -> bytes), plus:
    /redirect?to=URL (302 to URL), /secret (404 whose body is SECRET_BODY), /loop (302 to
    itself), /slow (200 after a second). Yields its base URL on 127.0.0.1."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            if path == "/redirect":
                self.send_response(302)
                self.send_header("Location", query.removeprefix("to="))
                self.end_headers()
                return
            if path == "/slow":  # answers after a second: for the time limits
                time.sleep(1.0)
                self.send_response(200)
                self.end_headers()
                return
            if path == "/loop":
                self.send_response(302)
                self.send_header("Location", "/loop")
                self.end_headers()
                return
            body = content.get(path)
            status = 200 if body is not None else 404
            body = body if body is not None else SECRET_BODY
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class StubNetwork:
    """Resolver and connector stubs: `hosts` maps a host name to its addresses; every
    lookup and connection is recorded; a connection to a non-loopback address is never
    opened (it raises), so no test can send a packet off this machine."""

    def __init__(self, hosts: dict[str, list[str]]) -> None:
        self.hosts = hosts
        self.lookups: list[str] = []
        self.connections: list[tuple[str, int]] = []

    def resolve(self, host: str, port: int) -> list[Any]:
        self.lookups.append(host)
        if host not in self.hosts:
            raise socket.gaierror(socket.EAI_NONAME, "unknown host (stub)")
        return [ipaddress.ip_address(a) for a in self.hosts[host]]

    def connect(self, address: tuple[str, int], timeout: float) -> socket.socket:
        self.connections.append(address)
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise ConnectionRefusedError(f"stub network: {address[0]} is not loopback")
        return socket.create_connection(address, timeout=timeout)
