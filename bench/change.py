"""The ``churn`` and ``cold`` workloads of ``udp_qps.py``: throughput while the cluster changes,
and for names never asked before.

This module owns those two measurements; ``udp_qps.py`` runs them beside its other workloads
(same pinning: servers on one CPU, dnsperf and this process on the other; same dnsperf
settings) when ``--workloads`` names them.

* ``churn``: ``--churn-n`` Services (default 5,000; 3 endpoints each, one in five headless)
  served from ``tests/fakeapi.py`` over HTTP to ``kdns serve`` (kubeadm's Corefile, the
  ``kubernetes`` block reading the fake API through a kubeconfig; ``--kdns-workers N`` runs
  ``kdns serve --workers N``). dnsperf asks every Service name (A, shuffled) while this process
  replaces the EndpointSlice of a random Service ``rate`` times a second, for each rate of
  ``--churn-rates`` (default 0, 5, 20, 100). Stale answers are counted: after each change of a
  headless Service (whose A answer is the endpoints), a checker asks its name until the new
  addresses come back (a change not visible within 2 s counts as stale), then once more (an
  old answer then, from a stored reply, counts as stale too). Reported per rate: median QPS,
  the ratio to rate 0, changes made, stale answers, and the time changes took to show.
* ``cold``: every query a name that server has not been asked before in that run: in-zone
  NXDOMAIN ``c<rep>x<i>.<ns>.svc.cluster.local``, the first query of Service names (each rep
  its own share of the Services), and fresh mixed-case spellings of known names, shuffled into
  one file per rep with more lines than a run can send. kdns (manifests, kubeadm's Corefile)
  and dnsmasq (the same names, ``local=/cluster.local/``) get the same file.
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import udp_qps as uq

sys.path.insert(0, str(uq.REPO))
from tests import fakeapi

ZONE = "cluster.local"
NAMESPACES = 20
STALE_AFTER = 2.0
"""Seconds a change may take to show before the name counts as stale."""


@dataclass
class ChurnRun:
    qps: float
    changes: int
    checked: int
    stale: int
    show_ms: list[float] = field(default_factory=list)
    lost: int = 0


def _endpoint_ips(k: int) -> list[str]:
    return [f"10.{64 + (k >> 16) % 64}.{(k >> 8) & 255}.{k & 255}" for k in (3 * k, 3 * k + 1,
                                                                              3 * k + 2)]


def _name(i: int) -> str:
    return f"svc{i}.ns{i % NAMESPACES}.svc.{ZONE}"


def _slice(i: int, k: int) -> fakeapi.Obj:
    return fakeapi.endpoint_slice(f"ns{i % NAMESPACES}", f"svc{i}-x", f"svc{i}",
                                  ports=[("http", 80, "TCP")], endpoints=_endpoint_ips(k))


def _seed(api: fakeapi.FakeApiServer, n: int) -> None:
    for j in range(NAMESPACES):
        api.add("namespaces", fakeapi.namespace(f"ns{j}"))
    for i in range(n):
        ns = f"ns{i % NAMESPACES}"
        if i % 5 == 0:
            api.add("services", fakeapi.service(ns, f"svc{i}", headless=True,
                                                ports=[("http", 80, "TCP")]))
        else:
            api.add("services", fakeapi.service(ns, f"svc{i}", cluster_ip=(
                f"10.200.{(i + 1) >> 8}.{(i + 1) & 255}"), ports=[("http", 80, "TCP")]))
        api.add("endpointslices", _slice(i, i))


def _a_query(name: str) -> bytes:
    qid = random.getrandbits(16)
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00\x00\x01\x00\x01"


def _addresses(port: int, name: str, sock: socket.socket) -> list[str] | None:
    """The A addresses kdns gives for ``name`` (None on no reply)."""
    from dnslib import DNSRecord

    sock.sendto(_a_query(name), ("127.0.0.1", port))
    try:
        data = sock.recv(4096)
    except OSError:
        return None
    return sorted(str(r.rdata) for r in DNSRecord.parse(data).rr)


class Churner:
    """Replaces the EndpointSlice of a random Service ``rate`` times a second and checks that
    every change to a headless Service shows, and stays shown, in kdns's answers."""

    def __init__(self, api: fakeapi.FakeApiServer, n: int, port: int, rate: float,
                 seed: int, next_k: int) -> None:
        self.api, self.n, self.port, self.rate = api, n, port, rate
        self.rng = random.Random(seed)
        self.k = next_k
        self.changes = self.checked = self.stale = 0
        self.show_ms: list[float] = []
        self.latest: dict[int, int] = {}
        """Service -> the endpoint generation of its last change (a later change of the same
        Service may overtake a check: its data counts as new too)."""
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="churn-check")
        self._thread = threading.Thread(target=self._run, name="churner", daemon=True)

    def start(self) -> None:
        if self.rate > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._pool.shutdown(wait=True)

    def _run(self) -> None:
        period = 1.0 / self.rate
        t_next = time.monotonic()
        while not self._stop.is_set():
            i = self.rng.randrange(self.n)
            self.k += 1
            self.latest[i] = self.k
            self.api.update("endpointslices", _slice(i, self.k))
            self.changes += 1
            if i % 5 == 0:
                self._pool.submit(self._check, i, self.k, time.monotonic())
            t_next += period
            delay = t_next - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def _new(self, i: int, k: int) -> list[list[str]]:
        """The answers that count as new for change ``k`` of Service ``i``."""
        return [sorted(_endpoint_ips(g)) for g in {k, self.latest.get(i, k)}]

    def _check(self, i: int, k: int, changed_at: float) -> None:
        name = _name(i)
        stale = True
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            while time.monotonic() - changed_at < STALE_AFTER:
                got = _addresses(self.port, name, s)
                if got in self._new(i, k):
                    shown = (time.monotonic() - changed_at) * 1000
                    # Once shown, it must stay: a stored reply from the old data would not.
                    again = _addresses(self.port, name, s)
                    stale = again is not None and again not in self._new(i, k)
                    with self._lock:
                        self.show_ms.append(shown)
                    break
                time.sleep(0.005)  # the old data until the change is published
        with self._lock:
            self.checked += 1
            self.stale += stale


def _kdns_corefile(port: int, kubeconfig: str, upstream: int, optional: list[str]) -> str:
    text = uq.kdns_corefile(port, Path("@MANIFESTS@"), upstream,
                            [uq.free_port() for _ in range(3)], "kubeadm", optional)
    return text.replace("manifests @MANIFESTS@", f"kubeconfig {kubeconfig}")


def run_churn(args: argparse.Namespace, children: uq.Children, tmp: Path, pin: uq.Pinning,
              gen_: uq.Generator) -> dict[str, Any]:
    n, rates = args.churn_n, args.churn_rates
    have, _missing = uq.kubeadm_plugins()
    with fakeapi.FakeApiServer(bookmark_interval=1.0) as api:
        uq._log(f"churn: seeding {n} Services (3 endpoints each, one in five headless) "
                "into the fake API server")
        _seed(api, n)
        kubeconfig = api.write_kubeconfig(str(tmp / "kubeconfig"))
        port = uq.free_port()
        corefile = tmp / "Corefile.churn"
        corefile.write_text(_kdns_corefile(port, kubeconfig, uq.free_port(), have))
        log = tmp / "kdns-churn.log"
        cmd = [*pin.prefix(pin.server_cpu), sys.executable, "-m", "kdns.cli", "serve",
               "--conf", str(corefile), "--dns-addr", "127.0.0.1", "--log-level", "warning"]
        if args.kdns_workers > 1:
            cmd += ["--workers", str(args.kdns_workers)]
        with log.open("wb") as out:
            proc = children.start(cmd, cwd=str(uq.REPO), stdin=uq.subprocess.DEVNULL,
                                  stdout=out, stderr=uq.subprocess.STDOUT)
        server = uq.Server("kdns", port, proc, log)
        try:
            uq.wait_ready(server, _name(1), args.startup_timeout)
            queries = tmp / "queries-churn.txt"
            order = list(range(n))
            random.Random(7).shuffle(order)
            queries.write_text("".join(f"{_name(i)} A\n" for i in order))
            spec = uq.Workload(0, "churn")
            if args.warmup > 0:
                gen_.run(port, queries, args.warmup)
            runs: dict[float, list[ChurnRun]] = {r: [] for r in rates}
            k = n
            for rep in range(args.reps):
                for rate in rates:
                    churner = Churner(api, n, port, rate, seed=rep * 1000 + int(rate), next_k=k)
                    churner.start()
                    try:
                        result, _problem = uq.measure(server, gen_, queries, args.duration, 0.0,
                                                      spec, args.rate)
                    finally:
                        churner.stop()
                    k = churner.k
                    run = ChurnRun(result.qps, churner.changes, churner.checked, churner.stale,
                                   churner.show_ms, result.lost)
                    runs[rate].append(run)
                    uq._log(f"churn rep {rep + 1}/{args.reps} rate {rate:g}/s: "
                            f"{result.qps:,.0f} QPS, {run.changes} changes, "
                            f"{run.stale}/{run.checked} stale")
        finally:
            children.stop(proc)
    return _churn_report(args, runs)


def _churn_report(args: argparse.Namespace, runs: dict[float, list[ChurnRun]]) -> dict[str, Any]:
    mode = f"--workers {args.kdns_workers}" if args.kdns_workers > 1 else "one process"
    print(f"\nchurn: {args.churn_n} Services (3 endpoints each, one in five headless) from the "
          f"fake API over HTTP, kubeadm Corefile, kdns {mode}; dnsperf asks every Service "
          f"name (A); EndpointSlices of random Services replaced at each rate; "
          f"median of {args.reps} x {args.duration:g} s")
    frozen = statistics.median(r.qps for r in runs[min(runs)]) if runs else 0.0
    print(f"{'changes/s':>10} {'QPS':>10} {'x frozen':>9} {'changes':>8} {'stale':>9} "
          f"{'shown p50/max ms':>17}")
    rows = []
    for rate, rs in runs.items():
        qps = statistics.median(r.qps for r in rs)
        shown = sorted(x for r in rs for x in r.show_ms)
        stale = sum(r.stale for r in rs)
        checked = sum(r.checked for r in rs)
        p50 = f"{statistics.median(shown):.0f}/{shown[-1]:.0f}" if shown else "-"
        ratio = qps / frozen if frozen else 0.0
        print(f"{rate:>10g} {qps:>10,.0f} {ratio:>9.2f} {sum(r.changes for r in rs):>8} "
              f"{stale:>4}/{checked:<4} {p50:>17}")
        rows.append({"server": "kdns", "workload": f"churn-{rate:g}", "qps_median": qps,
                     "ratio_frozen": ratio, "stale": stale, "checked": checked,
                     "workers": args.kdns_workers, "runs": [r.qps for r in rs]})
        print(f"RESULT server=kdns workload=churn-{rate:g} qps_median={qps:.0f} "
              f"ratio_frozen={ratio:.2f} stale={stale} checked={checked} "
              f"workers={args.kdns_workers}")
    print("README rows (workload | kdns QPS | x frozen | stale):")
    for row in rows:
        print(f"| churn, {row['workload'][6:]} changes/s ({args.churn_n:,} Services, "
              f"{'--workers ' + str(args.kdns_workers) if args.kdns_workers > 1 else 'one process'})"
              f" | {row['qps_median']:,.0f} | {row['ratio_frozen']:.2f} | "
              f"{row['stale']} of {row['checked']} |")
    return {"churn": rows}


# -- cold -------------------------------------------------------------------------------------


def _cold_file(path: Path, data: uq.Generated, rep: int, reps: int, lines: int,
               rng: random.Random) -> float:
    """Write one rep's never-asked names; returns the NXDOMAIN share."""
    names = sorted(data.names)
    share = names[rep::reps + 1]  # this rep's first-time positives (the warm-up has its own)
    spaces = sorted({n.split(".")[1] for n in names})
    out: list[str] = [f"{n} A" for n in share]
    n_nx = (lines - len(out)) // 2
    out += [f"c{rep}x{i}.{spaces[i % len(spaces)]}.svc.{ZONE} A" for i in range(n_nx)]
    while len(out) < lines:
        name = rng.choice(names)
        out.append("".join(c.upper() if rng.random() < 0.5 else c for c in name) + " A")
    rng.shuffle(out)
    path.write_text("\n".join(out) + "\n")
    return n_nx / len(out)


def run_cold(args: argparse.Namespace, children: uq.Children, tmp: Path, pin: uq.Pinning,
             gen_: uq.Generator) -> dict[str, Any]:
    sub = argparse.Namespace(**vars(args))
    sub.servers = [s for s in args.servers if s in ("kdns", "dnsmasq")]
    sub.workloads = ["hits"]
    have, _missing = uq.kubeadm_plugins()
    uq._log(f"cold: generating {args.churn_n} services")
    data = uq.generate(tmp, args.churn_n, NAMESPACES)
    ctx = uq.Context(children, tmp, data, pin, sub, optional_plugins=have)
    servers = uq.start_servers(ctx)
    rng = random.Random(11)
    # More lines than a run can send, so no name comes round twice.
    lines = args.cold_lines
    spec = uq.Workload(0, "cold")
    qps: dict[str, list[float]] = {s: [] for s in servers}
    problems: list[str] = []
    for rep in range(args.reps):
        path = tmp / f"queries-cold-{rep}.txt"
        nx = _cold_file(path, data, rep, args.reps, lines, rng)
        names = list(servers)
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            result, problem = uq.measure(servers[name], gen_, path, args.duration, nx, spec,
                                         args.rate)
            if result.sent >= lines:
                problems.append(f"{name} rep {rep + 1}: the file ran out ({lines} lines); "
                                "raise --cold-lines")
            if problem:
                problems.append(f"{name} rep {rep + 1}: {problem}")
            qps[name].append(result.qps)
            uq._log(f"cold rep {rep + 1}/{args.reps} {name:<8} {result.qps:>10,.0f} QPS "
                    f"(sent {result.sent} of {lines} lines)")
    print(f"\ncold: names never asked before (in-zone NXDOMAIN, first query of Service names, "
          f"new mixed-case spellings), {args.churn_n} Services, kubeadm Corefile; "
          f"median of {args.reps} x {args.duration:g} s")
    rows = []
    for name, values in qps.items():
        med = statistics.median(values)
        print(f"  {name:<8} {med:>10,.0f} QPS  (runs {', '.join(f'{v:,.0f}' for v in values)})")
        rows.append({"server": name, "workload": "cold", "qps_median": med, "runs": values})
        print(f"RESULT server={name} workload=cold qps_median={med:.0f}")
    if "dnsmasq" in qps and "kdns" in qps:
        k, d = statistics.median(qps["kdns"]), statistics.median(qps["dnsmasq"])
        ratio = k / d
        print(f"ratio kdns/dnsmasq cold: {ratio:.2f} (goal >= 0.4: {'PASS' if ratio >= 0.4 else 'FAIL'})")
        print("README row (workload | kdns QPS | dnsmasq QPS | kdns/dnsmasq):")
        print(f"| cold names ({args.churn_n:,} Services) | {k:,.0f} | {d:,.0f} | {ratio:.2f} |")
    for p in problems:
        print(f"warning: {p}")
    for server in servers.values():
        children.stop(server.proc)
    return {"cold": rows, "cold_problems": problems}
