"""Multi-Cluster Services API objects (KEP-1645): ServiceImports and imported EndpointSlices.

This module owns reducing ``multicluster.x-k8s.io/v1alpha1`` ServiceImports and the
EndpointSlices an MCS controller imports for them (labelled
``multicluster.kubernetes.io/service-name``, one source cluster per slice named by
``multicluster.kubernetes.io/source-cluster``) to the slim frozen objects the clusterset zone
needs. Like :mod:`kdns.k8s.objects`, it knows no DNS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdns.k8s.objects import (
    EndpointSlice,
    ObjectError,
    Port,
    _ip,
    _list,
    _mapping,
    _meta,
    _port,
    _str,
    parse_endpoint_slice,
)

MCS_SERVICE_NAME_LABEL = "multicluster.kubernetes.io/service-name"
MCS_SOURCE_CLUSTER_LABEL = "multicluster.kubernetes.io/source-cluster"
SERVICE_IMPORT_TYPES = ("ClusterSetIP", "Headless")


@dataclass(frozen=True, slots=True)
class ServiceImport:
    namespace: str
    name: str
    type: str
    """ClusterSetIP or Headless."""
    ips: tuple[str, ...]
    """The clusterset IPs (canonical strings); empty for Headless."""
    ports: tuple[Port, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def headless(self) -> bool:
        return self.type == "Headless"


@dataclass(frozen=True, slots=True)
class ImportedSlice:
    """An EndpointSlice of a ServiceImport: the slice as parsed, its import and its cluster."""

    slice: EndpointSlice
    service: str
    """The ServiceImport's name (``multicluster.kubernetes.io/service-name``)."""
    cluster: str
    """The source cluster's ID, lower case (a DNS label of the per-endpoint names)."""

    @property
    def key(self) -> tuple[str, str]:
        return self.slice.key


def parse_service_import(obj: Any) -> ServiceImport:
    ns, name, _ = _meta(obj, namespaced=True)
    spec = _mapping(obj.get("spec"), "spec")
    stype = _str(spec.get("type"), "spec.type", required=True)
    if stype not in SERVICE_IMPORT_TYPES:
        raise ObjectError(f"spec.type {stype!r} is not ClusterSetIP or Headless")
    ips: tuple[str, ...] = ()
    if stype == "ClusterSetIP":
        ips = tuple(dict.fromkeys(_ip(ip, "spec.ips[]")
                                  for ip in _list(spec.get("ips"), "spec.ips")))
    ports = tuple(_port(p, f"spec.ports[{i}]")
                  for i, p in enumerate(_list(spec.get("ports"), "spec.ports")))
    return ServiceImport(ns, name, stype, ips, ports)


def parse_imported_slice(obj: Any) -> ImportedSlice:
    s = parse_endpoint_slice(obj)
    labels = _mapping(_mapping(obj.get("metadata"), "metadata").get("labels"), "metadata.labels")
    service = _str(labels.get(MCS_SERVICE_NAME_LABEL), f"labels[{MCS_SERVICE_NAME_LABEL}]")
    cluster = _str(labels.get(MCS_SOURCE_CLUSTER_LABEL), f"labels[{MCS_SOURCE_CLUSTER_LABEL}]")
    cluster = cluster.lower()
    if cluster and (len(cluster) > 63 or "." in cluster):
        raise ObjectError(f"labels[{MCS_SOURCE_CLUSTER_LABEL}] {cluster!r} is not a DNS label")
    return ImportedSlice(s, service, cluster)
