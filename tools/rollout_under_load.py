#!/usr/bin/env python3
"""Roll kdns instances on one port under steady UDP load and count lost queries.

Two ``kdns serve`` processes share one port with SO_REUSEPORT (as two pods of a DaemonSet on
hostNetwork do during an update, or the old and new process of a rollout). The script keeps a
steady query rate from many client sockets (many 4-tuples, so the kernel spreads them across
instances) while it repeatedly starts a new instance and sends SIGTERM to the oldest, which
fails readiness, serves through its lameduck period, hands new datagrams to its sibling and
answers what was queued, then exits 0.

Each instance runs kubeadm's Corefile (tests/kubeadm.py: cache, forward to a dnsmasq the script
starts, loadbalance, loop, prometheus, reload, health with lameduck) over a fake API server in
this process whose EndpointSlices change every ``--churn-interval`` seconds; the load mixes
cluster names, forwarded names and a churning headless Service.

Everything runs on 127.0.0.1; load is bounded in rate, count and time; every process started
is stopped by its PID. Exit status 0 only when no query was lost or answered wrongly.

    .venv/bin/python tools/rollout_under_load.py [--rate 2000] [--rollovers 3] [--lameduck 2]
                                                 [--workers N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import NAMES, Load, wire

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests import fakeapi  # noqa: E402
from tests.kubeadm import (  # noqa: E402
    EXT,
    NX_DOMAIN,
    SliceChurn,
    Upstream,
    kubeadm_corefile,
    seed_basics,
)

LOAD_NAMES = [*NAMES, (wire(next(iter(EXT))), 0), (wire(f"gone.{NX_DOMAIN}"), 3),
              (wire(SliceChurn.name(0)), 0)]
"""Two cluster Services and a missing one, a forwarded name (cached), a forwarded NXDOMAIN
and a headless Service whose EndpointSlice keeps changing."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class Instance:
    def __init__(self, corefile: Path, workers: int = 1) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kdns.cli", "serve", "--conf", str(corefile),
             "--dns-addr", "127.0.0.1", "--log-level", "warning", "--workers", str(workers)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        self.started = time.monotonic()

    def wait_serving(self, timeout: float = 20.0) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("kdns: serving on"):
                # keep reading the pipe so the child never blocks on a full buffer
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"kdns exited with {self.proc.returncode}")
        raise RuntimeError("kdns did not start in time")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=2000, help="queries per second (max 20000)")
    ap.add_argument("--rollovers", type=int, default=3, help="instances replaced (max 10)")
    ap.add_argument("--lameduck", type=float, default=2.0, help="seconds of lameduck (max 10)")
    ap.add_argument("--workers", type=int, default=1,
                    help="run each instance as kdns serve --workers N (max 8)")
    ap.add_argument("--churn-interval", type=float, default=0.05,
                    help="seconds between EndpointSlice changes (min 0.01)")
    args = ap.parse_args(argv)
    rate = max(1, min(args.rate, 20000))
    rollovers = max(1, min(args.rollovers, 10))
    lameduck = max(0.0, min(args.lameduck, 10.0))
    workers = max(1, min(args.workers, 8))

    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="kdns-rollout-"))
    api = fakeapi.FakeApiServer(bookmark_interval=1.0).start()
    seed_basics(api)
    churn = SliceChurn(api, interval=max(0.01, args.churn_interval))
    upstream = Upstream(tmp)
    corefile = tmp / "Corefile"
    instances: list[Instance] = []
    exits: list[int] = []
    load = Load(port, rate, names=LOAD_NAMES)
    try:
        upstream.start()
        # Port 0 for the HTTP endpoints: two instances overlap during every rollover.
        corefile.write_text(kubeadm_corefile(
            f"kubeconfig {api.write_kubeconfig(str(tmp / 'kubeconfig'))}", upstream.port,
            ready=0, prometheus=0, health=0, lameduck=lameduck, key=f".:{port}"))
        first = Instance(corefile, workers)
        first.wait_serving()
        instances.append(first)
        churn.start()
        load.start()
        time.sleep(1.0)
        for n in range(rollovers):
            new = Instance(corefile, workers)
            new.wait_serving()
            instances.append(new)
            time.sleep(0.5)
            old = instances.pop(0)
            t0 = time.monotonic()
            old.terminate()
            code = old.proc.wait(timeout=lameduck + 15)
            exits.append(code)
            print(f"rollover {n + 1}: old instance pid {old.proc.pid} exited {code} after "
                  f"{time.monotonic() - t0:.2f}s (lameduck {lameduck:g}s); "
                  f"sent so far {load.sent}, slice changes {churn.ops}", flush=True)
            time.sleep(0.5)
        time.sleep(1.0)
        load.stop()
    finally:
        churn.stop()
        for inst in instances:
            inst.terminate()
        for inst in instances:
            try:
                exits.append(inst.proc.wait(timeout=lameduck + 15))
            except subprocess.TimeoutExpired:
                inst.kill()
        for s in load.socks:
            s.close()
        upstream.stop()
        api.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if churn.error is not None:
        print(f"churn failed: {churn.error!r}")
    lost = load.sent - load.answered
    print(f"queries sent: {load.sent}, answered: {load.answered}, lost: {lost}, "
          f"wrong answers: {load.wrong}, rollovers: {rollovers}, slice changes: {churn.ops}, "
          f"instance exit codes: {exits}")
    ok = lost == 0 and load.wrong == 0 and all(c == 0 for c in exits) and churn.error is None
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
