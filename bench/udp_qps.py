#!/usr/bin/env python3
"""Queries per second and latency: kdns, dnsmasq and unbound side by side, in one run.

This script (a benchmark, not a test) owns the whole throughput measurement:

1. ``gen.py`` writes N ClusterIP services and N/5 headless services across namespaces as
   manifests for kdns, ``host-record``/``srv-host`` lines for dnsmasq and ``local-data`` lines
   for unbound, plus a local upstream (``ext{k}.example.com``) and one dnsperf file per workload;
2. it starts the upstream (a dnsmasq on the load generator's CPU), then ``kdns serve`` on a
   kubeadm-shaped Corefile (errors, health, ready, kubernetes, prometheus, forward, cache 30 with
   the cluster zone disabled, loop, reload, loadbalance), dnsmasq and unbound on other loopback
   ports, each pinned to CPU 1 (when the machine has 2+ CPUs), and checks that every server
   answers a sample of every workload's names correctly before measuring anything;
3. the load generator (dnsperf, else a bounded Python socket loop for the UDP workloads) runs on
   CPU 0: one warm-up per server and workload, then ``--reps`` runs per server and workload,
   rotating which server goes first; workloads that read forwarded names are re-warmed right
   before each run, so only the cached path is measured;
4. it prints one table per workload (median QPS with min-max, latency, the server's CPU use),
   the ratios kdns/dnsmasq and kdns/unbound, the throughput goals with PASS/FAIL, each server's
   memory, and one ``RESULT`` line per server and workload for scripts.

Workloads (see ``gen.py`` for the query files): 1 ``hits``, 2 ``podmix``, 3 ``srv``, 4 ``cached``,
5 ``tcp`` (pipelined: one connection, ``--outstanding`` queries in flight), 6 ``latency`` (the
pod mix at a fixed ``--rate``, 2,000 QPS: avg, p50, p99, max from dnsperf's per-query output).

``--profile WORKLOAD`` runs kdns under a per-thread cProfile (``profile_kdns.py``) for that
workload only and prints where its time goes.

Everything binds or talks to 127.0.0.1 only. Every process it starts is stopped by PID on the
way out, also on Ctrl-C, SIGTERM or an exception, and its temp directory is removed.

    .venv/bin/python bench/udp_qps.py                 # full run, ~8 minutes
    .venv/bin/python bench/udp_qps.py --quick         # smoke run, ~30 s
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen import DEFAULT_WORKLOADS, WORKLOADS, Check, Generated, generate

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
SERVERS = ("kdns", "dnsmasq", "unbound")
TTL = 30
"""Every server answers cluster names with this TTL (kubeadm's Corefile uses 30) and caps what
it caches from the upstream at it (kubeadm's ``cache 30``)."""
STOP_GRACE = 10.0
"""Seconds a server gets to exit on SIGTERM before SIGKILL."""
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
KUBEADM_OPTIONAL = ("loop", "loadbalance")
"""kubeadm plugins that may not be implemented yet in this tree; left out with a note if so."""


@dataclass(frozen=True, slots=True)
class Workload:
    number: int
    title: str
    mode: str = "udp"
    fixed_rate: bool = False
    """Sent at ``--rate`` QPS; the figure of interest is latency, not QPS."""
    rewarm: bool = False
    """Reads forwarded names: warm the caches again right before each run (TTL cap 30 s)."""


SPECS: dict[str, Workload] = {
    "hits": Workload(1, "cluster-name A hits"),
    "podmix": Workload(2, "pod mix: ndots:5 walk, internal + external, A + AAAA", rewarm=True),
    "srv": Workload(3, "SRV (ClusterIP + headless) and headless A"),
    "cached": Workload(4, "forwarded names answered from cache", rewarm=True),
    "tcp": Workload(5, "TCP, pipelined queries on one connection", mode="tcp"),
    "latency": Workload(6, "latency at a fixed rate (pod mix)", fixed_rate=True, rewarm=True),
    "mixed": Workload(0, "80 % hits + 20 % in-zone NXDOMAIN (the earlier 'mixed')"),
}
CHANGE_WORKLOADS = ("churn", "cold")
"""Measured by ``change.py``: the cluster changing under load, and names never asked before."""
GOALS = {"hits": 0.9, "podmix": 0.9, "cached": 0.9}
"""Workload -> minimum median QPS ratio kdns/dnsmasq (kdns on one core, kubeadm plugins)."""


class BenchError(RuntimeError):
    """The benchmark cannot produce a meaningful number; the message says why."""


class GeneratorFailed(BenchError):
    """The load generator itself failed on one run (dnsperf gives up on a server that resets
    its TCP connections, for one): that run is left out, the others go on."""


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
    """User + system CPU time of a process, its threads and its reaped children (dnsmasq
    forks one child per TCP connection)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces; fields after its closing parenthesis are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# DNS on the wire (probe and correctness check use dnslib; the load loop uses raw bytes)


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (every server binds both)."""
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


def ask(port: int, name: str, qtype: str = "A", timeout: float = 1.0,
        tcp: bool = False) -> tuple[str, list[str]]:
    """(rcode name, answer rdata strings) for one query; raises OSError/timeout on no reply."""
    from dnslib import DNSRecord

    q = DNSRecord.question(name, qtype)
    reply = DNSRecord.parse(q.send("127.0.0.1", port, tcp=tcp, timeout=timeout))
    if reply.header.id != q.header.id:
        raise OSError("reply ID does not match")
    return RCODES.get(reply.header.rcode, str(reply.header.rcode)), [str(r.rdata) for r in reply.rr]


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    rss_ready_kb: int | None = None
    variants: dict[str, Server] = field(default_factory=dict)
    """Workload -> another instance of the same server with other data (dnsmasq's SRV copy)."""

    def for_workload(self, workload: str) -> Server:
        return self.variants.get(workload, self)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"({self.name}: no log)"
        tail = "\n".join(f"  | {line}" for line in text[-lines:])
        return f"{self.name} log ({self.log}):\n{tail}" if tail else f"({self.name}: empty log)"


def wait_ready(server: Server, probe: str, deadline_s: float) -> None:
    """Poll until the server answers the probe name with an address, or fail with its log."""
    deadline = time.monotonic() + deadline_s
    last = "no reply"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"{server.name} exited with {server.proc.returncode}\n"
                             f"{server.log_tail()}")
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


def check_answers(server: Server, checks: Sequence[Check], tcp: bool = False) -> None:
    """Refuse to benchmark a server that gives wrong answers: speed of a wrong answer is noise."""
    problems: list[str] = []
    for c in checks:
        try:
            rcode, answers = ask(server.port, c.name, c.qtype, tcp=tcp)
        except (OSError, TimeoutError) as e:
            problems.append(f"{c.name} {c.qtype} -> no reply ({e.__class__.__name__})")
            continue
        wrong = rcode != c.rcode
        wrong |= c.answers is not None and tuple(sorted(answers)) != c.answers
        wrong |= c.count is not None and len(answers) != c.count
        if wrong:
            want = c.answers if c.answers is not None else f"{c.count} answers" if c.count \
                is not None else ""
            problems.append(f"{c.name} {c.qtype} -> {rcode} {answers}, want {c.rcode} {want}")
    if problems:
        raise BenchError(f"{server.name} answers wrongly:\n  " + "\n  ".join(problems))


# --------------------------------------------------------------------------------------------
# servers


def kubeadm_plugins() -> tuple[list[str], list[str]]:
    """(kubeadm plugins kdns implements, the ones it does not yet) among loop/loadbalance."""
    from kdns.plugins.registry import IMPLEMENTED

    have = [p for p in KUBEADM_OPTIONAL if p in IMPLEMENTED]
    return have, [p for p in KUBEADM_OPTIONAL if p not in IMPLEMENTED]


def kdns_corefile(port: int, manifests: Path, upstream: int, http_ports: Sequence[int],
                  plugins: str, optional: Sequence[str], pods: str = "insecure",
                  namespaces: int = 0) -> str:
    """kubeadm's Corefile (reference §2.2) on loopback ports; ``plugins="minimal"`` keeps only
    what answers (kubernetes, forward, cache), to see what the others cost. ``pods``:
    ``insecure`` (kubeadm's), ``verified`` (per-client counts on), or ``isolate`` (verified
    plus ``isolate`` allowing every one of the ``namespaces``, so the answers stay the same
    and only what isolation costs changes)."""
    iso = ""
    if pods == "isolate":
        allow = " ".join(f"ns{k}" for k in range(namespaces))
        iso = f"        isolate {{\n            allow {allow}\n        }}\n"
    kube = (
        "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
        f"        manifests {manifests}\n"
        f"        pods {'insecure' if pods == 'insecure' else 'verified'}\n"
        f"{iso}"
        "        fallthrough in-addr.arpa ip6.arpa\n"
        f"        ttl {TTL}\n"
        "    }\n"
    )
    fwd = (
        f"    forward . 127.0.0.1:{upstream} {{\n"
        "        max_concurrent 1000\n"
        "    }\n"
        f"    cache {TTL} {{\n"
        "        disable success cluster.local\n"
        "        disable denial cluster.local\n"
        "    }\n"
    )
    if plugins == "minimal":
        return f".:{port} {{\n{kube}{fwd}}}\n"
    health, ready, prom = http_ports
    # health's "lameduck 5s" is left out: it only delays shutdown, which the bench does often.
    return (
        f".:{port} {{\n"
        "    errors\n"
        f"    health 127.0.0.1:{health}\n"
        f"    ready 127.0.0.1:{ready}\n"
        f"{kube}"
        f"    prometheus 127.0.0.1:{prom}\n"
        f"{fwd}"
        + "".join(f"    {p}\n" for p in optional if p == "loop")
        + "    reload\n"
        + "".join(f"    {p}\n" for p in optional if p == "loadbalance")
        + "}\n"
    )


@dataclass
class Context:
    children: Children
    tmp: Path
    data: Generated
    pin: Pinning
    args: argparse.Namespace
    upstream_port: int = 0
    optional_plugins: list[str] = field(default_factory=list)


def kdns_cmd(ctx: Context, corefile: Path) -> list[str]:
    serve = ["serve", "--conf", str(corefile), "--dns-addr", "127.0.0.1", "--log-level", "warning"]
    if ctx.args.profile:
        out = ctx.tmp / "kdns.prof"
        return [sys.executable, str(BENCH / "profile_kdns.py"), "--out", str(out), "--", *serve]
    return [sys.executable, "-m", "kdns.cli", *serve]


def start_kdns(ctx: Context) -> Server:
    port = free_port()
    corefile = ctx.tmp / "Corefile"
    http_ports = [free_port() for _ in range(3)]
    manifests = ctx.data.manifests
    if ctx.args.kube_pods != "insecure":
        # The load generator's address is a Pod of ns0, so every query is attributed (and,
        # with isolate, stored under ns0's scope).
        manifests = ctx.tmp / "kdns-manifests"
        manifests.mkdir(exist_ok=True)
        shutil.copy(ctx.data.manifests, manifests / "services.yaml")
        (manifests / "pods.yaml").write_text(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: loadgen\n  namespace: ns0\n"
            "spec:\n  containers: []\nstatus:\n  phase: Running\n  podIP: 127.0.0.1\n"
            "  podIPs:\n  - ip: 127.0.0.1\n")
    corefile.write_text(kdns_corefile(port, manifests, ctx.upstream_port, http_ports,
                                      ctx.args.plugins, ctx.optional_plugins,
                                      pods=ctx.args.kube_pods,
                                      namespaces=ctx.args.namespaces))
    log = ctx.tmp / "kdns.log"
    cmd = [*ctx.pin.prefix(ctx.pin.server_cpu), *kdns_cmd(ctx, corefile)]
    with log.open("wb") as out:
        proc = ctx.children.start(
            cmd, cwd=str(REPO), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    return Server("kdns", port, proc, log)


def _dnsmasq(ctx: Context, name: str, conf: Path, cpu: int | None, upstream: bool) -> Server:
    port = free_port()
    log = ctx.tmp / f"{name}.log"
    cmd = [
        *ctx.pin.prefix(cpu),
        "dnsmasq",
        "--no-daemon",  # foreground, no pid file, no user switch (our temp dir is 0700)
        "--no-resolv",
        "--no-hosts",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        f"--conf-file={conf}",
        f"--local-ttl={TTL}",
        "--log-facility=-",
        "--pid-file=",
    ]
    if upstream:
        cmd += [
            f"--server=127.0.0.1#{ctx.upstream_port}",
            # Room for every forwarded name (the default 150 would make workload 4 measure the
            # upstream), and the same 30 s cap on cached TTLs as kdns's "cache 30".
            "--cache-size=10000",
            f"--max-cache-ttl={TTL}",
        ]
    with log.open("wb") as out:
        proc = ctx.children.start(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT)
    return Server(name, port, proc, log)


def start_dnsmasq(ctx: Context) -> Server:
    server = _dnsmasq(ctx, "dnsmasq", ctx.data.dnsmasq_conf, ctx.pin.server_cpu, True)
    if "srv" in ctx.args.workloads:
        # dnsmasq scans its srv-host list linearly on every query, whatever the type, so the
        # SRV records live in a second instance used for the SRV workload only; otherwise they
        # would slow its A answers and make every other ratio flatter kdns.
        conf = ctx.tmp / "dnsmasq-all.conf"
        conf.write_text(ctx.data.dnsmasq_conf.read_text() + ctx.data.dnsmasq_srv_conf.read_text())
        server.variants["srv"] = _dnsmasq(ctx, "dnsmasq-srv", conf, ctx.pin.server_cpu, True)
    return server


def unbound_conf(port: int, tmp: Path, zone: Path, upstream: int) -> str:
    return f"""server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    num-threads: 1
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{tmp}"
    pidfile: "{tmp}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "iterator"
    qname-minimisation: no
    cache-max-ttl: {TTL}
    include: "{zone}"
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{upstream}
remote-control:
    control-enable: no
"""


def start_unbound(ctx: Context) -> Server:
    port = free_port()
    conf = ctx.tmp / "unbound.conf"
    conf.write_text(unbound_conf(port, ctx.tmp, ctx.data.unbound_zone, ctx.upstream_port))
    log = ctx.tmp / "unbound.log"
    cmd = [*ctx.pin.prefix(ctx.pin.server_cpu), "unbound", "-d", "-p", "-c", str(conf)]
    with log.open("wb") as out:
        proc = ctx.children.start(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT)
    return Server("unbound", port, proc, log)


STARTERS = {"kdns": start_kdns, "dnsmasq": start_dnsmasq, "unbound": start_unbound}


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
    latencies_ms: list[float] | None = None
    """Every query's latency, when the generator reported them (fixed-rate runs)."""

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


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


class Generator:
    name = "generator"

    def describe(self) -> str:
        raise NotImplementedError

    def run(self, port: int, queries: Path, seconds: float, mode: str = "udp",
            rate: int | None = None) -> RunResult:
        raise NotImplementedError


class DnsperfGenerator(Generator):
    name = "dnsperf"

    def __init__(self, children: Children, pin: Pinning, outstanding: int, clients: int,
                 timeout: float = 1.0) -> None:
        self.children, self.pin, self.timeout = children, pin, timeout
        self.outstanding, self.clients = outstanding, clients
        out = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True, timeout=10)
        m = re.search(r"Version\s+(\S+)", out.stdout + out.stderr)
        self.version = m.group(1) if m else "?"

    def describe(self) -> str:
        return (
            f"dnsperf {self.version} ({self.clients} client(s), "
            f"{self.outstanding} queries outstanding)"
        )

    def run(self, port: int, queries: Path, seconds: float, mode: str = "udp",
            rate: int | None = None) -> RunResult:
        cmd = [
            *self.pin.prefix(self.pin.load_cpu),
            "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-m", mode,
            "-l", f"{seconds:g}", "-c", str(self.clients), "-q", str(self.outstanding),
            # A reply later than this on loopback is lost in all but name, and dnsperf waits
            # this long for stragglers at the end of every run.
            "-t", f"{self.timeout:g}",
        ]
        if rate is not None:
            # -v prints every reply with its latency, which is where p99 comes from (dnsperf
            # itself reports only the average and the standard deviation).
            cmd += ["-Q", str(rate), "-v"]
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
            raise GeneratorFailed(f"dnsperf exited with {proc.returncode}:\n{text[-3000:]}")
        result = parse_dnsperf(text)
        if rate is not None:
            result.latencies_ms = [
                float(m.group(1)) * 1000
                for m in re.finditer(r"^> \S+ \S+ \S+ ([\d.]+)$", text, re.M)
            ]
        return result


def parse_dnsperf(text: str) -> RunResult:
    def num(pattern: str) -> float:
        m = re.search(pattern, text)
        if not m:
            raise BenchError(f"dnsperf output has no {pattern!r}:\n{text[-3000:]}")
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
    read the server CPU column, and prefer dnsperf. UDP at full speed only: the TCP and
    fixed-rate workloads need dnsperf and are skipped without it.
    """

    name = "python"
    TIMEOUT = 1.0
    """A query unanswered for this long is lost (as dnsperf's ``-t 1`` above)."""

    def __init__(self, outstanding: int, max_qps_bound: int = 500_000) -> None:
        self.outstanding = outstanding
        self.max_qps_bound = max_qps_bound

    def describe(self) -> str:
        return f"built-in Python loop ({self.outstanding} queries outstanding; a lower bound)"

    def run(self, port: int, queries: Path, seconds: float, mode: str = "udp",
            rate: int | None = None) -> RunResult:
        if mode != "udp" or rate is not None:
            raise BenchError("the built-in generator does UDP at full speed only")
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

    def latencies(self) -> list[float]:
        return [x for r in self.runs for x in (r.latencies_ms or ())]


def measure(server: Server, gen_: Generator, queries: Path, seconds: float,
            miss_fraction: float, spec: Workload, rate: int) -> tuple[RunResult, str | None]:
    if server.proc.poll() is not None:
        raise BenchError(
            f"{server.name} died (status {server.proc.returncode})\n{server.log_tail()}"
        )
    cpu0 = cpu_seconds(server.proc.pid)
    result = gen_.run(server.port, queries, seconds, spec.mode,
                      rate if spec.fixed_rate else None)
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


def mb(kb: int | None) -> str:
    return f"{kb / 1024:.1f} MB" if kb is not None else "?"


def report(
    args: argparse.Namespace,
    servers: dict[str, Server],
    cells: dict[tuple[str, str], Cell],
    gen_: Generator,
    pin: Pinning,
    notes: list[str],
) -> dict[str, object]:
    print()
    print(
        f"{args.n} services + {args.n // 5} headless in {args.namespaces} namespaces, "
        f"{args.reps} rep(s) x {args.duration:g} s per server and workload "
        f"(after a {args.warmup:g} s warm-up); kdns plugins: {args.plugins}, "
        f"pods: {args.kube_pods}"
    )
    print(f"load: {gen_.describe()}; {pin.describe()}")
    for note in notes:
        print(f"note: {note}")
    results: list[dict[str, object]] = []
    out: dict[str, object] = {"results": results, "notes": notes}
    for workload in args.workloads:
        spec = SPECS[workload]
        print()
        label = f"{spec.number}. " if spec.number else ""
        if spec.fixed_rate:
            print(f"{label}{workload}: {spec.title}, {args.rate:,} QPS")
            header = (f"{'server':<8} {'avg':>8} {'p50':>8} {'p99':>8} {'max':>8} "
                      f"{'answered QPS':>13}  {'lost':>5}  {'server CPU':>10}")
        else:
            print(f"{label}{workload}: {spec.title}")
            header = (f"{'server':<8} {'median QPS':>11}  {'(min - max)':<21} "
                      f"{'avg lat':>8}  {'lost':>5}  {'server CPU':>10}")
        print(header)
        print("-" * len(header))
        for name in args.servers:
            cell = cells[(name, workload)]
            if not cell.runs:
                continue
            qs = [r.qps for r in cell.runs]
            lat = [r.avg_latency_ms for r in cell.runs if r.avg_latency_ms is not None]
            cpu = [r.server_cpu for r in cell.runs if r.server_cpu is not None]
            lost = sum(r.lost for r in cell.runs)
            cpu_s = f"{statistics.median(cpu):.0%}" if cpu else "-"
            flag = "  WRONG ANSWERS" if cell.problems else ""
            row: dict[str, object] = {
                "server": name, "workload": workload, "qps_median": cell.median_qps,
                "qps_min": min(qs), "qps_max": max(qs), "qps_runs": qs,
                "avg_latency_ms": statistics.median(lat) if lat else None,
                "lost": lost, "server_cpu": statistics.median(cpu) if cpu else None,
                "problems": cell.problems,
            }
            if spec.fixed_rate:
                lats = cell.latencies()
                if lats:
                    row.update(lat_avg_ms=statistics.fmean(lats), lat_p50_ms=percentile(lats, 50),
                               lat_p99_ms=percentile(lats, 99), lat_max_ms=max(lats),
                               lat_samples=len(lats))
                    print(f"{name:<8} {row['lat_avg_ms']:>6.3f}ms {row['lat_p50_ms']:>6.3f}ms "
                          f"{row['lat_p99_ms']:>6.3f}ms {row['lat_max_ms']:>6.3f}ms "
                          f"{fmt_int(cell.median_qps):>13}  {lost:>5}  {cpu_s:>10}{flag}")
                else:
                    print(f"{name:<8} (no per-query latencies){flag}")
            else:
                rng = f"({fmt_int(min(qs))} - {fmt_int(max(qs))})"
                lat_s = f"{statistics.median(lat):.3f}ms" if lat else "-"
                print(f"{name:<8} {fmt_int(cell.median_qps):>11}  {rng:<21} "
                      f"{lat_s:>8}  {lost:>5}  {cpu_s:>10}{flag}")
            results.append(row)
    print()
    ratios: dict[str, dict[str, float]] = {}
    for ref in ("dnsmasq", "unbound"):
        if "kdns" not in args.servers or ref not in args.servers:
            continue
        r = {
            w: cells[("kdns", w)].median_qps / cells[(ref, w)].median_qps
            for w in args.workloads
            if not SPECS[w].fixed_rate and cells[("kdns", w)].runs and cells[(ref, w)].runs
            and cells[(ref, w)].median_qps > 0
        }
        ratios[ref] = r
        print(f"ratio kdns/{ref} (median QPS): " + ", ".join(f"{w} {v:.2f}" for w, v in r.items()))
        for w in args.workloads:
            if SPECS[w].fixed_rate and cells[("kdns", w)].latencies() and \
                    cells[(ref, w)].latencies():
                k, o = cells[("kdns", w)].latencies(), cells[(ref, w)].latencies()
                print(f"ratio kdns/{ref} latency at {args.rate:,} QPS: avg "
                      f"{statistics.fmean(k) / statistics.fmean(o):.2f}, p99 "
                      f"{percentile(k, 99) / percentile(o, 99):.2f}")
    out["ratios"] = ratios
    goals: list[dict[str, object]] = []
    if "dnsmasq" in ratios:
        for w, target in GOALS.items():
            if w in ratios["dnsmasq"]:
                v = ratios["dnsmasq"][w]
                ok = v >= target
                goals.append({"workload": w, "ratio": v, "target": target, "pass": ok})
                print(f"GOAL {w}: kdns/dnsmasq {v:.2f} >= {target:.2f}: "
                      f"{'PASS' if ok else 'FAIL'}")
    out["goals"] = goals
    mem: dict[str, dict[str, int | None]] = {}
    for name, server in servers.items():
        end = proc_status_kb(server.proc.pid, "VmRSS")
        peak = proc_status_kb(server.proc.pid, "VmHWM")
        mem[name] = {"rss_ready_kb": server.rss_ready_kb, "rss_end_kb": end, "rss_peak_kb": peak}
        print(
            f"memory {name}: VmRSS {mb(server.rss_ready_kb)} when ready, {mb(end)} at the end "
            f"(peak {mb(peak)})"
        )
    out["memory"] = mem
    for (name, workload), cell in cells.items():
        for p in cell.problems:
            print(f"warning: {name} {workload}: {p}")
        cpu = [r.server_cpu for r in cell.runs if r.server_cpu is not None]
        if cpu and statistics.median(cpu) < 0.9 and not SPECS[workload].fixed_rate:
            print(
                f"note: {name} {workload}: server CPU {statistics.median(cpu):.0%}, so the server "
                "was not saturated and the load generator set this figure (a lower bound)"
            )
    print()
    for row in results:
        extra = ""
        if "lat_p99_ms" in row:
            extra = f"avg_ms={row['lat_avg_ms']:.3f} p99_ms={row['lat_p99_ms']:.3f} "
        print(
            f"RESULT server={row['server']} workload={row['workload']} "
            f"qps={row['qps_median']:.1f} min={row['qps_min']:.1f} max={row['qps_max']:.1f} "
            f"runs={len(row['qps_runs'])} {extra}"  # type: ignore[arg-type]
            f"ok={'no' if row['problems'] else 'yes'}"
        )
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="QPS and latency for cluster names: kdns vs dnsmasq vs unbound in one run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--n", type=int, default=None, help="services (default 1000; --quick: 200)")
    p.add_argument("--namespaces", type=int, default=20)
    p.add_argument("--reps", type=int, default=None, help="runs per server and workload (3)")
    p.add_argument("--duration", type=float, default=None, help="seconds per run (10)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per server and "
                   "workload, not counted (2)")
    p.add_argument("--servers", default=",".join(SERVERS),
                   help="comma list of kdns,dnsmasq,unbound")
    p.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                   help=f"comma list of {','.join((*WORKLOADS, *CHANGE_WORKLOADS))}")
    p.add_argument("--churn-rates", default="0,5,20,100",
                   help="churn: EndpointSlice changes per second, one measurement each")
    p.add_argument("--churn-n", type=int, default=5000,
                   help="churn and cold: Services (one in five headless)")
    p.add_argument("--kdns-workers", type=int, default=1,
                   help="churn: run kdns serve --workers N")
    p.add_argument("--cold-lines", type=int, default=1_500_000,
                   help="cold: names per rep's query file (more than a run sends)")
    p.add_argument("--plugins", choices=("kubeadm", "minimal"), default="kubeadm",
                   help="kdns Corefile: kubeadm's plugin set, or kubernetes+forward+cache only")
    p.add_argument("--kube-pods", choices=("insecure", "verified", "isolate"),
                   default="insecure", help="kdns's kubernetes block: kubeadm's 'pods insecure', "
                   "'pods verified' (per-client counts), or verified with 'isolate' allowing "
                   "every namespace (same answers; the load generator is a Pod of ns0)")
    p.add_argument("--rate", type=int, default=2000, help="QPS of the fixed-rate workload")
    p.add_argument("--generator", choices=("auto", "dnsperf", "python"), default="auto")
    p.add_argument("--outstanding", type=int, default=200,
                   help="queries in flight (dnsperf -q)")
    p.add_argument("--clients", type=int, default=1, help="dnsperf -c")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds before a query counts as lost; dnsperf waits this long at the "
                   "end of every run (dnsperf -t; 1, --quick: 0.2)")
    p.add_argument("--startup-timeout", type=float, default=60.0,
                   help="seconds a server may take to answer its first query")
    p.add_argument("--profile", default=None, metavar="WORKLOAD",
                   help="run kdns alone under cProfile for this one workload and print the top "
                   "functions (QPS under the profiler is lower: read the shares)")
    p.add_argument("--profile-top", type=int, default=25, help="functions to print")
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
    args.timeout = args.timeout if args.timeout is not None else (0.2 if quick else 1.0)
    args.servers = [s for s in args.servers.split(",") if s]
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.change = [w for w in args.workloads if w in CHANGE_WORKLOADS]
    args.workloads = [w for w in args.workloads if w not in CHANGE_WORKLOADS]
    try:
        args.churn_rates = [float(r) for r in args.churn_rates.split(",") if r]
    except ValueError:
        p.error(f"--churn-rates must be numbers, got {args.churn_rates!r}")
    if not args.churn_rates or min(args.churn_rates) < 0 or args.kdns_workers < 1 \
            or args.churn_n < 10 or args.cold_lines < 1000:
        p.error("--churn-rates must be >= 0, --kdns-workers >= 1, --churn-n >= 10, "
                "--cold-lines >= 1000")
    if args.profile is not None:
        if args.profile not in WORKLOADS:
            p.error(f"unknown workload {args.profile!r} for --profile")
        args.servers, args.workloads, args.reps = ["kdns"], [args.profile], 1
    for s in args.servers:
        if s not in SERVERS:
            p.error(f"unknown server {s!r}; choose from {', '.join(SERVERS)}")
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    if args.reps < 1 or args.duration <= 0 or args.warmup < 0 or args.outstanding < 1 \
            or args.rate < 1:
        p.error("--reps, --duration, --rate and --outstanding must be positive, "
                "--warmup not negative")
    return args


def preflight(args: argparse.Namespace, notes: list[str]) -> None:
    """Say clearly what is missing instead of failing halfway."""
    for server, package in (("dnsmasq", "dnsmasq-base"), ("unbound", "unbound")):
        if server in args.servers and shutil.which(server) is None:
            _log(f"{server} is not installed (apt-get install {package}): leaving it out")
            notes.append(f"{server} not installed: no kdns/{server} ratio")
            args.servers = [s for s in args.servers if s != server]
    if importlib.util.find_spec("kdns.cli") is None:
        raise BenchError(
            f"kdns.cli is not importable by {sys.executable}: run this script with the "
            "project's venv (.venv/bin/python bench/udp_qps.py)"
        )
    if importlib.util.find_spec("dnslib") is None:
        raise BenchError(f"dnslib is not importable by {sys.executable}; use the project's venv")
    if shutil.which("dnsmasq") is None:
        # The upstream of the forwarded workloads is a dnsmasq too.
        dropped = [w for w in args.workloads if SPECS[w].rewarm]
        if dropped:
            notes.append(f"no dnsmasq for the upstream: skipped {', '.join(dropped)}")
            args.workloads = [w for w in args.workloads if w not in dropped]
    if not args.servers or not (args.workloads or args.change):
        raise BenchError("no server or no workload left to benchmark")


def make_generator(args: argparse.Namespace, children: Children, pin: Pinning,
                   notes: list[str]) -> Generator:
    have_dnsperf = shutil.which("dnsperf") is not None
    if args.generator == "dnsperf" and not have_dnsperf:
        raise BenchError("dnsperf is not installed (apt-get install dnsperf)")
    if args.generator == "dnsperf" or (args.generator == "auto" and have_dnsperf):
        return DnsperfGenerator(children, pin, args.outstanding, args.clients, args.timeout)
    if args.generator == "auto":
        _log("dnsperf is not installed: using the built-in Python load generator, whose "
             "figures are a lower bound (it may saturate before the server does)")
    dropped = [w for w in args.workloads if SPECS[w].mode != "udp" or SPECS[w].fixed_rate]
    if dropped:
        notes.append(f"no dnsperf: skipped {', '.join(dropped)} (TCP and fixed rate need it)")
        args.workloads = [w for w in args.workloads if w not in dropped]
    return PythonGenerator(min(args.outstanding, 1000))


def start_servers(ctx: Context) -> dict[str, Server]:
    data, args = ctx.data, ctx.args
    upstream = _dnsmasq(ctx, "upstream", data.upstream_conf, ctx.pin.load_cpu, False)
    ctx.upstream_port = upstream.port
    wait_ready(upstream, next(iter(data.ext_names)), args.startup_timeout)
    probe = next(iter(data.names))
    servers: dict[str, Server] = {}
    for name in args.servers:
        t0 = time.monotonic()
        server = STARTERS[name](ctx)
        servers[name] = server
        for inst in (server, *server.variants.values()):
            wait_ready(inst, probe, args.startup_timeout)
        for w in args.workloads:
            check_answers(server.for_workload(w), data.checks[w], tcp=SPECS[w].mode == "tcp")
        server.rss_ready_kb = proc_status_kb(server.proc.pid, "VmRSS")
        _log(f"{name} ready on 127.0.0.1:{server.port} (pid {server.proc.pid}) "
             f"after {time.monotonic() - t0:.1f} s")
    return servers


def run(args: argparse.Namespace, children: Children, tmp: Path) -> dict[str, object]:
    notes: list[str] = []
    preflight(args, notes)
    pin = choose_pinning()
    gen_ = make_generator(args, children, pin, notes)
    if pin.load_cpu is not None and isinstance(gen_, PythonGenerator):
        os.sched_setaffinity(0, {pin.load_cpu})
    have, missing = kubeadm_plugins()
    if missing and args.plugins == "kubeadm":
        notes.append(f"kdns does not implement {', '.join(missing)} yet: its Corefile runs "
                     "without them")
    _log(f"generating {args.n} services in {args.namespaces} namespaces in {tmp}")
    data = generate(tmp, args.n, args.namespaces)
    ctx = Context(children, tmp, data, pin, args, optional_plugins=have)
    servers = start_servers(ctx)

    def one(name: str, workload: str, seconds: float) -> tuple[RunResult, str | None]:
        spec = SPECS[workload]
        inst = servers[name].for_workload(workload)
        return measure(inst, gen_, data.queries[workload], seconds,
                       data.miss_fraction[workload], spec, args.rate)

    def failed(name: str, workload: str, what: str, err: GeneratorFailed) -> None:
        first = str(err).splitlines()[0]
        msg = f"{name} {workload} {what}: the load generator failed ({first}); run left out"
        _log(msg)
        if name == "kdns":
            cells[(name, workload)].problems.append(msg)  # ours to explain: exit 1
        else:
            notes.append(msg)

    def warm(name: str, workload: str) -> None:
        if args.warmup > 0:
            _log(f"warm-up {name} {workload} {args.warmup:g} s")
            spec = SPECS[workload]
            # Warm at full speed over UDP whatever the workload: the point is to fill caches.
            try:
                gen_.run(servers[name].for_workload(workload).port, data.queries[workload],
                         args.warmup, "udp" if spec.fixed_rate else spec.mode, None)
            except GeneratorFailed as err:
                failed(name, workload, "warm-up", err)

    cells = {(s, w): Cell() for s in args.servers for w in args.workloads}
    for workload in args.workloads:
        for name in servers:
            warm(name, workload)

    names = list(args.servers)
    for rep in range(args.reps):
        # Rotate who goes first so drift (thermal, other load) does not favour one server.
        k = rep % len(names)
        order = names[k:] + names[:k]
        for workload in args.workloads:
            for name in order:
                if SPECS[workload].rewarm and rep > 0:
                    warm(name, workload)
                try:
                    result, problem = one(name, workload, args.duration)
                except GeneratorFailed as err:
                    failed(name, workload, f"rep {rep + 1}", err)
                    continue
                cell = cells[(name, workload)]
                cell.runs.append(result)
                if problem:
                    cell.problems.append(f"rep {rep + 1}: {problem}")
                _log(f"rep {rep + 1}/{args.reps} {name:<8} {workload:<7} "
                     f"{result.qps:>10,.0f} QPS  lost {result.lost}")
    out = report(args, servers, cells, gen_, pin, notes)
    if args.profile:
        # The profile is written when kdns exits: stop it now, then read it.
        children.stop(servers["kdns"].proc)
        print_profile(tmp / "kdns.prof", args.profile, args.profile_top)
    return out


def run_all(args: argparse.Namespace, children: Children, tmp: Path) -> dict[str, object]:
    """The workloads above, then ``churn`` and ``cold`` (``change.py``) when asked for."""
    out: dict[str, object] = {"results": []}
    if args.workloads:
        out = run(args, children, tmp)
    if args.change:
        import change

        notes: list[str] = []
        if not args.workloads:
            preflight(args, notes)
        pin = choose_pinning()
        gen_ = make_generator(args, children, pin, notes)
        for w in args.change:
            sub = tmp / w
            sub.mkdir()
            runner = change.run_churn if w == "churn" else change.run_cold
            out.update(runner(args, children, sub, pin, gen_))
    return out


def print_profile(path: Path, workload: str, top: int) -> None:
    import io
    import pstats

    if not path.exists():
        print(f"profile: {path} was not written (did kdns exit cleanly?)")
        return
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        stats = pstats.Stats(str(path), stream=buf)
        stats.strip_dirs().sort_stats(key).print_stats(top)
        print(f"\nPROFILE kdns, workload {workload}, top {top} by {key} (all threads):")
        text = buf.getvalue()
        # Drop pstats' preamble up to the column header.
        start = text.find("   ncalls")
        print(text[start:] if start >= 0 else text)


def run_main(prefix: str, keep: bool, body: Callable[[Children, Path], int]) -> int:
    """What every benchmark script's ``main`` does around its ``body``: a temp dir, clean-up
    of every child process and of the dir however the run ends, and the exit status (the
    body's; 2 for a :class:`BenchError`; 130 when interrupted)."""
    # Explicit for SIGINT too: a shell starts background jobs with SIGINT ignored, and the
    # clean-up below must run however the script is stopped.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    children = Children()
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return body(children, tmp)
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
        if keep:
            _log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def body(children: Children, tmp: Path) -> int:
        out = run_all(args, children, tmp)
        if args.json is not None:
            args.json.write_text(json.dumps(out, indent=2) + "\n")
        problems = [r["problems"] for r in out["results"]]  # type: ignore[attr-defined]
        return 1 if any(problems) else 0

    return run_main("kdns-bench-", args.keep, body)


if __name__ == "__main__":
    sys.exit(main())
