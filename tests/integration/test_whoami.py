"""whoami over real sockets: the client's own address, port and transport, never stored."""

from __future__ import annotations

import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rdataclass
import dns.rdatatype
import pytest
from dnslib import CLASS, QTYPE, DNSRecord

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.server.app import KdnsServer, ServeOptions
from tests.ports import free_udp_port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KdnsServer]:
    text = textwrap.dedent("""\
        .:53 {
            bind 127.0.0.1 ::1
            cache 30
            whoami
        }
        """)
    tmp = tmp_path_factory.mktemp("whoami")
    srv = KdnsServer(parse_corefile(text, str(tmp / "Corefile")),
                     ServeOptions(config_dir=tmp, dns_port=0)).build()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize(("host", "rdtype"), [("127.0.0.1", dns.rdatatype.A),
                                              ("::1", dns.rdatatype.AAAA)])
def test_udp_client_address_and_port(server: KdnsServer, host: str, rdtype: int) -> None:
    port = server.listeners[0].port
    seen_ports = []
    for _ in range(3):  # never a stored reply: each source port is reported as it is
        sport = free_udp_port(host)
        q = dns.message.make_query("who.example.", "A")
        r = dns.query.udp(q, host, port=port, source=host, source_port=sport, timeout=3)
        assert not r.answer and r.flags & dns.flags.AA
        addr, srv = r.additional
        assert (str(addr.name), addr.rdtype, addr.ttl, addr[0].address) == (
            "who.example.", rdtype, 0, host)
        assert (str(srv.name), srv.rdtype, srv.ttl) == ("_udp.who.example.", dns.rdatatype.SRV, 0)
        assert (srv[0].port, str(srv[0].target)) == (sport, ".")
        seen_ports.append(srv[0].port)
    assert len(set(seen_ports)) == 3


def test_tcp_and_the_root_name(server: KdnsServer) -> None:
    q = dns.message.make_query(".", "NS")
    r = dns.query.tcp(q, "127.0.0.1", port=server.listeners[0].port, timeout=3)
    names = [str(rs.name) for rs in r.additional]
    assert names == [".", "_tcp."]
    assert r.additional[0][0].address == "127.0.0.1"


def test_question_class_is_kept(server: KdnsServer) -> None:
    # dnspython reads an A record of class CH as Chaosnet's (a name and a 16-bit address), so
    # this reply is read with dnslib, which decodes rdata by type alone (as CoreDNS writes it).
    q = dns.message.make_query("who.example.", "TXT", "CH")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(q.to_wire(), ("127.0.0.1", server.listeners[0].port))
        reply = DNSRecord.parse(s.recv(512))
    assert [(QTYPE[r.rtype], CLASS[r.rclass]) for r in reply.ar] == [("A", "CH"), ("SRV", "CH")]
    assert str(reply.ar[0].rdata) == "127.0.0.1"


@pytest.mark.parametrize(("text", "message"), [
    ("whoami x", "Corefile:2:12: whoami: unexpected argument 'x'"),
    ("whoami {\n    }", "Corefile:2:5: whoami: takes no block"),
])
def test_bad_whoami_is_a_located_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        KdnsServer(parse_corefile(f". {{\n    {text}\n}}\n", "Corefile")).build()
    assert str(exc.value) == message
