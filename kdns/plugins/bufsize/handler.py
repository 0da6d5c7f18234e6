"""bufsize: clamp the EDNS UDP payload size of queries, so replies are sized to avoid IP
fragmentation (CoreDNS's *bufsize*; DNS Flag Day 2020's 1232 by default).

A query whose OPT record offers more than SIZE is rewritten to offer SIZE, before the rest of
the chain sees it (``forward`` passes the clamped size upstream, as CoreDNS does), and a UDP
reply is then cut to that size (TC set when it does not fit). The reply's OPT record
advertises the clamped size, as CoreDNS echoes the request's. Queries without EDNS are left
alone (512 bytes already). Replies depend only on the query bytes, so they may be stored.
"""

from __future__ import annotations

from dataclasses import replace

from dnslib import EDNS0, QTYPE, RR, DNSRecord

from kdns.plugins.answering import copy_reply
from kdns.plugins.base import Next, Request, Response

DEFAULT_SIZE = 1232
MIN_SIZE = 512
MAX_SIZE = 4096


class BufsizeHandler:
    name = "bufsize"

    def __init__(self, size: int) -> None:
        self.size = size

    def serve(self, req: Request, nxt: Next) -> Response:
        opt = next((r for r in req.msg.ar if r.rtype == QTYPE.OPT), None)
        if opt is None:
            return nxt(req)
        offered = int(opt.rclass)
        if offered > self.size:
            opt.rclass = self.size  # the parsed query is this request's own: safe to change
        if req.proto == "udp":
            req.max_size = min(req.max_size, self.size)
        advertised = max(min(offered, self.size), MIN_SIZE)
        resp = nxt(req)
        variants = resp.variants
        if variants:
            variants = [self._advertise(v, advertised, req.do) for v in variants]
        return replace(resp, msg=self._advertise(resp.msg, advertised, req.do),
                       variants=variants)

    @staticmethod
    def _advertise(msg: DNSRecord, size: int, do: bool) -> DNSRecord:
        out = copy_reply(msg)
        opts = [r for r in out.ar if r.rtype == QTYPE.OPT]
        if not opts:
            out.add_ar(EDNS0(udp_len=size, flags="do" if do else ""))
            return out
        out.ar = [RR(r.rname, QTYPE.OPT, size, r.ttl, r.rdata) if r.rtype == QTYPE.OPT else r
                  for r in out.ar]
        return out
