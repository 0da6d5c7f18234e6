"""acl: setup (valid lines, located errors), rule evaluation through the handler, the drop
signal, the metrics families, and the server turning the fast path off for acl blocks."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, RR, DNSRecord

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.plugins import registry
from kdns.plugins.acl.handler import AclHandler, Policy, Rule, client_ip
from kdns.plugins.acl.setup import setup
from kdns.plugins.base import Request, Response
from kdns.plugins.setup_context import SetupContext
from kdns.server.app import KdnsServer, ServeOptions
from tests.conftest import DEMO

NET = ipaddress.ip_network


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.IMPLEMENTED, "acl", "kdns.plugins.acl.setup")
    monkeypatch.setattr(registry, "REPEATABLE", registry.REPEATABLE | {"acl"})


def build(body: str, tmp_path: Path, key: str = "example.org") -> AclHandler:
    """Run acl's setup over every acl directive of ``key { <body> }`` (as the server does)."""
    text = f"{key} {{\n{body}\n}}\n"
    block = parse_corefile(text, "Corefile")[0]
    ctx = SetupContext(block.keys, tmp_path)
    first: Any = None
    for d in block.directives:
        got = setup(d, ctx)
        if first is None:
            first = got
        else:
            assert got is None  # later directives add their rule to the first handler
    assert isinstance(first, AclHandler)
    return first


def fails(body: str, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        build(body, tmp_path)
    return str(info.value)


def req(qname: str = "a.example.org.", qtype: str = "A", client: str = "192.168.1.5") -> Request:
    q = DNSRecord.question(qname, qtype)
    q.header.id = 4321
    return Request(q, qname, qname.lower(), getattr(QTYPE, qtype), 1, (client, 5353), "udp",
                   "dns://:53", "example.org.", 512)


def answered(resp_fast: bool = True) -> Any:
    """A next handler that answers NOERROR with one A record and counts its calls."""
    calls: list[Request] = []

    def nxt(r: Request) -> Response:
        calls.append(r)
        reply = r.msg.reply()
        reply.add_answer(*RR.fromZone(f"{r.qname} 30 IN A 10.0.0.1"))
        return Response(reply, "next", fast=resp_fast, generation=7)

    nxt.calls = calls  # type: ignore[attr-defined]
    return nxt


def outcome(h: AclHandler, r: Request) -> str:
    """'allow' | 'block' | 'filter' | 'drop', from what the handler did with ``r``."""
    nxt = answered()
    resp = h.serve(r, nxt)
    if nxt.calls:
        assert resp.plugin == "next"
        return "allow"
    assert resp.plugin == "acl" and not resp.fast
    assert resp.msg.header.id == 4321 and resp.msg.header.qr == 1
    assert str(resp.msg.q.qname) == r.qname
    if r.meta.get("drop"):
        return "drop"
    if resp.msg.header.rcode == RCODE.REFUSED:
        return "block"
    assert resp.msg.header.rcode == RCODE.NOERROR and not resp.msg.rr
    return "filter"


# -- setup: valid ------------------------------------------------------------------------------


def test_policies_parse_types_nets_and_wildcards(tmp_path: Path) -> None:
    h = build("""  acl {
    block type A AAAA net 192.168.0.0/16 10.1.2.3 fd00::/8
    filter type * net *
    drop net 2001:db8::1
    allow
  }""", tmp_path)
    (rule,) = h.rules
    assert rule.zones == ("example.org.",)
    assert rule.policies == (
        Policy("block", frozenset({1, 28}),
               (NET("192.168.0.0/16"), NET("10.1.2.3/32"), NET("fd00::/8"))),
        Policy("filter", None, None),
        Policy("drop", None, (NET("2001:db8::1/128"),)),
        Policy("allow", None, None),
    )


def test_sections_in_any_order_case_insensitive_and_host_bits_masked(tmp_path: Path) -> None:
    h = build("  acl {\n    BLOCK NET 10.9.8.7/8 TYPE srv\n  }", tmp_path)
    assert h.rules[0].policies == (Policy("block", frozenset({33}), (NET("10.0.0.0/8"),)),)


def test_zones_default_to_block_and_can_be_given(tmp_path: Path) -> None:
    h = build("  acl A.Example.org sub.example.org. 10.0.0.0/24 {\n    block\n  }\n"
              "  acl {\n    drop\n  }", tmp_path, key="example.org 1.1.1.0/24")
    assert h.rules[0].zones == ("a.example.org.", "sub.example.org.", "0.0.10.in-addr.arpa.")
    assert h.rules[1].zones == ("example.org.", "1.1.1.in-addr.arpa.")


def test_empty_acl_allows_everything(tmp_path: Path) -> None:
    h = build("  acl", tmp_path)
    assert h.rules == [Rule(("example.org.",), ())]
    assert outcome(h, req()) == "allow"


def test_file_section_reads_networks_relative_to_corefile(tmp_path: Path) -> None:
    (tmp_path / "deny.txt").write_text("# bad actors\n192.168.1.0/24  # lab\n\n  10.0.0.1\n")
    h = build("  acl {\n    block file deny.txt net 172.16.0.0/12\n  }", tmp_path)
    assert h.rules[0].policies[0].nets == (NET("192.168.1.0/24"), NET("10.0.0.1/32"),
                                           NET("172.16.0.0/12"))


# -- setup: located errors -----------------------------------------------------------------------


@pytest.mark.parametrize(("body", "message"), [
    ("  acl {\n    deny net 10.0.0.0/8\n  }",
     "Corefile:3:5: acl: unexpected token 'deny'; expect 'allow', 'block', 'filter' or 'drop'"),
    ("  acl {\n    block type A net\n  }",
     "Corefile:3:18: acl: no token specified in 'net' section"),
    ("  acl {\n    block type net 10.0.0.0/8\n  }",
     "Corefile:3:11: acl: no token specified in 'type' section"),
    ("  acl {\n    block type BOGUS\n  }",
     "Corefile:3:16: acl: unexpected token 'BOGUS'; expect legal QTYPE"),
    ("  acl {\n    block net 10.0.0.0/33\n  }",
     "Corefile:3:15: acl: illegal CIDR notation '10.0.0.0/33'"),
    ("  acl {\n    block net 10.0.0.0/x\n  }",
     "Corefile:3:15: acl: illegal CIDR notation '10.0.0.0/x'"),
    ("  acl {\n    block net 300.1.1.1\n  }",
     "Corefile:3:15: acl: illegal CIDR notation '300.1.1.1'"),
    ("  acl {\n    block from 10.0.0.0/8\n  }",
     "Corefile:3:11: acl: unexpected token 'from'; expect 'type', 'net' or 'file'"),
    ("  acl {\n    block {\n      net 10.0.0.0/8\n    }\n  }",
     "Corefile:3:5: acl: unexpected block after 'block'"),
    ("  acl bad..zone {\n    block\n  }", "Corefile:2:7: acl: invalid zone 'bad..zone'"),
    ("  acl {\n    block file missing.txt\n  }",
     "Corefile:3:16: acl: unable to load networks from local file"),
])
def test_errors_are_located(tmp_path: Path, body: str, message: str) -> None:
    assert fails(body, tmp_path).startswith(message)


def test_bad_line_in_file_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "nets").write_text("10.0.0.0/8\nnot-an-ip\n")
    msg = fails("  acl {\n    drop file nets\n  }", tmp_path)
    assert msg == f"Corefile:3:15: acl: {tmp_path / 'nets'}:2: illegal CIDR notation 'not-an-ip'"


def test_server_build_reports_location(tmp_path: Path) -> None:
    text = "example.org {\n  acl {\n    allow net 10.0.0.0/8\n    block net ::1/200\n  }\n}\n"
    with pytest.raises(ConfigError, match=r"^Corefile:4:15: acl: illegal CIDR notation"):
        KdnsServer(parse_corefile(text, "Corefile"), ServeOptions(config_dir=tmp_path)).build()


# -- evaluation ----------------------------------------------------------------------------------


def test_first_match_wins_and_default_allows(tmp_path: Path) -> None:
    h = build("""  acl {
    allow net 192.168.1.0/24
    block net 192.168.0.0/16
    filter type AAAA
    drop type TXT net 10.0.0.0/8
  }""", tmp_path)
    assert outcome(h, req(client="192.168.1.9")) == "allow"   # allow before block
    assert outcome(h, req(client="192.168.2.9")) == "block"
    assert outcome(h, req(client="10.1.1.1", qtype="AAAA")) == "filter"
    assert outcome(h, req(client="10.1.1.1", qtype="TXT")) == "drop"
    assert outcome(h, req(client="11.1.1.1", qtype="TXT")) == "allow"  # no rule matched
    assert outcome(h, req(client="10.1.1.1", qtype="A")) == "allow"
    assert (h.allowed, h.blocked, h.filtered, h.dropped) == (3, 1, 1, 1)


def test_ipv6_and_mapped_sources(tmp_path: Path) -> None:
    h = build("  acl {\n    block net fd00::/8\n    filter net 127.0.0.0/8\n  }", tmp_path)
    assert outcome(h, req(client="fd00::5")) == "block"
    assert outcome(h, req(client="fe80::1%eth0")) == "allow"
    assert outcome(h, req(client="::ffff:127.0.0.9")) == "filter"  # dual-stack socket
    assert outcome(h, req(client="::1")) == "allow"  # a v6 client never matches a v4 net


def test_unparseable_source_is_blocked(tmp_path: Path) -> None:
    h = build("  acl {\n    allow\n  }", tmp_path)
    assert outcome(h, req(client="not-an-address")) == "block"
    assert client_ip("garbage") is None


def test_only_names_under_the_acl_zones_are_checked(tmp_path: Path) -> None:
    h = build("  acl a.example.org {\n    block\n  }", tmp_path)
    assert outcome(h, req("a.example.org.")) == "block"
    assert outcome(h, req("X.A.Example.Org.")) == "block"
    assert outcome(h, req("b.example.org.")) == "allow"
    assert outcome(h, req("xa.example.org.")) == "allow"  # a suffix, not a subdomain


def test_rules_of_several_directives_run_in_order(tmp_path: Path) -> None:
    h = build("  acl a.example.org {\n    filter net 10.0.0.0/8\n  }\n"
              "  acl {\n    allow net 10.0.0.0/8\n    block\n  }", tmp_path)
    assert outcome(h, req("x.a.example.org.", client="10.0.0.1")) == "filter"
    assert outcome(h, req("x.b.example.org.", client="10.0.0.1")) == "allow"
    assert outcome(h, req("x.a.example.org.", client="11.0.0.1")) == "block"  # falls through


def test_an_allow_stops_later_rules(tmp_path: Path) -> None:
    h = build("  acl {\n    allow net 10.0.0.0/8\n  }\n  acl {\n    block\n  }", tmp_path)
    assert outcome(h, req(client="10.0.0.1")) == "allow"
    assert outcome(h, req(client="11.0.0.1")) == "block"


def test_allowed_replies_are_never_fast(tmp_path: Path) -> None:
    h = build("  acl {\n    block net 10.0.0.0/8\n  }", tmp_path)
    resp = h.serve(req(client="192.0.2.1"), answered(resp_fast=True))
    assert resp.plugin == "next" and not resp.fast and resp.msg.rr


def test_metrics_families(tmp_path: Path) -> None:
    h = build("  acl a.example.org {\n    block net 10.0.0.0/8\n    filter net 11.0.0.0/8\n"
              "    drop net 12.0.0.0/8\n  }", tmp_path)
    for client, n in (("10.0.0.1", 2), ("11.0.0.1", 1), ("12.0.0.1", 3), ("13.0.0.1", 4)):
        for _ in range(n):
            h.serve(req("q.a.example.org.", client=client), answered())
    ctx = SetupContext(parse_corefile("example.org:1053 {\n}\n", "C")[0].keys, tmp_path)
    fams = {f.name: f for f in h.metrics(ctx)}
    assert set(fams) == {"coredns_acl_blocked_requests", "coredns_acl_filtered_requests",
                         "coredns_acl_dropped_requests", "coredns_acl_allowed_requests"}
    got = {(f.name, tuple(sorted(s.labels.items())), s.value)
           for f in fams.values() for s in f.samples}
    zone = ("zone", "a.example.org.")
    server, view = ("server", "dns://:1053"), ("view", "")
    assert got == {
        ("coredns_acl_blocked_requests", (server, view, zone), 2),
        ("coredns_acl_filtered_requests", (server, view, zone), 1),
        ("coredns_acl_dropped_requests", (server, view, zone), 3),
        ("coredns_acl_allowed_requests", (server, view), 4),
    }
    assert all(s.name.endswith("_total") for f in fams.values() for s in f.samples)


# -- the server: fast path and drop --------------------------------------------------------------


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[[str], KdnsServer]]:
    """A built server for ``cluster.local`` over the demo cluster, plugins started, no sockets."""
    started: list[KdnsServer] = []

    def make(body: str) -> KdnsServer:
        text = (f"cluster.local {{\n{body}\n  kubernetes {{\n    manifests {DEMO}\n  }}\n}}\n")
        server = KdnsServer(parse_corefile(text, "Corefile"), ServeOptions(config_dir=tmp_path))
        server.build()
        server.start_plugins()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


KUBIA = "kubia.default.svc.cluster.local"


def test_block_with_acl_has_no_fast_path_and_drop_sends_nothing(
        make_server: Callable[[str], KdnsServer]) -> None:
    server = make_server("  acl {\n    drop net 10.0.0.0/8\n    block net 11.0.0.0/8\n  }")
    (zone,) = server.listeners[0].zones.values()
    assert not zone.fast_ok
    d = server.dispatcher("udp")
    query = bytes(DNSRecord.question(KUBIA, "A").pack())
    for _ in range(3):  # an allowed client twice first: nothing may be stored for the others
        out = d.serve(query, ("192.0.2.1", 5353))
        assert out is not None and DNSRecord.parse(out).a.rdata is not None
    assert not d.store and d.lookup(query) is None
    assert d.serve(query, ("10.0.0.1", 5353)) is None
    assert d.counters.dropped == 1
    out = d.serve(query, ("11.0.0.1", 5353))
    assert out is not None and DNSRecord.parse(out).header.rcode == RCODE.REFUSED


def test_block_without_acl_keeps_the_fast_path(make_server: Callable[[str], KdnsServer]) -> None:
    server = make_server("")
    (zone,) = server.listeners[0].zones.values()
    assert zone.fast_ok
    d = server.dispatcher("udp")
    query = bytes(DNSRecord.question(KUBIA, "A").pack())
    assert d.serve(query, ("192.0.2.1", 5353)) is not None
    assert d.lookup(query) is not None  # the control: without acl the reply is stored
