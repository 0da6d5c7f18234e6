"""nsid: add the server's identifier (RFC 5001) to replies for queries that ask for it
(CoreDNS's *nsid*).

A query asks by carrying an NSID option (code 3), normally empty, in its OPT record. The reply
then gets an NSID option with DATA: in the reply's OPT record if it has one (replacing an NSID
a later plugin or an upstream put there), otherwise in a new OPT record advertising kdns's
usual size. Queries without the option pass untouched. The option is part of the query's
bytes, so replies with and without the NSID are stored in the fast path under different keys.
"""

from __future__ import annotations

from dataclasses import replace

from dnslib import EDNS0, QTYPE, RR, DNSRecord, EDNSOption

from kdns.dns.wire import EDNS_ADVERTISED_SIZE
from kdns.plugins.answering import copy_reply
from kdns.plugins.base import Next, Request, Response, always_passes

NSID = 3


class NsidHandler:
    name = "nsid"

    def __init__(self, data: bytes) -> None:
        self.data = data

    # serve() acts only on a query carrying the NSID option; passes is asked only of queries
    # without EDNS options (Transparent).
    passes = always_passes

    def serve(self, req: Request, nxt: Next) -> Response:
        opt = next((r for r in req.msg.ar if r.rtype == QTYPE.OPT), None)
        if opt is None or not any(o.code == NSID for o in opt.rdata):
            return nxt(req)
        resp = nxt(req)
        variants = ([self._add(v, req.do) for v in resp.variants] if resp.variants
                    else resp.variants)
        return replace(resp, msg=self._add(resp.msg, req.do), variants=variants)

    def _add(self, msg: DNSRecord, do: bool) -> DNSRecord:
        out = copy_reply(msg)
        option = EDNSOption(NSID, self.data)
        for i, r in enumerate(out.ar):
            if r.rtype == QTYPE.OPT:
                kept = [o for o in r.rdata if o.code != NSID]
                out.ar[i] = RR(r.rname, QTYPE.OPT, r.rclass, r.ttl, [*kept, option])
                return out
        out.add_ar(EDNS0(udp_len=EDNS_ADVERTISED_SIZE, flags="do" if do else "", opts=[option]))
        return out
