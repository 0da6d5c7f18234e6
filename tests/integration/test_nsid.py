"""nsid over real sockets: the NSID option in replies to queries that ask for it (RFC 5001)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.dns import wire
from kdns.server.app import KdnsServer
from tests.conftest import DEMO, Running, start_server

KUBIA = "kubia.default.svc.cluster.local."


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    server = start_server(f"""\
        .:53 {{
            nsid kdns a
            bufsize 1000
            kubernetes cluster.local {{
                manifests {DEMO}
            }}
        }}
        """, tmp_path_factory.mktemp("nsid"))
    try:
        yield Running(server)
    finally:
        server.stop()


def nsid_query(name: str, **kw: object) -> dns.message.Message:
    return dns.message.make_query(name, "A", use_edns=0,  # type: ignore[arg-type]
                                  options=[dns.edns.GenericOption(3, b"")], **kw)


def nsids(r: dns.message.Message) -> list[bytes]:
    return [o.to_wire() for o in r.options if o.otype == 3]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_reply_carries_the_nsid_when_asked(run: Running, tcp: bool) -> None:
    for _ in range(2):  # slow path, then the stored reply
        q = nsid_query(KUBIA, want_dnssec=True)
        query = dns.query.tcp if tcp else dns.query.udp
        r = query(q, "127.0.0.1", port=run.port, timeout=3)
        assert [rd.address for rs in r.answer for rd in rs] == ["10.98.237.175"]
        assert nsids(r) == [b"kdns a"]
        assert r.payload == 1000, "bufsize's OPT record, with the option added"
        assert r.ednsflags & dns.flags.DO


def test_no_nsid_unless_asked(run: Running) -> None:
    for _ in range(2):
        r = run.udp(KUBIA, "A", use_edns=0)
        assert r.edns == 0 and nsids(r) == []
    r = run.udp(KUBIA, "A")
    assert r.edns == -1


def test_an_empty_nsid_option_survives_parsing() -> None:
    # dnslib alone drops a zero-length EDNS option; that is how clients ask (RFC 5001 §2.1)
    q = wire.parse_query(nsid_query(KUBIA).to_wire())
    assert q.edns is not None
    assert [(o.code, o.data) for o in q.edns.rdata] == [(3, b"")]


def test_default_is_the_host_name(tmp_path: Path) -> None:
    server = start_server(f". {{\n    nsid\n    kubernetes cluster.local {{\n        manifests "
                          f"{DEMO}\n    }}\n}}\n", tmp_path)
    try:
        r = dns.query.udp(nsid_query(KUBIA), "127.0.0.1", port=server.listeners[0].port,
                          timeout=3)
        assert nsids(r) == [socket.gethostname().encode()]
        assert r.payload == wire.EDNS_ADVERTISED_SIZE, "a new OPT record: kdns's usual size"
    finally:
        server.stop()


@pytest.mark.parametrize(("text", "message"), [
    ("nsid x {\n    }", "Corefile:2:5: nsid: takes no block"),
    (f"nsid {'x' * 513}", "Corefile:2:10: nsid: DATA is 513 bytes; at most 512"),
])
def test_bad_nsid_is_a_located_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        KdnsServer(parse_corefile(f". {{\n    {text}\n}}\n", "Corefile")).build()
    assert str(exc.value) == message


@pytest.mark.parametrize("rdata", [b"\x00\x03\x00", b"\x00\x03\x00\x05abc"],
                         ids=["option header cut short", "option data runs past the record"])
def test_malformed_edns_option_gets_formerr(run: Running, rdata: bytes) -> None:
    q = dns.message.make_query(KUBIA, "A", use_edns=False).to_wire()
    header = q[:10] + b"\x00\x01"  # ARCOUNT 1
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(rdata)) + rdata
    reply = run.raw_udp(header + q[12:] + opt)
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR
