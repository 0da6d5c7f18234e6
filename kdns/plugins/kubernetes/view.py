"""The immutable DNS view of the cluster.

This module owns the snapshot every kubernetes answer reads: a :class:`View` is published by the
builder (:mod:`kdns.plugins.kubernetes.builder`) with one reference swap (STYLE lesson 3) and
never changes afterwards, so the query path reads it without a lock. Its indexes are the
sharded dicts of :mod:`kdns.plugins.kubernetes.index`.

Memory: an entry is the slim Service plus one small tuple per EndpointSlice; addresses and names
are the interned strings the parser made, shared by every index (reference §5 P9). Each entry
also keeps its A/AAAA addresses packed (one bytes object per family, 4 or 16 bytes an address),
so a name's first answer costs no conversion.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from kdns.k8s.objects import Port, Service
from kdns.k8s.source import Key
from kdns.plugins.base import GENERATION
from kdns.plugins.kubernetes import deps as dep
from kdns.plugins.kubernetes.index import _MASK, _get


class EpGroup(NamedTuple):
    """Endpoints of one EndpointSlice that count, with the slice's ports.

    ``hosts[i]`` is the endpoint label of ``ips[i]`` when it is a name (hostname, or pod name
    with ``endpoint_pod_names``); "" means "the dashed IP", computed when asked so the common
    case stores nothing. ``hosts`` is None when every label is the dashed IP.
    """

    ports: tuple[Port, ...]
    ips: tuple[str, ...]
    hosts: tuple[str, ...] | None


class SvcEntry:
    """One Service with its merged endpoints, as answers need it."""

    __slots__ = ("deps", "groups", "key", "rdata", "service")

    def __init__(self, key: Key, service: Service, groups: tuple[EpGroup, ...]) -> None:
        self.key = key
        """The dict key object, shared by the reverse index (one tuple per Service)."""
        self.service = service
        self.groups = groups
        self.deps = (dep.service(key[0], key[1]),)
        """The dependencies of every answer about the name: its key
        (:func:`kdns.plugins.kubernetes.deps.service`), which stands for its namespace's
        too (the builder names every Service of a namespace that changes). Made once here."""
        self.rdata = _rdata(service, groups)
        """The packed addresses of the name's A and AAAA answers, in answer order, each once
        (4 and 16 bytes apiece): made when the entry changes, so the first answer of a
        Service (:mod:`~kdns.plugins.kubernetes.wire_answer`) only frames them. None for an
        ExternalName, or an address that does not pack (the general path answers then)."""

    def endpoints(self) -> Iterator[tuple[str, str, tuple[Port, ...]]]:
        """(ip, endpoint label, ports) for every endpoint that counts."""
        for g in self.groups:
            hosts = g.hosts
            for i, ip in enumerate(g.ips):
                yield ip, (hosts[i] if hosts is not None and hosts[i] else dashed(ip)), g.ports

    def ip_count(self) -> int:
        return sum(len(g.ips) for g in self.groups)

    def __repr__(self) -> str:
        return f"SvcEntry({self.service.namespace}/{self.service.name}, {list(self.endpoints())})"


def _rdata(service: Service, groups: tuple[EpGroup, ...]) -> tuple[bytes, bytes] | None:
    if service.type == "ExternalName":
        return None
    ips = ([ip for g in groups for ip in g.ips] if service.headless else service.cluster_ips)
    try:
        # The families as the answer function splits them ("." in an A, ":" in an AAAA).
        return (b"".join([socket.inet_pton(socket.AF_INET, ip)
                          for ip in dict.fromkeys(ips) if "." in ip]),
                b"".join([socket.inet_pton(socket.AF_INET6, ip)
                          for ip in dict.fromkeys(ips) if ":" in ip]))
    except OSError:
        return None


def dashed(ip: str) -> str:
    """CoreDNS's endpointHostname fallback: ``10-11-12-13``; IPv6 ``:`` -> ``-``, and a
    trailing ``-`` gets a ``0`` so the label does not end in a hyphen (``2001-db8--0``)."""
    if "." in ip:
        return ip.replace(".", "-")
    label = ip.replace(":", "-")
    return label + "0" if label.endswith("-") else label


_ReverseVal = Key | tuple[Key, ...]
_PodNsVal = str | tuple[str, ...]


class View:
    """An immutable snapshot: never mutated after publication, so readers need no lock."""

    __slots__ = ("_entries", "_namespaces", "_pod_ns", "_reverse", "_visible", "generation",
                 "serial", "stale", "synced")

    def __init__(
        self,
        entries: tuple[dict[Key, SvcEntry], ...],
        reverse: tuple[dict[str, _ReverseVal], ...],
        namespaces: frozenset[str],
        pod_ns: tuple[dict[str, _PodNsVal], ...],
        *,
        serial: int,
        synced: bool,
        stale: bool,
        generation: int,
        visible: dict[str, frozenset[str]] | None = None,
    ) -> None:
        self._entries = entries
        self._visible = visible or {}
        """Namespace -> the client namespaces its ``kdns.io/dns-visible-to`` names (annotated
        namespaces only)."""
        self._reverse = reverse
        self._namespaces = namespaces
        self._pod_ns = pod_ns
        self.serial = serial
        """SOA serial: Unix time of the last change."""
        self.synced = synced
        self.stale = stale
        self.generation = generation
        """The data version of this view's publish (set by the builder right after the swap;
        informational: stored replies are stamped by the server, not from this)."""

    @classmethod
    def empty(cls) -> View:
        """What is served before the first sync: nothing, not synced."""
        return cls((), (), frozenset(), (), serial=int(time.time()), synced=False, stale=False,
                   generation=GENERATION.value)

    def service(self, namespace: str, name: str) -> SvcEntry | None:
        key = (namespace, name)
        parts = self._entries  # _get() inlined: every cold answer of a Service asks this
        return parts[hash(key) & _MASK].get(key) if parts else None

    def namespace_exists(self, namespace: str) -> bool:
        """The namespace is present (and passes the plugin's ``namespaces`` filter)."""
        return namespace in self._namespaces

    def visible_to(self, namespace: str) -> frozenset[str] | None:
        """The client namespaces a namespace's annotation names (``*``: all); None: none."""
        return self._visible.get(namespace)

    def client_namespaces(self, ip: str) -> str | tuple[str, ...] | None:
        """Namespace(s) of the Running, non-hostNetwork pods holding ``ip``: one name, a
        tuple when pods of several namespaces claim it, None when none does."""
        return _get(self._pod_ns, ip)

    def ptr_services(self, ip: str) -> tuple[SvcEntry, ...]:
        """Services with ``ip`` as a ClusterIP or as the address of an endpoint that counts."""
        val = _get(self._reverse, ip)
        if val is None:
            return ()
        keys: tuple[Key, ...] = (val,) if isinstance(val[0], str) else val
        out = []
        for k in keys:
            entry = _get(self._entries, k)
            if entry is not None:
                out.append(entry)
        return tuple(out)

    def namespace_of(self, ip: str) -> str | None:
        """Namespace of the Running, non-hostNetwork pod with ``ip``; None when unknown or
        when pods in different namespaces claim it (never guess: reference §5 P2)."""
        val = _get(self._pod_ns, ip)
        return val if isinstance(val, str) else None

    def pod_in_namespace(self, ip: str, namespace: str) -> bool:
        val = _get(self._pod_ns, ip)
        if val is None:
            return False
        return val == namespace if isinstance(val, str) else namespace in val

    def service_count(self) -> int:
        return sum(len(p) for p in self._entries)

    # Zone transfer (kubernetes/xfr.py) enumerates the zone through these two; the query path
    # never iterates.
    def services(self) -> Iterator[SvcEntry]:
        """Every Service entry, in no particular order."""
        for part in self._entries:
            yield from part.values()

    def namespaces(self) -> frozenset[str]:
        """Every exposed namespace."""
        return self._namespaces

    def replace_stale(self, stale: bool) -> View:
        """The same data with another staleness flag (answers do not depend on it, so the
        generation stays and the fast path keeps its replies)."""
        return View(self._entries, self._reverse, self._namespaces, self._pod_ns,
                    serial=self.serial, synced=self.synced, stale=stale,
                    generation=self.generation, visible=self._visible)


def reverse_ip(name: str) -> str | None:
    """The address of a full reverse name (``4.3.2.1.in-addr.arpa.``, 32 nibbles under
    ``ip6.arpa.``), canonical; None for a partial or malformed name."""
    name = name.lower().rstrip(".")
    if name.endswith(".in-addr.arpa"):
        parts = name[: -len(".in-addr.arpa")].split(".")
        if len(parts) != 4:
            return None
        text = ".".join(reversed(parts))
    elif name.endswith(".ip6.arpa"):
        nibbles = name[: -len(".ip6.arpa")].split(".")
        if len(nibbles) != 32 or any(len(n) != 1 for n in nibbles):
            return None
        digits = "".join(reversed(nibbles))
        text = ":".join(digits[i:i + 4] for i in range(0, 32, 4))
    else:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def __getattr__(name: str) -> Any:
    # The builder lived here; keep ``from ...view import ViewBuilder`` working.
    if name in ("ViewBuilder", "PROGRAMMING_BUCKETS", "SERVICE_KINDS", "ProgrammingHistogram",
                "PUBLISH_INTERVAL", "MAX_PUBLISH_INTERVAL", "POD_NAME_MAX"):
        from kdns.plugins.kubernetes import builder

        return getattr(builder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
