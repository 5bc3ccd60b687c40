"""`qms-runtime` with a stubbed network, for tests: run as `python stub_network_serve.py serve ...`.

STUB_NETWORK_HOSTS (JSON {host: [address, ...]}) answers getaddrinfo for those names
(other names resolve as usual: loopback literals and localhost). Every lookup and every
`connect()` is appended to STUB_NETWORK_LOG (JSON lines), and a connection to an address
that is not loopback is refused before any packet is sent. So a test can name private
and metadata addresses through host names and check that the server never tried them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import threading
from typing import Any

_lock = threading.Lock()


def _record(entry: dict[str, Any]) -> None:
    with _lock, open(os.environ["STUB_NETWORK_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")


def install() -> None:
    hosts: dict[str, list[str]] = json.loads(os.environ.get("STUB_NETWORK_HOSTS", "{}"))
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str) and name in hosts:
            _record({"lookup": name})
            infos = []
            for address in hosts[name]:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sockaddr = (
                    (address, int(port or 0), 0, 0) if ":" in address else (address, int(port or 0))
                )
                infos.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
            return infos
        return real_getaddrinfo(host, port, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _record({"connect": [address[0], address[1]]})
            if not ipaddress.ip_address(address[0]).is_loopback:
                raise ConnectionRefusedError(f"stub network: {address[0]} is not loopback")
        real_connect(self, address)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    socket.socket.connect = connect  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    from qms_runtime.cli import main

    sys.exit(main(sys.argv[1:]))
