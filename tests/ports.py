"""Free loopback ports for servers the tests start.

A DNS server binds UDP and TCP on one port. A port the kernel hands out for one protocol may
be taken for the other (another test's listener, a connection in TIME_WAIT), so a port for
both is looked for until one binds both ways, instead of assuming it does.
"""

from __future__ import annotations

import socket


def free_dns_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that both a UDP and a TCP socket could bind just now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind((host, 0))
            port: int = u.getsockname()[1]
            try:
                t.bind((host, port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no port free for both UDP and TCP on {host} in 100 tries")
