"""file: the master-file reader, the lookup rules as a case table, setup errors with their
``file:line:col`` and zone-file line, and reloading."""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.plugins import registry
from kdns.plugins.base import GENERATION, Request, Response
from kdns.plugins.file import setup as fsetup
from kdns.plugins.file.handler import FileHandler
from kdns.plugins.file.setup import ZoneFileError, build_zone, parse_master
from kdns.plugins.setup_context import SetupContext

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "zones" / "example.org.zone"
README = Path(fsetup.__file__).parent / "README.md"


def _handler(tmp_path: Path, body: str = "", zone_text: str | None = None,
             args: str = "db.example.org", key: str = "example.org") -> FileHandler:
    if zone_text is None:
        shutil.copy(EXAMPLE, tmp_path / "db.example.org")
    else:
        (tmp_path / "db.example.org").write_text(zone_text)
    text = f"{key} {{\n    file {args} {{\n{body}    }}\n}}\n"
    block = parse_corefile(text, "Corefile")[0]
    return fsetup.setup(block.directives[0], SetupContext(block.keys, tmp_path))


def _req(qname: str, qtype: str = "A", qclass: int = 1) -> Request:
    msg = DNSRecord.question(qname, qtype)
    msg.questions[0].qclass = qclass
    return Request(msg, qname, qname.lower(), int(getattr(QTYPE, qtype)), qclass,
                   ("127.0.0.1", 5353), "udp", "dns://:53", "example.org.", 512)


class Next:
    """A next plugin that records the names it was asked and answers with ``answer``."""

    def __init__(self, answer: Callable[[Request], DNSRecord] | None = None) -> None:
        self.calls: list[str] = []
        self.answer = answer

    def __call__(self, req: Request) -> Response:
        self.calls.append(req.qname)
        msg = self.answer(req) if self.answer else req.msg.reply()
        return Response(msg, "next")


def _lines(rrs: list[RR]) -> list[str]:
    return [f"{rr.rname} {QTYPE[rr.rtype]} {rr.rdata}" for rr in rrs]


# -- the lookup rules, as a case table -----------------------------------------------------------


@dataclass(frozen=True)
class Case:
    qname: str
    qtype: str
    rcode: int
    answer: tuple[str, ...] = ()
    authority: tuple[str, ...] = ()
    """Types only (``SOA``, ``NS``) unless the case is a referral."""
    additional: tuple[str, ...] = ()
    aa: bool = True


APEX_NS = ("NS", "NS")
CASES = [
    Case("www.example.org.", "A", RCODE.NOERROR, ("www.example.org. A 192.0.2.80",), APEX_NS),
    Case("WwW.ExAmple.org.", "AAAA", RCODE.NOERROR, ("WwW.ExAmple.org. AAAA 2001:db8::80",), APEX_NS),
    Case("example.org.", "A", RCODE.NOERROR, ("example.org. A 192.0.2.1",), APEX_NS),
    Case("example.org.", "TXT", RCODE.NOERROR, ('example.org. TXT "v=spf1 mx -all"',), APEX_NS),
    Case("example.org.", "SOA", RCODE.NOERROR,
         ("example.org. SOA ns1.example.org. hostmaster.example.org. 2024060101 7200 1800 1209600 300",),
         APEX_NS),
    Case("example.org.", "NS", RCODE.NOERROR,
         ("example.org. NS ns1.example.org.", "example.org. NS ns2.example.org."), (),
         ("ns1.example.org. A 192.0.2.53", "ns2.example.org. A 192.0.2.54")),
    Case("example.org.", "MX", RCODE.NOERROR, ("example.org. MX 10 mail.example.org.",), APEX_NS,
         ("mail.example.org. A 192.0.2.25",)),
    Case("_sip._udp.example.org.", "SRV", RCODE.NOERROR,
         ("_sip._udp.example.org. SRV 10 60 5060 sip.example.org.",), APEX_NS,
         ("sip.example.org. A 192.0.2.60",)),
    # CNAME chain inside the zone, and asking for the CNAME itself
    Case("app.example.org.", "A", RCODE.NOERROR,
         ("app.example.org. CNAME web.example.org.", "web.example.org. CNAME www.example.org.",
          "www.example.org. A 192.0.2.80"), APEX_NS),
    Case("web.example.org.", "MX", RCODE.NOERROR,
         ("web.example.org. CNAME www.example.org.",), ("SOA",)),
    Case("app.example.org.", "CNAME", RCODE.NOERROR, ("app.example.org. CNAME web.example.org.",), APEX_NS),
    # NODATA: an existing name, and an empty non-terminal
    Case("www.example.org.", "MX", RCODE.NOERROR, (), ("SOA",)),
    Case("c.example.org.", "A", RCODE.NOERROR, (), ("SOA",)),
    Case("example.org.", "ANY", RCODE.NOERROR, (), ("SOA",)),
    # NXDOMAIN
    Case("nope.example.org.", "A", RCODE.NXDOMAIN, (), ("SOA",)),
    Case("x.b.c.example.org.", "A", RCODE.NXDOMAIN, (), ("SOA",)),
    # delegation: a referral with glue, for the cut and anything below it
    Case("sub.example.org.", "A", RCODE.NOERROR, (), ("sub.example.org. NS ns.sub.example.org.",),
         ("ns.sub.example.org. A 198.51.100.53",), aa=False),
    Case("deep.www.sub.example.org.", "AAAA", RCODE.NOERROR, (),
         ("sub.example.org. NS ns.sub.example.org.",), ("ns.sub.example.org. A 198.51.100.53",),
         aa=False),
    Case("ns.sub.example.org.", "A", RCODE.NOERROR, (), ("sub.example.org. NS ns.sub.example.org.",),
         ("ns.sub.example.org. A 198.51.100.53",), aa=False),
    Case("sub.example.org.", "NS", RCODE.NOERROR, (), ("sub.example.org. NS ns.sub.example.org.",),
         ("ns.sub.example.org. A 198.51.100.53",), aa=False),
    # DS belongs to the parent side of the cut (none here: NODATA, authoritative)
    Case("sub.example.org.", "DS", RCODE.NOERROR, (), ("SOA",)),
    # wildcard: synthesised for one or more labels, owner rewritten; NODATA for other types
    Case("x.apps.example.org.", "A", RCODE.NOERROR, ("x.apps.example.org. A 192.0.2.100",), APEX_NS),
    Case("Y.z.apps.example.org.", "A", RCODE.NOERROR, ("Y.z.apps.example.org. A 192.0.2.100",), APEX_NS),
    Case("x.apps.example.org.", "TXT", RCODE.NOERROR, (), ("SOA",)),
    Case("apps.example.org.", "A", RCODE.NOERROR, (), ("SOA",)),  # an empty non-terminal
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.qname}/{c.qtype}")
def test_lookup_cases(tmp_path: Path, case: Case) -> None:
    h = _handler(tmp_path)
    nxt = Next()
    r = h.serve(_req(case.qname, case.qtype), nxt)
    assert nxt.calls == []
    m = r.msg
    assert m.header.rcode == case.rcode
    assert bool(m.header.aa) == case.aa
    assert _lines(m.rr) == list(case.answer)
    if case.authority and " " in case.authority[0]:
        assert _lines(m.auth) == list(case.authority)
    else:
        assert [QTYPE[rr.rtype] for rr in m.auth] == list(case.authority)
    assert _lines(m.ar) == list(case.additional)
    assert r.fast and r.deps == (("file", id(h), "example.org."),)


def test_negative_soa_ttl_is_min_of_ttl_and_minimum(tmp_path: Path) -> None:
    h = _handler(tmp_path)
    soa = h.serve(_req("nope.Example.ORG."), Next()).msg.auth[0]
    assert soa.ttl == 300  # SOA TTL 1h, MINIMUM 5m (RFC 2308 §3)
    assert str(soa.rname) == "Example.ORG."  # spelled as the query spelled the apex


def test_transfers_refused_other_class_and_names_pass(tmp_path: Path) -> None:
    h = _handler(tmp_path)
    nxt = Next()
    r = h.serve(_req("example.org.", "AXFR"), nxt)
    assert r.msg.header.rcode == RCODE.REFUSED and not r.msg.header.aa
    assert h.serve(_req("www.example.org.", "A", qclass=3), nxt).plugin == "next"
    assert h.serve(_req("www.example.net.", "A"), nxt).plugin == "next"
    assert nxt.calls == ["www.example.org.", "www.example.net."]


def test_fallthrough_only_for_names_that_do_not_exist(tmp_path: Path) -> None:
    h = _handler(tmp_path, "        fallthrough\n")
    nxt = Next()
    assert h.serve(_req("nope.example.org."), nxt).plugin == "next"
    assert h.serve(_req("www.example.org.", "MX"), nxt).plugin == "file"  # NODATA stays
    assert h.serve(_req("c.example.org."), nxt).plugin == "file"          # empty non-terminal
    assert nxt.calls == ["nope.example.org."]
    h = _handler(tmp_path, "        fallthrough other.example.org\n")
    assert h.serve(_req("x.other.example.org."), nxt).plugin == "next"
    assert h.serve(_req("nope.example.org."), nxt).msg.header.rcode == RCODE.NXDOMAIN


def test_external_cname_target_resolved_through_the_chain(tmp_path: Path) -> None:
    h = _handler(tmp_path)

    def upstream(req: Request) -> DNSRecord:
        reply = req.msg.reply()
        reply.add_answer(RR(req.qname, QTYPE.A, ttl=30, rdata=A("203.0.113.9")))
        return reply

    nxt = Next(upstream)
    r = h.serve(_req("docs.example.org."), nxt)
    assert nxt.calls == ["docs.example.net."]
    assert _lines(r.msg.rr) == ["docs.example.org. CNAME docs.example.net.",
                                "docs.example.net. A 203.0.113.9"]
    assert not r.fast  # depends on upstream data, not only on the zone

    def broken(req: Request) -> DNSRecord:
        raise RuntimeError("no upstream")

    r = h.serve(_req("docs.example.org."), Next(broken))
    assert _lines(r.msg.rr) == ["docs.example.org. CNAME docs.example.net."]
    # asking for the CNAME itself never chases
    nxt = Next(upstream)
    assert len(h.serve(_req("docs.example.org.", "CNAME"), nxt).msg.rr) == 1 and nxt.calls == []


ZONE = """\
$TTL 300
@ IN SOA ns hostmaster 1 3600 600 86400 60
  IN NS ns
ns IN A 192.0.2.1
"""


def test_dangling_and_looping_cnames(tmp_path: Path) -> None:
    h = _handler(tmp_path, zone_text=ZONE + "dangling CNAME gone\nl1 CNAME l2\nl2 CNAME l1\n")
    r = h.serve(_req("dangling.example.org."), Next())
    assert r.msg.header.rcode == RCODE.NXDOMAIN  # RFC 6604: the rcode of the last name
    assert _lines(r.msg.rr) == ["dangling.example.org. CNAME gone.example.org."]
    r = h.serve(_req("l1.example.org."), Next())
    assert r.msg.header.rcode == RCODE.NOERROR and 2 <= len(r.msg.rr) <= 10


def test_one_file_for_two_zones(tmp_path: Path) -> None:
    h = _handler(tmp_path, zone_text=ZONE + "www A 192.0.2.80\n",
                 args="db.example.org example.org example.net", key=".")
    assert set(h.zones) == {"example.org.", "example.net."}
    assert _lines(h.serve(_req("www.example.net."), Next()).msg.rr) == ["www.example.net. A 192.0.2.80"]
    assert _lines(h.serve(_req("www.example.org."), Next()).msg.rr) == ["www.example.org. A 192.0.2.80"]
    assert h.entries == {"example.org.": 4, "example.net.": 4}


# -- the master-file reader ----------------------------------------------------------------------


def _parse(text: str, origin: str = "example.org.") -> list[str]:
    return [rr.toZone().replace("\t", " ").split(" ", 1)[0] + " " + " ".join(rr.toZone().split()[1:])
            for _, rr in parse_master(text, origin)]


def test_reader_syntax() -> None:
    text = """\
$ORIGIN example.org.
$TTL 1h
@   IN  SOA ns1 hostmaster (   ; comment inside the parentheses
        7 1h 30m 2w 5m )
    NS  ns1                    ; blank owner: the previous one
ns1 60 IN A 192.0.2.53
ns1 IN 60 AAAA 2001:db8::53    ; class before TTL
txt TXT "two words" "semi;colon" "quote \\" and \\065"
srv SRV 0 5 443 @
alias CNAME @
$ORIGIN sub.example.org.
leaf 1h30m A 192.0.2.9
gen TYPE65280 \\# 2 abcd
caa CAA 0 issue "ca.example.net"
"""
    got = _parse(text)
    assert got == [
        "example.org. 3600 IN SOA ns1.example.org. hostmaster.example.org. 7 3600 1800 1209600 300",
        "example.org. 3600 IN NS ns1.example.org.",
        "ns1.example.org. 60 IN A 192.0.2.53",
        "ns1.example.org. 60 IN AAAA 2001:db8::53",
        'txt.example.org. 3600 IN TXT "two words" "semi;colon" "quote " and A"',
        "srv.example.org. 3600 IN SRV 0 5 443 example.org.",
        "alias.example.org. 3600 IN CNAME example.org.",
        "leaf.sub.example.org. 5400 IN A 192.0.2.9",
        "gen.sub.example.org. 3600 IN TYPE65280 \\# 2 ABCD",
        'caa.sub.example.org. 3600 IN CAA 0 issue "ca.example.net"',
    ]
    txt = next(rr for _, rr in parse_master(text, "example.org.") if rr.rtype == QTYPE.TXT)
    assert txt.rdata.data == [b"two words", b"semi;colon", b'quote " and A']  # escapes decoded


def test_reader_ttl_defaults_to_last_explicit_then_3600() -> None:
    got = _parse("a A 192.0.2.1\nb 42 A 192.0.2.2\nc A 192.0.2.3\n")
    assert [line.split()[1] for line in got] == ["3600", "42", "42"]


@pytest.mark.parametrize(("text", "line", "message"), [
    ("a A 192.0.2.1\nb A 300.1.1.1\n", 2, "invalid IPv4 address '300.1.1.1'"),
    ("a AAAA 192.0.2.1\n", 1, "invalid IPv6 address"),
    ("a BOGUS 1\n", 1, "unknown record type 'BOGUS'"),
    ("a 60 IN\n", 1, "record without a type"),
    ("a CH TXT x\n", 1, "class CH is not supported"),
    ("\n\n  A 192.0.2.1\n", 3, "a record with a blank owner before any owner"),
    ("a MX 10\n", 1, "MX record needs 2 RDATA fields, got 1"),
    ("a SOA ns hm 1 2 3\n", 1, "SOA record needs 7 RDATA fields"),
    ("a TXT \"unterminated\n", 1, "newline in a quoted string"),
    ("a A (\n 192.0.2.1\n", 1, "unbalanced '('"),
    ("a A 192.0.2.1 )\n", 1, "unbalanced ')'"),
    ("$INCLUDE other.zone\n", 1, "$INCLUDE is not supported"),
    ("$TTL forever\n", 1, "$TTL takes one TTL"),
    ("$FOO x\n", 1, "unknown directive $FOO"),
    ("a\\.b A 192.0.2.1\n", 1, "escapes in names are not supported"),
    ("a..b A 192.0.2.1\n", 1, "invalid domain name 'a..b'"),
    ("a TYPE65280 \\# 3 abcd\n", 1, "does not match"),
    ("a NSEC3PARAM 1 0 0 -\n", 1, "record type NSEC3PARAM is not supported"),
    ("a TXT " + "x" * 256 + "\n", 1, "longer than 255 bytes"),
])
def test_reader_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ZoneFileError) as info:
        list(parse_master(text, "example.org."))
    assert info.value.line == line
    assert message in info.value.message


@pytest.mark.parametrize(("text", "line", "message"), [
    (ZONE + "www.example.net. A 192.0.2.1\n", 5,
     "out of zone data: www.example.net. is not in zone example.org."),
    (ZONE + "sub SOA ns hm 1 1 1 1 1\n", 5, "SOA record for sub.example.org. is not at the zone apex"),
    (ZONE + "@ SOA ns hm 2 1 1 1 1\n", 5, "a second SOA record"),
    ("www A 192.0.2.1\n", None, "no SOA record for origin example.org."),
    (b"\xff\xfe".decode("latin-1"), 1, "not valid UTF-8"),
])
def test_zone_checks(text: str, line: int | None, message: str) -> None:
    data = text.encode("latin-1") if "\xff" in text else text.encode()
    with pytest.raises(ZoneFileError) as info:
        build_zone(data, "example.org.", Path("db"))
    assert info.value.line == line and message in info.value.message


def test_zone_index() -> None:
    z = build_zone(EXAMPLE.read_bytes(), "example.org.", EXAMPLE)
    assert z.serial == 2024060101 and z.cuts == frozenset({"sub.example.org."})
    assert {"c.example.org.", "apps.example.org.", "_udp.example.org."} <= z.names
    assert z.records == 21


# -- setup ---------------------------------------------------------------------------------------


def _setup_error(tmp_path: Path, text: str, zone_text: str | None = None) -> str:
    if zone_text is None:
        shutil.copy(EXAMPLE, tmp_path / "db.example.org")
    else:
        (tmp_path / "db.example.org").write_text(zone_text)
    block = parse_corefile(text, "Corefile")[0]
    with pytest.raises(ConfigError) as info:
        fsetup.setup(block.directives[0], SetupContext(block.keys, tmp_path))
    return str(info.value)


def test_defaults_and_options(tmp_path: Path) -> None:
    h = _handler(tmp_path)
    assert h.cfg.path == tmp_path / "db.example.org" and h.cfg.zones == ("example.org.",)
    assert (h.cfg.reload, h.cfg.fallthrough) == (60.0, None)
    h = _handler(tmp_path, "        reload 0\n        reload_by_mtime\n        fallthrough\n",
                 args=f"{tmp_path / 'db.example.org'} Example.ORG")
    assert (h.cfg.reload, h.cfg.fallthrough, h.cfg.zones) == (0.0, (), ("example.org.",))


@pytest.mark.parametrize(("text", "expected"), [
    ("example.org {\n    file\n}\n", "Corefile:2:5: file: file needs a DBFILE argument"),
    ("example.org {\n    file db.example.org {\n        reload\n    }\n}\n",
     "Corefile:3:9: file: reload needs a duration (zero to disable)"),
    ("example.org {\n    file db.example.org {\n        reload 1x\n    }\n}\n",
     "Corefile:3:16: file: invalid duration '1x' (use e.g. 500ms, 5s, 1m)"),
    ("example.org {\n    file db.example.org {\n        transfer to *\n    }\n}\n",
     "Corefile:3:9: file: unknown property 'transfer'"),
    ("example.org {\n    file db.example.org {\n        reload_by_mtime yes\n    }\n}\n",
     "Corefile:3:25: file: reload_by_mtime takes no arguments"),
    ("example.org {\n    file db.example.org exa..mple.org\n}\n",
     "Corefile:2:25: file: invalid zone 'exa..mple.org'"),
])
def test_option_errors_are_located(tmp_path: Path, text: str, expected: str) -> None:
    assert _setup_error(tmp_path, text) == expected


def test_missing_file_is_a_located_error(tmp_path: Path) -> None:
    block = parse_corefile("example.org {\n    file nope.zone\n}\n", "Corefile")[0]
    with pytest.raises(ConfigError) as info:
        fsetup.setup(block.directives[0], SetupContext(block.keys, tmp_path))
    assert str(info.value) == (f"Corefile:2:10: file: cannot read zone file {tmp_path / 'nope.zone'}: "
                               "No such file or directory")


def test_parse_error_names_token_and_zone_line(tmp_path: Path) -> None:
    msg = _setup_error(tmp_path, "example.org {\n    file db.example.org\n}\n",
                       zone_text=ZONE + "www A 192.0.2.300\n")
    assert msg == (f"Corefile:2:10: file: {tmp_path / 'db.example.org'}:5: "
                   "invalid IPv4 address '192.0.2.300'")


def test_zone_must_match_the_served_zone(tmp_path: Path) -> None:
    msg = _setup_error(tmp_path, "example.com {\n    file db.example.org\n}\n")
    assert msg.startswith(f"Corefile:2:10: file: {tmp_path / 'db.example.org'}:9: out of zone data: "
                          "example.org. is not in zone example.com.")


def test_registry_and_readme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.IMPLEMENTED, "file", "kdns.plugins.file.setup")
    assert registry.setup_func("file") is fsetup.setup
    blocks = re.findall(r"```corefile\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    for name in ("example.org.zone", "db.example"):
        (tmp_path / name).write_text(ZONE)
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "example.org.zone").write_text(ZONE)
    for text in blocks:
        for block in parse_corefile(text, "README.md", env={}):
            for d in block.directives:
                if d.name.text == "file":
                    fsetup.setup(d, SetupContext(block.keys, tmp_path))


# -- reload --------------------------------------------------------------------------------------


def _poll(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def _a(h: FileHandler, name: str) -> list[str]:
    return [str(rr.rdata) for rr in h.serve(_req(name), Next()).msg.rr]


def test_reload_on_new_serial_in_the_background(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    h = _handler(tmp_path, "        reload 50ms\n", zone_text=ZONE + "www A 192.0.2.80\n")
    h.start()
    try:
        before = GENERATION.value
        (tmp_path / "db.example.org").write_text(ZONE.replace(" 1 3600", " 2 3600") + "www A 192.0.2.81\n")
        with caplog.at_level(logging.INFO, "kdns.file"):
            assert _poll(lambda: _a(h, "www.example.org.") == ["192.0.2.81"])
            assert _poll(lambda: "with SOA serial 2 (was 1)" in caplog.text)
        assert GENERATION.value > before
        assert h.zones["example.org."].serial == 2
    finally:
        h.stop()
    assert h._poller._thread is None


def test_reload_without_serial_change_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    h = _handler(tmp_path, "        reload 0\n", zone_text=ZONE + "www A 192.0.2.80\n")
    assert h.reload() == []  # unchanged content: nothing to do
    (tmp_path / "db.example.org").write_text(ZONE + "www A 192.0.2.82\n")
    with caplog.at_level(logging.WARNING, "kdns.file"):
        assert h.reload() == ["example.org."]
    assert "SOA serial 1 did not" in caplog.text
    assert _a(h, "www.example.org.") == ["192.0.2.82"]


def test_parse_error_on_reload_keeps_the_old_zone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    h = _handler(tmp_path, "        reload 0\n", zone_text=ZONE + "www A 192.0.2.80\n")
    path = tmp_path / "db.example.org"
    path.write_text(ZONE.replace(" 1 3600", " 2 3600") + "www A 192.0.2.999\n")
    before = GENERATION.value
    with caplog.at_level(logging.ERROR, "kdns.file"):
        assert h.reload() == []
        assert h.reload() == []  # the same bad content is reported once
    assert caplog.text.count(f"{path}:5: invalid IPv4 address '192.0.2.999'") == 1
    assert "keeping zone example.org. with SOA serial 1" in caplog.text
    assert _a(h, "www.example.org.") == ["192.0.2.80"] and GENERATION.value == before
    path.unlink()
    with caplog.at_level(logging.WARNING, "kdns.file"):
        assert h.reload() == []
    assert "cannot read" in caplog.text
    assert _a(h, "www.example.org.") == ["192.0.2.80"]
    path.write_text(ZONE.replace(" 1 3600", " 3 3600") + "www A 192.0.2.83\n")
    assert h.reload() == ["example.org."] and _a(h, "www.example.org.") == ["192.0.2.83"]
