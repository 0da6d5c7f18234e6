"""local over real sockets: localhost and the loopback reverse zones answered locally, as
CoreDNS's local plugin, and nothing of it reaching the next plugin."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rrset
import pytest
from prometheus_client import generate_latest

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.server.app import KdnsServer
from tests.conftest import Running, start_server
from tests.integration.test_forward import FakeUpstream

SOA_LOCAL = "604800 IN SOA localhost. root.localhost. 1 0 0 0 604800"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream()
    yield up
    up.close()


def _start(tmp: Path, upstream: FakeUpstream, options: str = "") -> KdnsServer:
    return start_server(f"""\
        .:53 {{
            local {options}
            forward . {upstream.addr}
        }}
        """, tmp)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Running]:
    server = _start(tmp_path_factory.mktemp("local"), upstream)
    try:
        yield Running(server)
    finally:
        server.stop()


@dataclass(frozen=True)
class Row:
    qname: str
    qtype: str
    rcode: str
    answer: tuple[str, ...] = ()
    authority: tuple[str, ...] = ()


def soa(owner: str) -> tuple[str, ...]:
    return (f"{owner} {SOA_LOCAL}",)


ROWS = [
    Row("localhost.", "A", "NOERROR", ("localhost. 604800 IN A 127.0.0.1",)),
    Row("LocalHost.", "AAAA", "NOERROR", ("LocalHost. 604800 IN AAAA ::1",)),
    Row("localhost.", "SOA", "NOERROR", soa("localhost.")),
    Row("localhost.", "NS", "NOERROR", ("localhost. 604800 IN NS localhost.",)),
    Row("localhost.", "MX", "NOERROR", (), soa("localhost.")),
    Row("127.in-addr.arpa.", "A", "NOERROR", (), soa("127.in-addr.arpa.")),
    Row("0.in-addr.arpa.", "SOA", "NOERROR", soa("0.in-addr.arpa.")),
    Row("255.in-addr.arpa.", "NS", "NOERROR", ("255.in-addr.arpa. 604800 IN NS localhost.",)),
    Row("1.0.0.127.in-addr.arpa.", "PTR", "NOERROR",
        ("1.0.0.127.in-addr.arpa. 604800 IN PTR localhost.",)),
    Row("1.0.0.127.in-addr.arpa.", "A", "NOERROR", (), soa("127.in-addr.arpa.")),
    Row("2.0.0.127.in-addr.arpa.", "PTR", "NXDOMAIN", (), soa("127.in-addr.arpa.")),
    Row("5.0.in-addr.arpa.", "PTR", "NXDOMAIN", (), soa("0.in-addr.arpa.")),
    Row("app.localhost.", "A", "NOERROR", ("app.localhost. 604800 IN A 127.0.0.1",)),
    Row("a.b.localhost.", "AAAA", "NOERROR", ("a.b.localhost. 604800 IN AAAA ::1",)),
    Row("app.localhost.", "TXT", "NOERROR", (), soa("app.localhost.")),
    Row("localhost.default.svc.cluster.local.", "A", "NOERROR",
        ("localhost.default.svc.cluster.local. 604800 IN A 127.0.0.1",)),
]


def section(rrsets: list[dns.rrset.RRset]) -> tuple[str, ...]:
    return tuple(line for rs in rrsets for line in rs.to_text().splitlines())


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("row", ROWS, ids=[f"{r.qname}{r.qtype}" for r in ROWS])
def test_case_table(run: Running, upstream: FakeUpstream, row: Row, tcp: bool) -> None:
    for _ in range(2):  # slow path, then the stored reply where there is one
        r = run.tcp(row.qname, row.qtype) if tcp else run.udp(row.qname, row.qtype)
        assert dns.rcode.to_text(r.rcode()) == row.rcode
        assert section(r.answer) == row.answer
        assert section(r.authority) == row.authority
        assert not r.flags & dns.flags.AA
    assert not upstream.seen(row.qname.lower()), "local names never go upstream"


def test_other_names_go_to_the_next_plugin(run: Running, upstream: FakeUpstream) -> None:
    r = run.udp("ext.example.", "A")
    assert [rd.address for rs in r.answer for rd in rs] == ["192.0.2.10"]
    assert upstream.seen("ext.example.")
    r = run.udp("notlocalhost.", "A")
    assert upstream.seen("notlocalhost.")
    assert r.rcode() == dns.rcode.NXDOMAIN


def _counter(server: KdnsServer) -> float:
    text = generate_latest(server.registry).decode()
    lines = [ln for ln in text.splitlines()
             if ln.startswith("coredns_local_localhost_requests_total")]
    assert len(lines) == 1, lines
    return float(lines[0].split()[-1])


def test_localhost_queries_are_counted_every_time(run: Running) -> None:
    before = _counter(run.server)
    for _ in range(5):
        run.udp("x.localhost.", "A")
    run.udp("localhost.", "A")  # the apex is not a "special subdomain" query
    assert _counter(run.server) == before + 5


def test_localhost_prefix_off(tmp_path: Path, upstream: FakeUpstream) -> None:
    server = _start(tmp_path, upstream, "{\n localhost_prefix off\n }")
    try:
        run = Running(server)
        r = run.udp("localhost.ext.example.", "A")
        assert upstream.seen("localhost.ext.example.")
        assert r.rcode() == dns.rcode.NXDOMAIN
        r = run.udp("x.localhost.", "A")  # RFC 6761 names stay local
        assert section(r.answer) == ("x.localhost. 604800 IN A 127.0.0.1",)
    finally:
        server.stop()


@pytest.mark.parametrize(("text", "message"), [
    ("local x", "Corefile:2:11: local: unexpected argument 'x'"),
    ("local {\n        prefix on\n    }", "Corefile:3:9: local: unknown property 'prefix'"),
    ("local {\n        localhost_prefix\n    }",
     "Corefile:3:9: local: localhost_prefix expects 'on' or 'off'"),
    ("local {\n        localhost_prefix yes\n    }",
     "Corefile:3:26: local: localhost_prefix expects 'on' or 'off', got 'yes'"),
])
def test_bad_local_is_a_located_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        KdnsServer(parse_corefile(f". {{\n    {text}\n}}\n", "Corefile")).build()
    assert str(exc.value) == message
