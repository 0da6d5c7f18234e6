"""loop: the directive, the probe name, counting probes in serve() (a loop simulated by
feeding the handler its own probe), the fatal message, and the prober against a real UDP
socket on 127.0.0.1 that answers or stays silent."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.plugins.base import Request, Response
from kdns.plugins.loop.handler import LoopHandler, probe_name
from kdns.plugins.loop.setup import setup
from kdns.plugins.setup_context import SetupContext

README = Path(__file__).resolve().parents[2] / "kdns" / "plugins" / "loop" / "README.md"


def handler_of(text: str, **process: Any) -> LoopHandler:
    block = parse_corefile(text, "Corefile")[0]
    ctx = SetupContext(block.keys, Path("."), process=dict(process))
    (d,) = [d for d in block.directives if d.name.text == "loop"]
    h = setup(d, ctx)
    published = ctx.shared["loop"] is h  # (an `is` assert would narrow h to Any)
    assert published
    return h


def fails(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        handler_of(text)
    return str(info.value)


# -- setup -----------------------------------------------------------------------------------------


def test_setup_uses_the_first_key_zone() -> None:
    h = handler_of("Cluster.Local:1053 example.org {\n  loop\n}\n")
    assert h.zone == "cluster.local."
    assert re.fullmatch(r"\d+\.\d+\.cluster\.local\.", h.qname)
    assert h.key_ports == (1053, None)
    assert re.fullmatch(r"\d+\.\d+\.", handler_of(".:53 {\n  loop\n}\n").qname)


@pytest.mark.parametrize(("line", "expected"), [
    ("loop 5s", "Corefile:2:8: loop: takes no arguments, got '5s'"),
    ("loop {\n  }", "Corefile:2:3: loop: loop does not take a block"),
])
def test_setup_errors(line: str, expected: str) -> None:
    assert fails(f".:53 {{\n  {line}\n}}\n") == expected


def test_probe_names_are_random() -> None:
    assert probe_name(".") != probe_name(".")
    assert probe_name("example.org.").endswith(".example.org.")


def test_readme_examples_parse() -> None:
    blocks = re.findall(r"```corefile\n(.*?)```", README.read_text(), re.S)
    assert blocks
    for text in blocks:
        block = parse_corefile(text, "README.md")[0]
        assert "loop" in {d.name.text for d in block.directives}


# -- counting --------------------------------------------------------------------------------------


def request(qname: str, qtype: str = "HINFO", client: tuple[str, int] = ("127.0.0.1", 40001)
            ) -> Request:
    msg = DNSRecord.question(qname, qtype)
    return Request(msg, qname, qname.lower(), getattr(QTYPE, qtype), 1, client, "udp",
                   "dns://127.0.0.1:1053", ".", 512)


class Next:
    """The next plugin: NXDOMAIN for everything, fast-path material."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, req: Request) -> Response:
        self.calls += 1
        reply = req.msg.reply()
        reply.header.rcode = RCODE.NXDOMAIN
        return Response(reply, "forward", fast=True, generation=3)


class Fwd:
    """What loop may read of the forward plugin: its upstreams' addresses."""

    class Up:
        def __init__(self, host: str, port: int) -> None:
            self.host, self.port, self.label = host, port, f"{host}:{port}"

    def __init__(self, *ups: tuple[str, int]) -> None:
        self.upstreams = [self.Up(h, p) for h, p in ups]


def looping_handler(**kw: Any) -> tuple[LoopHandler, list[str]]:
    fatal: list[str] = []
    process = {"fatal": fatal.append, "listen_addrs": [("127.0.0.1", 1053)]}
    h = LoopHandler(".", (1053,), process, kw.pop("shared", {}), qname="111.222.", **kw)
    return h, fatal


def test_the_probe_seen_three_times_is_fatal_once() -> None:
    h, fatal = looping_handler(shared={"forward": Fwd(("127.0.0.1", 1053))})
    nxt = Next()
    first = h.serve(request("111.222."), nxt)
    second = h.serve(request("111.222.", client=("127.0.0.1", 40002)), nxt)
    assert fatal == [] and nxt.calls == 2
    assert not first.fast and not second.fast and first.generation == 3
    third = h.serve(request("111.222.", client=("127.0.0.1", 40003)), nxt)
    assert fatal == [
        'plugin/loop: Loop (127.0.0.1:40003 -> 127.0.0.1:1053) detected for zone ".", see '
        'https://coredns.io/plugins/loop#troubleshooting. Query: "HINFO 111.222." '
        "(forward sends it to this server's own listener 127.0.0.1:1053)"
    ]
    # The loop is cut here: the looping query is not passed on again.
    assert nxt.calls == 2 and third.msg.header.rcode == RCODE.SERVFAIL
    assert third.plugin == "loop" and not third.fast
    h.serve(request("111.222."), nxt)
    assert len(fatal) == 1 and h.detected == fatal[0]


def test_message_names_other_upstreams() -> None:
    h, fatal = looping_handler(shared={"forward": Fwd(("10.0.0.1", 53), ("10.0.0.2", 53))})
    for _ in range(3):
        h.serve(request("111.222."), Next())
    assert fatal[0].endswith("(forward upstreams: 10.0.0.1:53, 10.0.0.2:53)")


def test_message_without_forward() -> None:
    h, fatal = looping_handler()
    for _ in range(3):
        h.serve(request("111.222."), Next())
    assert fatal[0].endswith('Query: "HINFO 111.222."')


def test_probe_name_is_case_insensitive() -> None:
    h, fatal = looping_handler()
    for name in ("111.222.", "111.222.", "111.222."):
        h.serve(request(name.upper()), Next())
    assert len(fatal) == 1


@pytest.mark.parametrize(("qname", "qtype"), [("111.222.", "A"), ("111.223.", "HINFO"),
                                              ("x.111.222.", "HINFO")])
def test_other_queries_pass_through(qname: str, qtype: str) -> None:
    h, fatal = looping_handler()
    nxt = Next()
    for _ in range(4):
        resp = h.serve(request(qname, qtype), nxt)
        assert resp.fast
    assert nxt.calls == 4 and fatal == [] and h.seen == 0


def test_disabled_handler_is_a_pass_through() -> None:
    h, fatal = looping_handler()
    h.off = True
    nxt = Next()
    for _ in range(5):
        h.serve(request("111.222."), nxt)
    assert fatal == [] and nxt.calls == 5


def test_without_a_fatal_hook_it_logs(caplog: pytest.LogCaptureFixture) -> None:
    h = LoopHandler(".", qname="1.2.")
    for _ in range(3):
        h.serve(request("1.2."), Next())
    assert h.detected is not None and "(? -> ?)" not in h.detected
    assert any("detected for zone" in r.message for r in caplog.records)


# -- target ----------------------------------------------------------------------------------------


def test_target_prefers_a_listener_on_the_block_port() -> None:
    h = LoopHandler(".", (1053,), {"listen_addrs": [("127.0.0.1", 5300), ("127.0.0.1", 1053)]})
    assert h.target() == ("127.0.0.1", 1053)
    h = LoopHandler(".", (None,), {"listen_addrs": [("127.0.0.1", 5300), ("::", 5301)],
                                   "dns_port": 5301})
    assert h.target() == ("::1", 5301)
    h = LoopHandler(".", (None,), {"listen_addrs": [("0.0.0.0", 41000)]})
    assert h.target() == ("127.0.0.1", 41000)
    assert LoopHandler(".", (None,), {"listen_addrs": []}).target() is None


# -- the prober against real sockets ---------------------------------------------------------------


class Responder:
    """A UDP socket on 127.0.0.1 that passes each datagram to the handler (like the server's
    chain) and answers it, or drops the answer while ``silent`` is set."""

    def __init__(self, handler: LoopHandler) -> None:
        self.handler = handler
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.addr: tuple[str, int] = self.sock.getsockname()
        self.silent = threading.Event()
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, client = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            msg = DNSRecord.parse(data)
            name = str(msg.q.qname)
            req = Request(msg, name, name.lower(), msg.q.qtype, 1, client, "udp", "x", ".", 512)
            resp = self.handler.serve(req, Next())
            self.received += 1
            if not self.silent.is_set():
                self.sock.sendto(resp.msg.pack(), client)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def prober() -> Iterator[tuple[LoopHandler, Responder]]:
    h = LoopHandler(".", (None,), {}, window=5.0, probe_timeout=0.2, retry=0.05, grace=0.1)
    r = Responder(h)
    h.process["listen_addrs"] = [r.addr]
    try:
        yield h, r
    finally:
        h.stop()
        r.close()


def wait_for(cond: Any, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_answered_probe_disables_the_plugin(prober: tuple[LoopHandler, Responder]) -> None:
    h, r = prober
    h.started()
    assert wait_for(lambda: h.off)
    assert r.received == 1 and h.seen == 1 and h.detected is None
    assert h.address == r.addr


def test_unanswered_probe_is_retried_and_the_count_reset(
        prober: tuple[LoopHandler, Responder]) -> None:
    h, r = prober
    r.silent.set()
    h.started()
    assert wait_for(lambda: r.received >= 4)
    # Each unanswered probe was seen once, then the count started over: no loop.
    assert not h.off and h.detected is None and h.seen <= 1
    r.silent.clear()
    assert wait_for(lambda: h.off)
    assert h.detected is None


def test_window_ends_probing(tmp_path: Path) -> None:
    h = LoopHandler(".", (None,), {}, window=0.3, probe_timeout=0.05, retry=0.02)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))  # bound and never read: every probe goes unanswered
    try:
        h.process["listen_addrs"] = [sock.getsockname()]
        h.started()
        assert wait_for(lambda: h.off)
    finally:
        h.stop()
        sock.close()


def test_stop_ends_the_prober_promptly(prober: tuple[LoopHandler, Responder]) -> None:
    h, r = prober
    r.silent.set()
    h.started()
    assert wait_for(lambda: r.received >= 1)
    thread = h._thread
    assert thread is not None and thread.is_alive()  # probing, inside a 5 s window
    h.stop()
    # stop() waits at most probe_timeout + 1 s for the prober; it must have ended by then,
    # not be left running out its window.
    assert not thread.is_alive() and h.off
