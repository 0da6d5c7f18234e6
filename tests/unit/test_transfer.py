"""transfer: its syntax and located errors, message cutting, NOTIFY coalescing and sending, and
the SOA serial rule the secondaries rely on (two views never share a serial)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.opcode
import k8s_cases as kc
import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.k8s.objects import parse_namespace, parse_service
from kdns.plugins import registry
from kdns.plugins.kubernetes.view import ViewBuilder
from kdns.plugins.setup_context import SetupContext
from kdns.plugins.transfer.handler import TransferHandler, chunks
from kdns.plugins.transfer.notify import MIN_INTERVAL, Notifier, send_notify
from kdns.plugins.transfer.setup import parse_target
from kdns.server.app import KdnsServer, ServeOptions


def _setup(body: str, zone: str = "cluster.local") -> object:
    block = parse_corefile(f"{zone}:53 {{\n    {body}\n}}\n", "Corefile")[0]
    d = block.directives[0]
    func = registry.setup_func(d.name.text)
    assert func is not None
    return func(d, SetupContext(block.keys, Path("."), process={}))


@pytest.mark.parametrize("body", [
    "transfer {\n        to *\n    }",
    "transfer cluster.local {\n        to 10.0.0.1 10.0.0.2:5300 [::1]:53 fd00::1\n    }",
    "transfer {\n        to 10.0.0.1\n        to 10.0.0.2\n    }",
])
def test_valid(body: str) -> None:
    h = _setup(body)
    assert isinstance(h, TransferHandler) and h.rules[0].zones == ("cluster.local.",)


def test_targets_parse_as_coredns_does() -> None:
    assert str(parse_target("10.0.0.1")) == "10.0.0.1:53"
    assert str(parse_target("10.0.0.1:5300")) == "10.0.0.1:5300"
    assert str(parse_target("[fd00::1]:5300")) == "[fd00::1]:5300"
    assert str(parse_target("fd00::1")) == "[fd00::1]:53"


@pytest.mark.parametrize(("body", "where", "message"), [
    ("transfer", "2:5", "'to' is required"),
    ("transfer {\n    }", "2:5", "'to' is required"),
    ("transfer {\n        to\n    }", "3:9", "to needs at least one address"),
    ("transfer {\n        to ns1.example.org\n    }", "3:12", "not an IP address"),
    ("transfer {\n        to 10.0.0.1:99999\n    }", "3:12", "invalid port"),
    ("transfer {\n        to [fd00::1\n    }", "3:12", "not an IP address"),
    ("transfer {\n        from 10.0.0.1\n    }", "3:9", "unknown property 'from'"),
    ("transfer {\n        to 10.0.0.1 {\n        }\n    }", "3:9", "does not take a block"),
    ("transfer bad..zone {\n        to *\n    }", "2:14", "invalid zone"),
])
def test_errors_are_located(body: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _setup(body)
    assert str(exc.value).startswith(f"Corefile:{where}: transfer: ")
    assert message in str(exc.value)


def test_a_zone_nothing_can_transfer_is_a_located_error(tmp_path: Path) -> None:
    text = (".:53 {\n    transfer example.org {\n        to *\n    }\n"
            "    kubernetes cluster.local {\n        manifests x\n    }\n}\n")
    server = KdnsServer(parse_corefile(text, "Corefile"), ServeOptions(config_dir=tmp_path))
    with pytest.raises(ConfigError, match=r"^Corefile:2:5: transfer: no plugin .* "
                                          r"'example.org.'"):
        server.build()


def test_a_rule_for_the_root_covers_the_zones_below_it(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_text('{"kind": "List", "items": []}')
    text = (".:53 {\n    transfer {\n        to 127.0.0.2:5300 *\n    }\n"
            "    kubernetes cluster.local in-addr.arpa {\n        manifests empty.json\n    }\n}\n")
    server = KdnsServer(parse_corefile(text, "Corefile"),
                        ServeOptions(config_dir=tmp_path)).build()
    (handler,) = [h for b in server.blocks for h in b.handlers if h.name == "transfer"]
    assert handler.notifier is not None
    assert handler.notifier._by_zone == {"cluster.local.": [("127.0.0.2", 5300)]}


def test_messages_are_cut_in_order_within_the_budget() -> None:
    records = [RR(f"host{i}.example.org.", QTYPE.A, rdata=A(f"10.0.{i // 250}.{i % 250}"))
               for i in range(3000)]
    runs = chunks(records, budget=15 * 1024)
    assert [rr for run in runs for rr in run] == records
    assert len(runs) > 2
    for run in runs:
        msg = DNSRecord()
        msg.rr = run
        assert len(msg.pack()) <= 15 * 1024
        # every compression pointer must fit in 14 bits: the message parses back identically
        assert [str(r.rname) for r in DNSRecord.parse(msg.pack()).rr] == \
            [str(r.rname) for r in run]


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_notify_coalesces_bursts_and_sends_the_newest_serial() -> None:
    clock = FakeClock()
    serial: dict[str, int | None] = {"cluster.local.": None}
    sent: list[tuple[str, int | None]] = []

    def send(zone: str, targets: list[tuple[str, int]]) -> set[tuple[str, int]]:
        sent.append((zone, serial[zone]))
        return set(targets)

    n = Notifier([("cluster.local.", "127.0.0.1", 53)], serial.get, now=clock, send=send)
    n.tick()
    assert sent == [], "nothing before the zone is first served"
    serial["cluster.local."] = 1000
    n.tick()
    assert sent == [("cluster.local.", 1000)], "the first serving is notified"
    n.tick()
    assert len(sent) == 1, "an unchanged serial is not notified again"
    for s in (1001, 1002, 1003):  # a burst within the interval
        serial["cluster.local."] = s
        clock.t += MIN_INTERVAL / 4
        n.tick()
    assert len(sent) == 1
    clock.t += MIN_INTERVAL
    n.tick()
    assert sent[-1] == ("cluster.local.", 1003) and len(sent) == 2 and n.sent == 2


def test_notify_waits_longer_for_zones_slow_to_transfer() -> None:
    clock = FakeClock()
    serial = {"cluster.local.": 1}
    sent: list[int] = []
    slow = 2.5  # seconds the last transfer took to build: NOTIFY at most every 10 s

    def send(zone: str, targets: list[tuple[str, int]]) -> set[tuple[str, int]]:
        sent.append(serial[zone])
        return set(targets)

    n = Notifier([("cluster.local.", "127.0.0.1", 53)], serial.get, now=clock, send=send,
                 interval=lambda: max(MIN_INTERVAL, 4 * slow))
    n.tick()
    for s in range(2, 12):
        serial["cluster.local."] = s
        clock.t += 1.0
        n.tick()
    assert sent == [1, 11], "one NOTIFY per ten seconds, with the newest serial"


def _secondary(answer: bool) -> tuple[socket.socket, list[dns.message.Message], threading.Thread]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    got: list[dns.message.Message] = []

    def run() -> None:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                data, addr = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            msg = dns.message.from_wire(data)
            got.append(msg)
            if answer:
                reply = dns.message.make_response(msg)
                sock.sendto(reply.to_wire(), addr)
                return

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return sock, got, t


def test_send_notify_over_udp_and_retry_the_silent() -> None:
    ok_sock, ok_got, ok_t = _secondary(answer=True)
    mute_sock, mute_got, mute_t = _secondary(answer=False)
    try:
        ok = ok_sock.getsockname()
        mute = mute_sock.getsockname()
        acked = send_notify("cluster.local.", [ok, mute], tries=2, timeout=0.3)
        ok_t.join(3)
        mute_t.join(4)
    finally:
        ok_sock.close()
        mute_sock.close()
    assert acked == {ok}
    assert len(ok_got) == 1 and len(mute_got) == 2, "the silent target is tried again"
    msg = ok_got[0]
    assert msg.opcode() == dns.opcode.NOTIFY and msg.flags & dns.flags.AA
    assert str(msg.question[0].name) == "cluster.local." and msg.question[0].rdtype == 6


def test_two_views_never_share_a_serial() -> None:
    clock = FakeClock()
    clock.t = 1_000_000.2
    b = ViewBuilder(("services", "namespaces"), now=clock, min_interval=0.001)
    b.start()
    try:
        for kind in ("services", "namespaces"):
            b.begin_list(kind)
            b.end_list(kind, set())
        assert b.wait_synced(5)
        b.upsert("namespaces", parse_namespace(kc._ns("default")))
        first_gen = b.view.generation
        deadline = time.monotonic() + 5
        while b.view.generation == first_gen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert b.view.namespace_exists("default")
        assert b.view.serial == 1_000_000, "a change in the same second keeps the serial for now"
        clock.t = 1_000_001.1  # the clock moves on: the same data comes out under a new serial
        svc_gen = b.view.generation
        deadline = time.monotonic() + 5
        while b.view.serial == 1_000_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert b.view.serial == 1_000_001 and b.view.generation > svc_gen
        clock.t = 1_000_005.5  # a change in a later second takes that second at once
        b.upsert("services", parse_service(kc._svc("default", "x", ips=("10.0.0.1",))))
        deadline = time.monotonic() + 5
        while b.view.service("default", "x") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert b.view.serial == 1_000_005
    finally:
        b.stop()
