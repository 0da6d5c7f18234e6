#!/usr/bin/env python3
"""The whole benchmark suite in one command: throughput and latency, then scale.

This module owns only the sequencing: it runs ``udp_qps.py`` (workloads 1-6 against kdns,
dnsmasq and unbound) and ``scale.py`` (memory, sync, change latency, headless at scale) one
after the other, with their own output, and ends with a summary of every goal and whether it
was met. ``--quick`` runs the reduced variant the smoke test uses (small N, one short rep).
``--profile WORKLOAD`` is passed to ``udp_qps.py`` instead of the suite.

    .venv/bin/python bench/suite.py            # the full suite (~12 minutes)
    .venv/bin/python bench/suite.py --quick    # the smoke variant (under a minute)
    bench/run-all [--quick]                    # the same, from any directory
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="the reduced smoke variant")
    p.add_argument("--skip-qps", action="store_true")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--profile", metavar="WORKLOAD", default=None,
                   help="profile kdns on one udp_qps workload and print the top functions")
    p.add_argument("--json", type=Path, default=None, help="write both results here")
    args, extra = p.parse_known_args(argv)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    py = sys.executable
    quick = ["--quick"] if args.quick else []
    if args.profile:
        return subprocess.call([py, str(BENCH / "udp_qps.py"), *quick, "--profile",
                                args.profile, *extra], cwd=REPO, env=env)
    rc = 0
    with tempfile.TemporaryDirectory(prefix="kdns-suite-") as tmp:
        qps_json, scale_json = Path(tmp) / "qps.json", Path(tmp) / "scale.json"
        steps = []
        failed_steps: list[tuple[str, int]] = []
        if not args.skip_qps:
            steps.append(("qps", [py, str(BENCH / "udp_qps.py"), *quick, "--json",
                                  str(qps_json), *extra]))
        if not args.skip_scale:
            steps.append(("scale", [py, str(BENCH / "scale.py"), *quick, "--json",
                                    str(scale_json)]))
        for name, cmd in steps:
            print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
            code = subprocess.call(cmd, cwd=REPO, env=env)
            print(f"=== {name} exited with {code}", flush=True)
            rc = rc or code
            if code != 0:
                failed_steps.append((name, code))
        results = {}
        for key, path in (("qps", qps_json), ("scale", scale_json)):
            if path.exists():
                results[key] = json.loads(path.read_text())
    print("\n=== summary")
    missed: list[str] = [f"{name} benchmark (exit {code})" for name, code in failed_steps]
    for what in missed:
        print(f"FAIL  {what}: see its output above")
    for g in results.get("qps", {}).get("goals", []):
        line = (f"{g['workload']}: kdns/dnsmasq {g['ratio']:.2f} >= {g['target']:.2f}")
        print(f"{'PASS' if g['pass'] else 'FAIL'}  {line}")
        if not g["pass"]:
            missed.append(f"{g['workload']} throughput")
    for g in results.get("scale", {}).get("goals", []):
        print(f"{'PASS' if g['pass'] else 'FAIL'}  {g['what']}: {g['text']}")
        if not g["pass"]:
            missed.append(g["what"])
    print("SUITE goals missed: " + (", ".join(missed) if missed else "none"))
    if missed:
        print("(for where kdns spends its time on a missed throughput goal: "
              "bench/run-all --profile WORKLOAD)")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
