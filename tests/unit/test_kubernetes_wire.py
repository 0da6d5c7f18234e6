"""The cold path says exactly what the chain says: every row of the kubernetes case table, under
its configuration, in three spellings, with and without EDNS (and DO), is answered by the
general path (dnslib and the chain) and by the wire answerer; where the wire answerer takes the
question, both replies must be the same bytes.

The chain in front of kubernetes is kubeadm's (errors, cache for the cluster zone with its
``disable`` lines, loadbalance): plugins that declare they pass cluster names.
"""

from __future__ import annotations

from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest
from dnslib import QTYPE, DNSRecord

from kdns.config.parser import parse_corefile
from kdns.k8s.objects import PARSERS
from kdns.plugins.base import Request, Response
from kdns.plugins.kubernetes.builder import ViewBuilder
from kdns.plugins.kubernetes.handler import KubernetesHandler
from kdns.server import dispatch
from kdns.server.app import KdnsServer, ServeOptions
from kdns.server.dispatch import Dispatcher, Zone, build_chain, cold_path
from tests.unit import k8s_cases as kc

FRONT = """
.:53 {
    errors
    cache 30 {
        disable success cluster.local
        disable denial cluster.local
    }
    loadbalance
    forward . 127.0.0.1:9
}
"""


def _handler(config: str) -> KubernetesHandler:
    cfg = kc.build_config(config)
    builder = ViewBuilder(cfg.kinds, namespaces=cfg.namespaces,
                          endpoint_pod_names=cfg.endpoint_pod_names, now=lambda: kc.SERIAL)
    for kind in cfg.kinds:
        builder.begin_list(kind)
        seen = set()
        for obj in kc.OBJECTS:
            if kc.KIND_OF[obj["kind"]] == kind:
                parsed = PARSERS[kind](obj)
                builder.upsert(kind, parsed)
                seen.add(parsed.key)
        builder.end_list(kind, seen)
    assert builder.flush()
    return KubernetesHandler(cfg, builder=builder)


def _front() -> list[Any]:
    """errors, loadbalance and cache as kubeadm configures them (forward is never reached)."""
    server = KdnsServer(parse_corefile(FRONT, "<front>"), ServeOptions(dns_port=0, http=False))
    server.build()
    handlers = [h for h in server.handlers() if h.name in ("errors", "cache", "loadbalance")]
    assert [h.name for h in handlers] == ["errors", "loadbalance", "cache"]  # ORDER
    return handlers


def _request(qname: str, qtype: str) -> Request:
    msg = DNSRecord.question(qname, qtype)
    return Request(msg=msg, qname=qname, qname_lower=qname.lower(), qtype=QTYPE_OF[qtype],
                   qclass=1, client=("10.244.1.18", 5353), proto="udp", server="dns://:53",
                   zone=".", max_size=512)


def _no_next(req: Request) -> Response:
    raise AssertionError("the wire answerer took a question serve() passes on")


QTYPE_OF = {name: int(getattr(QTYPE, name)) for name in ("A", "AAAA", "SRV", "PTR", "TXT", "SOA",
                                                         "NS", "CNAME", "MX", "ANY", "AXFR",
                                                         "HINFO")}


def _dispatchers(config: str) -> tuple[Dispatcher, Dispatcher]:
    front = _front()
    kube = _handler(config)
    for h in front:
        if h.name == "cache":
            h._shared["kubernetes"] = kube  # as setup shares it within a block
    handlers = [*front, kube]
    cold = cold_path(handlers)
    assert cold is not None
    chain = build_chain(handlers)
    with_cold = Dispatcher({".": Zone(".", chain, "dns://:53", cold=cold)}, "udp", "dns://:53")
    general = Dispatcher({".": Zone(".", chain, "dns://:53")}, "udp", "dns://:53")
    return with_cold, general


def _kube(d: Dispatcher) -> KubernetesHandler:
    cold = d.zones["."].cold
    assert cold is not None
    kube = cold.answer.__self__  # type: ignore[attr-defined]
    assert isinstance(kube, KubernetesHandler)
    return kube


def _spellings(name: str) -> list[str]:
    mixed = "".join(c.upper() if i % 3 == 0 else c for i, c in enumerate(name))
    return [name, name.upper(), mixed]


def _queries(name: str, qtype: str) -> list[bytes]:
    out = []
    for spelled in _spellings(name):
        for edns, do in ((False, False), (True, False), (True, True)):
            q = dns.message.make_query(spelled, qtype, use_edns=0 if edns else None,
                                       want_dnssec=do)
            q.id = 0x5151
            q.flags |= dns.flags.CD if do else 0
            out.append(q.to_wire())
    return out


CONFIGS = sorted({c.config for c in kc.CASES})


@pytest.mark.parametrize("config", CONFIGS)
def test_wire_answers_are_the_chain_answers_byte_for_byte(config: str) -> None:
    with_cold, general = _dispatchers(config)
    kube = _kube(with_cold)
    taken = compared = 0
    for case in kc.CASES:
        if case.config != config:
            continue
        for data in _queries(case.qname, case.qtype):
            cold = with_cold.cold(data)
            expected = general.handle(data, ("10.244.1.18", 5353))
            compared += 1
            if cold is None:
                continue
            taken += 1
            assert cold == expected, (case.qname, case.qtype, case.note)
            # ... and is stored under the same dependency keys as the chain's reply
            path = with_cold.zones["."].cold
            assert path is not None
            ans = path.answer(case.qname.lower(), QTYPE_OF[case.qtype])
            resp = kube.serve(_request(case.qname, case.qtype), _no_next)
            assert ans is not None and set(ans.deps) == set(resp.deps or ()), case.qname
    assert compared
    if config == "default":
        assert taken >= 100  # the table's Service names and NXDOMAINs go this way


def test_loadbalance_keeps_multi_address_answers_on_the_chain() -> None:
    with_cold, _general = _dispatchers("default")
    headless = next(c for c in kc.CASES if c.config == "default" and c.qtype == "A"
                    and len(c.answer) > 1 and ".svc." in c.qname)
    (data, *_rest) = _queries(headless.qname, "A")
    assert with_cold.cold(data) is None
    one = next(c for c in kc.CASES if c.config == "default" and c.qtype == "A"
               and len(c.answer) == 1 and ".svc." in c.qname and c.rcode == "NOERROR")
    (data, *_rest) = _queries(one.qname, "A")
    assert with_cold.cold(data) is not None


def test_a_plugin_that_must_see_every_query_turns_the_cold_path_off() -> None:
    server = KdnsServer(parse_corefile(".:53 {\n log\n forward . 127.0.0.1:9\n}\n", "<log>"),
                        ServeOptions(dns_port=0, http=False))
    server.build()
    assert cold_path([*server.handlers(), _handler("default")]) is None


@pytest.mark.parametrize("data", [
    b"\x51\x51\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"  # a label with a dot inside
    b"\x05ku.ia\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01",
    b"\x51\x51\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"  # class CH
    b"\x05kubia\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x03",
    b"\x51\x51\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01"  # EDNS version 1 (BADVERS)
    b"\x05kubia\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01"
    b"\x00\x00\x29\x04\xd0\x00\x01\x00\x00\x00\x00",
    b"\x51\x51\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01"  # an EDNS option (a cookie)
    b"\x05kubia\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01"
    b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x0c\x00\x0a\x00\x08" + b"c" * 8,
    b"\x51\x51\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"  # trailing bytes
    b"\x05kubia\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01\x00",
    b"\x51\x51\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"  # a compressed name
    b"\x05kubia\x07default\x03svc\x07cluster\x05local\xc0\x04\x00\x01\x00\x01",
])
def test_questions_the_cold_path_leaves_to_the_parser(data: bytes) -> None:
    with_cold, _general = _dispatchers("default")
    assert with_cold.cold(data) is None


@pytest.mark.parametrize(("option", "taken"), [
    ("fallthrough", False),                      # every zone: NXDOMAIN is the next plugin's
    ("fallthrough cluster.local", False),
    ("fallthrough svc.cluster.local", False),    # a zone below: it may cover the name
    ("fallthrough in-addr.arpa ip6.arpa", True),  # kubeadm's: cluster names stay here
])
def test_fallthrough_leaves_nxdomain_to_the_chain(option: str, taken: bool) -> None:
    kc.CONFIGS["_ft"] = (*kc.CONFIGS["default"], option)
    try:
        kube = _handler("_ft")
    finally:
        del kc.CONFIGS["_ft"]
    nx = kube.answer_wire(f"nope.default.svc.{kc.Z}", QTYPE_OF["A"])
    assert (nx is not None) == taken
    assert kube.answer_wire(f"kubia.default.svc.{kc.Z}", QTYPE_OF["A"]) is not None


def _nx_query(name: str) -> bytes:
    q = dns.message.make_query(name, "A")
    q.id = 0x5151
    return q.to_wire()


def test_a_denial_is_stored_on_its_second_ask_only() -> None:
    with_cold, general = _dispatchers("default")
    store = with_cold.store
    nx = _nx_query(f"nope.default.svc.{kc.Z}")
    first = with_cold.cold(nx)
    assert first == general.handle(nx, ("10.244.1.18", 5353))
    assert len(store) == 0 and with_cold.lookup(nx) is None
    assert with_cold.cold(nx) == first  # asked again: now worth keeping
    assert len(store) == 1 and with_cold.lookup(nx) == first
    # A positive answer is kept at once.
    one = next(c for c in kc.CASES if c.config == "default" and c.qtype == "A"
               and len(c.answer) == 1 and ".svc." in c.qname and c.rcode == "NOERROR")
    (pos, *_rest) = _queries(one.qname, "A")
    assert with_cold.cold(pos) is not None and with_cold.lookup(pos) is not None


def test_a_random_subdomain_flood_leaves_the_store_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "SEEN_ONCE", 64)
    with_cold, _general = _dispatchers("default")
    kept = _nx_query(f"nope.default.svc.{kc.Z}")
    with_cold.cold(kept)
    with_cold.cold(kept)
    for i in range(500):
        data = _nx_query(f"r{i}x.default.svc.{kc.Z}")
        reply = with_cold.cold(data)
        assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.NXDOMAIN
    assert len(with_cold.store) == 1 and with_cold.lookup(kept) is not None
    assert len(with_cold._seen_once) <= 64  # what remembers them is bounded too


def test_plugins_that_pass_everything_are_not_asked() -> None:
    with_cold, _general = _dispatchers("default")
    cold = with_cold.zones["."].cold
    assert cold is not None
    # errors passes everything, the cache every name its block's kubernetes plugin answers;
    # loadbalance decides per answer
    assert [p.__self__.name for p in cold.front] == ["loadbalance"]  # type: ignore[attr-defined]


def test_a_cache_of_another_block_is_still_asked() -> None:
    """passes_all_of is about the cache's own kubernetes plugin: another answerer keeps it."""
    front = _front()
    kube, other = _handler("default"), _handler("default")
    cache = next(h for h in front if h.name == "cache")
    cache._shared["kubernetes"] = kube
    assert cache.passes_all_of(kube)
    assert not cache.passes_all_of(other) and not cache.passes_all_of(None)
    cold = cold_path([*front, other])
    assert cold is not None
    assert [p.__self__.name for p in cold.front] == ["loadbalance", "cache"]  # type: ignore[attr-defined]


QUIET = """
.:53 {
    metadata
    nsid kdns-0
    bufsize 1232
    any
    forward . 127.0.0.1:9
}
"""


def test_plugins_quiet_in_their_default_config_keep_the_cold_path() -> None:
    """metadata without a map rcode, nsid (the cold path takes no EDNS option) and any (for
    other types) declare they pass; bufsize rewrites the OPT of every EDNS reply, so it
    does not."""
    server = KdnsServer(parse_corefile(QUIET, "<quiet>"), ServeOptions(dns_port=0, http=False))
    server.build()
    front = {h.name: h for h in server.handlers()}
    kube = _handler("default")
    handlers = [front["metadata"], front["nsid"], front["any"], kube]
    cold = cold_path(handlers)
    assert cold is not None
    assert [p.__self__.name for p in cold.front] == ["metadata", "any"]  # type: ignore[attr-defined]
    assert cold_path([front["bufsize"], kube]) is None
    chain = build_chain(handlers)
    with_cold = Dispatcher({".": Zone(".", chain, "dns://:53", cold=cold)}, "udp", "dns://:53")
    general = Dispatcher({".": Zone(".", chain, "dns://:53")}, "udp", "dns://:53")
    taken = 0
    for case in kc.CASES:
        if case.config != "default":
            continue
        for data in _queries(case.qname, case.qtype):
            reply = with_cold.cold(data)
            if reply is not None:
                taken += 1
                assert reply == general.handle(data, ("10.244.1.18", 5353)), case.qname
    assert taken >= 100
    any_q = dns.message.make_query(f"kubia.default.svc.{kc.Z}", "ANY").to_wire()
    assert with_cold.cold(any_q) is None  # any answers that itself
    nsid_q = dns.message.make_query(f"kubia.default.svc.{kc.Z}", "A", use_edns=0,
                                    options=[dns.edns.GenericOption(dns.edns.NSID, b"")])
    assert with_cold.cold(nsid_q.to_wire()) is None  # an EDNS option: the chain's
