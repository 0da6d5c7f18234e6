#!/usr/bin/env python3
"""Soak ``kdns serve`` under steady mixed DNS load and steady cluster churn; check memory and answers.

kdns runs kubeadm's Corefile (``--corefile kubeadm``, the default; tests/kubeadm.py): errors,
health with lameduck, ready, kubernetes (``pods insecure``, fallthrough, ``ttl 30``),
prometheus, forward to a dnsmasq this script starts on 127.0.0.1 (``max_concurrent 1000``),
cache 30 with the cluster zone disabled, loop, reload, loadbalance. ``--corefile kubernetes``
runs the kubernetes plugin alone. A fake Kubernetes API server (``tests/fakeapi.py``, in this
process, over real HTTP) is seeded with 500 Services across 10 namespaces (a fifth headless
with 3-endpoint slices, the ClusterIP ones with slices too), a pool of "churned" Services and
40 headless Services whose endpoints churn. kdns reads it through a kubeconfig. Then, for the
whole run:

* **churn**: every ``--churn-interval`` one new Service (and its EndpointSlice) is created, the
  oldest churned one deleted, and the EndpointSlice of one churning headless Service rewritten
  with new addresses; every tenth tick one churned ClusterIP is changed. The script keeps the
  ground truth: when each churned name got which answer.
* **load**: a steady UDP rate (``--rate``) of stable ClusterIP names (A), headless names (A,
  three addresses, shuffled by loadbalance), SRV, never-created names (NXDOMAIN), churned names
  (live and recently deleted), churning headless names, and with the kubeadm Corefile names the
  upstream answers (through forward and cache) and forwarded NXDOMAINs. Every reply is matched
  by socket and ID and its rcode and answer set checked. A change may take up to LAG (1 s) to
  be served, so a churned name may answer with any state it had from ``sent - LAG`` until the
  reply arrived, and with nothing else; stable names have exactly one right answer. No reply
  within 2 s is a lost query.
* **bulk** (``--bulk-rate N``, e.g. 20000): dnsperf adds N queries a second on the stable and
  forwarded names for the whole run (1 MiB socket buffers: with its defaults its socket dropped
  replies on a busy load CPU); its lost queries count as errors.
* **pinning** (unless ``--no-pin``, with 2+ CPUs and taskset): kdns runs on the last CPU, this
  script with its fake API server, dnsperf and dnsmasq on the first, as the benchmarks do.
* **sampling**: every 0.5 s a few churned names whose state has been stable for over LAG (live,
  deleted and endpoint-churned ones) are asked on a separate socket and must match exactly.
* **memory**: VmRSS of the kdns PID every 5 s; ``rss_start`` is the first reading after warm-up
  (10 s), ``rss_end`` the last one before stopping. At the end ``/metrics`` is scraped once for
  ``coredns_dns_requests_total`` (A and SRV, the types sent; the loop plugin's own probes are
  another type), reported next to the queries the script sent.
* **where a query was lost**: per-socket receive-buffer drops from /proc/net/udp (kdns's
  sockets, this script's, dnsperf's; unlike ``UdpRcvbufErrors`` in /proc/net/snmp, other jobs on
  the machine do not count), kdns's requests, responses, forward rejects and shed queries from
  /metrics, its CPU use and the time its threads waited for a CPU (/proc schedstat), and the load
  average at the start and the end.

Verdict PASS (exit 0) only when errors == 0 (lost + wrong + send errors + kdns ERROR log lines +
bulk lost + an early exit of kdns) and rss_end <= rss_start * 1.25 + 5 MB (printed with the
figures). A separate line says whether lost checked queries are the machine's doing: nothing
else failed, kdns received and answered every query sent (no drop on its socket, nothing shed),
its threads waited for a CPU for at least 10 % of the run and at most 5 % were late
(:func:`attribute`); the verdict stays FAIL, test_soak_quick accepts it.

127.0.0.1 only; rate, duration and object counts are bounded; kdns and dnsmasq are stopped by
their PIDs with SIGTERM (SIGKILL after 15 s), also on exceptions and Ctrl-C; the temp directory
is removed.

    .venv/bin/python tools/soak.py [--minutes 10] [--rate 1000] [--churn-interval 0.1]
                                   [--bulk-rate 20000] [--corefile kubeadm|kubernetes] [--no-pin]
    .venv/bin/python tools/soak.py --quick      # about 20 s, for the test suite
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dnslib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests import fakeapi  # noqa: E402
from tests.kubeadm import EXT, NX_DOMAIN, Upstream, dnsmasq_available, kubeadm_corefile  # noqa: E402

ZONE = "cluster.local"
NAMESPACES = 10
SERVICES = 500
LAG = 1.0
"""Seconds a change in the API may take until kdns serves it."""
LOST_AFTER = 2.0
"""A query without a reply after this many seconds is lost."""
RSS_FACTOR, RSS_SLACK_MB = 1.25, 5.0
STARVED = 0.10
"""Share of the run kdns's threads spent runnable but waiting for a CPU above which the machine
did not keep up: late replies are then the machine's, if kdns also received and answered every
query (see :func:`attribute`)."""
STARVED_LOSS_MAX = 0.05
"""Most checked queries that may be late on a starved machine before it counts against kdns."""

Outcome = tuple[int, frozenset[str]]
"""What a reply says: its rcode and the set of answer RDATA texts of the asked type."""
NXDOMAIN: Outcome = (3, frozenset())
History = list[tuple[float, Outcome]]
"""(monotonic time, outcome from then on) of one churned name, oldest first; before the first
entry the name did not exist (churned names are never reused)."""

QTYPES = {"A": 1, "SRV": 33}


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def wire_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\x00"


def query_packet(qid: int, wire: bytes, qtype: str) -> bytes:
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + wire + struct.pack("!HH", QTYPES[qtype], 1)


def outcome_of(data: bytes, qtype: str) -> Outcome | None:
    """The reply's outcome, or None when it does not parse."""
    try:
        msg = dnslib.DNSRecord.parse(data)
    except Exception:  # any parse failure is a wrong answer, whatever dnslib raises
        return None
    code = QTYPES[qtype]
    return (msg.header.rcode, frozenset(str(rr.rdata) for rr in msg.rr if rr.rtype == code))


def fqdn(svc: str, ns: str) -> str:
    return f"{svc}.{ns}.svc.{ZONE}."


def acceptable(history: History, sent: float, received: float) -> set[Outcome]:
    """Outcomes a reply may carry: the state at ``sent - LAG`` and every state set since then
    up to the reply's arrival (a change being applied while the query was in flight)."""
    ok = {NXDOMAIN}
    for t, outcome in history:
        if t <= sent - LAG:
            ok = {outcome}
        elif t <= received:
            ok.add(outcome)
    return ok


# ---- ground truth and churn ------------------------------------------------------------------


class Truth:
    """Which churned names exist with which address, and since when.

    Writes happen under the lock together with the API call, and the time is taken *before* the
    call: kdns cannot serve a change before its recorded time, and a reader never sees an API
    change whose history entry is missing.
    """

    def __init__(self, keep_deleted: int = 500) -> None:
        self.lock = threading.Lock()
        self.histories: dict[str, History] = {}
        self.live: collections.deque[str] = collections.deque()
        self.deleted: collections.deque[str] = collections.deque()
        self.sliced: list[str] = []
        """Headless Services whose EndpointSlice keeps changing (never deleted)."""
        self.keep_deleted = keep_deleted

    def record(self, name: str, t: float, outcome: Outcome) -> None:
        """Append one change (lock held by the caller)."""
        self.histories.setdefault(name, []).append((t, outcome))
        if outcome == NXDOMAIN:
            self.deleted.append(name)
            while len(self.deleted) > self.keep_deleted:
                # in-flight queries keep their own reference to the history list
                self.histories.pop(self.deleted.popleft(), None)

    def pick(self, rng: random.Random) -> tuple[str, History] | None:
        """A churned name for the load: live two times in three, else recently deleted."""
        with self.lock:
            pool = self.live if (rng.random() < 2 / 3 or not self.deleted) else self.deleted
            if not pool:
                return None
            name = pool[rng.randrange(len(pool))]
            return name, self.histories[name]

    def pick_sliced(self, rng: random.Random) -> tuple[str, History] | None:
        """A headless Service whose endpoints churn."""
        with self.lock:
            if not self.sliced:
                return None
            name = self.sliced[rng.randrange(len(self.sliced))]
            return name, self.histories[name]

    def stable(self, now: float, k: int, rng: random.Random) -> list[tuple[str, History]]:
        """Up to ``k`` live, ``k`` deleted and ``k`` endpoint-churned names whose last change
        is older than LAG."""
        out: list[tuple[str, History]] = []
        with self.lock:
            for pool in (self.live, self.deleted, self.sliced):
                names = [n for n in pool if self.histories[n][-1][0] < now - LAG - 0.1]
                out.extend((n, self.histories[n]) for n in rng.sample(names, min(k, len(names))))
        return out


def split(name: str) -> tuple[str, str]:
    svc, ns = name.split(".")[:2]
    return svc, ns


class Churn:
    """Steady cluster churn: per tick one Service created and the oldest deleted, and the
    EndpointSlice of one headless Service rewritten with new addresses; every tenth tick a
    ClusterIP changes."""

    def __init__(self, api: fakeapi.FakeApiServer, truth: Truth, interval: float, pool: int,
                 slice_pool: int = 40) -> None:
        self.api, self.truth, self.interval, self.pool = api, truth, interval, pool
        self.slice_pool = slice_pool
        self.ops = 0
        self.slice_ops = 0
        self.seq = 0
        self.ip_seq = 0
        self.rng = random.Random(7)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-churn", daemon=True)
        self.error: BaseException | None = None

    def next_ip(self) -> str:
        self.ip_seq += 1
        k = self.ip_seq
        return f"10.{100 + (k >> 16) % 100}.{(k >> 8) & 255}.{k & 255}"

    def create(self) -> None:
        self.seq += 1
        svc, ns = f"churn-{self.seq}", f"ns-{self.seq % NAMESPACES}"
        ip = self.next_ip()
        with self.truth.lock:
            t = time.monotonic()
            self.api.add("services", fakeapi.service(ns, svc, cluster_ip=ip, ports=[("http", 80, "TCP")]))
            self.api.add("endpointslices", fakeapi.endpoint_slice(
                ns, f"{svc}-1", svc, ports=[("http", 8080, "TCP")], endpoints=[f"10.248.{self.seq % 250}.9"]))
            name = fqdn(svc, ns)
            self.truth.live.append(name)
            self.truth.record(name, t, (0, frozenset([ip])))
        self.ops += 1

    def delete_oldest(self) -> None:
        with self.truth.lock:
            name = self.truth.live.popleft()
            svc, ns = split(name)
            t = time.monotonic()
            self.api.delete("services", ns, svc)
            self.api.delete("endpointslices", ns, f"{svc}-1")
            self.truth.record(name, t, NXDOMAIN)
        self.ops += 1

    def create_sliced(self) -> None:
        """The headless Services whose endpoints churn (``eps-<k>`` in the ten namespaces)."""
        for k in range(self.slice_pool):
            svc, ns = f"eps-{k}", f"ns-{k % NAMESPACES}"
            self.api.add("services", fakeapi.service(ns, svc, headless=True,
                                                     ports=[("http", 8080, "TCP")]))
            with self.truth.lock:
                t = time.monotonic()
                ips = self._write_slice(svc, ns, create=True)
                name = fqdn(svc, ns)
                self.truth.sliced.append(name)
                self.truth.record(name, t, (0, frozenset(ips)))

    def _write_slice(self, svc: str, ns: str, *, create: bool = False) -> list[str]:
        ips = [self.next_ip() for _ in range(self.rng.randrange(1, 4))]
        obj = fakeapi.endpoint_slice(ns, f"{svc}-1", svc, ports=[("http", 8080, "TCP")],
                                     endpoints=ips)
        (self.api.add if create else self.api.update)("endpointslices", obj)
        return ips

    def change_slice(self) -> None:
        """New endpoint addresses for a headless Service not changed within LAG, so at most
        two of its states are ever in flight together."""
        now = time.monotonic()
        with self.truth.lock:
            names = [n for n in self.truth.sliced
                     if self.truth.histories[n][-1][0] < now - LAG - 0.2]
            if not names:
                return
            name = self.rng.choice(names)
            svc, ns = split(name)
            t = time.monotonic()
            ips = self._write_slice(svc, ns)
            self.truth.record(name, t, (0, frozenset(ips)))
        self.slice_ops += 1

    def change_ip(self) -> None:
        """A new ClusterIP for a middle-aged name stable for a while: it is not deleted within
        LAG of the change, so at most two of its states are ever in flight together."""
        now = time.monotonic()
        with self.truth.lock:
            live = list(self.truth.live)
            middle = live[len(live) // 4: len(live) // 2]
            names = [n for n in middle if self.truth.histories[n][-1][0] < now - LAG - 0.2]
            if not names:
                return
            name = self.rng.choice(names)
            svc, ns = split(name)
            ip = self.next_ip()
            t = time.monotonic()
            self.api.update("services", fakeapi.service(ns, svc, cluster_ip=ip, ports=[("http", 80, "TCP")]))
            self.truth.record(name, t, (0, frozenset([ip])))
        self.ops += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        try:
            tick = 0
            next_at = time.monotonic()
            while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                next_at += self.interval
                tick += 1
                self.create()
                if len(self.truth.live) > self.pool:
                    self.delete_oldest()
                if self.slice_pool:
                    self.change_slice()
                if tick % 10 == 5:
                    self.change_ip()
        except BaseException as err:  # reported as a soak error by the main thread
            self.error = err


# ---- load ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    kind: str
    name: str
    qtype: str
    wire: bytes
    outcome: Outcome


@dataclass(slots=True)
class Pending:
    sent: float
    kind: str
    name: str
    qtype: str
    outcome: Outcome | None
    history: History | None


MIX = ("A", "A", "A", "headless", "headless", "SRV", "NX", "churn", "churn", "slice", "ext",
       "extnx")
"""Query kinds in proportion: stable ClusterIP A (3/12), headless A (2/12), SRV, NXDOMAIN,
created/deleted Services (2/12), headless Services whose EndpointSlices churn, and with the
kubeadm Corefile forwarded names (through cache and forward to the upstream) and forwarded
NXDOMAINs (1/12 each). Without an upstream (``--corefile kubernetes``) those two are asked as
stable A names instead."""


class Load:
    """A steady rate of mixed queries from many sockets; every reply is checked."""

    def __init__(self, port: int, rate: int, targets: dict[str, list[Target]], truth: Truth,
                 clients: int = 32) -> None:
        self.port, self.rate, self.targets, self.truth = port, rate, targets, truth
        self.socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(clients)]
        for s in self.socks:
            s.setblocking(False)
            s.bind(("127.0.0.1", 0))
        self.sent = self.answered = self.lost = self.wrong = self.send_errors = 0
        self.by_kind: collections.Counter[str] = collections.Counter()
        self.examples: list[str] = []
        self.outstanding: dict[tuple[int, int], Pending] = {}
        self.rng = random.Random(11)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-load", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        # late replies of queries still in flight, then whatever is left is lost
        sel = selectors.DefaultSelector()
        for s in self.socks:
            sel.register(s, selectors.EVENT_READ)
        until = time.monotonic() + LOST_AFTER + 0.5
        while self.outstanding and time.monotonic() < until:
            for key, _ in sel.select(timeout=0.05):
                self._read(key.fileobj)  # type: ignore[arg-type]
            self._expire(time.monotonic())
        sel.close()
        self.lost += len(self.outstanding)
        self.outstanding.clear()
        for s in self.socks:
            s.close()

    def _note(self, text: str) -> None:
        # up to ten of each kind, so a few wrong answers are not hidden behind many lost ones
        kind = text.split(":", 1)[0]
        if sum(e.startswith(kind + ":") for e in self.examples) < 10:
            self.examples.append(text)

    def _expire(self, now: float) -> None:
        # insertion order is send order, so the oldest entries are first
        while self.outstanding:
            key = next(iter(self.outstanding))
            p = self.outstanding[key]
            if now - p.sent <= LOST_AFTER:
                return
            del self.outstanding[key]
            self.lost += 1
            self._note(f"lost: {p.name} {p.qtype} ({p.kind})")

    def _read(self, s: socket.socket) -> None:
        while True:
            try:
                data = s.recv(4096)
            except BlockingIOError:
                return
            now = time.monotonic()
            if len(data) < 12:
                continue
            p = self.outstanding.pop((s.fileno(), struct.unpack_from("!H", data)[0]), None)
            if p is None:
                continue  # a reply after LOST_AFTER, already counted as lost
            self.answered += 1
            got = outcome_of(data, p.qtype)
            if p.history is not None:
                with self.truth.lock:
                    ok = acceptable(p.history, p.sent, now)
            else:
                assert p.outcome is not None
                ok = {p.outcome}
            if got not in ok:
                self.wrong += 1
                self._note(f"wrong: {p.name} {p.qtype} ({p.kind}) got {got} want one of {ok}")

    def _send(self, now: float, i: int) -> None:
        kind = MIX[i % len(MIX)]
        history: History | None = None
        if kind in ("ext", "extnx") and not self.targets.get(kind):
            kind = "A"
        if kind in ("churn", "slice"):
            picked = self.truth.pick(self.rng) if kind == "churn" else \
                self.truth.pick_sliced(self.rng)
            if picked is None:
                kind = "A"
            else:
                name, history = picked
                wire, qtype, outcome = wire_name(name), "A", None
        if kind not in ("churn", "slice"):
            t = self.targets[kind][self.rng.randrange(len(self.targets[kind]))]
            name, wire, qtype, outcome = t.name, t.wire, t.qtype, t.outcome
        s = self.socks[i % len(self.socks)]
        qid = self.rng.getrandbits(16)
        while (s.fileno(), qid) in self.outstanding:
            qid = self.rng.getrandbits(16)
        try:
            s.sendto(query_packet(qid, wire, qtype), ("127.0.0.1", self.port))
        except OSError as err:
            self.send_errors += 1
            self._note(f"send error: {err}")
            return
        self.sent += 1
        self.by_kind[kind] += 1
        self.outstanding[(s.fileno(), qid)] = Pending(now, kind, name, qtype, outcome, history)

    def _run(self) -> None:
        try:
            sel = selectors.DefaultSelector()
            for s in self.socks:
                sel.register(s, selectors.EVENT_READ)
            interval = 1.0 / self.rate
            next_send = time.monotonic()
            i = 0
            while not self._stop.is_set():
                now = time.monotonic()
                # after a stall (GC, a busy machine) catch up at most 0.1 s of queries
                next_send = max(next_send, now - 0.1)
                while next_send <= now:
                    self._send(now, i)
                    i += 1
                    next_send += interval
                for key, _ in sel.select(timeout=max(0.0, next_send - time.monotonic())):
                    self._read(key.fileobj)  # type: ignore[arg-type]
                self._expire(time.monotonic())
            sel.close()
        except BaseException as err:  # reported as a soak error by the main thread
            self.error = err


class Sampler:
    """Every 0.5 s, ask a few churned names stable for over LAG; each must match the truth."""

    def __init__(self, port: int, truth: Truth, per_round: int = 2) -> None:
        self.port, self.truth, self.per_round = port, truth, per_round
        self.checked = self.wrong = self.lost = 0
        self.examples: list[str] = []
        self.rng = random.Random(13)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(LOST_AFTER * 2 * self.per_round + 5)

    def _ask(self, sock: socket.socket, name: str, history: History) -> None:
        qid = self.rng.getrandbits(16)
        sent = time.monotonic()
        sock.sendto(query_packet(qid, wire_name(name), "A"), ("127.0.0.1", self.port))
        self.checked += 1
        while True:
            left = sent + LOST_AFTER - time.monotonic()
            if left <= 0:
                self.lost += 1
                self._note(f"sample lost: {name}")
                return
            sock.settimeout(left)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            if len(data) >= 12 and struct.unpack_from("!H", data)[0] == qid:
                break
        received = time.monotonic()
        got = outcome_of(data, "A")
        with self.truth.lock:
            ok = acceptable(history, sent, received)
        if got not in ok:
            self.wrong += 1
            self._note(f"sample wrong: {name} got {got} want one of {ok}")

    def _note(self, text: str) -> None:
        # up to ten of each kind, so a few wrong answers are not hidden behind many lost ones
        kind = text.split(":", 1)[0]
        if sum(e.startswith(kind + ":") for e in self.examples) < 10:
            self.examples.append(text)

    def _run(self) -> None:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", 0))
                while not self._stop.wait(0.5):
                    for name, history in self.truth.stable(time.monotonic(), self.per_round, self.rng):
                        self._ask(sock, name, history)
        except BaseException as err:  # reported as a soak error by the main thread
            self.error = err


# ---- cluster, kdns process, measurements ---------------------------------------------------


def seed(api: fakeapi.FakeApiServer) -> dict[str, list[Target]]:
    """500 Services over 10 namespaces, each with a slice; returns the stable query targets."""
    targets: dict[str, list[Target]] = {"A": [], "headless": [], "SRV": [], "NX": []}
    namespaces = [f"ns-{k}" for k in range(NAMESPACES)]
    api.bulk_load("namespaces", [fakeapi.namespace(ns) for ns in namespaces])
    services, slices = [], []
    for k in range(SERVICES):
        ns, svc = namespaces[k % NAMESPACES], f"svc-{k}"
        name = fqdn(svc, ns)
        if k % 5 == 0:
            ips = [f"10.{244 + j}.{k >> 8}.{k & 255}" for j in range(3)]
            services.append(fakeapi.service(ns, svc, headless=True, ports=[("http", 8080, "TCP")]))
            slices.append(fakeapi.endpoint_slice(ns, f"{svc}-1", svc, ports=[("http", 8080, "TCP")],
                                                 endpoints=ips))
            targets["headless"].append(Target("headless", name, "A", wire_name(name),
                                              (0, frozenset(ips))))
        else:
            ip = f"10.96.{k >> 8}.{k & 255}"
            services.append(fakeapi.service(ns, svc, cluster_ip=ip, ports=[("http", 80, "TCP")]))
            slices.append(fakeapi.endpoint_slice(ns, f"{svc}-1", svc, ports=[("http", 8080, "TCP")],
                                                 endpoints=[f"10.247.{k >> 8}.{k & 255}"]))
            targets["A"].append(Target("A", name, "A", wire_name(name), (0, frozenset([ip]))))
            srv = f"_http._tcp.{name}"
            targets["SRV"].append(Target("SRV", srv, "SRV", wire_name(srv),
                                         (0, frozenset([f"0 100 80 {name}"]))))
        nx = fqdn(f"missing-{k}", ns)
        targets["NX"].append(Target("NX", nx, "A", wire_name(nx), NXDOMAIN))
    api.bulk_load("services", services)
    api.bulk_load("endpointslices", slices)
    return targets


def external_targets() -> dict[str, list[Target]]:
    """Names the upstream answers: A records through forward and cache, and NXDOMAINs."""
    ext = [Target("ext", f"{n}.", "A", wire_name(n), (0, frozenset([ip])))
           for n, ip in EXT.items()]
    nx = [Target("extnx", f"n{k}.{NX_DOMAIN}.", "A", wire_name(f"n{k}.{NX_DOMAIN}"), NXDOMAIN)
          for k in range(50)]
    return {"ext": ext, "extnx": nx}


class Bulk:
    """dnsperf at a high fixed rate on the stable names (answers counted, not checked one by
    one): what lets the soak run at tens of thousands of queries a second, beyond what the
    checking Python client sends."""

    def __init__(self, port: int, rate: int, seconds: float, targets: dict[str, list[Target]],
                 tmp: Path) -> None:
        self.queries = self.completed = self.lost = 0
        self.qps = 0.0
        self.rcodes: dict[str, int] = {}
        self.output = ""
        qfile = tmp / "bulk-queries.txt"
        lines = [f"{t.name} {t.qtype}" for kind in ("A", "headless", "SRV", "NX", "ext", "extnx")
                 for t in targets.get(kind, [])]
        qfile.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile), "-l",
             f"{seconds:.0f}", "-Q", str(rate), "-c", "8", "-q", "2000", "-t", "2", "-b", "1024"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self, timeout: float) -> None:
        try:
            self.output, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.output, _ = self.proc.communicate()
        m = re.search(r"Queries sent:\s+(\d+)", self.output)
        self.queries = int(m[1]) if m else 0
        m = re.search(r"Queries completed:\s+(\d+)", self.output)
        self.completed = int(m[1]) if m else 0
        m = re.search(r"Queries lost:\s+(\d+)", self.output)
        self.lost = int(m[1]) if m else self.queries - self.completed
        m = re.search(r"Queries per second:\s+([\d.]+)", self.output)
        self.qps = float(m[1]) if m else 0.0
        m = re.search(r"Response codes:\s+(.*)", self.output)
        if m:
            self.rcodes = {k: int(v) for k, v in re.findall(r"([A-Z]+) (\d+)", m[1])}


def rss_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` plus its children (with ``--workers``: the supervisor and its
    workers), or None once it is gone."""
    own = _rss_one(pid)
    if own is None:
        return None
    return own + sum(_rss_one(k) or 0.0 for k in children(pid))


def _rss_one(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def socket_inodes(pids: list[int]) -> set[int]:
    """Inodes of the sockets the processes ``pids`` hold open."""
    inodes: set[int] = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    return inodes


def udp_drops(inodes: set[int]) -> int:
    """Datagrams the kernel dropped on these UDP sockets (the ``drops`` column of
    /proc/net/udp: a full receive buffer). Per socket, so other jobs on a shared machine do not
    count, unlike ``UdpRcvbufErrors`` in /proc/net/snmp."""
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if len(cols) >= 13 and int(cols[9]) in inodes:
                        total += int(cols[-1])
        except OSError:
            continue
    return total


def children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                kids.extend(int(x) for x in f.read().split())
    except OSError:
        pass
    return kids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes ``pids`` have used so far."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_delay(pids: list[int]) -> float:
    """Seconds the threads of ``pids`` have spent runnable but waiting for a CPU
    (/proc/PID/task/TID/schedstat, second field): how much the machine held kdns back."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total / 1e9


def attribute(*, lost: int, other_errors: int, checked: int, server_drops: int,
              requests: int | None, answered_all: bool, sent: int, cpu_wait: float) -> bool:
    """Are the checked queries lost (no reply within LOST_AFTER) the machine's doing rather
    than kdns's? Only when nothing else went wrong, kdns's own counters show it received every
    query sent (nothing dropped on its socket or shed) and answered each, its threads waited
    for a CPU for at least STARVED of the run, and the late replies are at most
    STARVED_LOSS_MAX of the checked queries."""
    return (0 < lost <= checked * STARVED_LOSS_MAX and other_errors == 0 and server_drops == 0
            and requests == sent and answered_all and cpu_wait >= STARVED)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), ""
    except OSError:
        return 0, ""


def metric_sum(metrics: str, name: str) -> int:
    return int(sum(float(m.group(1)) for m in
                   re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", metrics, re.M)))


def requests_total(metrics: str) -> int | None:
    """Queries of the types the soak sends (A, SRV): the loop plugin's own HINFO probes are
    counted under another type."""
    values = [float(m.group(2)) for m in
              re.finditer(r"^coredns_dns_requests_total(\{[^}]*\})? (\S+)$", metrics, re.M)
              if m.group(1) is None or re.search(r'type="(A|SRV)"', m.group(1))]
    return int(sum(values)) if values else None


class Kdns:
    """One ``kdns serve`` subprocess; its output is drained and ERROR lines are kept."""

    def __init__(self, corefile: Path, workers: int = 1, cpu: int | None = None) -> None:
        # taskset execs kdns, so the PID held is kdns's own (for /proc reads and signals)
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        self.proc = subprocess.Popen(
            [*pin, sys.executable, "-m", "kdns.cli", "serve", "--conf", str(corefile),
             "--dns-addr", "127.0.0.1", "--dns-port", "0", "--log-level", "warning",
             "--workers", str(workers)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        self.error_lines: list[str] = []
        self.warnings = 0
        self.warning_lines: list[str] = []
        """The first WARNING lines (a broken watch, a relist): context for a late or stale
        answer; they are not errors."""
        self.tail: collections.deque[str] = collections.deque(maxlen=20)

    def wait_serving(self, timeout: float = 30.0) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            self.tail.append(line)
            m = re.match(r"kdns: serving on 127\.0\.0\.1:(\d+)", line)
            if m:
                threading.Thread(target=self._drain, name="soak-kdns-log", daemon=True).start()
                return int(m.group(1))
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"kdns exited with {self.proc.returncode}: {''.join(self.tail)}")
        raise RuntimeError("kdns did not start serving in time")

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.tail.append(line)
            if "[ERROR]" in line or "[CRITICAL]" in line or line.startswith("Traceback"):
                self.error_lines.append(line.rstrip())
            elif "[WARNING]" in line:
                self.warnings += 1
                if len(self.warning_lines) < 5:
                    self.warning_lines.append(line.rstrip())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def poll(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not within {timeout:g}s")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="duration (max 240)")
    ap.add_argument("--quick", action="store_true", help="about 20 s (warm-up 5 s, RSS every 1 s)")
    ap.add_argument("--rate", type=int, default=1000, help="queries per second (max 20000)")
    ap.add_argument("--workers", type=int, default=1,
                    help="kdns serve --workers N (max 8); memory is then the supervisor's plus "
                         "the workers'")
    ap.add_argument("--churn-interval", type=float, default=0.1,
                    help="seconds between churn ticks (one create + one delete; min 0.01)")
    ap.add_argument("--churn-pool", type=int, default=50,
                    help="churned Services alive at once (max 5000)")
    ap.add_argument("--slice-pool", type=int, default=40,
                    help="headless Services whose EndpointSlice is rewritten, one per churn "
                         "tick (0: none; max 1000)")
    ap.add_argument("--corefile", choices=("kubeadm", "kubernetes"), default="kubeadm",
                    help="kubeadm: kubeadm's Corefile with forward to a dnsmasq the soak starts "
                         "(default); kubernetes: the kubernetes plugin alone")
    ap.add_argument("--bulk-rate", type=int, default=0,
                    help="add dnsperf at this many queries per second on the stable names "
                         "for the whole run (0: off; max 100000), e.g. 20000")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin kdns to one CPU and the load (this script, dnsperf, "
                         "dnsmasq) to another (pinned by default with 2+ CPUs and taskset)")
    args = ap.parse_args(argv)
    minutes = 20 / 60 if args.quick else max(0.05, min(args.minutes, 240.0))
    warmup, rss_every = (5.0, 1.0) if args.quick else (10.0, 5.0)
    progress_every = 10 if args.quick else 12  # RSS readings between progress lines
    rate = max(1, min(args.rate, 20000))
    bulk_rate = max(0, min(args.bulk_rate, 100_000))
    if args.corefile == "kubeadm" and not dnsmasq_available():
        ap.error("--corefile kubeadm needs dnsmasq (Debian dnsmasq-base; scripts/system-deps)")
    if bulk_rate and shutil.which("dnsperf") is None:
        ap.error("--bulk-rate needs dnsperf (Debian dnsperf; scripts/system-deps)")
    interval = max(0.01, min(args.churn_interval, 60.0))
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu: int | None = None
    if not args.no_pin and len(cpus) >= 2 and shutil.which("taskset") is not None:
        # before any thread or child starts, so all of them inherit the load CPU
        server_cpu = cpus[-1]
        os.sched_setaffinity(0, {cpus[0]})
        pinning = f"kdns on CPU {server_cpu}, load/API/dnsperf/dnsmasq on CPU {cpus[0]}"
    else:
        pinning = "not pinned (kdns and the load share the CPUs)"
    pool = max(1, min(args.churn_pool, 5000))
    duration = minutes * 60

    tmp = Path(tempfile.mkdtemp(prefix="kdns-soak-"))
    api = fakeapi.FakeApiServer(bookmark_interval=1.0, history_limit=20_000)
    truth = Truth()
    churn = Churn(api, truth, interval, pool, max(0, min(args.slice_pool, 1000)))
    upstream = Upstream(tmp) if args.corefile == "kubeadm" else None
    bulk: Bulk | None = None
    kdns: Kdns | None = None
    load: Load | None = None
    sampler: Sampler | None = None
    rss: list[float] = []
    rss_start: float | None = None
    metrics_total: int | None = None
    shed = 0
    kdns_cpu = kdns_wait = 0.0
    served: dict[str, int] = {}
    drops = {"kdns": 0, "checker": 0, "dnsperf": 0}
    kdns_sockets: set[int] = set()
    load_avg = [os.getloadavg()[0]]
    exit_code: int | None = None
    early_exit = False
    try:
        api.start()
        targets = seed(api)
        for _ in range(pool):
            churn.create()
        churn.create_sliced()
        churn.ops = 0  # count the churn of the run, not the initial pool
        kubeconfig = api.write_kubeconfig(str(tmp / "kubeconfig"))
        ready_port, prom_port = free_tcp_port(), free_tcp_port()
        corefile = tmp / "Corefile"
        if upstream is not None:
            upstream.start()
            targets.update(external_targets())
            corefile.write_text(kubeadm_corefile(
                f"kubeconfig {kubeconfig}", upstream.port, ready=ready_port,
                prometheus=prom_port, health=free_tcp_port(), lameduck=1.0))
        else:
            corefile.write_text(
                f".:53 {{\n    errors\n    ready 127.0.0.1:{ready_port}\n"
                f"    prometheus 127.0.0.1:{prom_port}\n"
                f"    kubernetes {ZONE} {{\n        kubeconfig {kubeconfig}\n    }}\n}}\n")
        kdns = Kdns(corefile, max(1, min(args.workers, 8)), server_cpu)
        print(f"soak: kdns pid {kdns.proc.pid}, temp dir {tmp}", file=sys.stderr, flush=True)
        port = kdns.wait_serving()
        poll(lambda: http_get(f"http://127.0.0.1:{ready_port}/ready")[0] == 200, 30, "/ready 200")
        kdns_sockets = socket_inodes([kdns.proc.pid, *children(kdns.proc.pid)])
        print(f"soak: serving on 127.0.0.1:{port}; corefile {args.corefile}; {SERVICES} "
              f"services + {pool} churned + {churn.slice_pool} with churning endpoints, "
              f"{rate} qps checked + {bulk_rate} qps bulk for {round(minutes, 2):g} min, "
              f"churn every {interval:g}s; {pinning}; load average {load_avg[0]:.2f}", flush=True)

        def read_drops() -> None:
            # per-socket counters vanish with the socket, so keep the highest reading
            now_drops = {"kdns": udp_drops(kdns_sockets),
                         "checker": udp_drops(socket_inodes([os.getpid()])),
                         "dnsperf": udp_drops(socket_inodes([bulk.proc.pid])) if bulk else 0}
            for k, v in now_drops.items():
                drops[k] = max(drops[k], v)

        load = Load(port, rate, targets, truth)
        sampler = Sampler(port, truth)
        t0 = time.monotonic()
        cpu0 = cpu_seconds([kdns.proc.pid, *children(kdns.proc.pid)])
        wait0 = run_delay([kdns.proc.pid, *children(kdns.proc.pid)])
        churn.start()
        load.start()
        sampler.start()
        if bulk_rate:
            bulk = Bulk(port, bulk_rate, duration, targets, tmp)
        next_rss = t0
        while True:
            now = time.monotonic()
            if now - t0 >= duration:
                break
            if now >= next_rss:
                value = rss_mb(kdns.proc.pid)
                if value is not None:
                    rss.append(value)
                    if rss_start is None and now - t0 >= warmup:
                        rss_start = value
                        print(f"soak: rss after {warmup:g}s warm-up {value:.1f} MB", flush=True)
                    if len(rss) % progress_every == 0:
                        print(f"soak: {now - t0:.0f}s sent={load.sent} lost={load.lost} "
                              f"wrong={load.wrong + sampler.wrong} rss_mb={value:.1f} "
                              f"churn_ops={churn.ops}", flush=True)
                read_drops()
                next_rss += rss_every
            if kdns.proc.poll() is not None:
                early_exit = True
                print(f"soak: kdns exited early with {kdns.proc.returncode}", flush=True)
                break
            if any(x.error for x in (churn, load, sampler)):
                break
            time.sleep(max(0.0, min(next_rss, t0 + duration) - time.monotonic()))
        read_drops()
        load_avg.append(os.getloadavg()[0])
        kdns_cpu = ((cpu_seconds([kdns.proc.pid, *children(kdns.proc.pid)]) - cpu0)
                    / max(1e-9, time.monotonic() - t0))
        kdns_wait = ((run_delay([kdns.proc.pid, *children(kdns.proc.pid)]) - wait0)
                     / max(1e-9, time.monotonic() - t0))
        churn.stop()
        sampler.stop()
        load.stop()
        if bulk is not None:
            bulk.stop(timeout=15)
        if not early_exit:
            value = rss_mb(kdns.proc.pid)
            if value is not None:
                rss.append(value)
            status, body = http_get(f"http://127.0.0.1:{prom_port}/metrics")
            metrics_total = requests_total(body) if status == 200 else None
            shed = metric_sum(body, "kdns_udp_shed_total") if status == 200 else 0
            if status == 200:
                served = {name: metric_sum(body, name) for name in (
                    "coredns_dns_requests_total", "coredns_dns_responses_total",
                    "coredns_forward_max_concurrent_rejects_total", "coredns_panics_total",
                    "kdns_fast_path_entries")}
            kdns_sockets |= socket_inodes([kdns.proc.pid, *children(kdns.proc.pid)])
            drops["kdns"] = max(drops["kdns"], udp_drops(kdns_sockets))
    finally:
        churn.stop()
        if sampler is not None:
            sampler.stop()
        if load is not None:
            load.stop()
        if bulk is not None and bulk.proc.poll() is None:
            bulk.proc.kill()
            bulk.proc.wait()
        if kdns is not None:
            exit_code = kdns.stop()
        if upstream is not None:
            upstream.stop()
        api.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    assert load is not None and sampler is not None and kdns is not None
    thread_errors = [f"{type(x.error).__name__}: {x.error}" for x in (churn, load, sampler) if x.error]
    log_errors = len(kdns.error_lines)
    lost = load.lost + sampler.lost
    wrong = load.wrong + sampler.wrong
    bulk_lost = bulk.lost if bulk is not None else 0
    errors = (lost + wrong + load.send_errors + log_errors + len(thread_errors)
              + int(early_exit) + int(exit_code != 0) + bulk_lost)
    queries = load.sent + sampler.checked + (bulk.queries if bulk is not None else 0)
    start = rss_start if rss_start is not None else (rss[0] if rss else 0.0)
    end = rss[-1] if rss else 0.0
    bound = start * RSS_FACTOR + RSS_SLACK_MB
    memory_ok = bool(rss) and end <= bound
    mix = " ".join(f"{k}={load.by_kind[k]}"
                   for k in ("A", "headless", "SRV", "NX", "churn", "slice", "ext", "extnx"))
    print(f"soak: corefile {args.corefile}; mix {mix}; sampled stable churned names: "
          f"{sampler.checked}; EndpointSlice changes {churn.slice_ops}")
    if bulk is not None:
        print(f"soak: bulk dnsperf -Q {bulk_rate}: sent {bulk.queries} completed "
              f"{bulk.completed} lost {bulk.lost} qps {bulk.qps:.0f} rcodes {bulk.rcodes}")
        if not bulk.queries:
            print(f"soak:   dnsperf said: {bulk.output.strip()[-400:]}")
            errors += 1
    print(f"soak: metrics coredns_dns_requests_total={metrics_total} vs queries sent={queries}; "
          f"kdns_udp_shed_total={shed}")
    print("soak: kdns counters (all types) " + " ".join(f"{k}={v}" for k, v in served.items()))
    print(f"soak: UDP receive-buffer drops (/proc/net/udp, per socket): kdns={drops['kdns']} "
          f"checker={drops['checker']} dnsperf={drops['dnsperf']}; kdns CPU use "
          f"{kdns_cpu:.0%} of one core, waiting for a CPU {kdns_wait:.0%}; load average "
          f"{' -> '.join(f'{x:.2f}' for x in load_avg)}; {pinning}")
    print(f"soak: memory bound rss_end <= rss_start * {RSS_FACTOR:g} + {RSS_SLACK_MB:g} MB "
          f"= {bound:.1f} MB: {'ok' if memory_ok else 'EXCEEDED'}")
    print(f"soak: kdns exit code {exit_code}, ERROR log lines {log_errors}, send errors "
          f"{load.send_errors}, thread errors {thread_errors}")
    examples = load.examples + sampler.examples
    wrong_first = sorted(examples, key=lambda e: "wrong" not in e.split(":", 1)[0])
    print(f"soak: kdns WARNING log lines {kdns.warnings}")
    for line in (wrong_first[:10] + kdns.error_lines)[:15] + kdns.warning_lines:
        print(f"soak:   {line}")
    verdict = "PASS" if errors == 0 and memory_ok else "FAIL"
    # requests of the types sent (A, SRV) equal the queries sent; responses, of every type,
    # equal the requests of every type (the loop plugin's probes included)
    machine = attribute(
        lost=lost, other_errors=errors - lost, checked=load.sent + sampler.checked,
        server_drops=drops["kdns"] + shed, requests=metrics_total,
        answered_all=bool(served) and served["coredns_dns_responses_total"] == served[
            "coredns_dns_requests_total"], sent=queries, cpu_wait=kdns_wait)
    print(f"soak: loss attribution: kdns socket drops + shed {drops['kdns'] + shed}, requests "
          f"{metrics_total} of {queries} sent, kdns waited for a CPU {kdns_wait:.0%} of the "
          f"run; lost by a machine that did not keep up: {'yes' if machine else 'no'}")
    print(f"soak: minutes={round(minutes, 2):g} queries={queries} errors={errors} lost={lost} "
          f"wrong={wrong} rss_start_mb={start:.1f} rss_end_mb={end:.1f} "
          f"rss_max_mb={max(rss, default=0.0):.1f} churn_ops={churn.ops} verdict={verdict}",
          flush=True)
    return 0 if verdict == "PASS" else 1


def _interrupt(signum: int, _frame: object) -> None:
    # SIGTERM takes the same way out as Ctrl-C, through main()'s clean-up
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    signal.signal(signal.SIGTERM, _interrupt)
    # a background job may start with SIGINT ignored; Ctrl-C must still clean up
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        sys.exit(main())
    except KeyboardInterrupt as err:
        print(f"soak: interrupted ({str(err) or 'SIGINT'}); kdns stopped, temp dir removed", file=sys.stderr)
        sys.exit(130)
