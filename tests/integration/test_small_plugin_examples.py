"""The examples of the bind, any, chaos, bufsize, local, whoami, minimal, header, nsid, debug and
dns64 READMEs (kdns's and CoreDNS's own) set up; a few run as their READMEs describe."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import pytest

from kdns.config.parser import parse_corefile
from kdns.server.app import KdnsServer, ServeOptions
from tests.conftest import ROOT

PLUGINS = ("bind", "any", "chaos", "bufsize", "local", "whoami", "minimal", "header", "nsid",
           "debug", "dns64")
FENCE = re.compile(r"```corefile\n(.*?)```", re.S)

# CoreDNS's own README examples for these plugins (plugin/<name>/README.md), verbatim but for
# forward targets, which are never contacted here (nothing is started).
COREDNS = {
    "bind-loopback": ". {\n    bind 127.0.0.1\n}\n",
    "bind-two": ". {\n    bind 127.0.0.1 ::1\n}\n",
    "bind-lo-except": ". {\n    bind lo {\n        except 127.0.0.1\n    }\n}\n",
    "bufsize-whoami": ". {\n    bufsize 1232\n    whoami\n}\n",
    "bufsize-forward": ". {\n    bufsize\n    forward . 172.31.0.10\n}\n",
    "chaos": ". {\n    chaos CoreDNS-001 info@coredns.io\n}\n",
    "nsid": ". {\n    whoami\n    nsid Use The Force\n}\n",
    "whoami": ". {\n    whoami\n}\n",
    "minimal": "example.org {\n    whoami\n    minimal\n}\n",
    "any": ". {\n    any\n    forward . 8.8.8.8\n}\n",
    "local": ". {\n    local\n}\n",
    "debug": ". {\n    debug\n}\n",
    "header": ". {\n    header {\n        response set ra aa\n        response clear rd\n    }\n}\n",
    "dns64": ". {\n    dns64 64:1337::/96\n}\n",
}


def _examples() -> list[tuple[str, str]]:
    out = []
    for name in PLUGINS:
        readme = ROOT / "kdns" / "plugins" / name / "README.md"
        for i, m in enumerate(FENCE.finditer(readme.read_text())):
            out.append((f"{name}#{i + 1}", m.group(1)))
    return out


EXAMPLES = _examples() + [(f"coredns:{k}", v) for k, v in COREDNS.items()]


@pytest.mark.parametrize(("where", "text"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_sets_up(tmp_path: Path, where: str, text: str) -> None:
    server = KdnsServer(parse_corefile(text, where), ServeOptions(config_dir=tmp_path)).build()
    assert server.listeners


def _start(text: str, tmp: Path) -> KdnsServer:
    server = KdnsServer(parse_corefile(textwrap.dedent(text), "Corefile"),
                        ServeOptions(config_dir=tmp, dns_addr="127.0.0.1", dns_port=0)).build()
    server.start()
    return server


@pytest.fixture
def nsid_whoami(tmp_path: Path) -> Iterator[int]:
    server = _start(COREDNS["nsid"], tmp_path)
    yield server.listeners[0].port
    server.stop()


def test_coredns_nsid_example_behaves(nsid_whoami: int) -> None:
    q = dns.message.make_query("example.org.", "A", use_edns=0,
                               options=[dns.edns.GenericOption(3, b"")])
    r = dns.query.udp(q, "127.0.0.1", port=nsid_whoami, timeout=3)
    assert [o.to_wire() for o in r.options if o.otype == 3] == [b"Use The Force"]
    assert [rs.rdtype for rs in r.additional] == [dns.rdatatype.A, dns.rdatatype.SRV]


def test_coredns_minimal_example_behaves(tmp_path: Path) -> None:
    # whoami's records are in the additional section, which minimal drops from positive replies
    server = _start(COREDNS["minimal"], tmp_path)
    try:
        q = dns.message.make_query("example.org.", "A")
        r = dns.query.udp(q, "127.0.0.1", port=server.listeners[0].port, timeout=3)
        assert r.rcode() == 0 and not r.answer and not r.additional
    finally:
        server.stop()
