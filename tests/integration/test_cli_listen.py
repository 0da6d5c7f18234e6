"""``kdns serve`` start-up through the real command: why it cannot listen, what ``--dns-port``
applies to, a second kdns on the same port, the address it reports, and the errors log."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.conftest import DEMO, ROOT
from tests.ports import free_dns_port

KDNS = str(Path(sys.executable).parent / "kdns")


class Serve:
    def __init__(self, corefile: Path, *extra: str) -> None:
        self.p = subprocess.Popen([KDNS, "serve", "--conf", str(corefile), "--dns-addr",
                                   "127.0.0.1", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        assert self.p.stdout is not None
        self.line = self.p.stdout.readline().strip()
        assert self.line.startswith("kdns: serving on "), (self.line, self.stop())

    def stop(self) -> str:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        _, err = self.p.communicate(timeout=30)
        return err


@pytest.fixture
def corefile(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "Corefile"
    yield path


def write(path: Path, port: int) -> Path:
    path.write_text(f".:{port} {{\n    errors\n    kubernetes cluster.local {{\n"
                    f"        manifests {DEMO}\n    }}\n}}\n")
    return path


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("kdns: ")]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root to run kdns as an unprivileged user")
def test_eacces_names_the_listener_and_suggests_dns_port() -> None:
    d = Path(tempfile.mkdtemp(prefix="kdns-eacces-"))
    try:
        d.chmod(0o755)
        conf = d / "Corefile"
        conf.write_text(".:53 {\n    errors\n}\n")
        conf.chmod(0o644)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            KDNS, "serve", "--conf", str(conf), "--dns-addr", "127.0.0.1"],
                           capture_output=True, text=True, timeout=60, cwd="/")
    finally:
        shutil.rmtree(d)
    assert one_line_error(r) == (
        "kdns: cannot listen on udp+tcp 127.0.0.1:53 for zone .: Permission denied; ports below "
        "1024 need root or CAP_NET_BIND_SERVICE: try --dns-port 1053 (or another port above "
        "1023)")


def test_a_port_held_by_another_program(corefile: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        r = subprocess.run([KDNS, "serve", "--conf", str(write(corefile, port)), "--dns-addr",
                            "127.0.0.1"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert one_line_error(r) == (
        f"kdns: cannot listen on udp+tcp 127.0.0.1:{port} for zone .: Address already in use; "
        "another program holds that port: stop it, or use --dns-port")


def test_dns_port_is_refused_for_a_block_on_another_port(corefile: Path) -> None:
    write(corefile, 1053)
    r = subprocess.run([KDNS, "serve", "--conf", str(corefile), "--dns-port", "0"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert one_line_error(r) == (
        f"kdns: {corefile}:1:1: --dns-port 0 replaces port 53 only, and this server block "
        "asks for port 1053: drop the flag, or the port from the Corefile")


def test_dns_port_moves_every_port_53_block(tmp_path: Path) -> None:
    conf = tmp_path / "Corefile"
    conf.write_text(f"cluster.local {{\n    kubernetes {{\n        manifests {DEMO}\n    }}\n}}\n"
                    "example.org:53 {\n    errors\n}\n")
    s = Serve(conf, "--dns-port", "0")
    try:
        port = int(s.line.rsplit(":", 1)[1])
        q = dns.message.make_query("kubia.default.svc.cluster.local", "A")
        assert dns.query.udp(q, "127.0.0.1", port=port, timeout=3).answer
    finally:
        s.stop()


def test_second_kdns_on_the_same_port_warns_and_addresses_agree(corefile: Path) -> None:
    port = free_dns_port()
    write(corefile, port)
    first = Serve(corefile)
    try:
        second = Serve(corefile)
        err2 = second.stop()
    finally:
        err1 = first.stop()
    assert first.line == second.line == f"kdns: serving on 127.0.0.1:{port}"
    warnings = [ln for ln in err2.splitlines() if "[WARNING]" in ln]
    assert len(warnings) == 1, err2
    assert (f"udp 127.0.0.1:{port} is already bound by another process that shares it "
            "(SO_REUSEPORT, e.g. another kdns)") in warnings[0]
    assert "already bound" not in err1
    # The log names the address stdout names.
    assert f"listening on udp+tcp 127.0.0.1:{port} for zone .\n" in err1


def test_errors_log_names_query_types(corefile: Path) -> None:
    port = free_dns_port()
    s = Serve(write(corefile, port))
    try:
        for name, qtype in (("www.example.org", "A"), ("4.3.2.1.in-addr.arpa", "PTR"),
                            ("www.example.org", "AAAA")):
            r = dns.query.udp(dns.message.make_query(name, qtype), "127.0.0.1", port=port,
                              timeout=3)
            assert r.rcode() == dns.rcode.SERVFAIL
        time.sleep(0.2)  # let the log lines reach the pipe before SIGTERM
    finally:
        err = s.stop()
    errors = [ln.split("kdns.errors: ", 1)[1] for ln in err.splitlines() if "[ERROR]" in ln]
    assert errors == ["www.example.org. A: no next plugin found for zone .",
                      "4.3.2.1.in-addr.arpa. PTR: no next plugin found for zone .",
                      "www.example.org. AAAA: no next plugin found for zone ."], err
