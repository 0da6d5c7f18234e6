"""minimal and header over real sockets, each reply asked twice (slow path, then the stored
reply): what the plugins change is what the fast path replays."""

from __future__ import annotations

from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.server.app import KdnsServer
from tests.conftest import DEMO, Running, start_server
from tests.integration.test_forward import FakeUpstream

KUBIA = "kubia.default.svc.cluster.local."


def _kubernetes(extra: str) -> str:
    return f"""\
        .:53 {{
            {extra}
            kubernetes cluster.local {{
                manifests {DEMO}
            }}
        }}
        """


@pytest.fixture(scope="module")
def minimal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    server = start_server(_kubernetes("minimal"), tmp_path_factory.mktemp("minimal"))
    try:
        yield Running(server)
    finally:
        server.stop()


def twice(run: Running, qname: str, qtype: str, **kw: object) -> list[dns.message.Message]:
    return [run.udp(qname, qtype, **kw) for _ in range(2)]


@pytest.mark.parametrize(("qname", "qtype"), [
    ("cluster.local.", "NS"),             # NS with glue in the additional section
    ("_http._tcp." + KUBIA, "SRV"),       # SRV with its targets' addresses
])
def test_minimal_drops_authority_and_additional(demo: Running, minimal: Running, qname: str,
                                                qtype: str) -> None:
    full = demo.udp(qname, qtype)
    assert full.answer and full.additional, "the case needs a reply with extra records"
    for r in twice(minimal, qname, qtype):
        assert r.rcode() == dns.rcode.NOERROR
        assert r.answer == full.answer
        assert not r.authority and not r.additional


@pytest.mark.parametrize(("qname", "qtype", "rcode"), [
    ("nosuch.default.svc.cluster.local.", "A", dns.rcode.NXDOMAIN),
    (KUBIA, "TXT", dns.rcode.NOERROR),
])
def test_minimal_keeps_denials(minimal: Running, qname: str, qtype: str, rcode: int) -> None:
    for r in twice(minimal, qname, qtype):
        assert r.rcode() == rcode and not r.answer
        assert [rs.rdtype for rs in r.authority] == [dns.rdatatype.SOA], "RFC 2308 needs it"


def test_minimal_reply_to_edns_query_keeps_opt(minimal: Running) -> None:
    for r in twice(minimal, "cluster.local.", "NS", use_edns=0):
        assert r.edns == 0 and not r.additional


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream()
    yield up
    up.close()


@pytest.fixture(scope="module")
def header(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Running]:
    server = start_server(f"""\
        cluster.local:53 {{
            header {{
                response clear aa ra
                set rd
            }}
            kubernetes cluster.local {{
                manifests {DEMO}
            }}
        }}
        example:53 {{
            header {{
                query clear rd
                response set aa
                response clear aa
                response set aa
            }}
            forward . {upstream.addr}
        }}
        """, tmp_path_factory.mktemp("header"))
    try:
        yield Running(server)
    finally:
        server.stop()


def test_header_response_rules(demo: Running, header: Running) -> None:
    base = demo.udp(KUBIA, "A", flags=0)
    assert base.flags & dns.flags.AA and base.flags & dns.flags.RA and not base.flags & dns.flags.RD
    for r in twice(header, KUBIA, "A", flags=0):
        assert r.answer == base.answer
        assert not r.flags & dns.flags.AA and not r.flags & dns.flags.RA
        assert r.flags & dns.flags.RD, "a rule without a selector applies to replies"


def test_header_query_rules_reach_the_next_plugins(header: Running,
                                                   upstream: FakeUpstream) -> None:
    for r in twice(header, "ext.example.", "A"):  # dnspython sets RD
        assert [rd.address for rs in r.answer for rd in rs] == ["192.0.2.10"]
        assert r.flags & dns.flags.AA, "the last rule wins"
    asked = upstream.seen("ext.example.")
    assert asked and all(rd == 0 for *_, rd in asked), "forward sent the query with RD cleared"


BAD_HEADER = [
    ("header", "Corefile:2:5: header: needs a block with at least one rule"),
    ("header {\n    }", "Corefile:2:5: header: needs a block with at least one rule"),
    ("header x {\n        set ra\n    }", "Corefile:2:12: header: unexpected argument 'x'"),
    ("header {\n        set\n    }",
     "Corefile:3:9: header: invalid length for flags, at least one should be provided"),
    ("header {\n        query\n    }", "Corefile:3:9: header: no flag action provided"),
    ("header {\n        response toggle ra\n    }",
     "Corefile:3:18: header: unknown flag action=toggle, should be set or clear"),
    ("header {\n        query set ad\n    }",
     "Corefile:3:19: header: unknown/unsupported flag=ad (supported: aa, ra, rd)"),
]


@pytest.mark.parametrize(("text", "message"), BAD_HEADER, ids=[b[0] for b in BAD_HEADER])
def test_bad_header_is_a_located_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        KdnsServer(parse_corefile(f". {{\n    {text}\n}}\n", "Corefile")).build()
    assert str(exc.value).startswith(message)


@pytest.mark.parametrize(("text", "message"), [
    ("minimal on", "Corefile:2:13: minimal: unexpected argument 'on'"),
    ("minimal {\n    }", "Corefile:2:5: minimal: takes no block"),
])
def test_bad_minimal_is_a_located_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        KdnsServer(parse_corefile(f". {{\n    {text}\n}}\n", "Corefile")).build()
    assert str(exc.value) == message
