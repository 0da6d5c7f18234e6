"""whoami: tell the client its own address, port and transport (CoreDNS's *whoami*).

Every query that reaches it gets an empty answer section and, in the additional section, an A
(IPv4 client) or AAAA (IPv6 client) record with the client's address, owned by the query name,
and an SRV record ``_<proto>.<qname>`` whose port is the client's source port and target
``.``. TTL 0, class of the question, AA set. The reply depends on the client, so it is never
stored in the fast path.
"""

from __future__ import annotations

import ipaddress

from dnslib import AAAA, QTYPE, RR, SRV, A

from kdns.plugins.answering import set_reply
from kdns.plugins.base import Next, Request, Response


class WhoamiHandler:
    name = "whoami"

    def serve(self, req: Request, nxt: Next) -> Response:
        reply = set_reply(req, aa=True)
        q = req.msg.questions[0]
        ip = ipaddress.ip_address(req.client[0].split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # an IPv4 client on a dual-stack socket is an IPv4 client
        if isinstance(ip, ipaddress.IPv4Address):
            reply.add_ar(RR(q.qname, QTYPE.A, req.qclass, 0, A(str(ip))))
        else:
            reply.add_ar(RR(q.qname, QTYPE.AAAA, req.qclass, 0, AAAA(str(ip))))
        srv_owner = f"_{req.proto}." + ("" if req.qname == "." else req.qname)
        reply.add_ar(RR(srv_owner, QTYPE.SRV, req.qclass, 0, SRV(0, 0, req.client[1], ".")))
        return Response(reply, self.name)  # fast=False: it depends on who asks
