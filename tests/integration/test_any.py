"""ANY over real sockets: without the *any* plugin it goes down the chain as in CoreDNS
(kubernetes, file and hosts answer NODATA or NXDOMAIN, forward asks upstream, cache caches);
with *any* every ANY gets RFC 8482's HINFO and nothing behind it is asked."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from dnslib import QTYPE, RR, TXT, A, DNSRecord

from kdns.config.model import ConfigError
from kdns.server.app import KdnsServer
from tests.conftest import DEMO, ROOT, Running, start_server
from tests.integration.test_forward import FakeUpstream

ZONES = ROOT / "zones"


class AnyUpstream(FakeUpstream):
    """Answers ANY for its names with every record it has (an A and a TXT), as a server
    that still serves ANY in full does."""

    def replies(self, data: bytes, proto: str) -> list[bytes]:
        q = DNSRecord.parse(data)
        name = str(q.q.qname).lower()
        if q.q.qtype != QTYPE.ANY or name not in self.records:
            return super().replies(data, proto)
        with self._lock:
            self.log.append((proto, name, "ANY", q.header.rd))
        reply = q.reply(ra=1, aa=0)
        reply.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(self.records[name]), ttl=60),
                         RR(q.q.qname, QTYPE.TXT, rdata=TXT("upstream"), ttl=60))
        return [reply.pack()]


def corefile(upstream: str, *, with_any: bool) -> str:
    any_line = "any" if with_any else ""
    return f"""\
        cluster.local:53 {{
            {any_line}
            kubernetes cluster.local {{
                manifests {DEMO}
            }}
        }}
        example.org:53 {{
            {any_line}
            file {ZONES / "example.org.zone"}
        }}
        example.com:53 {{
            {any_line}
            hosts {ZONES / "hosts.example"}
        }}
        example.net:53 {{
            {any_line}
            cache 30
            forward . {upstream}
        }}
        """


@dataclass
class Served:
    run: Running
    upstream: FakeUpstream


@pytest.fixture(scope="module", params=[False, True], ids=["without-any", "with-any"])
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    up = AnyUpstream({"a.example.net.": "192.0.2.70"})
    server = start_server(corefile(up.addr, with_any=request.param),
                          tmp_path_factory.mktemp("any"))
    try:
        yield Served(Running(server), up)
    finally:
        server.stop()
        up.close()


@dataclass(frozen=True)
class Row:
    qname: str
    rcode: int
    soa: bool
    """Without *any*: a SOA in the authority section (kubernetes and file; hosts has none)."""


WITHOUT_ANY = [
    Row("kubia.default.svc.cluster.local.", dns.rcode.NOERROR, True),
    Row("cluster.local.", dns.rcode.NOERROR, True),
    Row("nosuch.default.svc.cluster.local.", dns.rcode.NXDOMAIN, True),
    Row("www.example.org.", dns.rcode.NOERROR, True),
    Row("nosuch.example.org.", dns.rcode.NXDOMAIN, True),
    Row("gateway.example.com.", dns.rcode.NOERROR, False),
    Row("nosuch.example.com.", dns.rcode.NXDOMAIN, False),
]


def ask(run: Running, qname: str, tcp: bool) -> dns.message.Message:
    return run.tcp(qname, "ANY") if tcp else run.udp(qname, "ANY")


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("row", WITHOUT_ANY, ids=[r.qname for r in WITHOUT_ANY])
def test_authoritative_plugins(served: Served, row: Row, tcp: bool) -> None:
    with_any = any(h.name == "any" for h in served.run.server.handlers())
    for _ in range(2):  # slow path, then whatever was stored
        r = ask(served.run, row.qname, tcp)
        if with_any:
            assert r.rcode() == dns.rcode.NOERROR
            assert [(rs.rdtype, rs.ttl) for rs in r.answer] == [(dns.rdatatype.HINFO, 8482)]
            hinfo = r.answer[0][0]
            assert (hinfo.cpu, hinfo.os) == (b"ANY obsoleted", b"See RFC 8482")
            assert str(r.answer[0].name) == row.qname
            assert not r.authority and not r.flags & dns.flags.AA
        else:
            assert r.rcode() == row.rcode
            assert not r.answer
            assert [rs.rdtype for rs in r.authority] == ([dns.rdatatype.SOA] if row.soa else [])


def test_forward_and_cache(served: Served) -> None:
    with_any = any(h.name == "any" for h in served.run.server.handlers())
    before = len(served.upstream.seen("a.example.net."))
    for _ in range(3):
        r = served.run.udp("a.example.net.", "ANY")
        assert r.rcode() == dns.rcode.NOERROR
        types = sorted(rs.rdtype for rs in r.answer)
        if with_any:
            assert types == [dns.rdatatype.HINFO]
        else:
            assert types == [dns.rdatatype.A, dns.rdatatype.TXT], "the upstream's reply"
    asked = served.upstream.seen("a.example.net.")[before:]
    if with_any:
        assert asked == [], "any answers before forward: the upstream is never asked"
    else:
        # forwarded as ANY once; the cache answers the repeats
        assert [(proto, qtype) for proto, _, qtype, _ in asked] == [("udp", "ANY")]


def test_other_types_pass_through_any(served: Served) -> None:
    r = served.run.udp("kubia.default.svc.cluster.local.", "A")
    assert [rd.address for rs in r.answer for rd in rs] == ["10.98.237.175"]
    r = served.run.udp("www.example.org.", "AAAA")
    assert [rd.address for rs in r.answer for rd in rs] == ["2001:db8::80"]


@pytest.mark.parametrize(("line", "message"), [
    ("any x", "Corefile:2:9: any: unexpected argument 'x'"),
    ("any {\n    }", "Corefile:2:5: any: takes no block"),
])
def test_bad_any_is_a_located_error(tmp_path: Path, line: str, message: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    from kdns.config.parser import parse_corefile

    with pytest.raises(ConfigError) as exc:
        KdnsServer(parse_corefile(f". {{\n    {line}\n}}\n", "Corefile")).build()
    assert str(exc.value) == message


