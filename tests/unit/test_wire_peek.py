"""peek_plain: which questions the cold path may answer without dnslib, and what it reads.

The function reads the name in one pass (length bytes become dots, then one translate), or
reads only the first label when the rest is a suffix it read in full lately; these tests hold
both readings to a plain label-by-label reading of RFC 1035 names, over hand-picked edges
(length bytes that are themselves "plain" characters, 63/64-byte labels, empty labels, unplain
bytes) and a seeded random sample.
"""

from __future__ import annotations

import random
import struct

import dns.message
import pytest

from kdns.dns import wire
from kdns.dns.wire import peek_plain

PLAIN = b"abcdefghijklmnopqrstuvwxyz0123456789_-"


def reference(wire_name: bytes) -> str | None:
    """Label by label: every label 1..63 bytes of letters, digits, '-' or '_' (any case)."""
    labels, i = [], 0
    while i < len(wire_name):
        size = wire_name[i]
        if not 0 < size < 64 or i + 1 + size > len(wire_name):
            return None
        label = wire_name[i + 1 : i + 1 + size].lower()
        if any(c not in PLAIN for c in label):
            return None
        labels.append(label.decode())
        i += 1 + size
    return ".".join(labels) + "." if labels else None


def query(wire_name: bytes, qtype: int = 1, qclass: int = 1, opt: bytes = b"") -> bytes:
    header = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 1 if opt else 0)
    return header + wire_name + b"\x00" + struct.pack("!HH", qtype, qclass) + opt


def encode(*labels: bytes) -> bytes:
    return b"".join(bytes((len(x),)) + x for x in labels)


EDGES = [
    encode(b"nginx", b"default", b"svc", b"cluster", b"local"),
    encode(b"NgInX", b"Default", b"SVC"),
    encode(b"a" * 63, b"b"),
    encode(b"a" * 45, b"c"),  # length byte 45 is "-"
    encode(b"a" * 48, b"c"),  # length byte 48 is "0"
    encode(b"x" * 57),  # "9"
    encode(b"_http", b"_tcp", b"svc"),
    encode(b"a.b", b"c"),  # a dot inside a label
    encode(b"a b"),
    encode(b"l\xdf\x9cal"),
    encode("bücher".encode()),
    b"\x40" + b"a" * 64,  # a 64-byte label
    b"\x03ab",  # length runs past the name
    b"\x01a\x05ab",
    b"\x01a\x01",
    b"\x02a-\x01_",
    b"-" * 10,
    b"\x2d" + b"a" * 45,
]


@pytest.mark.parametrize("wire_name", EDGES, ids=range(len(EDGES)))
def test_edges_read_as_the_label_by_label_reading(wire_name: bytes) -> None:
    q = peek_plain(query(wire_name))
    want = reference(wire_name)
    assert (q.qname if q else None) == want
    if q is not None:
        assert q.end == 12 + len(wire_name) and q.qtype == 1 and not q.edns


def test_random_names_read_as_the_label_by_label_reading() -> None:
    rng = random.Random(20261204)
    alphabet = PLAIN + b"ABCZ.\x00\x01\x2d\x30\x39\xc0\xff "
    agree = plain = 0
    for _ in range(20000):
        if rng.random() < 0.5:
            labels = [bytes(rng.choice(PLAIN) for _ in range(rng.choice((1, 2, 5, 45, 48, 63))))
                      for _ in range(rng.randint(1, 4))]
            name = bytearray(encode(*labels))
            if rng.random() < 0.5:  # one random byte changed: a length or a character
                name[rng.randrange(len(name))] = rng.choice(alphabet)
            wire_name = bytes(name)
        else:
            wire_name = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 70)))
        if 0 in wire_name or len(wire_name) >= 254:
            continue
        data = query(wire_name)
        q = peek_plain(data)
        assert (q.qname if q else None) == reference(wire_name), wire_name
        keyed = wire.fast_key(data)  # the fast path's miss hands its key on: same reading
        assert keyed is not None and peek_plain(data, keyed) == q, wire_name
        agree += 1
        plain += q is not None
    assert agree > 15000 and plain > 3000  # both outcomes were exercised


def test_what_is_read_matches_dnspython() -> None:
    msg = dns.message.make_query("Web-1.Prod.svc.cluster.local.", "AAAA", use_edns=0,
                                 want_dnssec=True)
    q = peek_plain(msg.to_wire())
    assert q is not None and peek_plain(msg.to_wire(), wire.fast_key(msg.to_wire())) == q
    assert (q.qname, q.qtype, q.edns, q.do) == ("web-1.prod.svc.cluster.local.", 28, True, True)
    assert q.key[10:].startswith(b"\x05web-1\x04prod\x03svc")


@pytest.mark.parametrize("qclass, opt", [(3, b""), (1, b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00"
                                                  b"\x00\x04\x00\x0a\x00\x00")])
def test_other_classes_and_edns_options_take_the_general_path(qclass: int, opt: bytes) -> None:
    assert peek_plain(query(encode(b"a", b"svc"), qclass=qclass, opt=opt)) is None


SUFFIXES = [encode(b"default", b"svc", b"cluster", b"local"), encode(b"svc"), encode(b"b"),
            encode(b"a" * 45, b"c")]
FIRSTS = [b"\x05nginx", b"\x05NgInX", b"\x3f" + b"a" * 63, b"\x40" + b"a" * 64, b"\x03a.b",
          b"\x03a b", b"\x01\xdf", b"\x2d" + b"a" * 45, b"\x30" + b"a" * 48, b"\x05ab",
          b"\x02ab\x01", b"\x01-", b"\x01_", b"\x03abc"]


def test_names_below_a_remembered_suffix_read_as_the_label_by_label_reading() -> None:
    wire._SUFFIXES.clear()
    for suffix in SUFFIXES:  # read once in full: remembered
        assert peek_plain(query(b"\x01x" + suffix)) is not None
        assert suffix in wire._SUFFIXES
    rng = random.Random(5)
    for first in FIRSTS + [bytes([rng.randrange(1, 70)]) + bytes(
            rng.choice(PLAIN + b"AZ.\xc0 ") for _ in range(rng.randrange(1, 70)))
            for _ in range(3000)]:
        for suffix in SUFFIXES:
            wire_name = first + suffix
            if 0 in wire_name or len(wire_name) >= 254:
                continue
            data = query(wire_name)
            q = peek_plain(data)
            assert (q.qname if q else None) == reference(wire_name), wire_name
            keyed = wire.fast_key(data)
            assert keyed is not None and peek_plain(data, keyed) == q, wire_name
            if q is not None:
                assert q.key[10:-5] == wire_name.lower() and q.end == 12 + len(wire_name)


def test_the_remembered_suffixes_are_bounded() -> None:
    wire._SUFFIXES.clear()
    for i in range(wire._SUFFIXES_MAX * 2 + 5):
        assert peek_plain(query(encode(b"x", f"n{i}".encode(), b"svc"))) is not None
    assert 0 < len(wire._SUFFIXES) <= wire._SUFFIXES_MAX
