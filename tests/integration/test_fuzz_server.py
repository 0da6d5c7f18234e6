"""Property-based fuzzing of the served packet path: kdns's dispatchers, in process and over real
UDP sockets (hypothesis; strategies from tests/unit/test_fuzz_wire.py), in the kubeadm setting
(tests/kubeadm.py): kubeadm's Corefile (cache, forward to a local dnsmasq, loadbalance, loop,
prometheus, reload...) over a fake API server whose EndpointSlices change every 50 ms.

Every datagram is served twice, so a reply stored by the slow path is then served by the fast
path too. Invariants (``check_reply``): every reply parses with dnspython, echoes the ID and,
when the query had one well-formed question, that question as spelled; QR is set; the rcode is
one of NOERROR, NXDOMAIN, FORMERR, NOTIMP, REFUSED, SERVFAIL, BADVERS (SERVFAIL is what a name
no plugin handles gets, as in CoreDNS). Silence only for fewer than 12 bytes or QR=1. No plugin
raises (``panics`` stays put), and the server answers a valid query correctly afterwards.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import dns.message
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings

from kdns.dns import wire
from kdns.server.dispatch import Dispatcher
from tests import fakeapi
from tests.conftest import DEMO_COREFILE, Running, start_server
from tests.kubeadm import (
    EXT,
    KUBIA,
    KUBIA_IP,
    SliceChurn,
    Upstream,
    dnsmasq_available,
    kubeadm_corefile,
    seed_basics,
)
from tests.ports import free_tcp_port
from tests.unit.test_fuzz_wire import check_reply, datagrams, expects_silence

CLIENT = ("127.0.0.1", 40000)

SERVER_FUZZ = settings(max_examples=250, deadline=timedelta(seconds=2),
                       suppress_health_check=[HealthCheck.too_slow,
                                              HealthCheck.filter_too_much])


def probe(qid: int) -> bytes:
    q = dns.message.make_query(KUBIA, "A", id=qid)
    return q.to_wire()


def assert_probe_answered(reply: bytes | None, qid: int) -> None:
    assert reply is not None, "no answer to a valid query after the fuzz input"
    msg = dns.message.from_wire(reply)
    assert msg.id == qid and msg.rcode() == dns.rcode.NOERROR
    assert [rd.address for rrset in msg.answer for rd in rrset] == [KUBIA_IP]


def assert_size(data: bytes, reply: bytes | None, proto: str) -> None:
    """UDP replies stay within 512 bytes for a client without EDNS (no additional records at
    all), and within kdns's own cap otherwise."""
    if reply is None or proto != "udp":
        return
    assert len(reply) <= wire.UDP_MAX_SIZE
    if len(data) >= 12 and data[10:12] == b"\x00\x00":
        assert len(reply) <= wire.UDP_DEFAULT_SIZE


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """kdns in the kubeadm setting, under EndpointSlice churn for the whole module."""
    if not dnsmasq_available():
        pytest.skip("needs dnsmasq (the local upstream): scripts/system-deps")
    tmp = tmp_path_factory.mktemp("fuzz-kubeadm")
    with fakeapi.FakeApiServer(bookmark_interval=0.5) as api:
        seed_basics(api)
        churn = SliceChurn(api, interval=0.05)
        upstream = Upstream(tmp).start()
        try:
            corefile = kubeadm_corefile(f"kubeconfig {api.write_kubeconfig(str(tmp / 'kc'))}",
                                        upstream.port, ready=free_tcp_port(),
                                        prometheus=free_tcp_port())
            server = start_server(corefile, tmp)
            try:
                churn.start()
                yield Running(server)
                assert churn.error is None and churn.ops > 0
            finally:
                churn.stop()
                server.stop()
        finally:
            upstream.stop()


@pytest.fixture(scope="module", params=["udp", "tcp"])
def dispatcher(request: pytest.FixtureRequest, demo: Running) -> Dispatcher:
    d: Dispatcher = demo.server.dispatcher(request.param)
    return d


@SERVER_FUZZ
@given(data=datagrams())
def test_dispatcher_replies_are_wellformed(dispatcher: Dispatcher, data: bytes) -> None:
    panics = dispatcher.stats.panics
    for _ in range(2):  # the second time may come from the fast path
        reply = dispatcher.serve(data, CLIENT)
        check_reply(data, reply)
        assert_size(data, reply, dispatcher.proto)
    assert dispatcher.stats.panics == panics, "a plugin raised on this input"
    qid = (int.from_bytes(data[:2], "big") + 1) & 0xFFFF if len(data) >= 2 else 7
    assert_probe_answered(dispatcher.serve(probe(qid), CLIENT), qid)


def test_compressed_question_is_not_stored_for_the_fast_path(dispatcher: Dispatcher) -> None:
    """Regression: a question name ending in a compression pointer (to the header's zero byte
    at offset 4, i.e. the root) was stored, and every later hit spliced the compressed name
    into the stored, uncompressed reply: a corrupt packet."""
    header = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 1)
    name = b"\x05kubia\x07default\x03svc\x07cluster\x05local\xc0\x04"
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    data = header + name + b"\x00\x01\x00\x01" + opt
    for _ in range(3):
        msg = check_reply(data, dispatcher.serve(data, CLIENT))
        assert msg is not None
        assert [rd.address for rrset in msg.answer for rd in rrset] == [KUBIA_IP]


@pytest.fixture(scope="module", params=["udp", "tcp"])
def any_dispatcher(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dispatcher]:
    """The demo cluster with the *any* plugin in front (RFC 8482 HINFO for every ANY)."""
    text = DEMO_COREFILE.replace("    errors\n", "    errors\n    any\n")
    server = start_server(text, tmp_path_factory.mktemp("any"))
    try:
        yield server.dispatcher(request.param)
    finally:
        server.stop()


def test_compressed_any_question_is_not_stored_for_the_fast_path(
        any_dispatcher: Dispatcher) -> None:
    """Regression: the RFC 8482 ANY answer was stored for a compressed question too."""
    dispatcher = any_dispatcher
    header = struct.pack("!HHHHHH", 0x4321, 0x0100, 1, 0, 0, 1)
    name = b"\x01x\x05kubia\x07default\x03svc\x07cluster\x05local\xc0\x04"
    data = header + name + b"\x00\xff\x00\x01" + b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    for _ in range(3):
        msg = check_reply(data, dispatcher.serve(data, CLIENT))
        assert msg is not None and msg.rcode() == dns.rcode.NOERROR


@pytest.mark.parametrize("label", [b"l\xdf\x9cal", b"\x00\x00", "bücher".encode()])
def test_any_for_a_name_that_is_not_a_hostname_is_answered(any_dispatcher: Dispatcher,
                                                           label: bytes) -> None:
    """Regression (found by bench/fuzz_atheris.py): the ANY answer was built from the name as
    text, which dnslib re-encodes with IDNA; a binary or non-ASCII label raised, and the query
    got no reply at all."""
    dispatcher = any_dispatcher
    data = (struct.pack("!HHHHHH", 0xDB77, 0x0100, 1, 0, 0, 0) + bytes([len(label)]) + label
            + b"\x00\x00\xff\x00\x01")
    for _ in range(2):
        msg = check_reply(data, dispatcher.serve(data, CLIENT))
        assert msg is not None and msg.rcode() == dns.rcode.NOERROR
        assert msg.answer[0].name.labels[0] == label


def test_any_answers_do_not_grow_the_store_without_bound(
        any_dispatcher: Dispatcher) -> None:
    """Regression: stored ANY answers skipped the store's size bound, so random names grew
    memory without limit."""
    dispatcher = any_dispatcher
    dispatcher.store.max_bytes = 50 * 400
    peak = 0
    for i in range(200):
        q = dns.message.make_query(f"n{i}.example.com.", "ANY", use_edns=0)
        check_reply(q.to_wire(), dispatcher.serve(q.to_wire(), CLIENT))
        assert dispatcher.store.bytes <= 50 * 400
        assert len(dispatcher.store) <= 50
        peak = max(peak, len(dispatcher.store))
    # The peak, not the final count: the data version is process-wide, and a reload by any
    # other server in this test process (bump(None)) empties every store at any moment.
    # What this test guards is that ANY answers are stored at all and stay within the bound.
    assert peak >= 20 and dispatcher.store.evictions > 0


@pytest.fixture(scope="module")
def client(demo: Running) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.connect(("127.0.0.1", demo.port))
        s.settimeout(3)
        yield s


@settings(max_examples=120, deadline=timedelta(seconds=5),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=datagrams())
def test_udp_replies_are_wellformed(client: socket.socket, data: bytes) -> None:
    # The fuzz input twice, then a valid query. Replies are matched by ID, not by order: a name
    # that goes to the upstream (forward) is answered after the cluster probe behind it. No
    # waiting on a timeout to prove silence: the probe's reply ends the wait.
    qid = (int.from_bytes(data[:2], "big") + 1) & 0xFFFF if len(data) >= 2 else 7
    client.send(data)
    client.send(data)
    client.send(probe(qid))
    fuzz_id = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
    want = 0 if expects_silence(data) else 2
    fuzz_replies: list[bytes] = []
    probe_reply: bytes | None = None
    while probe_reply is None or len(fuzz_replies) < want:
        reply = client.recv(65535)
        rid = int.from_bytes(reply[:2], "big")
        if rid == qid and probe_reply is None and reply[12:].startswith(probe(qid)[12:-4]):
            probe_reply = reply
        elif rid == fuzz_id and len(fuzz_replies) < want:
            fuzz_replies.append(reply)
        # anything else: a late duplicate of an earlier example's reply
    for reply in fuzz_replies:
        check_reply(data, reply)
        assert_size(data, reply, "udp")
    assert_probe_answered(probe_reply, qid)


def test_the_atheris_target_serves_its_seeds_in_the_kubeadm_setting() -> None:
    """bench/fuzz_atheris.py's server (atheris itself is optional): its seeds, a forwarded
    name and the probe are answered, and everything it started stops."""
    import importlib.util

    if not dnsmasq_available():
        pytest.skip("needs dnsmasq (the local upstream): scripts/system-deps")
    path = Path(__file__).resolve().parents[2] / "bench" / "fuzz_atheris.py"
    spec = importlib.util.spec_from_file_location("fuzz_atheris", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    stops: list[Callable[[], object]] = []
    try:
        server = mod.build_server("kubeadm", stops)
        d = server.dispatcher("udp")
        for i, (name, qtype, kw) in enumerate(mod.SEED_QUERIES):
            data = dns.message.make_query(name, qtype, id=100 + i, **kw).to_wire()
            check_reply(data, d.serve(data, CLIENT))
        ext = dns.message.make_query("ext3.example.com.", "A", id=99).to_wire()
        msg = check_reply(ext, d.serve(ext, CLIENT))
        assert msg is not None and [rd.address for rrset in msg.answer for rd in rrset] == [
            EXT["ext3.example.com"]]
        assert_probe_answered(d.serve(probe(4242), CLIENT), 4242)
    finally:
        for stop in reversed(stops):
            stop()
