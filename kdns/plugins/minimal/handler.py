"""minimal: drop the authority and additional sections from positive replies (CoreDNS's
*minimal*), to save bytes on the wire and work.

Which replies are "positive" follows CoreDNS's ``response.Typify``: NOERROR with records in the
answer, or NOERROR with neither a SOA nor an NS record in the authority section. Denials
(NXDOMAIN or NODATA with a SOA), delegations (NS without SOA), errors and zone transfers pass
unchanged. The server still adds an OPT record to the reply of an EDNS query (RFC 6891 §7).
The trimmed reply keeps the answering plugin's ``fast``: it is what gets stored.
"""

from __future__ import annotations

from dataclasses import replace

from dnslib import QTYPE, RCODE, DNSRecord

from kdns.plugins.answering import copy_reply
from kdns.plugins.base import Next, Request, Response


def positive(msg: DNSRecord) -> bool:
    """CoreDNS's ``response.Typify(...) == NoError`` for a reply to a plain query."""
    if msg.header.rcode != RCODE.NOERROR:
        return False
    if msg.rr:
        return True
    types = {r.rtype for r in msg.auth}
    return QTYPE.SOA not in types and QTYPE.NS not in types


def trim(msg: DNSRecord) -> DNSRecord:
    out = copy_reply(msg)
    out.auth = []
    out.ar = []
    return out


class MinimalHandler:
    name = "minimal"

    def serve(self, req: Request, nxt: Next) -> Response:
        resp = nxt(req)
        if req.qtype in (QTYPE.AXFR, QTYPE.IXFR) or not positive(resp.msg):
            return resp
        variants = [trim(v) for v in resp.variants] if resp.variants else resp.variants
        return replace(resp, msg=trim(resp.msg), variants=variants)
