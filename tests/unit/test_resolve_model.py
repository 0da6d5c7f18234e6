"""The glibc and musl models of ``kdns resolve`` as a table: what each name's reply is, which
names each library asks in order, and its verdict. The real libraries are compared with these
models in tests/integration/test_resolve_libc.py; this table holds the rows a namespace cannot
easily produce (REFUSED, no server at all, a root search domain, other record types)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from dnslib import CNAME, QTYPE, RCODE, RR, TXT, A, DNSRecord

from kdns.resolve import Reply, walk

SEARCH = ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]


def reply(name: str, qtype: int, rcode: int = RCODE.NOERROR, *rrs: RR) -> DNSRecord:
    msg = DNSRecord.question(name, QTYPE[qtype]).reply()
    msg.header.rcode = rcode
    for rr in rrs:
        msg.add_answer(rr)
    return msg


def a(name: str, ip: str) -> RR:
    return RR(name, QTYPE.A, rdata=A(ip), ttl=5)


def cname(name: str, target: str) -> RR:
    return RR(name, QTYPE.CNAME, rdata=CNAME(target), ttl=5)


@dataclass(frozen=True)
class Row:
    name: str
    world: dict[str, object]
    """absolute name -> rcode int, "timeout", "unreachable", "forwarded" or a list of RRs;
    names not listed are NXDOMAIN."""
    glibc: tuple[str, list[str]]
    musl: tuple[str, list[str]]
    search: tuple[str, ...] = tuple(SEARCH)
    ndots: int = 5
    qtype: str = "A"


ROWS = {
    "refused-ends-glibc-search-then-as-is": Row(
        "web", {"web.svc.cluster.local.": RCODE.REFUSED, "web.": [a("web.", "192.0.2.1")]},
        glibc=("resolves", ["web.default.svc.cluster.local.", "web.svc.cluster.local.", "web."]),
        musl=("fails", ["web.default.svc.cluster.local.", "web.svc.cluster.local."])),
    "no-server-gives-up-at-once": Row(
        "web", {"web.default.svc.cluster.local.": "unreachable"},
        glibc=("fails", ["web.default.svc.cluster.local."]),
        musl=("fails", ["web.default.svc.cluster.local."])),
    "root-in-search-list-is-the-as-is-query": Row(
        "web", {}, search=("default.svc.cluster.local", "."),
        glibc=("fails", ["web.default.svc.cluster.local.", "web."]),
        musl=("fails", ["web.default.svc.cluster.local.", "web."])),
    "nxdomain-with-cname-goes-on": Row(
        "web", {"web.default.svc.cluster.local.": RCODE.NXDOMAIN,
                "web.svc.cluster.local.": [a("web.svc.cluster.local.", "10.0.0.9")]},
        glibc=("resolves", ["web.default.svc.cluster.local.", "web.svc.cluster.local."]),
        musl=("resolves", ["web.default.svc.cluster.local.", "web.svc.cluster.local."])),
    "forwarded-step-is-undetermined": Row(
        "example.com", {"example.com.": "forwarded"},
        glibc=("undetermined", [f"example.com.{d}." for d in SEARCH] + ["example.com."]),
        musl=("undetermined", [f"example.com.{d}." for d in SEARCH] + ["example.com."])),
    "glibc-takes-an-address-owned-by-the-chain-end-only": Row(
        "alias.", {"alias.": [cname("alias.", "t."), a("other.", "192.0.2.7")]},
        glibc=("fails", ["alias."]), musl=("resolves", ["alias."])),
    "musl-asks-srv-once-without-search": Row(
        "_http._tcp.kubia", {"_http._tcp.kubia.default.svc.cluster.local.": [RR(
            "_http._tcp.kubia.default.svc.cluster.local.", QTYPE.TXT, rdata=TXT("x"))]},
        qtype="SRV",
        glibc=("fails", ["_http._tcp.kubia.default.svc.cluster.local."]),
        musl=("fails", ["_http._tcp.kubia."])),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_model(row: Row) -> None:
    asked: list[str] = []

    def ask(name: str, qtype: int) -> Reply:
        asked.append(name)
        what = row.world.get(name, RCODE.NXDOMAIN)
        if isinstance(what, str):
            return Reply(None, "test", what)
        if isinstance(what, list):
            return Reply(reply(name, qtype, RCODE.NOERROR, *what), "test")
        assert isinstance(what, int)
        return Reply(reply(name, qtype, what), "test")

    result = walk(row.name, row.qtype, list(row.search), row.ndots, ask)
    got = {v.library: (v.status, [result.steps[i - 1].name for i in v.steps])
           for v in result.verdicts}
    assert got == {"glibc": row.glibc, "musl": row.musl}
    # Each distinct name is asked once, whichever library needs it first.
    assert len(asked) == len(set(asked))


def test_a_and_aaaa_together_follow_each_library() -> None:
    """getaddrinfo(AF_UNSPEC): glibc judges the pair by the A reply's rcode unless it is
    NOERROR; musl goes on as soon as either reply is NXDOMAIN."""
    world = {("web.default.svc.cluster.local.", QTYPE.A): RCODE.NOERROR,
             ("web.default.svc.cluster.local.", QTYPE.AAAA): RCODE.NXDOMAIN}

    def ask(name: str, qtype: int) -> Reply:
        if name == "web.svc.cluster.local." and qtype == QTYPE.A:
            return Reply(reply(name, qtype, RCODE.NOERROR, a(name, "10.0.0.5")), "test")
        return Reply(reply(name, qtype, world.get((name, qtype), RCODE.NXDOMAIN)), "test")

    result = walk("web", "A+AAAA", SEARCH, 5, ask)
    assert result.qtype == "A+AAAA"
    glibc, musl = result.verdicts
    # NOERROR (A) + NXDOMAIN (AAAA) is HOST_NOT_FOUND for glibc: the search goes on; an A
    # answer beside an NXDOMAIN AAAA (a server that breaks RFC 4074) is success for glibc,
    # while musl reads the NXDOMAIN and walks on past the address to the end of the list.
    assert (glibc.status, glibc.steps) == ("resolves", [1, 2])
    assert (musl.status, musl.steps) == ("fails", [1, 2, 3, 4])
    assert result.steps[0].describe() == ("A NOERROR (NODATA) answers=0, AAAA NXDOMAIN "
                                          "answers=0 from test")
