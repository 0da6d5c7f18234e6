#!/usr/bin/env python3
"""Coverage-guided fuzzing of kdns's packet path with atheris (libFuzzer for Python).

A script, not a test. It owns one fuzzing session:

1. builds an in-process kdns in the kubeadm setting (tests/kubeadm.py: kubeadm's Corefile with
   cache, forward to a dnsmasq it starts on 127.0.0.1, loadbalance, loop, prometheus, over a
   fake API server whose EndpointSlices change every 50 ms; no DNS sockets are bound) and
   takes its UDP dispatcher (``--setting kubernetes``: the demo manifests, kubernetes only);
2. feeds every input datagram to ``Dispatcher.serve`` twice (the second answer may come from
   the fast path), then a valid query, and checks the same reply invariants as the
   property-based tests (``check_reply`` in tests/unit/test_fuzz_wire.py): the reply parses
   with dnspython, echoes the ID and a well-formed question, has QR=1 and a sensible rcode;
   silence only for fewer than 12 bytes or QR=1; no plugin raised; the valid query is answered;
3. counts a failed invariant as a crash (the input is saved under ``--artifacts``) and goes on;
4. stops after ``--runs`` inputs or ``--seconds`` and prints ``inputs tried: N, crashes: M``.

kdns and dnslib are instrumented for coverage. Seeds are a handful of valid queries (A, AAAA,
SRV, PTR, ANY, with and without EDNS), written to a temporary corpus directory that libFuzzer
grows; pass ``--corpus DIR`` to keep it between runs.

    .venv/bin/pip install atheris            # wheels for CPython 3.11 on manylinux x86_64
    .venv/bin/python bench/fuzz_atheris.py --seconds 300
    .venv/bin/python bench/fuzz_atheris.py --runs 20000 --artifacts /tmp/kdns-crashes

Exit status: 0 when no invariant failed, 1 when some did, 2 when atheris is not installed.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.unit.test_fuzz_wire (the shared invariants)

try:
    import atheris
except ImportError:
    atheris = None

SEED_QUERIES = (
    ("kubia.default.svc.cluster.local.", "A", {}),
    ("KuBiA.default.svc.cluster.local.", "AAAA", {"use_edns": 0, "payload": 1232}),
    ("_http._tcp.kubia.default.svc.cluster.local.", "SRV", {}),
    ("175.237.98.10.in-addr.arpa.", "PTR", {"use_edns": 0, "want_dnssec": True}),
    ("nginx-svc.default.svc.cluster.local.", "ANY", {}),
    ("nope.default.svc.cluster.local.", "A", {"use_edns": 0}),
    ("example.com.", "TXT", {}),
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=0, help="stop after N inputs (0: no limit)")
    p.add_argument("--seconds", type=float, default=60.0,
                   help="stop after S seconds (0: no limit; default 60)")
    p.add_argument("--corpus", type=Path, default=None,
                   help="corpus directory to grow and keep (default: a temporary one)")
    p.add_argument("--artifacts", type=Path, default=None,
                   help="where inputs that broke an invariant are saved (default: a temporary "
                        "directory, printed at the end)")
    p.add_argument("--max-len", type=int, default=1500, help="largest input (bytes)")
    p.add_argument("--seed", type=int, default=0, help="libFuzzer seed (0: random)")
    p.add_argument("--setting", choices=("kubeadm", "kubernetes"), default="kubeadm",
                   help="kubeadm: kubeadm's Corefile, a local dnsmasq upstream and EndpointSlice "
                        "churn (default); kubernetes: the kubernetes plugin alone")
    args = p.parse_args(argv)
    if args.runs <= 0 and args.seconds <= 0:
        p.error("give --runs or --seconds (or both): a session must end")
    return args


def build_server(setting: str, stops: list[Callable[[], object]]) -> Any:
    """The server's chain, plugins started, no listeners (imported here, so after atheris has
    started instrumenting). ``kubeadm``: kubeadm's Corefile over a fake API server whose
    EndpointSlices change every 50 ms, forwarding to a local dnsmasq (tests/kubeadm.py);
    ``kubernetes``: the kubernetes plugin alone over the demo manifests. What must be stopped
    at the end is appended to ``stops``."""
    from kdns.config.parser import parse_corefile
    from kdns.server.app import KdnsServer, ServeOptions

    demo = REPO / "zones" / "demo"
    if setting == "kubernetes":
        corefile = (
            ".:53 {\n    errors\n"
            "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
            f"        manifests {demo}\n        pods insecure\n"
            "        fallthrough in-addr.arpa ip6.arpa\n        ttl 30\n    }\n}\n"
        )
        config_dir = demo
    else:
        from tests import fakeapi
        from tests.kubeadm import (
            SliceChurn,
            Upstream,
            kubeadm_corefile,
            seed_basics,
        )
        from tests.ports import free_tcp_port

        config_dir = Path(tempfile.mkdtemp(prefix="kdns-fuzz-kubeadm-"))
        stops.append(lambda: shutil.rmtree(config_dir, ignore_errors=True))
        api = fakeapi.FakeApiServer(bookmark_interval=0.5).start()
        stops.append(api.stop)
        seed_basics(api)
        churn = SliceChurn(api, interval=0.05)
        upstream = Upstream(config_dir).start()
        stops.append(upstream.stop)
        kubeconfig = api.write_kubeconfig(str(config_dir / "kubeconfig"))
        corefile = kubeadm_corefile(f"kubeconfig {kubeconfig}", upstream.port,
                                    ready=free_tcp_port(), prometheus=free_tcp_port())
        churn.start()
        stops.append(churn.stop)
    server = KdnsServer(parse_corefile(corefile, "fuzz-Corefile"),
                        ServeOptions(config_dir=config_dir, http=False))
    server.build()
    server.start_plugins()
    stops.append(server.stop)
    return server


class Session:
    """One fuzzing session: the target callback, its counters, and the way out."""

    def __init__(self, args: argparse.Namespace, dispatcher: Any,
                 stops: list[Callable[[], object]],
                 check_reply: Callable[[bytes, bytes | None], object], artifacts: Path,
                 cleanup: list[Path]) -> None:
        import dns.message

        self.args = args
        self.dispatcher = dispatcher
        self.stops = stops
        self.check_reply = check_reply
        self.artifacts = artifacts
        self.cleanup = cleanup
        self.tried = 0
        self.crashes = 0
        self.signatures: dict[str, int] = {}
        self.started = time.monotonic()
        self.deadline = self.started + args.seconds if args.seconds > 0 else float("inf")
        self.probe = dns.message.make_query("kubia.default.svc.cluster.local.", "A", id=4242)
        self.probe_wire = self.probe.to_wire()
        self.from_wire = dns.message.from_wire

    def one_input(self, data: bytes) -> None:
        self.tried += 1
        try:
            self.check(data)
        except Exception as err:  # AssertionError from an invariant, or a bug in the harness
            self.crash(data, err)
        if (self.args.runs and self.tried >= self.args.runs) or time.monotonic() >= self.deadline:
            self.finish()

    def check(self, data: bytes) -> None:
        d = self.dispatcher
        panics = d.stats.panics
        for _ in range(2):
            self.check_reply(data, d.serve(data, ("127.0.0.1", 40000)))
        assert d.stats.panics == panics, "a plugin raised"
        reply = d.serve(self.probe_wire, ("127.0.0.1", 40000))
        assert reply is not None, "no answer to a valid query afterwards"
        msg = self.from_wire(reply)
        assert msg.id == 4242 and msg.answer, "valid query answered wrongly afterwards"

    def crash(self, data: bytes, err: Exception) -> None:
        self.crashes += 1
        sig = f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
        first = sig not in self.signatures
        self.signatures[sig] = self.signatures.get(sig, 0) + 1
        path = self.artifacts / f"crash-{hashlib.sha1(data).hexdigest()}"
        path.write_bytes(data)
        if first:
            print(f"\nCRASH #{self.crashes}: {sig}\n  input {data.hex()}\n  saved {path}",
                  file=sys.stderr)
            traceback.print_exception(err, file=sys.stderr)

    def finish(self) -> None:
        elapsed = time.monotonic() - self.started
        print(f"\nfuzzed Dispatcher.serve for {elapsed:.0f} s "
              f"({self.tried / max(elapsed, 1e-9):.0f} inputs/s)", flush=True)
        for sig, n in sorted(self.signatures.items(), key=lambda kv: -kv[1]):
            print(f"  {n:6d} x {sig}")
        if self.crashes:
            print(f"crashing inputs saved under {self.artifacts}")
        elif self.args.artifacts is None:
            self.cleanup.append(self.artifacts)  # an empty temporary directory
        print(f"inputs tried: {self.tried}, crashes: {self.crashes}", flush=True)
        try:
            for stop in reversed(self.stops):
                try:
                    stop()
                except Exception as err:  # the summary must still come out
                    print(f"stopping failed: {err}", file=sys.stderr)
        finally:
            for p in self.cleanup:
                shutil.rmtree(p, ignore_errors=True)
            sys.stdout.flush()
            sys.stderr.flush()
            # libFuzzer owns the loop and would exit through C's exit() without this summary.
            os._exit(1 if self.crashes else 0)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if atheris is None:
        print("bench/fuzz_atheris.py needs atheris: `.venv/bin/pip install atheris` (wheels "
              "for CPython 3.11 on manylinux x86_64; elsewhere it builds with clang/libFuzzer). "
              "Without it, the hypothesis fuzz tests still run: tests/unit/test_fuzz_wire.py, "
              "tests/integration/test_fuzz_server.py.", file=sys.stderr)
        return 2
    logging.disable(logging.CRITICAL)  # the errors plugin logs every SERVFAIL: keep output readable

    with atheris.instrument_imports(include=["kdns", "dnslib"]):
        import dnslib  # noqa: F401  (instrumented for coverage feedback)

        from kdns.dns import wire  # noqa: F401
        from kdns.server import app, dispatch  # noqa: F401
        stops: list[Callable[[], object]] = []
        server = build_server(args.setting, stops)
    import dns.message

    from tests.unit.test_fuzz_wire import check_reply

    cleanup: list[Path] = []
    corpus = args.corpus
    if corpus is None:
        corpus = Path(tempfile.mkdtemp(prefix="kdns-fuzz-corpus-"))
        cleanup.append(corpus)
    corpus.mkdir(parents=True, exist_ok=True)
    for i, (name, qtype, kw) in enumerate(SEED_QUERIES):
        (corpus / f"seed-{i}").write_bytes(
            dns.message.make_query(name, qtype, **kw).to_wire())  # type: ignore[arg-type]
    artifacts = args.artifacts or Path(tempfile.mkdtemp(prefix="kdns-fuzz-crashes-"))
    artifacts.mkdir(parents=True, exist_ok=True)

    session = Session(args, server.dispatcher("udp"), stops, check_reply, artifacts, cleanup)
    libfuzzer = [sys.argv[0], f"-max_len={args.max_len}", "-timeout=10", "-rss_limit_mb=4096",
                 f"-seed={args.seed}", "-print_final_stats=0", str(corpus)]
    if args.seconds > 0:  # a backstop: the session itself stops at the deadline
        libfuzzer.append(f"-max_total_time={int(args.seconds) + 30}")
    atheris.Setup(libfuzzer, session.one_input)
    atheris.Fuzz()
    session.finish()  # not reached: libFuzzer exits, or finish() did
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
