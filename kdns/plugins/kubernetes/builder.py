"""The builder that keeps the kubernetes view current.

This module owns the state behind every kubernetes answer. A source (API informers or the
manifest reader) feeds :class:`ViewBuilder` through the :class:`kdns.k8s.source.Sink` protocol
from its own threads. The builder keeps compact per-key derived entries and publishes a
:class:`~kdns.plugins.kubernetes.view.View` by one reference swap (STYLE lesson 3): the query
path reads ``builder.view`` and never takes the builder's lock.

Incremental by construction: an event touches one Service's entry (and that entry's addresses
in the reverse index), in copy-on-write shards (:mod:`kdns.plugins.kubernetes.index`). Bursts
are coalesced (at most one publish per ~15 ms, longer when publishing gets expensive), and
nothing is published while a kind is between ``begin_list`` and ``end_list``, so a relist is
seen all at once. The first publish happens when every watched kind has finished its first
list: that is "synced".

Every publish is followed by ``GENERATION.bump(keys)`` naming what it changed (the Services,
namespaces, reverse IPs and pod IPs of :mod:`kdns.plugins.kubernetes.deps`), after the swap, so
the server evicts only the stored replies read from those; the first publish names everything.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any, NamedTuple

from kdns.k8s.objects import EndpointSlice, Namespace, Pod, Service
from kdns.k8s.source import RESOURCES, Key
from kdns.plugins.base import GENERATION
from kdns.plugins.kubernetes import deps as dep
from kdns.plugins.kubernetes.index import Shards
from kdns.plugins.kubernetes.view import EpGroup, SvcEntry, View, _PodNsVal, _ReverseVal

log = logging.getLogger("kdns.kubernetes")

PUBLISH_INTERVAL = 0.015
"""Minimum time between publishes; the effective interval grows with the cost of a publish."""
MAX_PUBLISH_INTERVAL = 0.5
POD_NAME_MAX = 63
"""``endpoint_pod_names`` uses a pod name only when it fits in one DNS label (< 64 chars)."""


class _SliceRec(NamedTuple):
    service: str
    group: EpGroup
    """Every address of the slice (ready or not)."""
    ready: int
    """Bit i set when ``group.ips[i]`` is ready."""


def _entry_ips(entry: SvcEntry | None) -> set[str]:
    if entry is None:
        return set()
    ips = set(entry.service.cluster_ips)
    for g in entry.groups:
        ips.update(g.ips)
    return ips


PROGRAMMING_BUCKETS = tuple(0.001 * 2**i for i in range(20))
"""CoreDNS's ExponentialBuckets(0.001, 2, 20) for the DNS programming latency."""
SERVICE_KINDS = ("cluster_ip", "headless_with_selector", "headless_without_selector")


class ProgrammingHistogram:
    """Bucket counts of DNS programming latency (plain ints, read by the metrics collector)."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(PROGRAMMING_BUCKETS) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(PROGRAMMING_BUCKETS, seconds)] += 1
        self.count += 1
        self.total += seconds


class ViewBuilder:
    """The :class:`~kdns.k8s.source.Sink` that owns the cluster state and publishes Views.

    Thread-safe: sink methods may be called from any source thread. ``start()`` runs the
    publisher thread; without it, :meth:`flush` publishes synchronously (tests, tools).
    """

    def __init__(
        self,
        kinds: Iterable[str] = ("services", "endpointslices", "namespaces"),
        *,
        namespaces: frozenset[str] = frozenset(),
        endpoint_pod_names: bool = False,
        min_interval: float = PUBLISH_INTERVAL,
        now: Callable[[], float] = time.time,
        on_publish: Callable[[View], None] | None = None,
    ) -> None:
        self._kinds = tuple(kinds)
        unknown = set(self._kinds) - set(RESOURCES)
        if unknown:
            raise ValueError(f"unknown resource kinds {sorted(unknown)}")
        self._ns_filter = namespaces
        self._pod_names = endpoint_pod_names
        self._min_interval = min_interval
        self._interval = min_interval
        self._now = now
        self._on_publish = on_publish

        self._cond = threading.Condition(threading.Lock())
        self._entries: Shards[Key, SvcEntry] = Shards()
        self._slices: dict[Key, _SliceRec] = {}
        self._by_service: dict[Key, Key | tuple[Key, ...]] = {}
        """(ns, service) -> keys of its slices (slices may arrive before their Service)."""
        self._reverse: Shards[str, _ReverseVal] = Shards()
        self._namespaces: set[str] = set()
        self._visible: dict[str, frozenset[str]] = {}
        """Annotated namespaces -> their ``kdns.io/dns-visible-to`` client namespaces."""
        self._pods: dict[Key, tuple[str, ...]] = {}
        """Running, non-hostNetwork pods only: key -> IPs."""
        self._ip_pods: dict[str, Key | tuple[Key, ...]] = {}
        self._pod_ns: Shards[str, _PodNsVal] = Shards()

        self._keys: set[Hashable] = set()
        """Dependency keys changed since the last publish (:mod:`kdns.plugins.kubernetes.deps`)."""
        self._dirty: set[str] = set()
        """What changed since the last publish (only "namespaces" is copied on publish)."""
        self._listing: set[str] = set()
        self._listed: set[str] = set()
        self._stale: set[str] = set()
        self._pending = False
        self._modified = int(now())
        self._reserial = False
        """The last publish reused the previous SOA serial (see _publish_locked)."""
        self._last_publish = 0.0
        self.view = View.empty()
        """The current view: replaced whole by each publish, read without a lock (a plain
        attribute, not a property: every cold answer reads it)."""
        self._synced_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.publishes = 0
        self.last_publish_seconds = 0.0
        self._programming_pending: list[tuple[str, float]] = []
        self.programming = {kind: ProgrammingHistogram() for kind in SERVICE_KINDS}
        """coredns_kubernetes_dns_programming_duration_seconds by service_kind."""

    # -- what readers use -------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self._synced_event.is_set()

    def wait_synced(self, timeout: float | None) -> bool:
        return self._synced_event.wait(timeout)

    def pod_of(self, ip: str) -> Key | None:
        """(namespace, name) of the Running, non-hostNetwork pod with ``ip`` (the metadata
        label kubernetes/client-pod-name); None when no pod or several claim it. One dict
        lookup from the query path, atomic against the builder's writes."""
        val = self._ip_pods.get(ip)
        return val if val is not None and isinstance(val[0], str) else None

    # -- Sink -------------------------------------------------------------------------------

    def begin_list(self, kind: str) -> None:
        with self._cond:
            self._listing.add(kind)

    def end_list(self, kind: str, seen: set[Key]) -> None:
        with self._cond:
            if kind == "services":
                for key in [k for k in self._entries.all_keys() if k not in seen]:
                    self._set_service(key, None)
            elif kind == "endpointslices":
                for key in [k for k in self._slices if k not in seen]:
                    self._set_slice(key, None)
            elif kind == "namespaces":
                gone = {n for n in self._namespaces if ("", n) not in seen}
                if gone:
                    self._namespaces -= gone
                    for n in gone:
                        self._visible.pop(n, None)
                    self._keys.update(dep.namespace(n) for n in gone)
                    self._changed("namespaces")
            elif kind == "pods":
                for key in [k for k in self._pods if k not in seen]:
                    self._set_pod(key, ())
            self._listing.discard(kind)
            if kind not in self._listed:
                self._listed.add(kind)
                self._pending = True  # the first sync publishes even when nothing was listed
            self._cond.notify_all()

    def upsert(self, kind: str, obj: Any) -> None:
        with self._cond:
            if kind == "services":
                self._upsert_service(obj)
            elif kind == "endpointslices":
                self._upsert_slice(obj)
            elif kind == "namespaces":
                self._upsert_namespace(obj)
            elif kind == "pods":
                self._upsert_pod(obj)
            else:
                return
            if self._pending:
                self._cond.notify_all()

    def delete(self, kind: str, key: Key) -> None:
        with self._cond:
            if kind == "services":
                self._set_service(key, None)
            elif kind == "endpointslices":
                self._set_slice(key, None)
            elif kind == "namespaces":
                if key[1] in self._namespaces:
                    self._namespaces.discard(key[1])
                    self._visible.pop(key[1], None)
                    self._keys.add(dep.namespace(key[1]))
                    self._changed("namespaces")
            elif kind == "pods":
                self._set_pod(key, ())
            if self._pending:
                self._cond.notify_all()

    def set_stale(self, kind: str, stale: bool, reason: str = "") -> None:
        with self._cond:
            was = bool(self._stale)
            if stale:
                self._stale.add(kind)
            else:
                self._stale.discard(kind)
            now_stale = bool(self._stale)
            if was != now_stale:
                if now_stale:
                    log.warning("Kubernetes data may be stale (%s): %s", kind, reason or "?")
                else:
                    log.info("Kubernetes data is current again")
                if self.view.synced:
                    self.view = self.view.replace_stale(now_stale)

    # -- services and slices ----------------------------------------------------------------

    def _exposed(self, namespace: str) -> bool:
        # A static `namespaces` filter lets us drop objects of hidden namespaces at the door.
        return not self._ns_filter or namespace in self._ns_filter

    def _upsert_service(self, svc: Service) -> None:
        if not self._exposed(svc.namespace):
            return
        old = self._entries.get(svc.key)
        if old is not None and old.service == svc:
            return
        self._set_service(svc.key, svc)

    def _set_service(self, key: Key, svc: Service | None) -> None:
        old = self._entries.get(key)
        if svc is None and old is None:
            return
        if old is not None:
            key = old.key
        if svc is None:
            self._entries.pop(key)
            new: SvcEntry | None = None
        else:
            new = SvcEntry(key, svc, self._merge(key, svc))
            self._entries[key] = new
        self._reindex(key, old, new)
        self._changed("entries")

    def _slice_rec(self, s: EndpointSlice) -> _SliceRec | None:
        if not s.service or s.address_type == "FQDN":
            return None  # slices without a service label belong to no DNS name
        ips: list[str] = []
        hosts: list[str] = []
        ready = 0
        for ep in s.endpoints:
            host = ep.hostname
            if not host and self._pod_names and ep.pod_name and len(ep.pod_name) <= POD_NAME_MAX:
                host = ep.pod_name.lower()
            for ip in ep.addresses:
                if ep.ready:
                    ready |= 1 << len(ips)
                ips.append(ip)
                hosts.append(host)
        if not ips:
            return _SliceRec(s.service, EpGroup(s.ports, (), None), 0)
        return _SliceRec(s.service, EpGroup(s.ports, tuple(ips),
                                            tuple(hosts) if any(hosts) else None), ready)

    def _upsert_slice(self, s: EndpointSlice) -> None:
        if not self._exposed(s.namespace):
            return
        rec = self._slice_rec(s)
        if rec is not None and self._slices.get(s.key) == rec:
            return
        self._set_slice(s.key, rec)
        if s.trigger_time is not None and "endpointslices" not in self._listing and s.service:
            # Only watch events count: a (re)list replays old trigger times. The sample is
            # taken at the publish that makes the change answerable, not at arrival.
            entry = self._entries.get((s.namespace, s.service))
            if entry is not None:
                kind = "headless_with_selector" if entry.service.headless else "cluster_ip"
                self._programming_pending.append((kind, s.trigger_time))

    def _set_slice(self, key: Key, rec: _SliceRec | None) -> None:
        old = self._slices.get(key)
        if old is None and rec is None:
            return
        ns = key[0]
        if rec is None:
            del self._slices[key]
        else:
            self._slices[key] = rec
        if old is not None and (rec is None or old.service != rec.service):
            skey = (ns, old.service)
            rest = tuple(k for k in self._slice_keys(skey) if k != key)
            if rest:
                self._by_service[skey] = rest[0] if len(rest) == 1 else rest
            else:
                self._by_service.pop(skey, None)
            self._refresh(skey)
        if rec is not None:
            skey = (ns, rec.service)
            entry = self._entries.get(skey)
            if entry is not None:
                skey = entry.key  # share the Service's key tuple
            keys = self._slice_keys(skey)
            if key not in keys:
                # Most Services have one slice: store its key alone, not in a 1-tuple.
                self._by_service[skey] = key if not keys else tuple(sorted((*keys, key)))
            self._refresh(skey)

    def _slice_keys(self, skey: Key) -> tuple[Key, ...]:
        val = self._by_service.get(skey)
        if val is None:
            return ()
        return (val,) if isinstance(val[0], str) else val

    def _refresh(self, skey: Key) -> None:
        """Re-merge a Service's endpoints after one of its slices changed."""
        old = self._entries.get(skey)
        if old is None:
            return  # the slice waits for its Service
        new = SvcEntry(old.key, old.service, self._merge(skey, old.service))
        if new.groups == old.groups:
            return
        self._entries[old.key] = new
        self._reindex(old.key, old, new)
        self._changed("entries")

    def _merge(self, skey: Key, svc: Service) -> tuple[EpGroup, ...]:
        """All slices of a Service, both families, each address once (the first slice by name
        wins: slices can overlap while the controller moves endpoints, reference §5 P13)."""
        if svc.type == "ExternalName":
            return ()
        groups: list[EpGroup] = []
        seen: set[str] = set()
        for slice_key in self._slice_keys(skey):
            rec = self._slices[slice_key]
            g = rec.group
            if not g.ips:
                continue
            full = (1 << len(g.ips)) - 1
            if (svc.publish_not_ready or rec.ready == full) and seen.isdisjoint(g.ips):
                groups.append(g)  # the common case shares the slice's tuples as they are
                seen.update(g.ips)
                continue
            ips: list[str] = []
            hosts: list[str] = []
            for i, ip in enumerate(g.ips):
                if ip in seen or not (svc.publish_not_ready or rec.ready >> i & 1):
                    continue
                seen.add(ip)
                ips.append(ip)
                hosts.append(g.hosts[i] if g.hosts is not None else "")
            if ips:
                groups.append(EpGroup(g.ports, tuple(ips), tuple(hosts) if any(hosts) else None))
        return tuple(groups)

    def _reindex(self, key: Key, old: SvcEntry | None, new: SvcEntry | None) -> None:
        before, after = _entry_ips(old), _entry_ips(new)
        # The Service's own names, and the reverse names of every address it had or has
        # (an endpoint's label may change while its address stays).
        self._keys.add(dep.service(key[0], key[1]))
        self._keys.update(dep.ip(ip) for ip in before | after)
        if before == after:
            return
        rev = self._reverse
        for ip in before - after:
            val = rev.get(ip)
            if val is None:
                continue
            if isinstance(val[0], str):
                if val == key:
                    rev.pop(ip)
            else:
                rest = tuple(k for k in val if k != key)
                rev[ip] = rest[0] if len(rest) == 1 else rest
        for ip in after - before:
            val = rev.get(ip)
            if val is None:
                rev[ip] = key
            elif isinstance(val[0], str):
                if val != key:
                    rev[ip] = (val, key)
            else:
                rev[ip] = (*val, key)
        self._changed("reverse")

    # -- namespaces and pods ----------------------------------------------------------------

    def _upsert_namespace(self, ns: Namespace) -> None:
        if not self._exposed(ns.name):
            return
        if ns.name in self._namespaces and self._visible.get(ns.name) == ns.visible_to:
            return
        # A changed annotation changes who may see the namespace's names: it is a change of
        # the namespace key, so the stored replies read from it go.
        if ns.visible_to is None:
            self._visible.pop(ns.name, None)
        else:
            self._visible[ns.name] = ns.visible_to
        self._namespaces.add(ns.name)
        self._keys.add(dep.namespace(ns.name))
        self._changed("namespaces")

    def _upsert_pod(self, pod: Pod) -> None:
        # Only Running, non-hostNetwork pods say anything reliable about who owns an IP.
        ips = pod.ips if pod.running and not pod.host_network else ()
        self._set_pod(pod.key, ips)

    def _set_pod(self, key: Key, ips: tuple[str, ...]) -> None:
        old = self._pods.get(key, ())
        if old == ips:
            return
        if ips:
            self._pods[key] = ips
        else:
            self._pods.pop(key, None)
        self._keys.update(dep.pod(ip) for ip in {*old, *ips})
        for ip in set(old) - set(ips):
            val = self._ip_pods.get(ip)
            if val is None:
                continue
            owners = [val] if isinstance(val[0], str) else list(val)
            owners = [k for k in owners if k != key]
            self._set_ip_owners(ip, owners)
        for ip in set(ips) - set(old):
            val = self._ip_pods.get(ip)
            owners = [] if val is None else ([val] if isinstance(val[0], str) else list(val))
            owners.append(key)
            self._set_ip_owners(ip, owners)
        self._changed("pod_ns")

    def _set_ip_owners(self, ip: str, owners: list[Key]) -> None:
        if not owners:
            self._ip_pods.pop(ip, None)
            self._pod_ns.pop(ip)
            return
        self._ip_pods[ip] = owners[0] if len(owners) == 1 else tuple(owners)
        spaces = tuple(sorted({k[0] for k in owners}))
        self._pod_ns[ip] = spaces[0] if len(spaces) == 1 else spaces

    # -- publishing -------------------------------------------------------------------------

    def _changed(self, what: str) -> None:
        self._dirty.add(what)
        self._pending = True
        self._modified = int(self._now())

    def _can_publish(self) -> bool:
        return self._pending and not self._listing and self._listed.issuperset(self._kinds)

    def flush(self) -> bool:
        """Publish now if there is something to publish and no list is in progress."""
        with self._cond:
            if not self._can_publish():
                return False
            self._publish_locked()
            return True

    def _publish_locked(self) -> None:
        t0 = time.perf_counter()
        prev, dirty = self.view, self._dirty
        first = not prev.synced
        serial = self._modified
        self._reserial = False
        if not first and serial <= prev.serial:
            # Zone transfer: two different views must never share a SOA serial, or a secondary
            # that copied the first would never fetch the second. Serials are seconds, so a
            # second change within one second keeps the serial now and is re-published under
            # the next second's serial by _run (never ahead of the clock, so the serial stays
            # monotonic across restarts).
            serial = prev.serial
            self._reserial = True
        view = View(
            self._entries.freeze(),
            self._reverse.freeze(),
            frozenset(self._namespaces) if first or "namespaces" in dirty else prev._namespaces,
            self._pod_ns.freeze(),
            visible=dict(self._visible) if first or "namespaces" in dirty else prev._visible,
            serial=serial,
            synced=True,
            stale=bool(self._stale),
            generation=-1,
        )
        self.view = view  # the one reference swap readers see
        # Then name what changed (after the swap: a reply stamped with the version before this
        # bump may have read the old view, and the server refuses or evicts it).
        self._keys.add(dep.SERIAL)
        spaces = {k[1] for k in self._keys if isinstance(k, tuple) and k[0] == "ns"}
        if spaces and not first:
            # Answers about a Service list only its key (SvcEntry.deps), which stands for
            # its namespace's existence and visibility too: a namespace that changed names
            # its Services (rare: namespaces come and go far less often than endpoints).
            self._keys.update(dep.service(ns, name) for ns, name in self._entries.all_keys()
                              if ns in spaces)
        view.generation = GENERATION.bump(None if first else self._keys)
        self._keys = set()
        self._dirty = set()
        self._pending = False
        self.publishes += 1
        if self._programming_pending:
            wall = time.time()
            for kind, trigger in self._programming_pending:
                self.programming[kind].observe(max(0.0, wall - trigger))
            self._programming_pending = []
        elapsed = time.perf_counter() - t0
        self.last_publish_seconds = elapsed
        # Keep publishing under a quarter of the time when events never stop coming.
        self._interval = min(MAX_PUBLISH_INTERVAL, max(self._min_interval, 4 * elapsed))
        self._last_publish = time.monotonic()
        if first:
            self._synced_event.set()
        if self._on_publish is not None:
            self._on_publish(view)

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="kdns-k8s-view", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        with self._cond:
            while not self._stopping:
                if not self._can_publish():
                    if self._reserial:  # see _publish_locked: the next second's serial
                        wait = self.view.serial + 1 - self._now()
                        if wait > 0:
                            self._cond.wait(wait)
                            continue
                        self._reserial = False
                        self._modified = max(self._modified, int(self._now()))
                        self._pending = True
                        continue
                    self._cond.wait()
                    continue
                wait = self._last_publish + self._interval - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)  # coalesce: more events may join this publish
                    continue
                try:
                    self._publish_locked()
                except Exception:  # pragma: no cover - a bug must not kill the publisher
                    log.exception("publishing the Kubernetes view failed")
                    self._pending = False
