"""Slim, frozen views of the Kubernetes API objects that DNS needs.

This module owns the conversion from raw API JSON (a ``dict`` from ``json.loads``) to small
immutable objects. Only the fields DNS reads are kept (the lesson of CoreDNS's
``object/service.go``: the generated client models cost several times the memory and CPU).
Every parser raises :class:`ObjectError` with a reason when a field DNS depends on is malformed,
so the informer can log the object's name and skip it instead of crashing.

It knows no DNS: names are stored as the API gives them (lower case by API validation).
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

_intern = sys.intern


class ObjectError(ValueError):
    """An API object whose DNS-relevant fields are malformed."""


@dataclass(frozen=True, slots=True)
class Port:
    """One port of a Service or EndpointSlice. ``name`` is "" for an unnamed port."""

    name: str
    protocol: str
    port: int


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    type: str
    """ClusterIP, NodePort, LoadBalancer or ExternalName."""
    cluster_ips: tuple[str, ...]
    """Canonical (compressed) IP strings; empty for headless and ExternalName services."""
    headless: bool
    external_name: str
    """The ExternalName target without a trailing dot, or ""."""
    ports: tuple[Port, ...]
    publish_not_ready: bool
    external_ips: tuple[str, ...] = ()
    """``spec.externalIPs`` then ``status.loadBalancer.ingress[].ip``, canonical, no repeats
    (what CoreDNS's k8s_external answers)."""
    lb_hostnames: tuple[str, ...] = ()
    """``status.loadBalancer.ingress[].hostname`` (lower case, no trailing dot): cloud load
    balancers known by name (AWS ELB), answered as a CNAME by k8s_external."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Endpoint:
    addresses: tuple[str, ...]
    hostname: str
    """The endpoint's ``hostname`` field, or ""."""
    ready: bool
    """``conditions.ready`` is true or absent (absent means ready, per discovery/v1)."""
    pod_name: str
    """``targetRef.name`` when the target is a Pod, else ""."""


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    namespace: str
    name: str
    service: str
    """The owning Service, from the ``kubernetes.io/service-name`` label ("" if missing)."""
    address_type: str
    """IPv4, IPv6 or FQDN; FQDN slices carry no addresses DNS can serve."""
    endpoints: tuple[Endpoint, ...]
    ports: tuple[Port, ...]
    trigger_time: float | None
    """``endpoints.kubernetes.io/last-change-trigger-time`` as a Unix timestamp, if present."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    visible_to: frozenset[str] | None = None
    """The client namespaces its ``kdns.io/dns-visible-to`` annotation names (``*``: every
    client); None without the annotation. Only the kubernetes plugin's ``isolate`` reads it."""

    @property
    def key(self) -> tuple[str, str]:
        return ("", self.name)


@dataclass(frozen=True, slots=True)
class Pod:
    """Only what pod records and autopath need: where the pod is and whether it counts."""

    namespace: str
    name: str
    ips: tuple[str, ...]
    running: bool
    host_network: bool

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ObjectError(f"{what} must be an object, got {type(value).__name__}")
    return value


def _str(value: Any, what: str, *, required: bool = False) -> str:
    if value is None:
        if required:
            raise ObjectError(f"{what} is missing")
        return ""
    if not isinstance(value, str):
        raise ObjectError(f"{what} must be a string, got {type(value).__name__}")
    if required and not value:
        raise ObjectError(f"{what} is empty")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ObjectError(f"{what} must be a list, got {type(value).__name__}")
    return value


def _ip(value: Any, what: str) -> str:
    text = _str(value, what, required=True)
    try:
        return _intern(str(ipaddress.ip_address(text)))
    except ValueError:
        raise ObjectError(f"{what} is not an IP address: {text!r}") from None


def meta_of(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, name) of any object, for log lines; never raises."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping):
        return ("", "?")
    ns, name = meta.get("namespace", ""), meta.get("name", "?")
    return (ns if isinstance(ns, str) else "", name if isinstance(name, str) else "?")


def _meta(obj: Any, *, namespaced: bool) -> tuple[str, str, Mapping[str, Any]]:
    if not isinstance(obj, Mapping):
        raise ObjectError(f"object must be a JSON object, got {type(obj).__name__}")
    meta = _mapping(obj.get("metadata"), "metadata")
    name = _str(meta.get("name"), "metadata.name", required=True)
    ns = _str(meta.get("namespace"), "metadata.namespace", required=namespaced)
    return _intern(ns), _intern(name), meta


def _port(raw: Any, what: str, *, number_key: str = "port") -> Port:
    raw = _mapping(raw, what)
    number = raw.get(number_key)
    if number is None and number_key == "port":
        # EndpointSlice ports may omit the number ("all ports"); DNS cannot publish those.
        raise ObjectError(f"{what}.port is missing")
    if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 65536:
        raise ObjectError(f"{what}.{number_key} must be an integer in 1..65535, got {number!r}")
    protocol = _str(raw.get("protocol"), f"{what}.protocol") or "TCP"
    return Port(_intern(_str(raw.get("name"), f"{what}.name")), _intern(protocol.upper()), number)


def parse_service(obj: Any) -> Service:
    ns, name, _ = _meta(obj, namespaced=True)
    spec = _mapping(obj.get("spec"), "spec")
    stype = _str(spec.get("type"), "spec.type") or "ClusterIP"
    if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        raise ObjectError(f"spec.type {stype!r} is not a known Service type")
    external = ""
    if stype == "ExternalName":
        # API validation requires a name; an empty target would become a CNAME to the root.
        external = _str(spec.get("externalName"), "spec.externalName", required=True)
        external = external.rstrip(".").lower()
        if not external:
            raise ObjectError("spec.externalName is empty")
    raw_ips = _list(spec.get("clusterIPs"), "spec.clusterIPs")
    if not raw_ips and spec.get("clusterIP") is not None:
        raw_ips = [spec.get("clusterIP")]
    headless = any(ip == "None" for ip in raw_ips)
    ips: tuple[str, ...] = ()
    if stype != "ExternalName" and not headless:
        ips = tuple(_ip(ip, "spec.clusterIPs[]") for ip in raw_ips if ip != "")
        # A Service of a selector type with no IP yet is treated as headless only when the
        # API says "None"; an empty IP list (not yet allocated) simply has no address records.
    ports = tuple(
        _port(p, f"spec.ports[{i}]") for i, p in enumerate(_list(spec.get("ports"), "spec.ports"))
    )
    pnr = spec.get("publishNotReadyAddresses", False)
    if not isinstance(pnr, bool):
        raise ObjectError("spec.publishNotReadyAddresses must be a boolean")
    external_ips = [_ip(ip, "spec.externalIPs[]")
                    for ip in _list(spec.get("externalIPs"), "spec.externalIPs")]
    hostnames: list[str] = []
    lb = _mapping(_mapping(obj.get("status"), "status").get("loadBalancer"),
                  "status.loadBalancer")
    for i, raw in enumerate(_list(lb.get("ingress"), "status.loadBalancer.ingress")):
        what = f"status.loadBalancer.ingress[{i}]"
        raw = _mapping(raw, what)
        if raw.get("ip"):
            external_ips.append(_ip(raw.get("ip"), f"{what}.ip"))
        elif raw.get("hostname"):
            hostnames.append(_str(raw.get("hostname"), f"{what}.hostname").rstrip(".").lower())
    return Service(ns, name, _intern(stype), ips, headless, external, ports, pnr,
                   tuple(dict.fromkeys(external_ips)), tuple(dict.fromkeys(hostnames)))


def _trigger_time(meta: Mapping[str, Any]) -> float | None:
    annotations = _mapping(meta.get("annotations"), "metadata.annotations")
    raw = annotations.get(TRIGGER_TIME_ANNOTATION)
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None  # a bad annotation only loses a metric sample, never the slice


def parse_endpoint_slice(obj: Any) -> EndpointSlice:
    ns, name, meta = _meta(obj, namespaced=True)
    labels = _mapping(meta.get("labels"), "metadata.labels")
    service = _str(labels.get(SERVICE_NAME_LABEL), f"labels[{SERVICE_NAME_LABEL}]")
    address_type = _str(obj.get("addressType"), "addressType", required=True)
    if address_type not in ("IPv4", "IPv6", "FQDN"):
        raise ObjectError(f"addressType {address_type!r} is not IPv4, IPv6 or FQDN")
    endpoints: list[Endpoint] = []
    if address_type != "FQDN":
        want = 4 if address_type == "IPv4" else 6
        for i, raw in enumerate(_list(obj.get("endpoints"), "endpoints")):
            what = f"endpoints[{i}]"
            raw = _mapping(raw, what)
            addresses = tuple(
                _ip(a, f"{what}.addresses[]") for a in _list(raw.get("addresses"), f"{what}.addresses")
            )
            for a in addresses:
                if ipaddress.ip_address(a).version != want:
                    raise ObjectError(f"{what} address {a} does not match addressType {address_type}")
            cond = _mapping(raw.get("conditions"), f"{what}.conditions")
            ready = cond.get("ready")
            if ready is not None and not isinstance(ready, bool):
                raise ObjectError(f"{what}.conditions.ready must be a boolean")
            ref = _mapping(raw.get("targetRef"), f"{what}.targetRef")
            pod_name = _str(ref.get("name"), f"{what}.targetRef.name") if ref.get("kind") == "Pod" else ""
            endpoints.append(
                Endpoint(
                    addresses,
                    _intern(_str(raw.get("hostname"), f"{what}.hostname").lower()),
                    ready is None or ready,
                    pod_name,
                )
            )
    ports = tuple(
        _port(p, f"ports[{i}]") for i, p in enumerate(_list(obj.get("ports"), "ports"))
        if _mapping(p, f"ports[{i}]").get("port") is not None
    )
    return EndpointSlice(
        ns, name, _intern(service), _intern(address_type), tuple(endpoints), ports,
        _trigger_time(meta),
    )


VISIBLE_TO_ANNOTATION = "kdns.io/dns-visible-to"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def parse_visible_to(value: Any) -> frozenset[str]:
    """The ``kdns.io/dns-visible-to`` value: ``*`` or comma-separated namespace names
    (spaces around commas allowed); raises :class:`ObjectError` naming what is wrong."""
    what = f"metadata.annotations[{VISIBLE_TO_ANNOTATION!r}]"
    text = _str(value, what).strip()
    if text == "*":
        return frozenset({"*"})
    names = [part.strip() for part in text.split(",")]
    for n in names:
        if not _DNS_LABEL.fullmatch(n):
            raise ObjectError(f"{what}: {n!r} is not a namespace name (want '*' or a "
                              f"comma-separated list of namespaces)")
    return frozenset(_intern(n) for n in names)


def parse_namespace(obj: Any) -> Namespace:
    _, name, meta = _meta(obj, namespaced=False)
    annotations = _mapping(meta.get("annotations"), "metadata.annotations")
    raw = annotations.get(VISIBLE_TO_ANNOTATION)
    return Namespace(name, None if raw is None else parse_visible_to(raw))


def parse_pod(obj: Any) -> Pod:
    ns, name, _ = _meta(obj, namespaced=True)
    spec = _mapping(obj.get("spec"), "spec")
    status = _mapping(obj.get("status"), "status")
    ips: list[str] = []
    for i, raw in enumerate(_list(status.get("podIPs"), "status.podIPs")):
        ips.append(_ip(_mapping(raw, f"status.podIPs[{i}]").get("ip"), f"status.podIPs[{i}].ip"))
    if not ips and status.get("podIP"):
        ips.append(_ip(status.get("podIP"), "status.podIP"))
    host_network = spec.get("hostNetwork", False)
    if not isinstance(host_network, bool):
        raise ObjectError("spec.hostNetwork must be a boolean")
    phase = _str(status.get("phase"), "status.phase")
    return Pod(ns, name, tuple(dict.fromkeys(ips)), phase == "Running", host_network)


PARSERS = {
    "services": parse_service,
    "endpointslices": parse_endpoint_slice,
    "namespaces": parse_namespace,
    "pods": parse_pod,
}
"""Parser per API resource (plural name), used by the informers and the manifest source."""


def _mcs(name: str) -> Any:
    """A parser of the Multi-Cluster Services kinds, which live in kdns.k8s.mcs (a module that
    builds on this one, so it is looked up when first called, not imported here)."""

    def parse(obj: Any) -> Any:
        from kdns.k8s import mcs

        return getattr(mcs, name)(obj)

    return parse


PARSERS["serviceimports"] = _mcs("parse_service_import")
PARSERS["importedslices"] = _mcs("parse_imported_slice")
