"""node-cache's command line and Corefile pillars, as pure functions (no network)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kdns.nodecache import corefile
from kdns.nodecache.app import NodeCache, NodeCacheError
from kdns.nodecache.flags import FlagError, parse
from kdns.nodecache.iptables import rules_for

ROOT = Path(__file__).resolve().parents[2]
ADDON_ARGS = ["-localip", "169.254.20.10,10.96.0.10", "-conf", "/etc/Corefile",
              "-upstreamsvc", "kube-dns-upstream", "-pidfile", "/tmp/node-cache.pid"]


# -- flags ---------------------------------------------------------------------------------------


def test_the_addon_command_line_parses_with_node_caches_defaults() -> None:
    p = parse(ADDON_ARGS)
    assert p.local_ips == ("169.254.20.10", "10.96.0.10")
    assert p.local_ip_str == "169.254.20.10,10.96.0.10"
    assert p.corefile == "/etc/Corefile"
    assert p.upstream_svc == "kube-dns-upstream"
    assert p.pidfile == "/tmp/node-cache.pid"
    assert p.base_corefile == "/etc/coredns/Corefile.base"
    assert (p.setup_interface, p.setup_iptables, p.skip_teardown) == (True, True, False)
    assert (p.interface_name, p.health_port, p.local_port) == ("nodelocaldns", "8080", "53")
    assert p.sync_interval == 60.0
    assert p.metrics_listen_address == "0.0.0.0:9353"


@pytest.mark.parametrize(("args", "want"), [
    (["-syncinterval", "1s"], 1.0),  # one second, not one second times a second
    (["-syncinterval=500ms"], 0.5),
    (["--syncinterval", "2m"], 120.0),
])
def test_syncinterval_is_a_duration(args: list[str], want: float) -> None:
    assert parse(["-localip", "169.254.20.10", *args]).sync_interval == want


@pytest.mark.parametrize(("args", "want"), [
    (["-setupiptables=false"], (True, False, False)),
    (["-setupinterface=0", "-skipteardown"], (False, True, True)),
    (["-skipteardown=true", "-setupiptables=F"], (True, False, True)),
])
def test_booleans_take_gos_forms(args: list[str], want: tuple[bool, bool, bool]) -> None:
    p = parse(["-localip", "169.254.20.10", *args])
    assert (p.setup_interface, p.setup_iptables, p.skip_teardown) == want


def test_conf_wins_over_corefile_and_both_forms_of_a_value_work() -> None:
    assert parse(["-localip=169.254.20.10", "-corefile", "/a"]).corefile == "/a"
    assert parse(["-localip=169.254.20.10", "-corefile", "/a", "-conf=/b"]).corefile == "/b"


@pytest.mark.parametrize(("args", "message"), [
    ([], "invalid -localip ''"),
    (["-localip", "169.254.20.300"], "invalid -localip '169.254.20.300'"),
    (["-localip", "169.254.20.10,fd00::10"], "mixes IPv4 and IPv6"),
    (["-localip", "169.254.20.10", "-syncinterval", "60"], "invalid duration '60'"),
    (["-localip", "169.254.20.10", "-syncinterval", "0"], "must be positive"),
    (["-localip", "169.254.20.10", "-health-port", "http"], "invalid -health-port 'http'"),
    (["-localip", "169.254.20.10", "-dns.port", "70000"], "invalid -dns.port '70000'"),
    (["-localip", "169.254.20.10", "-setupiptables=yes"], "invalid boolean value 'yes'"),
    (["-localip", "169.254.20.10", "-setupebtables"], "-setupebtables is not supported"),
    (["-localip", "169.254.20.10", "-initialdelay", "10s"], "not defined: -initialdelay"),
    (["-localip", "169.254.20.10", "-interfacename", "a-very-long-name0"],
     "invalid -interfacename"),
    (["-localip", "169.254.20.10", "-metrics-listen-address", "9353"],
     "invalid -metrics-listen-address"),
    (["-localip", "169.254.20.10", "-log-level", "loud"], "invalid -log-level"),
    (["-localip"], "flag needs an argument: -localip"),
    (["-localip", "169.254.20.10", "extra"], "unexpected argument 'extra'"),
    (["---localip", "169.254.20.10"], "bad flag syntax"),
])
def test_bad_flags_are_named(args: list[str], message: str) -> None:
    with pytest.raises(FlagError, match=message.replace("(", r"\(")):
        parse(args)


def test_cli_prints_usage_and_rejects_bad_flags() -> None:
    kdns = str(Path(sys.executable).with_name("kdns"))
    res = subprocess.run([kdns, "node-cache", "-h"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0 and "-syncinterval duration" in res.stdout
    res = subprocess.run([kdns, "node-cache", "-localip", "nope"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 2
    assert res.stderr.strip() == ("kdns node-cache: invalid -localip 'nope': want "
                                  "comma-separated IP addresses, e.g. 169.254.20.10,10.96.0.10")


# -- pillars -------------------------------------------------------------------------------------

ADDON_BLOCK = """\
__PILLAR__DNS__DOMAIN__:53 {
    cache 30
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
}
.:53 {
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__UPSTREAM__SERVERS__ {
            force_tcp
    }
}
"""


def test_pillars_without_a_kube_dns_configmap() -> None:
    out = corefile.fill(ADDON_BLOCK, local_ip_str="169.254.20.10,10.96.0.10",
                        cluster_dns="10.96.0.11", kube=corefile.KubeDnsConfig(), port="53")
    assert "bind 169.254.20.10 10.96.0.10 \n" in out  # DNS__SERVER__ removed, as node-cache
    assert "forward . 10.96.0.11 {" in out
    assert "forward . /etc/resolv.conf {\n            force_tcp" in out
    # Installers fill the domain; node-cache leaves it.
    assert out.startswith("__PILLAR__DNS__DOMAIN__:53 {")


def test_custom_upstreams_turn_the_tcp_block_into_udp_and_stub_domains_append_blocks() -> None:
    kube = corefile.parse_kubedns_config({
        "upstreamNameservers": json.dumps(["192.0.2.1", "192.0.2.2:5353"]),
        "stubDomains": json.dumps({"zeta.example": ["192.0.2.9"],
                                   "acme.local": ["192.0.2.7", "[2001:db8::7]:53"]}),
    })
    out = corefile.fill(ADDON_BLOCK, local_ip_str="169.254.20.10", cluster_dns="10.96.0.11",
                        kube=kube, port="53")
    assert "\n    forward . 192.0.2.1 192.0.2.2:5353\n" in out
    assert "force_tcp" in out.split(".:53 {")[0]  # the cluster block keeps TCP
    assert "force_tcp" not in out.split(".:53 {")[1]
    tail = out.split(".:53 {")[1]
    assert tail.index("acme.local:53 {") < tail.index("zeta.example:53 {")
    assert ("\nacme.local:53 {\n    errors\n    cache 30\n    bind 169.254.20.10\n"
            "    forward . 192.0.2.7 [2001:db8::7]:53\n}\n") in tail


@pytest.mark.parametrize(("files", "message"), [
    ({"stubDomains": "{"}, "stubDomains: not JSON"),
    ({"stubDomains": '["a"]'}, "stubDomains: want"),
    ({"stubDomains": '{"bad_domain!": ["192.0.2.1"]}'}, "invalid domain name"),
    ({"stubDomains": '{"acme.local": ["ns.acme.local"]}'}, "is not an IP address"),
    ({"stubDomains": '{"acme.local": ["https://192.0.2.1"]}'}, "unsupported transport"),
    ({"upstreamNameservers": '["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]'},
     "more than three"),
    ({"upstreamNameservers": '["192.0.2.1:99999"]'}, "invalid port"),
    ({"upstreamNameservers": '{"a": 1}'}, "upstreamNameservers: want"),
])
def test_a_bad_kube_dns_configmap_is_refused(files: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        corefile.parse_kubedns_config(files)


def test_service_env_names_follow_the_kubelet() -> None:
    assert corefile.svc_env("kube-dns-upstream") == "KUBE_DNS_UPSTREAM_SERVICE_HOST"


def _params(tmp_path: Path, *extra: str) -> NodeCache:
    base = tmp_path / "Corefile.base"
    if not base.exists():
        base.write_text(ADDON_BLOCK.replace("__PILLAR__DNS__DOMAIN__", "cluster.local"))
    p = parse(["-localip", "169.254.20.10,10.96.0.10", "-conf", str(tmp_path / "Corefile"),
               "-basecorefile", str(base), "-upstreamsvc", "kube-dns-upstream",
               "-kubednscm", str(tmp_path / "kube-dns"), *extra])
    return NodeCache(p, environ={"KUBE_DNS_UPSTREAM_SERVICE_HOST": "10.96.0.11"})


def test_corefile_is_rewritten_only_when_its_inputs_change(tmp_path: Path) -> None:
    (tmp_path / "kube-dns").mkdir()
    nc = _params(tmp_path)
    assert nc.write_corefile() is True
    assert "forward . 10.96.0.11 {" in (tmp_path / "Corefile").read_text()
    assert nc.write_corefile() is False
    (tmp_path / "kube-dns" / "upstreamNameservers").write_text('["192.0.2.1"]')
    assert nc.write_corefile() is True
    assert "forward . 192.0.2.1\n" in (tmp_path / "Corefile").read_text()
    # A broken ConfigMap keeps what was served and counts a set-up error.
    (tmp_path / "kube-dns" / "upstreamNameservers").write_text('["not an address"]')
    assert nc.write_corefile() is False
    assert "forward . 192.0.2.1\n" in (tmp_path / "Corefile").read_text()
    assert nc.setup_errors.labels("configmap")._value.get() == 1


def test_a_missing_upstream_service_address_is_a_clear_error(tmp_path: Path) -> None:
    nc = _params(tmp_path)
    nc.cluster_dns = ""
    with pytest.raises(NodeCacheError, match="KUBE_DNS_UPSTREAM_SERVICE_HOST is not set"):
        nc.render()
    nc2 = _params(tmp_path, "-basecorefile", str(tmp_path / "missing"))
    with pytest.raises(NodeCacheError, match="cannot read -basecorefile"):
        nc2.render()


def test_the_shipped_base_corefile_fills_and_loads(tmp_path: Path) -> None:
    from kdns.config.parser import parse_corefile

    base = (ROOT / "deploy" / "nodelocal" / "Corefile.base").read_text()
    out = corefile.fill(base, local_ip_str="169.254.20.10,10.96.0.10", cluster_dns="10.96.0.11",
                        kube=corefile.KubeDnsConfig(), port="53")
    assert "__PILLAR__" not in out
    assert [b.keys[0].zone for b in parse_corefile(out, "Corefile")] == [
        "cluster.local.", "in-addr.arpa.", "ip6.arpa.", "."]


def test_iptables_rules_are_node_caches_twelve_per_address() -> None:
    rules = rules_for(("169.254.20.10", "10.96.0.10"), "53", "8080")
    assert len(rules) == 24 and len(set(rules)) == 24
    first = [(r.table, r.chain) for r in rules[:12]]
    assert first.count(("raw", "PREROUTING")) == 2 and first.count(("filter", "INPUT")) == 2
    assert first.count(("raw", "OUTPUT")) == 6 and first.count(("filter", "OUTPUT")) == 2
    assert all("8080" in r.args for r in rules[10:12])


def test_missing_iptables_is_a_clear_start_up_error(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither ip nor iptables to be found
    nc = _params(tmp_path)
    with pytest.raises(NodeCacheError, match=r"'iptables' not found on PATH: install it "
                                             r"\(Debian package iptables\)"):
        nc.prepare()
    nc = _params(tmp_path, "-setupiptables=false")
    with pytest.raises(NodeCacheError, match=r"'ip' not found on PATH: install it "
                                             r"\(Debian package iproute2\)"):
        nc.prepare()
