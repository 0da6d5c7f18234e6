"""ApiSource against the fake API server over real HTTP: paging, events, bookmarks, 410 relists,
dropped and stalled streams, outages, bad answers, malformed objects, auth and stop()."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kdns.k8s.client import ConnectionConfig, build_api_client
from kdns.k8s.informer import ApiSource
from kdns.k8s.source import RESOURCES, Key, ResourceSpec
from tests import fakeapi
from tests.fakeapi import FakeApiServer

FAST = {"backoff_initial": 0.02, "backoff_max": 0.2, "connect_timeout": 2.0}


class Sink:
    """A thread-safe recording sink that applies calls like the real view builder."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, dict[Key, Any]] = {kind: {} for kind in RESOURCES}
        self.calls: list[tuple[Any, ...]] = []
        self.stale: dict[str, bool] = {}
        self.reasons: list[str] = []

    def begin_list(self, kind: str) -> None:
        with self.lock:
            self.calls.append(("begin", kind))

    def upsert(self, kind: str, obj: Any) -> None:
        with self.lock:
            self.calls.append(("upsert", kind, obj.key))
            self.data[kind][obj.key] = obj

    def delete(self, kind: str, key: Key) -> None:
        with self.lock:
            self.calls.append(("delete", kind, key))
            self.data[kind].pop(key, None)

    def end_list(self, kind: str, seen: set[Key]) -> None:
        with self.lock:
            self.calls.append(("end", kind, frozenset(seen)))
            for key in set(self.data[kind]) - seen:
                del self.data[kind][key]

    def set_stale(self, kind: str, stale: bool, reason: str = "") -> None:
        with self.lock:
            self.calls.append(("stale", kind, stale))
            self.stale[kind] = stale
            if reason:
                self.reasons.append(reason)

    def names(self, kind: str = "services") -> set[str]:
        with self.lock:
            return {name for _, name in self.data[kind]}

    def get(self, kind: str, ns: str, name: str) -> Any:
        with self.lock:
            return self.data[kind].get((ns, name))

    def count(self, what: str, kind: str = "services") -> int:
        with self.lock:
            return sum(1 for c in self.calls if c[0] == what and c[1] == kind)


def wait_for(cond: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.005)


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.2) as server:
        yield server


@pytest.fixture
def sources() -> Iterator[list[ApiSource]]:
    started: list[ApiSource] = []
    yield started
    for src in started:
        src.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("kdns-informer")]


def svc(name: str, ip: str = "10.0.0.1", ns: str = "default", **kw: Any) -> dict[str, Any]:
    return fakeapi.service(ns, name, cluster_ip=ip, ports=[("http", 80, "TCP")], **kw)


def start(api: FakeApiServer, sources: list[ApiSource], sink: Sink,
          kinds: tuple[str, ...] = ("services",), conn: ConnectionConfig | None = None,
          specs: list[ResourceSpec] | None = None, wait: bool = True,
          **kw: Any) -> ApiSource:
    src = ApiSource(conn or ConnectionConfig(endpoint=api.url),
                    specs or [ResourceSpec(k) for k in kinds], sink, **{**FAST, **kw})
    sources.append(src)
    src.start()
    if wait:
        wait_for(src.synced, what="synced")
    return src


def test_initial_list_paginates_and_synced_waits_for_the_last_page(
        api: FakeApiServer, sources: list[ApiSource]) -> None:
    api.bulk_load("services", [svc(f"s{i:02}", f"10.0.0.{i + 1}") for i in range(25)])
    gate = threading.Event()
    api.on_list_page = lambda kind, page: gate.wait(5) if page == 2 else None
    sink = Sink()
    src = start(api, sources, sink, page_size=10, wait=False)
    wait_for(lambda: sink.count("upsert") == 20, what="two pages upserted")
    assert not src.synced()  # the third page is held back by the hook
    assert sink.count("begin") == 1 and sink.count("end") == 0
    gate.set()
    wait_for(src.synced)
    assert sink.names() == {f"s{i:02}" for i in range(25)}
    assert api.list_pages("services") == 3
    pages = [r for r in api.requests if r.kind == "services" and not r.watch]
    assert [r.params.get("limit") for r in pages] == ["10"] * 3
    assert "continue" not in pages[0].params and all("continue" in r.params for r in pages[1:])
    assert sink.count("end") == 1 and sink.count("stale") == 0


def test_all_kinds_with_label_selector(api: FakeApiServer, sources: list[ApiSource]) -> None:
    api.add("services", svc("web", labels={"app": "web"}))
    api.add("services", svc("db", "10.0.0.2", labels={"app": "db"}))
    api.add("endpointslices", fakeapi.endpoint_slice(
        "default", "web-1", "web", endpoints=["10.1.0.1", fakeapi.endpoint("10.1.0.2", ready=False)],
        ports=[("http", 8080, "TCP")]))
    api.add("namespaces", fakeapi.namespace("default", labels={"team": "dns"}))
    api.add("namespaces", fakeapi.namespace("other"))
    api.add("pods", fakeapi.pod("default", "web-0", "10.1.0.1"))
    sink = Sink()
    specs = [ResourceSpec("services", label_selector="app in (web)"),
             ResourceSpec("endpointslices"),
             ResourceSpec("namespaces", label_selector="team=dns"),
             ResourceSpec("pods", field_selector="status.phase=Running")]
    src = start(api, sources, sink, specs=specs)
    assert sink.names() == {"web"}
    assert sink.names("namespaces") == {"default"}
    assert sink.get("endpointslices", "default", "web-1").endpoints[1].ready is False
    assert sink.get("pods", "default", "web-0").ips == ("10.1.0.1",)
    svc_list = next(r for r in api.requests if r.kind == "services")
    assert svc_list.params["labelSelector"] == "app in (web)"
    pod_list = next(r for r in api.requests if r.kind == "pods")
    assert pod_list.params["fieldSelector"] == "status.phase=Running"
    # A relabel out of the selection reaches the sink as a delete.
    api.update("services", svc("web", labels={"app": "gone"}))
    wait_for(lambda: sink.names() == set(), timeout=1.0)
    assert "Kubernetes API via endpoint http://127.0.0.1:" in src.describe()


def test_creates_updates_deletes_within_a_second(api: FakeApiServer,
                                                 sources: list[ApiSource]) -> None:
    api.add("services", svc("kubia", "10.98.237.175"))
    sink = Sink()
    start(api, sources, sink)
    wait_for(lambda: api.open_watches() == 1)
    api.add("services", svc("new", "10.0.0.9"))
    wait_for(lambda: "new" in sink.names(), timeout=1.0)
    api.update("services", svc("kubia", "10.98.0.1"))
    wait_for(lambda: sink.get("services", "default", "kubia").cluster_ips == ("10.98.0.1",),
             timeout=1.0)
    api.delete("services", "default", "kubia")
    wait_for(lambda: sink.names() == {"new"}, timeout=1.0)
    assert ("delete", "services", ("default", "kubia")) in sink.calls
    assert api.list_pages() == 1  # events, not relists


def test_bookmarks_advance_the_resource_version(api: FakeApiServer,
                                                sources: list[ApiSource]) -> None:
    api.add("services", svc("kubia"))
    sink = Sink()
    start(api, sources, sink)
    listed_rv = api.resource_version
    for i in range(3):  # other kinds move the global resourceVersion
        api.add("pods", fakeapi.pod("default", f"p{i}", f"10.1.0.{i + 1}"))
    time.sleep(0.5)  # > 2 bookmark intervals of the fake
    api.drop_watches()
    wait_for(lambda: api.watches_opened("services") == 2)
    watches = [r for r in api.requests if r.kind == "services" and r.watch]
    assert watches[0].params["resourceVersion"] == str(listed_rv)
    assert watches[0].params["allowWatchBookmarks"] == "true"
    assert int(watches[1].params["resourceVersion"]) == api.resource_version > listed_rv


@pytest.mark.parametrize("gone_mode", ["http", "event"])
def test_410_on_rewatch_relists_and_converges(gone_mode: str, api: FakeApiServer,
                                              sources: list[ApiSource]) -> None:
    api.gone_mode = gone_mode
    api.bulk_load("services", [svc(f"s{i}", f"10.0.0.{i + 1}") for i in range(5)])
    sink = Sink()
    start(api, sources, sink, page_size=2)
    # While the watch is stalled, objects change and the history is compacted away.
    api.stall_watches(True)
    api.delete("services", "default", "s0")
    api.update("services", svc("s1", "10.0.1.1"))
    api.add("services", svc("s9", "10.0.0.99"))
    api.compact()
    api.stall_watches(False)
    api.drop_watches()
    wait_for(lambda: sink.names() == {"s1", "s2", "s3", "s4", "s9"}, what="converged")
    assert sink.get("services", "default", "s1").cluster_ips == ("10.0.1.1",)
    assert sink.count("begin") == 2 and sink.count("end") == 2
    assert api.list_pages("services") == 6  # 3 + 3 pages
    assert sink.count("stale") == 0  # 410 is routine, not an outage


def test_410_inside_an_open_stream_relists(api: FakeApiServer, sources: list[ApiSource]) -> None:
    api.add("services", svc("a"))
    api.add("services", svc("b"))
    sink = Sink()
    start(api, sources, sink)
    wait_for(lambda: api.open_watches() == 1)
    api.stall_watches(True)
    api.delete("services", "default", "a")
    api.compact()
    api.stall_watches(False)  # the open stream now finds it missed compacted events
    wait_for(lambda: sink.names() == {"b"})
    assert sink.count("begin") == 2
    assert ("delete", "services", ("default", "a")) not in sink.calls  # the relist removed it


def test_continue_token_expiring_mid_list_restarts_the_list(
        api: FakeApiServer, sources: list[ApiSource]) -> None:
    api.bulk_load("services", [svc(f"s{i}") for i in range(6)])
    compacted = []

    def hook(kind: str, page: int) -> None:
        if page == 1 and not compacted:
            compacted.append(True)
            api.delete("services", "default", "s5")
            api.compact()  # the continue token of the list in progress is now 410

    api.on_list_page = hook
    sink = Sink()
    start(api, sources, sink, page_size=2)
    assert sink.names() == {f"s{i}" for i in range(5)}
    assert sink.count("begin") == 1 and sink.count("end") == 1
    assert api.count("services", watch=False, status=410) == 1


def test_dropped_streams_resume_without_relist(api: FakeApiServer,
                                               sources: list[ApiSource]) -> None:
    api.add("services", svc("a"))
    sink = Sink()
    start(api, sources, sink, kinds=("services", "pods"))
    wait_for(lambda: api.open_watches() == 2)
    for round_ in range(3):
        assert api.drop_watches() == 2
        api.add("services", svc(f"after{round_}"))
        api.add("pods", fakeapi.pod("default", f"p{round_}", "10.1.0.1"))
        wait_for(lambda r=round_: f"after{r}" in sink.names() and f"p{r}" in sink.names("pods"))
    assert api.list_pages() == 2
    assert api.watches_opened() >= 8
    assert sink.count("stale") == 0


def test_normal_stream_end_rewatches_from_last_version(api: FakeApiServer,
                                                       sources: list[ApiSource]) -> None:
    sink = Sink()
    start(api, sources, sink, watch_timeout=0.3)
    wait_for(lambda: api.watches_opened("services") >= 3, what="re-watches")
    api.add("services", svc("late"))
    wait_for(lambda: "late" in sink.names(), timeout=1.0)
    watches = [r for r in api.requests if r.kind == "services" and r.watch]
    assert all(r.params["timeoutSeconds"] == "1" for r in watches)
    assert api.list_pages() == 1 and sink.count("stale") == 0


@pytest.mark.parametrize("mode", ["refuse", "close", "503"])
def test_outage_keeps_data_marks_stale_and_recovers(
        mode: str, api: FakeApiServer, sources: list[ApiSource],
        caplog: pytest.LogCaptureFixture) -> None:
    api.add("services", svc("kubia"))
    sink = Sink()
    start(api, sources, sink)
    wait_for(lambda: api.open_watches() == 1)
    with caplog.at_level(logging.INFO, logger="kdns.k8s"):
        api.set_outage(True, mode=mode)
        wait_for(lambda: sink.stale.get("services") is True, what="stale")
        time.sleep(0.3)  # several failed attempts
        assert sink.names() == {"kubia"}  # nothing dropped while disconnected
        api.set_outage(False)
        api.add("services", svc("after"))
        wait_for(lambda: sink.stale.get("services") is False, what="recovered")
        wait_for(lambda: "after" in sink.names())
    assert sink.count("stale") == 2  # one transition each way
    stale_logs = [r for r in caplog.records if "stale" in r.getMessage()]
    assert len(stale_logs) == 1 and stale_logs[0].levelno == logging.WARNING
    assert any("recovered" in r.getMessage() for r in caplog.records)
    assert api.list_pages() == 1  # resumed the watch from its resourceVersion


def test_outage_before_first_list(api: FakeApiServer, sources: list[ApiSource]) -> None:
    api.set_outage(True)
    sink = Sink()
    src = start(api, sources, sink, wait=False)
    wait_for(lambda: sink.stale.get("services") is True)
    assert not src.synced()
    api.add("services", svc("kubia"))
    api.set_outage(False)
    wait_for(src.synced)
    assert sink.names() == {"kubia"} and sink.stale["services"] is False


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (500, b"garbage", "HTTP 500: garbage"),
        (503, b'{"kind":"Status","message":"etcd is sad","code":503}', "HTTP 503: etcd is sad"),
        (200, b"{not json", "not JSON"),
        (200, b'{"items": []}', "not a List"),
        (200, b'{"metadata": {}, "items": []}', "no metadata.resourceVersion"),
    ],
)
def test_bad_list_answers_are_retried(status: int, body: bytes, reason: str,
                                      api: FakeApiServer, sources: list[ApiSource]) -> None:
    api.add("services", svc("kubia"))
    api.fail_next(2, status=status, body=body, kind="services")
    sink = Sink()
    start(api, sources, sink)
    assert sink.names() == {"kubia"}
    assert sink.stale == {"services": False}
    assert any(reason in r for r in sink.reasons), sink.reasons


def test_garbage_in_a_watch_stream_is_a_failure_then_resumes(
        api: FakeApiServer, sources: list[ApiSource]) -> None:
    sink = Sink()
    start(api, sources, sink)
    api.fail_next(1, status=200, body=b"this is not json\n", kind="services", watch=True)
    api.drop_watches()
    wait_for(lambda: sink.stale.get("services") is False)
    api.add("services", svc("later"))
    wait_for(lambda: "later" in sink.names())
    assert any("not JSON" in r for r in sink.reasons)
    assert api.list_pages() == 1


def test_watch_error_status_is_a_failure(api: FakeApiServer, sources: list[ApiSource]) -> None:
    sink = Sink()
    start(api, sources, sink)
    api.fail_next(1, status=500, body=b'{"kind":"Status","message":"boom"}', watch=True)
    api.drop_watches()
    wait_for(lambda: sink.stale.get("services") is False)
    assert sink.reasons == ["HTTP 500: boom"]


def test_malformed_objects_are_skipped_and_survive_relists(
        api: FakeApiServer, sources: list[ApiSource], caplog: pytest.LogCaptureFixture) -> None:
    api.add("services", svc("good"))
    api.add("services", svc("kubia", "10.98.237.175"))
    api.add("services", svc("broken", "not-an-ip", ns="shop"))
    sink = Sink()
    with caplog.at_level(logging.WARNING, logger="kdns.k8s"):
        start(api, sources, sink)
        assert sink.names() == {"good", "kubia"}
        # A bad update keeps the previous good version...
        api.update("services", svc("kubia", "999.1.1.1"))
        api.add("services", svc("marker"))
        wait_for(lambda: "marker" in sink.names())
        assert sink.get("services", "default", "kubia").cluster_ips == ("10.98.237.175",)
        # ...also across a relist, where its key still counts as seen.
        api.stall_watches(True)
        api.add("services", svc("marker2"))
        api.compact()
        api.stall_watches(False)
        wait_for(lambda: sink.count("end") == 2)
    assert sink.names() == {"good", "kubia", "marker", "marker2"}
    assert ("default", "kubia") in next(c[2] for c in reversed(sink.calls) if c[0] == "end")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("services shop/broken" in m and "not an IP address" in m for m in warnings)
    assert any("services default/kubia" in m for m in warnings)
    assert sink.count("stale") == 0


def test_stalled_stream_is_broken_after_read_timeout(api: FakeApiServer,
                                                     sources: list[ApiSource]) -> None:
    sink = Sink()
    start(api, sources, sink, read_timeout=0.3)
    wait_for(lambda: api.open_watches() == 1)
    api.stall_watches(True)
    opened = api.watches_opened("services")
    wait_for(lambda: api.watches_opened("services") >= opened + 1, what="re-watch after stall")
    api.stall_watches(False)
    api.add("services", svc("after"))
    wait_for(lambda: "after" in sink.names())
    assert api.list_pages() == 1


def test_kubeconfig_bearer_token(api: FakeApiServer, sources: list[ApiSource],
                                 tmp_path: Path) -> None:
    api.required_token = "s3cret-token"
    api.add("services", svc("kubia"))
    path = api.write_kubeconfig(str(tmp_path / "kubeconfig"), token="s3cret-token")
    sink = Sink()
    src = start(api, sources, sink, conn=ConnectionConfig(kubeconfig=path, context="fake"))
    assert sink.names() == {"kubia"}
    assert all(r.authorization == "Bearer s3cret-token" for r in api.requests)
    assert "kubeconfig" in src.describe() and "s3cret" not in src.describe()


def test_wrong_token_gets_401_marks_stale_and_never_logs_the_token(
        api: FakeApiServer, sources: list[ApiSource], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    api.required_token = "right"
    path = api.write_kubeconfig(str(tmp_path / "kubeconfig"), token="wrong-token-value")
    sink = Sink()
    with caplog.at_level(logging.DEBUG, logger="kdns.k8s"):
        src = start(api, sources, sink, conn=ConnectionConfig(kubeconfig=path), wait=False)
        wait_for(lambda: api.count("services", status=401) >= 2)
    assert not src.synced()
    assert sink.stale == {"services": True}
    assert "HTTP 401" in sink.reasons[0]
    assert not any("wrong-token-value" in r.getMessage() for r in caplog.records)


def test_missing_kubeconfig_is_retried_not_raised(sources: list[ApiSource],
                                                  tmp_path: Path) -> None:
    sink = Sink()
    src = ApiSource(ConnectionConfig(kubeconfig=str(tmp_path / "nope")),
                    [ResourceSpec("services")], sink, **FAST)  # constructing does no I/O
    sources.append(src)
    src.start()
    wait_for(lambda: sink.stale.get("services") is True)
    assert not src.synced()


def test_in_cluster_token_rotation(api: FakeApiServer, tmp_path: Path) -> None:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("first\n")
    ca.write_text("not used over http\n")
    client = build_api_client(
        ConnectionConfig(), token_file=str(token), cert_file=str(ca),
        environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1",
                 "KUBERNETES_SERVICE_PORT": str(api.url.rsplit(":", 1)[1])})
    try:
        assert client.configuration.host.startswith("https://127.0.0.1:")
        client.configuration.host = api.url  # the fake speaks plain HTTP

        def list_status() -> int:
            method, url, headers, _, _ = client.param_serialize(
                "GET", "/api/v1/services", query_params=[], auth_settings=["BearerToken"])
            resp = client.call_api(method, url, header_params=headers, _request_timeout=5)
            resp.read()
            return int(resp.status)

        api.required_token = "first"
        assert list_status() == 200
        token.write_text("second-rotated\n")  # the kubelet rotates the token
        api.required_token = "second-rotated"
        assert list_status() == 200
        assert api.requests[-1].authorization == "Bearer second-rotated"
    finally:
        client.close()


@pytest.mark.parametrize("state", ["watching", "stalled", "backing-off"])
def test_stop_is_prompt(state: str, api: FakeApiServer, sources: list[ApiSource]) -> None:
    sink = Sink()
    src = start(api, sources, sink, kinds=tuple(RESOURCES),
                backoff_initial=5.0, backoff_max=5.0)
    wait_for(lambda: api.open_watches() == len(RESOURCES))
    if state == "stalled":
        api.stall_watches(True)
    elif state == "backing-off":
        api.set_outage(True)
        wait_for(lambda: all(sink.stale.get(k) for k in RESOURCES))
    t0 = time.monotonic()
    src.stop()
    assert time.monotonic() - t0 < 1.0
    assert not [t for t in threading.enumerate() if t.name.startswith("kdns-informer")]
    wait_for(lambda: api.open_watches() == 0, what="streams closed")
    src.stop()  # idempotent
