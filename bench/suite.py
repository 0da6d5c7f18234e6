#!/usr/bin/env python3
"""The whole benchmark suite in one command: throughput and latency, then scale.

This module owns only the sequencing: it runs ``udp_qps.py`` (workloads 1-6 against kdns,
dnsmasq and unbound) and ``scale.py`` (memory, sync, change latency, headless at scale) one
after the other, with their own output, and ends with a summary of every goal and whether it
was met; a goal that could not be computed is NOT MEASURED and counts as missed. ``--quick``
runs the reduced variant the smoke test uses (small N, one short rep).
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
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

# Every goal the suite expects a verdict on. A goal with no result (dnsmasq absent, so no
# kdns/dnsmasq ratio; a benchmark that failed or was skipped; a figure not recorded) is
# reported NOT MEASURED and counts as missed: silence must never read as success.
QPS_GOALS = ("hits", "podmix", "cached")
"""``udp_qps.GOALS``' workloads (tests/unit/test_bench_suite.py keeps the two in step)."""
SCALE_GOALS = ("rss", "relist", "ready", "change_p50", "change_max")
"""The goals ``scale.py`` sets per Service count."""
HEADLESS_GOALS = ("udp_edns", "udp_plain", "tcp", "repeat_cost")
"""The goals ``scale.py`` sets for the big headless Service."""


def scale_sizes(quick: bool) -> list[int]:
    """The Service counts ``scale.py`` runs when the suite starts it (its defaults)."""
    return [500] if quick else [10_000, 50_000]


def summarize(results: dict[str, Any], failed_steps: list[tuple[str, int]], *,
              sizes: list[int]) -> tuple[list[str], list[str]]:
    """The summary lines and the goals missed (failed or not measured)."""
    lines: list[str] = []
    missed: list[str] = []
    for name, code in failed_steps:
        lines.append(f"FAIL  {name} benchmark (exit {code}): see its output above")
        missed.append(f"{name} benchmark (exit {code})")
    qps = {g["workload"]: g for g in results.get("qps", {}).get("goals", [])}
    for w in QPS_GOALS:
        g = qps.get(w)
        if g is None:
            lines.append(f"NOT MEASURED  {w}: no kdns/dnsmasq ratio (dnsmasq absent, the "
                         "workload not run, or the benchmark failed)")
            missed.append(f"{w} throughput (not measured)")
            continue
        lines.append(f"{'PASS' if g['pass'] else 'FAIL'}  {w}: kdns/dnsmasq "
                     f"{g['ratio']:.2f} >= {g['target']:.2f}")
        if not g["pass"]:
            missed.append(f"{w} throughput")
    scale = {g["what"]: g for g in results.get("scale", {}).get("goals", [])}
    expected = [f"scale {n} {key}" for n in sizes for key in SCALE_GOALS]
    expected += [f"headless {key}" for key in HEADLESS_GOALS]
    for what in [*expected, *(w for w in scale if w not in expected)]:
        g = scale.get(what)
        if g is None:
            lines.append(f"NOT MEASURED  {what}: no result (the scale benchmark failed, was "
                         "skipped, or recorded no figure for it)")
            missed.append(f"{what} (not measured)")
            continue
        lines.append(f"{'PASS' if g['pass'] else 'FAIL'}  {what}: {g['text']}")
        if not g["pass"]:
            missed.append(what)
    lines.append("SUITE goals missed: " + (", ".join(missed) if missed else "none"))
    return lines, missed


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
    lines, missed = summarize(results, failed_steps, sizes=scale_sizes(args.quick))
    print("\n".join(lines))
    if any(m.endswith("throughput") for m in missed):
        print("(for where kdns spends its time on a missed throughput goal: "
              "bench/run-all --profile WORKLOAD)")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
