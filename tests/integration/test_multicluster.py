"""multicluster over real sockets: the clusterset case table against kdns reading
ServiceImports and imported EndpointSlices from the fake API server over HTTP, changes
following the watch, and a cluster without the ServiceImport CRD (404 on list)."""

from __future__ import annotations

import ipaddress
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from kdns.k8s import informer
from kdns.server.app import KdnsServer
from tests import fakeapi
from tests.conftest import start_server
from tests.integration.test_served_cases import _sections
from tests.ports import free_tcp_port
from tests.unit import mc_cases as mc
from tests.unit.k8s_cases import expected


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


def _serve(api: fakeapi.FakeApiServer, tmp: Path, ready_port: int) -> KdnsServer:
    kubeconfig = api.write_kubeconfig(str(tmp / "kubeconfig"))
    return start_server(f"""
    .:53 {{
        ready 127.0.0.1:{ready_port}
        kubernetes cluster.local clusterset.local in-addr.arpa ip6.arpa {{
            kubeconfig {kubeconfig}
            multicluster clusterset.local
        }}
    }}
    """, tmp)


def _ask(port: int, name: str, qtype: str = "A", proto: str = "udp") -> dns.message.Message:
    q = dns.message.make_query(name, qtype, use_edns=0, payload=4096)
    ask = dns.query.udp if proto == "udp" else dns.query.tcp
    return ask(q, "127.0.0.1", port=port, timeout=3)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[fakeapi.FakeApiServer, int]]:
    tmp = tmp_path_factory.mktemp("mc")
    with fakeapi.FakeApiServer(bookmark_interval=0.2) as api:
        api.add("namespaces", fakeapi.namespace("default"))
        for obj in mc.IMPORTS:
            api.add("serviceimports", obj)
        for obj in mc.SLICES:
            api.add("endpointslices", obj)
        server = _serve(api, tmp, free_tcp_port())
        port = server.listeners[0].port
        try:
            _until(lambda: _ask(port, mc.WEB).rcode() == dns.rcode.NOERROR, 10, "synced")
            yield api, port
        finally:
            server.stop()


SOCKET_CASES = [c for c in mc.CASES if not c.host_dependent and c.qtype != "AXFR"]


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("case", SOCKET_CASES, ids=[f"{c.qname}:{c.qtype}" for c in SOCKET_CASES])
def test_case_over_the_wire(served: tuple[fakeapi.FakeApiServer, int], case: mc.Case,
                            proto: str) -> None:
    _, port = served
    assert _sections(_ask(port, case.qname, case.qtype, proto)) == expected(case), case.note
    # again, from the fast path
    assert _sections(_ask(port, case.qname, case.qtype, proto)) == expected(case), case.note


def test_the_cluster_zone_is_served_beside_it(served: tuple[fakeapi.FakeApiServer, int]) -> None:
    _, port = served
    r = _ask(port, "dns-version.cluster.local.", "TXT")
    assert r.answer[0][0].strings == (b"1.1.0",)
    # the regular EndpointSlice informer ignores imported slices: no cluster-zone names
    assert _ask(port, "db.default.svc.cluster.local.").rcode() == dns.rcode.NXDOMAIN


def test_reverse_names_of_clusterset_addresses(served: tuple[fakeapi.FakeApiServer, int]) -> None:
    _, port = served
    for ip, target in (("10.42.42.42", mc.WEB), ("10.1.0.2", f"db-1.clustera.{mc.DB}"),
                       ("fd00:2::5", f"fd00-2--5.clusterb.{mc.DB}")):
        name = ipaddress.ip_address(ip).reverse_pointer + "."
        for proto in ("udp", "tcp"):
            r = _ask(port, name, "PTR", proto)
            assert [x.target.to_text() for x in r.answer[0]] == [target]
    assert _ask(port, "3.0.1.10.in-addr.arpa.", "PTR").rcode() == dns.rcode.NXDOMAIN


def test_changes_follow_the_watch(served: tuple[fakeapi.FakeApiServer, int]) -> None:
    api, port = served
    name = f"cache.default.svc.{mc.C}"
    assert _ask(port, name).rcode() == dns.rcode.NXDOMAIN
    api.add("serviceimports", fakeapi.service_import("default", "cache", type="Headless",
                                                     ports=[("redis", 6379, "TCP")]))
    _until(lambda: _ask(port, name).rcode() == dns.rcode.NXDOMAIN
           and bool(_ask(port, name).authority), 5, "import seen (no endpoints yet)")
    api.add("endpointslices", fakeapi.imported_slice(
        "default", "cache-x", "cache", "clusterX", ports=[("redis", 6379, "TCP")],
        endpoints=[fakeapi.endpoint("10.9.0.1", hostname="r0")]))
    _until(lambda: _ask(port, name).rcode() == dns.rcode.NOERROR, 5, "endpoint seen")
    assert _ask(port, f"r0.clusterx.{name}").answer[0][0].address == "10.9.0.1"
    srv = _ask(port, f"_redis._tcp.{name}", "SRV")
    assert [r.target.to_text() for r in srv.answer[0]] == [f"r0.clusterx.{name}"]
    api.delete("serviceimports", "default", "cache")
    _until(lambda: _ask(port, f"r0.clusterx.{name}").rcode() == dns.rcode.NXDOMAIN, 5,
           "import deleted")


def _ready(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_without_the_crd_the_cluster_zone_serves_and_the_clusterset_is_empty(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(informer, "ABSENT_RETRY", 0.3)
    caplog.set_level(logging.WARNING, logger="kdns.k8s")
    with fakeapi.FakeApiServer(bookmark_interval=0.2) as api:
        api.absent.add("serviceimports")
        api.add("namespaces", fakeapi.namespace("default"))
        api.add("services", fakeapi.service("default", "kubia", cluster_ip="10.96.0.9"))
        ready_port = free_tcp_port()
        server = _serve(api, tmp_path, ready_port)
        port = server.listeners[0].port
        try:
            _until(lambda: _ready(port=ready_port) == 200, 10, "ready")
            assert _ask(port, "kubia.default.svc.cluster.local.").answer[0][0].address == \
                "10.96.0.9"
            # an empty clusterset: names do not exist (NXDOMAIN, not SERVFAIL)
            _until(lambda: _ask(port, mc.WEB).rcode() == dns.rcode.NXDOMAIN, 5, "empty")
            assert _ask(port, mc.C, "SOA").rcode() == dns.rcode.NOERROR
            lines = [r.getMessage() for r in caplog.records if "serviceimports" in
                     r.getMessage()]
            assert any("is not served by the API server" in m and "CRD" in m for m in lines)
            # once the CRD is installed, the next look finds the imports
            api.absent.discard("serviceimports")
            api.add("serviceimports", mc.IMPORTS[0])
            _until(lambda: _ask(port, mc.WEB).rcode() == dns.rcode.NOERROR, 5, "CRD installed")
            lines = [r.getMessage() for r in caplog.records if "is not served" in
                     r.getMessage()]
            assert len(lines) == 1, "the absence is logged once, not at every look"
        finally:
            server.stop()
