"""acl over real sockets: clients on different loopback addresses (127.0.0.0/8) are allowed,
blocked, filtered or dropped by source and type, over UDP and TCP; nothing stored for an allowed
client is ever served to a blocked one; the counters reach the metrics collector."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from kdns.plugins import registry
from tests.conftest import DEMO, Running, start_server

KUBIA = "kubia.default.svc.cluster.local."
KUBIA_IP = "10.98.237.175"

COREFILE = f"""\
.:53 {{
    acl cluster.local {{
        allow net 127.0.0.2
        block net 127.0.0.3
        filter net 127.0.0.4
        drop net 127.0.0.5
        block type AAAA net 127.0.0.6/32
        filter type SRV
    }}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        manifests {DEMO}
        fallthrough in-addr.arpa ip6.arpa
    }}
}}
"""


@pytest.fixture(scope="module")
def acl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry.IMPLEMENTED, "acl", "kdns.plugins.acl.setup")
        mp.setattr(registry, "REPEATABLE", registry.REPEATABLE | {"acl"})
        server = start_server(COREFILE, tmp_path_factory.mktemp("acl"))
    try:
        yield Running(server)
    finally:
        server.stop()


def ask(srv: Running, source: str, qname: str = KUBIA, qtype: str = "A", *, tcp: bool = False,
        timeout: float = 3.0, **kw: object) -> dns.message.Message:
    q = dns.message.make_query(qname, qtype, **kw)  # type: ignore[arg-type]
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=srv.port, source=source, timeout=timeout)
    return dns.query.udp(q, "127.0.0.1", port=srv.port, source=source, timeout=timeout)


def addresses(r: dns.message.Message) -> list[str]:
    return [rd.address for rrset in r.answer for rd in rrset]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_allowed_client_gets_answers(acl: Running, tcp: bool) -> None:
    for _ in range(3):
        r = ask(acl, "127.0.0.2", tcp=tcp)
        assert r.rcode() == dns.rcode.NOERROR and addresses(r) == [KUBIA_IP]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_blocked_client_is_refused_even_after_an_allowed_one_asked(acl: Running,
                                                                   tcp: bool) -> None:
    # The allowed client asks first (twice: without acl the second answer would come from the
    # precomputed store, keyed by query bytes only), then the blocked one sends the same bytes.
    q = dns.message.make_query(KUBIA, "A")
    for _ in range(2):
        assert addresses(dns.query.udp(q, "127.0.0.1", port=acl.port, source="127.0.0.2",
                                       timeout=3)) == [KUBIA_IP]
    r = (dns.query.tcp if tcp else dns.query.udp)(q, "127.0.0.1", port=acl.port,
                                                   source="127.0.0.3", timeout=3)
    assert r.rcode() == dns.rcode.REFUSED and not r.answer
    assert r.id == q.id and r.question == q.question and r.flags & dns.flags.QR


def test_blocked_reply_echoes_edns(acl: Running) -> None:
    r = ask(acl, "127.0.0.3", use_edns=0, payload=1232)
    assert r.rcode() == dns.rcode.REFUSED and r.edns == 0


def test_filtered_client_gets_empty_noerror(acl: Running) -> None:
    r = ask(acl, "127.0.0.4")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert r.question[0].name.to_text() == KUBIA


def test_dropped_client_gets_no_reply_and_server_keeps_serving(acl: Running) -> None:
    with pytest.raises(dns.exception.Timeout):
        ask(acl, "127.0.0.5", timeout=0.3)
    with pytest.raises((EOFError, ConnectionError)):  # TCP: the connection is closed unanswered
        ask(acl, "127.0.0.5", tcp=True)
    assert addresses(ask(acl, "127.0.0.2")) == [KUBIA_IP]


def test_any_queries_go_through_acl(acl: Running) -> None:
    """Regression: ANY was answered (RFC 8482) before the chain, so acl never saw it."""
    for _ in range(2):
        assert ask(acl, "127.0.0.2", qtype="ANY").rcode() == dns.rcode.NOERROR
    assert ask(acl, "127.0.0.3", qtype="ANY").rcode() == dns.rcode.REFUSED
    r = ask(acl, "127.0.0.4", qtype="ANY")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    with pytest.raises(dns.exception.Timeout):
        ask(acl, "127.0.0.5", qtype="ANY", timeout=0.3)


def test_type_rules(acl: Running) -> None:
    assert ask(acl, "127.0.0.6", qtype="AAAA").rcode() == dns.rcode.REFUSED
    assert addresses(ask(acl, "127.0.0.6")) == [KUBIA_IP]
    srv = ask(acl, "127.0.0.1", "_http._tcp.kubia.default.svc.cluster.local.", "SRV")
    assert srv.rcode() == dns.rcode.NOERROR and not srv.answer  # filter type SRV, any source
    srv = ask(acl, "127.0.0.2", "_http._tcp.kubia.default.svc.cluster.local.", "SRV")
    assert srv.rcode() == dns.rcode.NOERROR and srv.answer  # the allow line comes first


def test_names_outside_the_acl_zones_are_not_checked(acl: Running) -> None:
    r = ask(acl, "127.0.0.3", "175.237.98.10.in-addr.arpa.", "PTR")
    assert r.rcode() == dns.rcode.NOERROR
    assert [rd.target.to_text() for rrset in r.answer for rd in rrset] == [KUBIA]


def test_counters_reach_the_collector(acl: Running) -> None:
    before = {s.name: s.value for f in acl.server.registry.collect() for s in f.samples
              if s.name.startswith("coredns_acl_")}
    ask(acl, "127.0.0.3")
    ask(acl, "127.0.0.4")
    with pytest.raises(dns.exception.Timeout):
        ask(acl, "127.0.0.5", timeout=0.3)
    ask(acl, "127.0.0.2")
    after = {s.name: s.value for f in acl.server.registry.collect() for s in f.samples
             if s.name.startswith("coredns_acl_")}
    assert {k: after[k] - before.get(k, 0) for k in after} == {
        "coredns_acl_blocked_requests_total": 1, "coredns_acl_filtered_requests_total": 1,
        "coredns_acl_dropped_requests_total": 1, "coredns_acl_allowed_requests_total": 1}


# The Corefile lists rewrite first on purpose: execution order is the registry's, not the file's.
REWRITE_COREFILE = f"""\
.:53 {{
    rewrite name exact x.secret.test {KUBIA[:-1]}
    rewrite name exact y.open.test {KUBIA[:-1]}
    acl secret.test {{
        block
    }}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        manifests {DEMO}
    }}
}}
"""


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_acl_judges_the_name_the_client_sent_not_the_rewritten_one(
        tmp_path: Path, tcp: bool) -> None:
    server = start_server(REWRITE_COREFILE, tmp_path)
    try:
        srv = Running(server)
        for _ in range(2):  # the second ask would be a replay, were the first one stored
            r = ask(srv, "127.0.0.1", "x.secret.test.", tcp=tcp)
            assert r.rcode() == dns.rcode.REFUSED and not r.answer
        # The same rewrite for a name acl does not cover answers: the rule itself works.
        r = ask(srv, "127.0.0.1", "y.open.test.", tcp=tcp)
        assert r.rcode() == dns.rcode.NOERROR and addresses(r) == [KUBIA_IP]
        assert r.question[0].name.to_text() == "y.open.test."
        # And acl does not see the rewritten name either: the target itself is not blocked.
        assert addresses(ask(srv, "127.0.0.1", tcp=tcp)) == [KUBIA_IP]
    finally:
        server.stop()
