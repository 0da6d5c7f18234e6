"""Free loopback ports for servers the tests start, and for the ports nothing listens on.

The kernel hands out a port free for the one protocol asked (a bind on port 0), then the socket
is closed and the port given to the server under test: another process may take it meanwhile,
and these helpers only narrow that window, they cannot close it.

* :func:`free_dns_port`: a DNS server (kdns, dnsmasq, named, a fake upstream) binds UDP and TCP
  on one port. A port the kernel hands out for one protocol may be taken for the other (another
  test's listener, a connection in TIME_WAIT), so a port for both is looked for until one binds
  both ways, instead of assuming it does. Also the port for a DNS server that is down: nothing
  answers there on either protocol.
* :func:`free_tcp_port`: an HTTP listener (health, ready, prometheus) or an HTTP server that is
  down; TCP only.
* :func:`free_udp_port`: a UDP-only port, e.g. a client's source port.

Each takes the address to bind (``127.0.0.1`` unless given; ``::1`` works too).
"""

from __future__ import annotations

import socket


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_dns_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that both a UDP and a TCP socket could bind just now."""
    family = _family(host)
    for _ in range(100):
        with socket.socket(family, socket.SOCK_DGRAM) as u, \
                socket.socket(family, socket.SOCK_STREAM) as t:
            u.bind((host, 0))
            port: int = u.getsockname()[1]
            try:
                t.bind((host, port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no port free for both UDP and TCP on {host} in 100 tries")


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that a TCP socket could bind just now (an HTTP listener's)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that a UDP socket could bind just now (say, a client's source port)."""
    with socket.socket(_family(host), socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
