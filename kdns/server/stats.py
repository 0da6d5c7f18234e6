"""Request accounting that costs one integer increment per fast-path hit.

Every reply is described by a :data:`StatsKey` (zone, qtype label, rcode, plugin, request and
response size, DO bit). A fast-path entry carries its key and a hit counter; when the fast path
is dropped its hits are folded into :class:`Stats` aggregates. Slow-path replies are added to the
aggregates directly, with their measured duration. The Prometheus collector
(``kdns.server.metrics``) reads aggregates plus live entries at scrape time, so the packet path
never touches a Prometheus object.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

from dnslib import QTYPE, RCODE

from kdns.dns.wire import with_ttls

DURATION_BUCKETS = tuple(0.00025 * 2**i for i in range(16))
"""CoreDNS's ``ExponentialBuckets(0.00025, 2, 16)`` for coredns_dns_request_duration_seconds."""
SIZE_BUCKETS = (0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16e3, 32e3, 48e3, 64e3)
"""CoreDNS's buckets for the request and response size histograms."""

FAST_PATH_SECONDS = 0.000005
"""What a fast-path hit is counted as in the duration histogram's sum. Hits are not timed
one by one (that would double their cost); the benchmark measures them at 1-6 us of server time,
all inside the first bucket (250 us), so the bucket counts are exact and the sum is an estimate."""

TYPE_LABELS = frozenset({"A", "AAAA", "MX", "SOA", "CNAME", "PTR", "TXT", "NS", "SRV", "DS",
                         "DNSKEY", "RRSIG", "NSEC", "NSEC3", "HTTPS", "IXFR", "AXFR", "ANY"})

StatsKey = tuple[str, str, str, str, int, int, bool]
"""(zone, type label, rcode name, plugin, request size, response size, DO bit)."""


_TYPE_LABELS: dict[int, str] = {}
_RCODE_LABELS: dict[int, str] = {}


def type_label(qtype: int) -> str:
    """CoreDNS's ``type`` label: the well-known types by name, anything else ``other``."""
    label = _TYPE_LABELS.get(qtype)
    if label is None:
        label = _TYPE_LABELS[qtype] = _type_label(qtype)  # at most 65536 small strings
    return label


def _type_label(qtype: int) -> str:
    try:
        name = str(QTYPE[qtype])
    except Exception:
        return "other"
    return name if name in TYPE_LABELS else "other"


def rcode_label(rcode: int) -> str:
    label = _RCODE_LABELS.get(rcode)
    if label is None:
        label = _RCODE_LABELS[rcode] = _rcode_label(rcode)
    return label


def _rcode_label(rcode: int) -> str:
    try:
        return str(RCODE[rcode])
    except Exception:
        return str(rcode)


def make_key(zone: str, qtype: int, reply: bytes, plugin: str, req_size: int, do: bool
             ) -> StatsKey:
    rcode = reply[3] & 0xF if len(reply) >= 4 else 2
    # The label functions' dict lookups first, inline: every answer not replayed makes a key.
    return (zone, _TYPE_LABELS.get(qtype) or type_label(qtype),
            _RCODE_LABELS.get(rcode) or rcode_label(rcode), plugin, req_size, len(reply), do)


class Rotation:
    """Several encodings of one answer in different record orders, handed out in turn
    (``loadbalance`` on the fast path: a counter instead of a shuffle per query)."""

    __slots__ = ("i", "replies")

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = replies
        self.i = 0

    def next(self) -> bytes:
        self.i = (self.i + 1) % len(self.replies)
        return self.replies[self.i]


class Ticking:
    """The countdown of a stored reply (``Response.countdown``): where its TTLs are, what they
    count down from, and the elapsed second its bytes currently show."""

    __slots__ = ("born", "fields", "next_at", "sec", "tick")

    def __init__(self, born: float, sec: int, fields: list[tuple[tuple[int, ...], tuple[int, ...]]],
                 tick: Callable[[], bool]) -> None:
        self.born = born
        self.sec = sec
        self.next_at = born + sec + 1
        """``time.monotonic()`` at which the next elapsed second starts."""
        self.fields = fields
        """Per stored reply (one, or each of a rotation): TTL offsets and the TTLs at ``born``;
        empty when the TTLs stay fixed."""
        self.tick = tick

    def advance(self, entry: Entry, now: float) -> bool:
        """Bring ``entry``'s bytes to the elapsed second of ``now``; False (and the entry
        expired) when its producer says to stop. Racing threads at worst patch a second twice."""
        sec = int(now - self.born)
        self.sec = sec
        self.next_at = self.born + sec + 1
        if not self.tick():
            entry.expires = -1.0
            return False
        if not self.fields:
            return True
        reply = entry.reply
        if isinstance(reply, Rotation):
            reply.replies = [with_ttls(r, offsets, ttls, sec)
                             for r, (offsets, ttls) in zip(reply.replies, self.fields, strict=True)]
            return True
        offsets, ttls = self.fields[0]
        patched = with_ttls(reply, offsets, ttls, sec)
        entry.reply = patched
        if entry.tail is not None:
            entry.tail = patched[2:]
        return True


class Entry:
    """One stored fast-path reply: the bytes (or a rotation of them), what they were built
    from, and the hit count."""

    __slots__ = ("deps", "expires", "hits", "patchable", "rcode", "reply", "size", "stats",
                 "tail", "tally", "ticking", "waste")

    def __init__(self, reply: bytes | Rotation, stats: StatsKey, expires: float = 0.0, *,
                 exact: bool = True, tally: Hashable | None = None,
                 deps: tuple[Hashable, ...] | None = None, size: int = 0,
                 patchable: bool = True) -> None:
        self.reply = reply
        self.stats = stats
        self.tally = tally
        """The producing plugin's token for its replays (``Response.tally``), or None."""
        self.deps = deps
        """The dependency keys the reply was built from (``Response.deps``)."""
        self.patchable = patchable
        """Other spellings of the name may be patched in (False: exact hits only)."""
        self.size = size
        """Bytes charged to the store's budget for this entry."""
        self.hits = 0
        self.expires = expires
        """time.monotonic() after which this reply is stale (0: only when its data changes)."""
        self.rcode = (reply if type(reply) is bytes else reply.replies[0])[3] & 0xF  # type: ignore[union-attr]
        """The reply's rcode (per-client counts on hits)."""
        self.waste: str | None = None
        """For an NXDOMAIN: which clients' search waste it is (``ClientScoper.waste_for``)."""
        self.ticking: Ticking | None = None
        """Set for a reply whose TTLs count down on replay (a cache hit)."""
        self.tail: bytes | None = reply[2:] if exact and type(reply) is bytes else None
        """Everything after the ID, for the exact-bytes hit: set only for a single reply
        spelled exactly as its key (the hit still checks ``expires``)."""


@dataclass(slots=True)
class Duration:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0


@dataclass(slots=True)
class Stats:
    """Aggregates for one dispatcher (one listener address and protocol)."""

    counts: dict[StatsKey, int] = field(default_factory=dict)
    durations: dict[tuple[str, str], Duration] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    panics: int = 0
    replays: dict[Hashable, int] = field(default_factory=dict)
    """Fast-path hits by the producing plugin's token (``Response.tally``)."""

    def add(self, key: StatsKey, seconds: float) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            d = self.durations.get((key[0], key[1]))
            if d is None:
                d = self.durations[(key[0], key[1])] = Duration()
            d.buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
            d.total += seconds

    def fold(self, entries: Iterable[Entry]) -> None:
        """Move the hits of entries about to be dropped into the aggregates."""
        with self.lock:
            for e in entries:
                if e.hits:
                    self._add_hits(e.stats, e.hits)
                    if e.tally is not None:
                        self.replays[e.tally] = self.replays.get(e.tally, 0) + e.hits

    def _add_hits(self, key: StatsKey, hits: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + hits
        d = self.durations.get((key[0], key[1]))
        if d is None:
            d = self.durations[(key[0], key[1])] = Duration()
        d.buckets[0] += hits
        d.total += hits * FAST_PATH_SECONDS

    def replay_counts(self, entries: Iterable[Entry]) -> dict[Hashable, int]:
        """Replays by token: those folded so far plus the live entries' hits."""
        with self.lock:
            out = dict(self.replays)
        for e in list(entries):
            if e.hits and e.tally is not None:
                out[e.tally] = out.get(e.tally, 0) + e.hits
        return out

    def snapshot(self, entries: Iterable[Entry]) -> Stats:
        """Aggregates plus the live entries' hits, as a new Stats (for a scrape)."""
        out = Stats()
        with self.lock:
            out.counts = dict(self.counts)
            out.durations = {k: Duration(list(v.buckets), v.total)
                             for k, v in self.durations.items()}
            out.panics = self.panics
            out.replays = dict(self.replays)
        for e in list(entries):
            if e.hits:
                out._add_hits(e.stats, e.hits)
                if e.tally is not None:
                    out.replays[e.tally] = out.replays.get(e.tally, 0) + e.hits
        return out
