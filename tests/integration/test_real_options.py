"""Options real Corefiles use, over real sockets: ``cache { denial 0 }``, ``ready { monitor }``,
``prometheus { runtime_metrics }`` and ``loadbalance { prefer }``.

Everything listens on 127.0.0.1; the upstream is the counting dnslib responder of the cache tests.
"""

from __future__ import annotations

import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import pytest

from tests.conftest import DEMO, Running, start_server
from tests.integration.test_cache_integration import Upstream
from tests.integration.test_rewrite_loadbalance import POOL, POOL_YAML


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


def serve(corefile: str, tmp_path: Path) -> Iterator[Running]:
    server = start_server(corefile, tmp_path)
    try:
        yield Running(server)
    finally:
        server.stop()


# -- cache: a zero capacity stores nothing of that kind ------------------------------------------


def test_cache_denial_zero_caches_successes_but_not_denials(upstream: Upstream,
                                                             tmp_path: Path) -> None:
    corefile = (f".:53 {{\n    cache 30 {{\n        denial 0\n    }}\n"
                f"    forward . 127.0.0.1:{upstream.port}\n}}\n")
    for k in serve(corefile, tmp_path):
        for _ in range(3):
            assert k.udp("nx.example.").rcode() == dns.rcode.NXDOMAIN
            assert k.udp("www.example.").answer[0][0].address == "192.0.2.7"
        assert upstream.count("nx.example.") == 3  # every denial went upstream
        assert upstream.count("www.example.") == 1  # the success was cached


def test_cache_success_zero_caches_denials_only(upstream: Upstream, tmp_path: Path) -> None:
    corefile = (f".:53 {{\n    cache {{\n        success 0\n    }}\n"
                f"    forward . 127.0.0.1:{upstream.port}\n}}\n")
    for k in serve(corefile, tmp_path):
        for _ in range(3):
            k.udp("nx.example.")
            k.udp("www.example.")
        assert (upstream.count("nx.example."), upstream.count("www.example.")) == (1, 3)


# -- ready: until-ready stops asking a plugin once it was ready; continuously keeps asking ---------


class Flip:
    """A readiness source the test turns on and off (a plugin losing its data source)."""

    name = "flip"

    def __init__(self) -> None:
        self.ok = False

    def ready(self) -> bool:
        return self.ok


@pytest.mark.parametrize(("monitor", "after_loss"), [
    ("", 200), ("monitor until-ready", 200), ("monitor continuously", 503)])
def test_ready_monitor_modes(monitor: str, after_loss: int, tmp_path: Path) -> None:
    rport = free_port()
    corefile = (f".:53 {{\n    ready 127.0.0.1:{rport} {{\n        {monitor}\n    }}\n"
                f"    kubernetes cluster.local {{\n        manifests {DEMO}\n    }}\n}}\n")
    for k in serve(corefile, tmp_path):
        flip = Flip()
        k.server.process["ready_reporters"].append(flip)
        assert get(rport, "/ready") == (503, b"flip")
        flip.ok = True
        assert get(rport, "/ready") == (200, b"OK")
        flip.ok = False
        assert get(rport, "/ready")[0] == after_loss
        assert k.udp("kubia.default.svc.cluster.local.").answer[0][0].address == "10.98.237.175"


# -- prometheus: runtime_metrics adds the process and GC families ------------------------------------


@pytest.mark.parametrize("runtime", [False, True])
def test_prometheus_runtime_metrics(runtime: bool, tmp_path: Path) -> None:
    mport = free_port()
    opt = " {\n        runtime_metrics\n    }" if runtime else ""
    corefile = (f".:53 {{\n    prometheus 127.0.0.1:{mport}{opt}\n    hosts {{\n"
                f"        192.0.2.1 a.example\n    }}\n}}\n")
    for k in serve(corefile, tmp_path):
        assert k.udp("a.example.").answer[0][0].address == "192.0.2.1"
        status, body = get(mport, "/metrics")
        assert status == 200
        assert b"coredns_dns_requests_total{" in body
        assert (b"\nprocess_resident_memory_bytes " in body) is runtime
        assert (b"\npython_gc_collections_total{" in body) is runtime
        assert body.count(b"# TYPE coredns_dns_requests_total ") == 1


# -- loadbalance prefer: preferred subnets lead, in the order listed ------------------------------


def test_loadbalance_prefer_puts_preferred_subnets_first(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    shutil.copytree(DEMO, manifests, ignore=shutil.ignore_patterns("Corefile", "*.md"))
    (manifests / "pool.yaml").write_text(POOL_YAML)
    corefile = f"""\
        .:53 {{
            loadbalance round_robin {{
                prefer 10.244.7.4/32
                prefer 10.244.7.2/31 192.0.2.0/24
            }}
            kubernetes cluster.local {{
                manifests {manifests}
            }}
        }}
        """
    for k in serve(corefile, tmp_path):
        orders = set()
        for _ in range(12):  # the fast path replays a cycle of stored orders: walk it
            got = [rr.address for rr in k.udp("pool.default.svc.cluster.local.").answer[0]]
            assert sorted(got) == sorted(POOL)
            assert got[0] == "10.244.7.4"
            assert set(got[1:3]) == {"10.244.7.2", "10.244.7.3"}
            orders.add(tuple(got))
        assert len(orders) > 1  # still balanced within each group
