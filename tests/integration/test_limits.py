"""Every resource limit crossed over real sockets; afterwards a valid query is still answered
promptly. Limits come from the ``timeouts`` and ``limits`` directives."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.plugins import registry
from kdns.plugins.setup_context import SetupContext
from kdns.server.app import KdnsServer
from tests.conftest import DEMO, start_server

KUBIA = "kubia.default.svc.cluster.local."


def framed(name: str = KUBIA) -> bytes:
    wire = dns.message.make_query(name, "A").to_wire()
    return struct.pack("!H", len(wire)) + wire


def closed(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        while True:
            data = s.recv(65535)
            if not data:
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


def answers_promptly(server: KdnsServer) -> None:
    port = server.listeners[0].port
    t0 = time.monotonic()
    q = dns.message.make_query(KUBIA, "A")
    assert dns.query.udp(q, "127.0.0.1", port=port, timeout=2).answer
    assert dns.query.tcp(q, "127.0.0.1", port=port, timeout=2).answer
    assert time.monotonic() - t0 < 0.5


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[KdnsServer]:
    server = start_server(f"""
        .:53 {{
            timeouts {{
                read 1s
                idle 2s
            }}
            limits {{
                tcp_connections 3
                tcp_queries 2
            }}
            kubernetes cluster.local {{
                manifests {DEMO}
            }}
        }}
        """, tmp_path)
    try:
        yield server
    finally:
        server.stop()


def _connect(server: KdnsServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.listeners[0].port), timeout=3)


def test_connection_limit_sheds_the_oldest_idle_connection(limited: KdnsServer) -> None:
    tcp = limited.listeners[0].tcp
    assert tcp is not None
    first, second, third = _connect(limited), _connect(limited), _connect(limited)
    time.sleep(0.2)
    fourth = _connect(limited)  # over the limit: `first` (idle longest) makes room
    fourth.sendall(framed())
    assert fourth.recv(2)
    assert closed(first, within=1.0)
    assert tcp.shed_idle == 1
    for s in (first, second, third, fourth):
        s.close()
    answers_promptly(limited)


def test_connection_limit_refuses_when_no_connection_is_idle(limited: KdnsServer) -> None:
    tcp = limited.listeners[0].tcp
    assert tcp is not None
    busy = [_connect(limited) for _ in range(3)]
    for s in busy:
        s.sendall(framed()[:5])  # mid-query: not idle
    time.sleep(0.2)
    extra = _connect(limited)
    assert closed(extra, within=1.0)
    assert tcp.rejected == 1
    for s in busy:  # their read timeout (1 s) frees the slots
        assert closed(s, within=2.0)
        s.close()
    extra.close()
    assert tcp.timed_out >= 3
    answers_promptly(limited)


def test_queries_per_connection(limited: KdnsServer) -> None:
    tcp = limited.listeners[0].tcp
    assert tcp is not None
    with _connect(limited) as s:
        s.sendall(framed() * 3)
        got, buf = 0, b""
        s.settimeout(2)
        while True:
            chunk = s.recv(65535)
            if not chunk:
                break
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack_from("!H", buf)[0]:
                buf = buf[2 + struct.unpack_from("!H", buf)[0]:]
                got += 1
    assert got == 2 and tcp.query_limited == 1
    answers_promptly(limited)


def test_idle_and_read_timeouts(limited: KdnsServer) -> None:
    with _connect(limited) as idle, _connect(limited) as reading:
        reading.sendall(framed()[:3])
        t0 = time.monotonic()
        assert closed(reading, within=3.0)
        assert 0.8 < time.monotonic() - t0 < 1.8  # read 1s
        assert closed(idle, within=3.0)
        assert 1.5 < time.monotonic() - t0 < 2.8  # idle 2s
    answers_promptly(limited)


def test_udp_queue_sheds_upstream_queries_not_cluster_names(tmp_path: Path) -> None:
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # an upstream that never answers
    hole.bind(("127.0.0.1", 0))
    server = start_server(f"""
        .:53 {{
            limits {{
                udp_queue 3
                udp_workers 1
            }}
            kubernetes cluster.local {{
                manifests {DEMO}
            }}
            forward . 127.0.0.1:{hole.getsockname()[1]}
        }}
        """, tmp_path)
    try:
        udp = server.listeners[0].udp
        assert udp is not None
        port = server.listeners[0].port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            for i in range(30):
                c.sendto(dns.message.make_query(f"x{i}.example.com.", "A").to_wire(),
                         ("127.0.0.1", port))
            # The receive loop takes the 30 datagrams one by one: wait for it to get through
            # them (on a loaded machine that is not immediate), not just for the first shed.
            deadline = time.monotonic() + 5
            while udp.shed < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert udp.shed >= 20  # one in the worker, three queued, the rest shed
        answers_promptly(server)  # cluster names never wait behind the upstream
    finally:
        server.stop()
        hole.close()


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("timeouts", "2:5", "needs a block"),
        ("timeouts {\n        read 0s\n    }", "3:14", "between 1s and 24h"),
        ("timeouts {\n        read\n    }", "3:9", "needs one DURATION"),
        ("timeouts {\n        linger 5s\n    }", "3:9", "unknown property"),
        ("limits {\n        tcp_connections 0\n    }", "3:25", "must be in [1,"),
        ("limits {\n        tcp_connections many\n    }", "3:25", "whole number"),
        ("limits {\n        udp_threads 4\n    }", "3:9", "unknown property"),
        ("limits now", "2:12", "unexpected argument"),
    ],
)
def test_limit_directives_report_located_errors(text: str, where: str, message: str) -> None:
    block = parse_corefile(f".:53 {{\n    {text}\n}}\n", "Corefile")[0]
    d = block.directives[0]
    func = registry.setup_func(d.name.text)
    assert func is not None
    with pytest.raises(ConfigError) as err:
        func(d, SetupContext(block.keys, Path(".")))
    assert str(err.value).startswith(f"Corefile:{where}:"), str(err.value)
    assert message in str(err.value)
