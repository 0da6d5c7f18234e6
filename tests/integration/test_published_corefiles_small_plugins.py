"""Published Corefiles that need bind, bufsize, chaos or dns64: ``kdns check`` passes on them
as published, and each serves cluster names over real sockets.

* OpenShift's DNS operator (``bufsize 1232`` and a ``hostname.bind`` block with ``chaos``);
  MicroShift ships the same Corefile.
* NodeLocal DNSCache (``k8s-dns-node-cache``'s ``nodelocaldns.yaml``), ``__PILLAR__`` values
  filled in: four blocks on port 53, each ``bind``-ing the link-local and kube-dns addresses.
* kops for IPv6-only clusters (``dns64`` before ``forward``).

To serve, only what the test machine needs changes: addresses the machine does not have become
127.0.0.1, 127.0.0.2 or ::1, ``/etc/resolv.conf`` and cluster upstreams become an upstream the
test starts on 127.0.0.1, HTTP endpoints move to free loopback ports, the kubernetes plugin
reads the demo manifests. Nothing leaves the machine.
"""

from __future__ import annotations

import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import pytest
from click.testing import CliRunner

from kdns.cli import main
from kdns.config.parser import parse_corefile
from kdns.plugins.setup_context import Overrides
from kdns.server.app import KdnsServer, ServeOptions
from tests.conftest import DEMO
from tests.integration.test_forward import FakeUpstream
from tests.ports import free_tcp_port

KUBIA = "kubia.default.svc.cluster.local."
KUBIA_IP = "10.98.237.175"

OPENSHIFT = """\
.:5353 {
    bufsize 1232
    errors
    log . {
        class error
    }
    health {
        lameduck 20s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    prometheus 127.0.0.1:9153
    forward . /etc/resolv.conf {
        policy sequential
    }
    cache 900 {
        denial 9984 30
    }
    reload
}
hostname.bind:5353 {
    chaos
}
"""

NODELOCAL = """\
__PILLAR__DNS__DOMAIN__:53 {
    errors
    cache {
            success 9984 30
            denial 9984 5
    }
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    health __PILLAR__LOCAL__DNS__:8080
    }
in-addr.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    }
ip6.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    }
.:53 {
    errors
    cache 30
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__UPSTREAM__SERVERS__
    prometheus :9253
    }
"""

KOPS_IPV6 = """\
.:53 {
    errors
    health {
      lameduck 5s
    }
    ready
    kubernetes cluster.local. in-addr.arpa ip6.arpa {
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
      ttl 30
    }
    prometheus :9153
    dns64
    forward . /etc/resolv.conf {
      max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
"""


def nodelocal(local: str, kube_dns: str, cluster_dns: str, upstreams: str) -> str:
    return (NODELOCAL.replace("__PILLAR__DNS__DOMAIN__", "cluster.local")
            .replace("__PILLAR__LOCAL__DNS__", local)
            .replace("__PILLAR__DNS__SERVER__", kube_dns)
            .replace("__PILLAR__CLUSTER__DNS__", cluster_dns)
            .replace("__PILLAR__UPSTREAM__SERVERS__", upstreams))


def _loopback_http(text: str) -> str:
    """Probes and metrics on free loopback ports instead of :8080, :8181, :9153, :9253."""
    for old in ("prometheus :9153", "prometheus 127.0.0.1:9153", "prometheus :9253"):
        text = text.replace(old, f"prometheus 127.0.0.1:{free_tcp_port()}")
    text = text.replace("health {", f"health 127.0.0.1:{free_tcp_port()} {{")
    text = text.replace("    ready\n", f"    ready 127.0.0.1:{free_tcp_port()}\n")
    return text


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream({KUBIA: KUBIA_IP, "ext.example.": "192.0.2.10"})
    yield up
    up.close()


@pytest.mark.parametrize("name", ["openshift", "nodelocal", "kops-ipv6"])
def test_kdns_check_passes_as_published(tmp_path: Path, name: str) -> None:
    text = {"openshift": OPENSHIFT, "kops-ipv6": KOPS_IPV6,
            "nodelocal": nodelocal("169.254.20.10", "10.96.0.10", "10.96.0.11",
                                   "/etc/resolv.conf")}[name]
    path = tmp_path / "Corefile"
    path.write_text(text)
    r = CliRunner().invoke(main, ["check", str(path)])
    assert r.exit_code == 0, r.output
    assert r.output.strip().endswith("OK")


def _serve(text: str, tmp: Path, **opts: object) -> KdnsServer:
    server = KdnsServer(parse_corefile(textwrap.dedent(text), str(tmp / "Corefile")),
                        ServeOptions(config_dir=tmp, overrides=Overrides(manifests=str(DEMO)),
                                     dns_port=0, **opts)).build()  # type: ignore[arg-type]
    server.start()
    return server


def test_openshift_serves_cluster_names_and_hostname_bind(tmp_path: Path,
                                                          upstream: FakeUpstream) -> None:
    text = _loopback_http(OPENSHIFT).replace(":5353", ":53").replace(
        "/etc/resolv.conf", upstream.addr)
    server = _serve(text, tmp_path, dns_addr="127.0.0.1")
    try:
        port = server.listeners[0].port
        q = dns.message.make_query(KUBIA, "A", use_edns=0, payload=4096)
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=3)
        assert [rd.address for rs in r.answer for rd in rs] == [KUBIA_IP]
        assert r.payload == 1232, "bufsize 1232"
        q = dns.message.make_query("hostname.bind.", "TXT", "CH")
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=3)
        assert r.answer[0].rdclass == dns.rdataclass.CH
        assert [b"".join(rd.strings).decode() for rd in r.answer[0]] == [socket.gethostname()]
        r = dns.query.udp(dns.message.make_query("ext.example.", "A"), "127.0.0.1", port=port,
                          timeout=3)
        assert [rd.address for rs in r.answer for rd in rs] == ["192.0.2.10"]
    finally:
        server.stop()


def test_nodelocal_serves_on_both_bound_addresses(tmp_path: Path,
                                                  upstream: FakeUpstream) -> None:
    text = _loopback_http(nodelocal("127.0.0.1", "127.0.0.2", upstream.addr, upstream.addr))
    text = text.replace("health 127.0.0.1:8080", f"health 127.0.0.1:{free_tcp_port()}")
    server = _serve(text, tmp_path)
    try:
        assert sorted({lst.host for lst in server.listeners}) == ["127.0.0.1", "127.0.0.2"]
        assert len(server.listeners) == 2, "four blocks share the two address listeners"
        port = server.listeners[0].port
        before = len(upstream.seen(KUBIA.lower()))
        for host in ("127.0.0.1", "127.0.0.2"):
            r = dns.query.udp(dns.message.make_query(KUBIA, "A"), host, port=port, timeout=3)
            assert [rd.address for rs in r.answer for rd in rs] == [KUBIA_IP]
            r = dns.query.udp(dns.message.make_query("ext.example.", "A"), host, port=port,
                              timeout=3)
            assert [rd.address for rs in r.answer for rd in rs] == ["192.0.2.10"]
        asked = upstream.seen(KUBIA.lower())[before:]
        assert asked and all(proto == "tcp" for proto, *_ in asked), "force_tcp"
    finally:
        server.stop()


def test_kops_ipv6_synthesizes_for_ipv6_clients(tmp_path: Path, upstream: FakeUpstream) -> None:
    text = _loopback_http(KOPS_IPV6).replace("/etc/resolv.conf", upstream.addr)
    server = _serve(text, tmp_path, dns_addr="::1")
    try:
        port = server.listeners[0].port
        r = dns.query.udp(dns.message.make_query(KUBIA, "AAAA"), "::1", port=port, timeout=3)
        assert [rd.address for rs in r.answer for rd in rs] == ["64:ff9b::a62:edaf"]
        r = dns.query.udp(dns.message.make_query("ext.example.", "AAAA"), "::1", port=port,
                          timeout=3)
        assert [rd.address for rs in r.answer for rd in rs] == ["64:ff9b::c000:20a"]
        r = dns.query.udp(dns.message.make_query(KUBIA, "A"), "::1", port=port, timeout=3)
        assert [rd.address for rs in r.answer for rd in rs] == [KUBIA_IP]
    finally:
        server.stop()
