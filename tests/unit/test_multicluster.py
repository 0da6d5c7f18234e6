"""multicluster: the clusterset case table through the pure answer function, the option's
located errors, the MCS objects' parsing and the clusterset view's merging."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import mc_cases as mc
import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from k8s_cases import expected

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.k8s.mcs import parse_imported_slice, parse_service_import
from kdns.k8s.objects import PARSERS, ObjectError
from kdns.plugins.base import Request, Response
from kdns.plugins.kubernetes.mcview import McViewBuilder
from kdns.plugins.kubernetes.multicluster import MulticlusterHandler
from kdns.plugins.kubernetes.setup import parse_config
from kdns.plugins.kubernetes.view import ViewBuilder
from kdns.plugins.setup_context import SetupContext


@pytest.mark.parametrize("case", mc.CASES, ids=[f"{c.qname}:{c.qtype}" for c in mc.CASES])
def test_case(case: mc.Case) -> None:
    assert mc.run_case(case) == expected(case), case.note


def test_rows_are_distinct() -> None:
    keys = [(c.qname, c.qtype) for c in mc.CASES]
    assert len(keys) == len(set(keys))


def test_names_are_case_insensitive_and_echo_the_query() -> None:
    case = mc.ok("WEB.Default.svc.ClusterSet.local.", "A",
                 ("WEB.Default.svc.ClusterSet.local. 5 IN A 10.42.42.42",))
    assert mc.run_case(case) == expected(case)


def _cfg(body: str, keys: str = ".") -> object:
    block = parse_corefile(f"{keys}:53 {{\n    kubernetes {body}\n}}\n", "Corefile")[0]
    return parse_config(block.directives[0], SetupContext(block.keys, Path(".")),
                        local_ips=("10.0.0.53",))


def test_the_option_sets_the_zones_apart() -> None:
    cfg = _cfg("clusterset.local cluster.local {\n        multicluster clusterset.local\n    }")
    assert cfg.multicluster == ("clusterset.local.",)  # type: ignore[attr-defined]
    assert cfg.primary_zone == "cluster.local."  # type: ignore[attr-defined]


@pytest.mark.parametrize(("body", "where", "message"), [
    ("cluster.local {\n        multicluster clusterset.local\n    }", "3:22",
     "multicluster zone 'clusterset.local.' is not one of the plugin's zones"),
    ("cluster.local clusterset.local {\n        multicluster\n    }", "3:9",
     "multicluster takes at least 1 argument"),
    ("clusterset.local {\n        multicluster clusterset.local\n    }", "3:9",
     "at least one zone must be a cluster zone"),
    ("cluster.local clusterset.local {\n        multicluster clusterset.local\n"
     "        manifests x.json\n    }", "3:9", "cannot be combined with manifests"),
    ("cluster.local in-addr.arpa {\n        multicluster in-addr.arpa\n    }", "3:22",
     "is not one of the plugin's zones"),
])
def test_option_errors_are_located(body: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _cfg(body)
    assert str(exc.value).startswith(f"Corefile:{where}: kubernetes: ")
    assert message in str(exc.value)


def test_mcs_objects_parse_and_bad_ones_are_rejected() -> None:
    imp = parse_service_import(mc.IMPORTS[1])
    assert imp.ips == ("10.42.0.2", "fd00:42::2") and not imp.headless
    assert parse_service_import(mc.IMPORTS[3]).headless
    s = parse_imported_slice(mc.SLICES[0])
    assert (s.service, s.cluster, s.key) == ("db", "clustera", ("default", "db-a"))
    bad_type = mc._import("default", "x", "LoadBalancer")
    with pytest.raises(ObjectError, match="ClusterSetIP or Headless"):
        parse_service_import(bad_type)
    bad_ip = mc._import("default", "x", "ClusterSetIP", ("10.0.0.300",))
    with pytest.raises(ObjectError):
        parse_service_import(bad_ip)
    bad_cluster = mc._slice("default", "x", "db", "a.b", [], ())
    with pytest.raises(ObjectError, match="not a DNS label"):
        parse_imported_slice(bad_cluster)


def test_the_view_follows_changes_and_serials_never_repeat() -> None:
    clock = [mc.SERIAL + 0.5]
    b = McViewBuilder(now=lambda: clock[0])
    for kind in ("serviceimports", "importedslices"):
        b.begin_list(kind)
        assert not b.synced
        b.end_list(kind, set())
    assert b.synced and b.view.service("default", "db") is None
    first = b.view.serial
    b.upsert("serviceimports", parse_service_import(mc.IMPORTS[3]))
    b.upsert("importedslices", parse_imported_slice(mc.SLICES[1]))
    entry = b.view.service("default", "db")
    assert entry is not None and [e.ip for e in entry.endpoints] == ["10.2.0.1"]
    assert b.view.serial > first, "a change within the same second still moves the serial"
    b.delete("importedslices", ("default", "db-b"))
    entry = b.view.service("default", "db")
    assert entry is not None and entry.endpoints == ()
    b.delete("serviceimports", ("default", "db"))
    assert b.view.service("default", "db") is None and not b.view.namespace_exists("default")


def test_a_relist_drops_what_is_gone() -> None:
    b = McViewBuilder()
    for kind in ("serviceimports", "importedslices"):
        b.begin_list(kind)
        b.end_list(kind, set())
    b.upsert("serviceimports", parse_service_import(mc.IMPORTS[0]))
    b.begin_list("serviceimports")
    b.end_list("serviceimports", set())
    assert b.view.service("default", "web") is None


def _request(qname: str, qtype: str = "A") -> Request:
    msg = DNSRecord.question(qname, qtype)
    return Request(msg=msg, qname=qname, qname_lower=qname.lower(), qtype=getattr(QTYPE, qtype),
                   qclass=1, client=("10.244.1.18", 5353), proto="udp", server="dns://:53",
                   zone=".", max_size=512)


def _next(req: Request) -> Response:
    return Response(req.msg.reply(), "next")


def test_the_handler_serves_the_clusterset_from_its_own_view() -> None:
    cfg = mc.build_config()
    mcb = McViewBuilder()
    h = MulticlusterHandler(cfg, mc_builder=mcb, builder=ViewBuilder(cfg.kinds))
    # before ServiceImports are listed: SERVFAIL for names not (yet) known, never cached
    resp = h.serve(_request(mc.WEB), _next)
    assert resp.msg.header.rcode == RCODE.SERVFAIL and not resp.fast
    for kind, objs in (("serviceimports", mc.IMPORTS), ("importedslices", mc.SLICES)):
        mcb.begin_list(kind)
        for obj in objs:
            mcb.upsert(kind, PARSERS[kind](obj))
        mcb.end_list(kind, {PARSERS[kind](o).key for o in objs})
    resp = h.serve(_request(mc.WEB), _next)
    assert resp.msg.header.rcode == RCODE.NOERROR and resp.fast and resp.msg.header.aa
    assert [str(r.rdata) for r in resp.msg.rr] == ["10.42.42.42"]
    assert resp.generation == mcb.view.generation
    # the cluster zone is still the cluster view's (not synced here: SERVFAIL, not clusterset)
    resp = h.serve(_request("web.default.svc.cluster.local."), _next)
    assert resp.msg.header.rcode == RCODE.SERVFAIL
    # the clusterset zone is not transferred
    assert h.serve(_request(mc.C, "AXFR"), _next).msg.header.rcode == RCODE.REFUSED


def test_ptr_for_clusterset_addresses_unless_the_cluster_has_one() -> None:
    import k8s_cases as kc

    cfg = mc.build_config_with_reverse()
    mcb = McViewBuilder()
    for kind, objs in (("serviceimports", mc.IMPORTS), ("importedslices", mc.SLICES)):
        mcb.begin_list(kind)
        for obj in objs:
            mcb.upsert(kind, PARSERS[kind](obj))
        mcb.end_list(kind, {PARSERS[kind](o).key for o in objs})
    # the cluster zone has a Service on 10.42.0.2 (also dual's clusterset IP)
    b = ViewBuilder(cfg.kinds)
    local = [kc._ns("default"), kc._svc("default", "local", ips=("10.42.0.2",))]
    for kind in cfg.kinds:
        b.begin_list(kind)
        seen = set()
        for obj in local:
            if kc.KIND_OF[obj["kind"]] == kind:
                o = PARSERS[kind](obj)
                b.upsert(kind, o)
                seen.add(o.key)
        b.end_list(kind, seen)
    assert b.flush()
    h = MulticlusterHandler(cfg, mc_builder=mcb, builder=b)

    def ptr(ip: str, qtype: str = "PTR") -> Response:
        name = ipaddress.ip_address(ip).reverse_pointer + "."
        return h.serve(_request(name, qtype), _next)

    assert [str(r.rdata) for r in ptr("10.42.42.42").msg.rr] == [mc.WEB]
    assert [str(r.rdata) for r in ptr("10.1.0.1").msg.rr] == [f"db-0.clustera.{mc.DB}"]
    assert [str(r.rdata) for r in ptr("fd00:2::5").msg.rr] == [f"fd00-2--5.clusterb.{mc.DB}"]
    assert [str(r.rdata) for r in ptr("fd00:42::2").msg.rr] == [mc.DUAL]
    assert [str(r.rdata) for r in ptr("10.42.0.2").msg.rr] == \
        ["local.default.svc.cluster.local."], "the cluster's own PTR wins"
    nodata = ptr("10.42.42.42", "A")
    assert nodata.msg.header.rcode == RCODE.NOERROR and not nodata.msg.rr
    assert [r.rtype for r in nodata.msg.auth] == [QTYPE.SOA]
    assert ptr("10.1.0.3").msg.header.rcode == RCODE.NXDOMAIN, "not-ready endpoint"
    assert ptr("10.9.9.9").msg.header.rcode == RCODE.NXDOMAIN
