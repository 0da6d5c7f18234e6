"""acl: allow, block, filter or drop queries by source address and type (CoreDNS ``acl``).

This module owns rule evaluation and the plain counters a metrics collector reads. A block's
``acl`` directives become :class:`Rule` s, evaluated in Corefile order; within a rule its
policies are tried in order and the first one matching the query's type and the client's
address decides:

* ``allow`` -> the query goes on down the chain (no further rule is consulted);
* ``block`` -> REFUSED;
* ``filter`` -> NOERROR with an empty answer;
* ``drop`` -> no reply at all: the handler sets ``req.meta["drop"]`` and the dispatcher sends
  nothing (over TCP it closes the connection, as for any message it will not answer).

A rule only looks at names under its zones. A query no policy matched is allowed (CoreDNS's
default). An unparseable source address is blocked, as CoreDNS does.

Nothing acl touches may enter the fast path: the server's precomputed replies are keyed by the
query bytes alone, so a reply stored for an allowed client would be served to a blocked one.
The server therefore turns the fast path off for every zone of a block that uses ``acl``
(``kdns.server.app``), and this handler also clears ``Response.fast`` on what it answers or lets
through.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dnslib import RCODE, DNSHeader, DNSRecord
from prometheus_client.core import CounterMetricFamily

from kdns.plugins.base import Next, Request, Response
from kdns.plugins.metrics import VIEW, server_label
from kdns.plugins.setup_context import SetupContext

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOW, BLOCK, FILTER, DROP = "allow", "block", "filter", "drop"
ACTIONS = (ALLOW, BLOCK, FILTER, DROP)


@dataclass(frozen=True, slots=True)
class Policy:
    """One ``ACTION [type QTYPE...] [net SOURCE...]`` line."""

    action: str
    qtypes: frozenset[int] | None
    """None: every type (no ``type`` section, or ``type *``)."""
    nets: tuple[Network, ...] | None
    """None: every source (no ``net`` section, or ``net *``)."""

    def matches(self, qtype: int, ip: Address) -> bool:
        if self.qtypes is not None and qtype not in self.qtypes:
            return False
        # ``in`` is False across address families, so a v4 client never matches a v6 net.
        return self.nets is None or any(ip in net for net in self.nets)


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``acl [ZONES...] { ... }`` directive."""

    zones: tuple[str, ...]
    """Lower case with a trailing dot."""
    policies: tuple[Policy, ...]

    def zone_of(self, qname_lower: str) -> str | None:
        """The longest of the rule's zones that ``qname_lower`` is under, or None."""
        best: str | None = None
        for z in self.zones:
            if (z == "." or qname_lower == z or qname_lower.endswith("." + z)) and (
                    best is None or len(z) > len(best)):
                best = z
        return best


def client_ip(host: str) -> Address | None:
    """The client's address; an IPv4-mapped IPv6 address (a dual-stack socket) as IPv4."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone index
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _reply(req: Request, rcode: int) -> DNSRecord:
    """An empty reply to ``req``: ID, opcode, RD, CD and the question echoed."""
    h = req.msg.header
    header = DNSHeader(id=h.id, qr=1, opcode=h.opcode, rd=h.rd, ra=1, rcode=rcode)
    header.cd = h.cd
    return DNSRecord(header, q=req.msg.questions[0])


class AclHandler:
    name = "acl"
    sees_every_query = True  # who asks decides the answer: never answered around this plugin

    def __init__(self, rules: list[Rule] | None = None) -> None:
        self.rules: list[Rule] = list(rules or ())
        """Appended to by setup for every further ``acl`` directive of the block."""
        # Plain integers on the query path; ``metrics`` turns them into families at scrape time.
        self.allowed = 0
        self.blocked = 0
        self.filtered = 0
        self.dropped = 0
        self.by_zone: dict[tuple[str, str], int] = {}
        """(action, zone) -> queries, for the ``zone`` label of the denial counters."""

    def decide(self, req: Request) -> tuple[str, str] | None:
        """(action, zone) of the first matching policy, or None when the query is not checked
        or nothing matched (both mean: allowed)."""
        ip: Address | None = None
        for rule in self.rules:
            zone = rule.zone_of(req.qname_lower)
            if zone is None:
                continue
            if ip is None:
                ip = client_ip(req.client[0])
                if ip is None:
                    return BLOCK, zone
            for policy in rule.policies:
                if policy.matches(req.qtype, ip):
                    return policy.action, zone
        return None

    def serve(self, req: Request, nxt: Next) -> Response:
        decision = self.decide(req)
        action = ALLOW if decision is None else decision[0]
        if action == ALLOW:
            resp = nxt(req)  # counted after: an inline attempt abandoned for a worker must not count
            self.allowed += 1
            # The answer may differ for another client (a blocked one), so it must not be
            # stored where the server would hand it to anyone who sends the same bytes.
            return dataclasses.replace(resp, fast=False) if resp.fast else resp
        assert decision is not None
        key = (action, decision[1])
        self.by_zone[key] = self.by_zone.get(key, 0) + 1
        if action == BLOCK:
            self.blocked += 1
            return Response(_reply(req, RCODE.REFUSED), self.name)
        if action == FILTER:
            self.filtered += 1
            return Response(_reply(req, RCODE.NOERROR), self.name)
        self.dropped += 1
        req.meta["drop"] = True
        return Response(_reply(req, RCODE.REFUSED), self.name)

    def metrics(self, ctx: SetupContext) -> Iterator[Any]:
        """CoreDNS's acl families: denials by (server, zone, view); allowed by (server, view)."""
        server = server_label(ctx)
        for action, name, doc in (
            (BLOCK, "coredns_acl_blocked_requests", "Counter of DNS requests being blocked."),
            (FILTER, "coredns_acl_filtered_requests", "Counter of DNS requests being filtered."),
            (DROP, "coredns_acl_dropped_requests", "Counter of DNS requests being dropped."),
        ):
            fam = CounterMetricFamily(name, doc, labels=["server", "zone", "view"])
            for (act, zone), n in sorted(self.by_zone.copy().items()):
                if act == action:
                    fam.add_metric([server, zone, VIEW], n)
            yield fam
        allowed = CounterMetricFamily("coredns_acl_allowed_requests",
                                      "Counter of DNS requests being allowed.",
                                      labels=["server", "view"])
        allowed.add_metric([server, VIEW], self.allowed)
        yield allowed
