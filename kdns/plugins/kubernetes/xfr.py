"""kubernetes as a zone-transfer source: every record of the cluster zone, as the query path says.

This module owns enumerating the names of a kubernetes zone (the apex, ``dns-version``,
``ns.dns``, and per Service its name, its endpoint names and its SRV names) and asking the pure
:func:`~kdns.plugins.kubernetes.answer.answer` for each name and type, so a transferred zone
holds exactly what a query would get: one source of record rules, not two. It reads the view
only through its public API (``services()``, ``namespaces()``, ``serial``).

Left out, as in CoreDNS: pod names (``pods insecure`` answers any address, an infinite zone)
and the reverse zones (PTR names live there; a transfer of ``in-addr.arpa`` is not ours).
ExternalName Services are transferred as their CNAME alone (the chased target is not part of
the zone).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from dnslib import QTYPE, RR

from kdns.config.zones import longest_zone
from kdns.plugins.kubernetes.answer import answer
from kdns.plugins.kubernetes.setup import KubernetesConfig, is_reverse
from kdns.plugins.kubernetes.view import View

if TYPE_CHECKING:
    from kdns.plugins.kubernetes.handler import KubernetesHandler

_A, _AAAA, _SRV, _CNAME, _SOA, _NS, _TXT = (
    QTYPE.A, QTYPE.AAAA, QTYPE.SRV, QTYPE.CNAME, QTYPE.SOA, QTYPE.NS, QTYPE.TXT)


def zone_names(view: View, zone: str) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(owner name, types to ask) for every name of ``zone`` that may hold records, apex first.

    Names that answer nothing (a headless Service without ready endpoints) are harmless: the
    answer function says NXDOMAIN or NODATA and they contribute no record.
    """
    below = (lambda n: n + zone) if zone == "." else (lambda n: f"{n}.{zone}")
    yield zone, (_SOA, _NS)
    yield below("dns-version"), (_TXT,)
    yield below("ns.dns"), (_A, _AAAA)
    namespaces = view.namespaces()
    for entry in sorted(view.services(), key=lambda e: e.key):
        svc = entry.service
        if svc.namespace not in namespaces:
            continue
        base = below(f"{svc.name}.{svc.namespace}.svc")
        if svc.type == "ExternalName":
            yield base, (_CNAME,)
            continue
        ports = {(p.name.lower(), p.protocol.lower()) for p in svc.ports if p.name}
        labels: dict[str, set[int]] = {}
        for ip, label, ep_ports in entry.endpoints():
            labels.setdefault(label, set()).add(_AAAA if ":" in ip else _A)
            ports.update((p.name.lower(), p.protocol.lower()) for p in ep_ports if p.name)
        # Ask only for the address families present: the other would answer NODATA anyway,
        # and a transfer asks tens of thousands of questions.
        families = {_AAAA if ":" in ip else _A for ip in svc.cluster_ips}
        if svc.headless:
            families = set().union(*labels.values())
        yield base, (*sorted(families), _SRV)
        for name, proto in sorted(ports):
            yield f"_{name}._{proto}.{base}", (_SRV,)
        for label, fams in labels.items():
            yield f"{label}.{base}", tuple(sorted(fams))


def zone_records(view: View, cfg: KubernetesConfig, zone: str) -> list[RR]:
    """Every record of ``zone`` except the closing SOA: the SOA first, then the rest in name
    order of Services (RFC 5936 §2.2: SOA first and last; the caller adds the last)."""
    out: list[RR] = []
    for name, qtypes in zone_names(view, zone):
        for qtype in qtypes:
            ans = answer(name, qtype, view, cfg, zone)
            # Only the name's own records: a chased ExternalName target or glue is not its data.
            out.extend(rr for rr in ans.answer if str(rr.rname).lower() == name)
    return out


class KubernetesTransfer:
    """The transfer plugin's view of a kubernetes plugin (its ``Transferer`` protocol)."""

    def __init__(self, handler: KubernetesHandler) -> None:
        self._handler = handler
        cfg = handler.cfg
        # The multicluster zones hold ServiceImports, not this view's records.
        self.zones = tuple(z for z in cfg.zones if not is_reverse(z) and z not in cfg.multicluster)
        self._longest_first = sorted(self.zones, key=len, reverse=True)

    def authoritative(self, zone: str) -> bool:
        """True when ``zone`` is exactly one of the plugin's forward zones."""
        return longest_zone(zone, self._longest_first) == zone

    def serial(self, zone: str) -> int | None:
        """The zone's SOA serial, or None before the first sync (nothing to transfer yet)."""
        view = self._handler.view
        if not view.synced or not self.authoritative(zone):
            return None
        return view.serial & 0xFFFFFFFF

    def version(self, zone: str) -> int:
        """Changes whenever the zone's data may have: the view's generation."""
        return self._handler.view.generation

    def records(self, zone: str) -> tuple[int, int, list[RR]] | None:
        """(serial, version, records with the SOA first and not repeated at the end) from one
        view, or None before the first sync."""
        view = self._handler.view  # one snapshot for the whole transfer
        if not view.synced or not self.authoritative(zone):
            return None
        return (view.serial & 0xFFFFFFFF, view.generation,
                zone_records(view, self._handler.cfg, zone))
