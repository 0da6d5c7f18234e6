"""The query path: the fast path of precomputed replies, and the slow path through the chain.

The hot path, written down (STYLE):

1. datagram in;
2. fast path: catch up with data changes when :data:`kdns.plugins.base.GENERATION` moved (one
   integer comparison; a change evicts only the replies that depend on what it touched) ->
   the stored reply for these exact bytes after the ID, else for :func:`kdns.dns.wire.fast_key`
   (name lower-cased) -> patch ID (and the client's spelling of the name) -> send. Done;
3. cold: a plain question the zone's wire answerer takes (kubernetes: Service names and every
   NXDOMAIN/NODATA below ``svc``), when every plugin in front of it declares it passes ->
   header + question echo + the answer's wire records -> send and store (an NXDOMAIN only
   when asked a second time). No dnslib;
4. miss: read the data version -> strict parse (FORMERR / NOTIMP / drop) -> zone by longest
   suffix (REFUSED when no block serves it) -> plugin chain -> encode within the client's size
   (TC when cut) -> send, and store the bytes (:mod:`kdns.server.store`) when the plugin that
   answered says the reply is ``fast``, under its dependency keys, stamped with that version:
   the store refuses it if one of those keys changed in the meantime. A cache hit carries a
   countdown: it is replayed until the entry expires (or the cache's prefetch window starts),
   its TTLs rewritten in the stored bytes once per elapsed second.

Per client (a zone's :class:`~kdns.plugins.base.ClientScoper`, ``pods verified``): each reply,
fast or slow, is counted under the client's namespace and rcode in plain integers (with its
search waste); under ``isolate`` a reply that depended on the client's namespace is stored
under (namespace, key) and found by the fast path only for clients of that namespace, so the
hit costs one more dict lookup (address -> namespace) and no name crosses tenants.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from dnslib import RCODE, DNSRecord

from kdns.dns import wire
from kdns.plugins.base import (
    GENERATION,
    ClientScoper,
    Countdown,
    Next,
    Request,
    Response,
    Transparent,
    WireAnswerer,
    WouldBlock,
    always_passes,
    inline_only,
    passes_all_of,
    passes_below,
)
from kdns.server.stats import Entry, Rotation, Stats, StatsKey, Ticking, make_key
from kdns.server.store import DEFAULT_MAX_BYTES, ReplyStore, stored_form

log = logging.getLogger("kdns.server")

_NXDOMAIN = RCODE.NXDOMAIN
"""Read once: ``RCODE.NXDOMAIN`` goes through dnslib's ``Bimap.__getattr__``, which raises and
catches an AttributeError first (about 2,000 instructions, on every cold answer)."""

SEEN_ONCE = 8192
"""Cold-path denials remembered until they are asked again (at most 0.8 MiB per listener)."""
MAX_SCOPES = 65536
"""Client addresses whose scope a listener remembers between data changes."""

_monotonic = time.monotonic
"""The fast path's clock, bound once (a module global, not an attribute lookup per hit)."""


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
    cold: ColdPath | None = None
    """The block's wire answerer behind the plugins that pass (:func:`cold_path`), if any."""
    clients: ClientScoper | None = None
    """The block's plugin that maps client addresses to namespaces (:func:`client_scoper`)."""


def client_scoper(handlers: Sequence[object]) -> ClientScoper | None:
    """The first handler of a block that maps client addresses to namespaces, if any."""
    for h in handlers:
        if isinstance(h, ClientScoper) and h.attributing:
            return h
    return None


@dataclass(slots=True)
class Counters:
    """Plain integers, read by the metrics collector at scrape time (cheap on the hot path)."""

    slow: int = 0
    dropped: int = 0
    formerr: int = 0
    refused: int = 0
    servfail_exceptions: int = 0


class ColdPath:
    """The wire answerer of a chain (:class:`~kdns.plugins.base.WireAnswerer`), taken only
    when every plugin in front of it declares it passes the question
    (:class:`~kdns.plugins.base.Transparent`): :meth:`Dispatcher.cold` calls :attr:`answer`,
    then asks :meth:`passes` about a reply with :attr:`few` or more Answer records."""

    __slots__ = ("answer", "few", "front", "plugin")

    def __init__(self, answerer: WireAnswerer, front: Sequence[Transparent]) -> None:
        self.answer = answerer.answer_wire
        # Plugins that pass everything (or everything this answerer answers) are not asked:
        # a call each, on every cold answer.
        asked = [h for h in front if getattr(type(h), "passes", None) is not always_passes
                 and not passes_all_of(h, answerer)]
        self.front = tuple(h.passes for h in asked)
        self.few = min((passes_below(h) for h in asked), default=1 << 30)
        """Replies with fewer Answer records pass every plugin asked (most: one address)."""
        self.plugin = answerer.name

    def passes(self, qname_lower: str, qtype: int, answers: int) -> bool:
        """Every plugin in front passes a reply with ``answers`` Answer records."""
        return answers < self.few or all(p(qname_lower, qtype, answers) for p in self.front)


def cold_path(handlers: Sequence[object]) -> ColdPath | None:
    """The chain's cold path, or None when a plugin in front of the first wire answerer may
    act on its questions (and so must see them: ``log``, ``acl``, ``rewrite``...)."""
    front: list[Transparent] = []
    for h in handlers:
        if isinstance(h, WireAnswerer):
            return ColdPath(h, front)
        if not isinstance(h, Transparent):
            return None
        front.append(h)
    return None


def _current(entry: Entry) -> bool:
    """May ``entry`` (one with a deadline) still be replayed? A counting-down reply gets the
    TTLs of this second first (once per second: two float compares otherwise)."""
    now = _monotonic()
    if entry.expires < now:
        return False
    t = entry.ticking
    return t is None or now < t.next_at or t.advance(entry, now)


def _ticking(stored: bytes | Rotation, countdown: Countdown) -> Ticking | None:
    """The countdown state of ``stored`` (None when its TTLs cannot be found: no replay)."""
    fields: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    if not countdown.fixed:
        for r in stored.replies if isinstance(stored, Rotation) else (stored,):
            try:
                offsets, ttls = wire.ttl_fields(r)
            except ValueError:
                return None
            fields.append((offsets, tuple(t + countdown.elapsed for t in ttls)))
    return Ticking(countdown.born, countdown.elapsed, fields, countdown.tick)


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
    max_bytes: int = DEFAULT_MAX_BYTES
    """Budget of this listener's reply store (``--reply-store-mb``)."""
    store: ReplyStore = field(init=False)
    _seen_once: set[int] = field(init=False, default_factory=set, repr=False)
    """Hashes of keys denied once on the cold path and not stored (:meth:`_asked_before`)."""
    _missed: tuple[bytes, tuple[bytes, int]] | None = field(init=False, default=None, repr=False)
    """The last query the fast path missed with its :func:`~kdns.dns.wire.fast_key`, for the
    cold path to reuse when it is handed that same bytes object (a worker thread's query is
    another object: it makes its own)."""
    who: Callable[[str], str] | None = field(init=False, default=None)
    """Client address -> namespace scope, when a zone maps them (None: no attribution)."""
    scoped: bool = field(init=False, default=False)
    """Replies may be stored per client scope (``isolate`` with one scoper per listener)."""
    client_counts: dict[str, list[int]] = field(init=False, default_factory=dict)
    """Client scope -> replies by rcode (index 0-15) (kdns_client_requests_total)."""
    waste_counts: dict[str, int] = field(init=False, default_factory=dict)
    """Client namespace -> search-waste NXDOMAINs (kdns_search_waste_total)."""
    _scopes: dict[str, tuple[str, list[int]]] = field(init=False, default_factory=dict)
    """Client address -> (scope, that scope's counts), as of the store's data version: emptied
    whenever data changes (the view that maps addresses may have changed), so a hit reads one
    dict and increments one list slot."""

    def __post_init__(self) -> None:
        self.store = ReplyStore(self.stats, self.max_bytes)
        self.rescope()

    def rescope(self) -> None:
        """Pick the client scoper from the zones (after a reload swapped them)."""
        scopers = list({id(z.clients): z.clients for z in self.zones.values()
                        if z.clients is not None}.values())
        self.who = scopers[0].client_scope if scopers else None
        # Two scopers on one listener could disagree about a client: then replies that
        # depend on the client are not stored at all (they are still answered right).
        self.scoped = len(scopers) == 1 and scopers[0].isolating

    def _client(self, ip: str) -> tuple[str, list[int]]:
        """The scope of the client at ``ip`` and its counts (remembered until data changes)."""
        assert self.who is not None
        who = self.who(ip)
        counts = self.client_counts.get(who)
        if counts is None:
            counts = self.client_counts[who] = [0] * 16
        if len(self._scopes) >= MAX_SCOPES:
            self._scopes.clear()
        self._scopes[ip] = (who, counts)
        return who, counts

    def _waste(self, who: str, waste: str) -> None:
        if (waste == "*" or waste == who) and who[0] != "/":
            self.waste_counts[who] = self.waste_counts.get(who, 0) + 1

    def route(self, qname_lower: str) -> Zone | None:
        """Longest-suffix match of the query name against the served zones."""
        if len(self.zones) == 1:  # the usual single block: one suffix test, not one per label
            for only in self.zones.values():
                z = only.name
                if z == "." or qname_lower == z or qname_lower.endswith("." + z):
                    return only
            return None
        name = qname_lower
        while True:
            zone = self.zones.get(name)
            if zone is not None:
                return zone
            if name == ".":
                return None
            dot = name.find(".")
            name = name[dot + 1 :] or "."

    def lookup(self, data: bytes, client: tuple[str, int] | None = None) -> bytes | None:
        """The fast path: a stored reply for ``data``, or None on a miss.

        First the exact bytes after the ID: resolvers repeat their questions byte for byte,
        and such a hit is one slice, one dict lookup and one concatenation. Replies are stored
        spelled in lower case, so another spelling (0x20) looks up the lower-cased key and
        patches its own spelling into the reply; it adds no entry. A reply stored for one
        client scope is keyed by a (scope, key) tuple, which no query's bytes can equal.
        """
        store = self.store
        if GENERATION.value != store.version:
            store.catch_up()
            self._scopes.clear()
        entries = store.entries
        rest = data[2:]
        entry = entries.get(rest)
        if entry is not None and self.who is None:
            tail = entry.tail
            if tail is not None:
                # The replay of a repeated question when no client is attributed (a node
                # cache's every hit): _current() inlined, so a countdown costs one clock read.
                expires = entry.expires
                if expires:
                    now = _monotonic()
                    if expires < now:
                        return None  # a cache replay past its deadline: ask the cache again
                    t = entry.ticking
                    if t is not None and now >= t.next_at:
                        if not t.advance(entry, now):
                            return None
                        tail = entry.tail or tail
                entry.hits += 1
                return data[:2] + tail
        who = None
        if self.who is not None and client is not None:
            known = self._scopes.get(client[0])
            who, counts = known if known is not None else self._client(client[0])
            if entry is None and self.scoped:
                entry = entries.get((who, rest))
        if entry is None or entry.tail is None:
            k = wire.fast_key(data)
            if k is None:
                return None
            entry = entries.get(k[0])
            if entry is None and who is not None and self.scoped:
                entry = entries.get((who, k[0]))
            if entry is None or not entry.patchable or (entry.expires and not _current(entry)):
                self._missed = (data, k)
                return None
            entry.hits += 1
            if who is not None:
                counts[entry.rcode] += 1
                if entry.waste is not None:
                    self._waste(who, entry.waste)
            reply = entry.reply
            if isinstance(reply, Rotation):
                reply = reply.next()
            return wire.patch(reply, data, k[1])
        if entry.expires and not _current(entry):
            return None  # a cache replay past its deadline: ask the cache again
        entry.hits += 1
        if who is not None:
            counts[entry.rcode] += 1
            if entry.waste is not None:
                self._waste(who, entry.waste)
        return data[:2] + entry.tail

    def cold(self, data: bytes) -> bytes | None:
        """The cold path: a question the zone's wire answerer takes (a cluster name asked for
        the first time), answered and stored without dnslib; None: use the chain."""
        started = time.perf_counter()
        missed = self._missed
        q = wire.peek_plain(data, missed[1] if missed is not None and missed[0] is data else None)
        if q is None:
            return None
        key, end, qname, qtype, edns, do = q
        zone = self.route(qname)
        if zone is None or not zone.fast_ok:
            return None
        cold = zone.cold
        if cold is None:
            return None
        built_at = GENERATION.value  # before the answerer reads its data, as on the slow path
        try:
            ans = cold.answer(qname, qtype)
            if ans is None:
                return None
            rcode, answers, authority, records, deps = ans
            if answers >= cold.few and not cold.passes(qname, qtype, answers):
                return None
        except Exception:
            return None  # the chain answers it, and reports what went wrong
        out = wire.cold_reply(data, end, rcode, answers, authority, records, edns, do)
        if len(out) > wire.UDP_DEFAULT_SIZE:
            return None  # truncation is the general path's business
        stats = make_key(zone.name, qtype, out, cold.plugin, len(data), do)
        if rcode != _NXDOMAIN or self._asked_before(key):
            # Its names all point at the question: one entry serves every spelling.
            entry = Entry(stored_form(out, key, end), stats, deps=deps)
            if rcode == _NXDOMAIN and zone.clients is not None:
                entry.waste = zone.clients.waste_for(qname)
            # Counted as the first of the entry's replays (read at scrape time, as theirs
            # are), so a stored answer costs no timed count.
            entry.hits = 1
            if self.store.put(key, entry, built_at):
                return out
        self.stats.add(stats, time.perf_counter() - started)
        return out

    def _asked_before(self, key: bytes) -> bool:
        """Whether a name the cold path denies was denied recently already.

        A denial is stored on its second ask only: random subdomains (a flood, typos) are
        asked once each, and storing them would push the replies clients do repeat out of
        the byte budget, at twice the cost of answering them. A denial that repeats (a
        search-list expansion every pod tries) is stored when it comes back. Remembered by
        hash, at most :data:`SEEN_ONCE` of them; a full set starts over."""
        seen, h = self._seen_once, hash(key)
        if h in seen:
            seen.discard(h)
            return True
        if len(seen) >= SEEN_ONCE:
            seen.clear()
        seen.add(h)
        return False

    def handle(self, data: bytes, client: tuple[str, int], inline: bool = False
               ) -> bytes | None:
        """A message the fast path missed: the cold path, else the chain (under
        :class:`~kdns.plugins.base.inline_only` with ``inline``, which the cold path never
        needs: it does not wait). Returns the reply bytes or None to stay silent."""
        out = self.cold(data)
        if out is None:
            if inline:
                with inline_only():
                    out = self._handle(data, client)
            else:
                out = self._handle(data, client)
        if out is not None and self.who is not None and len(out) > 3:
            who, counts = self._client(client[0])
            counts[out[3] & 0xF] += 1
            if out[3] & 0xF == _NXDOMAIN:
                waste = self._waste_of(data)
                if waste is not None:
                    self._waste(who, waste)
        return out

    def _waste_of(self, data: bytes) -> str | None:
        q = wire.peek_plain(data)
        if q is None:
            return None
        zone = self.route(q.qname)
        if zone is None or zone.clients is None:
            return None
        return zone.clients.waste_for(q.qname)

    def _handle(self, data: bytes, client: tuple[str, int]) -> bytes | None:
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
        scopes: set[str] = set()
        req.meta["scopes"] = scopes  # shared by sub-requests: see ClientScoper
        # Read before any plugin reads its data: publishers swap data, then bump, so whatever
        # the chain reads is at least this new, and the store refuses the reply if something
        # it depends on changed after this version.
        built_at = GENERATION.value
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
        scope: str | None = None
        if scopes:
            # The reply depended on who asked: store it for that one scope, or not at all.
            scope = next(iter(scopes)) if len(scopes) == 1 and self.scoped else None
        if resp.fast and zone.fast_ok and (scope is not None or not scopes):
            k = wire.fast_key(data)
            if k is not None and wire.patchable(out, data):
                stored: bytes | Rotation = bytes(out)
                if resp.variants:
                    stored = Rotation([bytes(out), *(wire.encode(self._with_opt(v, query),
                                                                req.max_size)
                                                    for v in resp.variants)])
                self._store(data, k[0], stored, make_key(
                    zone.name, query.qtype, out, resp.plugin, len(data), query.do), resp.expires,
                    resp.tally, deps=resp.deps, built_at=built_at, scope=scope,
                    clients=zone.clients, qname=qname_lower,
                    countdown=resp.countdown)
        self._count(zone.name, query.qtype, out, resp.plugin, len(data), query.do, started)
        self._log(req, out, started)
        return out

    def _store(self, data: bytes, key: bytes, reply: bytes | Rotation, stats: StatsKey,
               expires: float, tally: Hashable | None = None, *,
               deps: tuple[Hashable, ...] | None = (), built_at: int | None = None,
               scope: str | None = None, clients: ClientScoper | None = None,
               qname: str = "", countdown: Countdown | None = None) -> None:
        """Store a reply under the lower-cased key, spelled in lower case (one entry whatever
        the client's case), built from ``deps`` at data version ``built_at``. With a
        ``countdown`` it is replayed until the countdown's deadline, its TTLs rewritten as the
        seconds pass, instead of until ``expires``.

        A reply that spells the name out in its records (an SRV target in the query's
        spelling of the zone) fits that spelling only: it is stored when that spelling is
        the lower-case one, for exact hits only, and not at all otherwise."""
        end = data.find(0, 12)
        stored = stored_form(reply, key, end)
        spelled = any(wire.spells_name(r, end) for r in (
            stored.replies if isinstance(stored, Rotation) else (stored,)))
        if spelled and data[12:end] != key[10 : end - 2]:
            return
        ticking = None if countdown is None else _ticking(stored, countdown)
        if ticking is not None:
            expires = countdown.until  # type: ignore[union-attr]
        entry = Entry(stored, stats, expires, tally=tally, deps=deps, patchable=not spelled)
        entry.ticking = ticking
        if clients is not None and entry.rcode == _NXDOMAIN:
            entry.waste = clients.waste_for(qname)
        self.store.put(bytes(key) if scope is None else (scope, bytes(key)), entry, built_at)

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
            return self.handle(data, client, True)
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
            hit = self.lookup(data, client)
        except Exception:  # the process never dies of a packet (STYLE lesson 9)
            log.exception("unexpected error serving a %s query from %s", self.proto, client)
            self.counters.servfail_exceptions += 1
            return None
        return hit if hit is not None else self.answer(data, client)

    def answer(self, data: bytes, client: tuple[str, int]) -> bytes | None:
        """What a query the fast path missed gets: cold path, then slow path; never raises."""
        self.counters.slow += 1
        try:
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
