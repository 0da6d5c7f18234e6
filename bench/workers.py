#!/usr/bin/env python3
"""Several cores: ``kdns serve --workers N``, measured on this machine and projected to more.

This script (a benchmark, not a test) owns the multi-process measurement. With ``--workers N``
(N > 1) ``kdns serve`` is a supervisor that runs the Kubernetes watches once and N worker
processes that bind the same DNS port with ``SO_REUSEPORT``; the kernel spreads client sockets
over them by a hash of the 4-tuple. On a 2-core machine N workers cannot show N times the
throughput, so the script measures what the projection needs instead:

1. ``gen.py`` writes N services (``--n``, 1000) and the query files; kdns gets kubeadm's Corefile
   (``udp_qps.kdns_corefile``: errors, health, ready, kubernetes, prometheus, forward, cache,
   loop, reload, loadbalance) on loopback ports. The workloads ask cluster names only: ``hits``
   (every ClusterIP service, A) and ``podmix`` (the pod mix of ``gen.py`` without its external
   names: the ndots:5 search-list walk, A + AAAA, about half NXDOMAIN), so ``forward`` points at
   an unused loopback port and no upstream runs.
2. For each N in ``--workers`` (1,2) and each rep (the order of N alternates between reps):

   a. **fixed rate**: kdns unpinned, dnsperf on the load CPU sends ``--rate`` QPS (20,000, well
      below saturation) from ``--clients`` sockets (32, so SO_REUSEPORT has flows to spread) for
      ``--seconds``. Per worker: the CPU seconds it used (utime+stime from /proc) and the
      requests it answered (the delta of ``kdns_worker_requests_total{worker}`` on the
      supervisor's /metrics; with N=1, ``coredns_dns_requests_total``), which give **CPU µs per
      query per worker** and each worker's **share** of the queries; and the supervisor's own CPU
      over the run (it is off the packet path: about zero).
   b. **saturation, one core**: a new kdns with every process (supervisor and workers) pinned to
      the server CPU with taskset, dnsperf on the load CPU at full speed: total QPS of N
      processes on ONE core, i.e. what running several processes costs (N=2 should be close to
      N=1).
3. It prints both tables (medians over reps with min-max), the memory of each process (every
   worker holds its own view of the cluster), and a **projection** for 1, 2, 4, 8 and 16 workers:
   per-core capacity = 1e6 / (median CPU µs per query), times N, times the balance efficiency
   measured at the largest N (min share x N), with what bounds it on a real many-core node.

Every kdns must answer a sample of names correctly, and every worker must answer some of a
burst of queries from distinct source ports, before anything is measured. Everything binds or
talks to 127.0.0.1 only; every process it starts is stopped by PID on the way out (also on
Ctrl-C/SIGTERM), and the temp directory is removed.

    .venv/bin/python bench/workers.py             # 1000 services, N=1,2, 3 reps x 10 s, ~6 min
    .venv/bin/python bench/workers.py --quick     # the smoke variant, ~15 s
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

from gen import ZONE, Check, Generated, generate  # noqa: E402
from udp_qps import (  # noqa: E402
    BenchError,
    Children,
    DnsperfGenerator,
    Pinning,
    RunResult,
    Server,
    _log,
    check_answers,
    choose_pinning,
    cpu_seconds,
    free_port,
    kdns_corefile,
    kubeadm_plugins,
    percentile,
    proc_status_kb,
    run_main,
    wait_ready,
)

PROJECT_WORKERS = (1, 2, 4, 8, 16)
SPREAD_QUERIES = 32
"""Queries per worker, each from a new socket, that must reach every worker before a run."""
READY_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Load:
    name: str
    title: str
    queries: Path
    miss_fraction: float
    checks: tuple[Check, ...]


def cluster_loads(data: Generated, tmp: Path) -> dict[str, Load]:
    """The two cluster-name workloads: ``hits`` as generated, ``podmix`` without the lines that
    only the upstream could answer (the bare external names)."""
    lines = [line for line in data.queries["podmix"].read_text().splitlines()
             if line.strip() and line.split()[0].endswith("." + ZONE)]
    path = tmp / "queries-podmix-internal.txt"
    path.write_text("\n".join(lines) + "\n")
    nx = sum(1 for line in lines if line.split()[0] not in data.names)
    podmix_checks = data.checks["mixed"] + tuple(
        c for c in data.checks["podmix"] if c.name.endswith("." + ZONE))
    return {
        "hits": Load("hits", "cluster-name A hits", data.queries["hits"],
                     data.miss_fraction["hits"], data.checks["hits"]),
        "podmix": Load("podmix", "pod mix, cluster names only (ndots:5 walk, A + AAAA)", path,
                       nx / len(lines), podmix_checks),
    }


# --------------------------------------------------------------------------------------------
# one kdns instance


@dataclass
class Instance:
    n: int
    pinned: bool
    server: Server
    metrics_port: int
    worker_pids: list[int]
    """In worker index order; with N=1 the single process is worker 0."""

    @property
    def pid(self) -> int:
        return self.server.proc.pid

    @property
    def supervisor_pid(self) -> int | None:
        return self.pid if self.n > 1 else None


def children_of(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            continue
    return sorted(set(out))


def start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return int(text[text.rindex(")") + 2:].split()[19])


def worker_order(server: Server, n: int) -> list[int]:
    """The workers' PIDs by worker index: from the supervisor's "N workers serving (pids …)"
    log line (index order), else by start time (it spawns them in index order)."""
    kids = children_of(server.proc.pid)
    if len(kids) != n:
        raise BenchError(f"kdns --workers {n} has {len(kids)} child processes ({kids}), "
                         f"expected {n}\n{server.log_tail()}")
    m = re.search(r"workers serving \(pids ([\d ]+)\)", server.log.read_text(errors="replace"))
    if m:
        pids = [int(p) for p in m.group(1).split()]
        if sorted(pids) == kids:
            return pids
    return sorted(kids, key=lambda p: (start_time(p), p))


def start_instance(children: Children, tmp: Path, data: Generated, pin: Pinning, n: int,
                   pinned: bool, label: str, optional: Sequence[str]) -> Instance:
    # Fresh HTTP ports for every instance: the previous one may still hold its sockets briefly.
    http = [free_port() for _ in range(3)]
    dead_upstream = free_port()  # nothing listens there: the workloads ask cluster names only
    corefile = tmp / f"Corefile-{label}"
    corefile.write_text(kdns_corefile(53, data.manifests, dead_upstream, http, "kubeadm",
                                      optional))
    out, log = tmp / f"kdns-{label}.out", tmp / f"kdns-{label}.log"
    cmd = [*pin.prefix(pin.server_cpu if pinned else None), sys.executable, "-m", "kdns.cli",
           "serve", "--conf", str(corefile), "--dns-addr", "127.0.0.1", "--dns-port", "0",
           "--workers", str(n), "--log-level", "info"]
    with out.open("wb") as o, log.open("wb") as e:
        proc = children.start(cmd, cwd=str(REPO), stdin=subprocess.DEVNULL, stdout=o, stderr=e)
    t0 = time.monotonic()
    server = Server(f"kdns --workers {n}", 0, proc, log)
    # --dns-port 0: kdns picks the port and prints it once every worker listens.
    while True:
        m = re.search(r"serving on [^\s:]+:(\d+)", out.read_text(errors="replace"))
        if m:
            server.port = int(m.group(1))
            break
        if proc.poll() is not None:
            raise BenchError(f"kdns --workers {n} exited with {proc.returncode} while starting"
                             f"\n{server.log_tail()}")
        if time.monotonic() - t0 > READY_TIMEOUT:
            raise BenchError(f"kdns --workers {n} did not print 'serving on' within "
                             f"{READY_TIMEOUT:.0f} s\n{server.log_tail()}")
        time.sleep(0.05)
    wait_ready(server, next(iter(data.names)), READY_TIMEOUT)
    pids = worker_order(server, n) if n > 1 else [proc.pid]
    inst = Instance(n, pinned, server, http[2], pids)
    _log(f"kdns --workers {n} ready on 127.0.0.1:{server.port} (pid {proc.pid}"
         f"{', workers ' + ' '.join(map(str, pids)) if n > 1 else ''}"
         f"{', pinned to CPU ' + str(pin.server_cpu) if pinned and pin.server_cpu is not None else ''}"
         f") after {time.monotonic() - t0:.1f} s")
    return inst


def stop_instance(children: Children, inst: Instance) -> list[str]:
    """Stop the supervisor (it stops its workers); a worker that outlives it is a problem
    worth reporting, and is killed by its PID."""
    children.stop(inst.server.proc)
    problems: list[str] = []
    if inst.n > 1:
        deadline = time.monotonic() + 5.0
        left = [p for p in inst.worker_pids if _alive(p)]
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = [p for p in left if _alive(p)]
        for p in left:
            problems.append(f"worker pid {p} outlived its supervisor by 5 s: killed")
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
    return problems


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


# --------------------------------------------------------------------------------------------
# metrics


@dataclass(frozen=True, slots=True)
class Scrape:
    requests: dict[int, float]
    up: dict[int, float]
    restarts: dict[int, float]


_SAMPLE = re.compile(r'^(\w+)(?:\{([^}]*)\})? ([-+\d.eE]+|NaN|[+-]Inf)$', re.M)
_WORKER_LABEL = re.compile(r'worker="(\d+)"')


def scrape(inst: Instance) -> Scrape:
    url = f"http://127.0.0.1:{inst.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError) as e:
        raise BenchError(f"cannot scrape {url}: {e}\n{inst.server.log_tail()}") from None
    requests: dict[int, float] = {}
    up: dict[int, float] = {}
    restarts: dict[int, float] = {}
    total = 0.0
    for m in _SAMPLE.finditer(text):
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name == "coredns_dns_requests_total":
            total += value
        w = _WORKER_LABEL.search(labels)
        if w is None:
            continue
        table = {"kdns_worker_requests_total": requests, "kdns_worker_up": up,
                 "kdns_worker_restarts_total": restarts}.get(name)
        if table is not None:
            table[int(w.group(1))] = value
    if inst.n == 1:
        return Scrape({0: total}, {0: 1.0}, {0: 0.0})
    if sorted(requests) != list(range(inst.n)):
        raise BenchError(f"/metrics of kdns --workers {inst.n} has kdns_worker_requests_total "
                         f"for workers {sorted(requests)}, expected 0..{inst.n - 1}")
    return Scrape(requests, up, restarts)


def check_workers(inst: Instance, probe: str) -> None:
    """Every worker must be up and answer: queries from distinct source ports (each a new
    socket) must reach each of them."""
    before = scrape(inst)
    down = [i for i, v in before.up.items() if v != 1]
    if down:
        raise BenchError(f"kdns_worker_up is not 1 for worker(s) {down}\n{inst.server.log_tail()}")
    from dnslib import DNSRecord

    q = DNSRecord.question(probe, "A").pack()
    unanswered = 0
    for _ in range(SPREAD_QUERIES * inst.n):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            s.sendto(q, ("127.0.0.1", inst.server.port))
            try:
                s.recv(4096)
            except TimeoutError:
                unanswered += 1
    after = scrape(inst)
    silent = [i for i in range(inst.n) if after.requests[i] - before.requests[i] <= 0]
    if silent or unanswered:
        raise BenchError(
            f"kdns --workers {inst.n}: of {SPREAD_QUERIES * inst.n} queries from distinct source "
            f"ports {unanswered} got no reply; worker(s) {silent or 'none'} answered none"
            f"\n{inst.server.log_tail()}")


# --------------------------------------------------------------------------------------------
# runs


@dataclass
class Run:
    workload: str
    n: int
    kind: str
    """"fixed" (fixed rate, unpinned) or "saturation" (every kdns process on one core)."""
    rep: int
    qps: float
    sent: int
    completed: int
    lost: int
    run_time_s: float
    worker_cpu_s: list[float]
    worker_requests: list[float]
    supervisor_cpu_s: float | None
    window_s: float
    """Wall time between the two CPU readings (the dnsperf process's whole life)."""
    lat_p50_ms: float | None = None
    lat_p99_ms: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def requests(self) -> float:
        return sum(self.worker_requests)

    def us_per_query(self) -> list[float | None]:
        return [c / r * 1e6 if r > 0 else None
                for c, r in zip(self.worker_cpu_s, self.worker_requests, strict=True)]

    @property
    def us_per_query_all(self) -> float:
        return sum(self.worker_cpu_s) / self.requests * 1e6 if self.requests else float("nan")

    def shares(self) -> list[float]:
        total = self.requests
        return [r / total if total else 0.0 for r in self.worker_requests]

    @property
    def balance(self) -> float:
        """min share x N: 1.0 when every worker got the same number of queries."""
        return min(self.shares()) * self.n

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d.update(us_per_query=self.us_per_query(), us_per_query_all=self.us_per_query_all,
                 shares=self.shares(), balance=self.balance)
        return d


def _cpu(pids: Sequence[int]) -> list[float]:
    out: list[float] = []
    for p in pids:
        c = cpu_seconds(p)
        if c is None:
            raise BenchError(f"process {p} is gone (a kdns worker died?)")
        out.append(c)
    return out


def measure(inst: Instance, gen_: DnsperfGenerator, load: Load, seconds: float, kind: str,
            rate: int | None, rep: int) -> Run:
    if inst.server.proc.poll() is not None:
        raise BenchError(f"kdns --workers {inst.n} died (status {inst.server.proc.returncode})"
                         f"\n{inst.server.log_tail()}")
    m0 = scrape(inst)
    sup = inst.supervisor_pid
    s0 = cpu_seconds(sup) if sup is not None else None
    c0 = _cpu(inst.worker_pids)
    t0 = time.monotonic()
    res: RunResult = gen_.run(inst.server.port, load.queries, seconds, "udp", rate)
    window = time.monotonic() - t0
    c1 = _cpu(inst.worker_pids)
    s1 = cpu_seconds(sup) if sup is not None else None
    m1 = scrape(inst)
    if inst.server.proc.poll() is not None:
        raise BenchError(f"kdns --workers {inst.n} died during the run\n{inst.server.log_tail()}")
    reqs = [m1.requests[i] - m0.requests[i] for i in range(inst.n)]
    run = Run(
        workload=load.name, n=inst.n, kind=kind, rep=rep, qps=res.qps, sent=res.sent,
        completed=res.completed, lost=res.lost, run_time_s=res.run_time_s,
        worker_cpu_s=[b - a for a, b in zip(c0, c1, strict=True)], worker_requests=reqs,
        supervisor_cpu_s=(s1 - s0) if s0 is not None and s1 is not None else None,
        window_s=window,
    )
    if res.latencies_ms:
        run.lat_p50_ms = percentile(res.latencies_ms, 50)
        run.lat_p99_ms = percentile(res.latencies_ms, 99)
    problem = res.answer_problem(load.miss_fraction)
    if problem:
        run.problems.append(f"wrong answers: {problem}")
    restarted = [i for i in range(inst.n) if m1.restarts.get(i, 0) != m0.restarts.get(i, 0)]
    if restarted:
        run.problems.append(f"worker(s) {restarted} restarted during the run")
    silent = [i for i, r in enumerate(reqs) if r <= 0]
    if silent:
        run.problems.append(f"worker(s) {silent} answered no query from {gen_.clients} clients")
    # The workers' counters and dnsperf must agree: kdns counts what it received, dnsperf what
    # it sent (a query lost before kdns read it is counted by dnsperf only).
    if res.sent and not (res.completed * 0.98 <= run.requests <= res.sent * 1.02 + 10):
        run.problems.append(f"workers counted {run.requests:,.0f} requests, dnsperf sent "
                            f"{res.sent:,} and got {res.completed:,} replies")
    if rate is not None and res.qps < rate * 0.97:
        run.problems.append(f"answered {res.qps:,.0f} QPS of the {rate:,} sent: the fixed rate "
                            "is not below saturation (lower --rate)")
    return run


# --------------------------------------------------------------------------------------------
# report


def med(xs: Sequence[float]) -> str:
    return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"


def pct(xs: Sequence[float]) -> str:
    return f"{statistics.median(xs):.1%} ({min(xs):.1%}-{max(xs):.1%})"


def _median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


@dataclass
class Summary:
    """Medians over the reps for one workload and one N."""

    n: int
    fixed_us_per_query: float | None
    """Median of every worker's CPU us per query over the fixed-rate runs."""
    fixed_us_per_query_worker: list[float | None]
    fixed_shares: list[float | None]
    balance: float | None
    """Median min share x N over all runs of this N (fixed and saturation: both are a hash
    spread of the same number of client sockets)."""
    balance_min: float | None
    balance_runs: int
    supervisor_cpu: float | None
    """Supervisor CPU seconds / wall second during the fixed-rate runs (None for N=1)."""
    supervisor_cpu_max: float | None
    sat_qps: float | None
    sat_qps_min: float | None
    sat_qps_max: float | None
    sat_busy: float | None
    """kdns CPU (all processes) / dnsperf's sending time in the saturation runs (1.0 = the
    core was saturated)."""
    sat_us_per_query: float | None
    lat_p50_ms: float | None
    lat_p99_ms: float | None


def summarize(runs: list[Run], workload: str, n: int) -> Summary:
    fixed = [r for r in runs if r.workload == workload and r.n == n and r.kind == "fixed"]
    sat = [r for r in runs if r.workload == workload and r.n == n and r.kind == "saturation"]
    per_worker = [[u for r in fixed if (u := r.us_per_query()[i]) is not None]
                  for i in range(n)]
    sup = [r.supervisor_cpu_s / r.window_s for r in fixed if r.supervisor_cpu_s is not None]
    bal = [r.balance for r in fixed + sat]
    return Summary(
        n=n,
        fixed_us_per_query=_median([u for col in per_worker for u in col]),
        fixed_us_per_query_worker=[_median(c) for c in per_worker],
        fixed_shares=[_median([r.shares()[i] for r in fixed]) for i in range(n)],
        balance=_median(bal), balance_min=min(bal) if bal else None, balance_runs=len(bal),
        supervisor_cpu=_median(sup), supervisor_cpu_max=max(sup) if sup else None,
        sat_qps=_median([r.qps for r in sat]),
        sat_qps_min=min(r.qps for r in sat) if sat else None,
        sat_qps_max=max(r.qps for r in sat) if sat else None,
        sat_busy=_median([sum(r.worker_cpu_s) / r.run_time_s for r in sat if r.run_time_s > 0]),
        sat_us_per_query=_median([r.us_per_query_all for r in sat]),
        lat_p50_ms=_median([r.lat_p50_ms for r in fixed if r.lat_p50_ms is not None]),
        lat_p99_ms=_median([r.lat_p99_ms for r in fixed if r.lat_p99_ms is not None]),
    )


def report_workload(load: Load, runs: list[Run], args: argparse.Namespace, pin: Pinning,
                    memory: dict[int, dict[str, object]]) -> dict[int, Summary]:
    ns: list[int] = args.workers
    summary = {n: summarize(runs, load.name, n) for n in ns}
    print()
    print(f"workload {load.name}: {load.title}")
    print(f"a. fixed rate {args.rate:,} QPS in all from {args.clients} dnsperf clients, "
          f"{args.reps} x {args.seconds:g} s, kdns unpinned")
    header = (f"{'N':>2}  {'worker':<6}  {'CPU us/query (min-max)':<22}  "
              f"{'share (min-max)':<24}  {'worker CPU':>10}  {'p50/p99 ms':>12}")
    print(header)
    print("-" * len(header))
    for n in ns:
        fixed = [r for r in runs if r.workload == load.name and r.n == n and r.kind == "fixed"]
        if not fixed:
            continue
        for i in range(n):
            us = [u for r in fixed if (u := r.us_per_query()[i]) is not None]
            shares = [r.shares()[i] for r in fixed]
            busy = [r.worker_cpu_s[i] / r.run_time_s for r in fixed if r.run_time_s > 0]
            print(f"{n:>2}  {i:<6}  {med(us) if us else '-':<22}  {pct(shares):<24}  "
                  f"{_num(_median(busy), '>10.1%')}")
        s = summary[n]
        bal = [r.balance for r in fixed]
        lat = f"{s.lat_p50_ms:.3f}/{s.lat_p99_ms:.3f}" \
            if s.lat_p50_ms is not None and s.lat_p99_ms is not None else "-"
        bal_s = f"balance {statistics.median(bal):.2f} ({min(bal):.2f}-{max(bal):.2f})"
        print(f"{n:>2}  {'all':<6}  {med([r.us_per_query_all for r in fixed]):<22}  "
              f"{bal_s:<24}  {'':>10}  {lat:>12}")
    sup_lines = [f"N={n} {s.supervisor_cpu:.2%} of one core (max {s.supervisor_cpu_max:.2%})"
                 for n, s in summary.items()
                 if s.supervisor_cpu is not None and s.supervisor_cpu_max is not None]
    if sup_lines:
        tick = 1 / os.sysconf("SC_CLK_TCK") / (args.seconds + args.timeout)
        print("supervisor CPU during the fixed-rate runs: " + "; ".join(sup_lines)
              + f" (one clock tick is about {tick:.2%})")

    where = (f"every kdns process on CPU {pin.server_cpu}, dnsperf on CPU {pin.load_cpu}"
             if pin.server_cpu is not None else "NOT pinned (under 2 CPUs or no taskset)")
    print(f"b. saturation, {where}, {args.clients} clients, {args.reps} x {args.seconds:g} s")
    header = (f"{'N':>2}  {'QPS median':>10}  {'(min - max)':<21}  {'vs N=1':>6}  "
              f"{'kdns CPU':>8}  {'CPU us/query':>12}  {'QPS/busy core':>13}  {'lost':>6}")
    print(header)
    print("-" * len(header))
    base = summary[ns[0]] if ns[0] == 1 else None
    for n in ns:
        s = summary[n]
        if s.sat_qps is None or s.sat_us_per_query is None:
            continue
        vs = f"{s.sat_qps / base.sat_qps:.2f}" if base is not None and base.sat_qps else "-"
        lost = sum(r.lost for r in runs
                   if r.workload == load.name and r.n == n and r.kind == "saturation")
        print(f"{n:>2}  {s.sat_qps:>10,.0f}  ({s.sat_qps_min:,.0f} - {s.sat_qps_max:,.0f})"
              .ljust(38) + f"  {vs:>6}  {_num(s.sat_busy, '>8.0%')}  "
              f"{s.sat_us_per_query:>12.2f}  {1e6 / s.sat_us_per_query:>13,.0f}  {lost:>6}")
    if base is not None and base.sat_us_per_query:
        for n in ns[1:]:
            s = summary[n]
            if s.sat_us_per_query:
                print(f"N={n} on one core costs {s.sat_us_per_query / base.sat_us_per_query - 1:+.0%}"
                      " CPU per query against N=1 (the multi-process overhead)")
    idle = [n for n, s in summary.items() if s.sat_busy is not None and s.sat_busy < 0.9]
    if idle:
        print(f"note: kdns used under 90 % of its core at N={','.join(map(str, idle))}: dnsperf "
              "on one core set that QPS (a lower bound); CPU us/query and QPS/busy core are the "
              "comparable figures")
    for n in ns:
        mem = memory.get(n)
        if not mem:
            continue
        w = mem["workers_kb"]
        sup_kb = mem["supervisor_kb"]
        assert isinstance(w, list) and (sup_kb is None or isinstance(sup_kb, int))
        known = [x for x in w if x is not None]
        if n == 1:
            print(f"memory N=1: one process, VmRSS {_mb(known[0] if known else None)}")
        else:
            total = (sup_kb or 0) + sum(known)
            print(f"memory N={n}: supervisor VmRSS {_mb(sup_kb)}, workers "
                  f"{', '.join(_mb(x) for x in w)} (each holds its own view): {_mb(total)} in all")
    return summary


def _num(x: object, spec: str) -> str:
    if isinstance(x, float):
        return format(x, spec)
    width = re.match(r"[<>^]?(\d*)", spec)
    return "-".rjust(int(width.group(1))) if width and width.group(1) else "-"


def _mb(kb: int | None) -> str:
    return f"{kb / 1024:.1f} MB" if kb is not None else "?"


def projection(load: Load, summary: dict[int, Summary], clients: int, rate: int) -> dict[str, object]:
    """Per-core capacity from CPU per query, times N, times the measured balance."""
    top = max(summary)
    src = summary[top]
    busy_us, fixed_us = src.sat_us_per_query, src.fixed_us_per_query
    if not busy_us or not fixed_us:
        return {}
    eff = src.balance if top > 1 and src.balance is not None else 1.0
    cap_busy, cap_fixed = 1e6 / busy_us, 1e6 / fixed_us
    print()
    print(f"PROJECTION (not a measurement) {load.name}: N workers on N cores, "
          "expected QPS = N x per-core capacity x balance efficiency")
    print(f"  per-core capacity, busy:       1e6 / {busy_us:5.2f} us per query (saturation runs, "
          f"N={top} on one core) = {cap_busy:>9,.0f} QPS")
    print(f"  per-core capacity, fixed rate: 1e6 / {fixed_us:5.2f} us per query (median worker at "
          f"{rate / top:,.0f} QPS each, N={top}) = {cap_fixed:>9,.0f} QPS")
    if top > 1:
        print(f"  balance efficiency: {eff:.2f} (median min share x N over the {src.balance_runs} "
              f"runs at N={top}, fixed-rate and saturation, {clients} client sockets each)")
    else:
        print("  balance efficiency: 1.00 (only N=1 measured: no spread over workers)")
    print(f"  {'workers':>7}  {'expected QPS (busy)':>19}  {'(fixed-rate cost)':>17}")
    expected: dict[str, dict[str, float]] = {}
    for n in PROJECT_WORKERS:
        e = eff if n > 1 else 1.0
        busy, fixed = n * cap_busy * e, n * cap_fixed * e
        expected[str(n)] = {"busy": busy, "fixed_rate_cost": fixed}
        print(f"  {n:>7}  {busy:>19,.0f}  {fixed:>17,.0f}")
    for key, q in expected.items():
        print(f"PROJECTED workload={load.name} workers={key} qps={q['busy']:.0f} "
              f"qps_fixed_rate_cost={q['fixed_rate_cost']:.0f}")
    return {"us_per_query_busy": busy_us, "us_per_query_fixed_rate": fixed_us,
            "capacity_qps_busy": cap_busy, "capacity_qps_fixed_rate": cap_fixed,
            "balance_efficiency": eff, "basis_workers": top, "expected_qps": expected}


BOUNDS_NOTE = """\
note: what bounds the projection on a real many-core node:
  - the kernel's UDP receive path is not in the workers' CPU above: here on loopback most of it
    runs in the sender's softirq (dnsperf's CPU). On a node, packets arrive on NIC/veth queues and
    their softirq runs on the CPU that queue is steered to (RSS/RPS); with few queues those CPUs
    saturate before N Python workers do, and kube-proxy's DNAT/conntrack to the DNS Service adds
    per-packet work there too;
  - SO_REUSEPORT picks a worker by a hash of the 4-tuple: one client socket always lands on one
    worker. A node-local cache forwarding over one upstream socket, or a proxy with a few
    sockets, uses one (or a few) workers whatever N is; the balance efficiency above needs many
    client flows (pods) per worker, and flows that differ in load still make workers unequal;
  - memory grows with N: every worker holds its own view of the cluster (see the memory lines),
    the supervisor holds the watches once; the API server sees one set of watches per instance;
  - N above the number of cores the pod may use only adds context switches (compare N=2 on one
    core with N=1 in the saturation table)."""


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="kdns serve --workers N: CPU per query per worker, balance and one-core "
                    "saturation, with a projection to many cores.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--n", type=int, default=None, help="services (default 1000; --quick: 200)")
    p.add_argument("--namespaces", type=int, default=20)
    p.add_argument("--workers", default="1,2", help="comma list of worker counts to measure")
    p.add_argument("--workloads", default="hits,podmix", help="comma list of hits,podmix")
    p.add_argument("--reps", type=int, default=None, help="runs per N and kind (3; --quick: 1)")
    p.add_argument("--seconds", type=float, default=None,
                   help="seconds per measured run (10; --quick: 1)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds of full-speed warm-up before each run, not counted (1; --quick: "
                        "0.2)")
    p.add_argument("--rate", type=int, default=20_000, help="QPS of the fixed-rate runs (-Q)")
    p.add_argument("--clients", type=int, default=32,
                   help="dnsperf -c: client sockets (source ports) SO_REUSEPORT spreads")
    p.add_argument("--outstanding", type=int, default=500, help="dnsperf -q")
    p.add_argument("--timeout", type=float, default=None,
                   help="dnsperf -t: seconds before a query counts as lost (1; --quick: 0.2)")
    p.add_argument("--quick", action="store_true",
                   help="smoke mode: 200 services, 1 rep x 1 s, 0.2 s warm-up")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (Corefiles, logs)")
    a = p.parse_args(argv)
    a.n = a.n if a.n is not None else (200 if a.quick else 1000)
    a.reps = a.reps if a.reps is not None else (1 if a.quick else 3)
    a.seconds = a.seconds if a.seconds is not None else (1.0 if a.quick else 10.0)
    a.warmup = a.warmup if a.warmup is not None else (0.2 if a.quick else 1.0)
    a.timeout = a.timeout if a.timeout is not None else (0.2 if a.quick else 1.0)
    try:
        a.workers = [int(x) for x in a.workers.split(",") if x]
    except ValueError:
        p.error(f"--workers must be a comma list of numbers, got {a.workers!r}")
    a.workloads = [w for w in a.workloads.split(",") if w]
    for w in a.workloads:
        if w not in ("hits", "podmix"):
            p.error(f"unknown workload {w!r}; choose from hits, podmix")
    if not a.workers or any(not 1 <= n <= 64 for n in a.workers) \
            or len(set(a.workers)) != len(a.workers):
        p.error("--workers: distinct numbers in 1..64")
    a.workers = sorted(a.workers)
    if a.reps < 1 or a.seconds <= 0 or a.warmup < 0 or a.rate < 1 or a.clients < 1 \
            or a.outstanding < 1 or a.n < 1:
        p.error("--n, --reps, --seconds, --rate, --clients and --outstanding must be positive, "
                "--warmup not negative")
    return a


def run(args: argparse.Namespace, children: Children, tmp: Path) -> tuple[dict[str, object], int]:
    if shutil.which("dnsperf") is None:
        # The built-in Python generator of udp_qps.py sends from one socket: SO_REUSEPORT would
        # hand every query to one worker, and it cannot send at a fixed rate.
        raise BenchError("dnsperf is not installed (apt-get install dnsperf): this benchmark "
                         "needs its many client sockets (-c, so SO_REUSEPORT spreads them over "
                         "the workers) and its fixed rate (-Q)")
    import importlib.util

    for mod in ("kdns.cli", "dnslib"):
        if importlib.util.find_spec(mod) is None:
            raise BenchError(f"{mod} is not importable by {sys.executable}: run this with the "
                             "project's venv (.venv/bin/python bench/workers.py)")
    pin = choose_pinning()
    if pin.load_cpu is not None:
        # Scrapes and checks run here: keep them off the server's CPU.
        os.sched_setaffinity(0, {pin.load_cpu})
    notes: list[str] = []
    if pin.server_cpu is None:
        notes.append("no CPU pinning (under 2 CPUs or no taskset): the saturation runs are not "
                     "one-core figures")
    have, missing = kubeadm_plugins()
    if missing:
        notes.append(f"kdns does not implement {', '.join(missing)}: left out of the Corefile")
    _log(f"generating {args.n} services in {args.namespaces} namespaces in {tmp}")
    data = generate(tmp, args.n, args.namespaces)
    loads = {k: v for k, v in cluster_loads(data, tmp).items() if k in args.workloads}
    gen_ = DnsperfGenerator(children, pin, args.outstanding, args.clients, args.timeout)
    probe = next(iter(data.names))
    runs: list[Run] = []
    problems: list[str] = []
    memory: dict[int, dict[str, object]] = {}
    ns: list[int] = args.workers
    for rep in range(args.reps):
        order = ns if rep % 2 == 0 else list(reversed(ns))  # alternate: drift favours neither
        for n in order:
            for kind in ("fixed", "saturation"):
                pinned = kind == "saturation"
                inst = start_instance(children, tmp, data, pin, n, pinned,
                                      f"{n}-{kind}-{rep}", have)
                try:
                    check_workers(inst, probe)
                    for load in loads.values():
                        check_answers(inst.server, load.checks)
                    for load in loads.values():
                        if args.warmup > 0:
                            gen_.run(inst.server.port, load.queries, args.warmup)
                        r = measure(inst, gen_, load, args.seconds, kind,
                                    args.rate if kind == "fixed" else None, rep)
                        runs.append(r)
                        problems += [f"{load.name} N={n} {kind} rep {rep + 1}: {p}"
                                     for p in r.problems]
                        share = " ".join(f"{s:.0%}" for s in r.shares())
                        _log(f"rep {rep + 1}/{args.reps} N={n} {kind:<10} {load.name:<6} "
                             f"{r.qps:>9,.0f} QPS  {r.us_per_query_all:6.1f} us/query  "
                             f"shares {share}  lost {r.lost}")
                    if kind == "fixed" and rep == args.reps - 1:
                        memory[n] = {
                            "supervisor_kb": proc_status_kb(inst.pid, "VmRSS") if n > 1
                            else None,
                            "workers_kb": [proc_status_kb(p, "VmRSS") for p in inst.worker_pids],
                        }
                finally:
                    problems += stop_instance(children, inst)

    print()
    print(f"{args.n} services + {args.n // 5} headless in {args.namespaces} namespaces; "
          f"kdns serve --workers N for N in {','.join(map(str, ns))}; {args.reps} rep(s) x "
          f"{args.seconds:g} s per N, kind and workload (after a {args.warmup:g} s warm-up); "
          f"{os.cpu_count()} CPUs")
    print(f"load: {gen_.describe()}; {pin.describe()}")
    for note in notes:
        print(f"note: {note}")
    out: dict[str, object] = {"config": {k: (str(v) if isinstance(v, Path) else v)
                                         for k, v in vars(args).items()},
                              "notes": notes, "runs": [r.as_dict() for r in runs]}
    summaries: dict[str, dict[int, Summary]] = {}
    projections: dict[str, object] = {}
    for load in loads.values():
        summaries[load.name] = summary = report_workload(load, runs, args, pin, memory)
        projections[load.name] = projection(load, summary, args.clients, args.rate)
    print()
    print(BOUNDS_NOTE)
    print()
    for name, per_n in summaries.items():
        for n, s in per_n.items():
            print(f"WORKERS workload={name} n={n} "
                  f"us_per_query={_num(s.fixed_us_per_query, '.2f')} "
                  f"balance={_num(s.balance, '.3f')} "
                  f"supervisor_cpu={_num(s.supervisor_cpu, '.4f')} "
                  f"saturation_qps={_num(s.sat_qps, '.0f')} "
                  f"saturation_us_per_query={_num(s.sat_us_per_query, '.2f')}")
    out.update(summary={name: {str(n): asdict(s) for n, s in per_n.items()}
                        for name, per_n in summaries.items()},
               projection=projections, memory={str(k): v for k, v in memory.items()},
               problems=problems)
    for p in problems:
        print(f"warning: {p}")
    return out, (1 if problems else 0)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def body(children: Children, tmp: Path) -> int:
        out, rc = run(args, children, tmp)
        if args.json is not None:
            args.json.write_text(json.dumps(out, indent=2) + "\n")
        return rc

    return run_main("kdns-workers-", args.keep, body)


if __name__ == "__main__":
    sys.exit(main())
