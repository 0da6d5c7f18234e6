"""cache: a bounded response cache in front of the slow plugins of the chain (CoreDNS ``cache``).

This module owns what is cacheable, the TTL arithmetic, the two bounded stores (success and
denial), prefetching, serve-stale refreshes, and the counters a metrics collector reads.

What is stored, keyed by (qname lower case, qtype, qclass, DO bit, CD bit):

* **success**: NOERROR with at least one answer. Cached for the smallest TTL in the reply
  (OPT excluded), clamped to [MINTTL, TTL] of ``success``.
* **denial**: NXDOMAIN, or NOERROR without answers (NODATA), only when Authority carries an
  SOA; cached for min(SOA TTL, SOA MINIMUM) (RFC 2308 §5) clamped to ``denial``'s bounds.
  SERVFAIL goes to the denial store too, for the ``servfail`` duration (RFC 2308 §7.1).
* never: truncated replies, any other rcode (REFUSED, FORMERR, NOTIMP, ...), an extended
  rcode in the OPT record, a reply whose question is not the query's (counted as a drop),
  names under ``disable`` zones, and names under the zones of the block's ``kubernetes``
  plugin (kdns's fix for kubernetes #92559: authoritative data hides cached data, RFC 1035
  §6.1.2, so in-cluster names are always answered from the live view).

Every reply that passes through (stored or served) carries one TTL on all its records: the
stored duration on a miss, counted down by whole seconds spent in the cache on a hit (never
increased, RFC 1035 §6), 0 for a stale answer, or the stored duration with ``keepttl``.

Storage is two ``cachetools.LRUCache`` maps bounded by entry count (CoreDNS evicts randomly;
LRU keeps the popular names, which is what a cache in front of a search-path walk wants), each
entry the reply's wire bytes (parsed again only on the rare hit that reaches the plugin).
Expired entries stay until they are looked up past their stale window or evicted.

A fresh hit carries a :class:`~kdns.plugins.base.Countdown`: the server's fast path replays it,
TTLs rewritten per elapsed second, until the entry expires or its prefetch window starts, and
calls back once per second of replay (popularity, LRU recency, "is it still this entry?").

Counters (plain ints on :attr:`CacheHandler.counters`, read at scrape time; the names map to
CoreDNS's ``coredns_cache_*`` series):

* ``requests``: queries for names the cache acts for (``requests_total``);
* ``hits_success`` / ``hits_denial``: answered from an entry, fresh or stale (``hits_total``
  by type);
* ``misses``: requests that found no usable entry (``misses_total``);
* ``prefetches``: background refreshes started by prefetch (``prefetch_total``);
* ``served_stale``: answers served from expired entries (``served_stale_total``);
* ``evictions_success`` / ``evictions_denial``: entries pushed out by capacity
  (``evictions_total`` by type); ``evictions`` is their sum;
* ``drops``: replies not stored because their question did not match (``drops_total``).

:meth:`CacheHandler.entries` gives ``entries`` by type. Everything here is safe to call from
many threads: one lock guards the stores, the counters and the refresh bookkeeping.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from cachetools import LRUCache
from dnslib import QTYPE, RCODE, RR, DNSHeader, DNSRecord
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from kdns.config.zones import in_zone
from kdns.plugins.base import Countdown, Next, Request, Response, WouldBlock
from kdns.plugins.cache.setup import DENIAL, NAME, SUCCESS, CacheConfig
from kdns.plugins.metrics import VIEW, server_label
from kdns.plugins.setup_context import SetupContext

log = logging.getLogger("kdns.cache")

Key = tuple[str, int, int, bool, bool]
"""(qname lower case, qtype, qclass, DO, CD): DO and CD change what an upstream returns."""

REFRESH_WORKERS = 4
"""Threads refreshing entries in the background; a bound, so an upstream outage with many
stale entries queues refreshes instead of starting a thread per name."""


FAST_REPLAY = 1.0
"""Seconds the server's fast path may replay a cache hit's bytes as they are: TTLs are whole
seconds, so within a second the reply would be the same. A hit also carries a
:class:`~kdns.plugins.base.Countdown` that lets the fast path replay it until the entry
expires (or its prefetch window starts), rewriting the TTLs as seconds pass; a plugin that
rebuilds the reply without keeping the countdown falls back to this second."""


@dataclass(slots=True)
class Counters:
    requests: int = 0
    hits_success: int = 0
    hits_denial: int = 0
    misses: int = 0
    prefetches: int = 0
    served_stale: int = 0
    evictions_success: int = 0
    evictions_denial: int = 0
    drops: int = 0

    @property
    def hits(self) -> int:
        return self.hits_success + self.hits_denial

    @property
    def evictions(self) -> int:
        return self.evictions_success + self.evictions_denial


@dataclass(slots=True)
class Entry:
    kind: str
    """``success`` or ``denial`` (SERVFAIL included)."""
    wire: bytes
    """The reply as stored: ID 0, the upstream's question, its header bits and records with
    every TTL at :attr:`ttl`, the OPT left out (the server adds its own for EDNS clients).
    Bytes rather than dnslib objects: a few hundred bytes an entry instead of ~2 KB."""
    stored: float
    ttl: int
    """Seconds the entry is fresh; also the TTL every record had when stored."""
    hits: int = 0
    last: float = 0.0
    """Prefetch popularity: hits with no gap longer than the prefetch window, and the last."""

    def remaining(self, now: float) -> int:
        return self.ttl - int(now - self.stored)


class _Store(LRUCache[Key, Entry]):
    """An LRU map that counts what capacity pushes out."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.evicted = 0

    def popitem(self) -> tuple[Key, Entry]:
        # cachetools calls popitem only to make room, so every call is an eviction.
        item = super().popitem()
        self.evicted += 1
        return item


def under(name: str, zones: tuple[str, ...]) -> bool:
    """Is ``name`` (lower case, trailing dot) equal to or below one of ``zones``?"""
    return any(in_zone(name, zone) for zone in zones)


def classify(msg: DNSRecord, cfg: CacheConfig) -> tuple[str, int] | None:
    """(kind, seconds to keep) for a cacheable reply, or None. Pure: no clock, no store."""
    h = msg.header
    if h.tc:
        return None
    for r in msg.ar:
        if r.rtype == QTYPE.OPT and (int(r.ttl) >> 24) & 0xFF:
            return None  # an extended rcode (BADVERS, BADCOOKIE...): the low bits lie
    rcode = h.rcode
    if rcode == RCODE.SERVFAIL:
        ttl = int(cfg.servfail)
        return (DENIAL, ttl) if ttl > 0 else None
    if rcode == RCODE.NOERROR and msg.rr:
        low = min(int(r.ttl) for r in (*msg.rr, *msg.auth, *msg.ar) if r.rtype != QTYPE.OPT)
        ttl = min(max(low, cfg.success_min_ttl), cfg.success_ttl)
        return (SUCCESS, ttl) if ttl > 0 else None
    if rcode in (RCODE.NOERROR, RCODE.NXDOMAIN):
        soas = [min(int(r.ttl), int(r.rdata.times[4])) for r in msg.auth if r.rtype == QTYPE.SOA]
        if not soas:
            return None  # a denial without SOA cannot say how long it holds (RFC 2308 §5)
        ttl = min(max(min(soas), cfg.denial_min_ttl), cfg.denial_ttl)
        return (DENIAL, ttl) if ttl > 0 else None
    return None


def _at(r: RR, ttl: int) -> RR:
    return RR(r.rname, r.rtype, r.rclass, ttl, r.rdata)


def _question_matches(req: Request, msg: DNSRecord) -> bool:
    if not msg.questions:
        return False
    q = msg.questions[0]
    return (q.qtype == req.qtype and q.qclass == req.qclass
            and str(q.qname).lower() == req.qname_lower)


def _copy_request(req: Request) -> Request:
    """A request of its own for a background refresh: the chain may change msg and meta."""
    return replace(req, msg=DNSRecord.parse(req.msg.pack()), meta={})


class CacheHandler:
    name = NAME

    def __init__(self, cfg: CacheConfig, *, shared: Mapping[str, Any] | None = None,
                 now: Callable[[], float] = time.monotonic,
                 background: Callable[[Callable[[], None]], None] | None = None) -> None:
        """``shared`` is the server block's ``ctx.shared`` (the kubernetes plugin is looked up
        in it per query, since setup order is not fixed); ``now`` is the clock; ``background``
        runs a refresh (default: a small thread pool; tests may run it inline)."""
        self.cfg = cfg
        self.counters = Counters()
        # The tokens the server counts this cache's fast-path replays under (Response.tally):
        # a replay is a hit that never reaches serve(), and must still be reported as one.
        self.replay_tokens = {SUCCESS: (NAME, id(self), SUCCESS), DENIAL: (NAME, id(self), DENIAL)}
        self._shared: Mapping[str, Any] = shared if shared is not None else {}
        self._now = now
        self._background = background
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._stores = {SUCCESS: _Store(cfg.success_capacity), DENIAL: _Store(cfg.denial_capacity)}
        self._inflight: set[Key] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    # -- metrics -------------------------------------------------------------------------------

    def entries(self, kind: str) -> int:
        """Entries in the ``success`` or ``denial`` store (fresh, stale or expired)."""
        with self._lock:
            return len(self._stores[kind])

    def _sync_evictions(self) -> None:
        c = self.counters
        c.evictions_success = self._stores[SUCCESS].evicted
        c.evictions_denial = self._stores[DENIAL].evicted

    # -- serving -------------------------------------------------------------------------------

    def bypass(self, name: str) -> bool:
        """True when the cache must not touch ``name``: outside its zones, or owned by the
        block's kubernetes plugin (answered from the live view, never from a copy)."""
        if not under(name, self.cfg.zones):
            return True
        k8s = self._shared.get("kubernetes")
        zones: tuple[str, ...] = getattr(k8s, "zones", ())
        return bool(zones) and under(name, zones)

    def passes_all_of(self, answerer: object) -> bool:
        """The block's kubernetes plugin answers only names of its zones, which the cache
        never touches (:meth:`bypass`): the cold path need not ask."""
        return answerer is not None and answerer is self._shared.get("kubernetes")

    def passes(self, qname_lower: str, qtype: int, answers: int) -> bool:
        """Names the cache does not act for (outside its zones, or the kubernetes plugin's)
        go by it untouched and uncounted."""
        k8s = self._shared.get("kubernetes")
        for zone in getattr(k8s, "zones", ()):  # the cold path's names: decided at once
            if qname_lower.endswith(zone) and in_zone(qname_lower, zone):
                return True
        return self.bypass(qname_lower)

    def serve(self, req: Request, nxt: Next) -> Response:
        name = req.qname_lower
        if self.bypass(name):
            return nxt(req)
        key: Key = (name, req.qtype, req.qclass, req.do, bool(req.msg.header.cd))
        now = self._now()
        prefetch = False
        remaining = 0
        with self._lock:
            self.counters.requests += 1
            entry = self._lookup(key, now)
            if entry is None:
                counted = "misses"
            elif entry.kind == SUCCESS:
                counted = "hits_success"
            else:
                counted = "hits_denial"
            setattr(self.counters, counted, getattr(self.counters, counted) + 1)
            if entry is not None:
                remaining = entry.remaining(now)
                if remaining > 0:
                    prefetch = self._popular(entry, now, remaining)
        try:
            return self._answer(req, key, nxt, entry, now, remaining, prefetch)
        except WouldBlock:
            # The UDP loop's inline attempt needs the upstream after all: the query is asked
            # again from a worker and counted there, so this attempt must not count.
            with self._lock:
                self.counters.requests -= 1
                setattr(self.counters, counted, getattr(self.counters, counted) - 1)
            raise

    def _answer(self, req: Request, key: Key, nxt: Next, entry: Entry | None, now: float,
                remaining: int, prefetch: bool) -> Response:
        if entry is None:
            return self._fetch(req, key, nxt)
        if remaining <= 0:
            if self.cfg.verify_stale:
                fresh = self._verify(req, key, nxt)
                if fresh is not None:
                    return fresh
            else:
                self._refresh_later(req, key, nxt, prefetch=False)
            with self._lock:
                self.counters.served_stale += 1
            # RFC 8767 §4 suggests 30 s; CoreDNS answers stale entries with TTL 0 so that no
            # downstream cache holds on to them, and kdns follows CoreDNS.
            return Response(self._reply(entry, req, 0), NAME)
        if prefetch:
            self._refresh_later(req, key, nxt, prefetch=True)
        # The reply only changes when its TTL ticks down a second, so the server may replay its
        # bytes for up to a second (FAST_REPLAY), and with the countdown until the entry's end,
        # instead of asking the cache for every query.
        return Response(self._reply(entry, req, entry.ttl if self.cfg.keepttl else remaining), NAME,
                        fast=True, deps=(),
                        expires=time.monotonic() + FAST_REPLAY,
                        tally=self.replay_tokens[entry.kind],
                        countdown=self._countdown(key, entry, now))

    def _countdown(self, key: Key, entry: Entry, now: float) -> Countdown | None:
        """How long the fast path may replay ``entry`` (counting its TTLs down) without the
        cache: until it expires, or until its prefetch window starts, since deciding a prefetch
        needs the query here. None when that is less than FAST_REPLAY away. ``now`` is the
        time the reply's TTL was computed at, so the elapsed seconds agree with it."""
        cfg = self.cfg
        age = now - entry.stored
        end = float(entry.ttl)
        if cfg.prefetch > 0:
            # remaining <= threshold from elapsed second ttl - threshold on (see _popular).
            end -= math.ceil(cfg.prefetch_percentage / 100 * entry.ttl)
        if end - age <= FAST_REPLAY:
            return None
        mono = time.monotonic()  # the fast path's clock; the cache's may be injected
        return Countdown(born=mono - age, elapsed=int(age), until=mono + (end - age),
                         tick=partial(self._tick, key, entry), fixed=cfg.keepttl)

    def _tick(self, key: Key, entry: Entry) -> bool:
        """What the fast path calls once per elapsed second of replaying ``entry`` (bound with
        functools.partial: smaller than a closure, and one is kept per stored reply): count it
        as the hit that would have reached the cache that second (prefetch popularity, LRU
        recency, as with FAST_REPLAY alone), or stop the replay if the entry was evicted or
        replaced."""
        now = self._now()
        with self._lock:
            if self._stores[entry.kind].get(key) is not entry:  # get(): LRU recency
                return False
            if self.cfg.prefetch > 0:
                if now - entry.last > self.cfg.prefetch_window:
                    entry.hits = 1
                else:
                    entry.hits += 1
                entry.last = now
        return True

    def _lookup(self, key: Key, now: float) -> Entry | None:
        """A fresh entry, or a stale one within serve_stale's window; drops dead ones."""
        for store in (self._stores[DENIAL], self._stores[SUCCESS]):
            entry = store.get(key)
            if entry is None:
                continue
            remaining = entry.remaining(now)
            if remaining > 0 or -remaining < self.cfg.stale:
                return entry
            del store[key]
        return None

    def _popular(self, entry: Entry, now: float, remaining: int) -> bool:
        """Count a hit; True when the entry is popular and close enough to expiry to refresh."""
        cfg = self.cfg
        if cfg.prefetch <= 0:
            return False
        if now - entry.last > cfg.prefetch_window:
            entry.hits = 1
        else:
            entry.hits += 1
        entry.last = now
        # ceil keeps the threshold at >= 1 s: CoreDNS's "or latest 1 second before expiry".
        threshold = math.ceil(cfg.prefetch_percentage / 100 * entry.ttl)
        return entry.hits >= cfg.prefetch and remaining <= threshold

    def _fetch(self, req: Request, key: Key, nxt: Next) -> Response:
        resp = nxt(req)
        entry = self._admit(req, key, resp.msg, refresh=False)
        if entry is None:
            return resp
        # The client sees the stored TTL on a miss too, so TTLs only go down between queries
        # (CoreDNS: "avoid jarring TTL experience 1799 -> 8").
        return Response(self._reply(entry, req, entry.ttl), resp.plugin)

    def _admit(self, req: Request, key: Key, msg: DNSRecord, *, refresh: bool) -> Entry | None:
        """Store ``msg`` when cacheable; returns the stored entry or None."""
        if not _question_matches(req, msg):
            with self._lock:
                self.counters.drops += 1
            return None
        verdict = classify(msg, self.cfg)
        if verdict is None:
            return None
        kind, ttl = verdict
        disabled = self.cfg.disable_success if kind == SUCCESS else self.cfg.disable_denial
        if disabled and under(req.qname_lower, disabled):
            return None
        h = msg.header
        header = DNSHeader(id=0, qr=1, aa=h.aa, ra=h.ra, rcode=h.rcode)
        header.ad = h.ad
        stored = DNSRecord(header, questions=[msg.questions[0]],
                           rr=[_at(r, ttl) for r in msg.rr], auth=[_at(r, ttl) for r in msg.auth],
                           ar=[_at(r, ttl) for r in msg.ar if r.rtype != QTYPE.OPT])
        try:
            packed = stored.pack()
        except Exception as err:  # what dnslib parsed it can pack; if not, do not keep it
            log.debug("not caching %s: %s", req.qname, err)
            return None
        now = self._now()
        entry = Entry(kind, packed, stored=now, ttl=ttl, last=now)
        with self._lock:
            old = self._stores[DENIAL].get(key) or self._stores[SUCCESS].get(key)
            if refresh and old is not None and h.rcode == RCODE.SERVFAIL:
                # A failed refresh must not replace a good answer (fresh or stale) with an
                # error: serve_stale exists to ride out exactly this.
                return None
            if old is not None:
                entry.hits, entry.last = old.hits, old.last  # popularity survives a refresh
            other = DENIAL if kind == SUCCESS else SUCCESS
            self._stores[other].pop(key, None)
            self._stores[kind][key] = entry
            self._sync_evictions()
        return entry

    def _verify(self, req: Request, key: Key, nxt: Next) -> Response | None:
        """serve_stale verify: ask the next plugin; its answer if usable, else None."""
        try:
            resp = nxt(req)
        except Exception as err:
            log.debug("verifying stale %s: %s", req.qname, err)
            return None
        if resp.msg.header.rcode not in (RCODE.NOERROR, RCODE.NXDOMAIN):
            return None
        entry = self._admit(req, key, resp.msg, refresh=True)
        if entry is None:
            return resp
        return Response(self._reply(entry, req, entry.ttl), resp.plugin)

    # -- background refresh ----------------------------------------------------------------------

    def _refresh_later(self, req: Request, key: Key, nxt: Next, *, prefetch: bool) -> None:
        with self._lock:
            if self._closed or key in self._inflight:
                return  # one refresh per name at a time
            self._inflight.add(key)
            if prefetch:
                self.counters.prefetches += 1
        job_req = _copy_request(req)

        def job() -> None:
            try:
                resp = nxt(job_req)
                self._admit(job_req, key, resp.msg, refresh=True)
            except Exception as err:
                log.debug("refreshing %s: %s", job_req.qname, err)
            finally:
                with self._lock:
                    self._inflight.discard(key)
                    self._idle.notify_all()

        if self._background is not None:
            self._background(job)
            return
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(REFRESH_WORKERS, thread_name_prefix="kdns-cache")
            pool = self._pool
        try:
            pool.submit(job)
        except RuntimeError:  # stopped meanwhile
            with self._lock:
                self._inflight.discard(key)
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no refresh is running (True) or ``timeout`` passes (False)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._inflight, timeout)

    def stop(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- replies -------------------------------------------------------------------------------

    def _reply(self, entry: Entry, req: Request, ttl: int) -> DNSRecord:
        """The entry as a reply to ``req``: the client's ID, opcode, RD, CD and question (as
        sent, so 0x20 clients see their case, also on records owned by the question name)."""
        msg = DNSRecord.parse(entry.wire)  # a fresh copy: whoever gets it may change it
        qh, h = req.msg.header, msg.header
        h.id, h.opcode, h.rd, h.cd = qh.id, qh.opcode, qh.rd, qh.cd
        # RFC 6840 §5.8: AD only to a client that asked for it (DO or AD set).
        h.ad = h.ad if (req.do or qh.ad) else 0
        stored = msg.questions[0].qname
        question = req.msg.questions[0]
        qname = question.qname
        msg.questions = [question]
        for sec in (msg.rr, msg.auth, msg.ar):
            for r in sec:
                r.ttl = ttl
                if r.rname == stored:  # the owner is the question name: the client's case
                    r.rname = qname
        return msg

    def metrics(self, ctx: SetupContext) -> Iterator[Any]:
        """CoreDNS's cache families (reference §3), from the plain counters."""
        labels = [server_label(ctx), self.cfg.zones[0] if self.cfg.zones else ".", VIEW]
        c = self.counters
        replays_now = ctx.process.get("replays")  # the server's count, read now
        replays = replays_now() if callable(replays_now) else {}
        replayed = {kind: int(replays.get(token, 0)) for kind, token in self.replay_tokens.items()}
        entries = GaugeMetricFamily("coredns_cache_entries", "The number of elements in the cache.",
                                    labels=["server", "type", "zones", "view"])
        hits = CounterMetricFamily("coredns_cache_hits", "The count of cache hits.",
                                   labels=["server", "type", "zones", "view"])
        evictions = CounterMetricFamily("coredns_cache_evictions", "The count of cache evictions.",
                                        labels=["server", "type", "zones", "view"])
        for kind, hit, evicted in (("success", c.hits_success + replayed[SUCCESS],
                                    c.evictions_success),
                                   ("denial", c.hits_denial + replayed[DENIAL],
                                    c.evictions_denial)):
            entries.add_metric([labels[0], kind, *labels[1:]], self.entries(kind))
            hits.add_metric([labels[0], kind, *labels[1:]], hit)
            evictions.add_metric([labels[0], kind, *labels[1:]], evicted)
        yield from (entries, hits, evictions)
        for name, doc, value in (
            ("coredns_cache_misses", "The count of cache misses. Deprecated, derive misses "
             "from cache hits/requests counters.", c.misses),
            ("coredns_cache_requests", "The count of cache requests.",
             c.requests + sum(replayed.values())),
            ("coredns_cache_prefetch", "The number of times the cache has prefetched a cached "
             "item.", c.prefetches),
            ("coredns_cache_drops", "The number responses that are not cached, because the reply "
             "is malformed.", c.drops),
            ("coredns_cache_served_stale", "The number of requests served from stale cache "
             "entries.", c.served_stale),
        ):
            fam = CounterMetricFamily(name, doc, labels=["server", "zones", "view"])
            fam.add_metric(labels, value)
            yield fam
