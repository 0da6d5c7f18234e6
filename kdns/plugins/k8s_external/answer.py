"""The k8s_external answer: a pure function of (question, view, config, zone, nameserver IPs).

Names, as CoreDNS's k8s_external answers them (``plugin/kubernetes/external.go``,
``plugin/k8s_external/{external,apex,msg_to_dns}.go``):

* ``<zone>``: SOA (``ns1.<apex>.<zone>``, ``hostmaster.<apex>.<zone>``, serial = the view's, TTL
  and minimum = ``ttl``) and NS ``ns1.<apex>.<zone>`` with the nameserver addresses as glue;
* ``<apex>.<zone>``: NODATA (an empty non-terminal); ``ns1.<apex>.<zone>``: the nameserver
  addresses; anything else under the apex: NXDOMAIN;
* ``<svc>.<ns>.<zone>``: the Service's external IPs (``spec.externalIPs`` and load-balancer
  ingress IPs) as A/AAAA, or a CNAME to the load balancer's hostname when it has only that;
  ``_<port>._<proto>.<svc>.<ns>.<zone>`` as SRV with targets ``<svc>.<ns>.<zone>`` and glue;
* with ``headless``, a headless Service without external IPs answers its ready endpoints, and
  ``<endpoint>.<svc>.<ns>.<zone>`` the one endpoint (SRV targets name the endpoints);
* ``<ns>.<zone>`` of an existing namespace: NODATA; everything unknown: NXDOMAIN. Every negative
  reply carries the SOA; other types than A, AAAA and SRV get NODATA.

Owners are the qname as sent; generated names use the query's spelling of the zone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

from dnslib import AAAA, CNAME, NS, QTYPE, RCODE, RR, SOA, SRV, A

from kdns.k8s.objects import Port, Service
from kdns.plugins.k8s_external.setup import ExternalConfig

SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 7200, 1800, 86400
_A, _AAAA, _SRV, _SOA, _NS, _CNAME = QTYPE.A, QTYPE.AAAA, QTYPE.SRV, QTYPE.SOA, QTYPE.NS, QTYPE.CNAME


class Reply(NamedTuple):
    rcode: int
    answer: tuple[RR, ...] = ()
    authority: tuple[RR, ...] = ()
    additional: tuple[RR, ...] = ()
    name_error: bool = False
    chase: str | None = None
    """A load balancer's hostname to resolve through the rest of the chain (CoreDNS's upstream
    lookup), so stub resolvers get its addresses with the CNAME."""


class EntryLike(Protocol):
    """A Service with its endpoints, as the kubernetes plugin's view hands it out."""

    @property
    def service(self) -> Service: ...

    def endpoints(self) -> Iterator[tuple[str, str, tuple[Port, ...]]]: ...


class ViewLike(Protocol):
    """The part of the kubernetes plugin's view (its public API) this plugin reads."""

    @property
    def serial(self) -> int: ...

    def namespace_exists(self, namespace: str) -> bool: ...

    def service(self, namespace: str, name: str) -> EntryLike | None: ...


def _strip(label: str) -> str:
    return label[1:] if label.startswith("_") else label


def _port_ok(p: Port | None, port: str | None, proto: str | None) -> bool:
    """Port and protocol labels match case-insensitively; absent labels match anything, and a
    Service without ports (``None``) matches only then (CoreDNS's port -1 sentinel)."""
    if port is None:
        return True
    return p is not None and p.name.lower() == port and p.protocol.lower() == proto


def _srv_weight(n: int) -> int:
    # msg_to_dns.go srv(): all priority 0, weight floor(100 / (100 * n) * 100), at least 1
    return max(1, math.floor((100.0 / (100.0 * n)) * 100.0))


class _Q:
    __slots__ = ("cfg", "qname", "qtype", "serial", "zone_spelled")

    def __init__(self, qname: str, qtype: int, cfg: ExternalConfig, zone: str,
                 serial: int) -> None:
        self.qname, self.qtype, self.cfg, self.serial = qname, qtype, cfg, serial
        self.zone_spelled = qname[len(qname) - len(zone):] if zone != "." else "."

    def below(self, name: str) -> str:
        z = self.zone_spelled
        return name + z if z == "." else f"{name}.{z}"

    def soa(self) -> RR:
        ttl = self.cfg.ttl
        return RR(self.zone_spelled, _SOA, ttl=ttl, rdata=SOA(
            self.below(f"ns1.{self.cfg.apex}"), self.below(f"hostmaster.{self.cfg.apex}"),
            (self.serial & 0xFFFFFFFF, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, ttl)))

    def negative(self, rcode: int) -> Reply:
        return Reply(rcode, authority=(self.soa(),), name_error=rcode == RCODE.NXDOMAIN)

    def positive(self, answer: list[RR], additional: list[RR] | None = None) -> Reply:
        if not answer:
            return self.negative(RCODE.NOERROR)
        return Reply(RCODE.NOERROR, tuple(answer), (), tuple(additional or ()))

    def addr(self, owner: str, ip: str) -> RR:
        if ":" in ip:
            return RR(owner, _AAAA, ttl=self.cfg.ttl, rdata=AAAA(ip))
        return RR(owner, _A, ttl=self.cfg.ttl, rdata=A(ip))


def answer(qname: str, qtype: int, view: ViewLike, cfg: ExternalConfig, zone: str,
           ns_ips: Callable[[], tuple[str, ...]]) -> Reply:
    """The reply to ``qname``/``qtype`` (as sent, trailing dot) in ``zone``, one of the plugin's
    zones. ``view`` is the kubernetes plugin's current view; ``ns_ips`` gives the nameserver's
    addresses (asked only for the names that need them)."""
    q = _Q(qname, qtype, cfg, zone, view.serial)
    rel = qname[: len(qname) - len(zone)].rstrip(".") if zone != "." else qname.rstrip(".")
    labels = rel.lower().split(".") if rel else []
    if not labels:
        return _apex(q, ns_ips)
    if labels[-1] == cfg.apex:
        if len(labels) == 1:
            return q.negative(RCODE.NOERROR)
        if labels == ["ns1", cfg.apex]:
            fam = "." if qtype == _A else ":" if qtype == _AAAA else None
            return q.positive([q.addr(qname, ip) for ip in ns_ips() if fam and fam in ip])
        return q.negative(RCODE.NXDOMAIN)
    ns = labels[-1]
    if not view.namespace_exists(ns):
        return q.negative(RCODE.NXDOMAIN)
    if len(labels) == 1:
        return q.negative(RCODE.NOERROR)
    rest = labels[:-2]
    if len(rest) > 2:
        return q.negative(RCODE.NXDOMAIN)
    endpoint = rest[0] if len(rest) == 1 else None
    port, proto = (_strip(rest[0]), _strip(rest[1])) if len(rest) == 2 else (None, None)
    entry = view.service(ns, labels[-2])
    if entry is None:
        return q.negative(RCODE.NXDOMAIN)
    svc = entry.service
    base = f"{svc.name}.{svc.namespace}"
    # (address or hostname, port, target relative to the zone)
    backends: list[tuple[str, Port | None, str]] = []
    if cfg.headless and not svc.external_ips and (svc.headless or endpoint is not None):
        for ip, label, ports in entry.endpoints():
            if endpoint is not None and label != endpoint:
                continue
            for p in ports or (None,):
                if _port_ok(p, port, proto):
                    backends.append((ip, p, f"{label}.{base}"))
    else:
        # As CoreDNS: without `headless`, an endpoint label in front of the Service is not
        # looked at, and the Service's external addresses answer.
        for host in (*svc.external_ips, *svc.lb_hostnames):
            for p in svc.ports or (None,):
                if _port_ok(p, port, proto):
                    backends.append((host, p, base))
    if not backends:
        return q.negative(RCODE.NXDOMAIN)
    if qtype == _SRV:
        return _srv(q, backends)
    hosts = list(dict.fromkeys(h for h, _p, _t in backends))
    if qtype == _CNAME and not any(_is_ip(h) for h in hosts):
        return q.positive([RR(qname, _CNAME, ttl=cfg.ttl, rdata=CNAME(hosts[0] + "."))])
    fam = "." if qtype == _A else ":" if qtype == _AAAA else None
    if fam is None:
        return q.negative(RCODE.NOERROR)
    ips = [h for h in hosts if fam in h and _is_ip(h)]
    if ips:
        return q.positive([q.addr(qname, ip) for ip in ips])
    names = [h for h in hosts if not _is_ip(h)]
    if names and not any(_is_ip(h) for h in hosts):
        # Only a load balancer hostname (AWS ELB): one CNAME (RFC 1034 §3.6.2 allows no
        # other data beside it), its addresses fetched through the rest of the chain.
        target = names[0] + "."
        return Reply(RCODE.NOERROR, (RR(qname, _CNAME, ttl=cfg.ttl, rdata=CNAME(target)),),
                     chase=target)
    return q.negative(RCODE.NOERROR)


def _is_ip(host: str) -> bool:
    return ":" in host or host.replace(".", "").isdigit()


def _srv(q: _Q, backends: list[tuple[str, Port | None, str]]) -> Reply:
    real = [b for b in backends if b[1] is not None]
    if not real:
        return q.negative(RCODE.NOERROR)
    weight = _srv_weight(len(real))
    records: list[RR] = []
    extra: list[RR] = []
    seen_srv: set[tuple[str, int]] = set()
    seen_glue: set[tuple[str, str]] = set()
    for host, p, target in real:
        assert p is not None
        fqdn = q.below(target) if _is_ip(host) else host + "."
        if (fqdn, p.port) not in seen_srv:
            seen_srv.add((fqdn, p.port))
            records.append(RR(q.qname, _SRV, ttl=q.cfg.ttl, rdata=SRV(0, weight, p.port, fqdn)))
        if _is_ip(host) and (fqdn, host) not in seen_glue:
            seen_glue.add((fqdn, host))
            extra.append(q.addr(fqdn, host))
    return q.positive(records, extra)


def _apex(q: _Q, ns_ips: Callable[[], tuple[str, ...]]) -> Reply:
    if q.qtype == _SOA:
        soa = q.soa()
        return q.positive([RR(q.qname, _SOA, ttl=soa.ttl, rdata=soa.rdata)])
    if q.qtype == _NS:
        ns_name = q.below(f"ns1.{q.cfg.apex}")
        glue = [q.addr(ns_name, ip) for ip in ns_ips()]
        return q.positive([RR(q.qname, _NS, ttl=q.cfg.ttl, rdata=NS(ns_name))], glue)
    return q.negative(RCODE.NOERROR)
