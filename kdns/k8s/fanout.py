"""One source, many sinks: how N worker processes share one set of API watches.

With ``kdns serve --workers N`` the supervisor runs each distinct source (API informers or the
manifest reader) once. :class:`SharedSource` is the sink that source feeds: it keeps a
:class:`Mirror` of the slim objects (so a worker that starts late, or restarts, gets the whole
state) and turns every sink call into an :data:`Op` that is batched, encoded once and queued to
every subscriber. The workers apply the ops to their own view builders (:func:`apply_ops`), so
the API server sees one set of list+watch requests per kdns instance, whatever N is.

Ordering: applying an op to the mirror, queueing it and registering a subscriber all happen
under one lock, and a subscriber's replay is queued before any op that follows it, so every
subscriber sees exactly the state the mirror holds, then every later change, in order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from kdns.k8s.source import Key, Sink, Source, SourceFactory

log = logging.getLogger("kdns.workers")

Op = tuple[Any, ...]
"""("b", kind) begin_list, ("u", kind, obj) upsert, ("d", kind, key) delete,
("e", kind, seen) end_list, ("s", kind, stale, reason) set_stale."""

Send = Callable[[bytes], object]
"""Queues one encoded frame to one worker (its channel's ``send_frame``)."""
Frame = Callable[[list[Op]], bytes]
"""Encodes a batch of ops as one frame."""

BATCH_DELAY = 0.002
"""How long the flusher lets a burst gather before sending it: a relist of thousands of objects
goes out as a few large frames instead of one frame per object, at the price of 2 ms on a single
change (the goal for a change becoming visible is 50 ms p50)."""


def apply_ops(sink: Sink, ops: list[Op]) -> None:
    """Replay ops on a sink, in order (the worker side of :class:`SharedSource`)."""
    for op in ops:
        tag, kind = op[0], op[1]
        if tag == "u":
            sink.upsert(kind, op[2])
        elif tag == "d":
            sink.delete(kind, op[2])
        elif tag == "b":
            sink.begin_list(kind)
        elif tag == "e":
            sink.end_list(kind, op[2])
        elif tag == "s":
            sink.set_stale(kind, op[2], op[3])


class Mirror:
    """The objects a source has delivered, by kind, and where each kind's list stands."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[Key, Any]] = {}
        self.listing: set[str] = set()
        self.listed: set[str] = set()
        self.stale: dict[str, str] = {}

    def apply(self, op: Op) -> None:
        tag, kind = op[0], op[1]
        objs = self.objects.setdefault(kind, {})
        if tag == "u":
            objs[_key(op[2])] = op[2]
        elif tag == "d":
            objs.pop(op[2], None)
        elif tag == "b":
            self.listing.add(kind)
        elif tag == "e":
            seen: set[Key] = op[2]
            for key in [k for k in objs if k not in seen]:
                del objs[key]
            self.listing.discard(kind)
            self.listed.add(kind)
        elif tag == "s":
            if op[2]:
                self.stale[kind] = op[3]
            else:
                self.stale.pop(kind, None)

    def replay(self) -> list[Op]:
        """Ops that bring an empty sink to this state. A kind in the middle of a list gets no
        ``end_list``: the source's own ``end_list`` (which follows) completes it."""
        ops: list[Op] = []
        for kind, objs in self.objects.items():
            if kind not in self.listing and kind not in self.listed:
                continue
            ops.append(("b", kind))
            ops.extend(("u", kind, obj) for obj in objs.values())
            if kind not in self.listing:
                ops.append(("e", kind, set(objs)))
        ops.extend(("s", kind, True, reason) for kind, reason in self.stale.items())
        return ops


def _key(obj: Any) -> Key:
    return (getattr(obj, "namespace", ""), obj.name)


class SharedSource:
    """A source run once for every subscriber: a :class:`Sink` for the source, a mirror, and
    a batching fan-out to its subscribers.

    A subscriber is one view builder in one worker. Live changes go once per worker link
    (``frame`` encodes them once for all links), however many builders there subscribe; the
    worker hands them to each of its builders for this source.
    """

    def __init__(self, key: Hashable, build: SourceFactory, specs: list[Any],
                 frame: Frame) -> None:
        self.key = key
        self.mirror = Mirror()
        self._frame = frame
        self._lock = threading.Lock()
        self._pending: list[Op] = []
        self._subs: dict[object, tuple[Send, set[object]]] = {}
        self._wake = threading.Event()
        self._stopping = False
        self.started = False
        self.source: Source = build(specs, self)
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                         name="kdns-fanout")

    # -- lifecycle ----------------------------------------------------------------------------

    def load_once(self) -> None:
        """Fail now, with the source's own message, if a manifest does not load."""
        load = getattr(self.source, "load_once", None)
        if load is not None:
            load()

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        self._flusher.start()
        self.source.start()

    def stop(self) -> None:
        self.source.stop()
        self._stopping = True
        self._wake.set()

    def describe(self) -> str:
        return self.source.describe()

    def synced(self) -> bool:
        return self.source.synced()

    # -- subscribers --------------------------------------------------------------------------

    def subscribe(self, link: object, sub: object, send: Send, replay: Frame) -> None:
        """Send the current state to subscriber ``sub`` on ``link`` (encoded by ``replay``),
        then every later change on that link."""
        with self._lock:
            self._flush_locked()
            send(replay(self.mirror.replay()))
            self._subs.setdefault(link, (send, set()))[1].add(sub)

    def unsubscribe(self, link: object, sub: object | None = None) -> None:
        """Drop one subscriber, or (``sub`` None) every subscriber on ``link``."""
        with self._lock:
            entry = self._subs.get(link)
            if entry is None:
                return
            if sub is not None:
                entry[1].discard(sub)
            if sub is None or not entry[1]:
                del self._subs[link]

    @property
    def subscribers(self) -> int:
        return sum(len(ids) for _, ids in self._subs.values())

    # -- Sink (called from the source's threads) ----------------------------------------------

    def _op(self, op: Op) -> None:
        with self._lock:
            self.mirror.apply(op)
            self._pending.append(op)
        self._wake.set()

    def begin_list(self, kind: str) -> None:
        self._op(("b", kind))

    def upsert(self, kind: str, obj: Any) -> None:
        self._op(("u", kind, obj))

    def delete(self, kind: str, key: Key) -> None:
        self._op(("d", kind, key))

    def end_list(self, kind: str, seen: set[Key]) -> None:
        self._op(("e", kind, set(seen)))

    def set_stale(self, kind: str, stale: bool, reason: str = "") -> None:
        self._op(("s", kind, stale, reason))

    # -- fan-out ------------------------------------------------------------------------------

    def _flush_loop(self) -> None:
        while not self._stopping:
            self._wake.wait()
            if self._stopping:
                return
            self._wake.clear()
            time.sleep(BATCH_DELAY)
            with self._lock:
                self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        ops, self._pending = self._pending, []
        if not self._subs:
            return
        data = self._frame(ops)
        for link, (send, _ids) in list(self._subs.items()):
            try:
                send(data)
            except Exception:  # one broken link must not starve the others
                log.exception("delivering cluster changes to %s", link)
