"""HTTP routes that plugins expose (``/health``, ``/ready``, ``/metrics``).

A plugin declares routes; the server hosts them, one HTTP listener per address, so two plugins
on the same address share a listener and no plugin opens sockets itself.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass

RouteFunc = Callable[[], tuple[int, str, bytes]]
"""Returns (status, content type, body)."""


@dataclass(frozen=True, slots=True)
class Route:
    addr: str
    """``host:port`` as written in the Corefile (``:8080`` means all interfaces)."""
    path: str
    func: RouteFunc
    tls: ssl.SSLContext | None = None
    """Serve this address over HTTPS with this server context (``prometheus { tls ... }``)."""


def split_addr(addr: str, default_port: int) -> tuple[str, int]:
    """``:8080`` -> ("", 8080); ``127.0.0.1:8181`` -> ("127.0.0.1", 8181); ``[::1]:80``."""
    host, sep, port = addr.rpartition(":")
    if not sep:
        host, port = addr, str(default_port)
    host = host.strip("[]")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid address {addr!r}: port must be 0..65535")
    return host, int(port)
