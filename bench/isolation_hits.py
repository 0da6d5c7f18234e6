#!/usr/bin/env python3
"""The fast path's cost per hit with and without ``isolate``, measured in-process.

This script (a benchmark, not a test) owns one comparison: the time ``Dispatcher.lookup``
takes to replay a stored reply for a cluster name, for the same queries from the same client
addresses, under three kubernetes blocks: ``pods insecure`` (kubeadm's), ``pods verified``
(per-client counts on), and ``pods verified`` with ``isolate`` (replies stored per client
namespace; every namespace is in ``allow``, so the answers are the same and only the
mechanism's cost differs). No sockets: a kdns is built from manifests (``gen.py``'s Services
plus one Pod per client address), each question is answered once through the slow path to
store it, then every (client, question) pair is replayed ``--rounds`` times and timed with
``time.perf_counter`` around the whole loop. The load generator of ``udp_qps.py`` cannot
saturate the server on a small machine; this isolates what the server adds per hit.

    .venv/bin/python bench/isolation_hits.py             # ~20 s
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen

from kdns.config.parser import parse_corefile
from kdns.server.app import KdnsServer, ServeOptions


def query(name: str, qid: int) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack(">HH", 1, 1)


def corefile(manifests: Path, mode: str, namespaces: int) -> str:
    iso = ""
    if mode == "isolate":
        allow = " ".join(f"ns{k}" for k in range(namespaces))
        iso = f"        isolate {{\n            allow {allow}\n        }}\n"
    pods = "insecure" if mode == "insecure" else "verified"
    return (".:53 {\n    kubernetes cluster.local in-addr.arpa {\n"
            f"        manifests {manifests}\n        pods {pods}\n{iso}    }}\n}}\n")


def pods_yaml(clients: list[str], namespaces: int) -> str:
    docs = []
    for i, ip in enumerate(clients):
        docs.append(f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: client{i}\n"
                    f"  namespace: ns{i % namespaces}\nspec:\n  containers: []\n"
                    f"status:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n  - ip: {ip}\n")
    return "---\n".join(docs)


def run(mode: str, tmp: Path, data: gen.Generated, clients: list[str], names: list[str],
        namespaces: int, rounds: int) -> tuple[float, int]:
    """(ns per hit, hits) for one mode."""
    mdir = tmp / f"m-{mode}"
    mdir.mkdir()
    (mdir / "services.yaml").write_text(data.manifests.read_text())
    (mdir / "pods.yaml").write_text(pods_yaml(clients, namespaces))
    text = corefile(mdir, mode, namespaces)
    server = KdnsServer(parse_corefile(text, "Corefile"),
                        ServeOptions(config_dir=tmp, dns_addr="127.0.0.1", dns_port=0)).build()
    server.start()
    try:
        udp = server.listeners[0].udp
        assert udp is not None
        d = udp.dispatcher
        work = [(query(n, i & 0xFFFF), (ip, 40000)) for i, (n, ip) in
                enumerate((n, ip) for ip in clients for n in names)]
        for data, client in work:  # store every (scope, question) once
            if d.lookup(data, client) is None:
                d.handle(data, client)
        for data, client in work:
            if d.lookup(data, client) is None:
                raise SystemExit(f"{mode}: not a hit after storing: {data!r} from {client[0]}")
        lookup = d.lookup
        t0 = time.perf_counter()
        for _ in range(rounds):
            for data, client in work:
                lookup(data, client)
        elapsed = time.perf_counter() - t0
        hits = rounds * len(work)
        return elapsed / hits * 1e9, hits
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="Services")
    p.add_argument("--namespaces", type=int, default=20)
    p.add_argument("--clients", type=int, default=40, help="client addresses (127.0.1.x)")
    p.add_argument("--names", type=int, default=200, help="distinct names asked")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--reps", type=int, default=3, help="measurements per mode (best counts)")
    args = p.parse_args(argv)
    if not (1 <= args.clients <= 250 and 1 <= args.names <= args.n and args.rounds >= 1
            and args.reps >= 1 and args.namespaces >= 1):
        p.error("need 1 <= clients <= 250, 1 <= names <= n, rounds >= 1, reps >= 1")
    clients = [f"127.0.1.{i + 1}" for i in range(args.clients)]
    with tempfile.TemporaryDirectory(prefix="kdns-isohits-") as t:
        tmp = Path(t)
        data = gen.generate(tmp / "gen", n=args.n, namespaces=args.namespaces)
        names = sorted(data.names)[: args.names]
        print(f"{args.n} Services in {args.namespaces} namespaces, {args.clients} client "
              f"addresses (Pods spread over the namespaces), {len(names)} names, every pair "
              f"replayed {args.rounds} times per rep, best of {args.reps}; Python "
              f"{sys.version.split()[0]}")
        best: dict[str, float] = {}
        for rep in range(args.reps):
            for mode in ("insecure", "verified", "isolate"):
                (tmp / f"r{rep}").mkdir(exist_ok=True)
                ns, _hits = run(mode, tmp / f"r{rep}", data, clients, names, args.namespaces,
                                args.rounds)
                best[mode] = min(best.get(mode, ns), ns)
        for mode in ("insecure", "verified", "isolate"):
            print(f"{mode:>9}: {best[mode]:6.0f} ns per hit  ({best[mode] / best['insecure']:.2f}x "
                  f"pods insecure)")
            print(f"RESULT mode={mode} ns_per_hit={best[mode]:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
