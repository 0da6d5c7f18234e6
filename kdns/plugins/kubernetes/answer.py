"""The Kubernetes DNS answer: a pure function of (question, view, config, zone).

This module owns every record rule of the DNS-Based Service Discovery spec 1.1.0 and the CoreDNS
behaviours kdns keeps (reference §1.2-§1.6), plus the existence model behind NXDOMAIN versus
NODATA (§1.4): a name that exists with other types, or an empty non-terminal, answers NODATA;
only a name that does not exist answers NXDOMAIN (RFC 2308, RFC 8020; reference §5 P6).

No I/O and no clock: everything comes from the immutable :class:`View`, so a case table can test
it without sockets (STYLE lesson 4). Owners are the qname exactly as sent; generated targets use
the stored lower-case object names plus the query's spelling of the zone (CoreDNS
``handler_case_test.go``). PTR targets use the primary zone as configured.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Hashable
from dataclasses import replace

from dnslib import AAAA, CNAME, NS, PTR, QTYPE, RCODE, RR, SOA, SRV, TXT, A

from kdns.config.zones import in_zone
from kdns.k8s.objects import Port
from kdns.plugins.answering import MAX_CHASE, Answer
from kdns.plugins.kubernetes import deps as dep
from kdns.plugins.kubernetes.setup import KubernetesConfig, is_reverse
from kdns.plugins.kubernetes.view import SvcEntry, View, reverse_ip

SCHEMA_VERSION = "1.1.0"
DNS_VERSION_TTL = 28800
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 7200, 1800, 86400

_A, _AAAA, _SRV, _PTR, _TXT, _SOA, _NS, _CNAME = (
    QTYPE.A, QTYPE.AAAA, QTYPE.SRV, QTYPE.PTR, QTYPE.TXT, QTYPE.SOA, QTYPE.NS, QTYPE.CNAME)
_TRANSFERS = (QTYPE.AXFR, QTYPE.IXFR)


class _Q:
    """One question, with what every rule needs."""

    __slots__ = ("cfg", "deps", "qname", "qtype", "ttl", "view", "viewer", "zone",
                 "zone_spelled")

    def __init__(self, qname: str, qtype: int, view: View, cfg: KubernetesConfig,
                 zone: str, viewer: str | None = None) -> None:
        self.qname = qname
        self.viewer = viewer
        self.qtype = qtype
        self.view = view
        self.cfg = cfg
        self.zone = zone
        self.zone_spelled = zone if zone == "." else qname[len(qname) - len(zone):]
        self.ttl = cfg.ttl
        self.deps: list[Hashable] = []
        """Keys of what this answer read from the view, in reading order."""

    def sees(self, namespace: str) -> bool:
        """May the client resolve names of ``namespace``? (``isolate``)"""
        return sees(self.view, self.cfg, self.viewer, namespace)

    def below(self, name: str) -> str:
        """``name`` joined to the zone as the query spelled it."""
        return name + self.zone_spelled if self.zone_spelled == "." else f"{name}.{self.zone_spelled}"

    def soa(self) -> RR:
        z = self.zone_spelled
        return RR(z, _SOA, ttl=min(self.ttl, 300), rdata=SOA(
            self.below("ns.dns"), self.below("hostmaster"),
            (self.view.serial & 0xFFFFFFFF, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, self.ttl)))

    def nxdomain(self) -> Answer:
        return Answer(RCODE.NXDOMAIN, authority=(self.soa(),), name_error=True)

    def nodata(self) -> Answer:
        return Answer(RCODE.NOERROR, authority=(self.soa(),))

    def positive(self, answer: list[RR], additional: list[RR] | None = None) -> Answer:
        if not answer:
            return self.nodata()
        return Answer(RCODE.NOERROR, tuple(answer), (), tuple(additional or ()))

    def addr(self, owner: str, ip: str, ttl: int | None = None) -> RR:
        ttl = self.ttl if ttl is None else ttl
        if ":" in ip:
            return RR(owner, _AAAA, ttl=ttl, rdata=AAAA(ip))
        return RR(owner, _A, ttl=ttl, rdata=A(ip))


UNKNOWN = "/unknown"
"""The viewer of a client whose address is no known Pod (never a namespace name)."""
AMBIGUOUS = "/ambiguous"
"""The viewer of an address Pods of several namespaces claim (during a change)."""


def sees(view: View, cfg: KubernetesConfig, viewer: str | None, namespace: str) -> bool:
    """``isolate``: a client in namespace ``viewer`` sees its own namespace, the ``allow``
    namespaces and those whose ``kdns.io/dns-visible-to`` names it or ``*``. An unknown
    client sees everything under ``unknown allow``; an ambiguous one is never given more
    than every client gets (it may be either tenant). ``viewer`` None: no isolation."""
    iso = cfg.isolate
    if viewer is None or iso is None or namespace == viewer or namespace in iso.allow:
        return True
    if viewer == UNKNOWN and iso.unknown_allow:
        return True
    vis = view.visible_to(namespace)
    return vis is not None and ("*" in vis or viewer in vis)


def _family(qtype: int) -> str | None:
    """The IP family an address query wants, as a character every address of it contains."""
    return "." if qtype == _A else ":" if qtype == _AAAA else None


def answer(qname: str, qtype: int, view: View, cfg: KubernetesConfig, zone: str,
           viewer: str | None = None) -> Answer:
    """The reply to ``qname``/``qtype`` for a name in ``zone`` (lower case, trailing dot),
    one of the plugin's zones. ``qname`` is as sent, with a trailing dot. ``deps`` lists
    what the answer read from the view. ``viewer`` is the asking client's namespace (or
    :data:`UNKNOWN`, :data:`AMBIGUOUS`) under ``isolate``: names of namespaces it may not see
    answer exactly as names that do not exist."""
    deps: list[Hashable] = []
    ans = _answer(qname, qtype, view, cfg, zone, deps, 0, viewer)
    return replace(ans, deps=tuple(dict.fromkeys(deps))) if deps else ans


def _answer(qname: str, qtype: int, view: View, cfg: KubernetesConfig, zone: str,
            deps: list[Hashable], _depth: int, viewer: str | None = None) -> Answer:
    if qtype in _TRANSFERS:
        return Answer(RCODE.REFUSED, aa=False)  # zone transfers belong to the transfer plugin
    q = _Q(qname, qtype, view, cfg, zone, viewer)
    q.deps = deps
    rel = "" if len(qname) <= len(zone) else qname[: len(qname) - len(zone)].rstrip(".")
    if zone == ".":
        rel = qname.rstrip(".")
    labels = rel.lower().split(".") if rel else []
    if not labels:
        return _apex(q)
    if is_reverse(zone):
        return _reverse(q)
    last = labels[-1]
    if len(labels) == 1:
        if last == "dns-version":
            # Reference §1.4: CoreDNS says NXDOMAIN for non-TXT here; the name exists, so NODATA.
            if qtype == _TXT:
                return q.positive([RR(qname, _TXT, ttl=DNS_VERSION_TTL,
                                      rdata=TXT(SCHEMA_VERSION))])
            return q.nodata()
        if last in ("svc", "pod", "dns"):
            return q.nodata()  # empty non-terminals (dns: the parent of ns.dns)
        return q.nxdomain()
    if labels == ["ns", "dns"]:
        fam = _family(qtype)
        owner = qname
        return q.positive([q.addr(owner, ip) for ip in cfg.local_ips if fam and fam in ip])
    if last == "svc":
        return _svc(q, labels[:-1], _depth)
    if last == "pod":
        return _pod(q, labels[:-1])
    return q.nxdomain()  # label 2 from the zone must be svc or pod


def _apex(q: _Q) -> Answer:
    if q.qtype == _SOA:
        # Only the apex SOA answer follows the serial; the SOA in a negative answer's
        # authority section keeps the serial it was built with (as a downstream negative
        # cache would), so churn does not evict every stored NXDOMAIN.
        q.deps.append(dep.SERIAL)
        soa = q.soa()
        return q.positive([RR(q.qname, _SOA, ttl=soa.ttl, rdata=soa.rdata)])
    if q.qtype == _NS:
        ns_name = q.below("ns.dns")
        glue = [q.addr(ns_name, ip) for ip in q.cfg.local_ips]
        return q.positive([RR(q.qname, _NS, ttl=q.ttl, rdata=NS(ns_name))], glue)
    return q.nodata()


# -- reverse ----------------------------------------------------------------------------------


def ptr_targets(view: View, cfg: KubernetesConfig, ip: str,
                viewer: str | None = None) -> list[str]:
    """PTR targets for ``ip`` under the primary zone: the Service name for a ClusterIP (which
    wins, as in CoreDNS), else ``<endpoint>.<svc>.<ns>.svc`` for each endpoint with it.
    Hidden namespaces (and, under ``isolate``, those ``viewer`` may not see) have no reverse
    names either."""
    return _ptr_targets(view, cfg, ip, [], viewer)


def _ptr_targets(view: View, cfg: KubernetesConfig, ip: str, deps: list[Hashable],
                 viewer: str | None = None) -> list[str]:
    zone = cfg.primary_zone
    cluster: list[str] = []
    endpoints: list[str] = []
    deps.append(dep.ip(ip))
    for entry in view.ptr_services(ip):
        svc = entry.service
        deps.append(dep.namespace(svc.namespace))
        if not view.namespace_exists(svc.namespace) or \
                not sees(view, cfg, viewer, svc.namespace):
            continue
        base = f"{svc.name}.{svc.namespace}.svc.{zone}"
        if ip in svc.cluster_ips:
            cluster.append(base)
            continue
        for ep_ip, label, _ports in entry.endpoints():
            if ep_ip == ip:
                endpoints.append(f"{label}.{base}")
    return list(dict.fromkeys(cluster or endpoints))


def _reverse(q: _Q) -> Answer:
    ip = reverse_ip(q.qname)
    if ip is None:
        return q.nxdomain()  # partial reverse names are not ours to claim (fallthrough)
    targets = _ptr_targets(q.view, q.cfg, ip, q.deps, q.viewer)
    if not targets:
        return q.nxdomain()
    if q.qtype != _PTR:
        return q.nodata()
    return q.positive([RR(q.qname, _PTR, ttl=q.ttl, rdata=PTR(t)) for t in targets])


# -- pods -------------------------------------------------------------------------------------


def pod_ip(label: str) -> str | None:
    """The address in a pod label: ``1-2-3-4``; IPv6 when the label is not exactly three
    dashes without ``--`` (CoreDNS ``findPods``)."""
    v4 = label.count("-") == 3 and "--" not in label
    text = label.replace("-", "." if v4 else ":")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _pod(q: _Q, labels: list[str]) -> Answer:
    ns = labels[-1]
    q.deps.append(dep.namespace(ns))
    if not q.view.namespace_exists(ns) or not q.sees(ns):
        return q.nxdomain()
    if len(labels) == 1:
        return q.nodata()  # <ns>.pod.<zone>: an empty non-terminal
    if len(labels) > 2 or q.cfg.pods == "disabled":
        return q.nxdomain()
    ip = pod_ip(labels[0])
    if ip is None:
        return q.nxdomain()
    if q.cfg.pods == "verified":
        q.deps.append(dep.pod(ip))
    if q.cfg.pods == "verified" and not q.view.pod_in_namespace(ip, ns):
        return q.nxdomain()
    fam = _family(q.qtype)
    return q.positive([q.addr(q.qname, ip)] if fam and fam in ip else [])


# -- services ---------------------------------------------------------------------------------


def _strip(label: str) -> str:
    return label[1:] if label.startswith("_") else label


def _port_ok(p: Port | None, port: str | None, proto: str | None) -> bool:
    """Port and protocol labels match case-insensitively; absent labels match anything.
    Unnamed ports never match a port label (spec: no SRV for unnamed ports)."""
    if port is None:
        return True
    return p is not None and p.name.lower() == port and p.protocol.lower() == proto


def _srv_weight(n: int) -> int:
    # CoreDNS backend_lookup.go SRV(): weight = floor(100 / (100*N) * 100), clamped to >= 1
    # (coredns #3930); written with the same float operations so the numbers agree exactly.
    return max(1, math.floor((100.0 / (100.0 * n)) * 100.0))


def _svc(q: _Q, labels: list[str], depth: int) -> Answer:
    ns = labels[-1]
    q.deps.append(dep.namespace(ns))
    if not q.view.namespace_exists(ns) or not q.sees(ns):
        return q.nxdomain()
    if len(labels) == 1:
        return q.nodata()  # <ns>.svc.<zone>: an empty non-terminal
    if len(labels) > 4:
        return q.nxdomain()  # three or more labels left of <svc>.<ns>.svc (no zonal names)
    svc_dep = dep.service(ns, labels[-2])
    entry = q.view.service(ns, labels[-2])
    if entry is None:
        q.deps.append(svc_dep)
        return q.nxdomain()
    # The Service's key stands for its namespace's too (the builder names every Service of a
    # namespace that changes): one key per stored answer, not two.
    q.deps[-1] = svc_dep
    endpoint: str | None = labels[0] if len(labels) == 3 else None
    port = _strip(labels[0]) if len(labels) == 4 else None
    proto = _strip(labels[1]) if len(labels) == 4 else None
    svc = entry.service
    if svc.type == "ExternalName":
        if len(labels) > 2:
            return q.nxdomain()  # nothing lives below an ExternalName (coredns #5733)
        return _external(q, entry, depth)
    if q.cfg.ignore_empty_service and not svc.headless and entry.ip_count() == 0:
        return q.nxdomain()

    base = f"{svc.name}.{svc.namespace}.svc"
    # Backends as CoreDNS counts them: one per (address, port) matched; the SRV weight uses
    # their number before duplicates are removed (reference §1.3).
    backends: list[tuple[str, Port | None, str]] = []
    if svc.headless or endpoint is not None:
        for ip, label, ports in entry.endpoints():
            if endpoint is not None and label != endpoint:
                continue
            for p in ports or (None,):
                if _port_ok(p, port, proto):
                    backends.append((ip, p, f"{label}.{base}"))
    else:
        for p in svc.ports or (None,):
            if _port_ok(p, port, proto):
                backends.extend((ip, p, base) for ip in svc.cluster_ips)
    if not backends:
        # Headless with no ready endpoints (spec §2.4.1), unknown endpoint label, no port of
        # that name, or a ClusterIP not allocated yet.
        return q.nxdomain()

    if q.qtype == _SRV:
        real = [b for b in backends if b[1] is not None]
        weight = _srv_weight(len(real)) if real else 0
        records: list[RR] = []
        extra: list[RR] = []
        seen_srv: set[tuple[str, int]] = set()
        seen_glue: set[tuple[str, str]] = set()
        for ip, p, target in real:
            assert p is not None
            fqdn = q.below(target)
            if (target, p.port) not in seen_srv:
                seen_srv.add((target, p.port))
                records.append(RR(q.qname, _SRV, ttl=q.ttl, rdata=SRV(0, weight, p.port, fqdn)))
            if (target, ip) not in seen_glue:
                seen_glue.add((target, ip))
                extra.append(q.addr(fqdn, ip))
        return q.positive(records, extra)
    fam = _family(q.qtype)
    if fam is None:
        return q.nodata()
    ips = dict.fromkeys(ip for ip, _p, _t in backends if fam in ip)
    return q.positive([q.addr(q.qname, ip) for ip in ips])


def _external(q: _Q, entry: SvcEntry, depth: int) -> Answer:
    target = entry.service.external_name
    try:
        ipaddress.ip_address(target)
        return q.nxdomain()  # only hostnames become a CNAME (coredns #2324)
    except ValueError:
        pass
    if not target:
        return q.nxdomain()
    fqdn = target + "."
    records = [RR(q.qname, _CNAME, ttl=q.ttl, rdata=CNAME(fqdn))]
    if q.qtype == _CNAME:
        return q.positive(records)
    # Follow a target inside our own zones here, from the same view; anything else is for
    # the handler to resolve through the rest of the chain.
    inner = max((z for z in q.cfg.zones if in_zone(fqdn, z)), key=len, default=None)
    if inner is None:
        return Answer(RCODE.NOERROR, tuple(records), chase=fqdn)
    if depth < MAX_CHASE:
        more = _answer(fqdn, q.qtype, q.view, q.cfg, inner, q.deps, depth + 1, q.viewer)
        records.extend(more.answer)
        return Answer(RCODE.NOERROR, tuple(records), (), more.additional, chase=more.chase)
    return q.positive(records)
