"""k8s_external end to end: a fake API server over HTTP -> informers -> view -> answers under an
external zone, over UDP with dnspython. Forwarded names go to a dnslib responder on 127.0.0.1.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from kdns.server.app import KdnsServer
from tests import fakeapi
from tests.conftest import start_server
from tests.integration.test_cache_integration import Upstream

ZONE = "example.org."


def lb_service(name: str, *, external_ips: list[str] | None = None, ingress: list[Any] | None = None,
               ports: list[tuple[str, int, str]] | None = None, **kw: Any) -> dict[str, Any]:
    obj = fakeapi.service("default", name, ports=[("http", 80, "TCP")] if ports is None else ports,
                          **kw)
    if external_ips:
        obj["spec"]["externalIPs"] = external_ips
    if ingress is not None:
        obj["status"] = {"loadBalancer": {"ingress": ingress}}
    return obj


def until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not true in time"
        time.sleep(0.02)


class Env:
    def __init__(self, api: fakeapi.FakeApiServer, server: KdnsServer) -> None:
        self.api, self.server = api, server
        self.port = server.listeners[0].port

    def ask(self, name: str, qtype: str = "A") -> dns.message.Message:
        return dns.query.udp(dns.message.make_query(name, qtype), "127.0.0.1", port=self.port,
                             timeout=3)

    def records(self, name: str, qtype: str = "A") -> list[tuple[str, int, str, str]]:
        r = self.ask(name, qtype)
        assert r.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(r.rcode())
        return sorted((rr.name.to_text(), rr.ttl, dns.rdatatype.to_text(rr.rdtype), rd.to_text())
                      for rr in r.answer for rd in rr)


def local_ip(server: KdnsServer) -> str:
    k8s = next(h for h in server.handlers() if h.name == "kubernetes")
    ips = [ip for ip in k8s.cfg.local_ips if "." in ip]
    assert ips, "the test host has no IPv4 address of its own"
    return str(ips[0])


def boot(api: fakeapi.FakeApiServer, tmp: Path, options: str, upstream: Upstream) -> KdnsServer:
    kubeconfig = api.write_kubeconfig(str(tmp / "kubeconfig"))
    return start_server(f"""
        .:53 {{
            kubernetes cluster.local {{
                kubeconfig {kubeconfig}
            }}
            k8s_external {ZONE} {{
                {options}
            }}
            forward . 127.0.0.1:{upstream.port}
        }}
        """, tmp)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture
def env(tmp_path: Path, upstream: Upstream) -> Iterator[Env]:
    with fakeapi.FakeApiServer(bookmark_interval=0.2) as api:
        for ns in ("default", "kube-system"):
            api.add("namespaces", fakeapi.namespace(ns))
        api.add("services", lb_service("web", type="LoadBalancer", cluster_ip="10.96.0.20",
                                       external_ips=["192.0.2.10", "2001:db8::10"],
                                       ingress=[{"ip": "198.51.100.7"}]))
        api.add("services", lb_service("elb", type="LoadBalancer", cluster_ip="10.96.0.21",
                                       ingress=[{"hostname": "elb-1.lb.example.net"}]))
        api.add("services", lb_service("internal", cluster_ip="10.96.0.22"))
        # CoreDNS's README example: a headless Service with an external IP and no ports
        api.add("services", lb_service("test", headless=True, ports=[],
                                       external_ips=["192.168.200.123"]))
        api.add("services", lb_service("pool", headless=True))
        api.add("endpointslices", fakeapi.endpoint_slice(
            "default", "pool-1", "pool", ports=[("http", 8080, "TCP")],
            endpoints=[fakeapi.endpoint("10.244.1.5", hostname="pool-0"), "10.244.1.6"]))
        server = boot(api, tmp_path, "ttl 30", upstream)
        try:
            # the nameserver: the kube-dns Service, whose endpoint is this host
            me = local_ip(server)
            kube_dns = lb_service("kube-dns", cluster_ip="10.96.0.10",
                                  ports=[("dns", 53, "UDP")], external_ips=["192.0.2.53"])
            kube_dns["metadata"]["namespace"] = "kube-system"
            api.add("services", kube_dns)
            api.add("endpointslices", fakeapi.endpoint_slice(
                "kube-system", "kube-dns-1", "kube-dns", ports=[("dns", 53, "UDP")],
                endpoints=[me]))
            e = Env(api, server)
            until(lambda: [rd.to_text() for rr in e.ask("ns1.dns." + ZONE).answer for rd in rr]
                  == ["192.0.2.53"], timeout=5)
            yield e
        finally:
            server.stop()


def test_external_and_load_balancer_ips(env: Env) -> None:
    assert env.records("web.default." + ZONE) == [
        ("web.default.example.org.", 30, "A", "192.0.2.10"),
        ("web.default.example.org.", 30, "A", "198.51.100.7")]
    assert env.records("WEB.Default.Example.ORG.", "AAAA") == [
        ("WEB.Default.Example.ORG.", 30, "AAAA", "2001:db8::10")]
    r = env.ask("web.default." + ZONE)
    assert r.flags & dns.flags.AA


def test_coredns_readme_example(env: Env) -> None:
    assert env.records("test.default." + ZONE) == [
        ("test.default.example.org.", 30, "A", "192.168.200.123")]
    # no ports, so no SRV records (CoreDNS's port -1 sentinel)
    srv = env.ask("test.default." + ZONE, "SRV")
    assert srv.rcode() == dns.rcode.NOERROR and srv.answer == []


def test_srv_names_the_service_with_glue(env: Env) -> None:
    r = env.ask("_http._tcp.web.default." + ZONE, "SRV")
    assert [rd.to_text() for rr in r.answer for rd in rr] == [
        "0 33 80 web.default.example.org."]  # one backend per address, as CoreDNS
    assert sorted(rd.to_text() for rr in r.additional for rd in rr) == [
        "192.0.2.10", "198.51.100.7", "2001:db8::10"]
    assert env.ask("_dns._udp.web.default." + ZONE, "SRV").rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize(("name", "qtype", "rcode"), [
    ("internal.default.", "A", dns.rcode.NXDOMAIN),   # a ClusterIP Service is not external
    ("missing.default.", "A", dns.rcode.NXDOMAIN),
    ("web.nowhere.", "A", dns.rcode.NXDOMAIN),        # no such namespace
    ("default.", "A", dns.rcode.NOERROR),             # a namespace: empty non-terminal
    ("web.default.", "TXT", dns.rcode.NOERROR),       # exists, other type: NODATA
    ("pool.default.", "A", dns.rcode.NXDOMAIN),       # headless without `headless`
    ("dns.", "A", dns.rcode.NOERROR),
    ("ns2.dns.", "A", dns.rcode.NXDOMAIN),
    ("a.b.c.web.default.", "A", dns.rcode.NXDOMAIN),
])
def test_negative_answers_carry_the_soa(env: Env, name: str, qtype: str, rcode: int) -> None:
    r = env.ask(name + ZONE, qtype)
    assert r.rcode() == rcode and r.answer == []
    (soa,) = r.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == ZONE
    assert soa[0].mname.to_text() == "ns1.dns.example.org."
    assert soa[0].rname.to_text() == "hostmaster.dns.example.org."
    assert soa.ttl == 30 and soa[0].minimum == 30


def test_apex_soa_ns_and_nameserver_addresses(env: Env) -> None:
    soa = env.ask(ZONE, "SOA")
    assert soa.answer[0][0].refresh == 7200 and soa.answer[0][0].expire == 86400
    ns = env.ask(ZONE, "NS")
    assert [rd.to_text() for rr in ns.answer for rd in rr] == ["ns1.dns.example.org."]
    # glue: the external IP of the Service whose endpoint is this server
    assert [(rr.name.to_text(), rd.to_text()) for rr in ns.additional for rd in rr] == [
        ("ns1.dns.example.org.", "192.0.2.53")]
    assert env.records("ns1.dns." + ZONE) == [("ns1.dns.example.org.", 30, "A", "192.0.2.53")]


def test_load_balancer_hostname_is_a_cname_resolved_upstream(env: Env, upstream: Upstream) -> None:
    assert env.records("elb.default." + ZONE) == [
        ("elb-1.lb.example.net.", 300, "A", "192.0.2.7"),
        ("elb.default.example.org.", 30, "CNAME", "elb-1.lb.example.net.")]
    assert upstream.count("elb-1.lb.example.net.") == 1


def test_changes_to_the_service_show_at_once(env: Env) -> None:
    assert env.records("web.default." + ZONE)  # stored in the fast path now
    env.api.update("services", lb_service("web", type="LoadBalancer", cluster_ip="10.96.0.20",
                                          ingress=[{"ip": "203.0.113.9"}]))
    until(lambda: [rd.to_text() for rr in env.ask("web.default." + ZONE).answer for rd in rr]
          == ["203.0.113.9"], timeout=5)
    env.api.delete("services", "default", "web")
    until(lambda: env.ask("web.default." + ZONE).rcode() == dns.rcode.NXDOMAIN, timeout=5)


def test_headless_and_fallthrough(tmp_path: Path, upstream: Upstream) -> None:
    with fakeapi.FakeApiServer(bookmark_interval=0.2) as api:
        api.add("namespaces", fakeapi.namespace("default"))
        api.add("services", lb_service("pool", headless=True))
        api.add("endpointslices", fakeapi.endpoint_slice(
            "default", "pool-1", "pool", ports=[("http", 8080, "TCP")],
            endpoints=[fakeapi.endpoint("10.244.1.5", hostname="pool-0"), "10.244.1.6"]))
        server = boot(api, tmp_path, "headless\n fallthrough", upstream)
        try:
            e = Env(api, server)
            until(lambda: e.ask("pool.default." + ZONE).rcode() == 0, timeout=5)
            assert e.records("pool.default." + ZONE) == [
                ("pool.default.example.org.", 5, "A", "10.244.1.5"),
                ("pool.default.example.org.", 5, "A", "10.244.1.6")]
            assert e.records("pool-0.pool.default." + ZONE) == [
                ("pool-0.pool.default.example.org.", 5, "A", "10.244.1.5")]
            srv = e.ask("_http._tcp.pool.default." + ZONE, "SRV")
            assert sorted(rd.to_text() for rr in srv.answer for rd in rr) == [
                "0 50 8080 10-244-1-6.pool.default.example.org.",
                "0 50 8080 pool-0.pool.default.example.org."]
            # NXDOMAIN falls through to forward, whose upstream knows every name
            assert e.records("other.default." + ZONE) == [
                ("other.default.example.org.", 300, "A", "192.0.2.7")]
            assert upstream.count("other.default.example.org.") == 1
        finally:
            server.stop()
