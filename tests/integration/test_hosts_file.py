"""file + hosts over real sockets: kdns on 127.0.0.1 serving zones/example.org.zone and a hosts
file, queried with dnspython over UDP and TCP, including a reload seen through the fast path."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest

from kdns.plugins import registry
from tests.conftest import ROOT, Running, start_server

COREFILE = """\
example.org {
    file example.org.zone {
        reload 50ms
    }
}
. {
    hosts hosts.example {
        192.0.2.99 inline.example.com
        reload 50ms
    }
}
"""


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Running]:
    shutil.copy(ROOT / "zones" / "example.org.zone", tmp_path / "example.org.zone")
    shutil.copy(ROOT / "zones" / "hosts.example", tmp_path / "hosts.example")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry.IMPLEMENTED, "hosts", "kdns.plugins.hosts.setup")
        mp.setitem(registry.IMPLEMENTED, "file", "kdns.plugins.file.setup")
        server = start_server(COREFILE, tmp_path)
    try:
        yield Running(server)
    finally:
        server.stop()


def _rrs(msg: dns.message.Message, section: str = "answer") -> list[str]:
    out: list[str] = []
    for rrset in getattr(msg, section):
        for rd in rrset:
            out.append(f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd}")
    return out


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_file_answers(srv: Running, proto: str) -> None:
    ask = getattr(srv, proto)
    r = ask("www.example.org", "A")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert _rrs(r) == ["www.example.org. A 192.0.2.80"]
    assert _rrs(r, "authority") == ["example.org. NS ns1.example.org.", "example.org. NS ns2.example.org."]

    r = ask("app.example.org", "AAAA")
    assert _rrs(r) == ["app.example.org. CNAME web.example.org.",
                       "web.example.org. CNAME www.example.org.",
                       "www.example.org. AAAA 2001:db8::80"]

    r = ask("nope.example.org", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA
    assert [rrset.rdtype for rrset in r.authority] == [dns.rdatatype.SOA]
    assert r.authority[0].ttl == 300

    r = ask("c.example.org", "A")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert [rrset.rdtype for rrset in r.authority] == [dns.rdatatype.SOA]

    r = ask("host.sub.example.org", "A")
    assert r.rcode() == dns.rcode.NOERROR and not r.flags & dns.flags.AA and not r.answer
    assert _rrs(r, "authority") == ["sub.example.org. NS ns.sub.example.org."]
    assert _rrs(r, "additional") == ["ns.sub.example.org. A 198.51.100.53"]

    r = ask("anything.apps.example.org", "A")
    assert _rrs(r) == ["anything.apps.example.org. A 192.0.2.100"]


def test_case_is_echoed_also_from_the_fast_path(srv: Running) -> None:
    for name in ("www.example.org", "WwW.ExAmPlE.oRg", "WWW.EXAMPLE.ORG"):
        r = srv.udp(name, "A")
        assert str(r.answer[0].name) == name + "."
        assert r.answer[0][0].to_text() == "192.0.2.80"


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_hosts_answers(srv: Running, proto: str) -> None:
    ask = getattr(srv, proto)
    r = ask("gateway.example.com", "A")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert _rrs(r) == ["gateway.example.com. A 192.0.2.10"]
    assert r.answer[0].ttl == 3600 and not r.authority
    assert _rrs(ask("db.example.com", "AAAA")) == ["db.example.com. AAAA 2001:db8::7"]
    assert _rrs(ask("inline.example.com", "A")) == ["inline.example.com. A 192.0.2.99"]
    r = ask(str(dns.reversename.from_address("192.0.2.10")), "PTR")
    assert _rrs(r) == ["10.2.0.192.in-addr.arpa. PTR gateway.example.com.",
                       "10.2.0.192.in-addr.arpa. PTR gw.example.com."]
    r = ask("db.example.com", "MX")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    r = ask("missing.example.com", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN and not r.authority


def _poll(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_reloads_invalidate_the_fast_path(srv: Running, tmp_path: Path) -> None:
    # Ask twice first so the answers sit in the fast path; the reload must drop them.
    udp = srv.server.listeners[0].udp
    assert udp is not None
    slow = udp.dispatcher.counters.slow
    for _ in range(2):
        assert _rrs(srv.udp("www.example.org")) == ["www.example.org. A 192.0.2.80"]
        assert _rrs(srv.udp("printer.example.com")) == ["printer.example.com. A 192.0.2.11"]
    assert udp.dispatcher.counters.slow == slow + 2  # the second round came from the fast path
    zone = tmp_path / "example.org.zone"
    text = zone.read_text().replace("2024060101", "2024060102").replace("192.0.2.80", "192.0.2.81")
    zone.write_text(text)
    hosts = tmp_path / "hosts.example"
    hosts.write_text(hosts.read_text().replace("192.0.2.11 ", "192.0.2.111 "))
    assert _poll(lambda: _rrs(srv.udp("www.example.org")) == ["www.example.org. A 192.0.2.81"])
    assert _rrs(srv.tcp("www.example.org")) == ["www.example.org. A 192.0.2.81"]
    assert _poll(lambda: _rrs(srv.udp("printer.example.com")) == ["printer.example.com. A 192.0.2.111"])
    assert _rrs(srv.tcp("printer.example.com")) == ["printer.example.com. A 192.0.2.111"]
