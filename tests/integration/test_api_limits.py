"""apiserver_qps / apiserver_burst / apiserver_max_inflight against the fake API server over
real HTTP: the requests the server sees, counted per interval and by concurrency."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest

from kdns.k8s.client import ConnectionConfig
from kdns.k8s.informer import ApiSource
from kdns.k8s.source import ResourceSpec
from kdns.k8s.throttle import ApiLimits
from kdns.server.app import KdnsServer
from tests import fakeapi
from tests.conftest import start_server
from tests.integration.test_informer import FAST, Sink

KUBIA = "kubia.default.svc.cluster.local."


def wait_for(cond: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def over_budget(times: list[float], qps: float, burst: int) -> list[int]:
    """Indexes of requests that came sooner than a token bucket allows: by ``t`` seconds after
    the first request at most ``burst + qps * t`` requests may have arrived (one request of
    slack for the gap between the client's send and the server's stamp)."""
    t0 = times[0]
    return [i for i, t in enumerate(times) if i + 1 > burst + qps * (t - t0) + 1]


def test_list_pages_and_watches_follow_the_token_bucket() -> None:
    qps, burst, n = 10.0, 3, 15
    with fakeapi.FakeApiServer(bookmark_interval=0.2) as api:
        api.bulk_load("services", [fakeapi.service("default", f"s{i:02}",
                                                   cluster_ip=f"10.0.0.{i + 1}")
                                   for i in range(n)])
        sink = Sink()
        src = ApiSource(ConnectionConfig(endpoint=api.url), [ResourceSpec("services")], sink,
                        page_size=1, limits=ApiLimits(qps=qps, burst=burst), **FAST)
        src.start()
        try:
            wait_for(lambda: api.watches_opened("services") == 1)
        finally:
            src.stop()
        times = [r.at for r in api.requests]
    assert len(times) == n + 1  # one request per one-object page, then the watch
    assert over_budget(times, qps, burst) == []
    # (n + 1 - burst) requests had to wait for a token each: 13 / 10 s at least.
    assert times[-1] - times[0] >= (n + 1 - burst) / qps - 0.05
    assert src.gate.waited > 0


def _corefile(api: fakeapi.FakeApiServer, tmp: Path, options: str) -> str:
    return f"""
    .:53 {{
        kubernetes cluster.local {{
            endpoint {api.url}
            startup_timeout 0s
            {options}
        }}
    }}
    """


@pytest.fixture
def api() -> Iterator[fakeapi.FakeApiServer]:
    with fakeapi.FakeApiServer(bookmark_interval=0.2) as server:
        server.add("namespaces", fakeapi.namespace("default"))
        server.add("services", fakeapi.service("default", "kubia", cluster_ip="10.98.237.175",
                                               ports=[("http", 80, "TCP")]))
        yield server


def _serve_until_answered(api: fakeapi.FakeApiServer, tmp: Path, options: str) -> KdnsServer:
    server = start_server(_corefile(api, tmp, options), tmp)
    port = server.listeners[0].port

    def answered() -> bool:
        r = dns.query.udp(dns.message.make_query(KUBIA, "A"), "127.0.0.1", port=port, timeout=2)
        return r.rcode() == 0 and bool(r.answer)

    try:
        wait_for(answered)
        wait_for(lambda: api.watches_opened() == 3)  # services, endpointslices, namespaces
    except BaseException:
        server.stop()
        raise
    return server


def test_corefile_qps_and_burst_space_the_informers_requests(
        api: fakeapi.FakeApiServer, tmp_path: Path) -> None:
    server = _serve_until_answered(api, tmp_path, "apiserver_qps 4\n apiserver_burst 1")
    server.stop()
    times = [r.at for r in api.requests]
    assert len(times) == 6  # three lists, three watches, one connection's worth of limits
    assert over_budget(times, 4.0, 1) == []
    assert times[-1] - times[0] >= 5 / 4.0 - 0.05


@pytest.mark.parametrize("options,peak", [("apiserver_max_inflight 1", 1), ("", None)],
                         ids=["capped", "uncapped"])
def test_corefile_max_inflight_caps_concurrent_requests(
        api: fakeapi.FakeApiServer, tmp_path: Path, options: str, peak: int | None) -> None:
    # Every answer starts 0.3 s late, so the three informers' first lists overlap unless the
    # client holds them back.
    api.response_delay = 0.3
    server = _serve_until_answered(api, tmp_path, options)
    server.stop()
    if peak is not None:
        assert api.peak_waiting == peak
    else:
        assert api.peak_waiting >= 2  # the control: without the option they do overlap
