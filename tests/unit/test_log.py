"""log: format parsing (CoreDNS's replacer rules), reply classes, and setup errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, RR, DNSRecord

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.plugins.base import Request
from kdns.plugins.log.handler import LogHandler, classify, parse_format
from kdns.plugins.log.setup import setup
from kdns.plugins.setup_context import SetupContext


def _req(name: str = "Example.ORG.", client: tuple[str, int] = ("::1", 5300)) -> Request:
    q = DNSRecord.question(name, "AAAA")
    q.header.id = 4711
    return Request(q, name, name.lower(), QTYPE.AAAA, 1, client, "tcp", "dns://:53", ".",
                   65535, True, meta={"metadata": {"kubernetes/namespace": lambda: "shop"}})


def _render(fmt: str, reply: bytes = b"\x12\x67\x85\x83" + b"\x00" * 8,
            duration: float = 0.00002) -> str:
    req = _req()
    return "".join(p if isinstance(p, str) else p(req, reply, duration)
                   for p in parse_format(fmt))


@pytest.mark.parametrize(("fmt", "want"), [
    ("{remote}:{port} {proto} {name} {type} {class}", "[::1]:5300 tcp example.org. AAAA IN"),
    ("{>id} {>opcode} {>do} {>bufsize}", "4711 0 true 65535"),
    ("{rcode} {>rflags} {rsize} {duration}", "NXDOMAIN qr,aa,rd,ra 12 0.00002s"),
    ("{/kubernetes/namespace} {/kubernetes/nosuch}", "shop -"),
    ("A } {name}", "A } example.org."),
    ("{ {name} }", "{ example.org. }"),
    ('{"q": "{name}"}', '{"q": "example.org."}'),
    ("no placeholders", "no placeholders"),
])
def test_placeholders(fmt: str, want: str) -> None:
    assert _render(fmt) == want


def _reply(rcode: int, answer: list[str] = (), auth: list[str] = ()) -> bytes:  # type: ignore[assignment]
    r = DNSRecord.question("x.example.").reply()
    r.header.rcode = rcode
    for a in answer:
        r.add_answer(*RR.fromZone(a))
    for a in auth:
        r.add_auth(*RR.fromZone(a))
    return r.pack()


def test_classes_as_coredns_typifies_replies() -> None:
    assert classify(_reply(RCODE.NOERROR, ["x.example. 5 A 192.0.2.1"])) == "success"
    assert classify(_reply(RCODE.NXDOMAIN)) == "denial"
    assert classify(_reply(RCODE.NOERROR)) == "denial"  # NODATA
    assert classify(_reply(RCODE.NOERROR, auth=["example. 5 SOA a. b. 1 2 3 4 5"])) == "denial"
    assert classify(_reply(RCODE.NOERROR, auth=["example. 5 NS ns.example."])) == "success"
    assert classify(_reply(RCODE.SERVFAIL)) == "error"
    assert classify(_reply(RCODE.REFUSED)) == "error"
    assert classify(b"\x00") == "error"


def _setup(text: str) -> LogHandler | None:
    blocks = parse_corefile(f".:53 {{\n{text}\n}}\n", "Corefile")
    ctx = SetupContext(blocks[0].keys, Path("."))
    h = None
    for d in blocks[0].directives:
        h = setup(d, ctx) or h
    return h


def test_names_formats_and_repeated_directives() -> None:
    h = _setup('log example.org Svc.Cluster.Local "{name} {rcode}"\nlog . {combined} {\n'
               " class denial\n class error\n minDuration\n}\nlog")
    assert h is not None
    assert [r.name for r in h.rules] == ["example.org.", "svc.cluster.local.", ".", "."]
    assert h.rules[0].fmt[1] == " "
    assert h.rules[2].classes == {"denial", "error"} and h.rules[2].min_duration == 0.1
    assert h.rules[1].classes == {"all"} and h.rules[0].min_duration == 0.0
    assert _setup("log {\n minDuration 2s\n}").rules[0].min_duration == 2.0  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "where", "message"), [
    ('log "{remote}"', "2:5", "would be read as a name"),
    ('log . "{remote} {nmae}"', "2:7", "unknown placeholder {nmae}"),
    ('log . "{>idd}"', "2:7", "unknown placeholder {>idd}"),
    ('log . "{local}"', "2:7", "{local} is not supported"),
    ('log "{name}" . "{name}"', "2:5", "only the last argument may be a format"),
    ("log {\n class\n}", "3:2", "class needs"),
    ("log {\n class loud\n}", "3:8", "unknown class 'loud'"),
    ("log {\n minDuration soon\n}", "3:14", "Illegal duration found: 'soon'"),
    ("log {\n minDuration 1s 2s\n}", "3:17", "at most one"),
    ("log {\n format x\n}", "3:2", "unknown property 'format'"),
    ("log bad..name", "2:5", "invalid zone"),
])
def test_setup_errors_are_located(text: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _setup(text)
    assert str(exc.value).startswith(f"Corefile:{where}: log: "), str(exc.value)
    assert message in str(exc.value)


@pytest.mark.parametrize("text", [
    'log . "{proto} Request: {name} {type} {>id}"',
    "log example.org {\n class denial\n}",
    "log . {combined} {\n class denial error\n}",
    "log . {\n class denial success\n}",
    "log . {\n class error\n minDuration 1s\n}",
    "log . {\n class denial\n class success\n}",
])
def test_coredns_readme_examples_set_up(text: str) -> None:
    h = _setup(text)
    assert h is not None and len(h.rules) == 1


def test_a_failing_metadata_value_costs_the_line_not_the_reply(
        caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> str:
        raise RuntimeError("provider bug")

    h = _setup('log . "{name} {/kubernetes/namespace}"')
    assert h is not None
    req = _req()
    req.meta["metadata"] = {"kubernetes/namespace": broken}
    with caplog.at_level(logging.INFO, logger="kdns.log"):
        h.rules[0].emit(req, b"\x12\x67\x85\x80" + b"\x00" * 8, 0.001)  # must not raise
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "formatting the line for Example.ORG. failed" in caplog.records[0].getMessage()


def test_common_inside_a_longer_format_is_expanded() -> None:
    h = _setup('log . "{common} ns={/kubernetes/namespace}"')
    assert h is not None
    req = _req()
    line = "".join(p if isinstance(p, str) else p(req, b"\x12\x67\x85\x80" + b"\x00" * 8, 0.5)
                   for p in h.rules[0].fmt)
    assert line.startswith('[::1]:5300 - 4711 "AAAA IN example.org. tcp ') and line.endswith(
        " NOERROR qr,aa,rd,ra 12 0.5s ns=shop")
