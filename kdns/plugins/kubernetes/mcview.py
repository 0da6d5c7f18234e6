"""The immutable view of the clusterset (KEP-1645 ServiceImports), and the sink that builds it.

This module owns the state behind the ``multicluster`` zones: each ServiceImport merged with the
ready endpoints of its imported EndpointSlices (every source cluster). It is a separate, small
sink beside the cluster view (kdns/plugins/kubernetes/view.py), fed by its own informers, so an
absent or failing MCS API never holds back the cluster zone.

Imports are few (one per exported Service of the clusterset), so a change re-merges one import
and publishes a new view by copying one dict, under the sink's lock, at once; a (re)list
publishes once at its end. Each publish bumps the process generation so no stored reply
outlives the data it was built from.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from kdns.k8s.mcs import ImportedSlice, ServiceImport
from kdns.k8s.objects import Port
from kdns.k8s.source import Key
from kdns.plugins.base import GENERATION
from kdns.plugins.kubernetes.view import dashed

log = logging.getLogger("kdns.kubernetes")

KINDS = ("serviceimports", "importedslices")


class McEndpoint(NamedTuple):
    ip: str
    hostname: str
    """The endpoint's hostname, else its dashed IP (the cluster zone's rule)."""
    cluster: str
    ports: tuple[Port, ...]


class McEntry(NamedTuple):
    service: ServiceImport
    endpoints: tuple[McEndpoint, ...]
    """Ready endpoints of every cluster, each (cluster, IP) once, in slice-name order."""


class McView:
    """An immutable snapshot of the clusterset."""

    __slots__ = ("_entries", "_namespaces", "_ptr", "generation", "serial", "synced")

    def __init__(self, entries: dict[Key, McEntry], *, serial: int, synced: bool,
                 generation: int) -> None:
        self._entries = entries
        self._namespaces = frozenset(ns for ns, _name in entries)
        # Reverse names (§2.3.3, §2.4.3): ClusterSetIP -> <svc>.<ns>.svc, a headless endpoint
        # -> <hostname>.<clusterid>.<svc>.<ns>.svc (relative to the multicluster zone).
        ptr: dict[str, list[str]] = {}
        for e in entries.values():
            imp = e.service
            base = f"{imp.name}.{imp.namespace}.svc"
            for ip in imp.ips:
                ptr.setdefault(ip, []).append(base)
            if imp.headless:
                for ep in e.endpoints:
                    if ep.cluster:
                        ptr.setdefault(ep.ip, []).append(f"{ep.hostname}.{ep.cluster}.{base}")
        self._ptr = {ip: tuple(dict.fromkeys(names)) for ip, names in ptr.items()}
        self.serial = serial
        """SOA serial: Unix time of the last change."""
        self.synced = synced
        self.generation = generation

    @classmethod
    def empty(cls) -> McView:
        return cls({}, serial=int(time.time()), synced=False, generation=GENERATION.value)

    def service(self, namespace: str, name: str) -> McEntry | None:
        return self._entries.get((namespace, name))

    def namespace_exists(self, namespace: str) -> bool:
        """The namespace holds at least one ServiceImport."""
        return namespace in self._namespaces

    def services(self) -> Iterator[McEntry]:
        return iter(self._entries.values())

    def ptr(self, ip: str) -> tuple[str, ...]:
        """Names (relative to the multicluster zone) whose address is ``ip``."""
        return self._ptr.get(ip, ())


class McViewBuilder:
    """The :class:`~kdns.k8s.source.Sink` of the MCS informers; thread-safe."""

    def __init__(self, *, namespaces: frozenset[str] = frozenset(),
                 now: Callable[[], float] = time.time) -> None:
        self._ns_filter = namespaces
        self._now = now
        self._lock = threading.Lock()
        self._imports: dict[Key, ServiceImport] = {}
        self._slices: dict[Key, ImportedSlice] = {}
        self._by_import: dict[Key, set[Key]] = {}
        self._entries: dict[Key, McEntry] = {}
        self._listing: set[str] = set()
        self._listed: set[str] = set()
        self._dirty: set[Key] = set()
        self._view = McView.empty()
        self._synced = threading.Event()

    @property
    def view(self) -> McView:
        return self._view

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float | None) -> bool:
        return self._synced.wait(timeout)

    # -- Sink -------------------------------------------------------------------------------

    def begin_list(self, kind: str) -> None:
        with self._lock:
            self._listing.add(kind)

    def end_list(self, kind: str, seen: set[Key]) -> None:
        with self._lock:
            if kind == "serviceimports":
                for key in [k for k in self._imports if k not in seen]:
                    self._set_import(key, None)
            elif kind == "importedslices":
                for key in [k for k in self._slices if k not in seen]:
                    self._set_slice(key, None)
            self._listing.discard(kind)
            self._listed.add(kind)
            self._publish()

    def upsert(self, kind: str, obj: Any) -> None:
        with self._lock:
            if kind == "serviceimports" and self._exposed(obj.namespace):
                self._set_import(obj.key, obj)
            elif kind == "importedslices" and self._exposed(obj.slice.namespace):
                self._set_slice(obj.key, obj)
            self._publish()

    def delete(self, kind: str, key: Key) -> None:
        with self._lock:
            if kind == "serviceimports":
                self._set_import(key, None)
            elif kind == "importedslices":
                self._set_slice(key, None)
            self._publish()

    def set_stale(self, kind: str, stale: bool, reason: str = "") -> None:
        pass  # the last good clusterset keeps being served; the informer logs the outage

    # -- merging ----------------------------------------------------------------------------

    def _exposed(self, namespace: str) -> bool:
        return not self._ns_filter or namespace in self._ns_filter

    def _set_import(self, key: Key, imp: ServiceImport | None) -> None:
        if self._imports.get(key) == imp:
            return
        if imp is None:
            self._imports.pop(key, None)
        else:
            self._imports[key] = imp
        self._dirty.add(key)

    def _set_slice(self, key: Key, rec: ImportedSlice | None) -> None:
        old = self._slices.get(key)
        if old == rec:
            return
        if old is not None:
            owner = (key[0], old.service)
            self._by_import.get(owner, set()).discard(key)
            self._dirty.add(owner)
        if rec is None:
            self._slices.pop(key, None)
        else:
            self._slices[key] = rec
            if rec.service:
                owner = (key[0], rec.service)
                self._by_import.setdefault(owner, set()).add(key)
                self._dirty.add(owner)

    def _merge(self, key: Key) -> McEntry | None:
        imp = self._imports.get(key)
        if imp is None:
            return None
        eps: list[McEndpoint] = []
        seen: set[tuple[str, str]] = set()
        for skey in sorted(self._by_import.get(key, ())):
            rec = self._slices[skey]
            for ep in rec.slice.endpoints:
                if not ep.ready:
                    continue
                for ip in ep.addresses:
                    if (rec.cluster, ip) in seen:
                        continue
                    seen.add((rec.cluster, ip))
                    eps.append(McEndpoint(ip, ep.hostname or dashed(ip), rec.cluster,
                                          rec.slice.ports))
        return McEntry(imp, tuple(eps))

    def _publish(self) -> None:
        if self._listing or not self._listed.issuperset(KINDS):
            return
        first = not self._view.synced
        if not self._dirty and not first:
            return
        entries = dict(self._entries)
        changed = False
        for key in self._dirty:
            new = self._merge(key)
            if entries.get(key) == new:
                continue
            changed = True
            if new is None:
                entries.pop(key, None)
            else:
                entries[key] = new
        self._dirty = set()
        if not changed and not first:
            return
        self._entries = entries
        prev = self._view.serial
        # Never two different views under one serial (see the cluster view's rule); the
        # clusterset changes rarely, so one second ahead at most is harmless here.
        serial = max(int(self._now()), prev + 1) if not first else int(self._now())
        self._view = McView(entries, serial=serial, synced=True, generation=GENERATION.bump())
        if first:
            self._synced.set()
            log.info("multicluster: %d ServiceImports", len(entries))
