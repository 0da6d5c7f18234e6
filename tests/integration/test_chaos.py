"""chaos over real sockets: CH TXT version/hostname/authors, everything else to the next plugin."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.server.app import KdnsServer
from tests.conftest import Running, start_server

COREFILE = """\
.:53 {
    chaos kdns-test "Bea" "Al" "Bea"
    hosts {
        192.0.2.1 version.bind
    }
}
hostname.bind:53 {
    chaos
}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    server = start_server(COREFILE, tmp_path_factory.mktemp("chaos"))
    try:
        yield Running(server)
    finally:
        server.stop()


def ch(run: Running, name: str, qtype: str = "TXT", tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, qtype, "CH")
    query = dns.query.tcp if tcp else dns.query.udp
    return query(q, "127.0.0.1", port=run.port, timeout=3)


def texts(r: dns.message.Message) -> list[str]:
    return [b"".join(rd.strings).decode() for rs in r.answer for rd in rs]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize(("name", "want"), [
    ("version.bind.", "kdns-test"), ("VERSION.Server.", "kdns-test"),
    ("id.server.", socket.gethostname()), ("hostname.bind.", socket.gethostname()),
])
def test_version_and_hostname(run: Running, name: str, want: str, tcp: bool) -> None:
    for _ in range(2):  # slow path, then the stored reply
        r = ch(run, name, tcp=tcp)
        assert r.rcode() == dns.rcode.NOERROR
        assert texts(r) == [want]
        rs = r.answer[0]
        assert (rs.rdclass, rs.rdtype, rs.ttl) == (dns.rdataclass.CH, dns.rdatatype.TXT, 0)
        assert str(rs.name) == name, "the question's spelling"
        assert not r.flags & dns.flags.AA


def test_authors_are_deduplicated_and_shuffled(run: Running) -> None:
    orders = {tuple(texts(ch(run, "authors.bind."))) for _ in range(40)}
    assert {tuple(sorted(o)) for o in orders} == {("Al", "Bea")}
    assert len(orders) == 2, "every query draws a new order (not stored in the fast path)"


def test_a_name_below_a_chaos_name_goes_to_the_next_plugin(run: Running) -> None:
    q = dns.message.make_query("x.hostname.bind.", "TXT", "CH")
    r = dns.query.udp(q, "127.0.0.1", port=run.port, timeout=3)
    assert r.rcode() == dns.rcode.SERVFAIL, "not a chaos name: next plugin, none left"


def test_bare_chaos_names_kdns(tmp_path: Path) -> None:
    from kdns import __version__

    server = start_server(". {\n    chaos\n}\n", tmp_path)
    try:
        run = Running(server)
        assert texts(ch(run, "version.bind.")) == [f"kdns-{__version__}"]
        assert texts(ch(run, "authors.bind.")) == ["kdns developers"]
    finally:
        server.stop()


@pytest.mark.parametrize(("name", "qtype", "klass"), [
    ("version.bind.", "TXT", "IN"), ("version.bind.", "A", "CH"),
])
def test_other_class_or_type_goes_to_the_next_plugin(run: Running, name: str, qtype: str,
                                                     klass: str) -> None:
    q = dns.message.make_query(name, qtype, klass)
    r = dns.query.udp(q, "127.0.0.1", port=run.port, timeout=3)
    assert not any(rs.rdclass == dns.rdataclass.CH and rs.rdtype == dns.rdatatype.TXT
                   for rs in r.answer)
    if klass == "IN":
        assert r.rcode() == dns.rcode.NOERROR and not r.answer  # hosts: NODATA for TXT


def test_long_strings_are_cut_to_255_bytes(tmp_path: Path) -> None:
    server = start_server(f". {{\n    chaos {'v' * 300} {'a' * 300}\n}}\n", tmp_path)
    try:
        run = Running(server)
        assert texts(ch(run, "version.bind.")) == ["v" * 255]
        assert texts(ch(run, "authors.bind.")) == ["a" * 255]
    finally:
        server.stop()


def test_block_is_a_located_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        KdnsServer(parse_corefile(". {\n    chaos v1 {\n    }\n}\n", "Corefile")).build()
    assert str(exc.value) == "Corefile:2:5: chaos: takes no block"
