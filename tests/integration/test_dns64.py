"""dns64 over real sockets from IPv6 (::1) and IPv4 (127.0.0.1) clients, and RFC 6052's own
embedding examples."""

from __future__ import annotations

import ipaddress
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from prometheus_client import generate_latest

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.plugins.dns64.handler import to6
from kdns.server.app import KdnsServer, ServeOptions
from tests.conftest import DEMO, ROOT

KUBIA = "kubia.default.svc.cluster.local."

# RFC 6052 §2.4, Table 1: 192.0.2.33 embedded in each prefix length
RFC6052 = [
    ("2001:db8::/32", "2001:db8:c000:221::"),
    ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
    ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
    ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
    ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"),
    ("2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"),
    ("64:ff9b::/96", "64:ff9b::192.0.2.33"),
]


@pytest.mark.parametrize(("prefix", "want"), RFC6052)
def test_embedding_matches_rfc6052(prefix: str, want: str) -> None:
    got = to6(ipaddress.IPv6Network(prefix), "192.0.2.33")
    assert ipaddress.IPv6Address(got) == ipaddress.IPv6Address(want)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KdnsServer]:
    tmp = tmp_path_factory.mktemp("dns64")
    hosts = tmp / "hosts"
    hosts.write_text("192.0.2.33 v4.example.com\n198.51.100.7 both.example.com\n"
                     "2001:db8::7 both.example.com\n")
    text = textwrap.dedent(f"""\
        cluster.local:53 {{
            bind 127.0.0.1 ::1
            dns64
            kubernetes cluster.local {{
                manifests {DEMO}
            }}
        }}
        example.com:53 {{
            bind 127.0.0.1 ::1
            dns64 2001:db8:100::/40 {{
                translate_all
            }}
            hosts {hosts} example.com
        }}
        example.org:53 {{
            bind 127.0.0.1 ::1
            dns64 {{
                prefix 64:1337::/96
                allow_ipv4
            }}
            file {ROOT / "zones" / "example.org.zone"}
        }}
        """)
    srv = KdnsServer(parse_corefile(text, str(tmp / "Corefile")),
                     ServeOptions(config_dir=tmp, dns_port=0)).build()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def aaaa(server: KdnsServer, host: str, name: str) -> dns.message.Message:
    q = dns.message.make_query(name, "AAAA")
    return dns.query.udp(q, host, port=server.listeners[0].port, timeout=3)


def records(r: dns.message.Message) -> list[tuple[str, int, str]]:
    return [(dns.rdatatype.to_text(rs.rdtype), rs.ttl, rd.to_text()) for rs in r.answer
            for rd in rs]


def translated(server: KdnsServer) -> dict[str, float]:
    out = {}
    for line in generate_latest(server.registry).decode().splitlines():
        if line.startswith("coredns_dns64_requests_translated_total{"):
            label = line.split('server="', 1)[1].split('"', 1)[0]
            out[label] = float(line.split()[-1])
    return out


def test_ipv6_client_gets_synthesized_aaaa(server: KdnsServer) -> None:
    port = server.listeners[0].port
    before = translated(server).get(f"dns://[::1]:{port}", 0)
    for _ in range(2):
        r = aaaa(server, "::1", KUBIA)
        assert r.rcode() == dns.rcode.NOERROR
        # 10.98.237.175 in 64:ff9b::/96; TTL min(A 5, SOA of the NODATA 5)
        assert records(r) == [("AAAA", 5, "64:ff9b::a62:edaf")]
    assert translated(server)[f"dns://[::1]:{port}"] == before + 2, "counted every time"


def test_ipv4_client_is_not_translated_by_default(server: KdnsServer) -> None:
    r = aaaa(server, "127.0.0.1", KUBIA)
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert [rs.rdtype for rs in r.authority] == [dns.rdatatype.SOA]


def test_nxdomain_passes_unchanged(server: KdnsServer) -> None:
    r = aaaa(server, "::1", "nosuch.default.svc.cluster.local.")
    assert r.rcode() == dns.rcode.NXDOMAIN and not r.answer


def test_other_types_pass(server: KdnsServer) -> None:
    q = dns.message.make_query(KUBIA, "A")
    r = dns.query.udp(q, "::1", port=server.listeners[0].port, timeout=3)
    assert records(r) == [("A", 5, "10.98.237.175")]


def test_translate_all_and_a_40_bit_prefix(server: KdnsServer) -> None:
    # the hosts plugin has no SOA: TTL min(A TTL 3600, 600)
    r = aaaa(server, "::1", "both.example.com.")
    assert records(r) == [("AAAA", 600, to6(ipaddress.IPv6Network("2001:db8:100::/40"),
                                             "198.51.100.7"))]
    r = aaaa(server, "::1", "v4.example.com.")
    assert records(r) == [("AAAA", 600, "2001:db8:1c0:2:21::")]  # RFC 6052's own example


def test_existing_aaaa_is_kept_and_allow_ipv4(server: KdnsServer) -> None:
    for host in ("::1", "127.0.0.1"):
        r = aaaa(server, host, "www.example.org.")
        assert records(r) == [("AAAA", 3600, "2001:db8::80")], "has AAAA: not translated"
        q = dns.message.make_query("mail.example.org.", "TXT")  # the zone's NODATA SOA TTL
        nodata = dns.query.udp(q, host, port=server.listeners[0].port, timeout=3)
        soa_ttl = nodata.authority[0].ttl
        r = aaaa(server, host, "mail.example.org.")  # A 192.0.2.25 (TTL 300), no AAAA
        assert records(r) == [("AAAA", min(300, soa_ttl), "64:1337::c000:219")]


BAD = [
    ("dns64 10.0.0.0/8", "Corefile:2:11: dns64: invalid prefix '10.0.0.0/8': not an IPv6 CIDR"),
    ("dns64 nope", "Corefile:2:11: dns64: invalid prefix 'nope': not an IPv6 CIDR"),
    ("dns64 64:ff9b::/33", "Corefile:2:11: dns64: invalid prefix length '64:ff9b::/33'"),
    ("dns64 64:ff9b::/104", "Corefile:2:11: dns64: invalid prefix length '64:ff9b::/104'"),
    ("dns64 64:ff9b::/96 64:ff9b::/96", "Corefile:2:24: dns64: takes one PREFIX at most"),
    ("dns64 {\n        prefix\n    }", "Corefile:3:9: dns64: prefix needs one PREFIX"),
    ("dns64 {\n        translate_all yes\n    }",
     "Corefile:3:23: dns64: translate_all takes no argument"),
    ("dns64 {\n        allow_ipv6\n    }", "Corefile:3:9: dns64: unknown property 'allow_ipv6'"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_dns64_is_a_located_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        KdnsServer(parse_corefile(f". {{\n    {text}\n}}\n", "Corefile")).build()
    assert str(exc.value).startswith(message)


def test_readme_kops_example_sets_up(tmp_path: Path) -> None:
    readme = (ROOT / "kdns" / "plugins" / "dns64" / "README.md").read_text()
    block = readme.split("```corefile\n")[-1].split("```")[0]
    text = block.replace("pods insecure", f"pods insecure\n        manifests {DEMO}")
    assert KdnsServer(parse_corefile(text, "Corefile")).build().listeners
