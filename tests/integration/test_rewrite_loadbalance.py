"""rewrite and loadbalance over real sockets, in front of the kubernetes plugin serving the demo
cluster (plus a headless service with five endpoints), queried with dnspython.

The fast path is in play: after the first query for a name, kdns replays stored bytes, so these
tests show that the rewritten answers and the rotating record order survive precomputation.
"""

from __future__ import annotations

import itertools
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from kdns.plugins import registry
from tests.conftest import DEMO, Running, start_server

POOL = [f"10.244.7.{i}" for i in range(1, 6)]

POOL_YAML = """\
apiVersion: v1
kind: Service
metadata:
  name: pool
  namespace: default
spec:
  type: ClusterIP
  clusterIP: None
  clusterIPs: [None]
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  selector:
    app: pool
  ports:
  - name: http
    port: 80
    protocol: TCP
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: pool-abcde
  namespace: default
  labels:
    kubernetes.io/service-name: pool
addressType: IPv4
endpoints:
""" + "".join(f"""\
- addresses: [{ip}]
  conditions: {{ready: true, serving: true, terminating: false}}
""" for ip in POOL) + """\
ports:
- name: http
  port: 80
  protocol: TCP
"""


@pytest.fixture(scope="module")
def kdns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("rewrite-lb")
    manifests = tmp / "manifests"
    shutil.copytree(DEMO, manifests, ignore=shutil.ignore_patterns("Corefile", "*.md"))
    (manifests / "pool.yaml").write_text(POOL_YAML)
    corefile = textwrap.dedent(f"""\
        .:53 {{
            errors
            loadbalance round_robin
            rewrite name kubia.example.com kubia.default.svc.cluster.local
            rewrite continue name suffix .shop.example.com .shop.svc.cluster.local answer auto
            rewrite ttl suffix .shop.svc.cluster.local 60
            kubernetes cluster.local in-addr.arpa ip6.arpa {{
                manifests {manifests}
                pods insecure
                fallthrough in-addr.arpa ip6.arpa
                ttl 30
            }}
        }}
        """)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry.IMPLEMENTED, "rewrite", "kdns.plugins.rewrite.setup")
        mp.setitem(registry.IMPLEMENTED, "loadbalance", "kdns.plugins.loadbalance.setup")
        server = start_server(corefile, Path(tmp))
        try:
            yield Running(server)
        finally:
            server.stop()


def slow_count(k: Running) -> int:
    """Queries that went through the plugin chain (not the fast path) on the UDP listener."""
    udp = k.server.listeners[0].udp
    assert udp is not None
    count: int = udp.dispatcher.counters.slow
    return count


def answer(r: dns.message.Message) -> list[tuple[str, int, str, str]]:
    return [(rrset.name.to_text(), rrset.ttl, dns.rdatatype.to_text(rrset.rdtype), rd.to_text())
            for rrset in r.answer for rd in rrset]


# ---------------------------------------------------------------------------------------------
# rewrite


def test_exact_rewrite_answers_under_the_name_asked(kdns: Running) -> None:
    r = kdns.udp("kubia.example.com", "A")
    assert r.rcode() == 0 and r.flags & dns.flags.AA
    assert r.question[0].name.to_text() == "kubia.example.com."
    assert answer(r) == [("kubia.example.com.", 30, "A", "10.98.237.175")]
    assert answer(kdns.tcp("kubia.example.com", "A")) == answer(r)


def test_exact_rewrite_echoes_each_clients_spelling_also_from_the_fast_path(kdns: Running) -> None:
    first = kdns.udp("KuBiA.Example.COM", "A")
    before = slow_count(kdns)
    second = kdns.udp("kubia.EXAMPLE.com", "A")
    assert slow_count(kdns) == before  # a fast-path replay
    assert first.answer[0].name.to_text() == "KuBiA.Example.COM."
    assert second.question[0].name.to_text() == "kubia.EXAMPLE.com."
    assert second.answer[0].name.to_text() == "kubia.EXAMPLE.com."


def test_exact_rewrite_leaves_other_names_alone(kdns: Running) -> None:
    assert kdns.udp("nope.example.com", "A").rcode() == dns.rcode.SERVFAIL  # nobody serves it
    r = kdns.udp("kubia.default.svc.cluster.local", "A")
    assert answer(r) == [("kubia.default.svc.cluster.local.", 30, "A", "10.98.237.175")]


def test_suffix_rewrite_maps_names_and_srv_targets_back_and_continues_to_ttl(kdns: Running) -> None:
    r = kdns.udp("web.shop.example.com", "A")
    assert sorted(answer(r)) == [("web.shop.example.com.", 60, "A", "10.244.1.30"),
                                 ("web.shop.example.com.", 60, "A", "10.244.2.31")]
    srv = kdns.udp("_web._tcp.web.shop.example.com", "SRV")
    targets = sorted(rd.target.to_text() for rrset in srv.answer for rd in rrset)
    assert targets == ["web-0.web.shop.example.com.", "web-1.web.shop.example.com."]
    assert all(rrset.ttl == 60 for rrset in srv.answer)
    # ... and the client can follow a target: it is rewritten on the way in too
    pod = kdns.udp("web-0.web.shop.example.com", "A")
    assert answer(pod) == [("web-0.web.shop.example.com.", 60, "A", "10.244.1.30")]


def test_rewritten_nxdomain_keeps_the_clients_question(kdns: Running) -> None:
    r = kdns.udp("nosuch.shop.example.com", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.question[0].name.to_text() == "nosuch.shop.example.com."


# ---------------------------------------------------------------------------------------------
# loadbalance


def leaders(k: Running, name: str, count: int, expected: list[str]) -> list[str]:
    """The first address of ``count`` answers, checking each answer holds all of ``expected``."""
    out = []
    for _ in range(count):
        r = k.udp(name, "A")
        assert sorted(rd.to_text() for rrset in r.answer for rd in rrset) == expected
        out.append(r.answer[0][0].to_text())
    return out


def test_loadbalance_rotates_the_first_record_from_the_fast_path(kdns: Running) -> None:
    name = "pool.default.svc.cluster.local"
    first = kdns.udp(name, "A")
    assert sorted(rd.to_text() for rrset in first.answer for rd in rrset) == POOL
    before = slow_count(kdns)
    seen = leaders(kdns, name, 50, POOL)
    assert slow_count(kdns) == before  # every one a fast-path replay
    # the stored cycle is the five rotations: every window of five queries has every leader
    for i in range(0, 50, 5):
        assert sorted(seen[i:i + 5]) == POOL, seen


def test_loadbalance_two_endpoints_alternate(kdns: Running) -> None:
    seen = leaders(kdns, "web.shop.svc.cluster.local", 20, ["10.244.1.30", "10.244.2.31"])
    assert set(seen) == {"10.244.1.30", "10.244.2.31"}
    assert all(a != b for a, b in itertools.pairwise(seen)), seen


def test_loadbalance_applies_to_rewritten_answers_over_tcp_too(kdns: Running) -> None:
    seen = set()
    for _ in range(20):
        r = kdns.tcp("web.shop.example.com", "A")
        assert {rrset.name.to_text() for rrset in r.answer} == {"web.shop.example.com."}
        seen.add(r.answer[0][0].to_text())
    assert seen == {"10.244.1.30", "10.244.2.31"}
