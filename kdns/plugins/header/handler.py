"""header: set or clear the AA, RA and RD flags of queries (before the rest of the chain sees
them) and of replies (CoreDNS's *header*). Rules apply in order, the last one winning.

A reply rule changes a copy of the reply the next plugins wrote; the changed reply keeps their
``fast``, so the fast path stores and replays it with the flags as the rules left them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dnslib import DNSHeader, DNSRecord

from kdns.plugins.answering import copy_reply
from kdns.plugins.base import Next, Request, Response

FLAGS = ("aa", "ra", "rd")


@dataclass(frozen=True, slots=True)
class Rule:
    flag: str
    state: bool


def apply(header: DNSHeader, rules: tuple[Rule, ...]) -> None:
    for r in rules:
        setattr(header, r.flag, int(r.state))


class HeaderHandler:
    name = "header"

    def __init__(self, query: tuple[Rule, ...], response: tuple[Rule, ...]) -> None:
        self.query = query
        self.response = response

    def serve(self, req: Request, nxt: Next) -> Response:
        if self.query:
            apply(req.msg.header, self.query)  # the parsed query is this request's own
        resp = nxt(req)
        if not self.response:
            return resp
        variants = ([self._apply(v) for v in resp.variants] if resp.variants
                    else resp.variants)
        return replace(resp, msg=self._apply(resp.msg), variants=variants)

    def _apply(self, msg: DNSRecord) -> DNSRecord:
        out = copy_reply(msg)
        apply(out.header, self.response)
        return out
