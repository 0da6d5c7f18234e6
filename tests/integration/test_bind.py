"""bind: which addresses a server block listens on, over real sockets on 127/8 and ::1."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.plugins.bind.interfaces import interface_addresses
from kdns.server.app import KdnsServer, ServeOptions


def _server(corefile: str, tmp: Path, *, dns_addr: str | None = None,
            start: bool = True) -> KdnsServer:
    text = textwrap.dedent(corefile)
    path = tmp / "Corefile"
    path.write_text(text)
    server = KdnsServer(parse_corefile(text, str(path)),
                        ServeOptions(config_dir=tmp, dns_addr=dns_addr, corefile=path,
                                     dns_port=0)).build()
    if start:
        server.start()
    return server


@pytest.fixture
def running() -> Iterator[list[KdnsServer]]:
    started: list[KdnsServer] = []
    yield started
    for s in started:
        s.stop()


def _a(host: str, port: int, qname: str = "a.example.", tcp: bool = False) -> list[str]:
    q = dns.message.make_query(qname, "A")
    query = dns.query.tcp if tcp else dns.query.udp
    r = query(q, host, port=port, timeout=3)
    assert r.rcode() == dns.rcode.NOERROR
    return sorted(rr.address for rrset in r.answer for rr in rrset)


def _silent(host: str, port: int) -> bool:
    """True when nothing answers UDP on host:port (refused or no reply in 0.3 s)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    q = dns.message.make_query("a.example.", "A").to_wire()
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        try:
            s.sendto(q, (host, port))
            s.recv(512)
        except (TimeoutError, ConnectionRefusedError):
            return True
    return False


def _hosts(ip: str) -> str:
    return f"hosts {{\n        {ip} a.example\n    }}"


def test_one_block_on_two_addresses(tmp_path: Path, running: list[KdnsServer]) -> None:
    srv = _server(f"""\
        example:53 {{
            bind 127.0.0.1 127.0.0.2
            {_hosts("192.0.2.1")}
        }}
        """, tmp_path)
    running.append(srv)
    assert sorted(lst.host for lst in srv.listeners) == ["127.0.0.1", "127.0.0.2"]
    port = srv.listeners[0].port
    assert {lst.port for lst in srv.listeners} == {port}, "one Corefile port, one port"
    for host in ("127.0.0.1", "127.0.0.2"):
        assert _a(host, port) == ["192.0.2.1"]
        assert _a(host, port, tcp=True) == ["192.0.2.1"]
    assert _silent("127.0.0.3", port)


def test_two_blocks_same_port_different_binds(tmp_path: Path,
                                              running: list[KdnsServer]) -> None:
    srv = _server(f"""\
        example:53 {{
            bind 127.0.0.1
            {_hosts("192.0.2.1")}
        }}
        example:53 {{
            bind 127.0.0.2
            {_hosts("192.0.2.2")}
        }}
        """, tmp_path)
    running.append(srv)
    port = srv.listeners[0].port
    assert _a("127.0.0.1", port) == ["192.0.2.1"]
    assert _a("127.0.0.2", port) == ["192.0.2.2"]
    assert _a("127.0.0.2", port, tcp=True) == ["192.0.2.2"]


def test_blocks_on_one_address_share_its_listener(tmp_path: Path,
                                                  running: list[KdnsServer]) -> None:
    srv = _server(f"""\
        example:53 {{
            bind 127.0.0.1
            {_hosts("192.0.2.1")}
        }}
        other:53 {{
            bind 127.0.0.1
            hosts {{
                192.0.2.9 b.other
            }}
        }}
        """, tmp_path)
    running.append(srv)
    assert len(srv.listeners) == 1
    port = srv.listeners[0].port
    assert _a("127.0.0.1", port) == ["192.0.2.1"]
    assert _a("127.0.0.1", port, "b.other.") == ["192.0.2.9"]


def test_ipv6_loopback(tmp_path: Path, running: list[KdnsServer]) -> None:
    srv = _server(f"""\
        example:53 {{
            bind ::1
            {_hosts("192.0.2.1")}
        }}
        """, tmp_path)
    running.append(srv)
    port = srv.listeners[0].port
    assert _a("::1", port) == ["192.0.2.1"]
    assert _a("::1", port, tcp=True) == ["192.0.2.1"]
    assert _silent("127.0.0.1", port)


def test_interface_name_means_its_addresses(tmp_path: Path, running: list[KdnsServer]) -> None:
    srv = _server(f"""\
        example:53 {{
            bind lo
            {_hosts("192.0.2.1")}
        }}
        """, tmp_path)
    running.append(srv)
    hosts = sorted(lst.host for lst in srv.listeners)
    assert hosts == sorted(interface_addresses()["lo"])
    assert {"127.0.0.1", "::1"} <= set(hosts)
    port = srv.listeners[0].port
    assert _a("127.0.0.1", port) == ["192.0.2.1"]
    assert _a("::1", port) == ["192.0.2.1"]


def test_except_removes_from_its_own_line(tmp_path: Path, running: list[KdnsServer]) -> None:
    srv = _server(f"""\
        example:53 {{
            bind lo {{
                except 127.0.0.1
            }}
            bind 127.0.0.2
            {_hosts("192.0.2.1")}
        }}
        """, tmp_path)
    running.append(srv)
    hosts = {lst.host for lst in srv.listeners}
    assert "127.0.0.1" not in hosts
    assert {"::1", "127.0.0.2"} <= hosts
    port = srv.listeners[0].port
    assert _a("::1", port) == ["192.0.2.1"]
    assert _a("127.0.0.2", port) == ["192.0.2.1"]
    assert _silent("127.0.0.1", port)


def test_dns_addr_is_the_default_for_blocks_without_bind(tmp_path: Path,
                                                         running: list[KdnsServer]) -> None:
    srv = _server(f"""\
        example:53 {{
            bind 127.0.0.2
            {_hosts("192.0.2.2")}
        }}
        other:53 {{
            hosts {{
                192.0.2.9 b.other
            }}
        }}
        """, tmp_path, dns_addr="127.0.0.1")
    running.append(srv)
    by_host = {lst.host: set(lst.zones) for lst in srv.listeners}
    assert by_host == {"127.0.0.2": {"example."}, "127.0.0.1": {"other."}}
    port = srv.listeners[0].port
    assert _a("127.0.0.2", port) == ["192.0.2.2"]
    assert _a("127.0.0.1", port, "b.other.") == ["192.0.2.9"]


def test_duplicate_addresses_collapse(tmp_path: Path) -> None:
    srv = _server("""\
        example:53 {
            bind 127.0.0.1 127.0.0.1
            bind 127.0.0.1
            hosts
        }
        """, tmp_path, start=False)
    assert [lst.host for lst in srv.listeners] == ["127.0.0.1"]


BAD = [
    ("bind", "at least one address or interface name is expected", 2, 5),
    ("bind nosuchif0", "not a valid IP address or interface name: 'nosuchif0'", 2, 10),
    ("bind 127.0.0.1 300.1.2.3", "not a valid IP address or interface name: '300.1.2.3'", 2, 20),
    ("bind 127.0.0.1:53", "not a valid IP address or interface name: '127.0.0.1:53'", 2, 10),
    ("bind localhost", "not a valid IP address or interface name: 'localhost'", 2, 10),
    ("bind 127.0.0.1 {\n        only 127.0.0.1\n    }", "invalid option 'only'", 3, 9),
    ("bind 127.0.0.1 {\n        except\n    }",
     "except needs at least one address or interface name", 3, 9),
    ("bind 127.0.0.1 {\n        except nosuchif0\n    }",
     "not a valid IP address or interface name: 'nosuchif0'", 3, 16),
    ("bind 127.0.0.1 {\n        except 127.0.0.1\n    }", "are all excluded", 2, 5),
]


@pytest.mark.parametrize(("line", "message", "row", "col"), BAD, ids=[b[0] for b in BAD])
def test_bad_bind_is_a_located_error(tmp_path: Path, line: str, message: str, row: int,
                                     col: int) -> None:
    with pytest.raises(ConfigError) as exc:
        _server(f"example:53 {{\n    {line}\n    hosts\n}}\n", tmp_path, start=False)
    assert str(exc.value).startswith(f"{tmp_path / 'Corefile'}:{row}:{col}: bind: ")
    assert message in str(exc.value)


def test_zone_on_every_interface_and_on_a_bound_address_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        _server("""\
            example:53 {
                hosts
            }
            example:53 {
                bind 127.0.0.1
                hosts
            }
            """, tmp_path, start=False)
    assert f"{tmp_path / 'Corefile'}:4:1: cannot serve dns://example.:0" in str(exc.value)
    assert "zone overlap" in str(exc.value)


@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 not installed")
def test_interface_addresses_match_iproute2() -> None:
    out = subprocess.run(["ip", "-j", "addr"], check=True, capture_output=True, text=True)
    want: dict[str, set[str]] = {}
    for link in json.loads(out.stdout):
        addrs = want.setdefault(link["ifname"], set())
        for a in link.get("addr_info", []):
            local = a["local"]
            if a["family"] == "inet6" and local.lower().startswith("fe80"):
                local = f"{local}%{link['ifname']}"
            addrs.add(local)
    got = {name: set(addrs) for name, addrs in interface_addresses().items()}
    assert got == want


def test_reload_adds_and_drops_addresses(tmp_path: Path, running: list[KdnsServer]) -> None:
    srv = _server(f"""\
        example:53 {{
            bind 127.0.0.1
            {_hosts("192.0.2.1")}
        }}
        """, tmp_path)
    running.append(srv)
    port = srv.listeners[0].port
    text = textwrap.dedent(f"""\
        example:53 {{
            bind 127.0.0.2
            {_hosts("192.0.2.2")}
        }}
        """)
    srv.reload(parse_corefile(text, str(tmp_path / "Corefile")))
    assert [lst.host for lst in srv.listeners] == ["127.0.0.2"]
    assert srv.listeners[0].port == port, "port 0 keeps the port it picked"
    assert _a("127.0.0.2", port) == ["192.0.2.2"]
    assert _silent("127.0.0.1", port)
