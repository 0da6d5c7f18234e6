"""kubernetes ``isolate``: per-namespace name hiding, per-client counts, over real sockets.

A kdns reads the fake API server over HTTP (``pods verified``, ``isolate``, ``cache`` and a
``hosts`` zone in the same block, ``prometheus`` on loopback). dnspython asks from different
127.0.0.x source addresses, each the address of a Pod in some namespace (or of none), as the
autopath tests do. Whether a reply came from the fast path is read from the listener's
``counters.slow``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kdns.server.app import KdnsServer
from kdns.server.dispatch import Dispatcher
from tests import fakeapi
from tests.conftest import start_server
from tests.ports import free_tcp_port

Z = "cluster.local."
A1, A2, B1, C1, OUTSIDE = "127.0.0.21", "127.0.0.25", "127.0.0.22", "127.0.0.23", "127.0.0.24"
ROTATING = ("127.0.0.31", "127.0.0.32", "127.0.0.33")
"""Addresses the churn test hands back and forth between namespaces p and q."""
R1 = "127.0.0.35"
CLUSTER_IP = {"a": "10.96.1.1", "b": "10.96.1.2", "c": "10.96.1.3", "shared": "10.96.1.4",
              "pub": "10.96.1.5", "p": "10.96.2.1", "q": "10.96.2.2", "r": "10.96.2.3"}
HL_IP = "10.244.3.5"
"""The endpoint of c's headless Service ``hl`` (hostname ``db-0``)."""


ISOLATE = """isolate {
                    allow shared
                    unknown deny
                }"""


def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(0.01)


class Env:
    def __init__(self, api: fakeapi.FakeApiServer, server: KdnsServer, mport: int) -> None:
        self.api, self.server, self.mport = api, server, mport
        self.port = server.listeners[0].port

    @property
    def disp(self) -> Dispatcher:
        udp = self.server.listeners[0].udp
        assert udp is not None
        return udp.dispatcher

    def ask(self, name: str, source: str, qtype: str = "A") -> dns.message.Message:
        return dns.query.udp(dns.message.make_query(name, qtype), "127.0.0.1", port=self.port,
                             source=source, timeout=3)

    def found(self, name: str, source: str, qtype: str = "A") -> bool:
        msg = self.ask(name, source, qtype)
        return msg.rcode() == dns.rcode.NOERROR and bool(msg.answer)

    def hit(self, name: str, source: str, qtype: str = "A") -> dns.message.Message:
        """Ask, and assert the reply came from the fast path."""
        before = self.disp.counters.slow
        msg = self.ask(name, source, qtype)
        assert self.disp.counters.slow == before, f"{name} from {source} was not a hit"
        return msg

    def scrape(self) -> dict[str, list[tuple[str, dict[str, str], float]]]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/metrics",
                                      timeout=3).read().decode()
        return {f.name: [(s.name, s.labels, s.value) for s in f.samples]
                for f in text_string_to_metric_families(text)}

    def client_count(self, ns: str, rcode: str) -> float:
        return sum(v for n, labels, v in self.scrape().get("kdns_client_requests", [])
                   if n.endswith("_total") and labels == {"client_namespace": ns,
                                                          "rcode": rcode})

    def waste(self, ns: str) -> float:
        return sum(v for n, labels, v in self.scrape().get("kdns_search_waste", [])
                   if n.endswith("_total") and labels == {"client_namespace": ns})


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from _env(tmp_path, "")


@pytest.fixture
def autopath_env(tmp_path: Path) -> Iterator[Env]:
    yield from _env(tmp_path, "autopath @kubernetes")


@pytest.fixture
def open_env(tmp_path: Path) -> Iterator[Env]:
    yield from _env(tmp_path, "", isolate=False)


def _env(tmp_path: Path, front: str, *, isolate: bool = True) -> Iterator[Env]:
    with fakeapi.FakeApiServer(bookmark_interval=0.2) as api:
        api.add("namespaces", fakeapi.namespace("a"))
        api.add("namespaces", fakeapi.namespace(
            "b", annotations={"kdns.io/dns-visible-to": "a, x"}))
        api.add("namespaces", fakeapi.namespace("c"))
        api.add("namespaces", fakeapi.namespace("shared"))
        api.add("namespaces", fakeapi.namespace(
            "pub", annotations={"kdns.io/dns-visible-to": "*"}))
        for ns in ("p", "q", "r"):
            api.add("namespaces", fakeapi.namespace(ns))
        for ns, ip in CLUSTER_IP.items():
            api.add("services", fakeapi.service(ns, "web", cluster_ip=ip,
                                                ports=[("http", 80, "TCP")]))
        api.add("services", fakeapi.service("c", "hl", headless=True,
                                            ports=[("db", 5432, "TCP")]))
        api.add("endpointslices", fakeapi.endpoint_slice(
            "c", "hl-1", "hl", ports=[("db", 5432, "TCP")],
            endpoints=[{"addresses": [HL_IP], "hostname": "db-0"}]))
        for ns, name, ip in (("a", "a1", A1), ("a", "a2", A2), ("b", "b1", B1),
                             ("c", "c1", C1), ("r", "r1", R1)):
            api.add("pods", fakeapi.pod(ns, name, ip=ip))
        for i, ip in enumerate(ROTATING):
            api.add("pods", fakeapi.pod("p", f"m{i}", ip=ip))
        hosts = tmp_path / "hosts"
        hosts.write_text("192.0.2.1 www.example.com\n")
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        mport = free_tcp_port()
        server = start_server(f"""
        .:53 {{
            errors
            prometheus 127.0.0.1:{mport}
            cache 30
            {front}
            {f"hosts {hosts} example.com" if isolate else ""}
            kubernetes {Z} in-addr.arpa {{
                kubeconfig {kubeconfig}
                pods verified
                {ISOLATE if isolate else ""}
                startup_timeout 5s
            }}
        }}
        """, tmp_path)
        e = Env(api, server, mport)
        try:
            until(lambda: e.found(f"web.a.svc.{Z}", A1))
            yield e
        finally:
            server.stop()


def test_each_client_sees_its_own_allowed_and_annotated_namespaces(env: Env) -> None:
    sees = {
        A1: {"a", "b", "shared", "pub"},  # b's annotation lists a
        A2: {"a", "b", "shared", "pub"},
        B1: {"b", "shared", "pub"},
        C1: {"c", "shared", "pub"},
        OUTSIDE: {"shared", "pub"},       # unknown deny: allow and '*' only
    }
    # Twice each, in an order where an unscoped stored reply would be replayed to the wrong
    # client: the second round is served from the fast path.
    for _round in range(2):
        for source, visible in sees.items():
            for ns in ("a", "b", "c", "shared", "pub"):
                msg = env.ask(f"web.{ns}.svc.{Z}", source)
                if ns in visible:
                    assert [str(r) for rr in msg.answer for r in rr] == [CLUSTER_IP[ns]]
                else:
                    assert msg.rcode() == dns.rcode.NXDOMAIN, (source, ns)
                    assert not msg.answer


def test_a_hidden_name_gets_exactly_what_a_missing_one_gets(env: Env) -> None:
    def shape(msg: dns.message.Message) -> tuple[object, ...]:
        return (msg.rcode(), msg.flags, [str(rr) for rr in msg.answer],
                [rr.to_text() for rr in msg.authority], [str(rr) for rr in msg.additional])

    cases = [
        (f"web.c.svc.{Z}", f"web.nosuch.svc.{Z}", "A"),
        (f"web.c.svc.{Z}", f"web.nosuch.svc.{Z}", "AAAA"),
        (f"_http._tcp.web.c.svc.{Z}", f"_http._tcp.web.nosuch.svc.{Z}", "SRV"),
        (f"db-0.hl.c.svc.{Z}", f"db-0.hl.nosuch.svc.{Z}", "A"),
        (f"c.svc.{Z}", f"nosuch.svc.{Z}", "A"),  # the namespace's empty non-terminal
        ("3.1.96.10.in-addr.arpa.", "9.9.96.10.in-addr.arpa.", "PTR"),  # web.c's ClusterIP
        ("5.3.244.10.in-addr.arpa.", "9.9.244.10.in-addr.arpa.", "PTR"),  # hl's endpoint
    ]
    for hidden, missing, qtype in cases:
        for _ in range(2):
            got, want = env.ask(hidden, A1, qtype), env.ask(missing, A1, qtype)
            # The SOA owner differs for the reverse zone's names only by the zone asked.
            assert shape(got) == shape(want), hidden
            assert got.rcode() == dns.rcode.NXDOMAIN
    # The owner sees them all.
    assert env.found(f"web.c.svc.{Z}", C1)
    assert env.ask(f"c.svc.{Z}", C1).rcode() == dns.rcode.NOERROR
    assert env.found(f"_http._tcp.web.c.svc.{Z}", C1, "SRV")
    assert env.found(f"db-0.hl.c.svc.{Z}", C1)
    ptr = env.ask("3.1.96.10.in-addr.arpa.", C1, "PTR")
    assert [str(r) for rr in ptr.answer for r in rr] == [f"web.c.svc.{Z}"]
    ptr = env.ask("5.3.244.10.in-addr.arpa.", C1, "PTR")
    assert [str(r) for rr in ptr.answer for r in rr] == [f"db-0.hl.c.svc.{Z}"]


def test_other_zones_are_unaffected(env: Env) -> None:
    for source in (A1, B1, C1, OUTSIDE):
        msg = env.ask("www.example.com.", source)
        assert [str(r) for rr in msg.answer for r in rr] == ["192.0.2.1"]


def test_the_fast_path_serves_each_namespace_its_own_replies(env: Env) -> None:
    name = f"web.b.svc.{Z}"
    assert env.found(name, A1)
    # Another Pod of namespace a is served a's stored reply; b's own Pod and c's get theirs.
    assert env.hit(name, A2).answer
    assert env.hit(name, A1).answer
    assert env.found(name, B1)
    assert env.hit(name, B1).answer
    assert env.ask(name, C1).rcode() == dns.rcode.NXDOMAIN
    assert env.hit(name, C1).rcode() == dns.rcode.NXDOMAIN
    # A 0x20 spelling is patched from the same scoped entry.
    assert env.hit("WeB.b.SVC.cluster.LOCAL.", A2).answer
    assert env.hit("WeB.b.SVC.cluster.LOCAL.", C1).rcode() == dns.rcode.NXDOMAIN


def test_an_annotation_change_shows_and_hides_a_namespace(env: Env) -> None:
    name = f"web.c.svc.{Z}"
    assert env.ask(name, A1).rcode() == dns.rcode.NXDOMAIN
    env.hit(name, A1)
    env.api.update("namespaces", fakeapi.namespace(
        "c", annotations={"kdns.io/dns-visible-to": "a"}))
    until(lambda: env.found(name, A1))
    assert env.ask(name, B1).rcode() == dns.rcode.NXDOMAIN
    env.api.update("namespaces", fakeapi.namespace("c"))
    until(lambda: env.ask(name, A1).rcode() == dns.rcode.NXDOMAIN)
    assert env.found(name, C1)


def test_a_malformed_annotation_is_rejected_not_guessed(env: Env) -> None:
    # The object is refused as a whole (as any malformed object): the namespace stays as it
    # was last seen, never more visible than it was.
    env.api.update("namespaces", fakeapi.namespace(
        "c", annotations={"kdns.io/dns-visible-to": "a;b"}))
    env.api.add("namespaces", fakeapi.namespace("d"))
    env.api.add("services", fakeapi.service("d", "web", cluster_ip="10.96.1.9"))
    until(lambda: env.ask(f"web.d.svc.{Z}", OUTSIDE).rcode() == dns.rcode.NXDOMAIN
          and env.found(f"web.shared.svc.{Z}", OUTSIDE))
    assert env.ask(f"web.c.svc.{Z}", A1).rcode() == dns.rcode.NXDOMAIN


def test_pod_ip_churn_never_shows_a_name_across_tenants(env: Env) -> None:
    """Addresses move between namespaces p and q through the API while every address asks
    for p's, q's and r's names. r's name never resolves from a moving address; after each
    move, once the new namespace's name resolves from the address, the old one's is NXDOMAIN
    at once (its stored reply is for the old namespace only)."""
    names = {ns: f"web.{ns}.svc.{Z}" for ns in ("p", "q", "r")}
    leaks: list[str] = []
    stop = threading.Event()
    asked = [0]

    def hammer() -> None:
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            for ip in ROTATING:
                try:
                    if env.found(names["r"], ip):
                        leaks.append(ip)
                except dns.exception.Timeout:
                    pass
                asked[0] += 1

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    owner = dict.fromkeys(ROTATING, "p")
    try:
        for rnd in range(8):
            for i, ip in enumerate(ROTATING):
                old = owner[ip]
                new = "q" if old == "p" else "p"
                assert env.found(names[old], ip)
                env.ask(names[old], ip)  # stored, for old's scope (the hammer runs too)
                pod = fakeapi.pod(new, f"m{i}-{rnd}", ip=ip)
                gone = (old, f"m{i}" if rnd == 0 else f"m{i}-{rnd - 1}")
                if rnd % 2:
                    env.api.add("pods", pod)  # both claim it for a while: ambiguous
                    env.api.delete("pods", *gone)
                else:
                    env.api.delete("pods", *gone)  # nobody has it for a while: unknown
                    env.api.add("pods", pod)
                owner[ip] = new
                until(lambda ip=ip, new=new: env.found(names[new], ip))
                assert env.ask(names[old], ip).rcode() == dns.rcode.NXDOMAIN
                assert env.ask(names[old], ip).rcode() == dns.rcode.NXDOMAIN
    finally:
        stop.set()
        thread.join(timeout=25)
    assert asked[0] > 0
    assert not leaks


def test_requests_and_search_waste_per_client_namespace(env: Env) -> None:
    name = f"web.a.svc.{Z}"
    env.ask(name, A1)
    before = env.client_count("a", "NOERROR")
    for _ in range(5):
        env.hit(name, A1)  # fast-path hits count too
    assert env.client_count("a", "NOERROR") == before + 5

    wasted = f"www.example.com.a.svc.{Z}"
    w_a, w_b = env.waste("a"), env.waste("b")
    nx_a = env.client_count("a", "NXDOMAIN")
    for _ in range(3):
        assert env.ask(wasted, A1).rcode() == dns.rcode.NXDOMAIN
    assert env.waste("a") == w_a + 3
    assert env.client_count("a", "NXDOMAIN") == nx_a + 3
    # For a client of b the same name is no search suffix of its own (a exists): not waste.
    env.ask(wasted, B1)
    assert env.waste("b") == w_b
    # The zone's own tail and svc.<zone> suffixes count for every client.
    env.ask(f"www.example.com.{Z}", B1)
    env.ask(f"www.example.com.svc.{Z}", B1)
    assert env.waste("b") == w_b + 2
    # A plain miss (one label under the namespace) is not waste.
    env.ask(f"nosuch.b.svc.{Z}", B1)
    assert env.waste("b") == w_b + 2
    # No known Pod: unknown, never waste.
    unknown = env.client_count("unknown", "NXDOMAIN")
    env.ask(wasted, OUTSIDE)
    assert env.client_count("unknown", "NXDOMAIN") == unknown + 1
    labels = {lab["client_namespace"] for n, lab, _v in env.scrape()["kdns_client_requests"]}
    assert labels <= {"a", "b", "c", "p", "q", "r", "unknown"}


KDNS = [sys.executable, "-m", "kdns.cli"]


def _top(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KDNS, "top", *args], capture_output=True, text=True, timeout=30,
                          check=False)


def test_kdns_top_reads_a_running_server(env: Env) -> None:
    for _ in range(4):
        env.ask(f"www.example.com.b.svc.{Z}", B1)  # search waste, every time
    env.ask(f"web.b.svc.{Z}", B1)
    for _ in range(3):
        env.ask(f"web.c.svc.{Z}", C1)
    env.ask(f"web.shared.svc.{Z}", OUTSIDE)
    r = _top("--metrics", f"http://127.0.0.1:{env.mport}/metrics")
    assert r.returncode == 0, r.stderr
    table = {line.split()[0]: line.split(None, 5) for line in r.stdout.splitlines()[1:]
             if line and line.split()[0] in ("b", "c", "unknown")}
    # namespace, queries, NXDOMAIN share, waste, waste share, fix
    assert table["b"][1:5] == ["5", "80.0%", "4", "80.0%"]
    assert table["b"][5] == "FQDN with a trailing dot"
    assert table["c"][1:5] == ["3", "0.0%", "0", "0.0%"] and table["c"][5] == "-"
    assert table["unknown"][1] == "1"
    assert "search waste" in r.stdout and "ndots:2" in r.stdout


class _Other(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"# TYPE other_total counter\nother_total 1\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_kdns_top_errors_exit_2() -> None:
    other = ThreadingHTTPServer(("127.0.0.1", 0), _Other)
    t = threading.Thread(target=other.serve_forever, daemon=True)
    t.start()
    try:
        closed = free_tcp_port()
        cases = [
            ("ftp://127.0.0.1/metrics", "is not an http(s) URL"),
            ("127.0.0.1:9153", "is not an http(s) URL"),
            ("http://127.0.0.1:99999/metrics", "Port out of range"),
            (f"http://127.0.0.1:{closed}/metrics", "cannot read metrics"),
            (f"http://127.0.0.1:{other.server_address[1]}/metrics", "not a kdns /metrics"),
        ]
        for url, message in cases:
            r = _top("--metrics", url, "--timeout", "2")
            assert r.returncode == 2, (url, r.stdout, r.stderr)
            assert r.stderr.startswith("kdns: ") and message in r.stderr, (url, r.stderr)
    finally:
        other.shutdown()
        other.server_close()
        t.join(timeout=5)


def test_autopath_keeps_each_namespace_its_own_walk(autopath_env: Env) -> None:
    env = autopath_env
    walked = f"web.b.a.svc.{Z}"  # a Pod of a asking for web.b with its first search suffix
    msg = env.ask(walked, A1)
    assert [str(r) for rr in msg.answer for r in rr][-1] == CLUSTER_IP["b"]
    # a's walk is never replayed to others (not from the fast path, not from a cache).
    for source in (C1, OUTSIDE):
        for _ in range(2):
            assert env.ask(walked, source).rcode() == dns.rcode.NXDOMAIN, source
    # A Pod of c walking to web.a (hidden from c) ends on NXDOMAIN, as for a missing name.
    assert env.ask(f"web.a.c.svc.{Z}", C1).rcode() == dns.rcode.NXDOMAIN
    assert env.found(f"web.c.c.svc.{Z}", C1)  # its own Service, through the walk
    assert env.ask(walked, A2).answer  # a's other Pod gets a's walk


@pytest.fixture
def logged_env(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Env]:
    caplog.set_level(logging.INFO, logger="kdns.log")
    yield from _env(tmp_path, 'metadata\n            log . "{/kubernetes/client-namespace} '
                              '{/kubernetes/client-pod-name} {name} {rcode}"')


def test_log_lines_name_the_client_namespace_and_pod(
        logged_env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env = logged_env
    caplog.clear()
    env.ask(f"web.b.svc.{Z}", A2)
    env.ask(f"web.b.svc.{Z}", A2)  # log sees every query: no fast path around it
    env.ask(f"web.a.svc.{Z}", C1)
    env.ask(f"web.shared.svc.{Z}", OUTSIDE)
    lines = [r.getMessage() for r in caplog.records if r.name == "kdns.log"]
    assert lines == [
        f"a a2 web.b.svc.{Z} NOERROR",
        f"a a2 web.b.svc.{Z} NOERROR",
        f"c c1 web.a.svc.{Z} NXDOMAIN",
        f"- - web.shared.svc.{Z} NOERROR",
    ]


def test_counts_without_isolation_take_the_cold_and_fast_paths_too(open_env: Env) -> None:
    env = open_env
    wasted = f"example.com.svc.{Z}"  # 'example.com' with the svc.<zone> search suffix
    w, nx = env.waste("c"), env.client_count("c", "NXDOMAIN")
    slow = env.disp.counters.slow
    # No hosts in front (it would see every name): cluster names take the cold path first.
    assert env.disp.zones["."].cold is not None
    # A never-asked NXDOMAIN is stored on its second ask (a flood of names asked once does
    # not fill the store), then served by the fast path; each one counts.
    assert env.ask(wasted, C1).rcode() == dns.rcode.NXDOMAIN
    assert env.ask(wasted, C1).rcode() == dns.rcode.NXDOMAIN
    assert env.hit(wasted, C1).rcode() == dns.rcode.NXDOMAIN
    assert env.disp.counters.slow == slow + 2
    assert env.waste("c") == w + 3
    assert env.client_count("c", "NXDOMAIN") == nx + 3
    # Not isolated: every client sees every namespace, and one stored reply serves them all.
    assert env.found(f"web.c.svc.{Z}", A1)
    assert env.hit(f"web.c.svc.{Z}", B1).answer
