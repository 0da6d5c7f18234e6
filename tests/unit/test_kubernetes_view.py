"""The view builder: merging, readiness, relists, publishing rules, and its cost at 50k Services."""

from __future__ import annotations

import gc
import time
import tracemalloc
from typing import Any

import k8s_cases as kc

from kdns.k8s.objects import parse_endpoint_slice, parse_namespace, parse_pod, parse_service
from kdns.plugins.base import GENERATION
from kdns.plugins.kubernetes.builder import ViewBuilder
from kdns.plugins.kubernetes.view import View

KINDS = ("services", "endpointslices", "namespaces")


def _synced(kinds: tuple[str, ...] = KINDS, **kw: Any) -> ViewBuilder:
    b = ViewBuilder(kinds, **kw)
    for kind in kinds:
        b.begin_list(kind)
        b.end_list(kind, set())
    assert b.flush()
    return b


def _ips(b: ViewBuilder, ns: str, name: str) -> list[str]:
    entry = b.view.service(ns, name)
    assert entry is not None
    return [ip for ip, _label, _ports in entry.endpoints()]


def _headless(name: str = "h", **kw: Any) -> Any:
    return parse_service(kc._svc("default", name, ports=(kc.HTTP,), **kw))


def _slice(name: str, eps: list[dict[str, Any]], family: str = "IPv4", service: str = "h") -> Any:
    return parse_endpoint_slice(kc._slice("default", name, service, eps, (kc.HTTP,), family))


def test_empty_view_before_sync() -> None:
    v = View.empty()
    assert not v.synced and v.service("default", "x") is None and not v.namespace_exists("default")
    b = ViewBuilder(KINDS)
    b.begin_list("services")
    b.upsert("services", _headless())
    b.end_list("services", {("default", "h")})
    assert not b.flush(), "must not publish until every kind has listed"
    assert not b.view.synced and not b.synced
    for kind in KINDS[1:]:
        b.begin_list(kind)
        b.end_list(kind, set())
    assert b.flush() and b.synced and b.view.service("default", "h") is not None


def test_slices_merge_across_families_and_dedupe() -> None:
    b = _synced()
    b.upsert("services", _headless())
    b.upsert("endpointslices", _slice("h-a", [kc._ep("10.0.0.1"), kc._ep("10.0.0.2")]))
    # Slice skew: the controller moved 10.0.0.2 to a new slice before deleting it from the old.
    b.upsert("endpointslices", _slice("h-b", [kc._ep("10.0.0.2"), kc._ep("10.0.0.3")]))
    b.upsert("endpointslices", _slice("h-c", [kc._ep("fd00::1")], family="IPv6"))
    b.flush()
    assert _ips(b, "default", "h") == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1"]
    entry = b.view.service("default", "h")
    assert entry is not None
    assert [e.service.name for e in b.view.ptr_services("10.0.0.2")] == ["h"]
    b.delete("endpointslices", ("default", "h-a"))
    b.flush()
    assert _ips(b, "default", "h") == ["10.0.0.2", "10.0.0.3", "fd00::1"]
    assert b.view.ptr_services("10.0.0.1") == ()


def test_slice_before_service_and_orphans() -> None:
    b = _synced()
    b.upsert("endpointslices", _slice("h-a", [kc._ep("10.0.0.1")]))
    b.upsert("endpointslices", _slice("orphan", [kc._ep("10.0.0.9")], service=""))
    b.flush()
    assert b.view.service("default", "h") is None
    b.upsert("services", _headless())
    b.flush()
    assert _ips(b, "default", "h") == ["10.0.0.1"]
    assert b.view.ptr_services("10.0.0.9") == ()
    # A slice relabelled to another service moves with it.
    b.upsert("services", _headless("g"))
    b.upsert("endpointslices", _slice("h-a", [kc._ep("10.0.0.1")], service="g"))
    b.flush()
    assert _ips(b, "default", "h") == [] and _ips(b, "default", "g") == ["10.0.0.1"]
    assert [e.service.name for e in b.view.ptr_services("10.0.0.1")] == ["g"]


def test_readiness_and_publish_not_ready() -> None:
    b = _synced()
    b.upsert("services", _headless())
    b.upsert("endpointslices", _slice("h-a", [kc._ep("10.0.0.1"), kc._ep("10.0.0.2", ready=False),
                                              kc._ep("10.0.0.3", ready=None)]))
    b.flush()
    assert _ips(b, "default", "h") == ["10.0.0.1", "10.0.0.3"], "ready absent counts as ready"
    b.upsert("services", _headless(pnr=True))
    b.flush()
    assert _ips(b, "default", "h") == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert b.view.ptr_services("10.0.0.2")


def test_endpoint_pod_names_label() -> None:
    b = _synced(endpoint_pod_names=True)
    b.upsert("services", _headless())
    long_name = "p" * 64
    b.upsert("endpointslices", _slice("h-a", [
        kc._ep("10.0.0.1", pod="pod-a"), kc._ep("10.0.0.2", pod=long_name),
        kc._ep("10.0.0.3", hostname="named", pod="pod-c")]))
    b.flush()
    entry = b.view.service("default", "h")
    assert entry is not None
    assert [label for _ip, label, _p in entry.endpoints()] == ["pod-a", "10-0-0-2", "named"]


def test_relist_drops_unseen_and_holds_publishing() -> None:
    b = _synced()
    for name in ("a", "b", "c"):
        b.upsert("services", parse_service(kc._svc("default", name, ips=(f"10.96.0.{ord(name)}",),
                                                   ports=(kc.HTTP,))))
    b.flush()
    before = b.view
    b.begin_list("services")
    b.upsert("services", parse_service(kc._svc("default", "a", ips=("10.96.1.1",), ports=(kc.HTTP,))))
    assert not b.flush(), "no publish mid-list"
    assert b.view is before
    b.end_list("services", {("default", "a")})
    assert b.flush()
    v = b.view
    assert v.generation > before.generation
    assert v.service("default", "b") is None and v.service("default", "c") is None
    assert v.service("default", "a").service.cluster_ips == ("10.96.1.1",)  # type: ignore[union-attr]
    assert not v.ptr_services("10.96.0.97") and v.ptr_services("10.96.1.1")
    # The old view is untouched: readers holding it keep a consistent picture.
    assert before.service("default", "b") is not None


def test_unchanged_upserts_do_not_publish() -> None:
    b = _synced()
    svc = parse_service(kc._svc("default", "a", ips=("10.96.0.1",), ports=(kc.HTTP,)))
    b.upsert("services", svc)
    assert b.flush()
    b.upsert("services", parse_service(kc._svc("default", "a", ips=("10.96.0.1",), ports=(kc.HTTP,))))
    assert not b.flush()


def test_generation_bumps_and_serial() -> None:
    clock = [1000.0]
    b = _synced(now=lambda: clock[0])
    g0 = b.view.generation
    clock[0] = 2000.0
    b.upsert("namespaces", parse_namespace(kc._ns("default")))
    assert b.flush()
    assert b.view.generation > g0 and b.view.generation == GENERATION.value
    assert b.view.serial == 2000 and b.view.namespace_exists("default")
    b.delete("namespaces", ("", "default"))
    b.flush()
    assert not b.view.namespace_exists("default")


def test_stale_flag_keeps_generation() -> None:
    b = _synced()
    g = b.view.generation
    b.set_stale("services", True, "watch broken")
    assert b.view.stale and b.view.generation == g
    b.set_stale("services", False)
    assert not b.view.stale


def test_namespace_filter_drops_hidden_objects() -> None:
    b = _synced(namespaces=frozenset({"default"}))
    b.upsert("namespaces", parse_namespace(kc._ns("default")))
    b.upsert("namespaces", parse_namespace(kc._ns("demo")))
    b.upsert("services", parse_service(kc._svc("demo", "x", ips=("10.96.9.9",), ports=(kc.HTTP,))))
    b.flush()
    assert b.view.namespace_exists("default") and not b.view.namespace_exists("demo")
    assert b.view.service("demo", "x") is None and not b.view.ptr_services("10.96.9.9")


def test_pod_namespace_and_ambiguity() -> None:
    kinds = (*KINDS, "pods")
    b = _synced(kinds)
    b.upsert("pods", parse_pod(kc._pod("a", "p1", "10.244.0.5")))
    b.upsert("pods", parse_pod(kc._pod("b", "p2", "10.244.0.6", host_network=True)))
    b.upsert("pods", parse_pod(kc._pod("b", "p3", "10.244.0.7", phase="Pending")))
    b.flush()
    v = b.view
    assert v.namespace_of("10.244.0.5") == "a" and v.pod_in_namespace("10.244.0.5", "a")
    assert v.namespace_of("10.244.0.6") is None and v.namespace_of("10.244.0.7") is None
    # The IP is reused by a pod in another namespace before the old pod's delete arrives.
    b.upsert("pods", parse_pod(kc._pod("c", "p4", "10.244.0.5")))
    b.flush()
    assert b.view.namespace_of("10.244.0.5") is None
    assert b.view.pod_in_namespace("10.244.0.5", "a") and b.view.pod_in_namespace("10.244.0.5", "c")
    b.delete("pods", ("a", "p1"))
    b.flush()
    assert b.view.namespace_of("10.244.0.5") == "c"
    # Two pods of one namespace with one IP are not ambiguous about the namespace.
    b.upsert("pods", parse_pod(kc._pod("c", "p5", "10.244.0.5")))
    b.flush()
    assert b.view.namespace_of("10.244.0.5") == "c"
    # A pod that stops running no longer claims its IP.
    b.upsert("pods", parse_pod(kc._pod("c", "p4", "10.244.0.5", phase="Succeeded")))
    b.upsert("pods", parse_pod(kc._pod("c", "p5", "10.244.0.5", phase="Failed")))
    b.flush()
    assert b.view.namespace_of("10.244.0.5") is None
    b.begin_list("pods")
    b.end_list("pods", set())
    b.flush()
    assert b.view.namespace_of("10.244.0.5") is None


def test_publisher_thread_coalesces_bursts() -> None:
    b = ViewBuilder(KINDS, min_interval=0.02)
    b.start()
    try:
        for kind in KINDS:
            b.begin_list(kind)
            b.end_list(kind, set())
        assert b.wait_synced(5)
        first = b.publishes
        for i in range(2000):
            ip = f"10.97.{i // 256}.{i % 256}"
            b.upsert("services", parse_service(kc._svc("default", f"s{i}", ips=(ip,),
                                                       ports=(kc.HTTP,))))
        deadline = time.monotonic() + 5
        while b.view.service("default", "s1999") is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert b.view.service("default", "s1999") is not None
        assert b.publishes - first < 200, "bursts must be coalesced"
    finally:
        b.stop()


def _bulk(n: int) -> tuple[list[Any], list[Any]]:
    services, slices = [], []
    for i in range(n):
        name = f"svc-{i:05d}"
        services.append(parse_service(kc._svc(
            f"ns-{i % 50}", name, ips=(f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}",),
            ports=(kc._port("http", 80),))))
        eps = [kc._ep(f"10.{128 + (3 * i + k) // 65536}.{(3 * i + k) // 256 % 256}.{(3 * i + k) % 256}",
                      pod=f"{name}-pod{k}") for k in range(3)]
        slices.append(parse_endpoint_slice(kc._slice(f"ns-{i % 50}", f"{name}-abcde", name, eps,
                                                     (kc._port("http", 8080),))))
    return services, slices


def test_50k_services_build_publish_and_memory() -> None:
    n = 50_000
    services, slices = _bulk(n)
    t0 = time.perf_counter()
    b = _load(services, slices)
    build = time.perf_counter() - t0
    assert b.view.service_count() == n
    del services, slices

    # One Service changes among 50,000: the publish hands the index parts over as they are.
    timings = []
    for i in range(5):
        t1 = time.perf_counter()
        b.upsert("endpointslices", parse_endpoint_slice(kc._slice(
            "ns-7", "svc-00007-abcde", "svc-00007", [kc._ep(f"10.200.0.{i + 1}")],
            (kc._port("http", 8080),))))
        assert b.flush()
        timings.append(time.perf_counter() - t1)
    incremental = max(timings)
    entry = b.view.service("ns-7", "svc-00007")
    assert entry is not None and [ip for ip, _l, _p in entry.endpoints()] == ["10.200.0.5"]
    assert [e.service.name for e in b.view.ptr_services("10.200.0.5")] == ["svc-00007"]

    # Memory per Service (3 endpoints each), parsed objects included, measured on 10k.
    m = 10_000
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    objs = _bulk(m)
    gc.collect()
    parsed = tracemalloc.get_traced_memory()[0] - base
    b2 = _load(*objs)
    del objs
    gc.collect()
    total = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert b2.view.service_count() == m
    print(f"\n{n} services x 3 endpoints: build+first publish {build * 1000:.0f} ms; "
          f"one-service change+publish max {incremental * 1000:.2f} ms "
          f"(publish alone {b.last_publish_seconds * 1000:.3f} ms); "
          f"resident {total / m:.0f} B/service "
          f"(parsed objects as handed over {parsed / m:.0f} B)")
    assert incremental < 0.1
    assert total / m < 2048


def _load(services: list[Any], slices: list[Any]) -> ViewBuilder:
    b = ViewBuilder(KINDS)
    for kind in KINDS:
        b.begin_list(kind)
    for s in services:
        b.upsert("services", s)
    for s in slices:
        b.upsert("endpointslices", s)
    b.end_list("services", {s.key for s in services})
    b.end_list("endpointslices", {s.key for s in slices})
    b.end_list("namespaces", set())
    assert b.flush()
    return b
