"""End to end: a fake API server over HTTP -> informers -> view -> DNS answers and /ready.

Everything is real: the API server is an HTTP server the test starts, kdns reads it through a
kubeconfig with a bearer token, and the answers come back over UDP via dnspython.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from kdns.server.app import KdnsServer
from tests import fakeapi
from tests.conftest import start_server
from tests.ports import free_tcp_port

KUBIA = "kubia.default.svc.cluster.local."


def _seed(api: fakeapi.FakeApiServer) -> None:
    api.add("namespaces", fakeapi.namespace("default"))
    api.add("services", fakeapi.service("default", "kubia", cluster_ip="10.98.237.175",
                                        ports=[("http", 80, "TCP")]))
    api.add("endpointslices", fakeapi.endpoint_slice(
        "default", "kubia-abc", "kubia", ports=[("http", 8080, "TCP")],
        endpoints=["10.244.1.18", "10.244.2.14", "10.244.3.14"]))


class Env:
    def __init__(self, api: fakeapi.FakeApiServer, server: KdnsServer, ready_port: int) -> None:
        self.api, self.server, self.ready_port = api, server, ready_port
        self.port = server.listeners[0].port

    def ask(self, name: str, qtype: str = "A") -> dns.message.Message:
        return dns.query.udp(dns.message.make_query(name, qtype), "127.0.0.1", port=self.port,
                             timeout=2)

    def ready(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ready_port}/ready",
                                        timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as err:
            return int(err.code)


def until(check: Callable[[], bool], timeout: float = 1.0) -> float:
    """Poll ``check`` until true; returns the seconds it took (fails after ``timeout``)."""
    t0 = time.monotonic()
    while True:
        if check():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(0.01)


def _corefile(api: fakeapi.FakeApiServer, tmp: Path, ready_port: int, extra: str = "") -> str:
    kubeconfig = api.write_kubeconfig(str(tmp / "kubeconfig"), token="s3cret")
    return f"""
    .:53 {{
        errors
        ready 127.0.0.1:{ready_port}
        kubernetes cluster.local in-addr.arpa {{
            kubeconfig {kubeconfig}
            startup_timeout 0s
            {extra}
        }}
    }}
    """


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with fakeapi.FakeApiServer(bookmark_interval=0.2) as api:
        api.required_token = "s3cret"
        _seed(api)
        ready_port = free_tcp_port()
        server = start_server(_corefile(api, tmp_path, ready_port), tmp_path)
        e = Env(api, server, ready_port)
        try:
            until(lambda: e.ask(KUBIA).rcode() == 0, timeout=5)
            yield e
        finally:
            server.stop()


def test_create_update_delete_show_up_within_a_second(env: Env) -> None:
    name = "fresh.default.svc.cluster.local."
    assert env.ask(name).rcode() == dns.rcode.NXDOMAIN
    env.api.add("services", fakeapi.service("default", "fresh", cluster_ip="10.96.7.7"))
    until(lambda: [r.address for r in env.ask(name).answer[0]] == ["10.96.7.7"]
          if env.ask(name).answer else False)
    env.api.update("services", fakeapi.service("default", "fresh", cluster_ip="10.96.7.8"))
    until(lambda: bool(env.ask(name).answer) and env.ask(name).answer[0][0].address == "10.96.7.8")
    env.api.delete("services", "default", "fresh")
    until(lambda: env.ask(name).rcode() == dns.rcode.NXDOMAIN)
    # endpoints changes reach the per-endpoint and headless answers as well
    env.api.add("services", fakeapi.service("default", "hl", headless=True))
    env.api.add("endpointslices", fakeapi.endpoint_slice(
        "default", "hl-1", "hl", endpoints=[fakeapi.endpoint("10.244.9.9", hostname="h0")]))
    until(lambda: bool(env.ask("h0.hl.default.svc.cluster.local.").answer))


def test_relist_after_410_converges(env: Env) -> None:
    env.api.compact()
    env.api.drop_watches()
    # changes made while the watch is gone and history compacted: only a relist can see them
    env.api.delete("services", "default", "kubia")
    env.api.add("services", fakeapi.service("default", "after", cluster_ip="10.96.8.8"))
    env.api.compact()
    until(lambda: env.ask(KUBIA).rcode() == dns.rcode.NXDOMAIN, timeout=3)
    until(lambda: env.ask("after.default.svc.cluster.local.").rcode() == 0, timeout=3)


def test_outage_keeps_the_last_answers_then_recovers(env: Env) -> None:
    env.api.set_outage(True, mode="refuse")
    time.sleep(0.5)
    for _ in range(5):
        r = env.ask(KUBIA)
        assert r.rcode() == 0 and r.answer[0][0].address == "10.98.237.175"
    assert env.ready() == 200  # readiness reflects the first sync, not the connection
    env.api.set_outage(False)
    env.api.add("services", fakeapi.service("default", "later", cluster_ip="10.96.9.9"))
    until(lambda: env.ask("later.default.svc.cluster.local.").rcode() == 0, timeout=5)


def test_ready_only_after_the_first_full_list_and_servfail_before(tmp_path: Path) -> None:
    with fakeapi.FakeApiServer() as api:
        api.required_token = "s3cret"
        _seed(api)
        api.set_outage(True, mode="503")
        ready_port = free_tcp_port()
        server = start_server(_corefile(api, tmp_path, ready_port), tmp_path)
        e = Env(api, server, ready_port)
        try:
            assert e.ready() == 503
            r = e.ask(KUBIA)
            assert r.rcode() == dns.rcode.SERVFAIL  # in-zone before the first sync
            api.set_outage(False)
            until(lambda: e.ready() == 200, timeout=5)
            assert e.ask(KUBIA).answer[0][0].address == "10.98.237.175"
        finally:
            server.stop()


def test_a_malformed_api_object_is_skipped_and_the_rest_served(env: Env) -> None:
    bad = fakeapi.service("default", "broken", cluster_ip="10.96.1.1")
    bad["spec"]["clusterIPs"] = ["not-an-ip"]
    env.api.add("services", bad)
    env.api.add("services", fakeapi.service("default", "good", cluster_ip="10.96.1.2"))
    until(lambda: env.ask("good.default.svc.cluster.local.").rcode() == 0)
    assert env.ask("broken.default.svc.cluster.local.").rcode() == dns.rcode.NXDOMAIN
    assert env.ask(KUBIA).rcode() == 0
