"""API-server faults end to end: during each fault kdns keeps answering from its last good
view; the API changes meanwhile; once the fault ends, DNS answers match the API within a few
seconds. The fake API server is real HTTP; kdns reads it through a kubeconfig."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

import kdns.k8s.informer as informer
from kdns.server.app import KdnsServer
from tests import fakeapi
from tests.conftest import start_server

CONVERGE = 6.0
"""Seconds after a fault ends within which answers must match the API (back-off cap is 5 s)."""


class Env:
    def __init__(self, api: fakeapi.FakeApiServer, server: KdnsServer) -> None:
        self.api, self.server = api, server
        self.port = server.listeners[0].port

    def address(self, name: str) -> str | None:
        r = dns.query.udp(dns.message.make_query(f"{name}.default.svc.cluster.local.", "A"),
                          "127.0.0.1", port=self.port, timeout=2)
        if r.rcode() == dns.rcode.NXDOMAIN:
            return None
        assert r.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(r.rcode())
        return str(r.answer[0][0].address)

    def converges(self, want: dict[str, str | None], timeout: float = CONVERGE) -> float:
        t0 = time.monotonic()
        while True:
            got = {name: self.address(name) for name in want}
            if got == want:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"after {timeout}s DNS says {got}, the API says {want}")
            time.sleep(0.05)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    class QuickApiSource(informer.ApiSource):
        """The production informer with a short stall detector (production: 330 s)."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs.setdefault("read_timeout", 1.5)
            kwargs.setdefault("watch_timeout", 30.0)
            kwargs.setdefault("page_size", 100)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(informer, "ApiSource", QuickApiSource)
    with fakeapi.FakeApiServer(bookmark_interval=0.3) as api:
        api.add("namespaces", fakeapi.namespace("default"))
        for i in range(250):  # several list pages of 100
            api.add("services", fakeapi.service("default", f"s{i}",
                                                cluster_ip=f"10.96.{i // 250}.{i % 250 + 1}"))
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        server = start_server(f"""
            .:53 {{
                kubernetes cluster.local {{
                    kubeconfig {kubeconfig}
                }}
            }}
            """, tmp_path)
        e = Env(api, server)
        try:
            e.converges({"s0": "10.96.0.1", "s249": "10.96.0.250"})
            yield e
        finally:
            server.stop()


def _changes(api: fakeapi.FakeApiServer) -> dict[str, str | None]:
    """Made while the fault lasts: a create, an update, a delete."""
    api.add("services", fakeapi.service("default", "new", cluster_ip="10.96.9.1"))
    api.update("services", fakeapi.service("default", "s1", cluster_ip="10.96.9.2"))
    api.delete("services", "default", "s2")
    return {"new": "10.96.9.1", "s1": "10.96.9.2", "s2": None, "s3": "10.96.0.4"}


def _still_serving(env: Env) -> None:
    assert env.address("s3") == "10.96.0.4"
    assert env.address("s0") == "10.96.0.1"


FAULTS: dict[str, tuple[Callable[[fakeapi.FakeApiServer], None],
                        Callable[[fakeapi.FakeApiServer], None]]] = {
    "5xx": (lambda a: (a.fail_next(8, 500, b"internal error"), a.drop_watches()),
            lambda a: None),
    "garbage JSON": (lambda a: (a.fail_next(8, 200, b"{this is not json"), a.drop_watches()),
                     lambda a: None),
    "stalled watch": (lambda a: a.stall_watches(True), lambda a: a.stall_watches(False)),
    "repeated 410": (lambda a: (a.compact(), a.drop_watches(), a.compact()),
                     lambda a: (a.compact(), a.drop_watches())),
    "outage (refused)": (lambda a: a.set_outage(True, "refuse"), lambda a: a.set_outage(False)),
    "outage (503)": (lambda a: a.set_outage(True, "503"), lambda a: a.set_outage(False)),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_keeps_last_view_then_converges(env: Env, fault: str) -> None:
    begin, end = FAULTS[fault]
    begin(env.api)
    want = _changes(env.api)
    time.sleep(0.5)
    _still_serving(env)  # the last good view, never NXDOMAIN because the watch broke
    end(env.api)
    took = env.converges(want)
    assert took < CONVERGE


def test_relist_after_410_is_paged_and_applied_as_a_difference(env: Env) -> None:
    pages = env.api.list_pages()
    env.api.stall_watches(True)
    want = _changes(env.api)
    env.api.compact()
    env.api.stall_watches(False)
    env.api.drop_watches()
    env.converges(want)
    assert env.api.list_pages() - pages >= 3  # 250 services in pages of 100


@pytest.mark.slow
def test_api_down_for_40_seconds(env: Env) -> None:
    env.api.set_outage(True, "refuse")
    want = _changes(env.api)
    for _ in range(8):  # 40 s of outage, answering all along
        time.sleep(5)
        _still_serving(env)
    env.api.set_outage(False)
    assert env.converges(want) < CONVERGE
