"""forward over real sockets: a fake dnslib upstream (and dnsmasq when installed) behind kdns.

Everything binds 127.0.0.1 port 0. Tests that need short timeouts shorten the module defaults
(``READ_TIMEOUT`` etc.) rather than sleeping through CoreDNS's 2 s.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from kdns.plugins.base import Request, Response
from kdns.plugins.forward import handler as fwd
from kdns.plugins.forward.handler import ForwardHandler
from kdns.plugins.forward.setup import ForwardConfig, UpstreamAddr
from kdns.server.app import KdnsServer
from kdns.server.listeners import bind_pair
from tests.conftest import Running, start_server
from tests.ports import free_dns_port

BIG = "big.example."
BIG_COUNT = 60  # 60 A records: ~1 kB, over 512 bytes


# -- a tiny upstream -----------------------------------------------------------------------------


class FakeUpstream:
    """A threaded dnslib DNS server on 127.0.0.1 (UDP and TCP on one port).

    ``records`` maps lower-case names to an IPv4 answer; other names get NXDOMAIN, ``BIG`` gets
    many A records. Knobs (plain attributes, changeable while running): ``drop`` (read queries,
    never answer), ``delay`` (seconds before answering), ``tc_udp`` (UDP replies carry TC and no
    records), ``rcode`` (force this rcode), ``mode`` ("spoof": first send a reply with a wrong ID
    and one with a wrong question, then the real one; "bad_question": only the wrong one).
    """

    def __init__(self, records: dict[str, str] | None = None, **knobs: object) -> None:
        self.records = {"ext.example.": "192.0.2.10", **(records or {})}
        self.drop = False
        self.delay = 0.0
        self.tc_udp = False
        self.rcode: int | None = None
        self.mode = "normal"
        for k, v in knobs.items():
            setattr(self, k, v)
        self.log: list[tuple[str, str, str, int]] = []  # (proto, qname, qtype, rd)
        self.tcp_accepts = 0
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._workers: list[threading.Thread] = []
        self._stop = False
        self.udp_sock, self.tcp_sock = bind_pair("127.0.0.1", 0)
        self.port: int = self.udp_sock.getsockname()[1]
        self._threads = [threading.Thread(target=self._udp_loop, daemon=True),
                         threading.Thread(target=self._tcp_loop, daemon=True)]
        for t in self._threads:
            t.start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def seen(self, qname: str | None = None) -> list[tuple[str, str, str, int]]:
        with self._lock:
            return [e for e in self.log if qname is None or e[1] == qname]

    def replies(self, data: bytes, proto: str) -> list[bytes]:
        q = DNSRecord.parse(data)
        name = str(q.q.qname).lower()
        with self._lock:
            self.log.append((proto, name, QTYPE[q.q.qtype], q.header.rd))
        if self.drop:
            return []
        if self.delay:
            time.sleep(self.delay)
        reply = q.reply(ra=1, aa=0)
        if self.rcode is not None:
            reply.header.rcode = self.rcode
        elif name == BIG:
            if proto == "udp" and self.tc_udp:
                reply.header.tc = 1
            else:
                for i in range(BIG_COUNT):
                    reply.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(f"10.0.{i // 250}.{i % 250}"),
                                        ttl=60))
        elif name in self.records and q.q.qtype == QTYPE.A:
            reply.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(self.records[name]), ttl=60))
        elif name != "." and name not in self.records:
            reply.header.rcode = RCODE.NXDOMAIN
        if proto == "udp" and self.tc_udp and name != BIG:
            reply.header.tc = 1
            reply.rr = []
        out = [reply.pack()]
        if self.mode in ("spoof", "bad_question"):
            wrong_q = DNSRecord.question("evil.example.", "A")
            wrong_q.header.id = q.header.id
            evil_q = wrong_q.reply()
            evil_q.add_answer(RR("evil.example.", QTYPE.A, rdata=A("6.6.6.6"), ttl=60))
            evil_id = q.reply()
            evil_id.header.id = (q.header.id + 1) & 0xFFFF
            evil_id.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("6.6.6.6"), ttl=60))
            out = ([evil_id.pack(), evil_q.pack(), *out] if self.mode == "spoof"
                   else [evil_q.pack()])
        return out

    def _udp_loop(self) -> None:
        while not self._stop:
            try:
                data, addr = self.udp_sock.recvfrom(4096)
            except OSError:
                return
            if self._stop:  # shutdown() wakes recvfrom with an empty datagram
                return
            t = threading.Thread(target=self._udp_answer, args=(data, addr), daemon=True)
            with self._lock:
                self._workers = [w for w in self._workers if w.is_alive()]
                self._workers.append(t)
            t.start()

    def _udp_answer(self, data: bytes, addr: tuple[str, int]) -> None:
        for out in self.replies(data, "udp"):
            with contextlib.suppress(OSError):
                self.udp_sock.sendto(out, addr)

    def _tcp_loop(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.tcp_sock.accept()
            except OSError:
                return
            with self._lock:
                self.tcp_accepts += 1
                self._conns.append(conn)
            t = threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True)
            with self._lock:
                self._workers.append(t)
            t.start()

    def _tcp_conn(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with conn:
            try:
                while not self._stop:
                    head = conn.recv(2)
                    if len(head) < 2:
                        return
                    size = struct.unpack("!H", head)[0]
                    data = b""
                    while len(data) < size:
                        chunk = conn.recv(size - len(data))
                        if not chunk:
                            return
                        data += chunk
                    for out in self.replies(data, "tcp"):
                        conn.sendall(struct.pack("!H", len(out)) + out)
            except OSError:
                return

    def close_connections(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.close_connections()
        self._stop = True
        for s in (self.udp_sock, self.tcp_sock):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        with self._lock:
            workers = list(self._workers)
        for t in self._threads + workers:
            t.join(timeout=2)


@pytest.fixture
def upstream_factory() -> Iterator[Callable[..., FakeUpstream]]:
    made: list[FakeUpstream] = []

    def make(records: dict[str, str] | None = None, **knobs: object) -> FakeUpstream:
        up = FakeUpstream(records, **knobs)
        made.append(up)
        return up

    yield make
    for up in made:
        up.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[str], Running]]:
    servers: list[KdnsServer] = []

    def start(corefile: str) -> Running:
        server = start_server(corefile, tmp_path)
        servers.append(server)
        return Running(server)

    yield start
    for s in servers:
        s.stop()


def forward_of(r: Running) -> ForwardHandler:
    h = next(h for h in r.server.handlers() if h.name == "forward")
    assert isinstance(h, ForwardHandler)
    return h


def a_records(msg: dns.message.Message) -> list[str]:
    return sorted(rd.address for rrset in msg.answer if rrset.rdtype == dns.rdatatype.A
                  for rd in rrset)


# -- direct handler use (short timeouts, no server) ---------------------------------------------


def make_handler(*addrs: str, read_timeout: float = 0.3, **cfg: object) -> ForwardHandler:
    ups = []
    for a in addrs:
        host, port = a.rsplit(":", 1)
        ups.append(UpstreamAddr(host, int(port)))
    config = ForwardConfig(".", tuple(ups), **cfg)  # type: ignore[arg-type]
    return ForwardHandler(config, read_timeout=read_timeout, total_timeout=2.0,
                          health_timeout=0.3)


def request(qname: str = "ext.example.", qtype: str = "A", proto: str = "udp") -> Request:
    msg = DNSRecord.question(qname, qtype)
    return Request(msg, qname, qname.lower(), getattr(QTYPE, qtype), 1, ("127.0.0.1", 5353),
                   proto, "dns://:53", ".", 512)


def not_forwarded(req: Request) -> Response:
    reply = req.msg.reply()
    reply.header.rcode = RCODE.NOTIMP  # a marker: the query reached the next plugin
    return Response(reply, "next")


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# -- through a running kdns ---------------------------------------------------------------------


def test_basic_forwarding_udp_and_tcp(serve: Callable[[str], Running],
                                      upstream_factory: Callable[..., FakeUpstream]) -> None:
    up = upstream_factory()
    r = serve(f".:53 {{\n  forward . {up.addr}\n}}\n")
    reply = r.udp("ext.example.")
    assert reply.rcode() == dns.rcode.NOERROR
    assert a_records(reply) == ["192.0.2.10"]
    assert r.tcp("ext.example.").answer[0][0].address == "192.0.2.10"
    assert r.udp("missing.example.").rcode() == dns.rcode.NXDOMAIN
    h = forward_of(r)
    assert h.upstreams[0].rcodes == {"NOERROR": 2, "NXDOMAIN": 1}
    assert h.upstreams[0].requests == 3
    assert h.upstreams[0].durations["NOERROR"].count == 2
    # The client's transport is kept by default (CoreDNS): one UDP and one TCP exchange.
    assert [e[0] for e in up.seen("ext.example.")] == ["udp", "tcp"]


def test_client_id_and_name_case_are_restored(serve: Callable[[str], Running],
                                              upstream_factory: Callable[..., FakeUpstream]) -> None:
    up = upstream_factory()
    r = serve(f".:53 {{\n  forward . {up.addr}\n}}\n")
    q = DNSRecord.question("ExT.ExAmPle.", "A")
    q.header.id = 0x4242
    raw = r.raw_udp(q.pack(), timeout=3)
    assert raw is not None
    reply = DNSRecord.parse(raw)
    assert reply.header.id == 0x4242
    assert str(reply.q.qname) == "ExT.ExAmPle."
    assert str(reply.rr[0].rdata) == "192.0.2.10"
    # ... while the upstream saw a different, random ID.
    assert len(up.seen("ext.example.")) == 1


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq is not installed")
def test_forwarding_to_dnsmasq(serve: Callable[[str], Running], tmp_path: Path) -> None:
    port = free_dns_port()
    proc = subprocess.Popen(
        ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--pid-file=", "--no-resolv",
         "--no-hosts", f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
         f"--user={getpass.getuser()}", "--host-record=ext.example.,192.0.2.10",
         "--host-record=v6.example.,2001:db8::10"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up() -> bool:
            try:
                q = dns.message.make_query("ext.example.", "A")
                dns.query.udp(q, "127.0.0.1", port=port, timeout=0.2)
            except (OSError, dns.exception.Timeout):
                return False
            return True

        wait_for(up)
        r = serve(f".:53 {{\n  forward . dns://127.0.0.1:{port} {{\n    force_tcp\n  }}\n}}\n")
        assert a_records(r.udp("ext.example.")) == ["192.0.2.10"]
        aaaa = r.udp("v6.example.", "AAAA")
        assert [rd.address for rd in aaaa.answer[0]] == ["2001:db8::10"]
        assert r.tcp("ext.example.").rcode() == dns.rcode.NOERROR
        h = forward_of(r)
        assert h.upstreams[0].conn_cache_hits["tcp"] >= 1  # force_tcp reused its connection
        # dnsmasq serves each TCP connection in a forked child: close ours before stopping it.
        r.server.stop()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_policy_sequential_always_uses_the_first(serve: Callable[[str], Running],
                                                 upstream_factory: Callable[..., FakeUpstream]) -> None:
    a, b = upstream_factory(), upstream_factory()
    r = serve(f".:53 {{\n  forward . {a.addr} {b.addr} {{\n    policy sequential\n  }}\n}}\n")
    for _ in range(6):
        assert r.udp("ext.example.").rcode() == dns.rcode.NOERROR
    assert len(a.seen("ext.example.")) == 6
    assert b.seen("ext.example.") == []


def test_policy_round_robin_alternates(serve: Callable[[str], Running],
                                       upstream_factory: Callable[..., FakeUpstream]) -> None:
    a, b, c = upstream_factory(), upstream_factory(), upstream_factory()
    r = serve(f".:53 {{\n  forward . {a.addr} {b.addr} {c.addr} {{\n    policy round_robin\n"
              "  }\n}\n")
    for _ in range(6):
        assert r.udp("ext.example.").rcode() == dns.rcode.NOERROR
    assert [len(u.seen("ext.example.")) for u in (a, b, c)] == [2, 2, 2]


def test_policy_random_spreads(upstream_factory: Callable[..., FakeUpstream]) -> None:
    a, b = upstream_factory(), upstream_factory()
    h = make_handler(a.addr, b.addr)
    firsts = {h.order()[0].port for _ in range(64)}
    assert firsts == {a.port, b.port}  # fails with probability 2**-63


def test_failover_past_a_dead_upstream(serve: Callable[[str], Running],
                                       upstream_factory: Callable[..., FakeUpstream]) -> None:
    good = upstream_factory()
    dead = free_dns_port()
    r = serve(f".:53 {{\n  forward . 127.0.0.1:{dead} {good.addr} {{\n    policy sequential\n"
              "  }\n}\n")
    assert a_records(r.udp("ext.example.")) == ["192.0.2.10"]
    h = forward_of(r)
    assert h.upstreams[0].failures == 1
    assert h.upstreams[0].fails >= 1
    assert h.upstreams[1].rcodes == {"NOERROR": 1}


def test_all_upstreams_dead_servfail_quickly(serve: Callable[[str], Running]) -> None:
    r = serve(f".:53 {{\n  forward . 127.0.0.1:{free_dns_port()} 127.0.0.1:{free_dns_port()}\n}}\n")
    started = time.monotonic()
    assert r.udp("ext.example.").rcode() == dns.rcode.SERVFAIL
    assert r.tcp("ext.example.").rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - started < 2.0
    assert forward_of(r).servfails == 2


def test_silent_upstreams_servfail_within_bounded_time(
        upstream_factory: Callable[..., FakeUpstream]) -> None:
    a, b = upstream_factory(drop=True), upstream_factory(drop=True)
    h = make_handler(a.addr, b.addr, read_timeout=0.2)
    started = time.monotonic()
    resp = h.serve(request(), not_forwarded)
    elapsed = time.monotonic() - started
    h.stop()
    assert resp.msg.header.rcode == RCODE.SERVFAIL
    assert resp.plugin == "forward" and not resp.fast
    assert 0.35 < elapsed < 1.5  # one 0.2 s try per upstream, no retries
    assert resp.msg.header.aa == 0 and resp.msg.header.qr == 1


def test_total_timeout_bounds_a_query(upstream_factory: Callable[..., FakeUpstream]) -> None:
    ups = [upstream_factory(drop=True) for _ in range(4)]
    h = make_handler(*(u.addr for u in ups), read_timeout=0.5)
    h.total_timeout = 0.6
    started = time.monotonic()
    assert h.serve(request(), not_forwarded).msg.header.rcode == RCODE.SERVFAIL
    assert time.monotonic() - started < 1.4  # 2 s if every upstream got its full try
    h.stop()


def test_truncated_udp_reply_is_retried_over_tcp(serve: Callable[[str], Running],
                                                 upstream_factory: Callable[..., FakeUpstream]) -> None:
    up = upstream_factory(tc_udp=True)
    r = serve(f".:53 {{\n  forward . {up.addr}\n}}\n")
    reply = r.udp(BIG, use_edns=0, payload=4096)
    assert not reply.flags & dns.flags.TC
    assert len(a_records(reply)) == BIG_COUNT
    assert [e[0] for e in up.seen(BIG)] == ["udp", "tcp"]
    # A client without EDNS still gets a reply cut to 512 bytes with TC, and retries itself.
    small = r.udp(BIG)
    assert small.flags & dns.flags.TC


def test_force_tcp_uses_and_reuses_one_connection(serve: Callable[[str], Running],
                                                  upstream_factory: Callable[..., FakeUpstream]) -> None:
    up = upstream_factory()
    r = serve(f".:53 {{\n  forward . {up.addr} {{\n    force_tcp\n  }}\n}}\n")
    for _ in range(4):
        assert a_records(r.udp("ext.example.")) == ["192.0.2.10"]
    assert {e[0] for e in up.seen()} == {"tcp"}
    assert up.tcp_accepts == 1
    ups = forward_of(r).upstreams[0]
    assert ups.conn_cache_misses["tcp"] == 1 and ups.conn_cache_hits["tcp"] == 3


def test_prefer_udp_for_tcp_clients(serve: Callable[[str], Running],
                                    upstream_factory: Callable[..., FakeUpstream]) -> None:
    up = upstream_factory()
    r = serve(f".:53 {{\n  forward . {up.addr} {{\n    prefer_udp\n  }}\n}}\n")
    assert r.tcp("ext.example.").rcode() == dns.rcode.NOERROR
    assert [e[0] for e in up.seen()] == ["udp"]


def test_pooled_connections_expire(upstream_factory: Callable[..., FakeUpstream]) -> None:
    up = upstream_factory()
    h = make_handler(up.addr, force_tcp=True, expire=0.1)
    h.start()
    try:
        assert h.serve(request(), not_forwarded).msg.header.rcode == RCODE.NOERROR
        assert h.upstreams[0].pooled() == 1
        wait_for(lambda: h.upstreams[0].pooled() == 0, timeout=2)
        assert h.serve(request(), not_forwarded).msg.header.rcode == RCODE.NOERROR
        assert up.tcp_accepts == 2
    finally:
        h.stop()
    assert h.upstreams[0].pooled() == 0


def test_a_pooled_connection_closed_by_the_peer_is_replaced(
        upstream_factory: Callable[..., FakeUpstream]) -> None:
    up = upstream_factory()
    h = make_handler(up.addr, force_tcp=True)
    assert h.serve(request(), not_forwarded).msg.header.rcode == RCODE.NOERROR
    assert h.upstreams[0].pooled() == 1
    up.close_connections()  # the upstream drops its idle connections (as servers do)
    assert h.serve(request(), not_forwarded).msg.header.rcode == RCODE.NOERROR
    assert up.tcp_accepts == 2
    assert h.upstreams[0].failures == 0
    h.stop()


def test_except_and_from_zones(serve: Callable[[str], Running],
                               upstream_factory: Callable[..., FakeUpstream]) -> None:
    up = upstream_factory({"host.internal.example.": "192.0.2.20", "internal.example.": "192.0.2.21"})
    r = serve(f".:53 {{\n  forward example. {up.addr} {{\n    except internal.example.\n  }}\n"
              "}\n")
    assert r.udp("ext.example.").rcode() == dns.rcode.NOERROR
    # Excepted and out-of-FROM names go to the next plugin: here the end of the chain.
    assert r.udp("host.internal.example.").rcode() == dns.rcode.SERVFAIL
    assert r.udp("ext.example.org.").rcode() == dns.rcode.SERVFAIL
    assert up.seen("host.internal.example.") == []
    assert up.seen("ext.example.org.") == []
    # FROM itself is never excepted (CoreDNS isAllowedDomain), an excepted zone's apex is.
    h = make_handler(up.addr, except_zones=("internal.example.", "."))
    assert h.serve(request("host.internal.example."), not_forwarded).plugin == "next"
    assert h.serve(request("internal.example."), not_forwarded).plugin == "next"
    assert h.serve(request("."), not_forwarded).plugin == "forward"


def test_max_concurrent_refuses_the_excess(serve: Callable[[str], Running],
                                           upstream_factory: Callable[..., FakeUpstream]) -> None:
    up = upstream_factory(delay=0.5)
    r = serve(f".:53 {{\n  forward . {up.addr} {{\n    max_concurrent 1\n  }}\n}}\n")
    results: list[int] = []

    def ask() -> None:
        results.append(r.udp("ext.example.").rcode())

    first = threading.Thread(target=ask)
    first.start()
    wait_for(lambda: len(up.seen()) == 1)  # the first query is in flight upstream
    ask()
    first.join()
    assert sorted(results) == sorted([dns.rcode.NOERROR, dns.rcode.REFUSED])
    h = forward_of(r)
    assert h.max_concurrent_rejects == 1
    assert h.inflight == 0
    assert h.upstreams[0].failures == 0  # a reject is not a health failure


def test_spoofed_replies_are_ignored(upstream_factory: Callable[..., FakeUpstream]) -> None:
    up = upstream_factory(mode="spoof")
    h = make_handler(up.addr)
    resp = h.serve(request(), not_forwarded)
    assert resp.msg.header.rcode == RCODE.NOERROR
    assert [str(rr.rdata) for rr in resp.msg.rr] == ["192.0.2.10"]
    assert h.upstreams[0].mismatches == 2
    # Over TCP too.
    resp = h.serve(request(proto="tcp"), not_forwarded)
    assert [str(rr.rdata) for rr in resp.msg.rr] == ["192.0.2.10"]
    h.stop()


def test_reply_to_another_question_is_never_accepted(
        upstream_factory: Callable[..., FakeUpstream]) -> None:
    up = upstream_factory(mode="bad_question")
    h = make_handler(up.addr, read_timeout=0.2)
    resp = h.serve(request(), not_forwarded)
    assert resp.msg.header.rcode == RCODE.SERVFAIL
    assert resp.msg.rr == []
    assert h.upstreams[0].mismatches >= 1
    h.stop()


def test_failover_rcodes(upstream_factory: Callable[..., FakeUpstream]) -> None:
    bad, good = upstream_factory(rcode=RCODE.SERVFAIL), upstream_factory()
    plain = make_handler(bad.addr, good.addr, policy="sequential")
    assert plain.serve(request(), not_forwarded).msg.header.rcode == RCODE.SERVFAIL
    assert good.seen() == []
    h = make_handler(bad.addr, good.addr, policy="sequential",
                     failover_rcodes=(RCODE.SERVFAIL, RCODE.REFUSED))
    resp = h.serve(request(), not_forwarded)
    assert [str(rr.rdata) for rr in resp.msg.rr] == ["192.0.2.10"]
    # When every upstream fails over, the last reply is returned (not a made-up SERVFAIL).
    good.rcode = RCODE.REFUSED
    assert h.serve(request(), not_forwarded).msg.header.rcode == RCODE.REFUSED


def test_health_check_marks_an_upstream_down_then_up(
        upstream_factory: Callable[..., FakeUpstream]) -> None:
    flaky, backup = upstream_factory(drop=True), upstream_factory()
    h = make_handler(flaky.addr, backup.addr, policy="sequential", max_fails=1,
                     health_check=0.05, read_timeout=0.2)
    try:
        resp = h.serve(request(), not_forwarded)
        assert [str(rr.rdata) for rr in resp.msg.rr] == ["192.0.2.10"]  # from the backup
        f = h.upstreams[0]
        assert f.down(1)
        wait_for(lambda: f.healthcheck_failures >= 1)
        assert f.requests == 1  # probes are not counted as requests
        probes = [e for e in flaky.seen(".") if e[2] == "NS"]
        assert probes and probes[0][3] == 1  # `. IN NS` with RD
        # While it is down, queries skip it entirely.
        before = len(flaky.seen("ext.example."))
        h.serve(request(), not_forwarded)
        assert len(flaky.seen("ext.example.")) == before
        flaky.drop = False
        wait_for(lambda: not f.down(1))
        wait_for(lambda: not f.probing)
        h.serve(request(), not_forwarded)
        assert len(flaky.seen("ext.example.")) == before + 1
    finally:
        h.stop()


def test_health_check_options_no_rec_and_domain(
        upstream_factory: Callable[..., FakeUpstream]) -> None:
    up = upstream_factory(drop=True)
    h = make_handler(up.addr, max_fails=1, health_check=0.05, hc_recursion_desired=False,
                     hc_domain="probe.example.", read_timeout=0.1)
    try:
        h.serve(request(), not_forwarded)
        wait_for(lambda: len(up.seen("probe.example.")) >= 1)
        assert up.seen("probe.example.")[0][2:] == ("NS", 0)
    finally:
        h.stop()


def test_all_down_tries_a_random_one_or_fails_fast(
        upstream_factory: Callable[..., FakeUpstream]) -> None:
    up = upstream_factory()
    h = make_handler(up.addr, max_fails=1, health_check=10.0)
    h.upstreams[0].fails = 5  # marked down, but it does answer
    assert h.serve(request(), not_forwarded).msg.header.rcode == RCODE.NOERROR
    assert h.healthcheck_broken == 1
    fast = make_handler(up.addr, max_fails=1, failfast_all_unhealthy_upstreams=True)
    fast.upstreams[0].fails = 5
    assert fast.serve(request(), not_forwarded).msg.header.rcode == RCODE.SERVFAIL
    h.stop()
    fast.stop()


def test_max_fails_zero_never_marks_down(upstream_factory: Callable[..., FakeUpstream]) -> None:
    h = make_handler(f"127.0.0.1:{free_dns_port()}", max_fails=0)
    for _ in range(3):
        assert h.serve(request(), not_forwarded).msg.header.rcode == RCODE.SERVFAIL
    assert not h.upstreams[0].down(0)
    assert not h.upstreams[0].probing
    assert h.upstreams[0].failures == 3
    h.stop()


def test_stop_ends_every_thread(upstream_factory: Callable[..., FakeUpstream]) -> None:
    up = upstream_factory(drop=True)
    # Only this handler's threads: a server another test left draining may still own some.
    before = set(threading.enumerate())
    h = make_handler(up.addr, max_fails=1, health_check=0.05, read_timeout=0.1)
    h.start()
    h.serve(request(), not_forwarded)
    wait_for(lambda: h.upstreams[0].healthcheck_failures >= 1)
    mine = [t for t in threading.enumerate() if t not in before and t.name.startswith("forward-")]
    assert mine, "the handler started its sweeper and a health probe"
    h.stop()
    assert not [t.name for t in mine if t.is_alive()]


def test_resolv_conf_upstreams_through_the_server(
        serve: Callable[[str], Running], tmp_path: Path,
        upstream_factory: Callable[..., FakeUpstream]) -> None:
    up = upstream_factory()
    # A relative TO is read from the Corefile's directory; its entries come first, in order.
    # (No query is sent: resolv.conf entries are always port 53, which tests cannot use.)
    (tmp_path / "resolv.conf").write_text("search example\nnameserver 192.0.2.1\n")
    r = serve(f".:53 {{\n  forward . resolv.conf {up.addr}\n}}\n")
    assert [u.label for u in forward_of(r).upstreams] == ["192.0.2.1:53", up.addr]


def test_read_timeout_default_is_corednss(upstream_factory: Callable[..., FakeUpstream]) -> None:
    up = upstream_factory()
    h = ForwardHandler(ForwardConfig(".", (UpstreamAddr("127.0.0.1", up.port),)))
    assert (h.read_timeout, h.total_timeout) == (fwd.READ_TIMEOUT, fwd.TOTAL_TIMEOUT) == (2.0, 5.0)
    assert h.blocking and h.name == "forward"
