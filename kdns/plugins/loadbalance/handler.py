"""loadbalance: shuffle the address and MX records of a reply (CoreDNS ``loadbalance round_robin``).

This module owns the order of the answer section on the way back. As in CoreDNS, only NOERROR
replies (not zone transfers) with more than one A/AAAA or MX record change; the answer becomes
CNAMEs first (glibc's stub resolver wants the CNAME before its target), then any other records,
then the addresses (A and AAAA together), then the MX records.

Two paths, because kdns precomputes replies:

* a reply the server will *not* store (``fast`` false) is shuffled uniformly (Fisher-Yates via
  ``random.shuffle``), every time;
* a reply it stores in the fast path (``fast`` true) is replayed without the chain, so one
  shuffle would freeze the order until the data changes. The handler hands the server a small
  cycle of orders instead (``Response.msg`` plus ``Response.variants``), which the server encodes
  once and serves in turn. With N records to balance, the cycle is the N rotations of one uniform
  shuffle when N <= 8, so over every N queries each record comes first exactly once; for larger
  N it is 8 orders whose first records are 8 distinct records drawn uniformly, each followed by a
  uniform shuffle of the rest. That bounds the stored bytes at 8 encodings per question while
  every record is equally likely to lead; the cycle is drawn afresh whenever the data the reply
  was built from changes and the server stores it again.

A reply with several addresses therefore never takes the server's wire-form cold path
(:meth:`LoadBalanceHandler.passes`): it goes through this plugin.

``weighted WEIGHTFILE`` draws the first address by per-name weights instead (see
:mod:`kdns.plugins.loadbalance.weighted`).

``prefer CIDR...`` (CoreDNS 1.12.4+) then moves the address records inside the listed subnets to
the front, in the order the subnets are listed, keeping the shuffled order within each group,
so clients prefer (say) their own zone's endpoints while load still spreads among them.

It runs only on misses, so it stays a handful of list operations per reply.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from dataclasses import dataclass, field

from dnslib import QTYPE, RCODE, RR, DNSHeader, DNSRecord

from kdns.plugins.base import Next, Request, Response
from kdns.plugins.loadbalance.weighted import WEIGHTED_QTYPES, WeightedPicker, with_top

MAX_ORDERS = 8
"""Most orders stored per fast-path question (the reply, plus up to 7 variants)."""

_ADDRESS = (QTYPE.A, QTYPE.AAAA)
_TRANSFERS = (QTYPE.AXFR, QTYPE.IXFR)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class LoadBalanceConfig:
    policy: str = "round_robin"
    prefer: tuple[Network, ...] = field(default=())
    """Subnets whose addresses go first, in this order (``prefer CIDR...``)."""
    weight_file: str | None = None
    """``weighted``: the weight file (absolute path)."""
    reload: float = 30.0
    """``weighted``: seconds between checks of the weight file; 0 never re-reads it."""


class LoadBalanceHandler:
    name = "loadbalance"

    def __init__(self, cfg: LoadBalanceConfig | None = None, *,
                 rng: random.Random | None = None,
                 picker: WeightedPicker | None = None) -> None:
        self.cfg = cfg or LoadBalanceConfig()
        self._rng = rng or random.Random()
        self.picker = picker

    def start(self) -> None:
        if self.picker is not None:
            self.picker.start()

    def stop(self) -> None:
        if self.picker is not None:
            self.picker.stop()

    passes_below = 2
    """One record or none: nothing to reorder (:func:`~kdns.plugins.base.passes_below`)."""

    def passes(self, qname_lower: str, qtype: int, answers: int) -> bool:
        return answers < self.passes_below

    def serve(self, req: Request, nxt: Next) -> Response:
        resp = nxt(req)
        msg = resp.msg
        if self.picker is not None:
            return self._weighted(req, resp, self.picker)
        if len(msg.rr) < 2 or msg.header.rcode != RCODE.NOERROR or req.qtype in _TRANSFERS:
            return resp
        head: list[RR] = []  # CNAMEs, then the other records: they keep their order
        rest: list[RR] = []
        address: list[RR] = []
        mx: list[RR] = []
        for rr in msg.rr:
            t = rr.rtype
            if t in _ADDRESS:
                address.append(rr)
            elif t == QTYPE.MX:
                mx.append(rr)
            elif t == QTYPE.CNAME:
                head.append(rr)
            else:
                rest.append(rr)
        if len(address) < 2 and len(mx) < 2:
            return resp
        head += rest
        if not resp.fast:
            self._rng.shuffle(address)
            self._rng.shuffle(mx)
            return dataclasses.replace(resp, msg=with_answer(msg, head + self.preferred(address)
                                                             + mx))
        count = min(max(len(address), len(mx)), MAX_ORDERS)
        orders = [head + self.preferred(a) + m for a, m in zip(self.cycle(address, count),
                                               self.cycle(mx, count), strict=True)]
        # replace(), not a new Response: the inner plugin's other terms (the cache's replay
        # deadline above all) must survive the reordering.
        return dataclasses.replace(resp, msg=with_answer(msg, orders[0]),
                                   variants=[with_answer(msg, o) for o in orders[1:]])

    def _weighted(self, req: Request, resp: Response, picker: WeightedPicker) -> Response:
        """CoreDNS's weightedRoundRobin on the answer and additional sections."""
        msg = resp.msg
        if msg.header.rcode != RCODE.NOERROR or req.qtype not in WEIGHTED_QTYPES:
            return resp
        head, address, mx = _split(msg.rr)
        extra_head, extra_address, extra_mx = _split(msg.ar)
        additional = list(msg.ar)
        if len(extra_address) > 1:
            additional = extra_head + with_top(extra_address, picker.top(extra_address)) + extra_mx
        if len(address) < 2:
            if additional == msg.ar:
                return resp
            return dataclasses.replace(resp, msg=with_answer(msg, list(msg.rr), additional))
        if not resp.fast:
            answer = head + with_top(address, picker.top(address)) + mx
            return dataclasses.replace(resp, msg=with_answer(msg, answer, additional))
        orders = [head + with_top(address, i) + mx
                  for i in picker.leaders(address, MAX_ORDERS)]
        return dataclasses.replace(resp, msg=with_answer(msg, orders[0], additional),
                                   variants=[with_answer(msg, o, additional) for o in orders[1:]])

    def preferred(self, address: list[RR]) -> list[RR]:
        """``address`` with the records in the ``prefer`` subnets first (stable partition)."""
        subnets = self.cfg.prefer
        if not subnets:
            return address
        groups: list[list[RR]] = [[] for _ in range(len(subnets) + 1)]
        for rr in address:
            ip = ipaddress.ip_address(str(rr.rdata))
            rank = next((i for i, net in enumerate(subnets)
                         if ip.version == net.version and ip in net), len(subnets))
            groups[rank].append(rr)
        return [rr for group in groups for rr in group]

    def cycle(self, items: list[RR], count: int) -> list[list[RR]]:
        """``count`` orders of ``items`` in which the first records are spread evenly.

        When ``count`` is a multiple of len(items), the rotations of one uniform shuffle: every
        record leads equally often and holds every position equally often. Otherwise each order
        leads with the next record of a uniform shuffle, followed by a shuffle of the others.
        """
        n = len(items)
        if n < 2:
            return [items] * count
        base = list(items)
        self._rng.shuffle(base)
        if count % n == 0:
            return [base[i % n:] + base[: i % n] for i in range(count)]
        out: list[list[RR]] = []
        for i in range(count):
            k = i % n
            others = base[:k] + base[k + 1:]
            self._rng.shuffle(others)
            out.append([base[k], *others])
        return out


def _split(records: list[RR]) -> tuple[list[RR], list[RR], list[RR]]:
    """(CNAMEs then other records, addresses, MX), each in its original order."""
    cnames: list[RR] = []
    rest: list[RR] = []
    address: list[RR] = []
    mx: list[RR] = []
    for rr in records:
        t = rr.rtype
        if t in _ADDRESS:
            address.append(rr)
        elif t == QTYPE.MX:
            mx.append(rr)
        elif t == QTYPE.CNAME:
            cnames.append(rr)
        else:
            rest.append(rr)
    return cnames + rest, address, mx


def with_answer(msg: DNSRecord, answer: list[RR], additional: list[RR] | None = None) -> DNSRecord:
    """A copy of ``msg`` with another answer (and additional) section. Every section list and
    the header are new, because the server adds the OPT record to (and truncation edits) what
    it encodes, and the original may be shared with a plugin that hands it out again."""
    h = msg.header
    return DNSRecord(DNSHeader(id=h.id, bitmap=h.bitmap), questions=list(msg.questions),
                     rr=answer, auth=list(msg.auth),
                     ar=list(msg.ar) if additional is None else list(additional))
