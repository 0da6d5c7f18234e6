#!/usr/bin/env python3
"""Run ``kdns`` with a cProfile profiler in every thread; write the merged stats on exit.

``python -m cProfile`` sees only the main thread, and kdns answers queries in listener and
worker threads, so this wrapper gives each thread its own profiler (by wrapping
``threading.Thread.run``) and merges them all into one pstats file when the process exits (kdns
stops its listeners on SIGTERM, so their threads end and their profilers close first).

    python bench/profile_kdns.py --out /tmp/kdns.prof -- serve --conf Corefile --dns-addr 127.0.0.1

``udp_qps.py --profile WORKLOAD`` uses it and prints the top functions.
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


def main() -> None:
    argv = sys.argv[1:]
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
