"""``kdns node-cache`` on a simulated node: two network namespaces the test creates.

- ``node``: where the cache runs and where Pods' queries come from. A kube-proxy stand-in
  DNATs the kube-dns (10.96.0.10) and kube-dns-upstream (10.96.0.11) ClusterIPs to the
  cluster DNS, as kube-proxy's iptables mode does, so the cache's NOTRACK rules are what take
  those queries off the DNAT path, exactly as on a real node.
- ``cluster``: the cluster DNS (a kdns serving the demo cluster) on the Pod IP 10.200.0.2, and
  a dnsmasq on 10.200.0.53 standing in for the node's upstream resolvers.

The cache runs the shipped ``deploy/nodelocal`` base Corefile, with the kube-dns ConfigMap
pointing external names at the dnsmasq. Nothing here touches the host's network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from kdns.plugins import registry
from tests.netns import Netns, can_use_netns

ROOT = Path(__file__).resolve().parents[2]
KDNS = str(Path(sys.executable).with_name("kdns"))
BASE_COREFILE = ROOT / "deploy" / "nodelocal" / "Corefile.base"
DEMO = ROOT / "zones" / "demo"
LINK_LOCAL = "169.254.20.10"
KUBE_DNS = "10.96.0.10"
KUBE_DNS_UPSTREAM = "10.96.0.11"
CLUSTER_DNS_POD = "10.200.0.2"
UPSTREAM = "10.200.0.53"
SERVICE = "kubia.default.svc.cluster.local."
SERVICE_IP = "10.98.237.175"
EXTERNAL = "www.example.org."
EXTERNAL_IP = "192.0.2.80"

why_not = can_use_netns() or (None if shutil.which("dnsmasq") else "dnsmasq is not installed")
pytestmark = pytest.mark.skipif(why_not is not None, reason=why_not or "")


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def ask(ns: Netns, server: str, qname: str, qtype: str = "A", *, tcp: bool = False,
        timeout: float = 2.0) -> dns.message.Message:
    q = dns.message.make_query(qname, qtype)
    if tcp:
        return ns.run(lambda: dns.query.tcp(q, server, timeout=timeout))
    return ns.run(lambda: dns.query.udp(q, server, timeout=timeout))


def addresses(reply: dns.message.Message) -> set[str]:
    return {rr.address for rrset in reply.answer for rr in rrset if hasattr(rr, "address")}


def answers(ns: Netns, server: str, qname: str) -> bool:
    try:
        return bool(addresses(ask(ns, server, qname, timeout=0.5)))
    except (OSError, dns.exception.DNSException):
        return False


def metric(ns: Netns, url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    text = ns.run(lambda: urllib.request.urlopen(url, timeout=3).read().decode())
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


@dataclass
class Node:
    node: Netns
    cluster: Netns
    tmp: Path

    def rules(self) -> str:
        return "".join(self.node.exec("iptables", "-t", t, "-S").stdout for t in ("raw", "filter"))

    def link(self) -> str:
        return self.node.ip("-o", "addr", "show", "dev", "nodelocaldns", check=False).stdout


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("nodecache")
    node, cluster = Netns("nc-node"), Netns("nc-cluster")
    procs: list[subprocess.Popen[str]] = []
    try:
        node.ip("link", "add", "veth-n", "type", "veth", "peer", "name", "veth-c",
                "netns", cluster.name)
        node.ip("addr", "add", "10.200.0.1/24", "dev", "veth-n")
        node.ip("link", "set", "veth-n", "up")
        cluster.ip("addr", "add", f"{CLUSTER_DNS_POD}/24", "dev", "veth-c")
        cluster.ip("addr", "add", f"{UPSTREAM}/32", "dev", "veth-c")
        cluster.ip("link", "set", "veth-c", "up")
        node.ip("route", "add", "10.96.0.0/12", "via", CLUSTER_DNS_POD)
        # kube-proxy (iptables mode) for the two Services, for locally sent packets.
        for svc in (KUBE_DNS, KUBE_DNS_UPSTREAM):
            for proto in ("udp", "tcp"):
                node.exec("iptables", "-t", "nat", "-A", "OUTPUT", "-d", svc, "-p", proto,
                          "--dport", "53", "-j", "DNAT", "--to-destination",
                          f"{CLUSTER_DNS_POD}:53")
        corefile = tmp / "cluster-dns.Corefile"
        corefile.write_text(f""".:53 {{
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        manifests {DEMO}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    prometheus {CLUSTER_DNS_POD}:9153
}}
""")
        procs.append(subprocess.Popen(
            cluster.argv(KDNS, "serve", "--conf", str(corefile), "--dns-addr", CLUSTER_DNS_POD,
                         "--log-level", "warning"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True))
        procs.append(subprocess.Popen(
            cluster.argv("dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--pid-file=",
                         "--no-resolv", "--no-hosts", f"--listen-address={UPSTREAM}",
                         "--bind-interfaces", "--user=root",
                         f"--host-record={EXTERNAL.rstrip('.')},{EXTERNAL_IP}"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True))
        wait_for(lambda: answers(node, KUBE_DNS, SERVICE), 20, "cluster DNS via kube-dns IP")
        wait_for(lambda: answers(node, UPSTREAM, EXTERNAL), 10, "dnsmasq")
        yield Node(node, cluster, tmp)
    finally:
        for p in procs:
            _stop(p)
        node.delete()
        cluster.delete()


class Cache:
    """One ``kdns node-cache`` process on the node, transparent mode (both local IPs)."""

    def __init__(self, net: Node, name: str, *extra: str, lameduck: str = "") -> None:
        self.dir = net.tmp / name
        self.dir.mkdir()
        base = BASE_COREFILE.read_text()
        if lameduck:
            base = base.replace(f"health {LINK_LOCAL}:8080\n",
                                f"health {LINK_LOCAL}:8080 {{\n        lameduck {lameduck}\n    }}\n")
            assert "lameduck" in base
        if "bind" not in registry.IMPLEMENTED:
            base = re.sub(r"(?m)^\s*bind .*\n", "", base)
        (self.dir / "coredns").mkdir()
        (self.dir / "coredns" / "Corefile.base").write_text(base)
        (self.dir / "kube-dns").mkdir()
        (self.dir / "kube-dns" / "upstreamNameservers").write_text(json.dumps([UPSTREAM]))
        self.pidfile = self.dir / "node-cache.pid"
        self.log = self.dir / "log"
        env = dict(os.environ, KUBE_DNS_UPSTREAM_SERVICE_HOST=KUBE_DNS_UPSTREAM)
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                net.node.argv(KDNS, "node-cache", "-localip", f"{LINK_LOCAL},{KUBE_DNS}",
                              "-conf", str(self.dir / "Corefile"),
                              "-basecorefile", str(self.dir / "coredns" / "Corefile.base"),
                              "-kubednscm", str(self.dir / "kube-dns"),
                              "-upstreamsvc", "kube-dns-upstream", "-syncinterval", "1s",
                              "-metrics-listen-address", "127.0.0.1:9353",
                              "-pidfile", str(self.pidfile), *extra),
                stdout=out, stderr=subprocess.STDOUT, env=env, text=True)
        self.net = net

    def wait_ready(self) -> None:
        """Serving, and the rules are in place (they go in right after the pidfile)."""
        def ready() -> bool:
            assert self.proc.poll() is None, f"node-cache exited:\n{self.log.read_text()}"
            rules = self.net.rules()
            return self.pidfile.exists() and rules.count(f" {KUBE_DNS}/32 ") == 12 \
                and rules.count(f" {LINK_LOCAL}/32 ") == 12

        wait_for(ready, 30, "node-cache ready")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def close(self) -> None:
        _stop(self.proc)


@pytest.fixture
def cache(net: Node) -> Iterator[Callable[..., Cache]]:
    made: list[Cache] = []

    def start(*extra: str, lameduck: str = "") -> Cache:
        c = Cache(net, f"cache{len(os.listdir(net.tmp))}", *extra, lameduck=lameduck)
        made.append(c)
        return c

    yield start
    for c in made:
        c.close()
    # Whatever a test did, the next one starts from a node without the cache's set-up.
    net.node.ip("link", "del", "nodelocaldns", check=False)
    for table in ("raw", "filter"):
        net.node.exec("iptables", "-t", table, "-F")


# node-cache's rules for one local IP, as `iptables -S` prints them.
RULES_FOR_LINK_LOCAL = [
    "-A PREROUTING -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -j NOTRACK",
    "-A PREROUTING -d 169.254.20.10/32 -p udp -m udp --dport 53 -j NOTRACK",
    "-A OUTPUT -s 169.254.20.10/32 -p tcp -m tcp --sport 53 -j NOTRACK",
    "-A OUTPUT -s 169.254.20.10/32 -p udp -m udp --sport 53 -j NOTRACK",
    "-A OUTPUT -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -j NOTRACK",
    "-A OUTPUT -d 169.254.20.10/32 -p udp -m udp --dport 53 -j NOTRACK",
    "-A OUTPUT -d 169.254.20.10/32 -p tcp -m tcp --dport 8080 -j NOTRACK",
    "-A OUTPUT -s 169.254.20.10/32 -p tcp -m tcp --sport 8080 -j NOTRACK",
    "-A INPUT -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -j ACCEPT",
    "-A INPUT -d 169.254.20.10/32 -p udp -m udp --dport 53 -j ACCEPT",
    "-A OUTPUT -s 169.254.20.10/32 -p tcp -m tcp --sport 53 -j ACCEPT",
    "-A OUTPUT -s 169.254.20.10/32 -p udp -m udp --sport 53 -j ACCEPT",
]


def test_interface_rules_and_answers_through_the_cache(net: Node,
                                                       cache: Callable[..., Cache]) -> None:
    c = cache()
    c.wait_ready()
    link = net.link()
    assert f"inet {LINK_LOCAL}/32" in link and f"inet {KUBE_DNS}/32" in link
    rules = net.rules().splitlines()
    for rule in RULES_FOR_LINK_LOCAL:
        assert rules.count(rule) == 1, rule
    assert sum(KUBE_DNS in r for r in rules) == len(RULES_FOR_LINK_LOCAL)
    if "bind" in registry.IMPLEMENTED:  # the addon's bind: only the two local IPs
        served = c.log.read_text()
        assert f"listening on udp+tcp {LINK_LOCAL}:53" in served
        assert f"listening on udp+tcp {KUBE_DNS}:53" in served
        assert "listening on udp+tcp *:53" not in served
    written = (c.dir / "Corefile").read_text()
    assert f"forward . {KUBE_DNS_UPSTREAM} {{" in written and "__PILLAR__" not in written
    assert f"forward . {UPSTREAM}\n" in written

    cluster_metrics = f"http://{CLUSTER_DNS_POD}:9153/metrics"
    name = "coredns_dns_requests_total"
    before = {p: metric(net.node, cluster_metrics, name, proto=p) for p in ("udp", "tcp")}
    for server in (LINK_LOCAL, KUBE_DNS):
        assert addresses(ask(net.node, server, SERVICE)) == {SERVICE_IP}
        assert addresses(ask(net.node, server, SERVICE, tcp=True)) == {SERVICE_IP}
        assert addresses(ask(net.node, server, EXTERNAL)) == {EXTERNAL_IP}
    r = ask(net.node, LINK_LOCAL, "nosuch.default.svc.cluster.local.")
    assert r.rcode() == dns.rcode.NXDOMAIN
    after = {p: metric(net.node, cluster_metrics, name, proto=p) for p in ("udp", "tcp")}
    # The cache asked the cluster DNS over TCP only (force_tcp), once per distinct question.
    assert after["udp"] == before["udp"]
    assert after["tcp"] - before["tcp"] >= 2
    cached = metric(net.node, "http://127.0.0.1:9253/metrics", "coredns_cache_hits_total")
    assert cached >= 4
    # node-cache's own set-up error counter, on -metrics-listen-address: no errors here.
    own = net.node.run(lambda: urllib.request.urlopen("http://127.0.0.1:9353/metrics",
                                                      timeout=3).read().decode())
    assert "# TYPE coredns_nodecache_setup_errors_total counter" in own
    assert metric(net.node, "http://127.0.0.1:9353/metrics",
                  "coredns_nodecache_setup_errors_total") == 0


def test_removed_rules_and_interface_come_back(net: Node, cache: Callable[..., Cache]) -> None:
    c = cache()
    c.wait_ready()
    net.node.exec("iptables", "-t", "raw", "-D", "PREROUTING", "-p", "udp", "-d", LINK_LOCAL,
                  "--dport", "53", "-j", "NOTRACK")
    net.node.exec("iptables", "-t", "filter", "-D", "INPUT", "-p", "tcp", "-d", KUBE_DNS,
                  "--dport", "53", "-j", "ACCEPT")
    assert RULES_FOR_LINK_LOCAL[1] not in net.rules().splitlines()
    wait_for(lambda: RULES_FOR_LINK_LOCAL[1] in net.rules().splitlines()
             and f"-A INPUT -d {KUBE_DNS}/32 -p tcp -m tcp --dport 53 -j ACCEPT" in net.rules(),
             10, "deleted rules restored")
    net.node.ip("link", "del", "nodelocaldns")
    wait_for(lambda: f"inet {LINK_LOCAL}/32" in net.link() and f"inet {KUBE_DNS}/32"
             in net.link(), 10, "interface restored")
    wait_for(lambda: answers(net.node, LINK_LOCAL, SERVICE), 10, "answers after restore")
    assert "added back iptables rule -t raw PREROUTING -p udp -d 169.254.20.10" in c.log.read_text()


def test_sigterm_tears_down_and_the_kube_dns_ip_reaches_the_cluster_dns(
        net: Node, cache: Callable[..., Cache]) -> None:
    c = cache()
    c.wait_ready()
    assert c.stop() == 0, c.log.read_text()
    assert net.link() == ""
    assert LINK_LOCAL not in net.rules() and KUBE_DNS not in net.rules()
    assert not c.pidfile.exists()
    # The kube-proxy path again: the cluster DNS answers the kube-dns IP.
    assert addresses(ask(net.node, KUBE_DNS, SERVICE)) == {SERVICE_IP}


def test_teardown_waits_for_the_lameduck_period(net: Node, cache: Callable[..., Cache]) -> None:
    c = cache(lameduck="2s")
    c.wait_ready()
    c.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    # Still in lameduck: rules and interface in place, and the cache still answers.
    assert c.proc.poll() is None
    assert net.rules().count(f" {LINK_LOCAL}/32 ") == 12 and f"inet {LINK_LOCAL}/32" in net.link()
    assert addresses(ask(net.node, LINK_LOCAL, SERVICE)) == {SERVICE_IP}
    assert c.proc.wait(timeout=30) == 0, c.log.read_text()
    assert net.link() == "" and LINK_LOCAL not in net.rules()


def test_skipteardown_leaves_the_set_up_in_place(net: Node, cache: Callable[..., Cache]) -> None:
    c = cache("-skipteardown")
    c.wait_ready()
    assert c.stop() == 0, c.log.read_text()
    assert f"inet {LINK_LOCAL}/32" in net.link()
    assert net.rules().count(f" {LINK_LOCAL}/32 ") == 12


def test_zero_failed_queries_across_a_restart_in_transparent_mode(
        net: Node, cache: Callable[..., Cache]) -> None:
    """Pods keep asking the kube-dns IP while the cache is replaced: while it is away the
    queries take kube-proxy's path to the cluster DNS, then come back to the new cache."""
    first = cache()
    first.wait_ready()
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0, "retried": 0}
    errors: list[str] = []

    def load() -> None:
        # A resolver's behaviour: 1 s timeout, 3 attempts; about 200 queries a second at most,
        # and never beyond 60 s.
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            q = dns.message.make_query(SERVICE, "A")
            for _attempt in range(3):
                try:
                    r = dns.query.udp(q, KUBE_DNS, timeout=1.0)
                except (OSError, dns.exception.DNSException) as err:
                    last = repr(err)
                    counts["retried"] += 1
                    continue
                if r.rcode() == dns.rcode.NOERROR and addresses(r) == {SERVICE_IP}:
                    counts["ok"] += 1
                    break
                last = f"rcode {dns.rcode.to_text(r.rcode())} {addresses(r)}"
            else:
                counts["failed"] += 1
                errors.append(last)
            time.sleep(0.005)

    loader = threading.Thread(target=lambda: net.node.run(load), daemon=True)
    loader.start()
    try:
        time.sleep(1.0)
        assert first.stop() == 0, first.log.read_text()
        assert net.link() == ""
        ok_gone = counts["ok"]
        time.sleep(0.5)
        # No cache on the node now: these answers came through kube-proxy's path.
        assert counts["ok"] > ok_gone
        second = cache()
        second.wait_ready()
        ok_back = counts["ok"]
        time.sleep(1.5)
        assert counts["ok"] > ok_back
    finally:
        stop.set()
        loader.join(timeout=10)
    served_by_second = metric(net.node, "http://127.0.0.1:9253/metrics",
                              "coredns_dns_requests_total")
    assert counts["failed"] == 0, (counts, errors[:5])
    assert counts["ok"] > 100
    assert served_by_second > 0, "the new cache never answered the kube-dns IP"


def test_without_net_admin_it_says_so(net: Node, tmp_path: Path) -> None:
    base = tmp_path / "Corefile.base"
    base.write_text(".:53 {\n    errors\n}\n")
    res = net.node.exec(
        "setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin", KDNS, "node-cache",
        "-localip", LINK_LOCAL, "-conf", str(tmp_path / "Corefile"), "-basecorefile", str(base),
        check=False)
    assert res.returncode == 2, res.stderr
    assert "CAP_NET_ADMIN" in res.stderr and "NET_ADMIN" in res.stderr
    assert "Traceback" not in res.stderr
    assert net.link() == ""


def test_a_bad_corefile_stops_before_any_rule_and_removes_the_interface(
        net: Node, tmp_path: Path) -> None:
    base = tmp_path / "Corefile.base"
    base.write_text(".:53 {\n    errors\n    frobnicate\n}\n")
    res = net.node.exec(KDNS, "node-cache", "-localip", LINK_LOCAL, "-conf",
                        str(tmp_path / "Corefile"), "-basecorefile", str(base), check=False)
    assert res.returncode == 2, res.stderr
    assert f"{tmp_path / 'Corefile'}:3:5: unknown directive 'frobnicate'" in res.stderr
    assert net.link() == "" and LINK_LOCAL not in net.rules()


def test_a_second_instance_that_fails_leaves_the_running_one_alone(
        net: Node, cache: Callable[..., Cache], tmp_path: Path) -> None:
    running = cache()
    running.wait_ready()
    base = tmp_path / "Corefile.base"
    base.write_text(".:53 {\n    frobnicate\n}\n")
    res = net.node.exec(KDNS, "node-cache", "-localip", f"{LINK_LOCAL},{KUBE_DNS}", "-conf",
                        str(tmp_path / "Corefile"), "-basecorefile", str(base), check=False)
    assert res.returncode == 2, res.stderr
    assert f"inet {LINK_LOCAL}/32" in net.link()
    assert net.rules().count(f" {LINK_LOCAL}/32 ") == 12
    assert addresses(ask(net.node, LINK_LOCAL, SERVICE)) == {SERVICE_IP}


def test_ipv6_local_address_uses_ip6tables(net: Node, tmp_path: Path) -> None:
    local = "fd00:20::10"
    base = tmp_path / "Corefile.base"
    base.write_text(".:53 {\n    errors\n    cache 30\n    bind __PILLAR__LOCAL__DNS__\n"
                    "    forward . __PILLAR__UPSTREAM__SERVERS__\n}\n")
    kube_dns_cm = tmp_path / "kube-dns"
    kube_dns_cm.mkdir()
    (kube_dns_cm / "upstreamNameservers").write_text(json.dumps([UPSTREAM]))
    pidfile = tmp_path / "pid"
    log = tmp_path / "log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            net.node.argv(KDNS, "node-cache", "-localip", local, "-conf",
                          str(tmp_path / "Corefile"), "-basecorefile", str(base), "-kubednscm",
                          str(kube_dns_cm), "-pidfile", str(pidfile),
                          "-metrics-listen-address", "127.0.0.1:0"),
            stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        def rules6() -> str:
            return "".join(net.node.exec("ip6tables", "-t", t, "-S").stdout
                           for t in ("raw", "filter"))

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            return pidfile.exists() and rules6().count(f" {local}/128 ") == 12

        wait_for(ready, 30, "IPv6 cache ready")
        assert f"inet6 {local}/128" in net.link()
        assert addresses(ask(net.node, local, EXTERNAL)) == {EXTERNAL_IP}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert local not in rules6() and net.link() == ""
    finally:
        _stop(proc)
        net.node.ip("link", "del", "nodelocaldns", check=False)
