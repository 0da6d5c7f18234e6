"""The query path: the fast path of precomputed replies, and the slow path through the chain.

The hot path, written down (STYLE):

1. datagram in;
2. fast path: :func:`kdns.dns.wire.fast_key` peeks the question bytes -> the stored reply for
   that key under the current data generation -> patch ID and name case -> send. Done;
3. miss: strict parse (FORMERR / NOTIMP / drop) -> zone by longest suffix (REFUSED when no
   block serves it) -> plugin chain -> encode within the client's size (TC when cut) -> send,
   and store the bytes in the fast path when the plugin that answered says the reply depends
   only on the question and the data generation.

The fast path is dropped wholesale when :data:`kdns.plugins.base.GENERATION` moves: one integer
comparison per query keeps precomputed bytes from outliving the data they were built from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dnslib import RCODE

from kdns.dns import wire
from kdns.plugins.base import GENERATION, Next, Request, Response

log = logging.getLogger("kdns.server")

FAST_PATH_MAX_ENTRIES = 200_000
"""Bound on stored replies per listener and protocol; past it the store starts over, so random
names cannot grow memory without limit."""


@dataclass(slots=True)
class Zone:
    """One zone of one server block: its chain and what the server needs to know about it."""

    name: str
    chain: Next
    server_label: str
    log_errors: bool = False
    fast_ok: bool = True
    """False when a plugin must see every query (``log``)."""
    errors: object | None = None
    blocking: bool = False
    """A handler in the chain may wait on the network (it sets ``blocking = True``)."""


@dataclass(slots=True)
class Counters:
    """Plain integers, read by the metrics collector at scrape time (cheap on the hot path)."""

    fast_hits: int = 0
    slow: int = 0
    dropped: int = 0
    formerr: int = 0
    refused: int = 0
    servfail_exceptions: int = 0


def end_of_chain(req: Request) -> Response:
    """What a query gets when every plugin passed it on: SERVFAIL, as in CoreDNS."""
    raise NoPluginError(req.zone)


class NoPluginError(Exception):
    def __init__(self, zone: str) -> None:
        super().__init__(f"no next plugin found for zone {zone}")


def build_chain(handlers: Sequence[object]) -> Next:
    nxt: Next = end_of_chain
    for h in reversed(handlers):
        serve: Callable[[Request, Next], Response] = h.serve  # type: ignore[attr-defined]

        def step(req: Request, _serve: Callable[[Request, Next], Response] = serve,
                 _nxt: Next = nxt) -> Response:
            return _serve(req, _nxt)

        nxt = step
    return nxt


@dataclass(slots=True)
class Dispatcher:
    """Answers queries for one listener (one address and port, UDP or TCP)."""

    zones: dict[str, Zone]
    proto: str
    server_label: str
    counters: Counters = field(default_factory=Counters)
    store: dict[bytes, bytes] = field(default_factory=dict)
    generation: int = -1

    def route(self, qname_lower: str) -> Zone | None:
        """Longest-suffix match of the query name against the served zones."""
        name = qname_lower
        while True:
            zone = self.zones.get(name)
            if zone is not None:
                return zone
            if name == ".":
                return None
            dot = name.find(".")
            name = name[dot + 1 :] or "."

    def lookup(self, data: bytes) -> bytes | None:
        """The fast path: a stored reply patched for ``data``, or None on a miss."""
        if GENERATION.value != self.generation:
            self.store.clear()
            self.generation = GENERATION.value
        k = wire.fast_key(data)
        if k is None:
            return None
        stored = self.store.get(k[0])
        if stored is None:
            return None
        self.counters.fast_hits += 1
        end = k[1]
        return data[:2] + stored[2:12] + data[12:end] + stored[end:]

    def handle(self, data: bytes, client: tuple[str, int]) -> bytes | None:
        """The slow path for one message; returns the reply bytes or None to stay silent."""
        started = time.perf_counter()
        self.counters.slow += 1
        try:
            query = wire.parse_query(data)
        except wire.WireError as err:
            if err.reply is None:
                self.counters.dropped += 1
            else:
                self.counters.formerr += 1
            log.debug("%s from %s:%d: %s", self.proto, client[0], client[1], err.reason)
            return err.reply
        if wire.edns_version(query) > 0:
            # RFC 6891 §6.1.3: BADVERS is extended rcode 16 = upper bits 1, lower bits 0.
            reply = wire.reply_for(query)
            reply.ar[0].ttl = 1 << 24
            return wire.encode(reply, query.udp_size)
        qname_lower = query.qname.lower()
        zone = self.route(qname_lower)
        max_size = query.udp_size if self.proto == "udp" else wire.TCP_MAX_SIZE
        if zone is None:
            self.counters.refused += 1
            return wire.encode(wire.reply_for(query, rcode=RCODE.REFUSED), max_size)
        req = Request(query.msg, query.qname, qname_lower, query.qtype, query.qclass, client,
                      self.proto, zone.server_label, zone.name, max_size, query.do)
        try:
            resp = zone.chain(req)
        except Exception as err:
            self.counters.servfail_exceptions += 1
            if not isinstance(err, NoPluginError) and zone.errors is None:
                log.debug("%s %s: %s", query.qname, wire.qtype_name(query.qtype), err)
            reply = wire.reply_for(query, rcode=RCODE.SERVFAIL)
            out = wire.encode(reply, max_size)
            self._log(req, out, started)
            return out
        msg = resp.msg
        if query.edns is not None and not any(r.rtype == 41 for r in msg.ar):
            msg.add_ar(wire.reply_for(query).ar[0])
        out = wire.encode(msg, max_size)
        if resp.fast and zone.fast_ok and resp.generation == GENERATION.value:
            k = wire.fast_key(data)
            if k is not None:
                if self.generation != GENERATION.value:
                    self.store.clear()
                    self.generation = GENERATION.value
                if len(self.store) >= FAST_PATH_MAX_ENTRIES:
                    self.store.clear()
                self.store[bytes(k[0])] = bytes(out)
        self._log(req, out, started)
        return out

    @staticmethod
    def _log(req: Request, out: bytes, started: float) -> None:
        logger = req.meta.get("log")
        if logger is not None:
            logger.emit(req, out, time.perf_counter() - started)

    def serve(self, data: bytes, client: tuple[str, int]) -> bytes | None:
        """Fast path, then slow path; never raises."""
        try:
            hit = self.lookup(data)
            if hit is not None:
                return hit
            return self.handle(data, client)
        except Exception:  # the process never dies of a packet (STYLE lesson 9)
            log.exception("unexpected error serving a %s query from %s", self.proto, client)
            self.counters.servfail_exceptions += 1
            return None
