"""The UDP listener's receive buffer rides out a pause of the serving thread at high rate:
a burst the default buffer (about 200 queries) would drop is kept whole until it is read."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kdns.server.listeners import UDP_RCVBUF, bind_pair

RMEM_MAX = Path("/proc/sys/net/core/rmem_max")
BURST = 2000
"""Queries arriving while nothing reads: 0.1 s at 20k QPS."""


def _rmem_max() -> int:
    try:
        return int(RMEM_MAX.read_text())
    except (OSError, ValueError):
        return 0


def test_udp_socket_asks_for_the_large_buffer() -> None:
    udp, tcp = bind_pair("127.0.0.1", 0)
    with udp, tcp:
        # Linux reports twice the granted size (the doubling covers its bookkeeping)
        granted = udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    assert granted >= min(UDP_RCVBUF, _rmem_max())


@pytest.mark.skipif(_rmem_max() < UDP_RCVBUF, reason="net.core.rmem_max below kdns's request")
def test_burst_during_a_pause_is_kept() -> None:
    udp, tcp = bind_pair("127.0.0.1", 0)
    with udp, tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        query = bytes(12) + b"\x03svc\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01"
        for _ in range(BURST):  # the server reads nothing meanwhile: its thread is "paused"
            client.sendto(query, udp.getsockname())
        udp.settimeout(0.5)
        got = 0
        try:
            while got < BURST:
                udp.recv(4096)
                got += 1
        except TimeoutError:
            pass
    assert got == BURST
