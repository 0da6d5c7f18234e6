"""The kubernetes plugin's metadata labels (CoreDNS's ``plugin/kubernetes/metadata.go``).

With ``pods verified`` and a Running pod at the client's address, who asked
(``kubernetes/client-namespace``, ``/client-pod-name``), whatever the name. For a name under
the plugin's zones, what was asked (``kubernetes/kind`` ``svc``/``pod``, ``/namespace``,
``/service``, ``/endpoint``, ``/port-name``, ``/protocol``, empty when the name has no such
part), or ``kubernetes/parse-error`` when the name is not of the cluster's shapes; nothing about
the name for other names. Values are computed when read (the *metadata* plugin asks only when
a consumer does). CoreDNS's ``kubernetes/client-label/KEY`` is not published: kdns does not
keep pod labels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

PARSE_ERROR = "invalid query name"


class NameParts(NamedTuple):
    kind: str = ""
    namespace: str = ""
    service: str = ""
    endpoint: str = ""
    port: str = ""
    protocol: str = ""


def parse_name(name: str, zone: str | None) -> NameParts | None:
    """CoreDNS's parseRequest: ``[endpoint.|_port._proto.]service.namespace.svc|pod.zone``,
    read right to left; None for a name that is not one (CoreDNS's "invalid query name")."""
    base = name[: -len(zone)] if zone and zone != "." else name
    base = base.rstrip(".")
    if base in ("", "svc", "pod"):
        return NameParts()
    segs = base.split(".")
    kind = segs.pop()
    if kind not in ("svc", "pod"):
        return None
    if not segs:
        return NameParts(kind)
    namespace = segs.pop()
    if not segs:
        return NameParts(kind, namespace)
    service = segs.pop()
    if not segs:
        return NameParts(kind, namespace, service)
    if len(segs) == 1:
        return NameParts(kind, namespace, service, endpoint=segs[0])
    if len(segs) == 2:
        return NameParts(kind, namespace, service, port=segs[0].removeprefix("_"),
                         protocol=segs[1].removeprefix("_"))
    return None


def labels(name: str, zone: str | None, client_pod: Callable[[], tuple[str, str] | None]
           ) -> dict[str, Callable[[], str]]:
    """The label functions for a query for ``name`` (lower case) under ``zone`` (None when no
    zone of the plugin covers it); ``client_pod`` finds the asking pod, or None."""
    out: dict[str, Callable[[], str]] = {}
    pod = client_pod()
    if pod is not None:
        out["kubernetes/client-namespace"] = lambda: pod[0]
        out["kubernetes/client-pod-name"] = lambda: pod[1]
    if zone is None:
        return out
    parts = parse_name(name, zone)
    if parts is None:
        out["kubernetes/parse-error"] = lambda: PARSE_ERROR
        return out
    out.update({
        "kubernetes/port-name": lambda: parts.port,
        "kubernetes/protocol": lambda: parts.protocol,
        "kubernetes/endpoint": lambda: parts.endpoint,
        "kubernetes/service": lambda: parts.service,
        "kubernetes/namespace": lambda: parts.namespace,
        "kubernetes/kind": lambda: parts.kind,
    })
    return out
