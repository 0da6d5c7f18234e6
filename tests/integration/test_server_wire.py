"""The server over real UDP/TCP sockets: malformed packets, EDNS, truncation, case, TCP framing."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.conftest import DEMO, Running, start_server

KUBIA = "kubia.default.svc.cluster.local."


def _header(qid: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0,
            ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


QUESTION = b"\x05kubia\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01"

MALFORMED = [
    ("empty", b"", None),
    ("short header", b"\x12\x34\x01\x00\x00", None),
    ("QR=1 (a reply)", _header(flags=0x8180) + QUESTION, None),
    ("qdcount 0", _header(qd=0), dns.rcode.FORMERR),
    ("qdcount 2", _header(qd=2) + QUESTION + QUESTION, dns.rcode.FORMERR),
    ("truncated question", _header() + QUESTION[:9], dns.rcode.FORMERR),
    ("label length 64", _header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
     dns.rcode.FORMERR),
    ("label runs past the end", _header() + b"\x3fabc", dns.rcode.FORMERR),
    ("compression loop", _header() + b"\xc0\x0c\x00\x01\x00\x01", dns.rcode.FORMERR),
    ("pointer forward", _header() + b"\xc0\x20\x00\x01\x00\x01" + b"\x00" * 20,
     dns.rcode.FORMERR),
    ("trailing garbage", _header() + QUESTION + b"\xde\xad\xbe\xef", dns.rcode.FORMERR),
    ("arcount says 1, nothing there", _header(ar=1) + QUESTION, dns.rcode.FORMERR),
    ("opcode NOTIFY", _header(flags=0x2000) + QUESTION, dns.rcode.NOTIMP),
    ("opcode UPDATE", _header(flags=0x2800) + QUESTION, dns.rcode.NOTIMP),
]


@pytest.mark.parametrize(("what", "data", "rcode"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_udp(demo: Running, what: str, data: bytes, rcode: int | None) -> None:
    reply = demo.raw_udp(data, timeout=0.3 if rcode is None else 2.0)
    if rcode is None:
        assert reply is None, f"{what}: expected silence"
    else:
        assert reply is not None, f"{what}: expected a reply"
        assert reply[:2] == data[:2]
        assert reply[2] & 0x80
        assert reply[3] & 0xF == rcode
    # and the server still answers a valid query promptly afterwards
    assert demo.udp(KUBIA).answer[0][0].address == "10.98.237.175"


@pytest.mark.parametrize(("what", "data", "rcode"),
                         [m for m in MALFORMED if m[2] is not None], ids=lambda v: str(v)[:20])
def test_malformed_tcp(demo: Running, what: str, data: bytes, rcode: int) -> None:
    reply = demo.raw_tcp(data)
    assert reply is not None and reply[3] & 0xF == rcode, what
    assert demo.tcp(KUBIA).answer[0][0].address == "10.98.237.175"


def test_edns_is_echoed_and_version_checked(demo: Running) -> None:
    r = demo.udp(KUBIA, use_edns=0, payload=4096)
    assert r.edns == 0 and r.rcode() == dns.rcode.NOERROR
    assert r.payload >= 512
    r = demo.udp(KUBIA, use_edns=1)
    assert r.rcode() == dns.rcode.BADVERS
    plain = demo.udp(KUBIA)
    assert plain.edns == -1


def test_question_is_echoed_as_sent_through_fast_path(demo: Running) -> None:
    for name in ("KuBiA.DeFault.svc.cluster.local.", "kubia.DEFAULT.svc.CLUSTER.local.",
                 "KuBiA.DeFault.svc.cluster.local."):
        for _ in range(2):  # the second answer of each spelling comes from the fast path
            r = demo.udp(name)
            assert r.question[0].name.to_text() == name
            assert r.answer[0].name.to_text() == name
            assert r.flags & dns.flags.AA


def test_tcp_several_queries_on_one_connection_pipelined(demo: Running) -> None:
    names = [KUBIA, "nginx-svc.default.svc.cluster.local.", "nope.default.svc.cluster.local."]
    msgs = [dns.message.make_query(n, "A") for n in names]
    with socket.create_connection(("127.0.0.1", demo.port), timeout=3) as s:
        s.sendall(b"".join(struct.pack("!H", len(w)) + w for w in (m.to_wire() for m in msgs)))
        replies = []
        buf = b""
        while len(replies) < len(msgs):
            buf += s.recv(65535)
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack_from("!H", buf)[0]:
                size = struct.unpack_from("!H", buf)[0]
                replies.append(dns.message.from_wire(buf[2 : 2 + size]))
                buf = buf[2 + size :]
    assert [r.id for r in replies] == [m.id for m in msgs]
    assert [r.rcode() for r in replies] == [0, 0, dns.rcode.NXDOMAIN]


def test_a_stalled_tcp_client_does_not_block_others(demo: Running) -> None:
    with socket.create_connection(("127.0.0.1", demo.port), timeout=3) as stalled:
        stalled.sendall(b"\x00")  # half a length prefix, then nothing
        t0 = time.monotonic()
        assert demo.tcp(KUBIA).answer
        assert demo.udp(KUBIA).answer
        assert time.monotonic() - t0 < 1.0


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A headless service with 300 ready endpoints, too many for one UDP reply."""
    tmp = tmp_path_factory.mktemp("big")
    eps = "\n".join(f"  - addresses: [\"10.50.{i // 250}.{i % 250 + 1}\"]" for i in range(300))
    (tmp / "big.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: big}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: many, namespace: big}\n"
        "spec: {clusterIP: None, ports: [{name: http, port: 80, protocol: TCP}]}\n---\n"
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        "metadata: {name: many-1, namespace: big, labels: {kubernetes.io/service-name: many}}\n"
        "addressType: IPv4\nports: [{name: http, port: 80, protocol: TCP}]\nendpoints:\n" + eps + "\n"
    )
    server = start_server(
        f"""
        cluster.local:53 {{
            kubernetes {{
                manifests {tmp / "big.yaml"}
            }}
        }}
        """,
        tmp,
    )
    try:
        yield Running(server)
    finally:
        server.stop()


def test_truncation_udp_then_full_answer_over_tcp(big: Running) -> None:
    name = "many.big.svc.cluster.local."
    plain = big.udp(name)
    assert plain.flags & dns.flags.TC
    assert len(plain.to_wire()) <= 512
    edns = big.udp(name, use_edns=0, payload=1232)
    assert edns.flags & dns.flags.TC
    assert len(edns.to_wire()) <= 1232
    assert len(edns.answer[0]) > len(plain.answer[0]) if plain.answer else True
    full = big.tcp(name)
    assert not full.flags & dns.flags.TC
    assert len(full.answer[0]) == 300


def test_zone_not_served_is_refused(big: Running) -> None:
    r = big.udp("example.com.")
    assert r.rcode() == dns.rcode.REFUSED
    assert r.question[0].name.to_text() == "example.com."


def test_a_server_without_bind_address_answers_ipv6_clients_too(tmp_path: Path) -> None:
    from kdns.config.parser import parse_corefile
    from kdns.server.app import KdnsServer, ServeOptions

    text = f"cluster.local:53 {{\n    kubernetes {{\n        manifests {DEMO}\n    }}\n}}\n"
    server = KdnsServer(parse_corefile(text, "Corefile"),
                        ServeOptions(config_dir=tmp_path, dns_port=0)).build()
    server.start()
    try:
        port = server.listeners[0].port
        q = dns.message.make_query(KUBIA, "A")
        assert dns.query.udp(q, "::1", port=port, timeout=2).answer
        assert dns.query.tcp(q, "::1", port=port, timeout=2).answer
        assert dns.query.udp(q, "127.0.0.1", port=port, timeout=2).answer
    finally:
        server.stop()


def test_tcp_client_trickling_bytes_is_cut_off_at_the_idle_timeout(tmp_path: Path) -> None:
    server = start_server(f"cluster.local:53 {{\n kubernetes {{\n  manifests {DEMO}\n }}\n}}\n",
                          tmp_path)
    tcp = server.listeners[0].tcp
    assert tcp is not None
    tcp.idle_timeout = 0.5
    try:
        wire = dns.message.make_query(KUBIA, "A").to_wire()
        framed = struct.pack("!H", len(wire)) + wire
        with socket.create_connection(("127.0.0.1", server.listeners[0].port), timeout=3) as s:
            t0 = time.monotonic()
            closed = False
            for byte in framed:  # one byte every 0.1 s: each recv is quick, the query is not
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.1)
                if time.monotonic() - t0 > 2:
                    break
            if not closed:
                s.settimeout(1)
                closed = s.recv(2) == b""
        assert closed
        assert time.monotonic() - t0 < 1.5
        assert tcp.timed_out == 1
        # and a normal client is still served at once
        q = dns.message.make_query(KUBIA, "A")
        assert dns.query.tcp(q, "127.0.0.1", port=server.listeners[0].port, timeout=2).answer
    finally:
        server.stop()


@pytest.mark.parametrize(("name", "rcode"), [(KUBIA, dns.rcode.NOERROR),
                                             ("web.shop.svc.cluster.local.", dns.rcode.NOERROR),
                                             ("nope.default.svc.cluster.local.",
                                              dns.rcode.NXDOMAIN)])
def test_any_without_the_any_plugin_goes_down_the_chain(demo: Running, name: str,
                                                        rcode: int) -> None:
    """As CoreDNS: no RFC 8482 HINFO unless the block has *any* (tests/integration/test_any.py);
    the kubernetes plugin answers ANY as any other type it does not serve."""
    for _ in range(2):  # slow path, then fast path
        r = demo.udp(name, "ANY")
        assert r.rcode() == rcode
        assert not r.answer
        assert [rs.rdtype for rs in r.authority] == [dns.rdatatype.SOA]


def test_case_is_echoed_whatever_spelling_came_first(tmp_path: Path) -> None:
    """The first spelling seen must never be replayed to a client that spelled it otherwise
    (0x20-randomising resolvers drop such replies)."""
    server = start_server(f"cluster.local:53 {{\n kubernetes {{\n  manifests {DEMO}\n }}\n}}\n",
                          tmp_path)
    port = server.listeners[0].port
    try:
        spellings = ["NGINX-svc.Default.svc.cluster.local.", "nginx-svc.default.svc.cluster.local.",
                     "nginx-svc.default.svc.cluster.local.", "NGINX-svc.Default.svc.cluster.local.",
                     "nGiNx-SvC.dEfAuLt.SvC.cLuStEr.LoCaL.", "nginx-svc.default.svc.cluster.local."]
        for name in spellings:
            for proto in (dns.query.udp, dns.query.tcp):
                r = proto(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=2)
                assert r.question[0].name.to_text() == name
                assert r.answer[0].name.to_text() == name
                assert [a.address for a in r.answer[0]] == ["10.96.10.80"]
    finally:
        server.stop()
