"""chaos: answer ``CH TXT`` queries for the server's version, host name and authors.

As CoreDNS's *chaos*: only class CH, type TXT, and only the names ``version.bind``,
``version.server`` (the version), ``hostname.bind``, ``id.server`` (the host name) and
``authors.bind`` (one TXT per author, in a fresh random order each time); everything else goes
to the next plugin. TTL 0, no AA. Version and host name replies are stored in the fast path
(they depend on the question alone); the authors' are not, so each reply is shuffled anew.
"""

from __future__ import annotations

import random
import socket

from dnslib import CLASS, QTYPE, RR, TXT

from kdns.plugins.answering import set_reply
from kdns.plugins.base import GENERATION, Next, Request, Response
from kdns.plugins.chaos.config import ChaosConfig

VERSION_NAMES = frozenset({"version.bind.", "version.server."})
HOSTNAME_NAMES = frozenset({"hostname.bind.", "id.server."})
AUTHORS_NAME = "authors.bind."


def trim(s: str) -> str:
    """A TXT <character-string> holds 255 octets at most (RFC 1035 §3.3)."""
    data = s.encode()
    return data[:255].decode(errors="ignore") if len(data) > 255 else s


class ChaosHandler:
    name = "chaos"

    def __init__(self, cfg: ChaosConfig) -> None:
        self.cfg = cfg
        self._rng = random.Random()

    def serve(self, req: Request, nxt: Next) -> Response:
        if req.qclass != CLASS.CH or req.qtype != QTYPE.TXT:
            return nxt(req)
        name = req.qname_lower
        if name in VERSION_NAMES:
            texts, fast = [self.cfg.version], True
        elif name in HOSTNAME_NAMES:
            texts, fast = [trim(_hostname())], True
        elif name == AUTHORS_NAME:
            texts = list(self.cfg.authors)
            self._rng.shuffle(texts)
            fast = False
        else:
            return nxt(req)
        reply = set_reply(req)
        owner = req.msg.questions[0].qname
        for t in texts:
            reply.add_answer(RR(owner, QTYPE.TXT, CLASS.CH, 0, TXT(t.encode())))
        return Response(reply, self.name, fast=fast, generation=GENERATION.value)


def _hostname() -> str:
    try:
        return socket.gethostname() or "localhost"
    except OSError:
        return "localhost"
