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
import struct
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from dnslib import RCODE, DNSRecord

from kdns.dns import wire
from kdns.plugins.base import GENERATION, Next, Request, Response, WouldBlock, inline_only
from kdns.server.stats import Entry, Rotation, Stats, StatsKey, make_key

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
    """False when a plugin must see every query (``log``, ``acl``)."""
    errors: object | None = None
    blocking: bool = False
    """A handler in the chain may wait on the network (it sets ``blocking = True``)."""
    plugins: tuple[str, ...] = ()
    """Directive names of the block, for ``coredns_plugin_enabled``."""


@dataclass(slots=True)
class Counters:
    """Plain integers, read by the metrics collector at scrape time (cheap on the hot path)."""

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
    family: int = 1
    """1 for an IPv4 listener, 2 for IPv6 (the ``family`` metric label)."""
    counters: Counters = field(default_factory=Counters)
    stats: Stats = field(default_factory=Stats)
    store: dict[bytes, Entry] = field(default_factory=dict)
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

    def _reset(self) -> None:
        self.stats.fold(self.store)
        self.store = {}
        self.generation = GENERATION.value

    def lookup(self, data: bytes) -> bytes | None:
        """The fast path: a stored reply for ``data``, or None on a miss.

        First the exact bytes after the ID: resolvers repeat their questions byte for byte,
        and such a hit is one slice, one dict lookup and one concatenation. Only a key stored
        from a valid plain query can match, so no header checks are needed. Otherwise the
        name is lower-cased (:func:`wire.fast_key`) and the reply patched with the client's
        spelling, which is then stored under these exact bytes too.
        """
        if GENERATION.value != self.generation:
            self._reset()
        store = self.store
        entry = store.get(data[2:])
        if entry is not None and entry.tail is not None:
            if entry.expires and entry.expires < time.monotonic():
                return None  # a cache replay past its second: ask the cache again
            entry.hits += 1
            return data[:2] + entry.tail
        k = wire.fast_key(data)
        if k is None:
            return None
        entry = store.get(k[0])
        if entry is None or (entry.expires and entry.expires < time.monotonic()):
            return None
        entry.hits += 1
        reply = entry.reply
        if type(reply) is Rotation:
            reply = reply.next()
        end = k[1]
        out: bytes = data[:2] + reply[2:12] + data[12:end] + reply[end:]  # type: ignore[index]
        if type(entry.reply) is bytes and len(store) < FAST_PATH_MAX_ENTRIES:
            variant = Entry(out, entry.stats, entry.expires, tally=entry.tally)
            store[data[2:]] = variant  # this client's spelling, answered exactly next time
        return out

    def handle(self, data: bytes, client: tuple[str, int]) -> bytes | None:
        """The slow path for one message; returns the reply bytes or None to stay silent."""
        started = time.perf_counter()
        try:
            query = wire.parse_query(data)
        except wire.WireError as err:
            if err.reply is None:
                self.counters.dropped += 1
            else:
                self.counters.formerr += 1
                self._count("dropped", 0, err.reply, "", len(data), False, started)
            log.debug("%s from %s: %s", self.proto, client[0], err.reason)
            return err.reply
        max_size = query.udp_size if self.proto == "udp" else wire.TCP_MAX_SIZE
        if wire.edns_version(query) > 0:
            # RFC 6891 §6.1.3: BADVERS is extended rcode 16 = upper bits 1, lower bits 0.
            reply = wire.reply_for(query)
            reply.ar[0].ttl = 1 << 24
            out = wire.encode(reply, max_size)
            self._count("dropped", query.qtype, out, "", len(data), query.do, started)
            return out
        qname_lower = query.qname.lower()
        zone = self.route(qname_lower)
        if zone is None:
            self.counters.refused += 1
            out = wire.encode(wire.reply_for(query, rcode=RCODE.REFUSED), max_size)
            self._count("dropped", query.qtype, out, "", len(data), query.do, started)
            return out
        req = Request(query.msg, query.qname, qname_lower, query.qtype, query.qclass, client,
                      self.proto, zone.server_label, zone.name, max_size, query.do)
        try:
            resp = zone.chain(req)
        except WouldBlock:
            raise  # not an answer: the listener retries this query where it may wait
        except Exception as err:
            self.counters.servfail_exceptions += 1
            if not isinstance(err, NoPluginError):
                self.stats.panics += 1
                if zone.errors is None:
                    log.debug("%s %s: %s", query.qname, wire.qtype_name(query.qtype), err)
            out = wire.encode(wire.reply_for(query, rcode=RCODE.SERVFAIL), max_size)
            self._count(zone.name, query.qtype, out, "", len(data), query.do, started)
            self._log(req, out, started)
            return out
        if req.meta.get("drop"):
            # A plugin (acl's ``drop``) chose silence: no reply at all, over UDP or TCP.
            self.counters.dropped += 1
            return None
        # req.max_size, not max_size: a plugin (bufsize) may have lowered it for this query.
        out = wire.encode(self._with_opt(resp.msg, query), req.max_size)
        if resp.more and self.proto == "tcp":
            # A zone transfer: several messages, framed here and written as one by the TCP
            # listener (see Framed).
            self._count(zone.name, query.qtype, out, resp.plugin, len(data), query.do, started)
            self._log(req, out, started)
            return wire.Framed(b"".join(struct.pack("!H", len(m)) + m
                                        for m in (out, *resp.more)))
        if resp.fast and zone.fast_ok and resp.generation == GENERATION.value:
            k = wire.fast_key(data)
            if k is not None and wire.patchable(out, data):
                stored: bytes | Rotation = bytes(out)
                if resp.variants:
                    stored = Rotation([bytes(out), *(wire.encode(self._with_opt(v, query),
                                                                req.max_size)
                                                    for v in resp.variants)])
                self._store(data, k[0], stored, make_key(
                    zone.name, query.qtype, out, resp.plugin, len(data), query.do), resp.expires,
                    resp.tally)
        self._count(zone.name, query.qtype, out, resp.plugin, len(data), query.do, started)
        self._log(req, out, started)
        return out

    def _store(self, data: bytes, key: bytes, reply: bytes | Rotation, stats: StatsKey,
               expires: float, tally: Hashable | None = None) -> None:
        """Store a reply under the lower-cased key and, when the query spelled its name in
        another case, under its exact bytes too.

        The reply repeats this query's spelling. Under the lower-cased key it must only be
        patched (a later query may spell the name otherwise), never replayed as is; under the
        exact bytes it may be replayed as is.
        """
        if self.generation != GENERATION.value or len(self.store) >= FAST_PATH_MAX_ENTRIES:
            self._reset()  # random names must not grow the store without bound
        exact = bytes(data[2:])
        key = bytes(key)
        if key == exact:
            self.store[key] = Entry(reply, stats, expires, tally=tally)
        else:
            self.store[key] = Entry(reply, stats, expires, exact=False, tally=tally)
            self.store[exact] = Entry(reply, stats, expires, tally=tally)

    def _count(self, zone: str, qtype: int, out: bytes, plugin: str, req_size: int, do: bool,
               started: float) -> None:
        self.stats.add(make_key(zone, qtype, out, plugin, req_size, do),
                       time.perf_counter() - started)

    def handle_safely(self, data: bytes, client: tuple[str, int]) -> bytes | None:
        """The slow path in a worker (the fast path was already tried); never raises."""
        try:
            return self.handle(data, client)
        except Exception:
            log.exception("unexpected error serving a %s query from %s", self.proto, client)
            self.counters.servfail_exceptions += 1
            return None

    def try_inline(self, data: bytes, client: tuple[str, int]) -> bytes | WouldBlock | None:
        """The slow path under must-not-block: the reply, None (silence), or a WouldBlock
        instance when the query needs a worker (it is then counted there, not here)."""
        try:
            with inline_only():
                return self.handle(data, client)
        except WouldBlock as wb:
            return wb
        except Exception:
            log.exception("unexpected error serving a %s query from %s", self.proto, client)
            self.counters.servfail_exceptions += 1
            return None

    @staticmethod
    def _with_opt(msg: DNSRecord, query: wire.Query) -> DNSRecord:
        if query.edns is not None and not any(r.rtype == 41 for r in msg.ar):
            msg.add_ar(wire.reply_for(query).ar[0])
        return msg

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
            self.counters.slow += 1
            return self.handle(data, client)
        except WouldBlock:
            # Only raised under inline_only(), which serve() never sets; answer SERVFAIL
            # rather than let a packet escape unanswered if a plugin raises it anyway.
            log.error("a plugin raised WouldBlock outside the UDP loop's inline attempt")
            return None
        except Exception:  # the process never dies of a packet (STYLE lesson 9)
            log.exception("unexpected error serving a %s query from %s", self.proto, client)
            self.counters.servfail_exceptions += 1
            return None
