"""The answering helpers the authoritative plugins (file, kubernetes) share: the reply built from
an :class:`Answer` and the out-of-zone CNAME chase through the rest of the chain (file asks for
the target's NXDOMAIN as the reply's rcode, kubernetes does not)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from dnslib import CNAME, NS, QTYPE, RCODE, RR, SOA, A, DNSRecord

from kdns.plugins.answering import Answer, answer_reply, chase
from kdns.plugins.base import Request, Response


def _req(qname: str, qtype: str = "A") -> Request:
    msg = DNSRecord.question(qname, qtype)
    msg.header.id = 4242
    msg.header.cd = 1
    return Request(msg, qname, qname.lower(), int(getattr(QTYPE, qtype)), 1,
                   ("127.0.0.1", 5353), "udp", "dns://:53", "example.org.", 512)


class Next:
    """A next plugin that records the questions it was asked and answers with ``answer``."""

    def __init__(self, answer: Callable[[Request], DNSRecord]) -> None:
        self.calls: list[tuple[str, int]] = []
        self.answer = answer

    def __call__(self, req: Request) -> Response:
        self.calls.append((req.qname, req.qtype))
        return Response(self.answer(req), "next")


def _address(req: Request) -> DNSRecord:
    reply = req.msg.reply()
    reply.add_answer(RR(req.qname, QTYPE.A, ttl=30, rdata=A("203.0.113.9")))
    return reply


def _nxdomain(req: Request) -> DNSRecord:
    reply = req.msg.reply()
    reply.header.rcode = RCODE.NXDOMAIN
    return reply


def _truncated(req: Request) -> DNSRecord:
    reply = _address(req)
    reply.header.tc = 1
    return reply


def _broken(req: Request) -> DNSRecord:
    raise RuntimeError("no upstream")


CNAME_RR = RR("www.example.org.", QTYPE.CNAME, ttl=60, rdata=CNAME("web.example.net."))
SOA_RR = RR("example.org.", QTYPE.SOA, ttl=60,
            rdata=SOA("ns.example.org.", "hostmaster.example.org.", (1, 2, 3, 4, 5)))


def _lines(rrs: list[RR]) -> list[str]:
    return [f"{rr.rname} {QTYPE[rr.rtype]} {rr.rdata}" for rr in rrs]


def test_the_reply_carries_the_answer_and_echoes_the_query() -> None:
    req = _req("www.Example.org.")
    ns = RR("example.org.", QTYPE.NS, ttl=60, rdata=NS("ns.example.org."))
    glue = RR("ns.example.org.", QTYPE.A, ttl=60, rdata=A("192.0.2.1"))
    reply = answer_reply(req, Answer(RCODE.NOERROR, (CNAME_RR,), (ns,), (glue,)))
    h = reply.header
    assert (h.id, h.qr, h.aa, h.rd, h.ra, h.cd, h.rcode) == (4242, 1, 1, 1, 1, 1, RCODE.NOERROR)
    assert str(reply.q.qname) == "www.Example.org."
    assert (reply.rr, reply.auth, reply.ar) == ([CNAME_RR], [ns], [glue])
    refused = answer_reply(req, Answer(RCODE.REFUSED, aa=False))
    assert (refused.header.aa, refused.header.rcode, refused.rr) == (0, RCODE.REFUSED, [])


def test_the_target_is_resolved_through_the_chain_for_the_asked_type() -> None:
    nxt = Next(_address)
    req = _req("www.example.org.", "A")
    ans = Answer(RCODE.NOERROR, (CNAME_RR,), (SOA_RR,), chase="web.example.net.")
    reply = answer_reply(req, ans)
    chase(req, "web.example.net.", reply, nxt, last_rcode=True)
    assert nxt.calls == [("web.example.net.", QTYPE.A)]
    assert _lines(reply.rr) == ["www.example.org. CNAME web.example.net.",
                                "web.example.net. A 203.0.113.9"]
    assert (reply.header.id, reply.header.rcode, reply.header.tc) == (4242, RCODE.NOERROR, 0)


@pytest.mark.parametrize(("last_rcode", "rcode"), [(True, RCODE.NXDOMAIN),
                                                   (False, RCODE.NOERROR)])
def test_an_nxdomain_target_sets_the_rcode_only_when_asked(last_rcode: bool, rcode: int) -> None:
    req = _req("www.example.org.")
    ans = Answer(RCODE.NOERROR, (CNAME_RR,), chase="web.example.net.")
    reply = answer_reply(req, ans)
    chase(req, "web.example.net.", reply, Next(_nxdomain), last_rcode=last_rcode)
    assert reply.header.rcode == rcode and reply.rr == [CNAME_RR]


def test_a_truncated_target_truncates_the_reply() -> None:
    req = _req("www.example.org.")
    ans = Answer(RCODE.NOERROR, (CNAME_RR,), chase="web.example.net.")
    reply = answer_reply(req, ans)
    chase(req, "web.example.net.", reply, Next(_truncated), last_rcode=False)
    assert reply.header.tc == 1 and len(reply.rr) == 2


def test_a_failing_chain_leaves_the_cname_alone() -> None:
    req = _req("www.example.org.")
    ans = Answer(RCODE.NOERROR, (CNAME_RR,), chase="web.example.net.")
    reply = answer_reply(req, ans)
    chase(req, "web.example.net.", reply, Next(_broken), last_rcode=True)
    assert (reply.header.rcode, reply.rr) == (RCODE.NOERROR, [CNAME_RR])
