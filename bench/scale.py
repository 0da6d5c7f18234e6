#!/usr/bin/env python3
"""Memory, sync and change latency at scale, and a 10,000-endpoint headless service.

This script (a benchmark, not a test) owns two measurements:

**Scale** (``--sizes 10000,50000``): for each size N it starts the fake API server of
``tests/fakeapi.py`` *in this process* (on the load CPU) holding N Services (3 endpoints each in
one EndpointSlice, a fifth of them headless) across namespaces, writes a kubeconfig for it and
starts ``kdns serve`` (pinned to the server CPU) on a Corefile reading the cluster through that
kubeconfig. It measures:

- **ready**: seconds from starting the process to ``/ready`` answering 200 (lists synced);
- **RSS ready / steady**: VmRSS when ready, and again after a short settle;
- **relist peak**: the API forgets its history (``compact``) and drops every watch, so kdns's
  informers get 410 Gone and list everything again; VmRSS is sampled every 10 ms from the drop
  until the lists and watches are back, and the peak is compared with the steady RSS;
- **change visible**: under a background query load (dnsperf at a fixed rate, bounded in time),
  one Service's ClusterIP is changed through the API and DNS is polled every 2 ms until the new
  address is answered; repeated ``--changes`` times: p50 and max.

**Headless at scale**: kdns serves (from manifests) one headless service with
``--headless-endpoints`` (10,000) ready endpoints and one with 10. Over UDP with EDNS 1232 the
answer must fit in 1232 bytes with TC set; without EDNS in 512 bytes with TC; over TCP it must
carry every address. Then 1,000 sequential UDP queries for each name: the per-query time must
not grow with the endpoint count (the fast path stores the truncated reply).

Goals (issue 4) are printed next to each figure as PASS/FAIL, plus ``GOAL`` and ``SCALE`` lines
for scripts. Every process and thread it starts is stopped on the way out.

    PYTHONPATH=. .venv/bin/python bench/scale.py               # 10k and 50k, ~2-3 minutes
    PYTHONPATH=. .venv/bin/python bench/scale.py --quick       # 500 services, ~15 s
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

from udp_qps import (  # noqa: E402
    BenchError,
    Children,
    Pinning,
    _log,
    choose_pinning,
    free_port,
    proc_status_kb,
    run_main,
)

NAMESPACES = 100
ENDPOINTS = 3
HEADLESS_EVERY = 5
"""One Service in this many is headless."""
READY_GOAL_S = {10_000: 5.0, 50_000: 25.0}
RELIST_GOAL = 1.3
CHANGE_P50_GOAL_MS = 50.0
CHANGE_MAX_GOAL_MS = 500.0
HEADLESS_COST_GOAL = 1.5
"""Per-query time of the big headless name / the 10-endpoint one, at most."""


def ready_goal(n: int) -> float:
    # Linear between the two stated points (5 s at 10k, 25 s at 50k), for other sizes.
    return max(1.0, n / 2000)


def rss_goal_mb(services: int, pods: int) -> float:
    """CoreDNS's published sizing (reference §4): (Pods + Services) / 1000 + 54 MB."""
    return (pods + services) / 1000 + 54


def mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# --------------------------------------------------------------------------------------------
# DNS


def _query(name: str, qtype: int, qid: int, edns: int | None = None) -> bytes:
    wire = b"".join(bytes([len(x)]) + x.encode() for x in name.rstrip(".").split("."))
    ar = 1 if edns is not None else 0
    msg = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, ar) + wire + b"\0" + \
        struct.pack(">HH", qtype, 1)
    if edns is not None:
        msg += b"\0" + struct.pack(">HHIH", 41, edns, 0, 0)
    return msg


def _a_answers(reply: bytes) -> list[str]:
    from dnslib import DNSRecord

    return [str(r.rdata) for r in DNSRecord.parse(reply).rr if r.rtype == 1]


class Prober:
    """Sequential UDP queries on one socket (bounded by a timeout each)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(1.0)
        self.qid = 0

    def ask(self, name: str, qtype: int = 1, edns: int | None = None) -> bytes:
        self.qid = (self.qid + 1) & 0xFFFF
        self.sock.send(_query(name, qtype, self.qid, edns))
        while True:
            data = self.sock.recv(65535)
            if len(data) >= 2 and struct.unpack_from(">H", data)[0] == self.qid:
                return data

    def close(self) -> None:
        self.sock.close()


def tcp_ask(port: int, name: str, qtype: int = 1) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        msg = _query(name, qtype, 1)
        s.sendall(struct.pack(">H", len(msg)) + msg)
        buf = b""
        while len(buf) < 2 or len(buf) < 2 + struct.unpack_from(">H", buf)[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise BenchError("TCP connection closed before the whole answer")
            buf += chunk
        return buf[2 : 2 + struct.unpack_from(">H", buf)[0]]


# --------------------------------------------------------------------------------------------
# kdns


@dataclass
class Kdns:
    proc: subprocess.Popen[bytes]
    port: int
    ready_port: int
    log: Path
    started: float

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ready_port}/ready",
                                        timeout=1) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def rss_kb(self) -> int:
        v = tree_rss_kb(self.proc.pid)
        if v is None:
            raise BenchError(f"kdns is gone\n{self.log_tail()}")
        return v

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            return "(no kdns log)"
        return "kdns log:\n" + "\n".join(f"  | {x}" for x in text)


def tree_rss_kb(pid: int) -> int | None:
    """VmRSS of ``pid`` plus its children (``--workers N``: the supervisor and its workers;
    shared pages are counted once per process, so the sum errs high). None once it is gone."""
    own = proc_status_kb(pid, "VmRSS")
    if own is None:
        return None
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids.extend(int(x) for x in f.read().split())
    except OSError:
        pass
    return own + sum(proc_status_kb(k, "VmRSS") or 0 for k in kids)


WORKERS = 1
"""``--kdns-workers``: kdns serve --workers N (1: the single-process server)."""


def start_kdns(children: Children, pin: Pinning, tmp: Path, source: str) -> Kdns:
    port, ready_port, health, prom = (free_port() for _ in range(4))
    corefile = tmp / "Corefile"
    # kubeadm's plugins minus forward (nothing upstream here), and startup_timeout long enough
    # that the process waits for the lists instead of serving SERVFAIL meanwhile.
    corefile.write_text(
        f".:{port} {{\n"
        "    errors\n"
        f"    health 127.0.0.1:{health}\n"
        f"    ready 127.0.0.1:{ready_port}\n"
        "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
        f"        {source}\n"
        "        pods insecure\n"
        "        fallthrough in-addr.arpa ip6.arpa\n"
        "        ttl 30\n"
        "    }\n"
        f"    prometheus 127.0.0.1:{prom}\n"
        "    cache 30 {\n"
        "        disable success cluster.local\n"
        "        disable denial cluster.local\n"
        "    }\n"
        "}\n"
    )
    log = tmp / "kdns.log"
    cmd = [*pin.prefix(pin.server_cpu), sys.executable, "-m", "kdns.cli", "serve",
           "--conf", str(corefile), "--dns-addr", "127.0.0.1", "--log-level", "warning",
           "--workers", str(WORKERS)]
    started = time.monotonic()
    with log.open("wb") as out:
        proc = children.start(cmd, cwd=str(REPO), stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT)
    _log(f"kdns started (pid {proc.pid}) on 127.0.0.1:{port}")
    return Kdns(proc, port, ready_port, log, started)


def answers(port: int, name: str) -> bool:
    """True once the server answers ``name`` with an address (it may bind after /ready)."""
    probe = Prober(port)
    probe.sock.settimeout(0.2)
    try:
        return bool(_a_answers(probe.ask(name)))
    except (OSError, TimeoutError):
        return False
    finally:
        probe.close()


def wait_for(cond: Callable[[], bool], timeout: float, what: str, kdns: Kdns,
             step: float = 0.01) -> float:
    """Seconds until ``cond()`` held; BenchError (with kdns's log) after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if kdns.proc.poll() is not None:
            raise BenchError(f"kdns exited with {kdns.proc.returncode}\n{kdns.log_tail()}")
        if cond():
            return time.monotonic() - t0
        time.sleep(step)
    raise BenchError(f"{what} did not happen within {timeout:.0f} s\n{kdns.log_tail()}")


# --------------------------------------------------------------------------------------------
# scale


def cluster_objects(n: int) -> dict[str, list[dict[str, object]]]:
    from tests.fakeapi import endpoint_slice, namespace, service

    svcs: list[dict[str, object]] = []
    slices: list[dict[str, object]] = []
    for i in range(n):
        ns = f"ns{i % NAMESPACES}"
        headless = i % HEADLESS_EVERY == 0
        ip = f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}"
        svcs.append(service(ns, f"svc{i}", cluster_ip=None if headless else ip,
                            headless=headless, ports=[("http", 80, "TCP")],
                            selector={"app": f"svc{i}"}))
        base = 3 * i
        eps = [f"10.{128 + base // 65536}.{base // 256 % 256 + k // 256}.{(base + k) % 256}"
               for k in range(ENDPOINTS)]
        slices.append(endpoint_slice(ns, f"svc{i}-abcde", f"svc{i}", endpoints=eps,
                                     ports=[("http", 80, "TCP")]))
    return {"namespaces": [namespace(f"ns{k}") for k in range(min(n, NAMESPACES))],
            "services": svcs, "endpointslices": slices}


def service_ip(i: int) -> str:
    return f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}"


@dataclass
class ScaleResult:
    n: int
    ready_s: float = 0.0
    rss_ready_mb: float = 0.0
    rss_steady_mb: float = 0.0
    relist_peak_mb: float = 0.0
    relist_s: float = 0.0
    change_ms: list[float] = field(default_factory=list)
    load_qps: float | None = None
    goals: dict[str, tuple[str, bool]] = field(default_factory=dict)


class RssSampler:
    """Samples a process's VmRSS every ``interval`` seconds in a thread until stopped."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid, self.interval = pid, interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            v = tree_rss_kb(self.pid)
            if v is not None:
                self.peak_kb = max(self.peak_kb, v)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def background_load(children: Children, pin: Pinning, port: int, names: Sequence[str],
                    tmp: Path, seconds: float, rate: int) -> subprocess.Popen[bytes] | None:
    """dnsperf at a fixed rate for at most ``seconds`` (None without dnsperf)."""
    if shutil.which("dnsperf") is None:
        return None
    qfile = tmp / "scale-queries.txt"
    qfile.write_text("".join(f"{n} A\n" for n in names))
    cmd = [*pin.prefix(pin.load_cpu), "dnsperf", "-s", "127.0.0.1", "-p", str(port),
           "-d", str(qfile), "-l", f"{seconds:g}", "-Q", str(rate), "-q", "100", "-t", "1"]
    return children.start(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)


def run_scale(n: int, args: argparse.Namespace, children: Children, pin: Pinning,
              tmp: Path) -> ScaleResult:
    from tests.fakeapi import FakeApiServer, namespace

    res = ScaleResult(n)
    _log(f"scale {n}: building {n} services + {n} EndpointSlices")
    objs = cluster_objects(n)
    with FakeApiServer(bookmark_interval=5.0) as api:
        for kind in ("namespaces", "services", "endpointslices"):
            api.bulk_load(kind, objs[kind])
        del objs
        kubeconfig = api.write_kubeconfig(str(tmp / "kubeconfig"))
        kdns = start_kdns(children, pin, tmp, f"kubeconfig {kubeconfig}")
        try:
            wait_for(kdns.ready, args.ready_timeout, "/ready 200", kdns)
            wait_for(lambda: answers(kdns.port, "svc1.ns1.svc.cluster.local"),
                     args.ready_timeout, "a DNS answer", kdns)
            res.ready_s = time.monotonic() - kdns.started  # from the process start
            res.rss_ready_mb = kdns.rss_kb() / 1024
            probe = Prober(kdns.port)
            try:
                want = service_ip(1)
                got = _a_answers(probe.ask(f"svc1.ns1.svc.{'cluster.local'}"))
                if got != [want]:
                    raise BenchError(f"svc1.ns1 answered {got}, want [{want}]")
                time.sleep(args.settle)
                res.rss_steady_mb = kdns.rss_kb() / 1024

                # Relist: forget history, drop watches; informers get 410 and list again.
                pages0 = api.list_pages("services") + api.list_pages("endpointslices")
                t0 = time.monotonic()
                with RssSampler(kdns.proc.pid) as sampler:
                    # The watches must not see the write below (their resourceVersion has to
                    # fall behind the compaction), so stall them first.
                    api.stall_watches(True)
                    api.add("namespaces", namespace("relist-marker"))
                    api.compact()
                    api.drop_watches()
                    api.stall_watches(False)
                    wait_for(lambda: api.list_pages("services") + api.list_pages(
                        "endpointslices") >= pages0 + 2 and api.open_watches() >= 3,
                        args.ready_timeout, "relist", kdns)
                    res.relist_s = time.monotonic() - t0
                    # Parsing and swapping in the new lists continues after the last page.
                    time.sleep(max(1.0, res.relist_s))
                res.relist_peak_mb = sampler.peak_kb / 1024

                res.change_ms, res.load_qps = measure_changes(
                    api, kdns, probe, n, args, children, pin, tmp)
            finally:
                probe.close()
        finally:
            children.stop(kdns.proc)
    pods = ENDPOINTS * n
    rss_target = rss_goal_mb(n, pods)
    steady = max(res.rss_ready_mb, res.rss_steady_mb)
    res.goals["rss"] = (f"RSS {steady:.1f} MB <= {rss_target:.0f} MB "
                        f"((Pods {pods} + Services {n})/1000 + 54)", steady <= rss_target)
    ratio = res.relist_peak_mb / res.rss_steady_mb if res.rss_steady_mb else 0.0
    res.goals["relist"] = (f"relist peak {ratio:.2f}x steady <= {RELIST_GOAL}x",
                           ratio <= RELIST_GOAL)
    rg = READY_GOAL_S.get(n, ready_goal(n))
    res.goals["ready"] = (f"ready {res.ready_s:.2f} s <= {rg:g} s", res.ready_s <= rg)
    if res.change_ms:
        p50, mx = statistics.median(res.change_ms), max(res.change_ms)
        res.goals["change_p50"] = (f"change p50 {p50:.1f} ms <= {CHANGE_P50_GOAL_MS:g} ms",
                                   p50 <= CHANGE_P50_GOAL_MS)
        res.goals["change_max"] = (f"change max {mx:.1f} ms <= {CHANGE_MAX_GOAL_MS:g} ms",
                                   mx <= CHANGE_MAX_GOAL_MS)
    return res


def measure_changes(api: object, kdns: Kdns, probe: Prober, n: int, args: argparse.Namespace,
                    children: Children, pin: Pinning,
                    tmp: Path) -> tuple[list[float], float | None]:
    """Change one ClusterIP at a time through the API; ms until DNS answers the new one."""
    from tests.fakeapi import FakeApiServer, service

    assert isinstance(api, FakeApiServer)
    clusterip = [i for i in range(n) if i % HEADLESS_EVERY != 0]
    names = [f"svc{i}.ns{i % NAMESPACES}.svc.cluster.local" for i in clusterip[:2000]]
    budget = args.changes * 1.0 + 10  # bounded: at most ~1 s per change plus slack
    load = background_load(children, pin, kdns.port, names, tmp, budget, args.load_rate)
    out: list[float] = []
    try:
        step = max(1, len(clusterip) // max(1, args.changes))
        for c in range(args.changes):
            i = clusterip[(c * step + 1) % len(clusterip)]
            name = f"svc{i}.ns{i % NAMESPACES}.svc.cluster.local"
            new_ip = f"10.250.{c // 256 % 256}.{c % 256}"
            api.update("services", service(f"ns{i % NAMESPACES}", f"svc{i}", cluster_ip=new_ip,
                                           ports=[("http", 80, "TCP")],
                                           selector={"app": f"svc{i}"}))
            t0 = time.perf_counter()
            deadline = t0 + args.change_timeout
            while True:
                try:
                    if _a_answers(probe.ask(name)) == [new_ip]:
                        break
                except (OSError, TimeoutError):
                    pass
                if time.perf_counter() > deadline:
                    raise BenchError(f"change {c}: {name} never answered {new_ip}\n"
                                     f"{kdns.log_tail()}")
                time.sleep(0.002)
            out.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.02)  # let changes land one at a time, as a real cluster's would
    finally:
        qps = None
        if load is not None:
            if load.poll() is None:
                load.send_signal(signal.SIGINT)  # dnsperf prints its statistics on SIGINT
            try:
                text = (load.communicate(timeout=15)[0] or b"").decode(errors="replace")
            except subprocess.TimeoutExpired:
                text = ""
            children.stop(load)
            m = re.search(r"Queries per second:\s+([\d.]+)", text)
            qps = float(m.group(1)) if m else None
    return out, qps


# --------------------------------------------------------------------------------------------
# headless at scale


@dataclass
class HeadlessResult:
    endpoints: int
    udp_edns_size: int = 0
    udp_edns_tc: bool = False
    udp_plain_size: int = 0
    udp_plain_tc: bool = False
    tcp_answers: int = 0
    tcp_size: int = 0
    small_us: float = 0.0
    big_us: float = 0.0
    goals: dict[str, tuple[str, bool]] = field(default_factory=dict)


def headless_manifests(path: Path, big: int, small: int = 10) -> None:
    docs: list[str] = [
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: big\n",
    ]
    for name, count in (("wide", big), ("narrow", small)):
        docs.append(
            "apiVersion: v1\nkind: Service\nmetadata:\n"
            f"  name: {name}\n  namespace: big\n"
            "spec:\n  clusterIP: None\n  clusterIPs: [None]\n"
            "  ports:\n  - name: http\n    port: 80\n    protocol: TCP\n"
        )
        base = 0 if name == "wide" else 60_000
        # EndpointSlices hold at most 1000 endpoints (the API's limit; 100 by default).
        for s, start in enumerate(range(0, count, 1000)):
            eps = "".join(
                f"- addresses: [10.{64 + (base + k) // 65536}.{(base + k) // 256 % 256}."
                f"{(base + k) % 256}]\n  conditions:\n    ready: true\n"
                for k in range(start, min(count, start + 1000))
            )
            docs.append(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n"
                f"  name: {name}-{s}\n  namespace: big\n"
                f"  labels:\n    kubernetes.io/service-name: {name}\n"
                f"addressType: IPv4\nendpoints:\n{eps}"
                "ports:\n- name: http\n  port: 80\n  protocol: TCP\n"
            )
    path.write_text("---\n".join(docs))


def run_headless(args: argparse.Namespace, children: Children, pin: Pinning,
                 tmp: Path) -> HeadlessResult:
    res = HeadlessResult(args.headless_endpoints)
    manifests = tmp / "headless.yaml"
    headless_manifests(manifests, args.headless_endpoints)
    kdns = start_kdns(children, pin, tmp, f"manifests {manifests}")
    wide, narrow = "wide.big.svc.cluster.local", "narrow.big.svc.cluster.local"
    try:
        wait_for(kdns.ready, args.ready_timeout, "/ready 200", kdns)
        wait_for(lambda: answers(kdns.port, narrow), args.ready_timeout, "a DNS answer", kdns)
        probe = Prober(kdns.port)
        try:
            r = probe.ask(wide, edns=1232)
            res.udp_edns_size, res.udp_edns_tc = len(r), bool(r[2] & 0x02)
            r = probe.ask(wide)
            res.udp_plain_size, res.udp_plain_tc = len(r), bool(r[2] & 0x02)
            r = tcp_ask(kdns.port, wide)
            res.tcp_size, res.tcp_answers = len(r), len(_a_answers(r))

            def per_query_us(name: str) -> float:
                for _ in range(20):  # the first answers build the stored reply
                    probe.ask(name, edns=1232)
                t0 = time.perf_counter()
                for _ in range(args.repeat):
                    probe.ask(name, edns=1232)
                return (time.perf_counter() - t0) / args.repeat * 1e6

            # Interleave, twice, so drift hits both names alike; keep the better of each.
            samples = [(per_query_us(narrow), per_query_us(wide)) for _ in range(2)]
            res.small_us = min(s for s, _ in samples)
            res.big_us = min(b for _, b in samples)
        finally:
            probe.close()
    finally:
        children.stop(kdns.proc)
    res.goals["udp_edns"] = (f"UDP EDNS 1232: {res.udp_edns_size} B, TC "
                             f"{'set' if res.udp_edns_tc else 'clear'}",
                             res.udp_edns_size <= 1232 and res.udp_edns_tc)
    res.goals["udp_plain"] = (f"UDP no EDNS: {res.udp_plain_size} B, TC "
                              f"{'set' if res.udp_plain_tc else 'clear'}",
                              res.udp_plain_size <= 512 and res.udp_plain_tc)
    # A DNS message is at most 65,535 bytes and a compressed A record takes 16, so TCP can carry
    # about 4,090 addresses: "complete" means every one that fits (what CoreDNS sends too).
    question = len("wide.big.svc.cluster.local") + 2 + 4
    fit = min(res.endpoints, (65535 - 12 - question) // 16)
    res.goals["tcp"] = (f"TCP: {res.tcp_answers} of {res.endpoints} addresses ({fit} fit in "
                        f"65,535 bytes), {res.tcp_size} B", res.tcp_answers == fit)
    ratio = res.big_us / res.small_us if res.small_us else 0.0
    res.goals["repeat_cost"] = (
        f"repeated UDP query {res.big_us:.1f} us ({res.endpoints} endpoints) vs "
        f"{res.small_us:.1f} us (10): {ratio:.2f}x <= {HEADLESS_COST_GOAL}x",
        ratio <= HEADLESS_COST_GOAL)
    return res


# --------------------------------------------------------------------------------------------
# report


def report(scale: list[ScaleResult], headless: HeadlessResult | None,
           pin: Pinning) -> dict[str, object]:
    out: dict[str, object] = {"scale": [], "headless": None, "goals": []}
    goals: list[dict[str, object]] = out["goals"]  # type: ignore[assignment]
    print()
    print(f"Scale: Services with {ENDPOINTS} endpoints each (1 in {HEADLESS_EVERY} headless) in "
          f"{NAMESPACES} namespaces, served by the fake API server over HTTP; {pin.describe()} "
          "(the fake API server runs in the benchmark process, on the load CPU)")
    if scale:
        header = (f"{'services':>8} {'ready':>8} {'RSS ready':>10} {'RSS steady':>11} "
                  f"{'relist peak':>12} {'relist':>7} {'change p50':>11} {'change max':>11} "
                  f"{'changes':>7} {'load QPS':>9}")
        print(header)
        print("-" * len(header))
        for r in scale:
            p50 = statistics.median(r.change_ms) if r.change_ms else float("nan")
            mx = max(r.change_ms) if r.change_ms else float("nan")
            load = f"{r.load_qps:,.0f}" if r.load_qps else "-"
            print(f"{r.n:>8,} {r.ready_s:>7.2f}s {r.rss_ready_mb:>7.1f} MB {r.rss_steady_mb:>8.1f} MB"
                  f" {r.relist_peak_mb:>9.1f} MB {r.relist_s:>6.2f}s {p50:>8.1f} ms "
                  f"{mx:>8.1f} ms {len(r.change_ms):>7} {load:>9}")
            out["scale"].append({  # type: ignore[attr-defined]
                "services": r.n, "ready_s": r.ready_s, "rss_ready_mb": r.rss_ready_mb,
                "rss_steady_mb": r.rss_steady_mb, "relist_peak_mb": r.relist_peak_mb,
                "relist_s": r.relist_s, "change_ms": r.change_ms, "load_qps": r.load_qps,
                "change_p50_ms": p50 if r.change_ms else None,
                "change_max_ms": mx if r.change_ms else None,
            })
            print(f"SCALE services={r.n} ready_s={r.ready_s:.3f} rss_ready_mb={r.rss_ready_mb:.1f} "
                  f"rss_steady_mb={r.rss_steady_mb:.1f} relist_peak_mb={r.relist_peak_mb:.1f} "
                  f"change_p50_ms={p50:.1f} change_max_ms={mx:.1f}")
        for r in scale:
            for key, (text, ok) in r.goals.items():
                print(f"GOAL scale {r.n} {key}: {text}: {mark(ok)}")
                goals.append({"what": f"scale {r.n} {key}", "text": text, "pass": ok})
    if headless is not None:
        print()
        print(f"Headless at scale: one headless service with {headless.endpoints:,} endpoints")
        for key, (text, ok) in headless.goals.items():
            print(f"GOAL headless {key}: {text}: {mark(ok)}")
            goals.append({"what": f"headless {key}", "text": text, "pass": ok})
        out["headless"] = {k: v for k, v in headless.__dict__.items() if k != "goals"}
        print(f"HEADLESS endpoints={headless.endpoints} udp_edns_bytes={headless.udp_edns_size} "
              f"tc={int(headless.udp_edns_tc)} tcp_answers={headless.tcp_answers} "
              f"small_us={headless.small_us:.1f} big_us={headless.big_us:.1f}")
    missed = [g["what"] for g in goals if not g["pass"]]
    print()
    print("scale goals missed: " + (", ".join(missed) if missed else "none"))  # type: ignore[arg-type]
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="kdns memory, sync and change latency at scale.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", default=None, help="comma list of Service counts "
                   "(default 10000,50000; --quick: 500)")
    p.add_argument("--changes", type=int, default=None, help="Service changes timed (100)")
    p.add_argument("--load-rate", type=int, default=2000,
                   help="background query load during the changes, QPS")
    p.add_argument("--headless-endpoints", type=int, default=None,
                   help="endpoints of the big headless service (10000; --quick: 2000)")
    p.add_argument("--repeat", type=int, default=None,
                   help="sequential UDP queries per name for the cost comparison (1000)")
    p.add_argument("--skip-headless", action="store_true")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--settle", type=float, default=1.0, help="seconds before the steady RSS")
    p.add_argument("--ready-timeout", type=float, default=180.0)
    p.add_argument("--change-timeout", type=float, default=5.0)
    p.add_argument("--quick", action="store_true", help="smoke mode: 500 services, 10 changes")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.add_argument("--kdns-workers", type=int, default=1,
                   help="run kdns serve --workers N; RSS is then the sum over the supervisor "
                        "and its workers (default 1: one process)")
    a = p.parse_args(argv)
    a.sizes = [int(x) for x in (a.sizes or ("500" if a.quick else "10000,50000")).split(",")]
    a.changes = a.changes if a.changes is not None else (10 if a.quick else 100)
    a.headless_endpoints = a.headless_endpoints or (2000 if a.quick else 10_000)
    a.repeat = a.repeat or (200 if a.quick else 1000)
    if a.quick:
        a.settle = min(a.settle, 0.3)
    if any(s < 1 for s in a.sizes) or a.changes < 0 or a.headless_endpoints < 20:
        p.error("sizes must be positive, --changes not negative, --headless-endpoints >= 20")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    global WORKERS
    WORKERS = args.kdns_workers

    def body(children: Children, tmp: Path) -> int:
        pin = choose_pinning()
        if pin.load_cpu is not None:
            # The fake API server and the probes run here: keep them off the server's CPU.
            os.sched_setaffinity(0, {pin.load_cpu})
        _log(f"scale benchmark in {tmp}")
        scale = [] if args.skip_scale else [run_scale(n, args, children, pin, tmp)
                                            for n in args.sizes]
        headless = None if args.skip_headless else run_headless(args, children, pin, tmp)
        out = report(scale, headless, pin)
        if args.json is not None:
            args.json.write_text(json.dumps(out, indent=2) + "\n")
        return 0

    return run_main("kdns-scale-", args.keep, body)


if __name__ == "__main__":
    sys.exit(main())
