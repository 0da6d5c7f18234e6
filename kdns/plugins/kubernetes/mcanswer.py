"""The clusterset answer (KEP-1645 DNS spec 1.0.0): a pure function of (question, view, config,
zone) for the plugin's ``multicluster`` zones.

This module owns the record rules of the multi-cluster spec, with the cluster zone's
NXDOMAIN/NODATA model (a name that exists with other types, or an empty non-terminal, answers
NODATA; only a name that does not exist answers NXDOMAIN):

* ``<svc>.<ns>.svc.<zone>`` A/AAAA: the ClusterSetIPs (§2.3.1); for a Headless import one record
  per ready endpoint of every cluster (§2.4.1), NXDOMAIN when it has none;
* ``_<port>._<proto>.<svc>.<ns>.svc.<zone>`` SRV (§2.3.2, §2.4.2): the import's named ports with
  the import's name as target; for Headless one per ready endpoint and named slice port, with
  target ``<hostname>.<clusterid>.<svc>.<ns>.svc.<zone>``; the bare name's SRV lists every
  named port (the cluster zone's rule); the targets' addresses go in Additional;
* ``<hostname>.<clusterid>.<svc>.<ns>.svc.<zone>`` A/AAAA: Headless only (§2.4.1); a
  ClusterSetIP import has no per-cluster names (§2.3.4), nor does anything have
  ``<x>.<svc>.<ns>.svc``;
* ``dns-version.<zone>`` TXT ``"1.0.0"`` (§2.2), the apex SOA and NS, ``ns.dns`` as in the
  cluster zone; ``svc`` and ``<ns>.svc`` (a namespace with an import) are empty non-terminals;
  there are no pod names. PTR records of clusterset IPs and imported endpoints live in the
  reverse zones; kdns/plugins/kubernetes/multicluster.py answers them (the cluster zone's own
  PTR wins, §2.3.3 limitations).
"""

from __future__ import annotations

import math

from dnslib import AAAA, NS, QTYPE, RCODE, RR, SOA, SRV, TXT, A

from kdns.plugins.answering import Answer
from kdns.plugins.kubernetes.answer import SOA_EXPIRE, SOA_REFRESH, SOA_RETRY
from kdns.plugins.kubernetes.mcview import McEndpoint, McEntry, McView
from kdns.plugins.kubernetes.setup import KubernetesConfig

MCS_SCHEMA_VERSION = "1.0.0"
DNS_VERSION_TTL = 28800


def _weight(n: int) -> int:
    # As the cluster zone (CoreDNS's SRV weight): floor(100 / N), at least 1.
    return max(1, math.floor((100.0 / (100.0 * n)) * 100.0))


class _Q:
    __slots__ = ("cfg", "qname", "qtype", "ttl", "view", "zone_spelled")

    def __init__(self, qname: str, qtype: int, view: McView, cfg: KubernetesConfig,
                 zone: str) -> None:
        self.qname, self.qtype, self.view, self.cfg = qname, qtype, view, cfg
        self.zone_spelled = qname[len(qname) - len(zone):]
        self.ttl = cfg.ttl

    def below(self, name: str) -> str:
        return f"{name}.{self.zone_spelled}"

    def soa(self) -> RR:
        return RR(self.zone_spelled, QTYPE.SOA, ttl=min(self.ttl, 300), rdata=SOA(
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

    def addr(self, owner: str, ip: str) -> RR:
        if ":" in ip:
            return RR(owner, QTYPE.AAAA, ttl=self.ttl, rdata=AAAA(ip))
        return RR(owner, QTYPE.A, ttl=self.ttl, rdata=A(ip))

    def addrs(self, owner: str, ips: list[str]) -> Answer:
        fam = "." if self.qtype == QTYPE.A else ":" if self.qtype == QTYPE.AAAA else None
        if fam is None:
            return self.nodata()
        return self.positive([self.addr(owner, ip) for ip in dict.fromkeys(ips) if fam in ip])


def mc_answer(qname: str, qtype: int, view: McView, cfg: KubernetesConfig, zone: str) -> Answer:
    """The reply to ``qname``/``qtype`` in ``zone``, one of ``cfg.multicluster`` (lower case,
    trailing dot). ``qname`` is as sent, with a trailing dot."""
    if qtype in (QTYPE.AXFR, QTYPE.IXFR):
        return Answer(RCODE.REFUSED, aa=False)
    q = _Q(qname, qtype, view, cfg, zone)
    rel = qname[: len(qname) - len(zone)].rstrip(".") if len(qname) > len(zone) else ""
    labels = rel.lower().split(".") if rel else []
    if not labels:
        if qtype == QTYPE.SOA:
            soa = q.soa()
            return q.positive([RR(qname, QTYPE.SOA, ttl=soa.ttl, rdata=soa.rdata)])
        if qtype == QTYPE.NS:
            ns_name = q.below("ns.dns")
            return q.positive([RR(qname, QTYPE.NS, ttl=q.ttl, rdata=NS(ns_name))],
                              [q.addr(ns_name, ip) for ip in cfg.local_ips])
        return q.nodata()
    if labels == ["dns-version"]:
        if qtype == QTYPE.TXT:
            return q.positive([RR(qname, QTYPE.TXT, ttl=DNS_VERSION_TTL,
                                  rdata=TXT(MCS_SCHEMA_VERSION))])
        return q.nodata()
    if labels in (["svc"], ["dns"]):
        return q.nodata()
    if labels == ["ns", "dns"]:
        return q.addrs(qname, list(cfg.local_ips))
    if labels[-1] != "svc" or len(labels) < 2:
        return q.nxdomain()
    ns = labels[-2]
    if not view.namespace_exists(ns):
        return q.nxdomain()
    if len(labels) == 2:
        return q.nodata()  # <ns>.svc.<zone>
    entry = view.service(ns, labels[-3])
    if entry is None or len(labels) > 5:
        return q.nxdomain()
    left = labels[:-3]
    if not left:
        return _service(q, entry)
    if len(left) == 2 and (left[0].startswith("_") or left[1].startswith("_")):
        return _srv(q, entry, left[0].removeprefix("_"), left[1].removeprefix("_"))
    if len(left) == 2 and entry.service.headless:
        host, cluster = left
        ips = [e.ip for e in entry.endpoints if e.hostname == host and e.cluster == cluster]
        return q.addrs(qname, ips) if ips else q.nxdomain()
    return q.nxdomain()  # <x>.<svc>, or per-cluster names of a ClusterSetIP import (§2.3.4)


def _service(q: _Q, entry: McEntry) -> Answer:
    imp = entry.service
    if imp.headless:
        if not entry.endpoints:
            return q.nxdomain()  # §2.4.1: no ready endpoints
        if q.qtype == QTYPE.SRV:
            return _srv(q, entry, None, None)
        return q.addrs(q.qname, [e.ip for e in entry.endpoints])
    if not imp.ips:
        return q.nxdomain()  # no clusterset IP allocated yet
    if q.qtype == QTYPE.SRV:
        return _srv(q, entry, None, None)
    return q.addrs(q.qname, list(imp.ips))


def _target(q: _Q, entry: McEntry, ep: McEndpoint | None) -> str:
    imp = entry.service
    base = f"{imp.name}.{imp.namespace}.svc"
    return q.below(base if ep is None else f"{ep.hostname}.{ep.cluster}.{base}")


def _srv(q: _Q, entry: McEntry, port: str | None, proto: str | None) -> Answer:
    """SRV records of ``_port._proto`` (or every named port when both are None)."""
    imp = entry.service

    def match(name: str, protocol: str) -> bool:
        if not name:
            return False  # unnamed ports have no SRV record
        return port is None or (name.lower() == port and protocol.lower() == proto)

    # (target owner, ip or None, port number)
    found: list[tuple[str, str | None, int]] = []
    if imp.headless:
        for ep in entry.endpoints:
            if not ep.cluster:
                continue  # a slice without a source cluster has no per-endpoint name
            found.extend((_target(q, entry, ep), ep.ip, p.port) for p in ep.ports
                         if match(p.name, p.protocol))
    else:
        found.extend((_target(q, entry, None), None, p.port) for p in imp.ports
                     if match(p.name, p.protocol))
    if not found:
        return q.nxdomain() if port is not None else q.nodata()
    if q.qtype != QTYPE.SRV:
        return q.nodata()
    weight = _weight(len(found))
    records: list[RR] = []
    extra: list[RR] = []
    seen: set[tuple[str, int]] = set()
    glue: set[tuple[str, str]] = set()
    for target, ip, number in found:
        if (target, number) not in seen:
            seen.add((target, number))
            records.append(RR(q.qname, QTYPE.SRV, ttl=q.ttl, rdata=SRV(0, weight, number,
                                                                         target)))
        ips = [ip] if ip is not None else list(imp.ips)
        for a in ips:
            if (target, a) not in glue:
                glue.add((target, a))
                extra.append(q.addr(target, a))
    return q.positive(records, extra)
