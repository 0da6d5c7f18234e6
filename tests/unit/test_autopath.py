"""autopath: the directive's grammar and located errors, and the search walk driven directly
through the handler with a small namespace provider and a next plugin that answers from a
table (CoreDNS ``plugin/autopath`` behaviour, reference §1.7 and §5 P2)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, RR, DNSRecord

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.plugins import registry
from kdns.plugins.autopath import setup as apsetup
from kdns.plugins.autopath.handler import AutopathHandler
from kdns.plugins.autopath.setup import AutopathConfig, parse_config, search_domains
from kdns.plugins.base import Request, Response
from kdns.plugins.kubernetes import setup as ksetup
from kdns.plugins.setup_context import SetupContext

README = Path(__file__).resolve().parents[2] / "kdns" / "plugins" / "autopath" / "README.md"


@pytest.fixture(autouse=True)
def _registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(registry.IMPLEMENTED, "autopath", "kdns.plugins.autopath.setup")
    # Resolving our own hostname could leave the machine; pin the kubernetes glue answer.
    monkeypatch.setattr(ksetup, "local_addresses", lambda: ("192.0.2.1",))
    # The host's real resolv.conf must not leak into the search lists the tests expect.
    host = tmp_path / "host-resolv.conf"
    host.write_text("nameserver 10.0.0.10\nsearch Corp.Example.com lab.example.\n")
    monkeypatch.setattr(apsetup, "HOST_RESOLV_CONF", host)


# -- setup -----------------------------------------------------------------------------------------


def build(text: str, tmp_path: Path) -> tuple[list[Any], SetupContext]:
    """Run every directive's setup of the (single) block, like the server does, and finish
    autopath's deferred check as the server's start() would."""
    block = parse_corefile(text, "Corefile")[0]
    ctx = SetupContext(block.keys, tmp_path)
    handlers = []
    for d in block.directives:
        fn = registry.setup_func(d.name.text)
        assert fn is not None
        handlers.append(fn(d, ctx))
    for h in handlers:
        if isinstance(h, AutopathHandler):
            h.start()
    return handlers, ctx


def fails(text: str, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        build(text, tmp_path)
    return str(info.value)


KUBE = "  kubernetes cluster.local {\n    pods %s\n  }\n"


def test_kubernetes_before_autopath(tmp_path: Path) -> None:
    text = "cluster.local:53 {\n" + KUBE % "verified" + "  autopath @kubernetes\n}\n"
    (kube, ap), ctx = build(text, tmp_path)
    assert isinstance(ap, AutopathHandler) and ap.provider is kube
    assert ap.cfg == AutopathConfig(("cluster.local.",), True,
                                    ("corp.example.com.", "lab.example."))
    assert ctx.shared["autopath"] is ap


def test_kubernetes_after_autopath_is_checked_at_start(tmp_path: Path) -> None:
    text = "cluster.local:53 {\n  autopath @kubernetes\n" + KUBE % "verified" + "}\n"
    (ap, kube), _ = build(text, tmp_path)
    assert ap.provider is kube and ap.deferred_check is None


@pytest.mark.parametrize("order", ["before", "after"])
def test_pods_not_verified_is_a_located_error(tmp_path: Path, order: str) -> None:
    if order == "before":
        text = "cluster.local:53 {\n" + KUBE % "insecure" + "  autopath @kubernetes\n}\n"
        where = "Corefile:5:12"
    else:
        text = "cluster.local:53 {\n  autopath @kubernetes\n" + KUBE % "insecure" + "}\n"
        where = "Corefile:2:12"
    msg = fails(text, tmp_path)
    assert msg.startswith(f"{where}: autopath: @kubernetes needs 'pods verified'"), msg
    assert "'pods insecure'" in msg


def test_no_kubernetes_plugin(tmp_path: Path) -> None:
    msg = fails("cluster.local:53 {\n  autopath @kubernetes\n}\n", tmp_path)
    assert msg == ("Corefile:2:12: autopath: @kubernetes needs the kubernetes plugin in the "
                   "same server block")


def test_default_pods_mode_is_refused(tmp_path: Path) -> None:
    text = "cluster.local:53 {\n  kubernetes\n  autopath @kubernetes\n}\n"
    assert "(it has 'pods disabled')" in fails(text, tmp_path)


@pytest.mark.parametrize(("line", "expected"), [
    ("autopath", "Corefile:2:3: autopath: no resolv-conf specified (RESOLV-CONF or @kubernetes)"),
    ("autopath @etcd", "Corefile:2:12: autopath: @etcd: only @kubernetes can provide a search "
                       "path"),
    ("autopath example..org @kubernetes", "Corefile:2:12: autopath: invalid zone 'example..org'"),
    ("autopath 10.0.0.0/33 @kubernetes", "Corefile:2:12: autopath: "),
    ("autopath missing.conf", "Corefile:2:12: autopath: failed to parse 'missing.conf': "),
    ("autopath empty.conf", "Corefile:2:12: autopath: 'empty.conf' has no search domains to "
                            "complete with"),
    ("autopath @kubernetes {\n  }", "Corefile:2:3: autopath: autopath does not take a block"),
])
def test_errors_name_the_place(tmp_path: Path, line: str, expected: str) -> None:
    (tmp_path / "empty.conf").write_text("nameserver 10.0.0.1\n# search not.here\n")
    assert fails(f".:53 {{\n  {line}\n}}\n", tmp_path).startswith(expected)


def test_resolv_conf_file_relative_to_the_corefile(tmp_path: Path) -> None:
    (tmp_path / "my.conf").write_text("domain first.example\nsearch A.example b.example.\n"
                                      "options ndots:5\n")
    (ap,), _ = build("example:53 foo.org:53 {\n  autopath my.conf\n}\n", tmp_path)
    assert ap.cfg == AutopathConfig(("example.", "foo.org."), False, ("a.example.", "b.example."))


def test_zone_arguments(tmp_path: Path) -> None:
    (tmp_path / "r").write_text("search x.example\n")
    (ap,), _ = build(".:53 {\n  autopath Example.ORG 10.0.0.0/24 r\n}\n", tmp_path)
    assert ap.cfg.zones == ("example.org.", "0.0.10.in-addr.arpa.")


def test_search_domains_parsing() -> None:
    assert search_domains("search a.example b.example\ndomain c.example\n") == ["c.example."]
    assert search_domains("domain c.example\nsearch a b. a\n") == ["a.", "b."]
    assert search_domains("nameserver 1.1.1.1\n") == []
    assert search_domains("search ok.example bad..example\n") == ["ok.example."]


def test_unreadable_host_resolv_conf_gives_no_tail(tmp_path: Path) -> None:
    block = parse_corefile(".:53 {\n  autopath @kubernetes\n}\n", "Corefile")[0]
    cfg = parse_config(block.directives[0], SetupContext(block.keys, tmp_path),
                       host_resolv_conf=tmp_path / "nope")
    assert cfg.search == ()


def test_readme_examples_set_up(tmp_path: Path) -> None:
    blocks = re.findall(r"```corefile\n(.*?)```", README.read_text(), re.S)
    assert blocks
    for text in blocks:
        (tmp_path / "Corefile").write_text(text)
        handlers, _ = build(text, tmp_path)
        assert any(isinstance(h, AutopathHandler) for h in handlers)


# -- the walk --------------------------------------------------------------------------------------


@dataclass
class KubeCfg:
    pods: str = "verified"


@dataclass
class Provider:
    """The part of the kubernetes plugin autopath talks to."""

    namespaces: dict[str, str]
    zones: tuple[str, ...] = ("cluster.local.", "in-addr.arpa.")
    cfg: KubeCfg = field(default_factory=KubeCfg)
    asked: list[str] = field(default_factory=list)

    def namespace_of(self, ip: str) -> str | None:
        self.asked.append(ip)
        return self.namespaces.get(ip)


NODATA = "nodata"
SERVFAIL = "servfail"


class Chain:
    """The next plugin: answers names from a table (record text, NODATA or SERVFAIL), every
    other name NXDOMAIN with an SOA; remembers what it was asked. Replies of names in
    ``slow`` are not fast-path material (as forward's)."""

    def __init__(self, table: dict[str, str], slow: tuple[str, ...] = (),
                 raising: tuple[str, ...] = ()) -> None:
        self.table = table
        self.slow = slow
        self.raising = raising
        self.asked: list[str] = []
        self.replies: list[DNSRecord] = []

    def __call__(self, req: Request) -> Response:
        self.asked.append(req.qname)
        name = req.qname_lower
        if name in self.raising:
            raise LookupError(f"no next plugin for {name}")
        reply = req.msg.reply()
        entry = self.table.get(name)
        if entry is None:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(*RR.fromZone("cluster.local. 5 SOA ns.dns.cluster.local. "
                                        "hostmaster.cluster.local. 1 7200 1800 86400 5"))
        elif entry == SERVFAIL:
            reply.header.rcode = RCODE.SERVFAIL
        elif entry == NODATA:
            reply.add_auth(*RR.fromZone("cluster.local. 5 SOA ns.dns.cluster.local. "
                                        "hostmaster.cluster.local. 1 7200 1800 86400 5"))
        else:
            for rr in RR.fromZone(entry):
                if rr.rtype == req.qtype or rr.rtype == QTYPE.CNAME:
                    reply.add_answer(rr)
        self.replies.append(reply)
        return Response(reply, "kubernetes", fast=name not in self.slow, deps=(("name", name),))


def request(qname: str, client: str = "10.244.1.5", qtype: str = "A") -> Request:
    msg = DNSRecord.question(qname, qtype)
    name = qname if qname.endswith(".") else qname + "."
    return Request(msg, name, name.lower(), getattr(QTYPE, qtype), 1, (client, 40000), "udp",
                   "dns://:53", "cluster.local.", 512)


KUBIA = "kubia.default.svc.cluster.local. 5 A 10.96.0.10"
TABLE = {
    "kubia.default.svc.cluster.local.": KUBIA,
    "db.shop.svc.cluster.local.": "db.shop.svc.cluster.local. 5 A 10.96.0.20",
    "files.corp.example.com.": "files.corp.example.com. 300 A 192.0.2.7",
    "example.com.": "example.com. 300 A 192.0.2.80",
    "ext.default.svc.cluster.local.": "ext.default.svc.cluster.local. 5 CNAME example.com.\n"
                                      "example.com. 300 A 192.0.2.80",
    "web.svc.cluster.local.": NODATA,
    "broken.svc.cluster.local.": SERVFAIL,
}
SHOP = "10.244.1.5"
DEV = "10.244.2.6"
HOST_SEARCH = ("corp.example.com.", "lab.example.")


def kube_handler(provider: Provider | None = None,
                 zones: tuple[str, ...] = ("cluster.local.",)) -> AutopathHandler:
    cfg = AutopathConfig(zones, True, HOST_SEARCH)
    return AutopathHandler(cfg, provider or Provider({SHOP: "shop", DEV: "dev"}))


def answers(msg: DNSRecord) -> list[tuple[str, str, str]]:
    return [(str(r.rname), QTYPE[r.rtype], str(r.rdata)) for r in msg.rr]


def test_completes_a_service_in_another_namespace() -> None:
    h, chain = kube_handler(), Chain(TABLE)
    req = request("kubia.default.shop.svc.cluster.local")
    resp = h.serve(req, chain)
    assert resp.msg.header.rcode == RCODE.NOERROR
    assert answers(resp.msg) == [
        ("kubia.default.shop.svc.cluster.local.", "CNAME", "kubia.default.svc.cluster.local."),
        ("kubia.default.svc.cluster.local.", "A", "10.96.0.10"),
    ]
    assert resp.msg.rr[0].ttl == 5
    assert str(resp.msg.q.qname) == "kubia.default.shop.svc.cluster.local."
    assert resp.msg.header.id == req.msg.header.id
    assert chain.asked == ["kubia.default.shop.svc.cluster.local.",
                           "kubia.default.svc.cluster.local."]
    assert (resp.fast, resp.plugin) == (False, "autopath")
    assert h.success_total == {"dns://:53": 1}
    # Neither the client's message nor the next plugin's reply was changed.
    assert str(req.msg.q.qname) == "kubia.default.shop.svc.cluster.local."
    assert [str(r.rname) for r in chain.replies[-1].rr] == ["kubia.default.svc.cluster.local."]
    assert str(chain.replies[-1].q.qname) == "kubia.default.svc.cluster.local."


def test_an_existing_name_is_returned_unchanged_and_stays_fast() -> None:
    h, chain = kube_handler(), Chain(TABLE)
    resp = h.serve(request("db.shop.svc.cluster.local"), chain)
    assert chain.asked == ["db.shop.svc.cluster.local."]
    assert resp.msg is chain.replies[0] and resp.fast
    assert resp.deps == (("name", "db.shop.svc.cluster.local."),)
    assert h.success_total == {}


def test_unknown_client_is_never_autopathed_and_its_nxdomain_is_not_fast() -> None:
    provider = Provider({SHOP: "shop"})
    h, chain = kube_handler(provider), Chain(TABLE)
    resp = h.serve(request("kubia.default.shop.svc.cluster.local", client="10.9.9.9"), chain)
    assert chain.asked == ["kubia.default.shop.svc.cluster.local."]
    assert resp.msg.header.rcode == RCODE.NXDOMAIN and resp.msg is chain.replies[0]
    assert not resp.fast  # a pod in shop sending the same bytes must still get the walk
    assert provider.asked == ["10.9.9.9"]


def test_client_of_another_namespace_passes_through_but_not_fast() -> None:
    h, chain = kube_handler(), Chain(TABLE)
    resp = h.serve(request("kubia.default.shop.svc.cluster.local", client=DEV), chain)
    assert chain.asked == ["kubia.default.shop.svc.cluster.local."]
    assert resp.msg.header.rcode == RCODE.NXDOMAIN and not resp.fast


@pytest.mark.parametrize("qname", ["nope.cluster.local", "shop.svc.cluster.local",
                                   "nope.svc.cluster.local"])
def test_nxdomain_no_client_could_complete_stays_fast(qname: str) -> None:
    h, chain = kube_handler(), Chain(TABLE)
    resp = h.serve(request(qname, client=DEV), chain)
    assert chain.asked == [qname + "."]
    assert resp.msg.header.rcode == RCODE.NXDOMAIN and resp.fast


def test_the_first_element_itself_is_passed_on() -> None:
    h, chain = kube_handler(), Chain(TABLE)
    resp = h.serve(request("shop.svc.cluster.local"), chain)
    assert chain.asked == ["shop.svc.cluster.local."] and resp.fast


def test_walk_reaches_the_host_search_domains() -> None:
    h, chain = kube_handler(), Chain(TABLE)
    resp = h.serve(request("files.shop.svc.cluster.local"), chain)
    assert chain.asked == ["files.shop.svc.cluster.local.", "files.svc.cluster.local.",
                           "files.cluster.local.", "files.corp.example.com."]
    assert answers(resp.msg) == [
        ("files.shop.svc.cluster.local.", "CNAME", "files.corp.example.com."),
        ("files.corp.example.com.", "A", "192.0.2.7"),
    ]


def test_walk_order_and_the_bare_name_last() -> None:
    h, chain = kube_handler(), Chain(TABLE, slow=("example.com.",))
    resp = h.serve(request("example.com.shop.svc.cluster.local", qtype="A"), chain)
    assert chain.asked == [
        "example.com.shop.svc.cluster.local.",
        "example.com.svc.cluster.local.",
        "example.com.cluster.local.",
        "example.com.corp.example.com.",
        "example.com.lab.example.",
        "example.com.",
    ]
    assert answers(resp.msg) == [
        ("example.com.shop.svc.cluster.local.", "CNAME", "example.com."),
        ("example.com.", "A", "192.0.2.80"),
    ]
    assert resp.msg.rr[0].ttl == 300 and not resp.fast


def test_each_client_gets_its_own_namespace() -> None:
    h = kube_handler()
    resp = h.serve(request("kubia.default.dev.svc.cluster.local", client=DEV), Chain(TABLE))
    assert answers(resp.msg)[0] == ("kubia.default.dev.svc.cluster.local.", "CNAME",
                                    "kubia.default.svc.cluster.local.")
    resp = h.serve(request("kubia.default.dev.svc.cluster.local", client=SHOP), Chain(TABLE))
    assert resp.msg.header.rcode == RCODE.NXDOMAIN and not resp.fast


def test_external_name_target_keeps_its_chain() -> None:
    h = kube_handler()
    resp = h.serve(request("ext.default.shop.svc.cluster.local"), Chain(TABLE))
    assert answers(resp.msg) == [
        ("ext.default.shop.svc.cluster.local.", "CNAME", "ext.default.svc.cluster.local."),
        ("ext.default.svc.cluster.local.", "CNAME", "example.com."),
        ("example.com.", "A", "192.0.2.80"),
    ]


def test_nodata_ends_the_walk_without_a_cname() -> None:
    """CoreDNS returns the first non-NXDOMAIN reply; with no record there is nothing to alias."""
    h, chain = kube_handler(), Chain(TABLE)
    resp = h.serve(request("web.shop.svc.cluster.local", qtype="AAAA"), chain)
    assert chain.asked == ["web.shop.svc.cluster.local.", "web.svc.cluster.local."]
    assert resp.msg.header.rcode == RCODE.NOERROR and resp.msg.rr == []
    assert QTYPE[resp.msg.auth[0].rtype] == "SOA"
    assert str(resp.msg.q.qname) == "web.shop.svc.cluster.local." and not resp.fast
    assert h.success_total == {"dns://:53": 1}


def test_servfail_ends_the_walk_like_coredns() -> None:
    h, chain = kube_handler(), Chain(TABLE)
    resp = h.serve(request("broken.shop.svc.cluster.local"), chain)
    assert len(chain.asked) == 2 and resp.msg.header.rcode == RCODE.SERVFAIL
    assert str(resp.msg.q.qname) == "broken.shop.svc.cluster.local."


def test_everything_nxdomain_returns_the_first_reply() -> None:
    h, chain = kube_handler(), Chain(TABLE)
    resp = h.serve(request("nothing.shop.svc.cluster.local"), chain)
    assert len(chain.asked) == 6
    assert resp.msg is chain.replies[0] and resp.msg.header.rcode == RCODE.NXDOMAIN
    assert not resp.fast and h.success_total == {}


def test_a_failing_step_counts_as_nxdomain() -> None:
    h = kube_handler()
    chain = Chain(TABLE, raising=("nothing.",))
    resp = h.serve(request("nothing.shop.svc.cluster.local"), chain)
    assert chain.asked[-1] == "nothing."
    assert resp.msg.header.rcode == RCODE.NXDOMAIN and resp.msg is chain.replies[0]


def test_an_error_on_the_name_as_sent_propagates() -> None:
    h = kube_handler()
    with pytest.raises(LookupError):
        h.serve(request("x.shop.svc.cluster.local"),
                Chain(TABLE, raising=("x.shop.svc.cluster.local.",)))


def test_case_of_the_question_is_kept() -> None:
    h, chain = kube_handler(), Chain(TABLE)
    resp = h.serve(request("Kubia.DEFAULT.shop.svc.cluster.local"), chain)
    assert chain.asked[1] == "Kubia.DEFAULT.svc.cluster.local."
    assert str(resp.msg.q.qname) == "Kubia.DEFAULT.shop.svc.cluster.local."
    assert str(resp.msg.rr[0].rname) == "Kubia.DEFAULT.shop.svc.cluster.local."


def test_answers_are_deterministic() -> None:
    h = kube_handler()
    a = h.serve(request("kubia.default.shop.svc.cluster.local"), Chain(TABLE)).msg.pack()
    b = h.serve(request("kubia.default.shop.svc.cluster.local"), Chain(TABLE)).msg.pack()
    assert a[2:] == b[2:]


def test_names_outside_the_zones_are_not_touched() -> None:
    provider = Provider({SHOP: "shop"})
    h, chain = kube_handler(provider, zones=("cluster.local.",)), Chain(TABLE)
    resp = h.serve(request("kubia.default.shop.svc.other.local"), chain)
    assert chain.asked == ["kubia.default.shop.svc.other.local."] and resp.fast
    assert provider.asked == []


def test_names_outside_the_kubernetes_zones_get_no_search_list() -> None:
    provider = Provider({SHOP: "shop"}, zones=("cluster.local.",))
    h, chain = kube_handler(provider, zones=(".",)), Chain(TABLE)
    resp = h.serve(request("kubia.default.shop.svc.example.org"), chain)
    assert chain.asked == ["kubia.default.shop.svc.example.org."] and resp.fast
    assert provider.asked == []


def test_search_list_for_the_root_zone() -> None:
    h = kube_handler()
    assert h.search_list("shop", ".") == ("shop.svc.", "svc.", ".", *HOST_SEARCH)
    assert h.search_list("shop", "cluster.local.") == (
        "shop.svc.cluster.local.", "svc.cluster.local.", "cluster.local.", *HOST_SEARCH)


def test_duplicate_search_domains_are_asked_once() -> None:
    cfg = AutopathConfig(("cluster.local.",), True, ("cluster.local.", "corp.example.com."))
    h, chain = AutopathHandler(cfg, Provider({SHOP: "shop"})), Chain(TABLE)
    h.serve(request("nothing.shop.svc.cluster.local"), chain)
    assert chain.asked == ["nothing.shop.svc.cluster.local.", "nothing.svc.cluster.local.",
                           "nothing.cluster.local.", "nothing.corp.example.com.", "nothing."]


def test_resolv_conf_mode_is_client_independent() -> None:
    cfg = AutopathConfig((".",), False, ("shop.svc.cluster.local.", "svc.cluster.local."))
    h = AutopathHandler(cfg)
    chain = Chain(TABLE)
    resp = h.serve(request("db.shop.svc.cluster.local.shop.svc.cluster.local",
                           client="10.9.9.9"), chain)
    assert answers(resp.msg)[0] == ("db.shop.svc.cluster.local.shop.svc.cluster.local.",
                                    "CNAME", "db.shop.svc.cluster.local.")
    # Found through fast replies only: the composed reply may be stored, and depends on every
    # name the walk consulted.
    assert resp.fast and resp.deps == tuple(("name", n) for n in chain.asked)
    assert len(chain.asked) == 3
    miss = h.serve(request("nothing.shop.svc.cluster.local"), Chain(TABLE))
    assert miss.msg.header.rcode == RCODE.NXDOMAIN and miss.fast
    via_upstream = h.serve(request("example.com.shop.svc.cluster.local"),
                           Chain(TABLE, slow=("example.com.",)))
    assert via_upstream.msg.header.rcode == RCODE.NOERROR and not via_upstream.fast


def test_provider_arriving_late_is_resolved_on_first_use() -> None:
    h = AutopathHandler(AutopathConfig(("cluster.local.",), True, ()))
    provider = Provider({SHOP: "shop"})
    h.deferred_check = lambda: provider
    resp = h.serve(request("kubia.default.shop.svc.cluster.local"), Chain(TABLE))
    assert h.provider is provider and resp.msg.header.rcode == RCODE.NOERROR


def test_metrics_family() -> None:
    h = kube_handler()
    h.serve(request("kubia.default.shop.svc.cluster.local"), Chain(TABLE))
    (fam,) = list(h.metrics(SetupContext((), Path("."))))
    assert fam.name == "coredns_autopath_success"
    assert [(s.name, s.labels, s.value) for s in fam.samples] == [
        ("coredns_autopath_success_total", {"server": "dns://:53"}, 1.0)]


def test_the_zone_element_completes_a_name_with_svc() -> None:
    """``kubia.default.svc`` from shop is first sent as ``...svc.shop.svc.cluster.local``."""
    h, chain = kube_handler(), Chain(TABLE)
    resp = h.serve(request("kubia.default.svc.shop.svc.cluster.local"), chain)
    assert chain.asked[1:] == ["kubia.default.svc.svc.cluster.local.",
                               "kubia.default.svc.cluster.local."]
    assert answers(resp.msg)[0] == ("kubia.default.svc.shop.svc.cluster.local.", "CNAME",
                                    "kubia.default.svc.cluster.local.")


def test_ipv4_mapped_client_address() -> None:
    provider = Provider({"10.244.1.5": "shop"})
    h = kube_handler(provider)
    resp = h.serve(request("kubia.default.shop.svc.cluster.local", client="::ffff:10.244.1.5"),
                   Chain(TABLE))
    assert provider.asked == ["10.244.1.5"] and resp.msg.header.rcode == RCODE.NOERROR
