"""reload: a changed Corefile takes over on the live sockets; a broken one changes nothing."""

from __future__ import annotations

import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.query
import pytest

from kdns.config.parser import parse_corefile
from kdns.plugins.reload.setup import ReloadHandler, setup
from kdns.plugins.setup_context import SetupContext
from tests.conftest import DEMO, start_server
from tests.ports import free_tcp_port

KUBIA = "kubia.default.svc.cluster.local."


def corefile(ttl: int, metrics_port: int, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        .:53 {{
            reload 2s 1s
            prometheus 127.0.0.1:{metrics_port}
            kubernetes cluster.local {{
                manifests {DEMO}
                ttl {ttl}
            }}
            {extra}
        }}
        """)


def until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(0.05)


def test_reload_swaps_config_keeps_sockets_and_survives_a_broken_file(tmp_path: Path) -> None:
    mport = free_tcp_port()
    server = start_server(corefile(5, mport), tmp_path)
    path = tmp_path / "Corefile"
    try:
        port = server.listeners[0].port
        udp_before = server.listeners[0].udp

        def ttl() -> int:
            r = dns.query.udp(dns.message.make_query(KUBIA, "A"), "127.0.0.1", port=port,
                              timeout=2)
            return int(r.answer[0].ttl)

        assert ttl() == 5
        path.write_text(corefile(60, mport))
        until(lambda: ttl() == 60, timeout=6)
        assert server.listeners[0].udp is udp_before  # same socket, no rebind
        # the new chain answers as soon as it is swapped in; the reload finishes just after
        until(lambda: server.reloads == 1, timeout=3)

        path.write_text(corefile(90, mport, extra="frobnicate"))
        until(lambda: server.process.get("reload_failed", 0) == 1, timeout=6)
        assert ttl() == 60  # the running configuration keeps serving
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=3).read()
        assert b"coredns_reload_failed_total 1.0" in metrics
        assert b'coredns_reload_version_info{hash="sha512"' in metrics

        path.write_text(corefile(120, mport))
        until(lambda: ttl() == 120, timeout=6)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("reload 1s", "interval must be at least 2s"),
        ("reload 10s 500ms", "jitter must be at least 1s"),
        ("reload 4s 3s", "jitter must be at most half"),
        ("reload soon", "invalid duration"),
        ("reload 10s 2s 1s", "expected at most INTERVAL and JITTER"),
    ],
)
def test_reload_setup_errors_are_located(line: str, message: str) -> None:
    block = parse_corefile(f".:53 {{\n    {line}\n}}\n", "Corefile")[0]
    with pytest.raises(ValueError) as err:
        setup(block.directives[0], SetupContext(block.keys, Path(".")))
    assert str(err.value).startswith("Corefile:2:") and message in str(err.value)


def test_reload_defaults() -> None:
    block = parse_corefile(".:53 {\n    reload\n}\n", "Corefile")[0]
    h = setup(block.directives[0], SetupContext(block.keys, Path(".")))
    assert isinstance(h, ReloadHandler) and (h.interval, h.jitter) == (30.0, 15.0)


def test_reload_under_load_fails_no_query() -> None:
    """A short run of tools/reload_under_load.py (valid changes and one broken Corefile)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    r = subprocess.run([sys.executable, str(ROOT / "tools" / "reload_under_load.py"),
                        "--rate", "500", "--changes", "1"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "failed: 0," in r.stdout and "broken Corefile kept old config: True" in r.stdout
