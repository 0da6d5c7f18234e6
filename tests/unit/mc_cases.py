"""The clusterset zone's behaviour as data: ServiceImports, imported slices and DNS cases.

The multi-cluster counterpart of ``k8s_cases.py`` (same ``Case`` rows and comparison), for
``kubernetes cluster.local clusterset.local { multicluster clusterset.local }``. Shared by the
unit tests (through the pure ``mc_answer`` function) and the integration test (the same rows
over UDP and TCP against kdns reading these objects from the fake API server).
"""

from __future__ import annotations

from typing import Any

from tests.unit.k8s_cases import SERIAL, Case, canon_section, soa

C = "clusterset.local."
ZONES = ("cluster.local", "clusterset.local")
OPTIONS = ("multicluster clusterset.local",)
LOCAL_IPS = ("10.0.0.53",)


def _port(name: str, port: int, protocol: str = "TCP") -> dict[str, Any]:
    return {"name": name, "port": port, "protocol": protocol}


def _import(ns: str, name: str, type: str, ips: tuple[str, ...] = (),
            ports: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": type, "ports": list(ports)}
    if ips:
        spec["ips"] = list(ips)
    return {"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
            "metadata": {"namespace": ns, "name": name}, "spec": spec}


def _ep(ip: str, hostname: str = "", ready: bool = True) -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": [ip], "conditions": {"ready": ready}}
    if hostname:
        ep["hostname"] = hostname
    return ep


def _slice(ns: str, name: str, service: str, cluster: str, endpoints: list[dict[str, Any]],
           ports: tuple[dict[str, Any], ...], family: str = "IPv4") -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": ns, "name": name, "labels": {
                "multicluster.kubernetes.io/service-name": service,
                "multicluster.kubernetes.io/source-cluster": cluster}},
            "addressType": family, "endpoints": endpoints, "ports": list(ports)}


HTTP = _port("http", 80)
PG = _port("pg", 5432)

IMPORTS = [
    _import("default", "web", "ClusterSetIP", ("10.42.42.42",),
            (HTTP, _port("", 9000), _port("dns", 53, "UDP"))),
    _import("default", "dual", "ClusterSetIP", ("10.42.0.2", "fd00:42::2"), (HTTP,)),
    _import("default", "pending", "ClusterSetIP", (), (HTTP,)),
    _import("default", "db", "Headless", (), (PG,)),
    _import("default", "empty", "Headless", (), (PG,)),
    _import("other", "api", "ClusterSetIP", ("10.43.0.1",), (_port("https", 443),)),
]
SLICES = [
    _slice("default", "db-a", "db", "clusterA", [
        _ep("10.1.0.1", "db-0"), _ep("10.1.0.2", "db-1"), _ep("10.1.0.3", ready=False)], (PG,)),
    _slice("default", "db-b", "db", "clusterB", [_ep("10.2.0.1", "db-0")], (PG,)),
    _slice("default", "db-b6", "db", "clusterB", [_ep("fd00:2::5")], (PG,), "IPv6"),
    _slice("default", "empty-a", "empty", "clusterA", [_ep("10.3.0.1", ready=False)], (PG,)),
    # a slice whose import does not exist (yet) contributes nothing
    _slice("default", "ghost-a", "ghost", "clusterA", [_ep("10.4.0.1")], (PG,)),
]

MSOA = (soa(C),)


def nx(qname: str, qtype: str = "A", note: str = "") -> Case:
    return Case(qname, qtype, "NXDOMAIN", authority=MSOA, note=note)


def nodata(qname: str, qtype: str = "A", note: str = "") -> Case:
    return Case(qname, qtype, "NOERROR", authority=MSOA, note=note)


def ok(qname: str, qtype: str, answer: tuple[str, ...], additional: tuple[str, ...] = (),
       note: str = "", **kw: Any) -> Case:
    return Case(qname, qtype, "NOERROR", answer=answer, additional=additional, note=note, **kw)


WEB = f"web.default.svc.{C}"
DB = f"db.default.svc.{C}"
DUAL = f"dual.default.svc.{C}"

CASES: list[Case] = [
    # -- the apex, the schema version, empty non-terminals (§2.2) --------------------------
    ok(C, "SOA", (f"{C} 5 IN SOA ns.dns.{C} hostmaster.{C} SERIAL 7200 1800 86400 5",)),
    ok(C, "NS", (f"{C} 5 IN NS ns.dns.{C}",), (f"ns.dns.{C} 5 IN A 10.0.0.53",),
       host_dependent=True),
    nodata(C, "A", "the apex has SOA and NS only"),
    ok(f"dns-version.{C}", "TXT", (f'dns-version.{C} 28800 IN TXT "1.0.0"',),
       note="MCS DNS spec §2.2: schema 1.0.0"),
    nodata(f"dns-version.{C}", "A"),
    nodata(f"svc.{C}", "A", "empty non-terminal"),
    nx(f"pod.{C}", "A", "no pod names in the clusterset zone"),
    nx(f"1-2-3-4.default.pod.{C}", "A", "no pod names in the clusterset zone"),
    nx(f"nothing.{C}", "A"),
    nodata(f"default.svc.{C}", "A", "a namespace with imports is an empty non-terminal"),
    nx(f"nope.svc.{C}", "A", "a namespace without imports does not exist here"),
    nx(f"ghost.default.svc.{C}", "A", "slices without their ServiceImport publish nothing"),
    # -- ClusterSetIP imports (§2.3) ---------------------------------------------------------
    ok(WEB, "A", (f"{WEB} 5 IN A 10.42.42.42",), note="§2.3.1: the ClusterSetIP"),
    nodata(WEB, "AAAA", "no v6 ClusterSetIP"),
    nodata(WEB, "TXT"),
    ok(WEB, "SRV", (f"{WEB} 5 IN SRV 0 50 80 {WEB}", f"{WEB} 5 IN SRV 0 50 53 {WEB}"),
       (f"{WEB} 5 IN A 10.42.42.42",), note="the bare name lists every named port"),
    ok(f"_http._tcp.{WEB}", "SRV", (f"_http._tcp.{WEB} 5 IN SRV 0 100 80 {WEB}",),
       (f"{WEB} 5 IN A 10.42.42.42",), note="§2.3.2"),
    ok(f"_dns._udp.{WEB}", "SRV", (f"_dns._udp.{WEB} 5 IN SRV 0 100 53 {WEB}",),
       (f"{WEB} 5 IN A 10.42.42.42",)),
    nodata(f"_http._tcp.{WEB}", "A", "the SRV name exists with another type"),
    nx(f"_http._udp.{WEB}", "SRV", "no such port and protocol"),
    nx(f"_9000._tcp.{WEB}", "SRV", "unnamed ports have no SRV record"),
    nx(f"clustera.{WEB}", "A", "§2.3.4: no per-cluster names for a ClusterSetIP import"),
    nx(f"db-0.clustera.{WEB}", "A", "§2.3.4"),
    nx(f"a.b.c.{WEB}", "A", "too many labels"),
    ok(DUAL, "A", (f"{DUAL} 5 IN A 10.42.0.2",)),
    ok(DUAL, "AAAA", (f"{DUAL} 5 IN AAAA fd00:42::2",), note="dual-stack ClusterSetIPs"),
    nx(f"pending.default.svc.{C}", "A", "no ClusterSetIP allocated yet"),
    ok(f"api.other.svc.{C}", "A", (f"api.other.svc.{C} 5 IN A 10.43.0.1",)),
    # -- Headless imports (§2.4) -------------------------------------------------------------
    ok(DB, "A", (f"{DB} 5 IN A 10.1.0.1", f"{DB} 5 IN A 10.1.0.2", f"{DB} 5 IN A 10.2.0.1"),
       note="§2.4.1: every ready endpoint of every cluster"),
    ok(DB, "AAAA", (f"{DB} 5 IN AAAA fd00:2::5",)),
    nodata(DB, "TXT"),
    ok(f"_pg._tcp.{DB}", "SRV", (
        f"_pg._tcp.{DB} 5 IN SRV 0 25 5432 db-0.clustera.{DB}",
        f"_pg._tcp.{DB} 5 IN SRV 0 25 5432 db-1.clustera.{DB}",
        f"_pg._tcp.{DB} 5 IN SRV 0 25 5432 db-0.clusterb.{DB}",
        f"_pg._tcp.{DB} 5 IN SRV 0 25 5432 fd00-2--5.clusterb.{DB}",
    ), (
        f"db-0.clustera.{DB} 5 IN A 10.1.0.1", f"db-1.clustera.{DB} 5 IN A 10.1.0.2",
        f"db-0.clusterb.{DB} 5 IN A 10.2.0.1", f"fd00-2--5.clusterb.{DB} 5 IN AAAA fd00:2::5",
    ), note="§2.4.2: one SRV per ready endpoint and port, target <host>.<clusterid>"),
    ok(DB, "SRV", (
        f"{DB} 5 IN SRV 0 25 5432 db-0.clustera.{DB}",
        f"{DB} 5 IN SRV 0 25 5432 db-1.clustera.{DB}",
        f"{DB} 5 IN SRV 0 25 5432 db-0.clusterb.{DB}",
        f"{DB} 5 IN SRV 0 25 5432 fd00-2--5.clusterb.{DB}",
    ), (
        f"db-0.clustera.{DB} 5 IN A 10.1.0.1", f"db-1.clustera.{DB} 5 IN A 10.1.0.2",
        f"db-0.clusterb.{DB} 5 IN A 10.2.0.1", f"fd00-2--5.clusterb.{DB} 5 IN AAAA fd00:2::5",
    )),
    ok(f"db-0.clustera.{DB}", "A", (f"db-0.clustera.{DB} 5 IN A 10.1.0.1",),
       note="§2.4.1: <hostname>.<clusterid>.<svc>"),
    ok(f"db-0.clusterb.{DB}", "A", (f"db-0.clusterb.{DB} 5 IN A 10.2.0.1",),
       note="the same hostname in another cluster is another name"),
    nodata(f"db-0.clusterb.{DB}", "AAAA"),
    ok(f"fd00-2--5.clusterb.{DB}", "AAAA", (f"fd00-2--5.clusterb.{DB} 5 IN AAAA fd00:2::5",),
       note="no hostname: the dashed IP"),
    nx(f"db-9.clustera.{DB}", "A"),
    nx(f"db-0.clusterc.{DB}", "A", "an unknown cluster"),
    nx(f"10-1-0-3.clustera.{DB}", "A", "a not-ready endpoint has no name"),
    nx(f"db-0.{DB}", "A", "per-endpoint names need the cluster label"),
    nx(f"_pg._udp.{DB}", "SRV"),
    nx(f"empty.default.svc.{C}", "A", "§2.4.1: a headless import without ready endpoints"),
    nx(f"empty.default.svc.{C}", "SRV"),
    Case(C, "AXFR", "REFUSED", aa=False, note="the clusterset zone is not transferred"),
]


def build_config(local_ips: tuple[str, ...] = LOCAL_IPS, zones: tuple[str, ...] = ZONES) -> Any:
    from pathlib import Path

    from kdns.config.parser import parse_corefile
    from kdns.plugins.kubernetes.setup import parse_config
    from kdns.plugins.setup_context import SetupContext

    opts = "\n".join(f"        {o}" for o in ("endpoint http://127.0.0.1:1", *OPTIONS))
    block = parse_corefile(f".:53 {{\n    kubernetes {' '.join(zones)} {{\n{opts}\n    }}\n}}\n")[0]
    ctx = SetupContext(keys=block.keys, config_dir=Path("/demo"))
    return parse_config(block.directives[0], ctx, local_ips=local_ips)


def build_config_with_reverse() -> Any:
    return build_config(zones=(*ZONES, "in-addr.arpa", "ip6.arpa"))


def mc_view(cfg: Any) -> Any:
    """A synced clusterset view of IMPORTS and SLICES."""
    from kdns.k8s.objects import PARSERS
    from kdns.plugins.kubernetes.mcview import McViewBuilder

    builder = McViewBuilder(namespaces=cfg.namespaces, now=lambda: SERIAL)
    for kind, objs in (("serviceimports", IMPORTS), ("importedslices", SLICES)):
        builder.begin_list(kind)
        seen = set()
        for obj in objs:
            parsed = PARSERS[kind](obj)
            builder.upsert(kind, parsed)
            seen.add(parsed.key)
        builder.end_list(kind, seen)
    assert builder.synced
    return builder.view


def run_case(case: Case, cfg: Any = None, view: Any = None) -> dict[str, Any]:
    from dnslib import QTYPE, RCODE

    from kdns.plugins.kubernetes.mcanswer import mc_answer

    cfg = cfg or build_config()
    view = view or mc_view(cfg)
    got = mc_answer(case.qname, getattr(QTYPE, case.qtype), view, cfg, C)
    return {
        "rcode": RCODE.get(got.rcode),
        "aa": got.aa,
        "answer": canon_section([str(r) for r in got.answer]),
        "authority": canon_section([str(r) for r in got.authority]),
        "additional": canon_section([str(r) for r in got.additional]),
    }
