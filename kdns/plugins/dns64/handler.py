"""dns64: synthesize AAAA records from A records for IPv6-only clients behind NAT64
(RFC 6147, as CoreDNS's *dns64*).

For an AAAA query of class IN (from an IPv6 client, unless ``allow_ipv4``), the rest of the
chain answers first. Unless that reply is NXDOMAIN (§5.1.2) or holds AAAA records (§5.1.1;
``translate_all`` skips this check), the same name is asked for A of the rest of the chain, as
CoreDNS re-enters its chain, and the reply becomes: every A record turned into an AAAA record
in PREFIX (RFC 6052 §2.2, TTL the smaller of the A record's and the first reply's SOA TTL, or
600 without a SOA, §5.1.7), every other answer record unchanged (§5.3.3), the authority and
additional sections of the A reply (§5.3.2), header as ``SetReply`` makes it.

A translated reply is never stored in the fast path: it is counted in
``coredns_dns64_requests_translated_total`` every time, and the cache keeps counting its own
hits for the A answers underneath. Replies passed through unchanged keep their ``fast``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

from dnslib import AAAA, CLASS, QTYPE, RCODE, RR, DNSHeader, DNSQuestion, DNSRecord

from kdns.plugins.answering import set_reply
from kdns.plugins.base import Next, Request, Response
from kdns.plugins.dns64.config import Dns64Config
from kdns.plugins.metrics import ProcessCounter
from kdns.plugins.setup_context import SetupContext

DEFAULT_SOA_TTL = 600


def to6(prefix: ipaddress.IPv6Network, v4: str) -> str:
    """RFC 6052 §2.2: the IPv4 address embedded in PREFIX, skipping bits 64-71 (u octet)."""
    p = prefix.network_address.packed
    a = ipaddress.IPv4Address(v4).packed
    n = prefix.prefixlen // 8
    out = bytearray(16)
    out[:n] = p[:n]
    j = 0
    i = n
    while j < 4:
        if i == 8:
            i += 1  # the u octet stays zero
        out[i] = a[j]
        i += 1
        j += 1
    return str(ipaddress.IPv6Address(bytes(out)))


def _family(client_ip: str) -> int:
    ip = ipaddress.ip_address(client_ip.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return 2
    return 1


class Dns64Handler:
    name = "dns64"

    def __init__(self, cfg: Dns64Config, translated: ProcessCounter | None = None) -> None:
        self.cfg = cfg
        self.translated = translated or ProcessCounter()

    def serve(self, req: Request, nxt: Next) -> Response:
        if (req.qtype != QTYPE.AAAA or req.qclass != CLASS.IN
                or (not self.cfg.allow_ipv4 and _family(req.client[0]) == 1)):
            return nxt(req)
        resp = nxt(req)
        if not self._should_translate(resp.msg):
            return resp
        a_reply = nxt(self._a_request(req)).msg
        self.translated.inc(req.server)
        return Response(self._synthesize(req, resp.msg, a_reply), self.name)

    def _should_translate(self, msg: DNSRecord) -> bool:
        if msg.header.rcode == RCODE.NXDOMAIN and any(r.rtype == QTYPE.SOA for r in msg.auth):
            return False  # CoreDNS's Typify NameError: NXDOMAIN with a SOA
        if self.cfg.translate_all:
            return True
        return not any(r.rtype == QTYPE.AAAA for r in msg.rr)

    @staticmethod
    def _a_request(req: Request) -> Request:
        h = req.msg.header
        q = req.msg.questions[0]
        msg = DNSRecord(DNSHeader(id=h.id, rd=h.rd), q=DNSQuestion(q.qname, QTYPE.A, CLASS.IN))
        msg.ar = list(req.msg.ar)  # the client's EDNS (and DO bit) go along
        return Request(msg=msg, qname=req.qname, qname_lower=req.qname_lower, qtype=QTYPE.A,
                       qclass=CLASS.IN, client=req.client, proto=req.proto, server=req.server,
                       zone=req.zone, max_size=65535, do=req.do, meta=dict(req.meta))

    def _synthesize(self, req: Request, aaaa_reply: DNSRecord, a_reply: DNSRecord) -> DNSRecord:
        out = set_reply(req)
        soa_ttl = DEFAULT_SOA_TTL
        for r in aaaa_reply.auth:
            if r.rtype == QTYPE.SOA:
                soa_ttl = r.ttl
        for r in a_reply.rr:
            if r.rtype != QTYPE.A:
                out.add_answer(r)
                continue
            out.add_answer(RR(r.rname, QTYPE.AAAA, r.rclass, min(soa_ttl, r.ttl),
                              AAAA(to6(self.cfg.prefix, str(r.rdata)))))
        out.auth = list(a_reply.auth)
        out.ar = [r for r in a_reply.ar if r.rtype != QTYPE.OPT]  # the server adds its own
        return out

    def metrics(self, ctx: SetupContext) -> Iterator[Any]:
        """coredns_dns64_requests_translated_total{server} (CoreDNS plugin/dns64/metrics.go)."""
        yield from self.translated.report(ctx, "coredns_dns64_requests_translated",
                                          "Counter of DNS requests translated by dns64.",
                                          ["server"])
