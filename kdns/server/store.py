"""The store of ready-made replies of one listener: bounded in bytes, evicted by dependency.

This module owns which encoded replies the fast path may replay. Each entry is keyed by the
query bytes after the ID with the name lower-cased (:func:`kdns.dns.wire.fast_key`): one entry
per name, type, class, flags and EDNS record, whatever the client's letter case, so a client
randomising case (0x20) cannot grow it. The reply is stored spelled in lower case too; a hit
in another spelling is patched with the client's.

Each entry records what it was built from: the dependency keys of ``Response.deps`` and the
data version (:data:`kdns.plugins.base.GENERATION`) read before the chain ran. A change evicts
the entries indexed under the keys it names (and the few entries that declared no keys), and
:meth:`ReplyStore.put` refuses a reply when a change of one of its keys happened between that
version and now, so a reply built from older data is never stored as current.

Memory is bounded by :attr:`ReplyStore.max_bytes`: each entry is charged its bytes plus a
fixed overhead; past the budget the oldest entries go first (dict order is insertion order).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

from kdns.plugins.base import GENERATION
from kdns.server.stats import Entry, Rotation, Stats

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
"""Default budget of one store (one listener address and protocol): 16 MiB, about 26,000
cluster replies. ``kdns serve --reply-store-mb`` sets it (docs/operations.md, Sizing)."""
ENTRY_OVERHEAD = 450
"""Bytes charged per entry beyond its key and its reply (counted twice: the reply and the
copy without the ID that exact hits replay): the Entry object, the bytes objects' headers, the
dict slot, up to two dependency keys and their place in the index. Measured with tracemalloc:
10,000 stored A replies of cluster names (59-byte key, 63-byte reply, two keys each built per
answer as the answer function built them then) took 637 bytes per entry; key + 2 x reply + 450
= 635. Since an answer about a Service lists only the Service's own key, 10,000 first answers
of Service names through the cold path (42-byte key, 60-byte reply) took 584 bytes each
against 612 charged: the charge is kept, a little above what a positive entry holds."""


SCOPE_OVERHEAD = 64
"""Bytes charged for the (scope, key) tuple of a reply stored for one client scope."""

StoreKey = bytes | tuple[str, bytes]
"""The query bytes after the ID (name lower-cased), or (client scope, those bytes) for a reply
that depended on who asked (``isolate``): a tuple never equals a query's bytes."""

TICKING_OVERHEAD = 600
"""Bytes charged beyond :data:`ENTRY_OVERHEAD` for a reply whose TTLs count down (a cache hit):
its TTL offsets and starting TTLs and the cache's callback. Measured with tracemalloc: 10,000
countdowns of one-record replies took 611 bytes each."""


class ReplyStore:
    """Replies of one listener. Hits read :attr:`entries` without a lock (one dict lookup);
    every change to it happens under the lock, from whichever thread stores or catches up."""

    __slots__ = ("_any", "_by_dep", "_lock", "bytes", "entries", "evictions", "max_bytes",
                 "refused", "stats", "version")

    def __init__(self, stats: Stats, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.entries: dict[StoreKey, Entry] = {}
        self.stats = stats
        self.max_bytes = max_bytes
        self.version = GENERATION.value
        """The data version up to which changes have been applied to this store."""
        self.bytes = 0
        self.evictions = 0
        """Entries dropped for the byte budget (not for changes)."""
        self.refused = 0
        """Replies not stored because their data changed while they were built."""
        self._by_dep: dict[Hashable, StoreKey | set[StoreKey]] = {}
        """Dependency key -> the entry keys depending on it: one key alone (most keys, such
        as a never-asked name's, have one entry), else a set."""
        self._any: set[StoreKey] = set()
        """Entries that declared no dependency keys: any data change drops them."""
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.entries)

    def catch_up(self) -> None:
        """Apply every change since :attr:`version`: drop the entries that depend on it."""
        with self._lock:
            self._catch_up_locked()

    def put(self, key: StoreKey, entry: Entry, built_at: int | None) -> bool:
        """Store ``entry`` under ``key`` unless data it depends on changed after ``built_at``
        (None: it depends on no data). Returns whether it was stored."""
        reply = entry.reply
        size = ENTRY_OVERHEAD + (len(key) if isinstance(key, bytes)
                                 else len(key[1]) + SCOPE_OVERHEAD) + (
            2 * len(reply) if isinstance(reply, bytes) else sum(len(r) for r in reply.replies))
        if entry.ticking is not None:
            size += TICKING_OVERHEAD
        if size > self.max_bytes:
            return False
        with self._lock:
            if GENERATION.value != self.version:
                self._catch_up_locked()
            if built_at is not None and built_at != self.version:
                _now, changed = GENERATION.since(built_at)
                if changed is None or (changed and (entry.deps is None
                                                    or not changed.isdisjoint(entry.deps))):
                    self.refused += 1
                    return False
            if key in self.entries:
                self._drop([key])
            if self.bytes + size > self.max_bytes:
                self._shrink(self.max_bytes - self.max_bytes // 8 - size)
            entry.size = size
            self.entries[key] = entry
            self.bytes += size
            deps = entry.deps
            if deps is None:
                self._any.add(key)
                return True
            by_dep = self._by_dep
            for dep in deps:
                keys = by_dep.setdefault(dep, key)  # the first entry of a key: stored as is
                if keys is not key:
                    if isinstance(keys, set):
                        keys.add(key)
                    elif keys != key:
                        by_dep[dep] = {keys, key}
            return True

    def clear(self) -> None:
        with self._lock:
            self._clear_locked()

    # -- under the lock ---------------------------------------------------------------------

    def _catch_up_locked(self) -> None:
        if GENERATION.value == self.version:
            return
        now, changed = GENERATION.since(self.version)
        if changed is None:
            self._clear_locked()
        elif changed:
            victims = self._any
            self._any = set()
            for dep in changed:
                keys = self._by_dep.pop(dep, None)
                if keys is None:
                    continue
                if isinstance(keys, set):
                    victims |= keys
                else:
                    victims.add(keys)
            self._drop(victims)
        self.version = now

    def _clear_locked(self) -> None:
        self.stats.fold(self.entries.values())
        self.entries = {}
        self._by_dep = {}
        self._any = set()
        self.bytes = 0

    def _shrink(self, target: int) -> None:
        """Drop the oldest entries until at most ``target`` bytes are charged."""
        victims: list[StoreKey] = []
        freed, excess = 0, self.bytes - max(0, target)
        for key, entry in self.entries.items():
            if freed >= excess:
                break
            victims.append(key)
            freed += entry.size
        self.evictions += len(victims)
        self._drop(victims)

    def _drop(self, keys: set[StoreKey] | list[StoreKey]) -> None:
        gone: list[Entry] = []
        for key in keys:
            entry = self.entries.pop(key, None)
            if entry is None:
                continue
            gone.append(entry)
            self.bytes -= entry.size
            if entry.deps is None:
                self._any.discard(key)
                continue
            for dep in entry.deps:
                others = self._by_dep.get(dep)
                if others is None:
                    continue
                if not isinstance(others, set):
                    if others == key:
                        del self._by_dep[dep]
                    continue
                others.discard(key)
                if len(others) == 1:
                    (last,) = others
                    self._by_dep[dep] = last
                elif not others:
                    del self._by_dep[dep]
        if gone:
            self.stats.fold(gone)


def stored_form(reply: bytes | Rotation, key: bytes, end: int) -> bytes | Rotation:
    """``reply`` with its question spelled as ``key`` spells it (lower case), so one entry
    serves every spelling: exact hits replay it, others patch their spelling in."""
    name = key[10 : end - 2]
    if type(reply) is bytes:
        if reply[12:end] == name:
            return reply
        return reply[:12] + name + reply[end:]
    assert isinstance(reply, Rotation)
    return Rotation([r[:12] + name + r[end:] for r in reply.replies])
