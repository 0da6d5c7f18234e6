"""autopath and loop over real sockets.

autopath: a kdns serving manifests with ``pods verified`` and ``autopath @kubernetes``, asked by
dnspython from different 127.0.0.x source addresses, each the IP of a pod in some namespace (or
of none, of a hostNetwork pod, of two pods in different namespaces). Also that the fast path of
precomputed replies and the cache (which runs before autopath, as in CoreDNS) never hand one
client's completed answer to another.

loop: kdns forwarding to itself (and two kdns forwarding to each other) must halt with CoreDNS's
message; ``kdns serve`` must exit non-zero; a block without a loop must not.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from kdns.plugins import registry
from kdns.plugins.autopath import setup as apsetup
from kdns.plugins.autopath.handler import AutopathHandler
from kdns.plugins.kubernetes import setup as ksetup
from kdns.plugins.loop import handler as loop_handler
from kdns.plugins.loop.handler import LoopHandler
from kdns.server.app import KdnsServer
from tests.conftest import start_server
from tests.ports import free_dns_port

SHOP = "127.0.0.2"
DEV = "127.0.0.3"
HOSTNET = "127.0.0.4"
REUSED = "127.0.0.5"
UNKNOWN = "127.0.0.6"
PENDING = "127.0.0.7"

NAMESPACES = "".join(
    f"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
    for ns in ("default", "shop", "dev")
)


def service(ns: str, name: str, ip: str) -> str:
    return textwrap.dedent(f"""\
        ---
        apiVersion: v1
        kind: Service
        metadata:
          name: {name}
          namespace: {ns}
        spec:
          type: ClusterIP
          clusterIP: {ip}
          clusterIPs: [{ip}]
          ports:
          - name: http
            port: 80
            protocol: TCP
        """)


def pod(ns: str, name: str, ip: str, *, phase: str = "Running",
        host_network: bool = False) -> str:
    return textwrap.dedent(f"""\
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: {name}
          namespace: {ns}
        spec:
          hostNetwork: {"true" if host_network else "false"}
          containers:
          - name: app
            image: busybox
        status:
          phase: {phase}
          podIP: {ip}
          podIPs: [{{ip: {ip}}}]
        """)


CLUSTER = (
    NAMESPACES
    + service("default", "kubia", "10.96.0.10")
    + service("dev", "db", "10.96.0.20")
    + pod("shop", "client-shop", SHOP)
    + pod("dev", "client-dev", DEV)
    + pod("shop", "node-agent", HOSTNET, host_network=True)
    # An IP that two namespaces claim (reused before the old pod's deletion was seen).
    + pod("shop", "old-owner", REUSED)
    + pod("dev", "new-owner", REUSED)
    + pod("shop", "starting", PENDING, phase="Pending")
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KdnsServer]:
    tmp = tmp_path_factory.mktemp("autopath")
    (tmp / "cluster").mkdir()
    (tmp / "cluster" / "objects.yaml").write_text(CLUSTER)
    host = tmp / "host-resolv.conf"
    host.write_text("nameserver 10.0.0.10\nsearch corp.example.com\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry.IMPLEMENTED, "autopath", "kdns.plugins.autopath.setup")
        mp.setattr(apsetup, "HOST_RESOLV_CONF", host)
        mp.setattr(ksetup, "local_addresses", lambda: ("192.0.2.1",))
        srv = start_server(f"""\
            cluster.local:53 {{
                autopath @kubernetes
                cache 30
                kubernetes cluster.local {{
                    manifests {tmp / "cluster"}
                    pods verified
                    ttl 30
                }}
            }}
            """, tmp)
    try:
        yield srv
    finally:
        srv.stop()


def ask(srv: KdnsServer, qname: str, source: str, qtype: str = "A",
        tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(qname, qtype)
    port = srv.listeners[0].port
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, source=source, timeout=3)
    return dns.query.udp(q, "127.0.0.1", port=port, source=source, timeout=3)


def records(msg: dns.message.Message) -> list[tuple[str, str, str]]:
    return [(str(rrset.name), dns.rdatatype.to_text(rrset.rdtype), rd.to_text())
            for rrset in msg.answer for rd in rrset]


KUBIA_FROM_SHOP = "kubia.default.shop.svc.cluster.local."
COMPLETED = [
    (KUBIA_FROM_SHOP, "CNAME", "kubia.default.svc.cluster.local."),
    ("kubia.default.svc.cluster.local.", "A", "10.96.0.10"),
]


def autopath_handler(srv: KdnsServer) -> AutopathHandler:
    return next(h for h in srv.handlers() if isinstance(h, AutopathHandler))


def test_pod_gets_the_completed_answer(server: KdnsServer) -> None:
    before = sum(autopath_handler(server).success_total.values())
    r = ask(server, KUBIA_FROM_SHOP, SHOP)
    assert r.rcode() == dns.rcode.NOERROR
    assert records(r) == COMPLETED
    assert str(r.question[0].name) == KUBIA_FROM_SHOP
    assert r.answer[0].ttl == 30 and r.flags & dns.flags.AA
    assert sum(autopath_handler(server).success_total.values()) == before + 1


def test_over_tcp_too(server: KdnsServer) -> None:
    assert records(ask(server, KUBIA_FROM_SHOP, SHOP, tcp=True)) == COMPLETED


def test_each_namespace_gets_its_own_search_path(server: KdnsServer) -> None:
    r = ask(server, "kubia.default.dev.svc.cluster.local", DEV)
    assert records(r)[0] == ("kubia.default.dev.svc.cluster.local.", "CNAME",
                             "kubia.default.svc.cluster.local.")
    # Not under dev's first search element: the resolver's own NXDOMAIN, untouched.
    assert ask(server, KUBIA_FROM_SHOP, DEV).rcode() == dns.rcode.NXDOMAIN
    # A name of the client's own namespace needs no help.
    r = ask(server, "db.dev.svc.cluster.local", DEV)
    assert records(r) == [("db.dev.svc.cluster.local.", "A", "10.96.0.20")]


@pytest.mark.parametrize("client", [UNKNOWN, HOSTNET, REUSED, PENDING])
def test_clients_of_unknown_namespace_are_never_autopathed(server: KdnsServer,
                                                           client: str) -> None:
    r = ask(server, KUBIA_FROM_SHOP, client)
    assert r.rcode() == dns.rcode.NXDOMAIN and r.answer == []
    r = ask(server, "kubia.default.dev.svc.cluster.local", client)
    assert r.rcode() == dns.rcode.NXDOMAIN


def test_fast_path_does_not_leak_between_clients(server: KdnsServer) -> None:
    # Each order, several times: a stored reply would be replayed to the other client.
    for qname in ("kubia.default.svc.shop.svc.cluster.local.", "Kubia.Default.shop.svc.cluster.local."):
        for _ in range(3):
            assert ask(server, qname, UNKNOWN).rcode() == dns.rcode.NXDOMAIN
            r = ask(server, qname, SHOP)
            assert r.rcode() == dns.rcode.NOERROR
            assert records(r)[0][:2] == (qname, "CNAME")
            assert ask(server, qname, DEV).rcode() == dns.rcode.NXDOMAIN


def test_answers_that_do_not_depend_on_the_client_stay_in_the_fast_path(
        server: KdnsServer) -> None:
    counters = server.listeners[0].udp.dispatcher.counters  # type: ignore[union-attr]
    for qname in ("kubia.default.svc.cluster.local", "nope.cluster.local"):
        ask(server, qname, SHOP)
        slow = counters.slow
        for client in (SHOP, DEV, UNKNOWN):
            ask(server, qname, client)
        assert counters.slow == slow  # all three answered from the fast path


def test_nodata_ends_the_walk(server: KdnsServer) -> None:
    r = ask(server, KUBIA_FROM_SHOP, SHOP, qtype="AAAA")
    assert r.rcode() == dns.rcode.NOERROR and r.answer == []
    assert str(r.question[0].name) == KUBIA_FROM_SHOP
    assert [dns.rdatatype.to_text(a.rdtype) for a in r.authority] == ["SOA"]


def test_a_fully_negative_walk_is_the_original_nxdomain(server: KdnsServer) -> None:
    # The last steps (corp.example.com, the bare name) have no plugin in this cluster-only
    # block: they count as misses instead of turning the answer into SERVFAIL.
    r = ask(server, "nothing.shop.svc.cluster.local", SHOP)
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert str(r.question[0].name) == "nothing.shop.svc.cluster.local."
    assert [dns.rdatatype.to_text(a.rdtype) for a in r.authority] == ["SOA"]


# -- loop --------------------------------------------------------------------------------------------


@pytest.fixture
def loop_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.IMPLEMENTED, "loop", "kdns.plugins.loop.setup")
    monkeypatch.setitem(registry.IMPLEMENTED, "forward", "kdns.plugins.forward.setup")
    monkeypatch.setattr(ksetup, "local_addresses", lambda: ("192.0.2.1",))


def test_forwarding_to_itself_halts_the_server(tmp_path: Path, loop_registry: None) -> None:
    port = free_dns_port()
    srv = start_server(f"""\
        .:{port} {{
            loop
            forward . 127.0.0.1:{port}
        }}
        """, tmp_path)
    try:
        assert srv.wait(10), "the loop was not detected"
        msg = srv.fatal_message or ""
        loop = next(h for h in srv.handlers() if isinstance(h, LoopHandler))
        assert msg.startswith("plugin/loop: Loop (127.0.0.1:")
        assert (f" -> 127.0.0.1:{port}) detected for zone \".\", see "
                "https://coredns.io/plugins/loop#troubleshooting. "
                f'Query: "HINFO {loop.qname}"') in msg
        assert msg.endswith(f"(forward sends it to this server's own listener 127.0.0.1:{port})")
    finally:
        srv.stop()


def _port_below_ephemeral() -> int:
    """A UDP and TCP port on 127.0.0.1 that is free now and that the kernel never hands out as
    an ephemeral source port (those come from ip_local_port_range, 32768-60999 by default)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, max(10001, low))
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port below the ephemeral range")


def test_two_servers_forwarding_to_each_other(tmp_path: Path, loop_registry: None) -> None:
    # Below the kernel's ephemeral range: a's forward sockets take ephemeral ports, and one of
    # them could otherwise land on pb, freed by free_dns_port(), before b binds it.
    pa, pb = _port_below_ephemeral(), _port_below_ephemeral()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_server(f".:{pa} {{\n loop\n forward . 127.0.0.1:{pb}\n}}\n", tmp_path / "a")
    try:
        b = start_server(f".:{pb} {{\n loop\n forward . 127.0.0.1:{pa}\n}}\n", tmp_path / "b")
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not (a.fatal_message or b.fatal_message):
                time.sleep(0.02)
            msg = a.fatal_message or b.fatal_message or ""
            assert "detected for zone \".\"" in msg
            assert "forward upstreams: 127.0.0.1:" in msg
        finally:
            b.stop()
    finally:
        a.stop()


class Upstream:
    """A real upstream on 127.0.0.1 that answers every query NXDOMAIN (no loop behind it)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.asked: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, client = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            q = dns.message.from_wire(data)
            self.asked.append(f"{dns.rdatatype.to_text(q.question[0].rdtype)} "
                              f"{q.question[0].name}")
            r = dns.message.make_response(q)
            r.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(r.to_wire(), client)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_no_loop_no_halt(tmp_path: Path, loop_registry: None,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop_handler, "GRACE", 0.1)
    up = Upstream()
    try:
        srv = start_server(f".:53 {{\n loop\n forward . 127.0.0.1:{up.port}\n}}\n", tmp_path)
        try:
            loop = next(h for h in srv.handlers() if isinstance(h, LoopHandler))
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not loop.off:
                time.sleep(0.02)
            assert loop.off and loop.seen == 1 and loop.detected is None
            assert up.asked == [f"HINFO {loop.qname}"]
            assert srv.fatal_message is None and not srv.wait(0)
        finally:
            srv.stop()
    finally:
        up.close()


def test_probe_of_a_cluster_zone_is_answered_before_loop(tmp_path: Path, loop_registry: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """kubernetes runs before loop (plugin.cfg order): its zone's probe never reaches loop."""
    monkeypatch.setattr(loop_handler, "GRACE", 0.1)
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "objects.yaml").write_text(NAMESPACES)
    srv = start_server(f"""\
        cluster.local:53 {{
            loop
            kubernetes {{
                manifests {tmp_path / "cluster"}
            }}
        }}
        """, tmp_path)
    try:
        loop = next(h for h in srv.handlers() if isinstance(h, LoopHandler))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not loop.off:
            time.sleep(0.02)
        assert loop.off and loop.seen == 0 and loop.qname.endswith(".cluster.local.")
        assert srv.fatal_message is None and not srv.wait(0)
    finally:
        srv.stop()


def test_kdns_serve_exits_non_zero_on_a_loop(tmp_path: Path) -> None:
    port = free_dns_port()
    corefile = tmp_path / "Corefile"
    corefile.write_text(f".:{port} {{\n    loop\n    forward . 127.0.0.1:{port}\n}}\n")
    # The lead registers the plugins in registry.py; until then the child registers them.
    code = textwrap.dedent(f"""\
        import sys
        from kdns.plugins import registry
        registry.IMPLEMENTED.setdefault("loop", "kdns.plugins.loop.setup")
        registry.IMPLEMENTED.setdefault("forward", "kdns.plugins.forward.setup")
        from kdns.cli import main
        sys.argv = ["kdns", "serve", "-c", {str(corefile)!r}, "--dns-addr", "127.0.0.1"]
        main()
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=20)
    assert proc.returncode == 1, proc.stderr
    assert 'detected for zone ".", see https://coredns.io/plugins/loop#troubleshooting' \
        in proc.stderr
