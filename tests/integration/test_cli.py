"""The ``kdns`` command as a user runs it: serve (a real process), check, resolve."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
from click.testing import CliRunner

from kdns.cli import main
from tests.conftest import DEMO, ROOT, Running
from tests.ports import free_dns_port, free_tcp_port

KDNS = [sys.executable, "-m", "kdns.cli"]


class Proc:
    def __init__(self, args: list[str], cwd: Path = ROOT) -> None:
        self.p = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        self.port = 0

    def wait_serving(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        assert self.p.stdout is not None
        while time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if not line:
                if self.p.poll() is not None:
                    raise AssertionError(f"kdns exited {self.p.returncode}: {self.stderr()}")
                continue
            if line.startswith("kdns: serving on "):
                self.port = int(line.rsplit(":", 1)[1])
                return self.port
        raise AssertionError("kdns did not start serving in time")

    def stderr(self) -> str:
        try:
            _, err = self.p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            return "<still running>"
        return err

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        for pipe in (self.p.stdout, self.p.stderr):
            if pipe is not None:
                pipe.close()
        return self.p.returncode


@pytest.fixture
def served_demo(tmp_path: Path) -> Iterator[tuple[Proc, int, int]]:
    health, ready = free_tcp_port(), free_tcp_port()
    corefile = tmp_path / "Corefile"
    corefile.write_text(
        (DEMO / "Corefile").read_text()
        .replace("127.0.0.1:8080", f"127.0.0.1:{health}")
        .replace("127.0.0.1:8181", f"127.0.0.1:{ready}")
        .replace("127.0.0.1:9153", f"127.0.0.1:{free_tcp_port()}")
        .replace("manifests .", f"manifests {DEMO}")
        .replace(".:1053", ".:53")
    )
    proc = Proc([*KDNS, "serve", "--conf", str(corefile), "--dns-addr", "127.0.0.1",
                 "--dns-port", "0"])
    try:
        proc.wait_serving()
        yield proc, health, ready
    finally:
        proc.stop()


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_serve_answers_the_readme_queries_and_stops_cleanly(
    served_demo: tuple[Proc, int, int],
) -> None:
    proc, health, ready = served_demo
    port = proc.port

    def ask(name: str, qtype: str) -> dns.message.Message:
        return dns.query.udp(dns.message.make_query(name, qtype), "127.0.0.1", port=port,
                             timeout=3)

    a = ask("kubia.default.svc.cluster.local", "A")
    assert [r.address for r in a.answer[0]] == ["10.98.237.175"]
    srv = ask("_http._tcp.kubia.default.svc.cluster.local", "SRV")
    assert [(r.priority, r.weight, r.port, r.target.to_text()) for r in srv.answer[0]] == [
        (0, 100, 80, "kubia.default.svc.cluster.local.")
    ]
    ptr = ask("175.237.98.10.in-addr.arpa", "PTR")
    assert [r.target.to_text() for r in ptr.answer[0]] == ["kubia.default.svc.cluster.local."]
    assert _get(health, "/health") == (200, "OK")
    assert _get(ready, "/ready") == (200, "OK")
    assert proc.stop() == 0


def test_serve_rejects_a_bad_corefile_with_its_location(tmp_path: Path) -> None:
    bad = tmp_path / "Corefile"
    bad.write_text(".:53 {\n    kubernetes cluster.local {\n        ttl 9000\n    }\n}\n")
    r = subprocess.run([*KDNS, "serve", "--conf", str(bad), "--dns-port", "0"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert f"{bad}:3:" in r.stderr and "ttl" in r.stderr


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        (".:53 {\n  frobnicate\n}\n", ":2:3", "unknown directive 'frobnicate'"),
        (".:53 {\n  errors\n  errors\n}\n", ":3:3", "only be used once"),
        (".:53 {\n  kubernetes cluster.local {\n    bogus 1\n  }\n}\n", ":3:5", "bogus"),
        (".:53 {\n  health :99999\n}\n", ":2:10", "port"),
        (".:53 {\n  errors\n", ":1:", "{"),
    ],
)
def test_check_reports_located_errors(tmp_path: Path, text: str, where: str, what: str) -> None:
    path = tmp_path / "Corefile"
    path.write_text(text)
    r = CliRunner().invoke(main, ["check", str(path)])
    assert r.exit_code == 2, r.output
    assert f"{path}{where}" in r.output and what in r.output


def test_check_accepts_the_demo_corefile() -> None:
    r = CliRunner().invoke(main, ["check", str(DEMO / "Corefile")])
    assert r.exit_code == 0, r.output


def test_bad_cli_arguments_are_usage_errors() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["serve", "--dns-port", "70000"]).exit_code == 2
    assert runner.invoke(main, ["serve", "--dns-addr", "not-an-ip"]).exit_code == 2
    r = runner.invoke(main, ["serve", "--reply-store-mb", "0"])
    assert r.exit_code == 2 and "--reply-store-mb" in r.output
    assert runner.invoke(main, ["resolve", "kubia", "--ndots", "99"]).exit_code == 2
    r = runner.invoke(main, ["resolve", "kubia", "--type", "BOGUS", "--conf",
                             str(DEMO / "Corefile")])
    assert r.exit_code == 2 and "unknown record type" in r.output


def _resolve(*args: str) -> tuple[int, str]:
    # The demo Corefile has no forward: the built-in default forwards to /etc/resolv.conf, and
    # tests never send a query off this machine.
    r = CliRunner().invoke(main, ["resolve", *args, "--conf", str(DEMO / "Corefile")])
    return r.exit_code, r.output


def test_resolve_short_name_walks_the_search_list() -> None:
    code, out = _resolve("kubia")
    assert code == 0, out
    lines = out.splitlines()
    assert "1. kubia.default.svc.cluster.local.  NOERROR" in lines[2]
    assert "glibc: resolves: answer for kubia.default.svc.cluster.local. (steps 1)" in out
    assert "musl:  resolves: answer for kubia.default.svc.cluster.local. (steps 1)" in out
    assert "10.98.237.175" in out


def test_resolve_name_dot_namespace_from_another_namespace() -> None:
    code, out = _resolve("nginx-svc.default", "-n", "shop")
    assert code == 0, out
    assert "nginx-svc.default.shop.svc.cluster.local." in out and "NXDOMAIN" in out
    assert "nginx-svc.default.svc.cluster.local." in out
    assert "glibc: resolves: answer for nginx-svc.default.svc.cluster.local. (steps 1,2)" in out


def test_resolve_fqdn_is_asked_once() -> None:
    code, out = _resolve("kubia.default.svc.cluster.local.", "-t", "SRV")
    assert code == 0, out
    assert "  1. kubia.default" in out and "  2. " not in out
    assert "trailing dot: the name is absolute" in out and "SRV" in out


def test_resolve_name_with_ndots_dots_is_tried_as_is_first() -> None:
    code, out = _resolve("kubia.default.svc.cluster.local", "--ndots", "4")
    assert code == 0, out
    assert "1. kubia.default.svc.cluster.local." in out.splitlines()[3]
    assert "4 dots >= ndots:4: glibc asks the name as is first" in out


def test_resolve_external_name_walks_every_suffix_then_the_name() -> None:
    code, out = _resolve("api.example.com")
    steps = [ln for ln in out.splitlines() if ln.strip()[:2].rstrip(".").isdigit()]
    assert [s.split()[1] for s in steps] == [
        "api.example.com.default.svc.cluster.local.",
        "api.example.com.svc.cluster.local.",
        "api.example.com.cluster.local.",
        "api.example.com.",
    ]
    assert all("NXDOMAIN" in s for s in steps[:3])
    assert code == 1  # the demo has no upstream for external names


def test_resolve_missing_name_exits_1() -> None:
    code, out = _resolve("no-such-svc")
    assert code == 1
    assert "glibc: fails" in out and "musl:  fails" in out


def test_resolve_against_a_running_server(demo: Running) -> None:
    r = CliRunner().invoke(main, ["resolve", "web-0.web", "-n", "shop", "--server",
                                  f"127.0.0.1:{demo.port}"])
    assert r.exit_code == 0, r.output
    assert "web-0.web.shop.svc.cluster.local." in r.output and "10.244.1.30" in r.output


def test_resolve_against_a_dead_server_is_a_clear_error() -> None:
    r = CliRunner().invoke(main, ["resolve", "kubia", "--server", f"127.0.0.1:{free_dns_port()}",
                                  "--timeout", "0.3"])
    assert r.exit_code == 2 and "no answer from" in r.output


def test_module_entry_point_prints_help() -> None:
    r = subprocess.run([*KDNS, "--help"], capture_output=True, text=True, timeout=30,
                       env={**os.environ})
    assert r.returncode == 0 and "serve" in r.stdout and "resolve" in r.stdout


def test_check_reports_autopath_without_pods_verified_wherever_it_is_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "Corefile"
    path.write_text(".:53 {\n  autopath @kubernetes\n  kubernetes cluster.local {\n"
                    "    pods insecure\n  }\n}\n")
    r = CliRunner().invoke(main, ["check", str(path)])
    assert r.exit_code == 2, r.output
    assert f"{path}:2:" in r.output and "pods verified" in r.output
