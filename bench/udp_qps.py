#!/usr/bin/env python3
"""UDP queries per second for cluster names: kdns and dnsmasq side by side, in one run.

This script (a benchmark, not a test) owns the whole measurement:

1. ``gen.py`` writes N ClusterIP services across namespaces as manifests for kdns and as
   ``host-record``/``srv-host`` lines for dnsmasq, plus the dnsperf query files;
2. it starts ``kdns serve`` on a Corefile that reads those manifests and dnsmasq on another
   loopback port, each pinned to CPU 1 (when the machine has 2+ CPUs), and checks that both
   answer a sample of names correctly before measuring anything;
3. the load generator (dnsperf if installed, else a bounded Python socket loop) runs on CPU 0,
   one warm-up per server and workload, then ``--reps`` runs per server and workload,
   alternating which server goes first;
4. it prints a table (median QPS with min-max, latency, the server's CPU use during the run),
   the kdns/dnsmasq ratio per workload and each server's memory, plus one ``RESULT`` line per
   server and workload for scripts.

Everything binds or talks to 127.0.0.1 only. Every process it starts is stopped by PID on the
way out, also on Ctrl-C, SIGTERM or an exception, and its temp directory is removed.

    .venv/bin/python bench/udp_qps.py                 # full run, ~2-3 minutes
    .venv/bin/python bench/udp_qps.py --quick         # smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen import WORKLOADS, Generated, generate

REPO = Path(__file__).resolve().parent.parent
SERVERS = ("kdns", "dnsmasq")
TTL = 30
"""Both servers answer with this TTL (kubeadm's Corefile uses 30)."""
STOP_GRACE = 10.0
"""Seconds a server gets to exit on SIGTERM before SIGKILL."""
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


class BenchError(RuntimeError):
    """The benchmark cannot produce a meaningful number; the message says why."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# processes


class Children:
    """Every process this script starts, so that each is stopped by its PID on the way out."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        # A new session: a Ctrl-C in the terminal reaches only this script, which then stops
        # the children in order instead of racing them.
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            list(cmd), start_new_session=True, **kwargs
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# --------------------------------------------------------------------------------------------
# CPUs, memory


@dataclass(frozen=True, slots=True)
class Pinning:
    server_cpu: int | None
    load_cpu: int | None

    def prefix(self, cpu: int | None) -> list[str]:
        # taskset execs the command, so the PID we hold is the server's own (for /proc reads).
        return ["taskset", "-c", str(cpu)] if cpu is not None else []

    def describe(self) -> str:
        if self.server_cpu is None:
            return "no CPU pinning (under 2 CPUs or no taskset): generator and servers share CPUs"
        return f"servers pinned to CPU {self.server_cpu}, load generator to CPU {self.load_cpu}"


def choose_pinning() -> Pinning:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return Pinning(None, None)
    return Pinning(server_cpu=cpus[1], load_cpu=cpus[0])


def proc_status_kb(pid: int, key: str) -> int | None:
    """``VmRSS``/``VmHWM`` of a live process in kB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and all its threads."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces; fields after its closing parenthesis are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# DNS on the wire (probe and correctness check use dnslib; the load loop uses raw bytes)


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (kdns binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port: int = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise BenchError("no free port on 127.0.0.1")


def ask(port: int, name: str, qtype: str = "A", timeout: float = 1.0) -> tuple[str, list[str]]:
    """(rcode name, answer rdata strings) for one query; raises OSError/timeout on no reply."""
    from dnslib import DNSRecord

    q = DNSRecord.question(name, qtype)
    reply = DNSRecord.parse(q.send("127.0.0.1", port, timeout=timeout))
    if reply.header.id != q.header.id:
        raise OSError("reply ID does not match")
    return RCODES.get(reply.header.rcode, str(reply.header.rcode)), [str(r.rdata) for r in reply.rr]


def wait_ready(server: Server, probe: str, deadline_s: float) -> None:
    """Poll until the server answers the probe name with an address, or fail with its log."""
    deadline = time.monotonic() + deadline_s
    last = "no reply"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(
                f"{server.name} exited with status {server.proc.returncode} before answering"
                f"\n{server.log_tail()}"
            )
        try:
            rcode, answers = ask(server.port, probe, timeout=0.5)
        except (OSError, TimeoutError) as e:
            last = f"no reply ({e.__class__.__name__})"
            time.sleep(0.05)  # an immediate error (port not bound yet) must not spin
        else:
            # SERVFAIL is what a kubernetes plugin says while its informers have not synced.
            if rcode == "NOERROR" and answers:
                return
            last = f"{rcode} {answers}"
            time.sleep(0.1)
    raise BenchError(
        f"{server.name} did not answer {probe} within {deadline_s:.0f} s (last: {last})"
        f"\n{server.log_tail()}"
    )


def check_answers(server: Server, gen: Generated, sample: int = 20) -> None:
    """Refuse to benchmark a server that gives wrong answers: speed of a wrong answer is noise."""
    names = list(gen.names)
    step = max(1, len(names) // sample)
    problems: list[str] = []
    checks = [(n, "NOERROR", [gen.names[n]]) for n in names[::step][:sample]]
    checks += [(n, "NXDOMAIN", []) for n in gen.misses[:5]]
    for name, want_rcode, want in checks:
        try:
            rcode, answers = ask(server.port, name)
        except OSError as e:
            problems.append(f"{name} A -> no reply ({e.__class__.__name__})")
            continue
        if rcode != want_rcode or (want and answers != want):
            problems.append(f"{name} A -> {rcode} {answers}, want {want_rcode} {want or ''}")
    if problems:
        raise BenchError(f"{server.name} answers wrongly:\n  " + "\n  ".join(problems))


# --------------------------------------------------------------------------------------------
# servers


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    rss_ready_kb: int | None = None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"({self.name}: no log)"
        tail = "\n".join(f"  | {line}" for line in text[-lines:])
        return f"{self.name} log ({self.log}):\n{tail}" if tail else f"({self.name}: empty log)"


def kdns_corefile(port: int, manifests: Path) -> str:
    return (
        f".:{port} {{\n"
        "    errors\n"
        "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
        f"        manifests {manifests}\n"
        f"        ttl {TTL}\n"
        "    }\n"
        "}\n"
    )


def start_kdns(
    children: Children, tmp: Path, gen: Generated, pin: Pinning, args: argparse.Namespace
) -> Server:
    port = free_port()
    corefile = tmp / "Corefile"
    corefile.write_text(kdns_corefile(port, gen.manifests))
    log = tmp / "kdns.log"
    cmd = [
        *pin.prefix(pin.server_cpu),
        sys.executable, "-m", "kdns.cli", "serve",
        "--conf", str(corefile),
        "--dns-addr", "127.0.0.1",
    ]
    with log.open("wb") as out:
        proc = children.start(
            cmd, cwd=str(REPO), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    return Server("kdns", port, proc, log)


def start_dnsmasq(
    children: Children, tmp: Path, gen: Generated, pin: Pinning, args: argparse.Namespace
) -> Server:
    port = free_port()
    log = tmp / "dnsmasq.log"
    conf = gen.dnsmasq_conf
    if args.dnsmasq_srv:
        conf = tmp / "dnsmasq-all.conf"
        conf.write_text(gen.dnsmasq_conf.read_text() + gen.dnsmasq_srv_conf.read_text())
    cmd = [
        *pin.prefix(pin.server_cpu),
        "dnsmasq",
        "--no-daemon",  # foreground, no pid file, no user switch (our temp dir is 0700)
        "--no-resolv",
        "--no-hosts",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        f"--conf-file={conf}",
        f"--local-ttl={TTL}",
        # Default cache size (150): every answer comes from host-record/srv-host data, which
        # dnsmasq keeps outside the LRU cache, and there is no upstream whose answers could be
        # cached, so the setting does not change what is measured.
        "--log-facility=-",
        "--pid-file=",
    ]
    with log.open("wb") as out:
        proc = children.start(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    return Server("dnsmasq", port, proc, log)


STARTERS = {"kdns": start_kdns, "dnsmasq": start_dnsmasq}


# --------------------------------------------------------------------------------------------
# load generators


@dataclass
class RunResult:
    qps: float
    sent: int
    completed: int
    lost: int
    avg_latency_ms: float | None
    run_time_s: float
    """Sending time as the generator reports it (without its start-up and final drain)."""
    rcodes: Counter[str] = field(default_factory=Counter)
    server_cpu: float | None = None
    """Server CPU seconds / run seconds (1.0 = one core saturated). Under ~0.9 the server had
    idle time, so the load generator, not the server, set the figure."""

    def answer_problem(self, miss_fraction: float) -> str | None:
        """Why the response codes do not match the workload, or None when they do."""
        total = sum(self.rcodes.values())
        if total == 0:
            return "no responses"
        nx = self.rcodes["NXDOMAIN"] / total
        other = 1 - (self.rcodes["NOERROR"] + self.rcodes["NXDOMAIN"]) / total
        if other > 0.01:
            return f"{other:.1%} of responses not NOERROR/NXDOMAIN: {dict(self.rcodes)}"
        # dnsperf stops mid-file, so the ratio only approximates the file's.
        if abs(nx - miss_fraction) > 0.03:
            return f"NXDOMAIN share {nx:.1%}, expected {miss_fraction:.1%}"
        return None


class Generator:
    name = "generator"

    def describe(self) -> str:
        raise NotImplementedError

    def run(self, port: int, queries: Path, seconds: float) -> RunResult:
        raise NotImplementedError


class DnsperfGenerator(Generator):
    name = "dnsperf"

    def __init__(self, children: Children, pin: Pinning, outstanding: int, clients: int) -> None:
        self.children, self.pin = children, pin
        self.outstanding, self.clients = outstanding, clients
        out = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True, timeout=10)
        m = re.search(r"Version\s+(\S+)", out.stdout + out.stderr)
        self.version = m.group(1) if m else "?"

    def describe(self) -> str:
        return (
            f"dnsperf {self.version} ({self.clients} client(s), "
            f"{self.outstanding} queries outstanding)"
        )

    def run(self, port: int, queries: Path, seconds: float) -> RunResult:
        cmd = [
            *self.pin.prefix(self.pin.load_cpu),
            "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
            "-l", f"{seconds:g}", "-c", str(self.clients), "-q", str(self.outstanding),
            # A reply later than 1 s on loopback is lost in all but name, and dnsperf waits
            # this long for stragglers at the end of every run.
            "-t", "1",
        ]
        proc = self.children.start(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            out, _ = proc.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            raise BenchError(f"dnsperf did not finish within {seconds + 30:.0f} s") from None
        finally:
            self.children.stop(proc)
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise BenchError(f"dnsperf exited with {proc.returncode}:\n{text}")
        return parse_dnsperf(text)


def parse_dnsperf(text: str) -> RunResult:
    def num(pattern: str) -> float:
        m = re.search(pattern, text)
        if not m:
            raise BenchError(f"dnsperf output has no {pattern!r}:\n{text}")
        return float(m.group(1))

    rcodes: Counter[str] = Counter()
    m = re.search(r"Response codes:\s+(.*)", text)
    if m:
        for code, count in re.findall(r"([A-Z]+) (\d+) \(", m.group(1)):
            rcodes[code] = int(count)
    lat = re.search(r"Average Latency \(s\):\s+([\d.]+)", text)
    return RunResult(
        qps=num(r"Queries per second:\s+([\d.]+)"),
        sent=int(num(r"Queries sent:\s+(\d+)")),
        completed=int(num(r"Queries completed:\s+(\d+)")),
        lost=int(num(r"Queries lost:\s+(\d+)")),
        avg_latency_ms=float(lat.group(1)) * 1000 if lat else None,
        run_time_s=num(r"Run time \(s\):\s+([\d.]+)"),
        rcodes=rcodes,
    )


def encode_query(name: str, qtype: str) -> bytes:
    """A DNS query with ID 0 and RD clear, as dnsperf sends; the loop patches the ID in."""
    types = {"A": 1, "AAAA": 28, "SRV": 33, "PTR": 12, "TXT": 16}
    wire = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split("."))
    header = struct.pack(">HHHHHH", 0, 0, 1, 0, 0, 0)
    return header + wire + b"\0" + struct.pack(">HH", types[qtype], 1)


def read_queries(path: Path) -> list[bytes]:
    out: list[bytes] = []
    for line in path.read_text().splitlines():
        if line.strip():
            name, qtype = line.split()
            out.append(encode_query(name, qtype))
    return out


class PythonGenerator(Generator):
    """A bounded window of outstanding queries on one socket (sendmmsg is not in Python).

    It spends most of its CPU in the interpreter, so against a fast server it measures itself:
    read the server CPU column, and prefer dnsperf.
    """

    name = "python"
    TIMEOUT = 1.0
    """A query unanswered for this long is lost (as dnsperf's ``-t 1`` above)."""

    def __init__(self, outstanding: int, max_qps_bound: int = 500_000) -> None:
        self.outstanding = outstanding
        self.max_qps_bound = max_qps_bound

    def describe(self) -> str:
        return f"built-in Python loop ({self.outstanding} queries outstanding; a lower bound)"

    def run(self, port: int, queries: Path, seconds: float) -> RunResult:
        packets = read_queries(queries)
        max_queries = int(seconds * self.max_qps_bound)  # bounded in count as well as time
        pending: dict[int, float] = {}
        rcodes: Counter[str] = Counter()
        sent = completed = lost = 0
        latency_sum = 0.0
        next_id = 0
        clock = time.perf_counter
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.connect(("127.0.0.1", port))
            sock.setblocking(False)
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            start = clock()
            end = start + seconds
            next_expiry = start + 0.1
            while True:
                now = clock()
                if now >= end or (sent >= max_queries and not pending):
                    break
                while len(pending) < self.outstanding and sent < max_queries:
                    qid = next_id
                    next_id = (next_id + 1) & 0xFFFF
                    if qid in pending:  # a lost query still holds this ID
                        continue
                    pkt = packets[sent % len(packets)]
                    try:
                        sock.send(struct.pack(">H", qid) + pkt[2:])
                    except BlockingIOError:
                        break
                    except ConnectionRefusedError:
                        raise BenchError(f"nothing listens on 127.0.0.1:{port}") from None
                    pending[qid] = now
                    sent += 1
                if poller.poll(50):
                    while True:
                        try:
                            data = sock.recv(4096)
                        except BlockingIOError:
                            break
                        except ConnectionRefusedError:
                            raise BenchError(f"nothing listens on 127.0.0.1:{port}") from None
                        if len(data) < 12:
                            continue
                        t0 = pending.pop(struct.unpack_from(">H", data)[0], None)
                        if t0 is None:
                            continue  # late reply to a query already counted lost
                        latency_sum += clock() - t0
                        completed += 1
                        rcode = data[3] & 0x0F
                        rcodes[RCODES.get(rcode, str(rcode))] += 1
                if now >= next_expiry:
                    next_expiry = now + 0.1
                    stale = [q for q, t in pending.items() if now - t > self.TIMEOUT]
                    for q in stale:
                        del pending[q]
                    lost += len(stale)
            elapsed = clock() - start
        return RunResult(
            qps=completed / elapsed if elapsed > 0 else 0.0,
            sent=sent,
            completed=completed,
            lost=lost,
            avg_latency_ms=latency_sum / completed * 1000 if completed else None,
            run_time_s=elapsed,
            rcodes=rcodes,
        )


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class Cell:
    """All measured runs of one server on one workload."""

    runs: list[RunResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def median_qps(self) -> float:
        return statistics.median(r.qps for r in self.runs)


def measure(
    server: Server, gen_: Generator, queries: Path, seconds: float, miss_fraction: float
) -> tuple[RunResult, str | None]:
    if server.proc.poll() is not None:
        raise BenchError(
            f"{server.name} died (status {server.proc.returncode})\n{server.log_tail()}"
        )
    cpu0 = cpu_seconds(server.proc.pid)
    result = gen_.run(server.port, queries, seconds)
    cpu1 = cpu_seconds(server.proc.pid)
    if cpu0 is not None and cpu1 is not None and result.run_time_s > 0:
        # The server is idle while the generator starts and drains, so CPU over the sending
        # time is its utilisation under load.
        result.server_cpu = (cpu1 - cpu0) / result.run_time_s
    if server.proc.poll() is not None:
        raise BenchError(f"{server.name} died during the run\n{server.log_tail()}")
    return result, result.answer_problem(miss_fraction)


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def report(
    args: argparse.Namespace,
    servers: dict[str, Server],
    cells: dict[tuple[str, str], Cell],
    gen_: Generator,
    pin: Pinning,
) -> dict[str, object]:
    print()
    print(
        f"UDP, {args.n} services in {args.namespaces} namespaces, {args.reps} rep(s) x "
        f"{args.duration:g} s per server and workload (after a {args.warmup:g} s warm-up)"
    )
    print(f"load: {gen_.describe()}; {pin.describe()}")
    print()
    header = (
        f"{'server':<8} {'workload':<8} {'median QPS':>11}  {'(min - max)':<21} "
        f"{'avg lat':>8}  {'lost':>5}  {'server CPU':>10}"
    )
    print(header)
    print("-" * len(header))
    results: list[dict[str, object]] = []
    out: dict[str, object] = {"results": results}
    for workload in args.workloads:
        for name in args.servers:
            cell = cells[(name, workload)]
            qs = [r.qps for r in cell.runs]
            lat = [r.avg_latency_ms for r in cell.runs if r.avg_latency_ms is not None]
            cpu = [r.server_cpu for r in cell.runs if r.server_cpu is not None]
            lost = sum(r.lost for r in cell.runs)
            rng = f"({fmt_int(min(qs))} - {fmt_int(max(qs))})"
            lat_s = f"{statistics.median(lat):.3f}ms" if lat else "-"
            cpu_s = f"{statistics.median(cpu):.0%}" if cpu else "-"
            flag = "  WRONG ANSWERS" if cell.problems else ""
            print(
                f"{name:<8} {workload:<8} {fmt_int(cell.median_qps):>11}  {rng:<21} "
                f"{lat_s:>8}  {lost:>5}  {cpu_s:>10}{flag}"
            )
            results.append(
                {
                    "server": name, "workload": workload, "qps_median": cell.median_qps,
                    "qps_min": min(qs), "qps_max": max(qs), "qps_runs": qs,
                    "avg_latency_ms": statistics.median(lat) if lat else None,
                    "lost": lost, "server_cpu": statistics.median(cpu) if cpu else None,
                    "problems": cell.problems,
                }
            )
    print()
    if "kdns" in args.servers and "dnsmasq" in args.servers:
        ratios = {
            w: cells[("kdns", w)].median_qps / cells[("dnsmasq", w)].median_qps
            for w in args.workloads
            if cells[("dnsmasq", w)].median_qps > 0
        }
        out["ratio_kdns_dnsmasq"] = ratios
        print(
            "ratio kdns/dnsmasq (median QPS): "
            + ", ".join(f"{w} {r:.2f}" for w, r in ratios.items())
        )
    mem: dict[str, dict[str, int | None]] = {}
    for name, server in servers.items():
        end = proc_status_kb(server.proc.pid, "VmRSS")
        peak = proc_status_kb(server.proc.pid, "VmHWM")
        mem[name] = {"rss_ready_kb": server.rss_ready_kb, "rss_end_kb": end, "rss_peak_kb": peak}

        def mb(kb: int | None) -> str:
            return f"{kb / 1024:.1f} MB" if kb is not None else "?"

        print(
            f"memory {name}: VmRSS {mb(server.rss_ready_kb)} when ready, {mb(end)} at the end "
            f"(peak {mb(peak)})"
        )
    out["memory"] = mem
    for (name, workload), cell in cells.items():
        for p in cell.problems:
            print(f"warning: {name} {workload}: {p}")
        cpu = [r.server_cpu for r in cell.runs if r.server_cpu is not None]
        if cpu and statistics.median(cpu) < 0.9:
            print(
                f"note: {name} {workload}: server CPU {statistics.median(cpu):.0%}, so the server "
                "was not saturated and the load generator set this figure (a lower bound)"
            )
    print()
    for workload in args.workloads:
        for name in args.servers:
            cell = cells[(name, workload)]
            qs = [r.qps for r in cell.runs]
            print(
                f"RESULT server={name} workload={workload} qps={cell.median_qps:.1f} "
                f"min={min(qs):.1f} max={max(qs):.1f} runs={len(qs)} "
                f"ok={'no' if cell.problems else 'yes'}"
            )
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="UDP QPS for cluster names, kdns vs dnsmasq in the same run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--n", type=int, default=None, help="services (default 1000; --quick: 200)")
    p.add_argument("--namespaces", type=int, default=20)
    p.add_argument("--reps", type=int, default=None, help="runs per server and workload (3)")
    p.add_argument("--duration", type=float, default=None, help="seconds per run (10)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per server and "
                   "workload, not counted (2)")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma list of kdns,dnsmasq")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list of hits,mixed")
    p.add_argument("--generator", choices=("auto", "dnsperf", "python"), default="auto")
    p.add_argument("--outstanding", type=int, default=200,
                   help="queries in flight (dnsperf -q)")
    p.add_argument("--clients", type=int, default=1, help="dnsperf -c")
    p.add_argument("--dnsmasq-srv", action="store_true",
                   help="also load the srv-host records into dnsmasq (it scans them linearly "
                   "on every query, which slows all its answers)")
    p.add_argument("--startup-timeout", type=float, default=60.0,
                   help="seconds a server may take to answer its first query")
    p.add_argument("--quick", action="store_true",
                   help="smoke mode: 200 names, 1 rep of 1 s, 0.3 s warm-up")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = p.parse_args(argv)
    quick = args.quick
    args.n = args.n if args.n is not None else (200 if quick else 1000)
    args.reps = args.reps if args.reps is not None else (1 if quick else 3)
    args.duration = args.duration if args.duration is not None else (1.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if quick else 2.0)
    args.servers = [s for s in args.servers.split(",") if s]
    args.workloads = [w for w in args.workloads.split(",") if w]
    for s in args.servers:
        if s not in SERVERS:
            p.error(f"unknown server {s!r}; choose from {', '.join(SERVERS)}")
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    if args.reps < 1 or args.duration <= 0 or args.warmup < 0 or args.outstanding < 1:
        p.error("--reps, --duration and --outstanding must be positive, --warmup not negative")
    return args


def preflight(args: argparse.Namespace) -> None:
    """Say clearly what is missing instead of failing halfway."""
    if "dnsmasq" in args.servers and shutil.which("dnsmasq") is None:
        _log("dnsmasq is not installed (apt-get install dnsmasq-base): running kdns alone, "
             "so there is no ratio to report")
        args.servers = [s for s in args.servers if s != "dnsmasq"]
    if "kdns" in args.servers and importlib.util.find_spec("kdns.cli") is None:
        raise BenchError(
            f"kdns.cli is not importable by {sys.executable}: run this script with the "
            "project's venv (.venv/bin/python bench/udp_qps.py) or pass --servers dnsmasq"
        )
    if importlib.util.find_spec("dnslib") is None:
        raise BenchError(f"dnslib is not importable by {sys.executable}; use the project's venv")
    if not args.servers:
        raise BenchError("no server left to benchmark")


def make_generator(args: argparse.Namespace, children: Children, pin: Pinning) -> Generator:
    have_dnsperf = shutil.which("dnsperf") is not None
    if args.generator == "dnsperf" and not have_dnsperf:
        raise BenchError("dnsperf is not installed (apt-get install dnsperf)")
    if args.generator == "dnsperf" or (args.generator == "auto" and have_dnsperf):
        return DnsperfGenerator(children, pin, args.outstanding, args.clients)
    if args.generator == "auto":
        _log("dnsperf is not installed: using the built-in Python load generator, whose "
             "figures are a lower bound (it may saturate before the server does)")
    return PythonGenerator(min(args.outstanding, 1000))


def run(args: argparse.Namespace, children: Children, tmp: Path) -> dict[str, object]:
    preflight(args)
    pin = choose_pinning()
    gen_ = make_generator(args, children, pin)
    if pin.load_cpu is not None and isinstance(gen_, PythonGenerator):
        os.sched_setaffinity(0, {pin.load_cpu})
    _log(f"generating {args.n} services in {args.namespaces} namespaces in {tmp}")
    data = generate(tmp, args.n, args.namespaces)
    probe = next(iter(data.names))

    servers: dict[str, Server] = {}
    for name in args.servers:
        t0 = time.monotonic()
        server = STARTERS[name](children, tmp, data, pin, args)
        servers[name] = server
        wait_ready(server, probe, args.startup_timeout)
        check_answers(server, data)
        server.rss_ready_kb = proc_status_kb(server.proc.pid, "VmRSS")
        _log(f"{name} ready on 127.0.0.1:{server.port} (pid {server.proc.pid}) "
             f"after {time.monotonic() - t0:.1f} s")

    if args.warmup > 0:
        # The first pass over the names fills per-name answer caches; measure steady state.
        for workload in args.workloads:
            for name, server in servers.items():
                _log(f"warm-up {name} {workload} {args.warmup:g} s")
                measure(server, gen_, data.queries[workload], args.warmup, 0.0)

    cells = {(s, w): Cell() for s in args.servers for w in args.workloads}
    for rep in range(args.reps):
        # Alternate who goes first so drift (thermal, other load) does not favour one server.
        order = list(args.servers) if rep % 2 == 0 else list(reversed(args.servers))
        for workload in args.workloads:
            for name in order:
                result, problem = measure(
                    servers[name], gen_, data.queries[workload], args.duration,
                    data.miss_fraction[workload],
                )
                cell = cells[(name, workload)]
                cell.runs.append(result)
                if problem:
                    cell.problems.append(f"rep {rep + 1}: {problem}")
                _log(f"rep {rep + 1}/{args.reps} {name:<8} {workload:<6} "
                     f"{result.qps:>10,.0f} QPS  lost {result.lost}")
    return report(args, servers, cells, gen_, pin)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Explicit for SIGINT too: a shell starts background jobs with SIGINT ignored, and the
    # clean-up below must run however the script is stopped.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    children = Children()
    tmp = Path(tempfile.mkdtemp(prefix="kdns-bench-"))
    try:
        out = run(args, children, tmp)
        if args.json is not None:
            args.json.write_text(json.dumps(out, indent=2) + "\n")
        problems = [r["problems"] for r in out["results"]]  # type: ignore[attr-defined]
        return 1 if any(problems) else 0
    except BenchError as e:
        _log(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        _log("interrupted")
        return 130
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave a server running.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        children.stop_all()
        if args.keep:
            _log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
