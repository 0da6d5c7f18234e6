"""The published default Corefiles of real distributions (tests/data/corefiles/, each quoting
its source) pass the real ``kdns check`` and serve cluster names over sockets.

Each fixture is used as published except for what a test cannot have, rewritten line for line:

* every ``forward`` target (upstream IPs, ``/etc/resolv.conf``) becomes one loopback "cluster
  DNS" the test starts: a kdns serving the demo cluster plus ``ext.example.test``, so NodeLocal
  DNSCache's forwarding of cluster.local reaches real cluster answers;
* server-block ports become one free port, ``bind`` addresses 127.0.0.1, and the HTTP
  addresses of health/ready/prometheus free loopback ports;
* ``hosts /etc/coredns/hosts`` reads a file the test writes;
* the ``kubernetes`` plugin reads the demo manifests (the ``--manifests`` override).

Every directive of every fixture is one kdns implements; none is left out.
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from kdns.config.parser import parse_corefile
from kdns.plugins import registry
from kdns.plugins.setup_context import Overrides
from kdns.server.app import KdnsServer, ServeOptions
from tests.conftest import DEMO, ROOT
from tests.ports import free_dns_port, free_tcp_port

FIXTURES = sorted((ROOT / "tests" / "data" / "corefiles").glob("*.Corefile"))
KUBIA = "kubia.default.svc.cluster.local."
KUBIA_IP = "10.98.237.175"


@pytest.fixture(scope="module")
def cluster_dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The loopback upstream every forward target is rewritten to."""
    tmp = tmp_path_factory.mktemp("cluster-dns")
    text = (f".:53 {{\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n"
            f"        manifests {DEMO}\n        pods insecure\n"
            f"        fallthrough in-addr.arpa ip6.arpa\n    }}\n"
            f"    hosts {{\n        192.0.2.99 ext.example.test\n        fallthrough\n    }}\n}}\n")
    server = KdnsServer(parse_corefile(text, "cluster-dns"),
                        ServeOptions(config_dir=tmp, dns_addr="127.0.0.1", dns_port=0)).build()
    server.start()
    try:
        yield server.listeners[0].port
    finally:
        server.stop()


def directives(text: str) -> set[str]:
    """Every directive name used in the fixture's server blocks."""
    names: set[str] = set()
    for block in parse_corefile(text, "fixture", env={}):
        names.update(d.name.text for d in block.directives)
    return names


def localize(text: str, tmp: Path, upstream: int, dns_port: int) -> str:
    """The rewrites the module docstring lists; every line keeps its place."""
    hosts = tmp / "hosts"
    hosts.write_text("192.0.2.100 api.example.com\n192.0.2.200 ingress.example.com\n")
    lines = []
    for line in text.splitlines():
        stripped = line.split("#", 1)[0]
        words = stripped.split()
        if not words:
            lines.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        head = words[0]
        if stripped.rstrip().endswith("{") and not stripped.startswith((" ", "\t")):
            # a server block's keys: every port becomes the test's one DNS port
            keys = [re.sub(r":\d+$", "", k) + f":{dns_port}" for k in words[:-1]]
            line = " ".join(keys) + " {"
        elif head == "forward" and len(words) >= 3:
            tail = " {" if words[-1] == "{" else ""
            line = f"{indent}forward {words[1]} 127.0.0.1:{upstream}{tail}"
        elif head == "bind":
            line = f"{indent}bind 127.0.0.1"
        elif head in ("health", "ready", "prometheus"):
            tail = " {" if words[-1] == "{" else ""
            line = f"{indent}{head} 127.0.0.1:{free_tcp_port()}{tail}"
        elif head == "hosts" and len(words) >= 2 and words[1].startswith("/"):
            line = line.replace(words[1], str(hosts))
        lines.append(line)
    return "\n".join(lines) + "\n"


def kdns_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kdns.cli", "check", str(path)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


def ask(port: int, name: str, qtype: str = "A", tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, qtype)
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=5)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=5)


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def serve_and_ask(text: str, tmp: Path, port: int) -> None:
    path = tmp / "Corefile"
    path.write_text(text)
    server = KdnsServer(parse_corefile(text, str(path)),
                        ServeOptions(config_dir=tmp, corefile=path, dns_addr="127.0.0.1",
                                     overrides=Overrides(manifests=str(DEMO)))).build()
    server.start()
    try:
        for tcp in (False, True):
            r = ask(port, KUBIA, tcp=tcp)
            assert r.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(r.rcode())
            assert [rd.address for rr in r.answer for rd in rr] == [KUBIA_IP]
        assert ask(port, "nope.default.svc.cluster.local.").rcode() == dns.rcode.NXDOMAIN
        srv = ask(port, "_http._tcp.kubia.default.svc.cluster.local.", "SRV")
        assert srv.rcode() == dns.rcode.NOERROR and srv.answer
        ptr = ask(port, "175.237.98.10.in-addr.arpa.", "PTR")
        assert [rd.target.to_text() for rr in ptr.answer for rd in rr] == [KUBIA]
        if "forward . " in text:  # names outside the cluster go to the upstream
            ext = ask(port, "ext.example.test.")
            assert [rd.address for rr in ext.answer for rd in rr] == ["192.0.2.99"]
        for m in re.finditer(r"^\s*(health|ready) 127\.0\.0\.1:(\d+)", text, re.M):
            path_ = "/health" if m.group(1) == "health" else "/ready"
            assert http_status(int(m.group(2)), path_) == 200
    finally:
        server.stop()


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_published_corefile_checks_and_serves(fixture: Path, tmp_path: Path,
                                              cluster_dns: int) -> None:
    original = fixture.read_text()
    assert original.startswith("#"), "each fixture quotes its source at the top"
    port = free_dns_port()
    text = localize(original, tmp_path, cluster_dns, port)
    assert text.count("\n") == original.count("\n")
    # Every directive of a published Corefile is one kdns implements: none is skipped here.
    assert directives(text) <= set(registry.IMPLEMENTED), directives(text) - set(registry.IMPLEMENTED)
    path = tmp_path / "Corefile"
    path.write_text(text)
    result = kdns_check(path)
    assert result.returncode == 0, result.stderr
    serve_and_ask(text, tmp_path, port)
