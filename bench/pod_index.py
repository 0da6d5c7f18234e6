#!/usr/bin/env python3
"""Memory of the client-address -> namespace index (``pods verified``) at N Pods.

This script (a benchmark, not a test) owns one figure: the bytes the kubernetes view builder
keeps for Pods (its pod -> addresses map, the address -> pods map and the published
address -> namespace shards that autopath, attribution and ``isolate`` read), per 1,000 Pods.

Pods are parsed from API JSON with the real parser (so names and addresses are the interned
strings the informer makes), spread over ``--namespaces`` namespaces, one IPv4 address each
(``--dual`` adds an IPv6 one), all Running. tracemalloc measures what the builder holds after
the first publish, minus what it held before, with the parsed objects already dropped.

    .venv/bin/python bench/pod_index.py                  # 10k and 100k Pods, ~20 s
    .venv/bin/python bench/pod_index.py --pods 10000
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kdns.k8s.objects import parse_pod
from kdns.plugins.kubernetes.builder import ViewBuilder

GOAL_MB_PER_1000 = 0.5


def pod_json(i: int, namespaces: int, dual: bool) -> dict[str, object]:
    ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    ips = [{"ip": ip}] + ([{"ip": f"fd00::{i:x}"}] if dual else [])
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"app-{i // 3:x}-7d9f8c6b5-{i:05x}", "namespace": f"team-{i % namespaces}",
                     "resourceVersion": str(i + 1), "uid": f"uid-{i}"},
        "spec": {"containers": [{"name": "main", "image": "example"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": ips},
    }


def measure(n: int, namespaces: int, dual: bool) -> tuple[float, float]:
    """(bytes held per Pod, seconds to load) for ``n`` Pods."""
    builder = ViewBuilder(("services", "endpointslices", "namespaces", "pods"))
    for kind in ("services", "endpointslices", "namespaces"):
        builder.begin_list(kind)
        builder.end_list(kind, set())
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    builder.begin_list("pods")
    keys = set()
    for i in range(n):
        pod = parse_pod(pod_json(i, namespaces, dual))
        builder.upsert("pods", pod)
        keys.add(pod.key)
    builder.end_list("pods", keys)
    del keys, pod
    builder.flush()
    elapsed = time.perf_counter() - t0
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    view = builder.view
    assert view.namespace_of("10.0.0.7") == f"team-{7 % namespaces}"
    return held / n, elapsed


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pods", type=int, action="append",
                   help="Pods (repeatable; default 10000 and 100000)")
    p.add_argument("--namespaces", type=int, default=200)
    p.add_argument("--dual", action="store_true", help="an IPv6 address per Pod as well")
    args = p.parse_args(argv)
    sizes = args.pods or [10_000, 100_000]
    if any(n < 1 or n > 1_000_000 for n in sizes) or args.namespaces < 1:
        p.error("--pods must be in 1..1,000,000 and --namespaces >= 1")
    print(f"pods index: {args.namespaces} namespaces, "
          f"{'IPv4+IPv6' if args.dual else 'IPv4'} per Pod, all Running; Python "
          f"{sys.version.split()[0]}")
    ok = True
    for n in sizes:
        per_pod, secs = measure(n, args.namespaces, args.dual)
        per_1000 = per_pod * 1000 / 1e6
        ok &= per_1000 <= GOAL_MB_PER_1000
        print(f"{n:>8} Pods: {per_pod:6.0f} B/Pod = {per_1000:.3f} MB per 1,000 Pods "
              f"(goal <= {GOAL_MB_PER_1000}), total {per_pod * n / 1e6:.1f} MB, "
              f"loaded in {secs:.1f} s under tracemalloc")
        print(f"RESULT pods={n} bytes_per_pod={per_pod:.0f} mb_per_1000={per_1000:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
