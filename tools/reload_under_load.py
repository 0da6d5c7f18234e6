#!/usr/bin/env python3
"""Change the Corefile of a running kdns under steady UDP load and count failed queries.

The Corefile (with ``reload 2s 1s``) is rewritten several times while queries flow: valid
changes (the kubernetes ``ttl``) must take effect on the live sockets, and one broken version
must be rejected while the previous configuration keeps serving. Every query must be answered
with the right rcode. 127.0.0.1 only, bounded in rate and time, processes stopped by PID.

    .venv/bin/python tools/reload_under_load.py [--rate 2000] [--changes 3]
"""

from __future__ import annotations

import argparse
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import Load

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "zones" / "demo"
KUBIA = b"\x05kubia\x07default\x03svc\x07cluster\x05local\x00"


def corefile(port: int, ttl: int, broken: bool = False) -> str:
    extra = "    frobnicate\n" if broken else ""
    return (f".:{port} {{\n    reload 2s 1s\n{extra}"
            f"    kubernetes cluster.local {{\n        manifests {DEMO}\n        ttl {ttl}\n    }}\n}}\n")


def answer_ttl(port: int) -> int | None:
    q = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + KUBIA + b"\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        s.sendto(q, ("127.0.0.1", port))
        try:
            data = s.recv(4096)
        except TimeoutError:
            return None
    # answer RR: name pointer (2) + type (2) + class (2) -> TTL follows
    return int(struct.unpack_from("!I", data, len(q) + 6)[0]) if data[7] else None


def wait_ttl(port: int, ttl: int, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if answer_ttl(port) == ttl:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise RuntimeError(f"ttl {ttl} not served within {timeout}s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=2000, help="queries per second (max 20000)")
    ap.add_argument("--changes", type=int, default=3, help="valid Corefile changes (max 10)")
    args = ap.parse_args(argv)
    rate, changes = max(1, min(args.rate, 20000)), max(1, min(args.changes, 10))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = Path(tempfile.mkdtemp(prefix="kdns-reload-"))
    path = tmp / "Corefile"
    path.write_text(corefile(port, 10))
    proc = subprocess.Popen([sys.executable, "-m", "kdns.cli", "serve", "--conf", str(path),
                             "--dns-addr", "127.0.0.1", "--log-level", "info"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    log: list[str] = []
    load = Load(port, rate)
    applied, rejected_kept = 0, False
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            log.append(line)
            if line.startswith("kdns: serving on"):
                break
        threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
        wait_ttl(port, 10, 5)
        load.start()
        for n in range(changes):
            ttl = 20 + n
            path.write_text(corefile(port, ttl))
            took = wait_ttl(port, ttl, 8)
            applied += 1
            print(f"change {n + 1}: ttl {ttl} served {took:.1f}s after the write", flush=True)
            if n == 0:
                path.write_text(corefile(port, 99, broken=True))
                time.sleep(4.5)  # more than interval + jitter: the broken text was polled
                rejected_kept = answer_ttl(port) == ttl
                verdict = (f"rejected, ttl {ttl} still served" if rejected_kept
                           else "NOT rejected")
                print(f"broken Corefile: {verdict}", flush=True)
        time.sleep(1)
        load.stop()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for s in load.socks:
            s.close()
        path.unlink()
        tmp.rmdir()
    errors = [ln.strip() for ln in log if "reload:" in ln and "ERROR" in ln]
    lost = load.sent - load.answered
    print(f"queries sent: {load.sent}, answered: {load.answered}, failed: {lost + load.wrong}, "
          f"reloads applied: {applied}/{changes}, broken Corefile kept old config: {rejected_kept}")
    if errors:
        print(f"logged: {errors[0]}")
    ok = lost == 0 and load.wrong == 0 and applied == changes and rejected_kept
    return 0 if ok and proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
