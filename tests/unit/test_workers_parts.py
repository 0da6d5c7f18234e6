"""The parts of ``--workers N`` that need no process: the fan-out of one source to many view
builders, the framing between processes, the metrics merge, and ``--workers auto``."""

from __future__ import annotations

import pickle
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from kdns.k8s.fanout import Op, SharedSource, apply_ops
from kdns.k8s.objects import Port, Service
from kdns.k8s.source import Key, ResourceSpec, Sink
from kdns.server import ipc
from kdns.server.supervisor import cgroup_cpu_limit, cumulative, default_workers, merge


def svc(name: str, ip: str = "10.0.0.1") -> Service:
    return Service("default", name, "ClusterIP", (ip,), False, "", (Port("http", "TCP", 80),),
                   False)


class StateSink:
    """A sink that keeps what a view builder would: objects by kind, synced kinds, staleness."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[Key, Any]] = {}
        self.synced: set[str] = set()
        self.stale: set[str] = set()
        self.listing: set[str] = set()

    def begin_list(self, kind: str) -> None:
        self.listing.add(kind)

    def upsert(self, kind: str, obj: Any) -> None:
        self.objects.setdefault(kind, {})[(obj.namespace, obj.name)] = obj

    def delete(self, kind: str, key: Key) -> None:
        self.objects.setdefault(kind, {}).pop(key, None)

    def end_list(self, kind: str, seen: set[Key]) -> None:
        objs = self.objects.setdefault(kind, {})
        for k in [k for k in objs if k not in seen]:
            del objs[k]
        self.listing.discard(kind)
        self.synced.add(kind)

    def set_stale(self, kind: str, stale: bool, reason: str = "") -> None:
        (self.stale.add if stale else self.stale.discard)(kind)


class NullSource:
    def __init__(self, specs: list[ResourceSpec], sink: Sink) -> None:
        self.sink = sink

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def synced(self) -> bool:
        return True

    def describe(self) -> str:
        return "nothing"


class Link:
    """One worker's end: decodes frames as the worker does and applies them to its sinks."""

    def __init__(self) -> None:
        self.frames = 0
        self.subs: dict[int, tuple[StateSink, int | None]] = {}
        self.lock = threading.Lock()

    def add(self, sub: int) -> StateSink:
        sink = StateSink()
        self.subs[sub] = (sink, None)
        return sink

    def send(self, frame: bytes) -> None:
        with self.lock:
            self.frames += 1
            msg = pickle.loads(frame[ipc.HEADER.size:])
            if msg[0] == "replay":
                sink, _ = self.subs[msg[1]]
                apply_ops(sink, msg[3])
                self.subs[msg[1]] = (sink, msg[2])
            else:
                for sink, sid in self.subs.values():
                    if sid == msg[1]:
                        apply_ops(sink, msg[2])


def shared() -> SharedSource:
    return SharedSource("k", NullSource, [], frame=lambda ops: ipc.encode(("ops", 7, ops)))


def subscribe(src: SharedSource, link: Link, sub: int) -> StateSink:
    sink = link.add(sub)
    src.subscribe(link, sub, link.send, lambda ops: ipc.encode(("replay", sub, 7, ops)))
    return sink


def settle(src: SharedSource) -> None:
    time.sleep(0.05)


def test_a_late_subscriber_gets_the_state_then_the_changes() -> None:
    src = shared()
    src.start()
    try:
        src.begin_list("services")
        for n in ("a", "b", "c"):
            src.upsert("services", svc(n))
        src.end_list("services", {("default", n) for n in ("a", "b", "c")})
        src.delete("services", ("default", "b"))
        src.set_stale("services", True, "api down")
        link = Link()
        sink = subscribe(src, link, 1)
        assert set(sink.objects["services"]) == {("default", "a"), ("default", "c")}
        assert sink.synced == {"services"} and sink.stale == {"services"}
        src.set_stale("services", False)
        src.upsert("services", svc("d", "10.0.0.4"))
        settle(src)
        assert ("default", "d") in sink.objects["services"] and sink.stale == set()
    finally:
        src.stop()


def test_a_subscriber_joining_mid_list_is_synced_by_the_sources_end_list() -> None:
    src = shared()
    src.start()
    try:
        src.begin_list("services")
        src.upsert("services", svc("old"))
        link = Link()
        sink = subscribe(src, link, 1)
        assert sink.synced == set()  # no end_list in the replay: the list is not done
        src.upsert("services", svc("new"))
        src.end_list("services", {("default", "new")})
        settle(src)
        assert set(sink.objects["services"]) == {("default", "new")}
        assert sink.synced == {"services"}
    finally:
        src.stop()


def test_live_changes_go_once_per_link_whatever_the_subscribers() -> None:
    src = shared()
    src.start()
    try:
        link = Link()
        s1, s2 = subscribe(src, link, 1), subscribe(src, link, 2)
        before = link.frames
        src.upsert("services", svc("x"))
        settle(src)
        assert link.frames == before + 1
        assert ("default", "x") in s1.objects["services"]
        assert ("default", "x") in s2.objects["services"]
        src.unsubscribe(link, 1)
        assert src.subscribers == 1
        src.unsubscribe(link)
        assert src.subscribers == 0
    finally:
        src.stop()


def test_every_subscriber_converges_under_concurrent_churn() -> None:
    """Subscribers join while a writer churns: each must end with exactly the source's state
    (a replay racing a live batch would lose or resurrect objects)."""
    src = shared()
    src.start()
    rng = random.Random(4)
    truth: dict[Key, Service] = {}
    stop = threading.Event()

    def churn() -> None:
        src.begin_list("services")
        src.end_list("services", set())
        i = 0
        while not stop.is_set() and i < 4000:
            name = f"s{rng.randrange(300)}"
            if rng.random() < 0.3:
                src.delete("services", ("default", name))
                truth.pop(("default", name), None)
            else:
                obj = svc(name, f"10.1.{i // 250}.{i % 250}")
                src.upsert("services", obj)
                truth[("default", name)] = obj
            i += 1

    writer = threading.Thread(target=churn)
    links = [Link() for _ in range(6)]
    sinks = []
    try:
        writer.start()
        for n, link in enumerate(links):
            time.sleep(0.002)
            sinks.append(subscribe(src, link, n))
        writer.join(20)
        settle(src)
        time.sleep(0.1)
        for sink in sinks:
            assert sink.objects["services"] == truth
            assert sink.synced == {"services"}
    finally:
        stop.set()
        src.stop()


def test_apply_ops_drives_any_sink() -> None:
    sink = StateSink()
    ops: list[Op] = [("b", "services"), ("u", "services", svc("a")),
                     ("e", "services", {("default", "a")}), ("s", "services", True, "x"),
                     ("d", "services", ("default", "a"))]
    apply_ops(sink, ops)
    assert sink.objects["services"] == {} and sink.stale == {"services"}


# -- ipc ----------------------------------------------------------------------------------------


def test_channel_round_trip_and_end_of_stream() -> None:
    a, b = socket.socketpair()
    left, right = ipc.Channel(a, "left"), ipc.Channel(b, "right")
    big = {"blob": b"x" * (3 << 20), "svc": svc("a")}
    assert left.send(("hello", 1)) and left.send(big)
    assert right.recv() == ("hello", 1)
    assert right.recv() == big
    left.close()
    assert right.recv() is None
    assert not left.send("after close")
    right.close()


def test_channel_refuses_an_oversized_frame() -> None:
    a, b = socket.socketpair()
    right = ipc.Channel(b, "right")
    a.sendall(ipc.HEADER.pack(ipc.MAX_FRAME + 1))
    assert right.recv() is None
    assert right.closed
    a.close()


def test_channel_gives_up_on_a_peer_that_does_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ipc, "MAX_QUEUED", 1 << 20)
    a, b = socket.socketpair()
    left = ipc.Channel(a, "left")
    frame = ipc.encode(b"y" * (256 << 10))
    sent = 0
    while left.send_frame(frame) and sent < 200:  # the socket buffer fills, then the queue
        sent += 1
    assert left.closed and sent < 200
    b.close()


# -- metrics merge --------------------------------------------------------------------------------


def scrape(requests: float, entries: float, synced: int, services: float,
           prog: float) -> list[Any]:
    req = CounterMetricFamily("coredns_dns_requests", "r", labels=["zone"])
    req.add_metric(["."], requests)
    ent = GaugeMetricFamily("kdns_fast_path_entries", "e", labels=["proto"])
    ent.add_metric(["udp"], entries)
    syn = GaugeMetricFamily("kdns_kubernetes_synced", "s", labels=["zone"])
    syn.add_metric(["cluster.local."], synced)
    svcs = GaugeMetricFamily("kdns_kubernetes_services", "n", labels=["zone"])
    svcs.add_metric(["cluster.local."], services)
    hist = HistogramMetricFamily("coredns_dns_request_duration_seconds", "d", labels=["zone"])
    hist.add_metric(["."], [("0.001", requests), ("+Inf", requests)], requests / 1000)
    prog_h = HistogramMetricFamily("coredns_kubernetes_dns_programming_duration_seconds", "p",
                                   labels=["service_kind"])
    prog_h.add_metric(["cluster_ip"], [("1.0", prog), ("+Inf", prog)], prog)
    reload = CounterMetricFamily("coredns_reload_failed", "f", value=5)
    return [req, ent, syn, svcs, hist, prog_h, reload]


def samples(fams: list[Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams for s in f.samples}


def test_merge_adds_counters_and_holdings_and_keeps_shared_facts_once() -> None:
    got = samples(list(merge([scrape(10, 3, 1, 50, 4), scrape(32, 5, 0, 50, 4)])))
    assert got[("coredns_dns_requests_total", (("zone", "."),))] == 42
    assert got[("kdns_fast_path_entries", (("proto", "udp"),))] == 8
    assert got[("kdns_kubernetes_synced", (("zone", "cluster.local."),))] == 0  # min
    assert got[("kdns_kubernetes_services", (("zone", "cluster.local."),))] == 50  # not 100
    assert got[("coredns_dns_request_duration_seconds_bucket",
                (("le", "0.001"), ("zone", ".")))] == 42
    assert got[("coredns_dns_request_duration_seconds_count", (("zone", "."),))] == 42
    # every worker programs every change: one worker's histogram, not N times it
    assert got[("coredns_kubernetes_dns_programming_duration_seconds_count",
                (("service_kind", "cluster_ip"),))] == 4
    # the supervisor owns reload's families
    assert not any(name.startswith("coredns_reload") for name, _ in got)


def test_a_dead_workers_counters_carry_over_and_its_gauges_do_not() -> None:
    retired = cumulative(scrape(10, 3, 1, 50, 4))
    assert {f.name for f in retired} == {"coredns_dns_requests",
                                         "coredns_dns_request_duration_seconds"}
    got = samples(list(merge([retired, scrape(5, 7, 1, 50, 2)])))
    assert got[("coredns_dns_requests_total", (("zone", "."),))] == 15
    assert got[("kdns_fast_path_entries", (("proto", "udp"),))] == 7  # the live worker's only
    assert got[("coredns_kubernetes_dns_programming_duration_seconds_count",
                (("service_kind", "cluster_ip"),))] == 2


def test_merge_of_nothing_is_nothing() -> None:
    assert list(merge([])) == []


# -- --workers auto -------------------------------------------------------------------------------


@pytest.mark.parametrize("files, want", [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 2),
    ({"cpu.max": "100000 100000\n"}, 1),
    ({"cpu.max": "5000 100000\n"}, 1),
    ({"cpu.max": "garbage\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4),
    ({}, None),
])
def test_cgroup_cpu_limit(tmp_path: Path, files: dict[str, str], want: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_limit(tmp_path) == want


def test_auto_workers_respect_the_cpu_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert default_workers(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert default_workers(tmp_path) == len(__import__("os").sched_getaffinity(0))
