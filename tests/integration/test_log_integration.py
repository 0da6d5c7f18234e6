"""log over real sockets: the lines a server writes for queries asked with dnspython, in the
common, combined and custom formats, filtered by name and class.

In-process servers are read through the ``kdns.log`` logger; one test runs ``kdns serve`` and
reads the line from the process's own output.
"""

from __future__ import annotations

import logging
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest

from kdns.server.app import KdnsServer
from tests.conftest import DEMO, Running, start_server
from tests.integration.test_cli import KDNS, Proc

CLUSTER = f"""
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        manifests {DEMO}
        pods insecure
    }}
"""
KUBIA = "kubia.default.svc.cluster.local."


@pytest.fixture
def serve(tmp_path: Path, caplog: pytest.LogCaptureFixture
          ) -> Iterator[Callable[[str], tuple[Running, Callable[[], list[str]]]]]:
    caplog.set_level(logging.INFO, logger="kdns.log")
    servers: list[KdnsServer] = []

    def start(corefile: str) -> tuple[Running, Callable[[], list[str]]]:
        server = start_server(corefile, tmp_path)
        servers.append(server)

        def lines() -> list[str]:
            out = [r.getMessage() for r in caplog.records if r.name == "kdns.log"]
            caplog.clear()
            return out
        return Running(server), lines

    yield start
    for s in servers:
        s.stop()


def ask(r: Running, qname: str, qtype: str = "A", *, tcp: bool = False,
        **kw: object) -> dns.message.Message:
    q = dns.message.make_query(qname, qtype, **kw)  # type: ignore[arg-type]
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=r.port, source="127.0.0.9", timeout=3)
    return dns.query.udp(q, "127.0.0.1", port=r.port, source="127.0.0.9", timeout=3)


COMMON_RE = re.compile(
    r'^127\.0\.0\.9:(\d+) - (\d+) "(\S+) IN (\S+) (udp|tcp) (\d+) (true|false) (\d+)" '
    r"(\S+) (\S+) (\d+) (\d+(?:\.\d+)?)s$")


def test_common_format_fields_match_the_wire(serve: Callable[..., tuple[Running, Callable[[], list[str]]]]) -> None:  # noqa: E501
    r, lines = serve(f".:53 {{\n    log\n{CLUSTER}}}\n")
    q = dns.message.make_query(KUBIA.upper(), "A", use_edns=0, payload=1232, want_dnssec=True)
    wire = q.to_wire()
    reply = dns.query.udp(q, "127.0.0.1", port=r.port, source="127.0.0.9", timeout=3)
    (line,) = lines()
    m = COMMON_RE.match(line)
    assert m, line
    assert int(m.group(2)) == q.id
    assert m.group(3, 4, 5) == ("A", KUBIA, "udp")  # the name as CoreDNS logs it: lower case
    assert int(m.group(6)) == len(wire)
    assert m.group(7, 8) == ("true", "1232")
    assert m.group(9, 10) == ("NOERROR", "qr,aa,rd,ra")
    assert int(m.group(11)) == len(reply.to_wire())
    assert 0 < float(m.group(12)) < 5
    ask(r, "nosuch.default.svc.cluster.local.", "TXT", tcp=True)
    (line,) = lines()
    m = COMMON_RE.match(line)
    assert m and m.group(3, 5, 7, 8, 9) == ("TXT", "tcp", "false", "65535", "NXDOMAIN"), line


def test_custom_format_names_and_classes(serve: Callable[..., tuple[Running, Callable[[], list[str]]]]) -> None:  # noqa: E501
    r, lines = serve(f""".:53 {{
    log default.svc.cluster.local "{{proto}} Request: {{name}} {{type}} {{>id}} -> {{rcode}}"
    log shop.svc.cluster.local {{combined}} {{
        class denial error
    }}
    log . {{
        class success
    }}
{CLUSTER}}}
""")
    m = ask(r, KUBIA, "SRV")
    assert lines() == [f"udp Request: {KUBIA} SRV {m.id} -> NOERROR"]
    # shop: only denials (NXDOMAIN and NODATA) and errors, in the combined format.
    ask(r, "shop.svc.cluster.local.", "A")  # a namespace: NODATA
    m = ask(r, "nosuch.shop.svc.cluster.local.", "A")
    got = lines()
    assert len(got) == 2 and all(line.endswith(' "0"') for line in got), got
    assert f" - {m.id} " in got[1] and "NXDOMAIN" in got[1]
    # Everything else: only successes.
    ask(r, "cluster.local.", "SOA")
    ask(r, "nosuch.cluster.local.", "A")
    got = lines()
    assert len(got) == 1 and '"SOA IN cluster.local. udp' in got[0], got


def test_min_duration_logs_slow_replies_outside_the_classes(
        serve: Callable[..., tuple[Running, Callable[[], list[str]]]]) -> None:
    r, lines = serve(f""".:53 {{
    log . "{{name}} {{rcode}}" {{
        class error
        minDuration 0s
    }}
{CLUSTER}}}
""")
    ask(r, KUBIA)
    assert lines() == [], "a zero minDuration never applies (CoreDNS: only when > 0)"
    r2, lines2 = serve(f""".:53 {{
    log . "{{name}} {{rcode}}" {{
        class error
        minDuration 1ns
    }}
{CLUSTER}}}
""")
    ask(r2, KUBIA)
    assert lines2() == [f"{KUBIA} NOERROR"]


def test_kdns_serve_writes_the_line_to_its_output(tmp_path: Path) -> None:
    corefile = tmp_path / "Corefile"
    corefile.write_text(f""".:53 {{
    log . "{{remote}} {{name}} {{type}} {{rcode}} {{>bufsize}} {{/kubernetes/namespace}}"
{CLUSTER}}}
""")
    proc = Proc([*KDNS, "serve", "--conf", str(corefile), "--dns-addr", "127.0.0.1",
                 "--dns-port", "0"])
    try:
        port = proc.wait_serving()
        q = dns.message.make_query(KUBIA, "A")
        dns.query.udp(q, "127.0.0.1", port=port, source="127.0.0.9", timeout=3)
        proc.p.send_signal(signal.SIGTERM)
        _, err = proc.p.communicate(timeout=15)
    finally:
        proc.stop()
    # No metadata plugin in the block: a metadata placeholder prints CoreDNS's "-".
    assert re.search(rf"\[INFO\] kdns\.log: 127\.0\.0\.9 {re.escape(KUBIA)} A NOERROR 512 -$",
                     err, re.M), err
