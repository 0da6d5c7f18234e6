"""HTTP routes that plugins expose (``/health``, ``/ready``, ``/metrics``).

A plugin declares routes; the server hosts them, one HTTP listener per address, so two plugins
on the same address share a listener and no plugin opens sockets itself. This module is also
the one home of the listen-address syntax those plugins accept.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from kdns.config.model import Directive, error

RouteFunc = Callable[[], tuple[int, str, bytes]]
"""Returns (status, content type, body)."""


@dataclass(frozen=True, slots=True)
class Route:
    addr: str
    """Canonical ``host:port`` (:func:`listen_addr`; ``:8080`` means all interfaces)."""
    path: str
    func: RouteFunc
    tls: ssl.SSLContext | None = None
    """Serve this address over HTTPS with this server context (``prometheus { tls ... }``)."""


def split_addr(addr: str, default_port: int) -> tuple[str, int]:
    """``host:port`` as (host, port): ``:8080`` -> ("", 8080), ``127.0.0.1:8181``,
    ``[::1]:9153`` -> ("::1", 9153). Without a port (``127.0.0.1``, ``[::1]``, ``::1``,
    ``localhost``) the port is ``default_port``. Raises ValueError naming what is wrong."""
    text = addr.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"invalid address {addr!r}: missing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"invalid address {addr!r}: expected ':PORT' after ']'")
        port = rest[1:] if rest else str(default_port)
        if not _is_ip(host, 6):
            raise ValueError(f"invalid address {addr!r}: {host!r} is not an IPv6 address")
    elif text.count(":") > 1:  # a bare IPv6 address: no room for a port without brackets
        host, port = text, str(default_port)
        if not _is_ip(host, 6):
            raise ValueError(f"invalid address {addr!r}: write an IPv6 address with a port "
                             "as [ADDRESS]:PORT")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, str(default_port)
        if host and not (_is_ip(host, 4) or _HOSTNAME.fullmatch(host)):
            raise ValueError(f"invalid address {addr!r}: {host!r} is not a host name or "
                             "IPv4 address")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid address {addr!r}: port must be 0..65535")
    return host, int(port)


def join_addr(host: str, port: int) -> str:
    """The canonical ``host:port`` (``[v6]:port``; ``:port`` for all interfaces)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_addr(d: Directive, plugin: str, default: str, default_port: int) -> str:
    """The optional single ADDRESS argument of ``health``/``ready``/``prometheus``, checked and
    written canonically (``127.0.0.1`` -> ``127.0.0.1:8080``), so the server binds exactly
    what setup accepted; a bad one is a located error."""
    if len(d.args) > 1:
        raise error(d.args[1], plugin, "expected at most one address")
    text = d.args[0].text if d.args else default
    try:
        host, port = split_addr(text, default_port)
    except ValueError as err:
        raise error(d.args[0] if d.args else d, plugin, str(err)) from None
    return join_addr(host, port)


_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                       r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?")


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False
