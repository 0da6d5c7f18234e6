"""The contract between where cluster objects come from and who consumes them.

A *source* (the API informers in ``kdns.k8s.informer`` or the offline manifest reader in
``kdns.k8s.manifests``) lists and watches resources and feeds a :class:`Sink`. The sink (the
kubernetes plugin's view builder) owns the state. Sources hold no copy of the objects beyond the
page they are decoding, so a relist never doubles memory: it streams ``upsert`` calls between
``begin_list`` and ``end_list``, and the sink deletes what the list did not mention.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

Key = tuple[str, str]
"""(namespace, name); namespace is "" for cluster-scoped objects."""

RESOURCES = ("services", "endpointslices", "namespaces", "pods", "serviceimports",
             "importedslices")
"""``serviceimports`` and ``importedslices`` (EndpointSlices labelled
``multicluster.kubernetes.io/service-name``) feed the kubernetes plugin's ``multicluster``
zones only (kdns.k8s.mcs)."""


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    """One resource to list and watch."""

    kind: str
    """One of :data:`RESOURCES`."""
    label_selector: str | None = None
    field_selector: str | None = None
    optional: bool = False
    """The resource may not exist on the API server (a CRD not installed): a 404 on list is
    logged once, served as an empty list and retried slowly (kdns.k8s.informer)."""


class Sink(Protocol):
    """Receives the objects a source reads. Methods may be called from the source's threads."""

    def begin_list(self, kind: str) -> None:
        """A (re)list of ``kind`` starts: hold publishing of ``kind`` until ``end_list``."""

    def upsert(self, kind: str, obj: Any) -> None:
        """Add or replace one object (a slim object from ``kdns.k8s.objects``)."""

    def delete(self, kind: str, key: Key) -> None:
        """Remove one object; unknown keys are ignored."""

    def end_list(self, kind: str, seen: set[Key]) -> None:
        """The (re)list is complete: drop every object of ``kind`` not in ``seen``; ``kind`` is
        now synced."""

    def set_stale(self, kind: str, stale: bool, reason: str = "") -> None:
        """The source lost (or regained) its connection; the data is kept but may be old."""


class Source(Protocol):
    def start(self) -> None:
        """Start background threads; returns at once."""

    def stop(self) -> None:
        """Stop threads and close connections; idempotent."""

    def synced(self) -> bool:
        """Every resource has completed its first list."""

    def describe(self) -> str:
        """What the source reads from, for log lines (never credentials)."""


SourceFactory = Callable[[list[ResourceSpec], Sink], Source]
