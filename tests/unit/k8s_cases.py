"""The kubernetes plugin's behaviour as data: a demo cluster and a table of DNS cases.

Shared by the unit tests (through the pure ``answer`` function) and the integration tests (the
same rows over real UDP/TCP sockets against a served instance). Nothing here imports kdns at
module level except through the helpers at the bottom, so a socket test can read the table and
the objects without the plugin.

* ``OBJECTS``: API-shaped dicts (what ``kubectl get -o json`` gives), for a manifests file.
* ``CONFIGS``: option lines of the ``kubernetes`` block per configuration name; every case
  names the configuration it runs under. Zones are always ``ZONES``.
* ``CASES``: ``Case`` rows. Records are zone-file text; compare with :func:`canon`, which
  collapses whitespace and replaces the SOA serial (time-dependent) with ``SERIAL``. Sections
  compare as sorted lists (order is the loadbalance plugin's business).
* ``host_dependent`` rows carry this host's addresses (apex NS glue); a socket test against
  another host should skip or rewrite them. ``upstream`` rows may get extra Answer records
  from the next plugin (the ExternalName target resolved upstream).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

ZONES = ("cluster.local", "in-addr.arpa", "ip6.arpa")
LOCAL_IPS = ("10.0.0.53",)
"""The host addresses the unit tests give the config (apex NS glue, ns.dns.<zone>)."""
SERIAL = 1_700_000_000
"""The SOA serial the unit tests' clock yields."""

CONFIGS: dict[str, tuple[str, ...]] = {
    "default": ("pods insecure",),
    "pods_disabled": (),
    "pods_verified": ("pods verified",),
    "pod_names": ("pods insecure", "endpoint_pod_names"),
    "ignore_empty": ("pods insecure", "ignore empty_service"),
    "ns_filter": ("pods insecure", "namespaces default kube-system"),
    "ttl30": ("pods insecure", "ttl 30"),
}


def corefile(config: str, manifests: str, port: int | None = None) -> str:
    """A Corefile serving the demo objects (written to ``manifests``) under ``config``."""
    opts = "\n".join(f"        {line}" for line in (f"manifests {manifests}", *CONFIGS[config]))
    key = f".:{port}" if port is not None else "."
    return (f"{key} {{\n    kubernetes {' '.join(ZONES)} {{\n{opts}\n    }}\n}}\n")


# -- the demo cluster ------------------------------------------------------------------------


def _ns(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _port(name: str, port: int, protocol: str = "TCP", target: int | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"port": port, "protocol": protocol}
    if name:
        p["name"] = name
    if target is not None:
        p["targetPort"] = target
    return p


def _svc(ns: str, name: str, *, type: str = "ClusterIP", ips: tuple[str, ...] = (),
         ports: tuple[dict[str, Any], ...] = (), external: str = "",
         pnr: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": type, "ports": list(ports)}
    if type == "ExternalName":
        spec["externalName"] = external
    else:
        spec["clusterIP"] = ips[0] if ips else "None"
        spec["clusterIPs"] = list(ips) if ips else ["None"]
    if pnr:
        spec["publishNotReadyAddresses"] = True
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": ns, "name": name}, "spec": spec}


def _ep(ip: str, *, hostname: str = "", ready: bool | None = True, pod: str = "") -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": [ip]}
    if ready is not None:
        ep["conditions"] = {"ready": ready}
    if hostname:
        ep["hostname"] = hostname
    if pod:
        ep["targetRef"] = {"kind": "Pod", "name": pod, "namespace": "x"}
    return ep


def _slice(ns: str, name: str, service: str, endpoints: list[dict[str, Any]],
           ports: tuple[dict[str, Any], ...] = (), family: str = "IPv4") -> dict[str, Any]:
    labels = {"kubernetes.io/service-name": service} if service else {}
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "addressType": family, "endpoints": endpoints,
            "ports": [{k: v for k, v in p.items() if k != "targetPort"} for p in ports]}


def _pod(ns: str, name: str, ip: str, *, phase: str = "Running",
         host_network: bool = False) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": ns, "name": name},
            "spec": {"hostNetwork": host_network},
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}}


HTTP = _port("http", 80)
OBJECTS: list[dict[str, Any]] = [
    _ns("default"), _ns("kube-system"), _ns("demo"),
    # NodePort with two named ports.
    _svc("default", "nginx-svc", type="NodePort", ips=("10.96.0.80",),
         ports=(_port("nginx-80", 80), _port("nginx-443", 443))),
    _slice("default", "nginx-svc-abcde", "nginx-svc",
           [_ep("10.244.1.20", pod="nginx-7f8d9c5b4-x2x7p")],
           (_port("nginx-80", 80), _port("nginx-443", 443))),
    # The book's kubia: ClusterIP, port http 80 -> 8080, three ready pods.
    _svc("default", "kubia", ips=("10.98.237.175",), ports=(_port("http", 80, target=8080),)),
    _slice("default", "kubia-7kx2q", "kubia",
           [_ep("10.244.1.18", pod="kubia-7x9kz"), _ep("10.244.2.14", pod="kubia-bq4tq"),
            _ep("10.244.3.14", pod="kubia-zk8wd")],
           (_port("http", 8080),)),
    # StatefulSet-style headless: web-0, web-1 ready, web-2 not.
    _svc("default", "web", ports=(_port("web", 80),)),
    _slice("default", "web-fk2j9", "web",
           [_ep("10.244.1.30", hostname="web-0", pod="web-0"),
            _ep("10.244.2.31", hostname="web-1", pod="web-1"),
            _ep("10.244.3.32", hostname="web-2", pod="web-2", ready=False)],
           (_port("web", 80),)),
    _svc("default", "external", type="ExternalName", external="www.Example.com"),
    _svc("default", "alias", type="ExternalName", external="kubia.default.svc.cluster.local."),
    _svc("default", "ext-ip", type="ExternalName", external="192.0.2.10"),
    _svc("default", "lb", type="LoadBalancer", ips=("10.96.0.90",), ports=(HTTP,)),
    _svc("default", "dual", ips=("10.96.0.100", "fd00:10:96::100"), ports=(HTTP,)),
    # IPv6-only headless: one address ends in "::" (label gets the trailing 0).
    _svc("default", "headless6", ports=(HTTP,)),
    _slice("default", "headless6-v6", "headless6",
           [_ep("fd00:10:244:1::5"), _ep("fd00:10:244:2::")], (HTTP,), family="IPv6"),
    _svc("default", "empty", ips=("10.96.0.110",), ports=(HTTP,)),
    _svc("default", "unready", ports=(HTTP,)),
    _slice("default", "unready-1", "unready", [_ep("10.244.2.40", ready=False)], (HTTP,)),
    _svc("default", "pnr", ports=(HTTP,), pnr=True),
    _slice("default", "pnr-1", "pnr", [_ep("10.244.2.41", ready=False)], (HTTP,)),
    # Six entries, two sharing a hostname: 5 SRV records of weight 16, 6 glue records.
    _svc("default", "dup", ports=(HTTP,)),
    _slice("default", "dup-1", "dup",
           [_ep("10.244.1.70", hostname="dup-name"), _ep("10.244.1.71", hostname="dup-name"),
            _ep("10.244.1.72"), _ep("10.244.1.73"), _ep("10.244.1.74"), _ep("10.244.1.75")],
           (HTTP,)),
    # A slice without the service label belongs to no name.
    _slice("default", "orphan-1", "", [_ep("10.244.9.9")], (HTTP,)),
    _svc("kube-system", "kube-dns", ips=("10.96.0.10",),
         ports=(_port("dns", 53, "UDP"), _port("dns-tcp", 53), _port("metrics", 9153))),
    _svc("demo", "kubia", ips=("10.96.5.5",), ports=(HTTP,)),
    _svc("demo", "db", ports=(_port("", 5432),)),
    _slice("demo", "db-1", "db", [_ep("10.244.3.60", hostname="db-0")], (_port("", 5432),)),
    _pod("default", "kubia-7x9kz", "10.244.1.18"),
    _pod("demo", "done", "10.244.2.99", phase="Succeeded"),
]

KIND_OF = {"Namespace": "namespaces", "Service": "services",
           "EndpointSlice": "endpointslices", "Pod": "pods"}


# -- the cases -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    qname: str
    qtype: str
    rcode: str
    answer: tuple[str, ...] = ()
    authority: tuple[str, ...] = ()
    additional: tuple[str, ...] = ()
    config: str = "default"
    aa: bool = True
    note: str = ""
    host_dependent: bool = False
    upstream: bool = False


def soa(zone: str = "cluster.local.", ttl: int = 5) -> str:
    return (f"{zone} {min(ttl, 300)} IN SOA ns.dns.{zone} hostmaster.{zone} SERIAL "
            f"7200 1800 86400 {ttl}")


SOA = (soa(),)
REV4 = (soa("in-addr.arpa."),)
REV6 = (soa("ip6.arpa."),)
Z = "cluster.local."


def nx(qname: str, qtype: str = "A", note: str = "", config: str = "default",
       auth: tuple[str, ...] = SOA) -> Case:
    return Case(qname, qtype, "NXDOMAIN", authority=auth, config=config, note=note)


def nodata(qname: str, qtype: str = "A", note: str = "", config: str = "default",
           auth: tuple[str, ...] = SOA) -> Case:
    return Case(qname, qtype, "NOERROR", authority=auth, config=config, note=note)


def ok(qname: str, qtype: str, answer: tuple[str, ...], additional: tuple[str, ...] = (),
       note: str = "", config: str = "default", **kw: Any) -> Case:
    return Case(qname, qtype, "NOERROR", answer=answer, additional=additional, config=config,
                note=note, **kw)


K = f"kubia.default.svc.{Z}"


def _rev(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer + "."


W = f"web.default.svc.{Z}"

CASES: list[Case] = [
    # apex, schema version, the name server (reference §1.5)
    ok(Z, "SOA", (soa(),), note="apex SOA"),
    ok(Z, "NS", (f"{Z} 5 IN NS ns.dns.{Z}",), (f"ns.dns.{Z} 5 IN A 10.0.0.53",),
       note="apex NS with glue", host_dependent=True),
    ok(f"ns.dns.{Z}", "A", (f"ns.dns.{Z} 5 IN A 10.0.0.53",), note="ns.dns A",
       host_dependent=True),
    Case(f"ns.dns.{Z}", "AAAA", "NOERROR", authority=SOA, note="ns.dns without a v6 address",
         host_dependent=True),
    nodata(f"dns.{Z}", note="dns.<zone> is the empty non-terminal above ns.dns"),
    ok(f"dns-version.{Z}", "TXT", (f'dns-version.{Z} 28800 IN TXT "1.1.0"',),
       note="spec §2.2"),
    nodata(f"dns-version.{Z}", "A", note="kdns fixes CoreDNS's NXDOMAIN quirk"),
    # empty non-terminals and what is not there (reference §1.4)
    nodata(Z, "A", note="apex, other type"),
    nodata(f"svc.{Z}", note="svc.<zone>"),
    nodata(f"pod.{Z}", note="pod.<zone>"),
    nodata(f"default.svc.{Z}", note="<ns>.svc.<zone>"),
    nodata(f"default.svc.{Z}", "SRV", note="<ns>.svc.<zone> SRV"),
    nodata(f"default.pod.{Z}", note="<ns>.pod.<zone>"),
    nodata(f"default.pod.{Z}", config="pods_disabled", note="<ns>.pod.<zone>, pods disabled"),
    nx(f"nosuchns.svc.{Z}", note="unknown namespace"),
    nx(f"kubia.nosuchns.svc.{Z}", note="service in unknown namespace"),
    nx(f"nosuch.default.svc.{Z}", note="unknown service"),
    nx(f"foo.{Z}", note="second label not svc/pod"),
    nx(f"kubia.default.foo.{Z}", note="second label not svc/pod, longer"),
    nx(f"a.b.c.kubia.default.svc.{Z}", note="too many labels"),
    nx(f"a.b.kubia.default.svc.{Z}", note="5 labels that match no port"),
    # ClusterIP (spec §2.3)
    ok(K, "A", (f"{K} 5 IN A 10.98.237.175",), note="ClusterIP A"),
    nodata(K, "AAAA", note="v4-only service, AAAA"),
    nodata(K, "TXT", note="service, TXT"),
    nodata(K, "MX", note="service, MX"),
    nodata(K, "CNAME", note="service, CNAME"),
    nodata(K, "SOA", note="service, SOA"),
    nodata(K, "PTR", note="service, PTR"),
    ok("Kubia.Default.SVC.Cluster.Local.", "A",
       ("Kubia.Default.SVC.Cluster.Local. 5 IN A 10.98.237.175",), note="case echoed"),
    ok(f"nginx-svc.default.svc.{Z}", "A", (f"nginx-svc.default.svc.{Z} 5 IN A 10.96.0.80",),
       note="NodePort A"),
    ok(f"lb.default.svc.{Z}", "A", (f"lb.default.svc.{Z} 5 IN A 10.96.0.90",),
       note="LoadBalancer A"),
    ok(f"dual.default.svc.{Z}", "A", (f"dual.default.svc.{Z} 5 IN A 10.96.0.100",),
       note="dual-stack A"),
    ok(f"dual.default.svc.{Z}", "AAAA", (f"dual.default.svc.{Z} 5 IN AAAA fd00:10:96::100",),
       note="dual-stack AAAA"),
    ok(f"empty.default.svc.{Z}", "A", (f"empty.default.svc.{Z} 5 IN A 10.96.0.110",),
       note="ClusterIP with 0 endpoints still answers"),
    nx(f"empty.default.svc.{Z}", config="ignore_empty", note="ignore empty_service"),
    ok(K, "A", (f"{K} 5 IN A 10.98.237.175",), config="ignore_empty",
       note="ignore empty_service keeps services with endpoints"),
    ok(f"kubia.demo.svc.{Z}", "A", (f"kubia.demo.svc.{Z} 5 IN A 10.96.5.5",),
       note="same name, second namespace"),
    ok(K, "A", (f"{K} 30 IN A 10.98.237.175",), config="ttl30", note="ttl option"),
    nx(f"nosuch.default.svc.{Z}", config="ttl30", auth=(soa(ttl=30),),
       note="SOA minimum follows ttl"),
    # SRV (spec §2.3.2, reference §1.3)
    ok(f"_http._tcp.{K}", "SRV", (f"_http._tcp.{K} 5 IN SRV 0 100 80 {K}",),
       (f"{K} 5 IN A 10.98.237.175",), note="ClusterIP SRV"),
    ok("_HTTP._TCP.kubia.default.svc.Cluster.Local.", "SRV",
       ("_HTTP._TCP.kubia.default.svc.Cluster.Local. 5 IN SRV 0 100 80 "
        "kubia.default.svc.Cluster.Local.",),
       ("kubia.default.svc.Cluster.Local. 5 IN A 10.98.237.175",),
       note="SRV labels case-insensitive; target uses the query's zone spelling"),
    ok(f"http.tcp.{K}", "SRV", (f"http.tcp.{K} 5 IN SRV 0 100 80 {K}",),
       (f"{K} 5 IN A 10.98.237.175",), note="underscores optional, as in CoreDNS"),
    nx(f"_http._udp.{K}", "SRV", note="no port with that protocol"),
    nx(f"_https._tcp.{K}", "SRV", note="no port with that name"),
    ok(f"_http._tcp.{K}", "A", (f"_http._tcp.{K} 5 IN A 10.98.237.175",),
       note="port labels on an A query filter, then answer"),
    ok(K, "SRV", (f"{K} 5 IN SRV 0 100 80 {K}",), (f"{K} 5 IN A 10.98.237.175",),
       note="bare-name SRV"),
    ok(f"nginx-svc.default.svc.{Z}", "SRV",
       (f"nginx-svc.default.svc.{Z} 5 IN SRV 0 50 80 nginx-svc.default.svc.{Z}",
        f"nginx-svc.default.svc.{Z} 5 IN SRV 0 50 443 nginx-svc.default.svc.{Z}"),
       (f"nginx-svc.default.svc.{Z} 5 IN A 10.96.0.80",), note="bare SRV, two ports"),
    ok(f"_nginx-443._tcp.nginx-svc.default.svc.{Z}", "SRV",
       (f"_nginx-443._tcp.nginx-svc.default.svc.{Z} 5 IN SRV 0 100 443 "
        f"nginx-svc.default.svc.{Z}",),
       (f"nginx-svc.default.svc.{Z} 5 IN A 10.96.0.80",), note="named port SRV"),
    ok(f"dual.default.svc.{Z}", "SRV",
       (f"dual.default.svc.{Z} 5 IN SRV 0 50 80 dual.default.svc.{Z}",),
       (f"dual.default.svc.{Z} 5 IN A 10.96.0.100",
        f"dual.default.svc.{Z} 5 IN AAAA fd00:10:96::100"),
       note="dual-stack SRV: one record, weight 50 (N counted before dedupe)"),
    ok(f"kube-dns.kube-system.svc.{Z}", "SRV",
       (f"kube-dns.kube-system.svc.{Z} 5 IN SRV 0 33 53 kube-dns.kube-system.svc.{Z}",
        f"kube-dns.kube-system.svc.{Z} 5 IN SRV 0 33 9153 kube-dns.kube-system.svc.{Z}"),
       (f"kube-dns.kube-system.svc.{Z} 5 IN A 10.96.0.10",),
       note="3 ports, 53/udp and 53/tcp collapse on (target, port)"),
    ok(f"_dns._udp.kube-dns.kube-system.svc.{Z}", "SRV",
       (f"_dns._udp.kube-dns.kube-system.svc.{Z} 5 IN SRV 0 100 53 "
        f"kube-dns.kube-system.svc.{Z}",),
       (f"kube-dns.kube-system.svc.{Z} 5 IN A 10.96.0.10",), note="UDP port SRV"),
    ok(f"db.demo.svc.{Z}", "SRV",
       (f"db.demo.svc.{Z} 5 IN SRV 0 100 5432 db-0.db.demo.svc.{Z}",),
       (f"db-0.db.demo.svc.{Z} 5 IN A 10.244.3.60",),
       note="bare SRV includes unnamed ports"),
    # endpoints (spec §2.4.1; reference §1.6 for ClusterIP services)
    ok(f"10-244-1-18.{K}", "A", (f"10-244-1-18.{K} 5 IN A 10.244.1.18",),
       note="endpoint of a ClusterIP service, dashed IP"),
    nodata(f"10-244-1-18.{K}", "AAAA", note="endpoint name, other type"),
    nx(f"kubia-7x9kz.{K}", note="pod name is not a label without endpoint_pod_names"),
    ok(f"kubia-7x9kz.{K}", "A", (f"kubia-7x9kz.{K} 5 IN A 10.244.1.18",), config="pod_names",
       note="endpoint_pod_names"),
    nx(f"unknown.{K}", note="unknown endpoint label"),
    # headless (spec §2.4)
    ok(W, "A", (f"{W} 5 IN A 10.244.1.30", f"{W} 5 IN A 10.244.2.31"),
       note="headless A: ready endpoints only"),
    nodata(W, "AAAA", note="v4-only headless, AAAA"),
    ok(f"web-0.{W}", "A", (f"web-0.{W} 5 IN A 10.244.1.30",), note="hostname A"),
    nx(f"web-2.{W}", note="unready endpoint has no name"),
    ok(W, "SRV", (f"{W} 5 IN SRV 0 50 80 web-0.{W}", f"{W} 5 IN SRV 0 50 80 web-1.{W}"),
       (f"web-0.{W} 5 IN A 10.244.1.30", f"web-1.{W} 5 IN A 10.244.2.31"),
       note="headless bare SRV"),
    ok(f"_web._tcp.{W}", "SRV",
       (f"_web._tcp.{W} 5 IN SRV 0 50 80 web-0.{W}", f"_web._tcp.{W} 5 IN SRV 0 50 80 web-1.{W}"),
       (f"web-0.{W} 5 IN A 10.244.1.30", f"web-1.{W} 5 IN A 10.244.2.31"),
       note="headless SRV: N endpoints x M named ports"),
    ok(f"web-1.{W}", "SRV", (f"web-1.{W} 5 IN SRV 0 100 80 web-1.{W}",),
       (f"web-1.{W} 5 IN A 10.244.2.31",), note="SRV at an endpoint name"),
    nx(f"unready.default.svc.{Z}", note="headless with no ready endpoints: NXDOMAIN (spec)"),
    nx(f"unready.default.svc.{Z}", "AAAA", note="... for every type"),
    ok(f"pnr.default.svc.{Z}", "A", (f"pnr.default.svc.{Z} 5 IN A 10.244.2.41",),
       note="publishNotReadyAddresses publishes unready endpoints"),
    ok(f"headless6.default.svc.{Z}", "AAAA",
       (f"headless6.default.svc.{Z} 5 IN AAAA fd00:10:244:1::5",
        f"headless6.default.svc.{Z} 5 IN AAAA fd00:10:244:2::"), note="IPv6 headless"),
    nodata(f"headless6.default.svc.{Z}", "A", note="v6-only headless, A"),
    ok(f"fd00-10-244-2--0.headless6.default.svc.{Z}", "AAAA",
       (f"fd00-10-244-2--0.headless6.default.svc.{Z} 5 IN AAAA fd00:10:244:2::",),
       note="IPv6 dashed label ending in '-' gets a 0"),
    ok(f"dup.default.svc.{Z}", "SRV",
       tuple(f"dup.default.svc.{Z} 5 IN SRV 0 16 80 {h}.dup.default.svc.{Z}"
             for h in ("dup-name", "10-244-1-72", "10-244-1-73", "10-244-1-74", "10-244-1-75")),
       tuple(f"{h}.dup.default.svc.{Z} 5 IN A {ip}" for h, ip in (
           ("dup-name", "10.244.1.70"), ("dup-name", "10.244.1.71"),
           ("10-244-1-72", "10.244.1.72"), ("10-244-1-73", "10.244.1.73"),
           ("10-244-1-74", "10.244.1.74"), ("10-244-1-75", "10.244.1.75"))),
       note="6 entries, 5 records of weight 16, 6 glue records"),
    ok(f"dup-name.dup.default.svc.{Z}", "A",
       (f"dup-name.dup.default.svc.{Z} 5 IN A 10.244.1.70",
        f"dup-name.dup.default.svc.{Z} 5 IN A 10.244.1.71"),
       note="one hostname, several addresses"),
    # ExternalName (spec §2.5)
    ok(f"external.default.svc.{Z}", "A",
       (f"external.default.svc.{Z} 5 IN CNAME www.example.com.",),
       note="ExternalName CNAME, target lower-cased", upstream=True),
    ok(f"external.default.svc.{Z}", "CNAME",
       (f"external.default.svc.{Z} 5 IN CNAME www.example.com.",), note="ExternalName, CNAME"),
    ok(f"alias.default.svc.{Z}", "A",
       (f"alias.default.svc.{Z} 5 IN CNAME {K}", f"{K} 5 IN A 10.98.237.175"),
       note="in-zone ExternalName target is followed"),
    nx(f"foo.external.default.svc.{Z}", note="nothing below an ExternalName"),
    nx(f"_http._tcp.external.default.svc.{Z}", "SRV", note="no ports below an ExternalName"),
    nx(f"ext-ip.default.svc.{Z}", note="IP-valued externalName"),
    # PTR (spec §2.3.3, §2.4.3)
    ok("175.237.98.10.in-addr.arpa.", "PTR", (f"175.237.98.10.in-addr.arpa. 5 IN PTR {K}",),
       note="ClusterIP PTR"),
    ok("18.1.244.10.in-addr.arpa.", "PTR",
       (f"18.1.244.10.in-addr.arpa. 5 IN PTR 10-244-1-18.{K}",),
       note="ClusterIP service endpoint PTR"),
    ok("18.1.244.10.in-addr.arpa.", "PTR",
       (f"18.1.244.10.in-addr.arpa. 5 IN PTR kubia-7x9kz.{K}",), config="pod_names",
       note="endpoint PTR with endpoint_pod_names"),
    ok("30.1.244.10.in-addr.arpa.", "PTR", (f"30.1.244.10.in-addr.arpa. 5 IN PTR web-0.{W}",),
       note="headless endpoint PTR"),
    nx("32.3.244.10.in-addr.arpa.", "PTR", auth=REV4, note="unready endpoint has no PTR"),
    nx("9.9.244.10.in-addr.arpa.", "PTR", auth=REV4, note="orphan slice has no PTR"),
    nx("99.99.99.10.in-addr.arpa.", "PTR", auth=REV4, note="unknown IP"),
    nx("96.10.in-addr.arpa.", "PTR", auth=REV4, note="partial reverse name"),
    nodata("175.237.98.10.in-addr.arpa.", "A", auth=REV4, note="PTR name, other type"),
    ok("in-addr.arpa.", "SOA", (soa("in-addr.arpa."),), note="reverse apex SOA"),
    ok(_rev("fd00:10:96::100"), "PTR", (f"{_rev('fd00:10:96::100')} 5 IN PTR dual.default.svc.{Z}",),
       note="IPv6 ClusterIP PTR"),
    ok(_rev("fd00:10:244:1::5"), "PTR",
       (f"{_rev('fd00:10:244:1::5')} 5 IN PTR fd00-10-244-1--5.headless6.default.svc.{Z}",),
       note="IPv6 endpoint PTR"),
    nx(_rev("fd00:10:244:9::1"), "PTR", auth=REV6, note="unknown IPv6"),
    # namespaces filter
    nx(f"kubia.demo.svc.{Z}", config="ns_filter", note="unexposed namespace: service"),
    nx(f"demo.svc.{Z}", config="ns_filter", note="unexposed namespace: ENT"),
    nx("5.5.96.10.in-addr.arpa.", "PTR", config="ns_filter", auth=REV4,
       note="unexposed namespace: PTR"),
    ok(K, "A", (f"{K} 5 IN A 10.98.237.175",), config="ns_filter",
       note="exposed namespace still answers"),
    # pods (reference §1.6)
    ok(f"10-244-1-18.default.pod.{Z}", "A", (f"10-244-1-18.default.pod.{Z} 5 IN A 10.244.1.18",),
       note="pods insecure"),
    ok(f"1-2-3-4.default.pod.{Z}", "A", (f"1-2-3-4.default.pod.{Z} 5 IN A 1.2.3.4",),
       note="pods insecure echoes any IP"),
    nodata(f"1-2-3-4.default.pod.{Z}", "AAAA", note="pod name, other type"),
    ok(f"fd00--1.default.pod.{Z}", "AAAA", (f"fd00--1.default.pod.{Z} 5 IN AAAA fd00::1",),
       note="IPv6 pod name"),
    nx(f"1-2-3-4.nosuchns.pod.{Z}", note="pods insecure: namespace must exist"),
    nx(f"not-an-ip.default.pod.{Z}", note="pod label that is no IP"),
    nx(f"a.1-2-3-4.default.pod.{Z}", note="too many labels under pod"),
    nx(f"10-244-1-18.default.pod.{Z}", config="pods_disabled", note="pods disabled"),
    ok(f"10-244-1-18.default.pod.{Z}", "A", (f"10-244-1-18.default.pod.{Z} 5 IN A 10.244.1.18",),
       config="pods_verified", note="pods verified: pod exists"),
    nx(f"10-244-1-18.demo.pod.{Z}", config="pods_verified", note="verified: wrong namespace"),
    nx(f"1-2-3-4.default.pod.{Z}", config="pods_verified", note="verified: no such pod"),
    nx(f"10-244-2-99.demo.pod.{Z}", config="pods_verified", note="verified: pod not running"),
    # transfers
    Case(Z, "AXFR", "REFUSED", aa=False, note="AXFR is the transfer plugin's job"),
    # ANY without the *any* plugin: like CoreDNS, an "other type" (its fake A lookup tells
    # NODATA from NXDOMAIN); the RFC 8482 HINFO is the *any* plugin's job
    nodata(K, "ANY", note="service, ANY: NODATA"),
    nodata(Z, "ANY", note="apex, ANY: NODATA"),
    nodata(f"default.svc.{Z}", "ANY", note="<ns>.svc.<zone>, ANY: NODATA"),
    nx(f"nosuch.default.svc.{Z}", "ANY", note="unknown service, ANY: NXDOMAIN"),
]


def canon(text: str) -> str:
    """One RR's text in a comparable form: single spaces, SOA serial replaced by SERIAL."""
    parts = text.split()
    if len(parts) >= 7 and parts[3] == "SOA":
        parts[6] = "SERIAL"
    return " ".join(parts)


def canon_section(rrs: list[str] | tuple[str, ...]) -> list[str]:
    return sorted(canon(r) for r in rrs)


# -- running a case through the pure function (unit tests) -----------------------------------


def build_config(config: str, *, local_ips: tuple[str, ...] = LOCAL_IPS) -> Any:
    """The KubernetesConfig for a configuration name, parsed from Corefile text."""
    from pathlib import Path

    from kdns.config.parser import parse_corefile
    from kdns.plugins.kubernetes.setup import parse_config
    from kdns.plugins.setup_context import SetupContext

    block = parse_corefile(corefile(config, "demo.json"))[0]
    ctx = SetupContext(keys=block.keys, config_dir=Path("/demo"))
    (directive,) = [d for d in block.directives if d.name.text == "kubernetes"]
    return parse_config(directive, ctx, local_ips=local_ips)


def demo_view(cfg: Any, objects: list[dict[str, Any]] | None = None) -> Any:
    """A synced View of the demo objects as ``cfg`` would watch them."""
    from kdns.k8s.objects import PARSERS
    from kdns.plugins.kubernetes.builder import ViewBuilder

    builder = ViewBuilder(cfg.kinds, namespaces=cfg.namespaces,
                          endpoint_pod_names=cfg.endpoint_pod_names, now=lambda: SERIAL)
    for kind in cfg.kinds:
        builder.begin_list(kind)
        seen = set()
        for obj in OBJECTS if objects is None else objects:
            if KIND_OF[obj["kind"]] == kind:
                parsed = PARSERS[kind](obj)
                builder.upsert(kind, parsed)
                seen.add(parsed.key)
        builder.end_list(kind, seen)
    assert builder.flush()
    return builder.view


def run_case(case: Case, cfg: Any = None, view: Any = None) -> dict[str, Any]:
    """The pure answer for a case, in the table's text form."""
    from dnslib import QTYPE, RCODE

    from kdns.plugins.kubernetes.answer import answer

    cfg = cfg or build_config(case.config)
    view = view or demo_view(cfg)
    qlow = case.qname.lower()
    zone = max((z for z in cfg.zones if qlow == z or qlow.endswith("." + z)), key=len)
    got = answer(case.qname, getattr(QTYPE, case.qtype), view, cfg, zone)
    return {
        "rcode": RCODE.get(got.rcode),
        "aa": got.aa,
        "answer": canon_section([str(r) for r in got.answer]),
        "authority": canon_section([str(r) for r in got.authority]),
        "additional": canon_section([str(r) for r in got.additional]),
    }


def expected(case: Case) -> dict[str, Any]:
    return {
        "rcode": case.rcode,
        "aa": case.aa,
        "answer": canon_section(case.answer),
        "authority": canon_section(case.authority),
        "additional": canon_section(case.additional),
    }
