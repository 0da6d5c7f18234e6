"""The fast path under change: a change evicts only the stored replies built from what it
touched, a reply built from an older view is never stored as current, and the store stays one
entry per question whatever the client's letter case.

A real server (kubernetes from the fake API server over HTTP, hosts from a file) on loopback;
dnspython asks over UDP. Whether a query was a fast-path hit is read from the listener's
``counters.slow`` (it counts the queries that went through the chain).
"""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from kdns.config.parser import parse_corefile
from kdns.plugins.base import GENERATION, Request, Response
from kdns.plugins.kubernetes.handler import KubernetesHandler
from kdns.server.app import KdnsServer
from kdns.server.dispatch import Dispatcher
from kdns.server.stats import Entry, Stats
from kdns.server.store import ENTRY_OVERHEAD, ReplyStore
from tests import fakeapi
from tests.conftest import start_server

Z = "svc.cluster.local."
A_NAME, B_NAME, HL_NAME = f"a.default.{Z}", f"b.default.{Z}", f"hl.default.{Z}"


def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(0.01)


def _slice(name: str, service: str, *ips: str) -> fakeapi.Obj:
    return fakeapi.endpoint_slice("default", name, service, ports=[("http", 80, "TCP")],
                                  endpoints=list(ips))


class Env:
    def __init__(self, api: fakeapi.FakeApiServer, server: KdnsServer, tmp: Path,
                 corefile: str) -> None:
        self.api, self.server, self.tmp, self.corefile = api, server, tmp, corefile
        self.port = server.listeners[0].port

    @property
    def disp(self) -> Dispatcher:
        udp = self.server.listeners[0].udp
        assert udp is not None
        return udp.dispatcher

    def ask(self, name: str, qtype: str = "A") -> dns.message.Message:
        return dns.query.udp(dns.message.make_query(name, qtype), "127.0.0.1", port=self.port,
                             timeout=2)

    def addrs(self, name: str, qtype: str = "A") -> list[str]:
        return sorted(str(r) for rrset in self.ask(name, qtype).answer for r in rrset)

    def hit(self, name: str, qtype: str = "A") -> bool:
        """Ask once; True when the reply came from the fast path."""
        before = self.disp.counters.slow
        self.ask(name, qtype)
        return self.disp.counters.slow == before


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with fakeapi.FakeApiServer(bookmark_interval=0.2) as api:
        for ns in ("default", "other"):
            api.add("namespaces", fakeapi.namespace(ns))
        api.add("services", fakeapi.service("default", "a", cluster_ip="10.96.0.10",
                                            ports=[("http", 80, "TCP")]))
        api.add("services", fakeapi.service("default", "b", cluster_ip="10.96.0.11",
                                            ports=[("http", 80, "TCP")]))
        api.add("services", fakeapi.service("default", "hl", headless=True,
                                            ports=[("http", 80, "TCP")]))
        api.add("endpointslices", _slice("hl-1", "hl", "10.244.0.1", "10.244.0.2"))
        api.add("pods", fakeapi.pod("default", "p1", ip="10.244.0.1"))
        hosts = tmp_path / "hosts"
        hosts.write_text("192.0.2.1 www.example.com\n")
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        corefile = f"""
        .:53 {{
            errors
            hosts {hosts} example.com {{
                reload 50ms
            }}
            kubernetes cluster.local in-addr.arpa {{
                kubeconfig {kubeconfig}
                pods verified
                startup_timeout 5s
            }}
        }}
        """
        server = start_server(corefile, tmp_path)
        e = Env(api, server, tmp_path, corefile)
        try:
            until(lambda: e.ask(A_NAME).rcode() == dns.rcode.NOERROR)
            yield e
        finally:
            server.stop()


WARM = [(A_NAME, "A"), (B_NAME, "A"), (HL_NAME, "A"), (f"_http._tcp.{B_NAME}", "SRV"),
        (f"x1.default.{Z}", "A"), (f"x1.other.{Z}", "A"), ("11.0.96.10.in-addr.arpa.", "PTR"),
        ("www.example.com.", "A")]


def _warm(env: Env) -> None:
    for name, qtype in WARM:
        env.ask(name, qtype)
        assert env.hit(name, qtype), (name, qtype)


def test_a_slice_change_evicts_only_that_service(env: Env) -> None:
    _warm(env)
    env.api.update("endpointslices", _slice("hl-1", "hl", "10.244.0.1", "10.244.0.3"))
    # No stale answer: as soon as the view has the change, the changed name says so.
    until(lambda: env.addrs(HL_NAME) == ["10.244.0.1", "10.244.0.3"])
    for name, qtype in WARM:
        if name != HL_NAME:
            assert env.hit(name, qtype), (name, qtype)
    assert env.hit(HL_NAME)


def test_new_service_and_namespace_replace_stored_negative_answers(env: Env) -> None:
    _warm(env)
    fresh, newns = f"fresh.default.{Z}", f"y.newns.{Z}"
    for name in (fresh, newns):
        assert env.ask(name).rcode() == dns.rcode.NXDOMAIN and env.hit(name)
    env.api.add("services", fakeapi.service("default", "fresh", cluster_ip="10.96.0.99"))
    until(lambda: env.addrs(fresh) == ["10.96.0.99"])
    env.api.add("namespaces", fakeapi.namespace("newns"))
    env.api.add("services", fakeapi.service("newns", "y", cluster_ip="10.96.0.98"))
    until(lambda: env.addrs(newns) == ["10.96.0.98"])
    assert env.hit(A_NAME) and env.hit(f"x1.other.{Z}")


def test_a_namespace_that_goes_evicts_its_services_stored_answers(env: Env) -> None:
    """Answers about a Service list only the Service's key: the builder names every Service
    of a namespace that changes, so the namespace's going still evicts them."""
    c_name = f"c.other.{Z}"
    env.api.add("services", fakeapi.service("other", "c", cluster_ip="10.96.0.12",
                                            ports=[("http", 80, "TCP")]))
    until(lambda: env.addrs(c_name) == ["10.96.0.12"])
    _warm(env)
    srv = f"_http._tcp.{c_name}"
    for name, qtype in ((c_name, "A"), (c_name, "AAAA"), (srv, "SRV")):
        env.ask(name, qtype)
        assert env.hit(name, qtype), (name, qtype)
    # The namespace goes; its Service object is still in the view (no cascade here).
    env.api.delete("namespaces", "", "other")
    until(lambda: env.ask(c_name).rcode() == dns.rcode.NXDOMAIN)
    assert env.ask(srv, "SRV").rcode() == dns.rcode.NXDOMAIN
    assert env.ask(c_name, "AAAA").rcode() == dns.rcode.NXDOMAIN
    for name, qtype in WARM:
        if ".other." not in name:
            assert env.hit(name, qtype), (name, qtype)


def test_pod_churn_keeps_service_replies(env: Env) -> None:
    """``pods verified``: pod IPs changing evicts pod names only."""
    _warm(env)
    pod_name = "10-244-0-7.default.pod.cluster.local."
    assert env.ask(pod_name).rcode() == dns.rcode.NXDOMAIN and env.hit(pod_name)
    for i in range(5):
        env.api.add("pods", fakeapi.pod("default", f"churn{i}", ip=f"10.244.1.{i}"))
    env.api.add("pods", fakeapi.pod("default", "p7", ip="10.244.0.7"))
    until(lambda: env.addrs(pod_name) == ["10.244.0.7"])
    for name, qtype in WARM:
        assert env.hit(name, qtype), (name, qtype)


def test_mixed_case_spellings_share_one_entry(env: Env) -> None:
    env.ask(A_NAME)
    size = len(env.disp.store)
    for i in range(64):
        spelled = "".join(c.upper() if (i >> (j % 6)) & 1 else c for j, c in enumerate(A_NAME))
        reply = env.ask(spelled)
        assert reply.question[0].name.to_text() == spelled  # the client's case is echoed
        assert reply.answer[0].name.to_text() == spelled
        assert [str(r) for r in reply.answer[0]] == ["10.96.0.10"]
    assert len(env.disp.store) == size


def test_corefile_reload_and_hosts_change_leave_cluster_names_on_the_fast_path(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    _warm(env)
    # A hosts file change evicts the hosts replies only.
    (env.tmp / "hosts").write_text("192.0.2.2 www.example.com\n")
    until(lambda: env.addrs("www.example.com.") == ["192.0.2.2"])
    assert env.hit(A_NAME) and env.hit(f"x1.default.{Z}")
    # A Corefile reload drops everything once; then the same questions are hits again.
    old = [h for h in env.server.handlers() if isinstance(h, KubernetesHandler)]
    monkeypatch.setattr("kdns.server.app.RELOAD_GRACE", 0.05)
    env.server.reload(parse_corefile(textwrap.dedent(env.corefile), str(env.tmp / "Corefile")))
    until(lambda: env.ask(A_NAME).rcode() == dns.rcode.NOERROR)
    # The old chain's watches stop after the grace period, not after this test.
    until(lambda: all(h._source is None for h in old))
    hits = 0
    for _ in range(50):
        hits += env.hit(A_NAME)
    assert hits >= 49


def test_a_publish_between_building_and_storing_is_not_stored(env: Env) -> None:
    """The data version is read before the chain; a change of the reply's Service published
    while the reply is on its way to the store makes the store refuse it."""
    zone = env.disp.zones["."]
    inner = zone.chain
    armed = threading.Event()

    def view_has_new_b() -> bool:
        for h in env.server.handlers():
            if isinstance(h, KubernetesHandler):
                entry = h.view.service("default", "b")
                return entry is not None and entry.service.cluster_ips == ("10.96.0.12",)
        return False

    def chain(req: Request) -> Response:
        resp = inner(req)
        if armed.is_set() and req.qname_lower == B_NAME:
            armed.clear()
            env.api.update("services", fakeapi.service("default", "b", cluster_ip="10.96.0.12",
                                                       ports=[("http", 80, "TCP")]))
            until(view_has_new_b, timeout=1.5)  # published while this reply is in flight
        return resp

    zone.chain = chain
    refused = env.disp.store.refused
    armed.set()
    assert env.addrs(B_NAME) == ["10.96.0.11"]  # built from the view before the change
    assert env.disp.store.refused == refused + 1
    assert env.addrs(B_NAME) == ["10.96.0.12"]  # not the stale reply
    assert env.hit(B_NAME)


# -- the store on its own ---------------------------------------------------------------------


def _entry(reply: bytes, deps: tuple[object, ...] | None) -> Entry:
    return Entry(reply, ("z", "A", "NOERROR", "p", 0, len(reply), False), deps=deps)


def test_store_refuses_a_reply_whose_keys_changed_since_it_was_built() -> None:
    store = ReplyStore(Stats())
    built_at = GENERATION.value
    GENERATION.bump([("svc", "default", "other")])
    assert store.put(b"k1" * 10, _entry(b"r" * 40, (("svc", "default", "mine"),)), built_at)
    GENERATION.bump([("svc", "default", "mine")])
    assert not store.put(b"k2" * 10, _entry(b"r" * 40, (("svc", "default", "mine"),)), built_at)
    assert not store.put(b"k3" * 10, _entry(b"r" * 40, None), built_at)
    store.catch_up()
    assert list(store.entries) == []  # k1 depended on the changed Service
    assert store.refused == 2


def test_store_is_bounded_in_bytes_oldest_first() -> None:
    store = ReplyStore(Stats(), max_bytes=100_000)
    for i in range(2_000):
        assert store.put(b"%020d" % i, _entry(b"r" * 100, ()), None)
        assert store.bytes <= 100_000
    assert b"%020d" % 1_999 in store.entries and b"%020d" % 0 not in store.entries
    each = 20 + 2 * 100 + ENTRY_OVERHEAD
    assert store.evictions > 0 and 100_000 * 7 // 8 // each <= len(store) <= 100_000 // each


def test_srv_targets_follow_each_spelling_without_growing_the_store(env: Env) -> None:
    """SRV targets spell the zone as the query did (not compressed, RFC 2782), so such a
    reply serves its own spelling only, and other spellings are not stored."""
    name = f"_http._tcp.{B_NAME}"
    env.ask(name, "SRV")
    size = len(env.disp.store)
    for spelled in (name.upper(), name.replace("cluster", "CLUSTER"), name):
        reply = env.ask(spelled, "SRV")
        zone = spelled[-len("cluster.local."):]
        assert [r.target.to_text() for r in reply.answer[0]] == [f"b.default.svc.{zone}"]
    assert len(env.disp.store) == size and env.hit(name, "SRV")
