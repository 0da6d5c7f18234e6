"""The kubernetes answer function through the shared case table, and the handler around it."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any

import k8s_cases as kc
import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from kdns.k8s.objects import PARSERS
from kdns.plugins.base import GENERATION, Request, Response
from kdns.plugins.kubernetes.answer import _srv_weight, answer, pod_ip
from kdns.plugins.kubernetes.builder import ViewBuilder
from kdns.plugins.kubernetes.handler import KubernetesHandler
from kdns.plugins.kubernetes.setup import KubernetesConfig
from kdns.plugins.kubernetes.view import View, dashed, reverse_ip

_CACHE: dict[str, tuple[Any, Any]] = {}


def _setup(config: str) -> tuple[KubernetesConfig, View]:
    if config not in _CACHE:
        cfg = kc.build_config(config)
        _CACHE[config] = (cfg, kc.demo_view(cfg))
    return _CACHE[config]


@pytest.mark.parametrize("case", kc.CASES, ids=[f"{c.config}:{c.qname}:{c.qtype}" for c in kc.CASES])
def test_case(case: kc.Case) -> None:
    cfg, view = _setup(case.config)
    assert kc.run_case(case, cfg, view) == kc.expected(case), case.note


def test_case_table_rows_are_distinct() -> None:
    keys = [(c.config, c.qname, c.qtype) for c in kc.CASES]
    assert len(keys) == len(set(keys))
    assert all(c.config in kc.CONFIGS for c in kc.CASES)


@pytest.mark.parametrize(("n", "weight"), [(1, 100), (2, 50), (3, 33), (6, 16), (7, 14),
                                           (99, 1), (100, 1), (101, 1), (5000, 1)])
def test_srv_weight_is_corednss(n: int, weight: int) -> None:
    assert _srv_weight(n) == weight


def test_labels() -> None:
    assert dashed("10.11.12.13") == "10-11-12-13"
    assert dashed("2001:db8::") == "2001-db8--0"
    assert dashed("2001:db8::1") == "2001-db8--1"
    assert pod_ip("1-2-3-4") == "1.2.3.4"
    assert pod_ip("fd00--1") == "fd00::1"
    assert pod_ip("1-2-3-4-5") is None
    assert pod_ip("1--2-3") == "1::2:3"
    assert pod_ip("1-2-3") is None
    assert pod_ip("1-2-3-x") is None
    assert reverse_ip("4.3.2.1.in-addr.arpa.") == "1.2.3.4"
    assert reverse_ip("3.2.1.in-addr.arpa.") is None
    assert reverse_ip("x.3.2.1.in-addr.arpa.") is None
    six = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
    assert reverse_ip(six) == "2001:db8::1"
    assert reverse_ip(six.upper()) == "2001:db8::1"
    assert reverse_ip(six[2:]) is None


def test_every_record_is_authoritative_and_uses_ttl() -> None:
    cfg, view = _setup("ttl30")
    got = answer(f"web.default.svc.{kc.Z}", QTYPE.SRV, view, cfg, kc.Z)
    assert got.aa and {r.ttl for r in (*got.answer, *got.additional)} == {30}


def test_external_target_outside_zone_is_left_to_the_handler() -> None:
    cfg, view = _setup("default")
    got = answer(f"external.default.svc.{kc.Z}", QTYPE.A, view, cfg, kc.Z)
    assert got.chase == "www.example.com."
    assert answer(f"alias.default.svc.{kc.Z}", QTYPE.A, view, cfg, kc.Z).chase is None


def test_externalname_loop_terminates() -> None:
    objs = [*kc.OBJECTS,
            kc._svc("default", "loop-a", type="ExternalName", external="loop-b.default.svc.cluster.local"),
            kc._svc("default", "loop-b", type="ExternalName", external="loop-a.default.svc.cluster.local")]
    cfg = kc.build_config("default")
    view = kc.demo_view(cfg, objs)
    got = answer(f"loop-a.default.svc.{kc.Z}", QTYPE.A, view, cfg, kc.Z)
    assert got.rcode == RCODE.NOERROR
    assert 2 <= len(got.answer) <= 10 and all(r.rtype == QTYPE.CNAME for r in got.answer)


def test_large_headless_service_answers_every_endpoint() -> None:
    n = 10_000
    eps = [kc._ep(f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}") for i in range(n)]
    objs = [kc._ns("default"), kc._svc("default", "big", ports=(kc.HTTP,)),
            kc._slice("default", "big-1", "big", eps[: n // 2], (kc.HTTP,)),
            kc._slice("default", "big-2", "big", eps[n // 2:], (kc.HTTP,))]
    cfg = kc.build_config("default")
    view = kc.demo_view(cfg, objs)
    got = answer(f"big.default.svc.{kc.Z}", QTYPE.A, view, cfg, kc.Z)
    assert len(got.answer) == n
    srv = answer(f"big.default.svc.{kc.Z}", QTYPE.SRV, view, cfg, kc.Z)
    assert len(srv.answer) == n and {r.rdata.weight for r in srv.answer} == {1}


# -- the handler ------------------------------------------------------------------------------


def _request(qname: str, qtype: str = "A", *, qid: int = 4242) -> Request:
    msg = DNSRecord.question(qname, qtype)
    msg.header.id = qid
    return Request(msg=msg, qname=qname, qname_lower=qname.lower(), qtype=getattr(QTYPE, qtype),
                   qclass=1, client=("10.244.1.18", 5353), proto="udp", server="dns://:53",
                   zone=".", max_size=512)


class _Next:
    """The rest of the chain: records the requests it gets and answers them."""

    def __init__(self) -> None:
        self.seen: list[Request] = []

    def __call__(self, req: Request) -> Response:
        self.seen.append(req)
        reply = req.msg.reply()
        if req.qtype == QTYPE.A:
            reply.add_answer(RR(req.qname, QTYPE.A, ttl=60, rdata=A("192.0.2.53")))
        return Response(reply, "forward")


def _handler(config: str = "default", extra: tuple[str, ...] = (), *,
             synced: bool = True) -> KubernetesHandler:
    cfg = kc.build_config(config)
    if extra:
        saved = kc.CONFIGS[config]
        kc.CONFIGS["_tmp"] = (*saved, *extra)
        try:
            cfg = kc.build_config("_tmp")
        finally:
            del kc.CONFIGS["_tmp"]
    builder = ViewBuilder(cfg.kinds, namespaces=cfg.namespaces,
                          endpoint_pod_names=cfg.endpoint_pod_names)
    if synced:
        for kind in cfg.kinds:
            builder.begin_list(kind)
            seen = set()
            for obj in kc.OBJECTS:
                if kc.KIND_OF[obj["kind"]] == kind:
                    o = PARSERS[kind](obj)
                    builder.upsert(kind, o)
                    seen.add(o.key)
            builder.end_list(kind, seen)
        builder.flush()
    return KubernetesHandler(cfg, builder=builder)


def test_handler_reply_header_and_fast_flag() -> None:
    h = _handler()
    nxt = _Next()
    resp = h.serve(_request(f"Kubia.default.svc.{kc.Z}"), nxt)
    assert not nxt.seen
    assert resp.msg.header.id == 4242 and resp.msg.header.aa == 1 and resp.msg.header.qr == 1
    assert resp.msg.header.rcode == RCODE.NOERROR
    assert str(resp.msg.rr[0].rname) == f"Kubia.default.svc.{kc.Z}"
    assert resp.fast and resp.plugin == "kubernetes"
    # The Service's key stands for its namespace's (the builder names every Service of a
    # namespace that changes).
    assert resp.deps == (("svc", "default", "kubia"),)


def test_handler_passes_other_zones_on() -> None:
    nxt = _Next()
    resp = _handler().serve(_request("example.com."), nxt)
    assert resp.plugin == "forward" and len(nxt.seen) == 1


def test_handler_refuses_transfers() -> None:
    resp = _handler().serve(_request(kc.Z, "AXFR"), _Next())
    assert resp.msg.header.rcode == RCODE.REFUSED and resp.msg.header.aa == 0


def test_fallthrough_only_for_name_errors_in_listed_zones() -> None:
    h = _handler(extra=("fallthrough in-addr.arpa ip6.arpa",))
    nxt = _Next()
    assert h.serve(_request("99.99.99.10.in-addr.arpa.", "PTR"), nxt).plugin == "forward"
    resp = h.serve(_request("175.237.98.10.in-addr.arpa.", "PTR"), nxt)
    assert resp.plugin == "kubernetes" and resp.msg.rr
    resp = h.serve(_request(f"nosuch.default.svc.{kc.Z}"), nxt)
    assert resp.msg.header.rcode == RCODE.NXDOMAIN and len(nxt.seen) == 1
    # NODATA is not a name error: it never falls through.
    resp = h.serve(_request(f"kubia.default.svc.{kc.Z}", "AAAA"), nxt)
    assert resp.plugin == "kubernetes" and len(nxt.seen) == 1


def test_fallthrough_without_zones_covers_everything() -> None:
    h = _handler(extra=("fallthrough",))
    nxt = _Next()
    assert h.serve(_request(f"nosuch.default.svc.{kc.Z}"), nxt).plugin == "forward"


def test_before_sync_name_errors_are_servfail_with_soa() -> None:
    h = _handler(synced=False)
    assert not h.ready()
    resp = h.serve(_request(f"kubia.default.svc.{kc.Z}"), _Next())
    assert resp.msg.header.rcode == RCODE.SERVFAIL
    assert resp.msg.auth[0].rtype == QTYPE.SOA and not resp.fast
    # Names that exist whatever the cluster holds are still answered.
    resp = h.serve(_request(f"dns-version.{kc.Z}", "TXT"), _Next())
    assert resp.msg.header.rcode == RCODE.NOERROR and resp.msg.rr and not resp.fast


def test_external_name_is_chased_through_the_chain() -> None:
    h = _handler()
    nxt = _Next()
    resp = h.serve(_request(f"external.default.svc.{kc.Z}"), nxt)
    assert [r.rtype for r in resp.msg.rr] == [QTYPE.CNAME, QTYPE.A]
    assert nxt.seen[0].qname == "www.example.com." and nxt.seen[0].qtype == QTYPE.A
    assert not resp.fast  # upstream data must not be pinned to the view generation

    def broken(req: Request) -> Response:
        raise RuntimeError("upstream down")

    resp = h.serve(_request(f"external.default.svc.{kc.Z}"), broken)
    assert [r.rtype for r in resp.msg.rr] == [QTYPE.CNAME]


class _FakeSource:
    def __init__(self, specs: list[Any], sink: Any, *, sync: bool) -> None:
        self.specs, self.sink, self.sync = specs, sink, sync
        self.started = self.stopped = False
        self._thread: threading.Thread | None = None

    def _feed(self) -> None:
        for spec in self.specs:
            self.sink.begin_list(spec.kind)
            self.sink.end_list(spec.kind, set())

    def start(self) -> None:
        self.started = True
        if self.sync:
            self._thread = threading.Thread(target=self._feed)
            self._thread.start()

    def stop(self) -> None:
        self.stopped = True
        if self._thread is not None:
            self._thread.join()

    def synced(self) -> bool:
        return self.sync

    def describe(self) -> str:
        return "fake"


def test_start_waits_for_sync_then_stop() -> None:
    cfg = kc.build_config("default")
    made: list[_FakeSource] = []

    def factory(specs: list[Any], sink: Any) -> _FakeSource:
        made.append(_FakeSource(specs, sink, sync=True))
        return made[-1]

    h = KubernetesHandler(cfg, source_factory=factory)
    before = GENERATION.value
    h.start()
    try:
        assert h.ready() and h.view.synced and h.view.generation > before
        assert [s.kind for s in made[0].specs] == ["services", "endpointslices", "namespaces"]
    finally:
        h.stop()
    assert made[0].stopped


def test_start_gives_up_after_startup_timeout(caplog: pytest.LogCaptureFixture) -> None:
    cfg = replace(kc.build_config("default"), startup_timeout=0.6)
    h = KubernetesHandler(cfg, source_factory=lambda specs, sink: _FakeSource(specs, sink, sync=False))
    with caplog.at_level(logging.INFO, logger="kdns.kubernetes"):
        h.start()
    try:
        assert not h.ready()
        msgs = [r.getMessage() for r in caplog.records]
        assert "waiting for Kubernetes API before starting server" in msgs
        assert msgs[-1] == "starting server with unsynced Kubernetes API"
    finally:
        h.stop()


def test_namespace_of_passthrough() -> None:
    h = _handler("pods_verified")
    assert h.namespace_of("10.244.1.18") == "default"
    assert h.namespace_of("10.244.2.99") is None


def test_start_with_manifests_serves_the_demo(tmp_path: Any) -> None:
    import json

    path = tmp_path / "demo.json"
    path.write_text(json.dumps({"kind": "List", "items": kc.OBJECTS}))
    cfg = replace(kc.build_config("default"), manifests=str(path))
    h = KubernetesHandler(cfg)
    h.start()
    try:
        assert h.ready()
        case = next(c for c in kc.CASES if c.note == "headless SRV: N endpoints x M named ports")
        got = kc.run_case(case, cfg, h.view)
        assert got == {**kc.expected(case)}
        resp = h.serve(_request(f"web-0.web.default.svc.{kc.Z}"), _Next())
        assert [str(r.rdata) for r in resp.msg.rr] == ["10.244.1.30"]
    finally:
        h.stop()


def test_broken_manifest_fails_startup(tmp_path: Any) -> None:
    import kdns.k8s.manifests as manifests
    path = tmp_path / "bad.yaml"
    path.write_text("kind: Service\nmetadata: [unclosed\n")
    cfg = replace(kc.build_config("default"), manifests=str(path))
    h = KubernetesHandler(cfg)
    with pytest.raises(manifests.ManifestError):
        h.start()
    h.stop()
