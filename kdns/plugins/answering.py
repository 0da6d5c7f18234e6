"""Helpers for plugins that write or change replies: the authoritative answer they compute
(kubernetes, file), the reply skeletons (authoritative; plain, as miekg/dns's SetReply), a
reply copy safe to change, and chasing an out-of-zone CNAME target through the rest of the
chain."""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from dnslib import RCODE, RR, DNSHeader, DNSQuestion, DNSRecord

from kdns.plugins.base import Next, Request

log = logging.getLogger("kdns.server")

MAX_CHASE = 8
"""In-zone CNAME hops followed before giving up (loops)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What an authoritative plugin's pure answer function says for one question."""

    rcode: int
    answer: tuple[RR, ...] = ()
    authority: tuple[RR, ...] = ()
    additional: tuple[RR, ...] = ()
    name_error: bool = False
    """The query name itself does not exist (NXDOMAIN): what ``fallthrough`` acts on."""
    aa: bool = True
    chase: str | None = None
    """A CNAME target outside the plugin's zones, for the handler to resolve through the rest
    of the chain (stub resolvers such as glibc's do not chase a CNAME themselves)."""
    deps: tuple[Hashable, ...] = ()
    """What the answer was read from (``Response.deps``)."""


def answer_reply(req: Request, ans: Answer) -> DNSRecord:
    """The reply to ``req`` carrying ``ans``."""
    return authoritative_reply(req, ans.rcode, ans.aa, ans.answer, ans.authority,
                               ans.additional)


def authoritative_reply(req: Request, rcode: int, aa: bool, answer: Iterable[RR],
                        authority: Iterable[RR], additional: Iterable[RR]) -> DNSRecord:
    """A reply to ``req`` (ID, opcode, RD and CD echoed, the question as sent)."""
    h = req.msg.header
    header = DNSHeader(id=h.id, qr=1, opcode=h.opcode, aa=int(aa), rd=h.rd, ra=1, rcode=rcode)
    header.cd = h.cd
    reply = DNSRecord(header, q=req.msg.questions[0])
    reply.rr.extend(answer)
    reply.auth.extend(authority)
    reply.ar.extend(additional)
    return reply


def chase(req: Request, target: str, reply: DNSRecord, nxt: Next, *,
          last_rcode: bool) -> None:
    """Resolve ``target`` (a CNAME's) through the rest of the chain and append its records:
    stub resolvers such as glibc's do not chase a CNAME themselves. A failure leaves the
    CNAME alone, which is still a correct answer. With ``last_rcode``, an NXDOMAIN for the
    target becomes the reply's rcode (RFC 6604: the rcode of the last name in the chain)."""
    sub = Request(
        msg=DNSRecord(DNSHeader(id=req.msg.header.id, rd=1),
                      q=DNSQuestion(target, req.qtype, req.qclass)),
        qname=target, qname_lower=target.lower(), qtype=req.qtype, qclass=req.qclass,
        client=req.client, proto=req.proto, server=req.server, zone=req.zone,
        max_size=65535, do=req.do,
    )
    try:
        got = nxt(sub).msg
    except Exception as err:
        log.debug("resolving CNAME target %s failed: %s", target, err)
        return
    reply.rr.extend(got.rr)
    if last_rcode and got.header.rcode == RCODE.NXDOMAIN:
        reply.header.rcode = RCODE.NXDOMAIN
    if got.header.tc:
        reply.header.tc = 1


def set_reply(req: Request, *, aa: bool = False, rcode: int = RCODE.NOERROR) -> DNSRecord:
    """An empty reply to ``req`` shaped as miekg/dns's ``SetReply``: ID, opcode, RD and CD
    echoed, the question as sent, QR set, no RA (the plugins that use it answer for
    themselves, not by recursion)."""
    h = req.msg.header
    header = DNSHeader(id=h.id, qr=1, opcode=h.opcode, aa=int(aa), rd=h.rd, rcode=rcode)
    header.cd = h.cd
    return DNSRecord(header, q=req.msg.questions[0])


def copy_reply(msg: DNSRecord) -> DNSRecord:
    """A copy of ``msg`` that a plugin may change (flags, sections) without touching the
    original, which another plugin may keep and hand out again (the cache, stored answers).
    The records themselves are shared: replace one, never modify it in place."""
    return DNSRecord(copy.copy(msg.header), list(msg.questions), list(msg.rr),
                     auth=list(msg.auth), ar=list(msg.ar))
