"""Wire helpers on top of dnslib: the question peek, ID and case patching, strict query
parsing, EDNS, and truncation to the client's size.

This module owns every decision about raw bytes, so the server never slices packets itself:

* :func:`fast_key` reads just enough of a datagram to key the fast path (no parsing);
* :func:`patch` turns a stored reply into the reply for a new query with the same key;
* :func:`parse_query` is the strict slow-path parser (FORMERR / NOTIMP / drop decisions);
* :func:`encode` packs a reply within the client's size, setting TC when RRs had to go;
* :func:`ttl_fields` and :func:`with_ttls` find and rewrite the TTLs of an encoded reply, so a
  stored cache hit counts down without being parsed again.

It imports nothing else from kdns.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from dnslib import (
    EDNS0,
    OPCODE,
    QTYPE,
    RCODE,
    RR,
    DNSBuffer,
    DNSError,
    DNSHeader,
    DNSQuestion,
    DNSRecord,
    EDNSOption,
)
from dnslib.bimap import BimapError
from dnslib.buffer import BufferError
from dnslib.label import DNSLabelError

UDP_DEFAULT_SIZE = 512
"""RFC 1035 §4.2.1: the largest UDP reply to a client that did not send EDNS."""
EDNS_ADVERTISED_SIZE = 1232
"""The buffer size kdns advertises: the DNS Flag Day 2020 value that avoids fragmentation."""
UDP_MAX_SIZE = 4096
"""The largest UDP reply kdns sends whatever a client claims (bounds amplification)."""
TCP_MAX_SIZE = 65535

_HEADER = struct.Struct("!HHHHHH")
_PARSE_ERRORS = (DNSError, BufferError, BimapError, DNSLabelError, UnicodeError, ValueError,
                 IndexError, struct.error)


def fast_key(data: bytes) -> tuple[bytes, int] | None:
    """Key a plain query for the fast path, or ``None`` when it needs the slow path.

    A plain query has QR=0, opcode QUERY, one question, no answer or authority records and at
    most one additional record (the OPT). The key is every byte after the ID, with the question
    name's label bytes lower-cased (DNS names compare case-insensitively, RFC 4343), so the
    flags (RD, CD), the question and the EDNS record all select the stored reply. Returns the key
    and the offset of the name's terminating zero byte, which :func:`patch` needs.
    """
    if len(data) < 17 or data[2] & 0xF8 or data[4:10] != b"\x00\x01\x00\x00\x00\x00":
        return None
    end = data.find(0, 12)
    if end < 0 or end + 5 > len(data):
        return None
    # Label length bytes are < 64 and pointer bytes >= 0xC0, so lower() only ever touches label
    # contents: two keys are equal exactly when the queries differ only in the name's case.
    return data[2:12] + data[12:end].lower() + data[end:], end


def patch(stored: bytes, query: bytes, end: int) -> bytes:
    """The stored reply with the new query's ID and the new query's spelling of the name.

    Owner names in the stored reply point at the question by compression, so copying the
    question bytes echoes the client's case everywhere it matters (0x20 clients check it).
    """
    return query[:2] + stored[2:12] + query[12:end] + stored[end:]


class Framed(bytes):
    """Several DNS messages, each with its two-byte TCP length prefix (RFC 1035 §4.2.2), to
    be written to a TCP connection as they are: a zone transfer's reply (RFC 5936 §2.2)."""

    __slots__ = ()


class WireError(Exception):
    """The query cannot be served; ``reply`` is what to send back (``None``: send nothing)."""

    def __init__(self, reason: str, reply: bytes | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


@dataclass(slots=True)
class Query:
    msg: DNSRecord
    qname: str
    """As sent, with the trailing dot."""
    qtype: int
    qclass: int
    edns: EDNS0 | None
    udp_size: int
    """Largest UDP reply the client accepts (512 without EDNS)."""
    do: bool


def _header_only(data: bytes, rcode: int, *, question: bytes = b"") -> bytes:
    """A reply built from the request's header alone: QR set, ID/opcode/RD echoed."""
    qid, flags = struct.unpack_from("!HH", data)
    flags = (flags & 0x7900) | 0x8000 | (rcode & 0xF)  # keep opcode and RD, set QR
    return _HEADER.pack(qid, flags, 1 if question else 0, 0, 0, 0) + question


def _question_bytes(data: bytes) -> bytes:
    """The first question of ``data``, re-encoded without compression, if the header declares
    one and it parses cleanly, else b"".

    Re-encoded, not copied: a compression pointer in the query's name may point at bytes the
    reply does not have. Labels over 63 octets or names over 255 (RFC 1035 §2.3.4) are not
    echoed either: a strict client could not read the reply back.
    """
    if data[4:6] == b"\x00\x00":  # QDCOUNT 0: there is no question to repeat
        return b""
    try:
        buf = DNSBuffer(data)
        buf.offset = 12
        question = DNSQuestion.parse(buf)
    except _PARSE_ERRORS:
        return b""
    name = b"".join(bytes([len(label)]) + label for label in question.qname.label) + b"\x00"
    if len(name) > 255 or any(len(label) > 63 for label in question.qname.label):
        return b""
    return name + struct.pack("!HH", int(question.qtype), int(question.qclass))


def patchable(reply: bytes, query: bytes) -> bool:
    """Whether :func:`patch` may serve ``reply`` to later queries with ``query``'s key.

    ``patch`` splices a new query's name into the stored reply at the query's offsets, so the
    reply must repeat the query's question byte for byte. A query whose name uses compression
    (legal, and parsed) gets a reply with the name spelled out: storing it would corrupt every
    later hit.
    """
    i = 12  # the reply's question is dnslib's encoding: plain labels, no pointer
    while i < len(reply) and reply[i]:
        i += reply[i] + 1
    i += 5
    return i <= len(reply) and reply[12:i] == query[12:i]


def parse_query(data: bytes) -> Query:
    """Strictly parse a query or raise :class:`WireError` with the reply to send.

    * no readable header, or QR=1 (a reply: never answer it, or two servers can ping-pong
      forever) -> drop;
    * opcode other than QUERY -> NOTIMP;
    * QDCOUNT != 1, an undecodable message, trailing bytes, or more than one OPT -> FORMERR.
    """
    if len(data) < 12:
        raise WireError("short header", None)
    if data[2] & 0x80:
        raise WireError("QR=1 (a response)", None)
    opcode = (data[2] >> 3) & 0xF
    if opcode != OPCODE.QUERY:
        raise WireError(f"opcode {opcode}", _header_only(data, RCODE.NOTIMP,
                                                          question=_question_bytes(data)))
    if data[4:6] != b"\x00\x01":
        raise WireError("qdcount != 1", _header_only(data, RCODE.FORMERR))
    buf = DNSBuffer(data)
    try:
        header = DNSHeader.parse(buf)
        question = DNSQuestion.parse(buf)
        rr = [_rr(buf) for _ in range(header.a)]
        auth = [_rr(buf) for _ in range(header.auth)]
        ar = [_rr(buf) for _ in range(header.ar)]
    except _PARSE_ERRORS as err:
        raise WireError(f"undecodable: {err}", _header_only(data, RCODE.FORMERR,
                                                             question=_question_bytes(data))) from None
    if any(len(label) > 63 for label in question.qname.label):
        # dnslib reads 0x40-0x7F length bytes as long labels; RFC 1035 §2.3.4 caps them at 63
        # (and RFC 6891 retired the extended label types those bytes once meant).
        raise WireError("label longer than 63 bytes", _header_only(data, RCODE.FORMERR))
    if sum(len(label) + 1 for label in question.qname.label) >= 255:
        # RFC 1035 §2.3.4: 255 octets at most, the root's zero byte included. A reply echoing
        # a longer name is one a strict client cannot read.
        raise WireError("name longer than 255 bytes", _header_only(data, RCODE.FORMERR))
    if buf.offset != len(data):
        raise WireError("trailing bytes", _header_only(data, RCODE.FORMERR,
                                                        question=_question_bytes(data)))
    opts = [r for r in ar if r.rtype == QTYPE.OPT]
    if len(opts) > 1:  # RFC 6891 §6.1.1
        raise WireError("several OPT records", _header_only(data, RCODE.FORMERR,
                                                             question=_question_bytes(data)))
    msg = DNSRecord(header, [question], rr, auth=auth, ar=ar)
    edns = opts[0] if opts else None
    udp_size = UDP_DEFAULT_SIZE
    do = False
    if edns is not None:
        # rclass carries the requestor's payload size; below 512 is treated as 512 (RFC 6891).
        udp_size = min(max(int(edns.rclass), UDP_DEFAULT_SIZE), UDP_MAX_SIZE)
        do = bool(int(edns.ttl) & 0x8000)
    qname = str(question.qname)
    if not qname.endswith("."):
        qname += "."
    return Query(msg, qname, int(question.qtype), int(question.qclass), edns, udp_size, do)


def _rr(buf: DNSBuffer) -> RR:
    start = buf.offset
    rname = buf.decode_name()
    rtype, rclass, ttl, rdlength = buf.unpack("!HHIH")
    if rtype != QTYPE.OPT:
        buf.offset = start
        return RR.parse(buf)
    # dnslib's own OPT parsing drops an option with no data (it wants more than 4 bytes
    # left), and an empty NSID option is exactly how a client asks for the NSID (RFC 5001
    # §2.1): read the options here.
    rdata = bytes(buf.get(rdlength))
    options: list[EDNSOption] = []
    off = 0
    while off < len(rdata):
        if off + 4 > len(rdata):
            raise DNSError("truncated EDNS option")
        code, length = struct.unpack_from("!HH", rdata, off)
        if off + 4 + length > len(rdata):
            raise DNSError("EDNS option runs past its record")
        options.append(EDNSOption(code, rdata[off + 4 : off + 4 + length]))
        off += 4 + length
    return RR(rname, rtype, rclass, ttl, options)


def edns_version(query: Query) -> int:
    return (int(query.edns.ttl) >> 16) & 0xFF if query.edns is not None else 0


def reply_for(query: Query, *, rcode: int = RCODE.NOERROR, aa: bool = False) -> DNSRecord:
    """An empty reply to ``query``: ID, opcode, RD and CD echoed, the question as sent, and an
    OPT record when the query had one (RFC 6891 §7: answer EDNS with EDNS)."""
    h = query.msg.header
    header = DNSHeader(id=h.id, qr=1, opcode=h.opcode, aa=int(aa), rd=h.rd, ra=1, rcode=rcode)
    header.cd = h.cd
    reply = DNSRecord(header, q=query.msg.questions[0])
    if query.edns is not None:
        reply.add_ar(EDNS0(udp_len=EDNS_ADVERTISED_SIZE, flags="do" if query.do else ""))
    return reply


def _pack(msg: DNSRecord) -> bytes:
    return bytes(msg.pack())


def encode(msg: DNSRecord, max_size: int) -> bytes:
    """Pack ``msg`` into at most ``max_size`` bytes; ``msg`` itself is left as it was.

    When it does not fit, Additional records go first (their loss needs no TC, RFC 2181 §9),
    then Authority and Answer records from the end, and TC is set so the client retries over
    TCP. The OPT record always stays. The number of answer records that fit is found by
    bisection, so a 10,000-endpoint answer costs a dozen encodes, not thousands.
    """
    data = _pack(msg)
    if len(data) <= max_size:
        return data
    saved = (msg.questions, msg.rr, msg.auth, msg.ar, msg.header.tc)
    try:
        return _truncate(msg, max_size)
    finally:
        msg.questions, msg.rr, msg.auth, msg.ar, msg.header.tc = saved


def _truncate(msg: DNSRecord, max_size: int) -> bytes:
    opt = [r for r in msg.ar if r.rtype == QTYPE.OPT]
    rr, auth = list(msg.rr), list(msg.auth)
    msg.ar = list(opt)
    data = _pack(msg)
    if len(data) <= max_size:
        return data
    msg.header.tc = 1
    msg.auth = []
    lo, hi = 0, len(rr)
    while lo < hi:  # largest k with rr[:k] fitting
        mid = (lo + hi + 1) // 2
        msg.rr = rr[:mid]
        if len(_pack(msg)) <= max_size:
            lo = mid
        else:
            hi = mid - 1
    msg.rr = rr[:lo]
    if lo == len(rr) and auth:
        msg.auth = auth
        if len(_pack(msg)) > max_size:
            msg.auth = []
    data = _pack(msg)
    if len(data) > max_size:
        # Even the bare question does not fit (a pathological max_size): header only.
        msg.questions = []
        msg.ar = []
        data = _pack(msg)
    return data


def rcode_of(data: bytes) -> int:
    return data[3] & 0xF if len(data) >= 4 else RCODE.SERVFAIL


def qtype_name(qtype: int) -> str:
    try:
        return str(QTYPE[qtype])
    except Exception:
        return f"TYPE{qtype}"


_PLAIN_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789_-"


class PlainQuestion(NamedTuple):
    """What the cold path needs of a plain query (:func:`peek_plain`)."""

    key: bytes
    """The fast-path key, as :func:`fast_key` makes it."""
    end: int
    """Offset of the name's terminating zero byte."""
    qname: str
    """Lower case, trailing dot."""
    qtype: int
    edns: bool
    do: bool


_SUFFIXES: dict[bytes, str] = {}
"""Wire name (lower case) after a plain name's first label -> that part dotted, for the names
:func:`peek_plain` read in full lately (``<ns>.svc.cluster.local``, ``svc.cluster.local``...).
Questions mostly differ in their first label only, so one dict lookup replaces the walk over
the others. Bounded: emptied when full."""
_SUFFIXES_MAX = 4096

_new_question = tuple.__new__
"""Builds a PlainQuestion without the Python-level ``__new__`` NamedTuple generates."""


def peek_plain(data: bytes, keyed: tuple[bytes, int] | None = None) -> PlainQuestion | None:
    """The question of a query :func:`fast_key` accepts whose name is plain letters, digits,
    ``-`` and ``_``, class IN, followed by nothing or by one bare OPT (version 0, no options);
    else None. ``keyed``: what ``fast_key(data)`` returned, when the caller has it (the fast
    path's miss), so the key is not made twice.

    Such a query parses the same with or without dnslib, so its reply can be written without
    it (the server's cold path); anything else goes through :func:`parse_query`. One pass over
    the bytes: the cold path pays for its question once.
    """
    if keyed is None:
        if len(data) < 17 or data[2] & 0xF8 or data[4:10] != b"\x00\x01\x00\x00\x00\x00":
            return None
        end = data.find(0, 12)
        key = b""
    else:
        key, end = keyed
    if end <= 12 or end - 12 >= 254 or data[end + 3 : end + 5] != b"\x00\x01":
        return None
    rest = len(data) - end - 5
    arcount = data[10:12]
    if arcount == b"\x00\x00":
        if rest:
            return None
        edns = do = False
    elif arcount == b"\x00\x01":
        # root owner, type OPT, any size; extended rcode and version 0; no options
        o = end + 5
        if rest != 11 or data[o : o + 3] != b"\x00\x00\x29" or data[o + 5 : o + 7] != b"\x00\x00" \
                or data[o + 9 : o + 11] != b"\x00\x00":
            return None
        edns, do = True, bool(data[o + 7] & 0x80)
    else:
        return None
    # Length bytes are < 64, so lower() only touches label contents (as in fast_key).
    wire_name = key[10 : end - 2] if key else data[12:end].lower()
    size = wire_name[0]
    first = wire_name[1 : size + 1]
    # A known suffix was checked when it was remembered; the first label is plain when
    # nothing is left of it without its plain bytes (a length byte past the end leaves no
    # suffix, and b"" is never remembered).
    tail = _SUFFIXES.get(wire_name[size + 1 :])
    if tail is not None and size < 64 and not first.translate(None, _PLAIN_BYTES):
        qname = first.decode("ascii") + "." + tail
    else:
        walked = _walk(wire_name)
        if walked is None:
            return None
        qname = walked
        if size + 1 < len(wire_name):
            if len(_SUFFIXES) >= _SUFFIXES_MAX:
                _SUFFIXES.clear()
            _SUFFIXES[wire_name[size + 1 :]] = qname[size + 1 :]
    return _new_question(PlainQuestion, (key or data[2:12] + wire_name + data[end:], end, qname,
                                         data[end + 1] << 8 | data[end + 2], edns, do))


def _walk(wire_name: bytes) -> str | None:
    """``wire_name`` (lower case, no terminating zero) dotted with a trailing dot, or None
    unless every label is 1-63 plain bytes."""
    dotted = bytearray(wire_name)  # each length byte becomes the dot before its label
    i, n, labels = 0, len(wire_name), 0
    while i < n:
        size = wire_name[i]
        if not 0 < size < 64:
            return None
        dotted[i] = 0x2E
        i += size + 1
        labels += 1
    # Without its letters, digits, "-" and "_", a plain name is one dot per label.
    if i != n or len(dotted.translate(None, _PLAIN_BYTES)) != labels:
        return None
    return dotted[1:].decode("ascii") + "."


def cold_reply(data: bytes, end: int, rcode: int, answers: int, authority: int,
               records: bytes, edns: bool, do: bool) -> bytes:
    """An authoritative reply to a :func:`peek_plain` query: its ID, RD and CD echoed, RA set,
    the question as sent, ``records`` (Answer then Authority), and an OPT when it had one
    (as :func:`reply_for` writes them)."""
    q_end = end + 5
    opt = b""
    if edns:
        opt = b"\x00\x00\x29" + struct.pack("!H", EDNS_ADVERTISED_SIZE) + b"\x00\x00" \
            + (b"\x80\x00" if do else b"\x00\x00") + b"\x00\x00"
    return b"".join((
        data[:2], bytes((0x84 | (data[2] & 0x01), 0x80 | (data[3] & 0x10) | rcode)),
        struct.pack("!HHHH", 1, answers, authority, 1 if edns else 0),
        data[12:q_end], records, opt))


def spells_name(reply: bytes, end: int) -> bool:
    """Whether ``reply`` may spell (part of) its question's name out after the question
    instead of pointing at it: its last label appears there in any case (e.g. an SRV target,
    which RFC 2782 forbids compressing). Such a reply only fits queries spelled as this one,
    so it must not be patched for another spelling. ``end`` is the name's zero byte."""
    i, last = 12, 12
    while i < end:
        last = i
        i += reply[i] + 1
    return reply[last:end + 1].lower() in reply[end + 5 :].lower()


def _skip_name(reply: bytes, i: int) -> int:
    """The offset just after the (possibly compressed) name starting at ``i``."""
    while True:
        n = reply[i]
        if n == 0:
            return i + 1
        if n >= 0xC0:
            return i + 2  # a pointer ends the name (RFC 1035 §4.1.4)
        i += n + 1


def ttl_fields(reply: bytes) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The offsets of the TTL fields of every record of ``reply`` (OPT excluded: its "TTL"
    holds the extended rcode and flags, RFC 6891 §6.1.3) and the TTL each holds.

    Raises ValueError when the message does not hold the records its header counts."""
    try:
        qd, an, ns, ar = struct.unpack_from("!HHHH", reply, 4)
        i = 12
        for _ in range(qd):
            i = _skip_name(reply, i) + 4
        offsets: list[int] = []
        ttls: list[int] = []
        for _ in range(an + ns + ar):
            i = _skip_name(reply, i)
            rtype, _cls, ttl, rdlength = struct.unpack_from("!HHIH", reply, i)
            if rtype != QTYPE.OPT:
                offsets.append(i + 4)
                ttls.append(ttl)
            i += 10 + rdlength
    except (IndexError, struct.error) as err:
        raise ValueError(f"malformed reply: {err}") from None
    if i > len(reply):
        raise ValueError("malformed reply: a record runs past the end")
    return tuple(offsets), tuple(ttls)


def with_ttls(reply: bytes, offsets: tuple[int, ...], ttls: tuple[int, ...], elapsed: int) -> bytes:
    """``reply`` with the TTL at each of ``offsets`` set to max(0, its ``ttls`` entry -
    ``elapsed``): a stored reply as it reads ``elapsed`` seconds later (RFC 1035 §6.2)."""
    out = bytearray(reply)
    for at, ttl in zip(offsets, ttls, strict=True):
        struct.pack_into("!I", out, at, ttl - elapsed if ttl > elapsed else 0)
    return bytes(out)
