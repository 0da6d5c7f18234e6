#!/usr/bin/env python3
"""Memory figures for sizing: what watching Pods costs, and what a full response cache costs.

1. ``pods verified``: kdns reads N services (3 endpoints each) and 3N running Pods from a fake
   API server over HTTP, once with ``pods disabled`` (no pod watch) and once with ``pods
   verified``; the RSS difference per 1,000 Pods is the cost of autopath's pod index.
2. Full cache: kdns with ``cache`` in front of a local upstream (a second kdns serving a
   wildcard-free hosts list is too small, so the upstream is kdns's own ``file`` plugin with a
   generated zone); 9,984 distinct names that exist and 9,984 that do not are asked, filling
   both caches to CoreDNS's default capacity; RSS before and after.

Only 127.0.0.1; every process started is stopped by PID.

    PYTHONPATH=. .venv/bin/python bench/memory.py [--services 10000]
"""

from __future__ import annotations

import argparse
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import fakeapi  # noqa: E402

CACHE_CAPACITY = 9984


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(corefile: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "kdns.cli", "serve", "--conf", str(corefile),
                             "--dns-addr", "127.0.0.1", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("kdns: serving on"):
            return proc
        if not line and proc.poll() is not None:
            raise RuntimeError(f"kdns exited {proc.returncode}")
    raise RuntimeError("kdns did not start")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def wait_ready(port: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("not ready")


def pods_cost(n: int, tmp: Path) -> tuple[float, float, int]:
    with fakeapi.FakeApiServer() as api:
        api.bulk_load("namespaces", [fakeapi.namespace(f"ns{i}") for i in range(20)])
        api.bulk_load("services", [
            fakeapi.service(f"ns{i % 20}", f"svc{i}", cluster_ip=f"10.{100 + i // 65536}."
                            f"{(i // 256) % 256}.{i % 256}", ports=[("http", 80, "TCP")])
            for i in range(n)])
        api.bulk_load("endpointslices", [
            fakeapi.endpoint_slice(f"ns{i % 20}", f"svc{i}-a", f"svc{i}",
                                   endpoints=[f"10.{200 + j}.{(i // 256) % 256}.{i % 256}"
                                              for j in range(3)], ports=[("http", 8080, "TCP")])
            for i in range(n)])
        api.bulk_load("pods", [
            fakeapi.pod(f"ns{i % 20}", f"svc{i}-{j}",
                        f"10.{200 + j}.{(i // 256) % 256}.{i % 256}")
            for i in range(n) for j in range(3)])
        kubeconfig = api.write_kubeconfig(str(tmp / "kubeconfig"))
        out = []
        for mode in ("disabled", "verified"):
            dns, ready = free_port(), free_port()
            corefile = tmp / f"Corefile-{mode}"
            corefile.write_text(f".:{dns} {{\n    ready 127.0.0.1:{ready}\n"
                                f"    kubernetes cluster.local {{\n        kubeconfig {kubeconfig}\n"
                                f"        pods {mode}\n    }}\n}}\n")
            proc = start(corefile)
            try:
                wait_ready(ready)
                time.sleep(1.0)
                out.append(rss_mb(proc.pid))
            finally:
                stop(proc)
    return out[0], out[1], 3 * n


def ask(sock: socket.socket, port: int, name: str) -> None:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    q = struct.pack("!HHHHHH", random.getrandbits(16), 0x0100, 1, 0, 0, 0) + labels
    sock.sendto(q + b"\x00\x00\x01\x00\x01", ("127.0.0.1", port))
    sock.recv(4096)


def cache_cost(tmp: Path) -> tuple[float, float, int]:
    up_port, port = free_port(), free_port()
    zone = tmp / "big.test.zone"
    lines = ["$ORIGIN big.test.", "$TTL 3600",
             "@ IN SOA ns.big.test. admin.big.test. 1 7200 1800 86400 3600", "@ IN NS ns",
             "ns IN A 192.0.2.1"]
    lines += [f"h{i} IN A 198.51.{(i // 256) % 256}.{i % 256}" for i in range(CACHE_CAPACITY)]
    zone.write_text("\n".join(lines) + "\n")
    (tmp / "Corefile-up").write_text(f"big.test:{up_port} {{\n    file {zone}\n}}\n")
    (tmp / "Corefile-cache").write_text(
        f".:{port} {{\n    cache 3600\n    forward . 127.0.0.1:{up_port}\n}}\n")
    up = start(tmp / "Corefile-up")
    proc = start(tmp / "Corefile-cache")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            ask(s, port, "h0.big.test")
            time.sleep(0.5)
            before = rss_mb(proc.pid)
            for i in range(CACHE_CAPACITY):
                ask(s, port, f"h{i}.big.test")  # success cache
                ask(s, port, f"missing{i}.big.test")  # denial cache (NXDOMAIN with SOA)
        time.sleep(0.5)
        after = rss_mb(proc.pid)
    finally:
        stop(proc)
        stop(up)
    return before, after, 2 * CACHE_CAPACITY


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=10000, help="services (3 pods each)")
    args = ap.parse_args(argv)
    n = max(100, min(args.services, 100000))
    with tempfile.TemporaryDirectory(prefix="kdns-mem-") as d:
        tmp = Path(d)
        without, with_pods, pods = pods_cost(n, tmp)
        per_k = (with_pods - without) / (pods / 1000)
        print(f"pods: services={n} pods={pods} rss_pods_disabled_mb={without:.1f} "
              f"rss_pods_verified_mb={with_pods:.1f} per_1000_pods_mb={per_k:.2f}")
        before, after, entries = cache_cost(tmp)
        print(f"cache: entries={entries} rss_empty_mb={before:.1f} rss_full_mb={after:.1f} "
              f"full_cache_mb={after - before:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
