#!/usr/bin/env python3
"""Run ``kdns`` with a cProfile profiler in every thread; write the merged stats on exit.

``python -m cProfile`` sees only the main thread, and kdns answers queries in listener and
worker threads, so this wrapper gives each thread its own profiler (by wrapping
``threading.Thread.run``) and merges them all into one pstats file when the process exits (kdns
stops its listeners on SIGTERM, so their threads end and their profilers close first).

    python bench/profile_kdns.py --out /tmp/kdns.prof -- serve --conf Corefile --dns-addr 127.0.0.1

``udp_qps.py --profile WORKLOAD`` uses it and prints the top functions.

``profile_kdns.py cold`` measures instead, in process and without sockets, what one uncached
cluster answer costs: it serves kubeadm's Corefile (``udp_qps.kdns_corefile``) over the
generated cluster (``--n`` Services, one in five headless) and times ``Dispatcher.serve`` on
names never asked before: in-zone NXDOMAIN ``x<i>.<ns>.svc.cluster.local``, the first query of
every Service name, and fresh mixed-case spellings of names already asked (medians of
``--reps`` passes, one fresh server each). ``--cprofile`` prints where the time goes.

    python bench/profile_kdns.py cold --n 5000
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import pstats
import runpy
import sys
import threading
from typing import Any

_lock = threading.Lock()
_profilers: list[cProfile.Profile] = []


def _install() -> None:
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        prof = cProfile.Profile()
        with _lock:
            _profilers.append(prof)
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()

    threading.Thread.run = run  # type: ignore[method-assign]


def _dump(main: cProfile.Profile, out: str) -> None:
    main.disable()
    stats = pstats.Stats(main)
    with _lock:
        others = list(_profilers)
    for prof in others:
        try:
            stats.add(prof)
        except Exception:  # a thread still running has nothing consistent to add
            continue
    stats.dump_stats(out)


def _cold(argv: list[str]) -> None:
    import random
    import socket
    import statistics
    import tempfile
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gen
    import udp_qps

    from kdns.config.parser import parse_corefile
    from kdns.server.app import KdnsServer, ServeOptions

    parser = argparse.ArgumentParser(prog="profile_kdns.py cold")
    parser.add_argument("--n", type=int, default=5000, help="Services (5000)")
    parser.add_argument("--count", type=int, default=5000, help="names per kind and pass")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="kdns-cold-") as tmp:
        data = gen.generate(Path(tmp), n=args.n)
        # A loopback port nobody listens on: cluster names never reach forward.
        dead = udp_qps.free_port()
        have, _missing = udp_qps.kubeadm_plugins()
        text = udp_qps.kdns_corefile(53, data.manifests, dead, [udp_qps.free_port() for _ in "hrp"],
                                     "kubeadm", [p for p in have if p != "loop"])
        names = list(data.names)
        kinds: dict[str, list[float]] = {"nxdomain": [], "first-positive": [], "mixed-case": []}
        prof = cProfile.Profile() if args.cprofile else None
        for rep in range(args.reps):
            server = KdnsServer(parse_corefile(text, "<cold>"),
                                ServeOptions(dns_addr="127.0.0.1", dns_port=0, http=False)).build()
            server.start()
            try:
                udp = server.listeners[0].udp
                assert udp is not None
                d = udp.dispatcher
                rng = random.Random(rep)
                picked = rng.sample(names, min(args.count, len(names)))
                spaces = sorted({n.split(".")[1] for n in names})
                queries = {
                    "nxdomain": [f"x{rep}-{i}.{spaces[i % len(spaces)]}.svc.cluster.local"
                                 for i in range(args.count)],
                    "first-positive": picked,
                    "mixed-case": ["".join(c.upper() if rng.random() < 0.5 else c for c in n)
                                   for n in picked],
                }
                client = ("127.0.0.1", 40000)
                for kind, qnames in queries.items():
                    wires = [udp_qps.encode_query(q, "A") for q in qnames]
                    if prof is not None:
                        prof.enable()
                    # CPU time of this thread: what the answers cost, not what other
                    # processes on a shared machine took meanwhile.
                    t0 = time.thread_time()
                    for w in wires:
                        if d.serve(w, client) is None:
                            raise SystemExit(f"no reply for a {kind} query")
                    elapsed = time.thread_time() - t0
                    if prof is not None:
                        prof.disable()
                    kinds[kind].append(elapsed / len(wires) * 1e6)
            finally:
                server.stop()
        print(f"in-process CPU time per query (Dispatcher.serve), kubeadm Corefile, {args.n} Services "
              f"({max(1, args.n // 5)} headless), {args.count} names per kind, "
              f"median of {args.reps}:")
        for kind, us in kinds.items():
            print(f"  {kind:15s} {statistics.median(us):6.1f} us  "
                  f"(runs {', '.join(f'{u:.1f}' for u in us)})")
        print(f"RESULT cold_us={statistics.median(kinds['nxdomain'] + kinds['first-positive']):.1f}")
        if prof is not None:
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        del socket


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["cold"]:
        _cold(argv[1:])
        return
    if "--" not in argv:
        sys.exit("usage: profile_kdns.py --out FILE -- KDNS-ARGS...")
    split = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv[:split])
    _install()
    prof = cProfile.Profile()
    atexit.register(_dump, prof, args.out)
    sys.argv = ["kdns", *argv[split + 1 :]]
    prof.enable()
    globals_: dict[str, Any] = runpy.run_module("kdns.cli", run_name="__main__")
    del globals_


if __name__ == "__main__":
    main()
