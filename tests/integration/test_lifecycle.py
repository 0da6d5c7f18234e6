"""Start-up and shutdown over real sockets and HTTP probes: lameduck, readiness, startup_timeout."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests import fakeapi
from tests.conftest import DEMO, start_server
from tests.ports import free_tcp_port

KUBIA = "kubia.default.svc.cluster.local."


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


def test_lameduck_not_ready_at_once_healthy_and_serving_then_stops(tmp_path: Path) -> None:
    hport, rport = free_tcp_port(), free_tcp_port()
    server = start_server(f"""
        .:53 {{
            health 127.0.0.1:{hport} {{
                lameduck 1s
            }}
            ready 127.0.0.1:{rport}
            kubernetes cluster.local {{
                manifests {DEMO}
            }}
        }}
        """, tmp_path)
    port = server.listeners[0].port
    assert (_status(hport, "/health"), _status(rport, "/ready")) == (200, 200)
    # a TCP client that has a connection open when the drain starts keeps being answered
    conn = socket.create_connection(("127.0.0.1", port), timeout=3)
    t0 = time.monotonic()
    stopper = threading.Thread(target=server.shutdown)
    stopper.start()
    try:
        time.sleep(0.1)
        assert _status(rport, "/ready") == 503  # at once
        assert _status(hport, "/health") == 200  # still alive: the kubelet must not kill it
        answered = 0
        while time.monotonic() - t0 < 0.8:
            r = dns.query.udp(dns.message.make_query(KUBIA, "A"), "127.0.0.1", port=port,
                              timeout=1)
            assert r.rcode() == 0
            answered += 1
        wire = dns.message.make_query(KUBIA, "A").to_wire()
        conn.sendall(struct.pack("!H", len(wire)) + wire)
        size = struct.unpack("!H", conn.recv(2))[0]
        assert dns.message.from_wire(conn.recv(size)).rcode() == 0
        assert answered > 10
    finally:
        stopper.join(timeout=10)
        conn.close()
    assert time.monotonic() - t0 >= 1.0
    assert server.wait(0)
    assert _status(hport, "/health") == 0  # gone after the drain


def test_wait_returns_only_once_the_drain_is_done(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`kdns serve` exits when ``wait()`` returns: if that happened when the stop began, the
    process would exit with queries still queued on a socket being drained (a rollout lost a
    few that way)."""
    from kdns.server.listeners import UdpListener

    server = start_server(f".:53 {{\n kubernetes cluster.local {{\n manifests {DEMO}\n }}\n}}\n",
                          tmp_path)
    real_stop = UdpListener.stop
    draining = threading.Event()

    def slow_stop(self: UdpListener, drain: bool = False) -> None:
        draining.set()
        time.sleep(0.5)  # a drain that takes a while (queued queries, 50 ms of quiet)
        real_stop(self, drain)

    monkeypatch.setattr(UdpListener, "stop", slow_stop)
    stopper = threading.Thread(target=server.shutdown, kwargs={"lameduck": 0})
    stopper.start()
    assert draining.wait(5)
    assert not server.wait(0.2), "wait() returned while the drain was still running"
    stopper.join(10)
    assert server.wait(0)
    server.stop()  # a second stop returns at once


def test_startup_timeout_waits_then_serves_servfail_for_the_zone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="kdns")
    with fakeapi.FakeApiServer() as api:
        api.set_outage(True, mode="503")
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        rport = free_tcp_port()
        t0 = time.monotonic()
        server = start_server(f"""
            .:53 {{
                ready 127.0.0.1:{rport}
                hosts {{
                    192.0.2.7 other.example.test
                    fallthrough
                }}
                kubernetes cluster.local {{
                    kubeconfig {kubeconfig}
                    startup_timeout 1s
                }}
            }}
            """, tmp_path)
        try:
            waited = time.monotonic() - t0
            assert 0.9 <= waited < 5, waited  # start() blocked for startup_timeout, no longer
            assert _status(rport, "/ready") == 503
            r = dns.query.udp(dns.message.make_query(KUBIA, "A"), "127.0.0.1",
                              port=server.listeners[0].port, timeout=2)
            assert r.rcode() == dns.rcode.SERVFAIL
            # names of other zones are served meanwhile
            other = dns.query.udp(dns.message.make_query("other.example.test.", "A"),
                                  "127.0.0.1", port=server.listeners[0].port, timeout=2)
            assert [a.address for a in other.answer[0]] == ["192.0.2.7"]
            logged = caplog.text
            assert "waiting for Kubernetes API" in logged
            assert "starting server with unsynced Kubernetes API" in logged
            api.set_outage(False)
            deadline = time.monotonic() + 5
            while _status(rport, "/ready") != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            server.stop()


def test_ready_waits_for_the_dns_sockets_not_only_the_sync(tmp_path: Path) -> None:
    from kdns.config.parser import parse_corefile
    from kdns.server.app import KdnsServer, ServeOptions

    rport = free_tcp_port()
    text = (f".:53 {{\n    ready 127.0.0.1:{rport}\n    kubernetes cluster.local {{\n"
            f"        manifests {DEMO}\n    }}\n}}\n")
    server = KdnsServer(parse_corefile(text, "Corefile"),
                        ServeOptions(config_dir=tmp_path, dns_addr="127.0.0.1", dns_port=0)).build()
    try:
        server.start_http()
        server.start_plugins()  # synced from the manifests, but nothing listens for DNS yet
        assert _status(rport, "/ready") == 503
        server.start_listeners()
        assert _status(rport, "/ready") == 200
    finally:
        server.stop()
