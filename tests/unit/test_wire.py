"""kdns.dns.wire: the question peek, patching, strict parsing and truncation."""

from __future__ import annotations

import struct

import dns.message
import dns.rcode
import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from kdns.dns import wire


def q(name: str, qtype: str = "A", **kw: object) -> bytes:
    return dns.message.make_query(name, qtype, **kw).to_wire()  # type: ignore[arg-type]


def test_fast_key_ignores_id_and_case_but_not_flags_type_or_edns() -> None:
    a = wire.fast_key(q("KuBia.default.svc.cluster.local"))
    b = wire.fast_key(q("kubia.DEFAULT.svc.cluster.local"))
    assert a is not None and b is not None
    assert a[0] == b[0]
    assert wire.fast_key(q("kubia.default.svc.cluster.local", "AAAA"))[0] != a[0]  # type: ignore[index]
    assert wire.fast_key(q("kubia.default.svc.cluster.local", use_edns=0))[0] != a[0]  # type: ignore[index]
    m = dns.message.make_query("kubia.default.svc.cluster.local", "A")
    m.flags &= ~dns.flags.RD
    assert wire.fast_key(m.to_wire())[0] != a[0]  # type: ignore[index]


@pytest.mark.parametrize("data", [b"", b"\x00" * 11, b"\x12\x34\x81\x00" + b"\x00" * 13])
def test_fast_key_refuses_what_is_not_a_plain_query(data: bytes) -> None:
    assert wire.fast_key(data) is None


def test_patch_echoes_id_and_case() -> None:
    first = q("KUBIA.default.svc.cluster.local")
    parsed = wire.parse_query(first)
    reply = wire.reply_for(parsed, aa=True)
    reply.add_answer(RR(parsed.qname, QTYPE.A, rdata=A("10.98.237.175"), ttl=5))
    stored = bytes(wire.encode(reply, 512))
    second = q("kubia.default.SVC.cluster.local")
    k = wire.fast_key(second)
    assert k is not None
    out = dns.message.from_wire(wire.patch(stored, second, k[1]))
    assert out.id == dns.message.from_wire(second).id
    assert out.question[0].name.to_text() == "kubia.default.SVC.cluster.local."
    assert out.answer[0].name.to_text() == "kubia.default.SVC.cluster.local."


def test_parse_query_reads_edns() -> None:
    p = wire.parse_query(q("a.b.", use_edns=0, payload=1232, want_dnssec=True))
    assert (p.udp_size, p.do, p.qname) == (1232, True, "a.b.")
    assert wire.parse_query(q("a.b.", use_edns=0, payload=100)).udp_size == 512
    assert wire.parse_query(q("a.b.", use_edns=0, payload=65000)).udp_size == wire.UDP_MAX_SIZE


def _rcode(data: bytes | None) -> int | None:
    return None if data is None else data[3] & 0xF


@pytest.mark.parametrize(
    ("data", "rcode"),
    [
        (b"", None),  # nothing to echo: silence
        (b"\x12\x34\x01", None),  # truncated header
        (b"\x12\x34\x81\x00\x00\x01\x00\x00\x00\x00\x00\x00", None),  # QR=1: a reply
        (b"\x12\x34\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00", dns.rcode.FORMERR),  # qdcount 0
        (b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00" + b"\x01a\x00\x00\x01\x00\x01" * 2,
         dns.rcode.FORMERR),  # qdcount 2
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ab", dns.rcode.FORMERR),  # cut label
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
         dns.rcode.FORMERR),  # label length 64
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",
         dns.rcode.FORMERR),  # compression pointer to itself
        (b"\x12\x34\x28\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x06\x00\x01",
         dns.rcode.NOTIMP),  # opcode UPDATE
    ],
)
def test_parse_query_rejects_malformed(data: bytes, rcode: int | None) -> None:
    with pytest.raises(wire.WireError) as err:
        wire.parse_query(data)
    assert _rcode(err.value.reply) == rcode
    if err.value.reply is not None:
        assert err.value.reply[:2] == data[:2]  # the ID is echoed
        assert err.value.reply[2] & 0x80  # QR set


def test_trailing_garbage_is_formerr() -> None:
    with pytest.raises(wire.WireError) as err:
        wire.parse_query(q("kubia.default.svc.cluster.local") + b"junk")
    assert _rcode(err.value.reply) == dns.rcode.FORMERR


def test_two_opt_records_is_formerr() -> None:
    base = q("a.b.", use_edns=0)
    opt = base[-11:]
    data = bytearray(base + opt)
    struct.pack_into("!H", data, 10, 2)
    with pytest.raises(wire.WireError) as err:
        wire.parse_query(bytes(data))
    assert _rcode(err.value.reply) == dns.rcode.FORMERR


def test_encode_truncates_to_size_and_sets_tc() -> None:
    parsed = wire.parse_query(q("big.example.", use_edns=0, payload=1232))
    reply = wire.reply_for(parsed, aa=True)
    for i in range(300):
        reply.add_answer(RR(parsed.qname, QTYPE.A, rdata=A(f"10.0.{i // 256}.{i % 256}"), ttl=5))
    out = wire.encode(reply, 1232)
    assert len(out) <= 1232
    msg = dns.message.from_wire(out)
    assert msg.flags & dns.flags.TC
    assert msg.edns == 0  # the OPT record survives truncation
    assert 0 < len(msg.answer[0]) < 300
    full = DNSRecord.parse(wire.encode(reply, 65535))
    assert len(full.rr) == 300


def test_encode_drops_additional_before_answers_without_tc() -> None:
    parsed = wire.parse_query(q("srv.example.", "SRV"))
    reply = wire.reply_for(parsed)
    reply.add_answer(RR(parsed.qname, QTYPE.A, rdata=A("10.0.0.1"), ttl=5))
    for i in range(60):
        reply.add_ar(RR(f"host{i}.example.", QTYPE.A, rdata=A(f"10.0.1.{i}"), ttl=5))
    msg = dns.message.from_wire(wire.encode(reply, 512))
    assert not msg.flags & dns.flags.TC
    assert len(msg.answer) == 1 and not msg.additional


def _reply_with_ttls() -> bytes:
    """A reply with records in all three sections (different TTLs, compressed and spelled
    owners) and an OPT whose flags must not be taken for a TTL."""
    query = DNSRecord.question("www.example.com", "A")
    reply = query.reply()
    reply.add_answer(*RR.fromZone("www.example.com. 300 IN CNAME web.example.com.\n"
                                  "web.example.com. 60 IN A 192.0.2.1"))
    reply.add_auth(*RR.fromZone("example.com. 86400 IN NS ns.example.net."))
    reply.add_ar(*RR.fromZone("ns.example.net. 5 IN A 192.0.2.53"))
    out = reply.pack()
    # OPT: udp 1232, DO set (its "TTL" is 0x00008000)
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00"
    return out[:10] + struct.pack("!H", 2) + out[12:] + opt


def test_ttl_fields_find_every_record_ttl_but_the_opts() -> None:
    reply = _reply_with_ttls()
    offsets, ttls = wire.ttl_fields(reply)
    assert ttls == (300, 60, 86400, 5)
    assert [struct.unpack_from("!I", reply, at)[0] for at in offsets] == list(ttls)


@pytest.mark.parametrize("elapsed", [0, 1, 59, 60, 61, 299, 301, 100000])
def test_with_ttls_counts_each_record_down_and_stops_at_zero(elapsed: int) -> None:
    reply = _reply_with_ttls()
    offsets, ttls = wire.ttl_fields(reply)
    out = wire.with_ttls(reply, offsets, ttls, elapsed)
    parsed = dns.message.from_wire(out)
    got = [rrset.ttl for sec in (parsed.answer, parsed.authority, parsed.additional)
           for rrset in sec]
    assert got == [max(0, t - elapsed) for t in ttls]
    assert parsed.edns == 0 and parsed.ednsflags & dns.flags.DO  # the OPT is untouched
    assert len(out) == len(reply) and out[:12] == reply[:12]


@pytest.mark.parametrize("cut", [13, 20, 40, -3])
def test_ttl_fields_reject_a_reply_cut_short(cut: int) -> None:
    with pytest.raises(ValueError, match="malformed reply"):
        wire.ttl_fields(_reply_with_ttls()[:cut])
