#!/usr/bin/env python3
"""Footprint of ``kdns node-cache`` as deployed: memory idle and full, CPU per 1,000 cached QPS,
and cache-hit throughput next to dnsmasq on one core, in the same run.

The cache runs exactly as ``deploy/nodelocal`` runs it: ``kdns node-cache`` in transparent
mode (``-localip 169.254.20.10,10.96.0.10``) on the shipped ``Corefile.base`` (``cache {
success 9984 30; denial 9984 5 }``, ``forward ... { force_tcp }``, ``prometheus``,
``health``, ``reload``, ``loop``, ``bind``), with its interface and iptables rules, inside a
network namespace this script creates (``node``). The cluster DNS it forwards to is a kdns
serving a generated ``cluster.local`` zone (``file``) in a second namespace (``cluster``).

1. **Idle RSS**: after start-up, the rules in place, one query answered, 2 s of quiet.
2. **Full cache RSS**: 9,984 names that exist and 9,984 that do not (NXDOMAIN) asked once
   each (dnsperf ``-n 1``), until ``coredns_cache_entries`` shows both caches at the addon's
   capacity.
3. **CPU per 1,000 QPS of cached answers**: dnsperf at a fixed ``--rate`` on 1,000 names
   already in the cache for ``--seconds``; the cache's CPU time (utime + stime) over that time.
4. **Cache-hit throughput vs dnsmasq**: the cache and a dnsmasq forwarding cache (same
   upstream, same 1,000 names, warmed the same way) each pinned to CPU 1, dnsperf unthrottled
   on CPU 0, ``--seconds`` each, ``--reps`` times alternating who goes first; medians.
   dnsmasq listens on a link-local address of its own interface (``169.254.20.11`` on
   ``ncb-dnsmasq``, of the link type the cache's ``nodelocaldns`` got), not on 127.0.0.1: the
   kernel caches no output route for replies to a local address held by an interface other
   than ``lo`` (``__mkroute_output``: a local route whose device is not the loopback is not
   cached), so every reply dnsperf gets from 169.254.20.10 allocates and frees a route
   (``rt_dst_alloc``, ``dst_destroy``; ~0.6 us of kernel time per query measured with ``perf``),
   which replies from 127.0.0.1 skip. Both servers answer the same kind of address, as Pods
   that share the node's network namespace see them.

Printed next to node-cache's published figures (reference §4: the addon requests 25m CPU /
5Mi; the KEP's benchmark ran CoreDNS at about 850 cached QPS within a 50m CPU limit, peak
memory ~20Mi). Goals: idle <= 35 MB, full <= 60 MB, cache hits >= 0.9x dnsmasq.

Needs root (network namespaces), ``ip``, ``iptables``, ``dnsmasq``, ``dnsperf`` and
``taskset``. Every process it starts is stopped by PID, and both namespaces are deleted.

    .venv/bin/python bench/nodecache.py                 # under a minute
    .venv/bin/python bench/nodecache.py --seconds 10 --reps 3 --clients 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.netns import Netns, can_use_netns  # noqa: E402

KDNS = str(Path(sys.executable).with_name("kdns"))
CAPACITY = 9984
HIT_NAMES = 1000
LINK_LOCAL, KUBE_DNS = "169.254.20.10", "10.96.0.10"
CLUSTER_DNS = "10.200.0.2"
DNSMASQ_ADDR, DNSMASQ_LINK = "169.254.20.11", "ncb-dnsmasq"
GOALS = {"idle_mb": 35.0, "full_mb": 60.0, "hits_vs_dnsmasq": 0.9}
PUBLISHED = ("node-cache (reference §4): addon requests 25m CPU / 5Mi memory; KEP 1024 "
             "benchmark: CoreDNS 1.2.3 ~834-860 cached QPS inside a 50m CPU limit "
             "(~58m per 1,000 QPS), peak memory ~20Mi")


class BenchError(RuntimeError):
    pass


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def query(name: str, qid: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00\x00\x01\x00\x01"


def ask_all(ns: Netns, server: str, names: list[str]) -> dict[int, int]:
    """Ask each name once over UDP from inside ``ns``, one at a time; rcode -> count."""
    def run() -> dict[int, int]:
        counts: dict[int, int] = {}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            for name in names:
                qid = random.getrandbits(16)
                s.sendto(query(name, qid), (server, 53))
                while True:
                    data = s.recv(4096)
                    if struct.unpack("!H", data[:2])[0] == qid:
                        break
                rcode = data[3] & 0xF
                counts[rcode] = counts.get(rcode, 0) + 1
        return counts

    return ns.run(run)


def dnsperf(ns: Netns, server: str, qfile: Path, seconds: float, rate: int | None = None,
            once: bool = False, clients: int = 4) -> float:
    cmd = ns.argv("taskset", "-c", "0", "dnsperf", "-s", server, "-d", str(qfile),
                  "-c", str(clients), "-q", "50" if once else "200", "-t", "2")
    cmd += ["-n", "1"] if once else ["-l", str(seconds)]
    if rate is not None:
        cmd += ["-Q", str(rate)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    m = re.search(r"Queries per second:\s+([\d.]+)", out.stdout)
    lost = re.search(r"Queries lost:\s+(\d+)", out.stdout)
    if m is None:
        raise BenchError(f"dnsperf failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
    if lost and int(lost.group(1)) > 0:
        print(f"  (dnsperf lost {lost.group(1)} queries against {server})")
    return float(m.group(1))


def cache_entries(ns: Netns) -> dict[str, int]:
    """``coredns_cache_entries`` by type, summed over the cache's server blocks."""
    import urllib.request

    text = ns.run(lambda: urllib.request.urlopen("http://127.0.0.1:9253/metrics",
                                                 timeout=5).read().decode())
    out = {"success": 0, "denial": 0}
    for kind, value in re.findall(r'^coredns_cache_entries\{[^}]*type="(\w+)"[^}]*\} (\S+)$',
                                  text, re.M):
        out[kind] = out.get(kind, 0) + int(float(value))
    return out


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def wait_answer(ns: Netns, server: str, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ask_all(ns, server, [name]).get(0):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{server} does not answer {name}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each dnsperf run")
    ap.add_argument("--reps", type=int, default=1, help="throughput runs per server")
    ap.add_argument("--clients", type=int, default=4,
                    help="dnsperf clients (source ports; a node cache serves many Pods)")
    ap.add_argument("--rate", type=int, default=2000, help="fixed QPS for the CPU figure")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 200 names per cache instead of 9,984, 1 s load runs "
                         "(checks that the benchmark works; its figures mean nothing)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.reps = 1.0, 1
    fill_n = 200 if args.quick else CAPACITY
    args.seconds = max(1.0, min(args.seconds, 20.0))
    args.reps = max(1, min(args.reps, 5))
    args.clients = max(1, min(args.clients, 64))
    why = can_use_netns()
    missing = [t for t in ("dnsmasq", "dnsperf", "taskset") if shutil.which(t) is None]
    if why or missing:
        print(f"nodecache bench: cannot run: {why or 'missing ' + ', '.join(missing)}",
              file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("nodecache bench: needs 2 CPUs (load on CPU 0, servers on CPU 1)", file=sys.stderr)
        return 2

    procs: list[subprocess.Popen[str]] = []
    node = cluster = None
    with tempfile.TemporaryDirectory(prefix="kdns-nodecache-") as d:
        tmp = Path(d)
        try:
            node, cluster = Netns("ncb-node"), Netns("ncb-cluster")
            node.ip("link", "add", "veth-n", "type", "veth", "peer", "name", "veth-c",
                    "netns", cluster.name)
            node.ip("addr", "add", "10.200.0.1/24", "dev", "veth-n")
            node.ip("link", "set", "veth-n", "up")
            cluster.ip("addr", "add", f"{CLUSTER_DNS}/24", "dev", "veth-c")
            cluster.ip("link", "set", "veth-c", "up")

            zone = tmp / "cluster.local.zone"
            zone.write_text("\n".join(
                ["$ORIGIN cluster.local.", "$TTL 3600",
                 "@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 60",
                 "@ IN NS ns.dns", "ns.dns IN A 10.96.0.10"]
                + [f"h{i}.ns{i % 20}.svc IN A 10.{100 + i // 65536}.{(i // 256) % 256}.{i % 256}"
                   for i in range(fill_n)]) + "\n")
            (tmp / "cluster.Corefile").write_text(
                f".:53 {{\n    file {zone} cluster.local\n}}\n")
            procs.append(subprocess.Popen(
                cluster.argv(KDNS, "serve", "--conf", str(tmp / "cluster.Corefile"),
                             "--dns-addr", CLUSTER_DNS, "--log-level", "warning"),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True))
            wait_answer(node, CLUSTER_DNS, "h0.ns0.svc.cluster.local")

            (tmp / "coredns").mkdir()
            shutil.copy(ROOT / "deploy" / "nodelocal" / "Corefile.base",
                        tmp / "coredns" / "Corefile.base")
            (tmp / "kube-dns").mkdir()
            (tmp / "kube-dns" / "upstreamNameservers").write_text(json.dumps([CLUSTER_DNS]))
            env = dict(os.environ, KUBE_DNS_UPSTREAM_SERVICE_HOST=CLUSTER_DNS)
            cache = subprocess.Popen(
                node.argv("taskset", "-c", "1", KDNS, "node-cache", "-localip",
                          f"{LINK_LOCAL},{KUBE_DNS}", "-conf", str(tmp / "Corefile"),
                          "-basecorefile", str(tmp / "coredns" / "Corefile.base"),
                          "-kubednscm", str(tmp / "kube-dns"), "-upstreamsvc",
                          "kube-dns-upstream", "-pidfile", str(tmp / "pid"),
                          "-metrics-listen-address", "127.0.0.1:9353", "-log-level",
                          "warning"),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, env=env)
            procs.append(cache)
            deadline = time.monotonic() + 60
            while not (tmp / "pid").exists():
                if cache.poll() is not None or time.monotonic() > deadline:
                    raise BenchError("kdns node-cache did not start")
                time.sleep(0.1)
            wait_answer(node, LINK_LOCAL, "h0.ns0.svc.cluster.local")
            time.sleep(2.0)
            idle = rss_mb(cache.pid)

            exist = [f"h{i}.ns{i % 20}.svc.cluster.local" for i in range(fill_n)]
            absent = [f"none{i}.ns{i % 20}.svc.cluster.local" for i in range(fill_n)]
            fill = tmp / "fill.txt"
            fill.write_text("".join(f"{a} A\n{b} A\n" for a, b in zip(exist, absent,
                                                                       strict=True)))
            t0 = time.monotonic()
            for _ in range(3):  # each name once; again only if UDP lost some
                dnsperf(node, LINK_LOCAL, fill, 30, once=True, clients=args.clients)
                entries = cache_entries(node)
                # >=: the other blocks' caches hold a few entries too (loop's probes)
                if entries["success"] >= fill_n and entries["denial"] >= fill_n:
                    break
            else:
                raise BenchError(f"cache not full after three passes: {entries}")
            fill_s = time.monotonic() - t0
            time.sleep(1.0)
            full = rss_mb(cache.pid)

            hits = exist[:min(HIT_NAMES, fill_n)]
            qfile = tmp / "hits.txt"
            qfile.write_text("".join(f"{n} A\n" for n in hits))

            # dnsmasq as a forwarding cache on the same upstream, on the same CPU, answering a
            # link-local address on an interface of the cache's link type (see the docstring).
            link = node.ip("-d", "-o", "link", "show", "dev", "nodelocaldns").stdout
            kind = next((k for k in ("dummy", "bridge") if f" {k} " in link), None)
            if kind is None:
                raise BenchError(f"unknown link type of nodelocaldns: {link.strip()}")
            node.ip("link", "add", DNSMASQ_LINK, "type", kind)
            node.ip("addr", "add", f"{DNSMASQ_ADDR}/32", "dev", DNSMASQ_LINK)
            node.ip("link", "set", DNSMASQ_LINK, "up")
            procs.append(subprocess.Popen(
                node.argv("taskset", "-c", "1", "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
                          "--pid-file=", "--no-resolv", "--no-hosts", "--user=root",
                          f"--listen-address={DNSMASQ_ADDR}", "--bind-interfaces",
                          f"--server={CLUSTER_DNS}", "--cache-size=10000",
                          "--dns-forward-max=1000"),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True))
            wait_answer(node, DNSMASQ_ADDR, hits[0])

            def warm(server: str) -> None:
                # The cache keeps successes 30 s at most: re-warm right before each run.
                counts = ask_all(node, server, hits)
                if counts.get(0) != len(hits):
                    raise BenchError(f"warm-up of {server}: {counts}")

            warm(LINK_LOCAL)
            c0, w0 = cpu_seconds(cache.pid), time.monotonic()
            achieved = dnsperf(node, LINK_LOCAL, qfile, args.seconds, rate=args.rate,
                               clients=args.clients)
            cpu = (cpu_seconds(cache.pid) - c0) / (time.monotonic() - w0)
            per_k = cpu / (achieved / 1000) * 1000  # millicores per 1,000 QPS

            runs: dict[str, list[float]] = {"kdns": [], "dnsmasq": []}
            order = [("kdns", LINK_LOCAL), ("dnsmasq", DNSMASQ_ADDR)]
            for rep in range(args.reps):
                for name, server in (order if rep % 2 == 0 else order[::-1]):
                    warm(server)
                    runs[name].append(dnsperf(node, server, qfile, args.seconds,
                                              clients=args.clients))
            kq, dq = statistics.median(runs["kdns"]), statistics.median(runs["dnsmasq"])
            ratio = kq / dq
            rss_after = rss_mb(cache.pid)
        finally:
            for p in reversed(procs):
                stop(p)
            for ns in (node, cluster):
                if ns is not None:
                    ns.delete()

    print("kdns node-cache footprint (deploy/nodelocal Corefile.base, transparent mode, "
          "interface + iptables rules in a network namespace; cache pinned to CPU 1, "
          f"dnsperf on CPU 0; kdns on {LINK_LOCAL}, dnsmasq on {DNSMASQ_ADDR})")
    print(f"  idle RSS:                      {idle:6.1f} MB")
    print(f"  full cache RSS:                {full:6.1f} MB  ({fill_n} success + {fill_n} "
          f"denial entries, filled in {fill_s:.1f} s; {rss_after:.1f} MB after the load runs)")
    print(f"  CPU per 1,000 cached QPS:      {per_k:6.1f} millicores  (dnsperf -Q {args.rate}, "
          f"achieved {achieved:.0f} QPS, {len(hits)} cached names, {args.seconds:.0f} s)")
    print(f"  cache-hit QPS, one core:       kdns {kq:,.0f} vs dnsmasq {dq:,.0f} = {ratio:.2f}x "
          f"(medians of {args.reps} x {args.seconds:.0f} s, dnsperf -c {args.clients}; kdns "
          f"{[round(q) for q in runs['kdns']]}, dnsmasq {[round(q) for q in runs['dnsmasq']]})")
    print(f"  published: {PUBLISHED}")
    figures = {"idle_mb": idle, "full_mb": full, "cpu_millicores_per_1000_qps": per_k,
               "kdns_hit_qps": kq, "dnsmasq_hit_qps": dq, "hits_vs_dnsmasq": ratio}
    print(f"GOAL idle_mb: {idle:.1f} <= {GOALS['idle_mb']}: "
          f"{'PASS' if idle <= GOALS['idle_mb'] else 'FAIL'}")
    print(f"GOAL full_mb: {full:.1f} <= {GOALS['full_mb']}: "
          f"{'PASS' if full <= GOALS['full_mb'] else 'FAIL'}")
    print(f"GOAL hits_vs_dnsmasq: {ratio:.2f} >= {GOALS['hits_vs_dnsmasq']}: "
          f"{'PASS' if ratio >= GOALS['hits_vs_dnsmasq'] else 'FAIL'}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as err:
        print(f"nodecache bench: {err}", file=sys.stderr)
        sys.exit(1)
