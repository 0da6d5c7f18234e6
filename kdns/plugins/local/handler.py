"""local: answer the names that must never leave the host (RFC 6761 §6.3, RFC 6303) locally,
as CoreDNS's *local* does, so they never reach an upstream.

* ``localhost.`` and the reverse zones ``0.in-addr.arpa.``, ``127.in-addr.arpa.``,
  ``255.in-addr.arpa.``: at the apex, SOA and NS (``localhost.``), A 127.0.0.1 and AAAA ::1 for
  ``localhost.``, NODATA otherwise; ``1.0.0.127.in-addr.arpa.`` PTR ``localhost.``; any other
  name inside them: NXDOMAIN with the zone's SOA.
* Any name below ``localhost.`` (RFC 6761 §6.3), and with ``localhost_prefix on`` (the default)
  any name starting ``localhost.`` such as ``localhost.cluster.local.`` (what a search path makes
  of ``localhost``): A 127.0.0.1, AAAA ::1, NODATA for other types. Counted in
  ``coredns_local_localhost_requests_total``; these replies are not stored in the fast path,
  so every one is counted.

Every record has TTL 604800; replies carry no AA flag (CoreDNS's ``SetReply`` only).
Everything else goes to the next plugin.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dnslib import AAAA, NS, PTR, QTYPE, RR, SOA, A

from kdns.plugins.answering import set_reply
from kdns.plugins.base import GENERATION, Next, Request, Response
from kdns.plugins.metrics import ProcessCounter
from kdns.plugins.setup_context import SetupContext

TTL = 604800
ZONES = ("localhost.", "0.in-addr.arpa.", "127.in-addr.arpa.", "255.in-addr.arpa.")
LOCALHOST = "localhost."
LOOPBACK_PTR = "1.0.0.127.in-addr.arpa."


def _soa(origin: Any) -> RR:
    return RR(origin, QTYPE.SOA, ttl=TTL,
              rdata=SOA("localhost.", "root.localhost.", (1, 0, 0, 0, TTL)))


class LocalHandler:
    name = "local"

    def __init__(self, *, localhost_prefix: bool = True,
                 counter: ProcessCounter | None = None) -> None:
        self.localhost_prefix = localhost_prefix
        self.counter = counter or ProcessCounter()

    def serve(self, req: Request, nxt: Next) -> Response:
        name = req.qname_lower
        n = len(LOCALHOST)
        if len(name) > n and (name.endswith(".localhost.")
                              or (self.localhost_prefix and name.startswith(LOCALHOST))):
            self.counter.inc()
            return Response(self._loopback(req), self.name)
        zone = next((z for z in ZONES if name == z or name.endswith("." + z)), None)
        if zone is None:
            return nxt(req)
        owner = req.msg.questions[0].qname
        reply = set_reply(req)
        # the zone as the client spelled it: the question's last labels
        zone_owner = req.qname[len(req.qname) - len(zone):]
        if name == zone:
            if req.qtype == QTYPE.A and name == LOCALHOST:
                reply.add_answer(RR(owner, QTYPE.A, ttl=TTL, rdata=A("127.0.0.1")))
            elif req.qtype == QTYPE.AAAA and name == LOCALHOST:
                reply.add_answer(RR(owner, QTYPE.AAAA, ttl=TTL, rdata=AAAA("::1")))
            elif req.qtype == QTYPE.SOA:
                reply.add_answer(_soa(owner))
            elif req.qtype == QTYPE.NS:
                reply.add_answer(RR(owner, QTYPE.NS, ttl=TTL, rdata=NS("localhost.")))
            else:
                reply.add_auth(_soa(owner))
        elif name == LOOPBACK_PTR:
            if req.qtype == QTYPE.PTR:
                reply.add_answer(RR(owner, QTYPE.PTR, ttl=TTL, rdata=PTR("localhost.")))
            else:
                reply.add_auth(_soa(zone_owner))
        else:
            reply.add_auth(_soa(zone_owner))
            reply.header.rcode = 3  # NXDOMAIN
        return Response(reply, self.name, fast=True, generation=GENERATION.value)

    @staticmethod
    def _loopback(req: Request) -> Any:
        reply = set_reply(req)
        owner = req.msg.questions[0].qname
        if req.qtype == QTYPE.A:
            reply.add_answer(RR(owner, QTYPE.A, ttl=TTL, rdata=A("127.0.0.1")))
        elif req.qtype == QTYPE.AAAA:
            reply.add_answer(RR(owner, QTYPE.AAAA, ttl=TTL, rdata=AAAA("::1")))
        else:
            reply.add_auth(_soa(owner))
        return reply

    def metrics(self, ctx: SetupContext) -> Iterator[Any]:
        """coredns_local_localhost_requests_total (CoreDNS plugin/local/metrics.go)."""
        yield from self.counter.report(ctx, "coredns_local_localhost_requests",
                                       "Counter of special localhost subdomain requests.")
