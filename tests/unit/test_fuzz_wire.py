"""Property-based fuzzing of kdns.dns.wire's byte-level functions (hypothesis).

The strategies here build DNS queries byte by byte (so they can say things no DNS library would
let them: long and binary labels, compression pointers anywhere, wrong counts, stray EDNS
options) and then damage them (bit flips, truncation, inserted bytes). The server-level fuzz
tests (tests/integration/test_fuzz_server.py) reuse them.

Properties of the pure functions:

* ``fast_key`` and ``patch`` never raise; ``parse_query`` raises nothing but ``WireError``, whose
  reply (when there is one) is a well-formed reply to the datagram;
* ``fast_key``'s key does not change when only the ID or the case of the question name's letters
  changes, and does change for any other single-byte change;
* ``patch`` of a stored reply for a case variant of the query parses, with the new ID and the new
  spelling of the name;
* ``encode`` fits the size it is given, parses, and leaves its message as it was.
"""

from __future__ import annotations

import struct
from datetime import timedelta

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
from dnslib import QTYPE, RR, A, DNSRecord
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kdns.dns import wire

# -- strategies ----------------------------------------------------------------------------------

SUFFIXES = (
    (b"default", b"svc", b"cluster", b"local"),
    (b"svc", b"cluster", b"local"),
    (b"cluster", b"local"),
    (b"shop", b"svc", b"cluster", b"local"),
    (b"in-addr", b"arpa"),
    (b"ip6", b"arpa"),
    (b"example", b"com"),
    (),
)
"""Name tails that reach the demo's zones (and two that do not), so fuzzed names get as far as
the plugin chain, not just the zone router."""
WORDS = (b"kubia", b"nginx-svc", b"kubernetes", b"web", b"_http", b"_tcp", b"*", b"175",
         b"237", b"98", b"10", b"a", b"pod", b"10-244-1-5")
QTYPES = (1, 28, 33, 12, 16, 5, 6, 2, 255, 252, 251, 41, 250, 0, 65, 99, 65535)
QCLASSES = (1, 1, 1, 3, 254, 255, 0, 2)


def case_flip(label: bytes, mask: int) -> bytes:
    """``label`` with the letters whose bit is set in ``mask`` upper-cased (0x20 style)."""
    return bytes(c - 32 if 97 <= c <= 122 and mask >> (i % 64) & 1 else c
                 for i, c in enumerate(label))


@st.composite
def labels(draw: st.DrawFn) -> list[bytes]:
    """The labels of a question name: demo-shaped, random, long (63), UTF-8 or binary bytes."""
    head = draw(st.lists(st.one_of(
        st.sampled_from(WORDS),
        st.binary(min_size=1, max_size=63),
        st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=63).map(str.encode),
        st.just(b"x" * 63),
        # UTF-8 beyond ASCII: dnslib keeps such labels, so they reach the plugins.
        st.text(min_size=1, max_size=20).map(str.encode).filter(lambda b: len(b) <= 63),
    ), max_size=6))
    tail = list(draw(st.sampled_from(SUFFIXES)))
    mask = draw(st.integers(0, 2**64 - 1))
    return [case_flip(lab, mask) for lab in head + tail]


@st.composite
def name_wire(draw: st.DrawFn) -> bytes:
    """A wire name, usually plain; sometimes with a compression pointer, an extended (binary,
    RFC 2673) label type, an oversized label, or more than 255 octets in all."""
    labs = draw(labels())
    plain = b"".join(bytes([len(lab)]) + lab for lab in labs)
    how = draw(st.sampled_from(["plain"] * 6 + ["pointer", "binary", "len64", "toolong"]))
    if how == "pointer":
        # A pointer to the header (offset 4 reads as the root: qdcount's high byte is 0), to
        # the name itself (a loop), or anywhere.
        target = draw(st.sampled_from([4, 12, 0x3FFF]) | st.integers(0, 0x3FFF))
        return plain + struct.pack("!H", 0xC000 | target)
    if how == "binary":
        bits = draw(st.integers(0, 255))
        return plain + b"\x41" + bytes([bits]) + draw(st.binary(min_size=0, max_size=32)) + b"\x00"
    if how == "len64":
        return b"\x40" + b"a" * 64 + plain + b"\x00"
    if how == "toolong":
        return b"\x3f" + b"y" * 63 + b"\x3f" + b"z" * 63 + b"\x3f" + b"w" * 63 + b"\x3f" + \
            b"v" * 63 + plain + b"\x00"
    return plain + b"\x00"


@st.composite
def opt_record(draw: st.DrawFn) -> bytes:
    """An OPT pseudo-record: payload size, extended rcode, version, DO, and random options
    (rdlength sometimes lying about them)."""
    options = b"".join(
        struct.pack("!HH", code, len(data)) + data
        for code, data in draw(st.lists(st.tuples(
            st.sampled_from([3, 8, 10, 12, 15]) | st.integers(0, 65535),
            st.binary(max_size=40)), max_size=3)))
    rdlen = len(options)
    if draw(st.integers(0, 9)) == 0:
        rdlen = draw(st.integers(0, 0xFFFF))
    size = draw(st.sampled_from([512, 1232, 4096, 65535, 0, 100]) | st.integers(0, 65535))
    version = draw(st.sampled_from([0, 0, 0, 1]) | st.integers(0, 255))
    ttl = draw(st.integers(0, 255)) << 24 | version << 16 | draw(st.sampled_from([0, 0x8000]))
    return b"\x00" + struct.pack("!HHIH", 41, size, ttl, rdlen) + options


@st.composite
def valid_queries(draw: st.DrawFn) -> bytes:
    """A query the server should answer normally: one question, plain labels (the root maybe
    compressed), maybe one OPT."""
    labs = draw(labels())
    assume(all(len(lab) <= 63 for lab in labs) and sum(len(lab) + 1 for lab in labs) < 255)
    # The root either as its zero byte or, legally but rarely, compressed: a pointer to offset
    # 4, QDCOUNT's high byte, which is zero.
    root = draw(st.sampled_from([b"\x00", b"\x00", b"\x00", b"\xc0\x04"]))
    name = b"".join(bytes([len(lab)]) + lab for lab in labs) + root
    opt = draw(st.booleans())
    flags = 0x0100 * draw(st.booleans()) | 0x0010 * draw(st.booleans()) | 0x0020 * draw(
        st.booleans())
    header = struct.pack("!HHHHHH", draw(st.integers(0, 0xFFFF)), flags, 1, 0, 0, int(opt))
    question = name + struct.pack("!HH", draw(st.sampled_from((1, 28, 33, 12, 16, 255))),
                                  draw(st.sampled_from((1, 1, 255))))
    return header + question + (b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0) if opt else b"")


@st.composite
def crafted_queries(draw: st.DrawFn) -> bytes:
    """A query assembled from parts: any header, any name encoding, extra records."""
    qid = draw(st.integers(0, 0xFFFF))
    flags = draw(st.sampled_from([0x0100, 0x0000, 0x0110, 0x0120]) | st.integers(0, 0xFFFF))
    question = draw(name_wire()) + struct.pack("!HH", draw(st.sampled_from(QTYPES)),
                                                 draw(st.sampled_from(QCLASSES)))
    records = []
    for _ in range(draw(st.integers(0, 2))):
        rdata = draw(st.binary(max_size=20))
        records.append(b"\x00" + struct.pack("!HHIH", draw(st.sampled_from(QTYPES)), 1, 30,
                                             len(rdata)) + rdata)
    opts = [draw(opt_record()) for _ in range(draw(st.sampled_from([0, 1, 1, 2])))]
    an = draw(st.integers(0, len(records)))
    counts = [1, an, len(records) - an, len(opts)]
    if draw(st.integers(0, 4)) == 0:
        counts = draw(st.lists(st.sampled_from([0, 1, 2, 0xFFFF]) | st.integers(0, 0xFFFF),
                               min_size=4, max_size=4))
    body = question + b"".join(records) + b"".join(opts)
    return struct.pack("!HH4H", qid, flags, *counts) + body


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """``base`` after up to three random edits: bit flip, truncation, insertion, deletion,
    overwritten counts."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "counts"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            i = draw(st.integers(0, len(data) - 1))
            del data[i : i + draw(st.integers(1, 4))]
        elif op == "counts" and len(data) >= 12:
            i = draw(st.sampled_from([4, 6, 8, 10]))
            data[i : i + 2] = struct.pack("!H", draw(st.sampled_from([0, 1, 2, 0xFFFF])))
    return bytes(data)


def datagrams() -> st.SearchStrategy[bytes]:
    """Everything the fuzz tests throw at kdns: random bytes, crafted and mutated queries."""
    return st.one_of(
        st.binary(max_size=600),
        valid_queries(),
        crafted_queries(),
        mutated(valid_queries()),
        mutated(crafted_queries()),
    )


# -- what a reply must look like ------------------------------------------------------------------

SENSIBLE_RCODES = frozenset({dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.FORMERR,
                             dns.rcode.NOTIMP, dns.rcode.REFUSED, dns.rcode.SERVFAIL,
                             dns.rcode.BADVERS})


def first_question(data: bytes) -> tuple[dns.name.Name, int, int] | None:
    """The query's question as a strict parser (dnspython) reads it, or None when there is no
    single, well-formed question to echo."""
    if len(data) < 12 or data[4:6] != b"\x00\x01":
        return None
    try:
        name, used = dns.name.from_wire(data, 12)
    except (dns.exception.DNSException, ValueError, IndexError):
        return None
    if 12 + used + 4 > len(data):
        return None
    try:
        # dnslib (kdns's parser) refuses labels that are not UTF-8, which RFC 2181 §11 allows:
        # kdns answers those FORMERR without the question, a known limitation.
        for label in name.labels:
            label.decode()
    except UnicodeDecodeError:
        return None
    qtype, qclass = struct.unpack_from("!HH", data, 12 + used)
    return name, qtype, qclass


def expects_silence(data: bytes) -> bool:
    """The only datagrams kdns may leave unanswered: no full header, or QR=1 (a response)."""
    return len(data) < 12 or bool(data[2] & 0x80)


def check_reply(data: bytes, reply: bytes | None) -> dns.message.Message | None:
    """Assert the reply invariants for one datagram; the parsed reply (None for silence)."""
    if reply is None:
        assert expects_silence(data), f"no reply to {data.hex()}"
        return None
    assert not expects_silence(data), f"replied to {data.hex()}"
    readable = reply
    if len(reply) > 2 and (reply[2] >> 3) & 0xF == 5:
        # dnspython reads an UPDATE reply as an update, whose zone section must be one SOA;
        # kdns answers UPDATE NOTIMP echoing the question, as CoreDNS does: read it as a query.
        readable = reply[:2] + bytes([reply[2] & 0x87]) + reply[3:]
    try:
        msg = dns.message.from_wire(readable)
    except Exception as err:
        raise AssertionError(f"reply {reply.hex()} to {data.hex()} does not parse: {err!r}") \
            from None
    assert reply[:2] == data[:2], "ID not echoed"
    assert reply[2] & 0x80, "QR not set"
    assert msg.rcode() in SENSIBLE_RCODES, dns.rcode.to_text(msg.rcode())
    question = first_question(data)
    if question is not None:
        assert len(msg.question) == 1, f"question not echoed for {data.hex()}"
        got = msg.question[0]
        # Compare the spelling, not just the name: 0x20 clients check the case they sent.
        assert (got.name.to_wire(), got.rdtype, got.rdclass) == (
            question[0].to_wire(), question[1], question[2])
    else:
        assert len(msg.question) <= 1
        if msg.question:  # a reply may only repeat a question the query actually carried
            assert data[4:6] != b"\x00\x00", f"question invented for {data.hex()}"
    return msg


# -- properties of the pure functions -------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=timedelta(seconds=2),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@FUZZ
@given(datagrams())
def test_fast_key_and_patch_never_raise(data: bytes) -> None:
    k = wire.fast_key(data)
    if k is None:
        return
    key, end = k
    assert len(key) == len(data) - 2 and 12 <= end < len(data) and data[end] == 0
    out = wire.patch(data, data, end)
    assert out == data  # patching a datagram with itself changes nothing


@FUZZ
@given(datagrams())
def test_parse_query_raises_only_wire_error_with_a_wellformed_reply(data: bytes) -> None:
    try:
        query = wire.parse_query(data)
    except wire.WireError as err:
        reply = err.reply
        if reply is not None:
            msg = check_reply(data, reply)
            assert msg is not None and msg.rcode() in (dns.rcode.FORMERR, dns.rcode.NOTIMP)
        else:
            assert expects_silence(data)
        return
    assert query.qname.endswith(".")
    assert wire.UDP_DEFAULT_SIZE <= query.udp_size <= wire.UDP_MAX_SIZE
    assert first_question(data) is not None, "parse_query accepted a question dnspython rejects"
    out = wire.encode(wire.reply_for(query), query.udp_size)
    check_reply(data, out)


@settings(max_examples=300, deadline=timedelta(seconds=2))
@given(valid_queries(), st.integers(0, 2**64 - 1), st.integers(0, 0xFFFF))
def test_fast_key_is_stable_under_id_and_case_changes_of_the_name(
        data: bytes, mask: int, qid: int) -> None:
    k = wire.fast_key(data)
    assume(k is not None)
    assert k is not None
    end = k[1]
    variant = struct.pack("!H", qid) + data[2:12] + case_flip(data[12:end].lower(), mask) + \
        data[end:]
    k2 = wire.fast_key(variant)
    assert k2 is not None and k2 == k


@settings(max_examples=400, deadline=timedelta(seconds=2))
@given(valid_queries(), st.data())
def test_fast_key_changes_for_any_other_byte_change(data: bytes, draw: st.DataObject) -> None:
    k = wire.fast_key(data)
    assume(k is not None)
    assert k is not None
    pos = draw.draw(st.integers(2, len(data) - 1), label="pos")
    new = draw.draw(st.integers(0, 255).filter(lambda b: b != data[pos]), label="byte")
    old = data[pos]
    is_case_change = 12 <= pos < k[1] and bytes([old]).lower() == bytes([new]).lower()
    assume(not is_case_change)
    changed = data[:pos] + bytes([new]) + data[pos + 1 :]
    k2 = wire.fast_key(changed)
    assert k2 is None or k2[0] != k[0]


def name_uses_pointer(data: bytes) -> bool:
    i = 12
    while data[i]:
        if data[i] >= 0xC0:
            return True
        i += data[i] + 1
    return False


@settings(max_examples=300, deadline=timedelta(seconds=2))
@given(valid_queries(), st.integers(0, 2**64 - 1), st.integers(0, 0xFFFF),
       st.integers(0, 5))
def test_patch_of_a_stored_reply_serves_a_case_variant(
        data: bytes, mask: int, qid: int, answers: int) -> None:
    k = wire.fast_key(data)
    assume(k is not None)
    assert k is not None
    try:
        query = wire.parse_query(data)
    except wire.WireError:
        assume(False)
        raise
    reply = wire.reply_for(query, aa=True)
    for i in range(answers):  # owned by the question name: compressed to point at offset 12
        reply.add_answer(RR(query.msg.q.qname, QTYPE.A, rdata=A(f"10.0.0.{i}"), ttl=30))
    stored = wire.encode(reply, query.udp_size)
    # Exactly the queries whose name is compressed may not be stored: the reply spells the name
    # out, so splicing at the query's offsets would corrupt it (the server answers those through
    # the slow path every time).
    assert wire.patchable(stored, data) is not name_uses_pointer(data)
    if name_uses_pointer(data):
        return
    end = k[1]
    second = struct.pack("!H", qid) + data[2:12] + case_flip(data[12:end].lower(), mask) + \
        data[end:]
    out = dns.message.from_wire(wire.patch(stored, second, end))
    assert out.id == qid
    assert out.question[0].name.to_wire() == dns.message.from_wire(second).question[0].name.to_wire()
    assert len(out.answer[0] if out.answer else ()) == answers


@settings(max_examples=200, deadline=timedelta(seconds=5))
@given(valid_queries(), st.integers(0, 300), st.integers(0, 3),
       st.sampled_from([512, 1232, 4096, 65535]) | st.integers(12, 70000))
def test_encode_fits_parses_and_leaves_the_message_alone(
        data: bytes, n_answers: int, n_additional: int, max_size: int) -> None:
    try:
        query = wire.parse_query(data)
    except wire.WireError:
        assume(False)
        raise
    msg = wire.reply_for(query, aa=True)
    for i in range(n_answers):
        msg.add_answer(RR(query.msg.q.qname, QTYPE.A, rdata=A(f"10.1.{i // 250}.{i % 250}"),
                          ttl=30))
    for i in range(n_additional):
        msg.add_ar(RR(f"extra{i}.example.", QTYPE.A, rdata=A("10.9.9.9"), ttl=30))
    before = bytes(msg.pack())
    out = wire.encode(msg, max_size)
    assert bytes(msg.pack()) == before
    assert len(out) <= max_size
    parsed = dns.message.from_wire(out)
    if len(before) <= max_size:
        assert out == before
    else:
        kept = sum(len(rrset) for rrset in parsed.answer)
        assert kept <= n_answers
        if kept < n_answers:
            assert parsed.flags & dns.flags.TC
        if parsed.question:  # only a pathological max_size loses the question (and OPT)
            assert parsed.edns == msg_edns(msg)


def msg_edns(msg: DNSRecord) -> int:
    return 0 if any(r.rtype == QTYPE.OPT for r in msg.ar) else -1


# -- regressions: what the fuzzing found -----------------------------------------------------------


def _header(flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 0xBEEF, flags, qd, an, ns, ar)


KUBIA_Q = b"\x05kubia\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01"
OPT = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)


def _error_reply(data: bytes) -> dns.message.Message:
    with_reply = None
    try:
        wire.parse_query(data)
    except wire.WireError as err:
        with_reply = err.reply
    assert with_reply is not None
    msg = check_reply(data, with_reply)
    assert msg is not None
    return msg


def test_formerr_does_not_echo_a_label_over_63_octets() -> None:
    # The question parses in dnslib (it reads 0x40 as a length), the rest does not: the FORMERR
    # used to carry the 64-octet label, which no strict client can read back.
    msg = _error_reply(_header(ar=1) + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01")
    assert msg.rcode() == dns.rcode.FORMERR and not msg.question


def test_name_over_255_octets_is_formerr_without_the_question() -> None:
    name = b"".join(b"\x3f" + bytes([c]) * 63 for c in b"abcd") + b"\x00"  # 257 octets
    msg = _error_reply(_header() + name + b"\x00\x01\x00\x01")
    assert msg.rcode() == dns.rcode.FORMERR and not msg.question


def test_notimp_does_not_invent_a_question_when_qdcount_is_zero() -> None:
    msg = _error_reply(_header(flags=0x2800, qd=0) + b"\x00\x00\x00\x00\x00")
    assert msg.rcode() == dns.rcode.NOTIMP and not msg.question


def test_error_reply_spells_out_a_compressed_question() -> None:
    # The name ends in a pointer to offset 4 (QDCOUNT's zero high byte, the root); copied as is
    # into a reply it would point at whatever the reply has there.
    question = KUBIA_Q[:-5] + b"\xc0\x04" + KUBIA_Q[-4:]
    msg = _error_reply(_header(flags=0x2000) + question)  # opcode NOTIFY -> NOTIMP
    assert msg.rcode() == dns.rcode.NOTIMP
    assert msg.question[0].name.to_text() == "kubia.default.svc.cluster.local."


def test_several_opt_records_echo_a_question_with_a_zero_byte_in_a_label() -> None:
    # The question used to be cut at the first zero byte after the header.
    question = b"\x03a\x00b\x05local\x00\x00\x01\x00\x01"
    msg = _error_reply(_header(ar=2) + question + OPT + OPT)
    assert msg.rcode() == dns.rcode.FORMERR
    assert msg.question[0].name.labels[0] == b"a\x00b"


def test_patchable_only_when_the_reply_repeats_the_question() -> None:
    plain = _header(ar=1) + KUBIA_Q + OPT
    reply = wire.encode(wire.reply_for(wire.parse_query(plain)), 1232)
    assert wire.patchable(reply, plain)
    compressed = _header(ar=1) + KUBIA_Q[:-5] + b"\xc0\x04" + KUBIA_Q[-4:] + OPT
    reply = wire.encode(wire.reply_for(wire.parse_query(compressed)), 1232)
    assert not wire.patchable(reply, compressed)
    assert not wire.patchable(reply[:12], plain)  # a header-only reply repeats nothing
