"""any: RFC 8482 §4.2, a query of type ANY gets one synthesized HINFO record instead of every
RRset of the name, so ANY cannot draw large replies (amplification). Other types pass on.

As CoreDNS's *any*: the record is ``NAME 8482 IN HINFO "ANY obsoleted" "See RFC 8482"``, the
header as ``SetReply`` makes it (no AA, no RA), and the reply depends on the question alone, so
it is stored in the fast path. The plugin runs after ``acl`` in the chain, so a refused or
dropped client gets no HINFO either.
"""

from __future__ import annotations

from dnslib import QTYPE, RR
from dnslib.dns import RD

from kdns.plugins.answering import set_reply
from kdns.plugins.base import GENERATION, Next, Request, Response

TTL = 8482
CPU = b"ANY obsoleted"
OS = b"See RFC 8482"
# HINFO rdata is two <character-string>s (RFC 1035 §3.3.2); dnslib has no HINFO class.
RDATA = bytes([len(CPU)]) + CPU + bytes([len(OS)]) + OS


class AnyHandler:
    name = "any"

    def passes(self, qname_lower: str, qtype: int, answers: int) -> bool:
        return bool(qtype != QTYPE.ANY)  # serve() answers ANY itself and hands the rest on

    def serve(self, req: Request, nxt: Next) -> Response:
        if req.qtype != QTYPE.ANY:
            return nxt(req)
        reply = set_reply(req)
        q = req.msg.questions[0]
        # The owner is the question's own name object: a label that is not a hostname (binary,
        # non-ASCII) must go back byte for byte, not through text and IDNA.
        reply.add_answer(RR(q.qname, QTYPE.HINFO, rdata=RD(RDATA), ttl=TTL))
        return Response(reply, self.name, fast=True, generation=GENERATION.value)
