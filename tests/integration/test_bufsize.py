"""bufsize over real sockets: the EDNS size a reply is cut to and advertises, and the size
forward passes upstream."""

from __future__ import annotations

from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from dnslib import QTYPE, DNSRecord

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.server.app import KdnsServer
from tests.conftest import Running, start_server
from tests.integration.test_forward import FakeUpstream

N_ADDRS = 150  # ~2.5 kB of A records: more than 1232, less than 4096


class SizeUpstream(FakeUpstream):
    """Records the EDNS payload size each query offered (None: no OPT)."""

    def __init__(self) -> None:
        self.sizes: list[int | None] = []
        super().__init__({"up.fwd.test.": "192.0.2.99"})

    def replies(self, data: bytes, proto: str) -> list[bytes]:
        q = DNSRecord.parse(data)
        self.sizes.append(next((int(r.rclass) for r in q.ar if r.rtype == QTYPE.OPT), None))
        return super().replies(data, proto)


@pytest.fixture(scope="module")
def upstream() -> Iterator[SizeUpstream]:
    up = SizeUpstream()
    yield up
    up.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, upstream: SizeUpstream) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("bufsize")
    hosts = tmp / "hosts"
    lines = [f"10.1.{i // 250}.{i % 250 + 1} big.a.test big.b.test big.c.test"
             for i in range(N_ADDRS)]
    hosts.write_text("\n".join(lines) + "\n")
    server = start_server(f"""\
        a.test:53 {{
            bufsize
            hosts {hosts} a.test
        }}
        b.test:53 {{
            hosts {hosts} b.test
        }}
        c.test:53 {{
            bufsize 600
            hosts {hosts} c.test
        }}
        fwd.test:53 {{
            bufsize 1000
            forward . {upstream.addr}
        }}
        """, tmp)
    try:
        yield Running(server)
    finally:
        server.stop()


def ask(run: Running, name: str, payload: int | None, tcp: bool = False,
        ) -> tuple[dns.message.Message, int]:
    if payload is None:
        q = dns.message.make_query(name, "A", use_edns=False)
    else:
        q = dns.message.make_query(name, "A", use_edns=0, payload=payload)
    if tcp:
        r = dns.query.tcp(q, "127.0.0.1", port=run.port, timeout=3)
    else:
        r = dns.query.udp(q, "127.0.0.1", port=run.port, timeout=3, ignore_trailing=True)
    return r, len(r.to_wire())


def count(r: dns.message.Message) -> int:
    return sum(len(rs) for rs in r.answer)


@pytest.mark.parametrize(("name", "payload", "limit", "advertised"), [
    ("big.a.test.", 4096, 1232, 1232),   # default SIZE 1232
    ("big.c.test.", 4096, 600, 600),     # bufsize 600
    ("big.a.test.", 800, 800, 800),      # the client offers less: its size stands
    ("big.a.test.", 100, 512, 512),      # below 512 counts as 512 (RFC 6891)
])
def test_udp_reply_is_cut_to_the_clamped_size(run: Running, name: str, payload: int,
                                              limit: int, advertised: int) -> None:
    for _ in range(2):  # slow path, then the stored reply
        r, size = ask(run, name, payload)
        assert size <= limit
        assert r.flags & dns.flags.TC
        assert r.edns == 0 and r.payload == advertised


def test_without_bufsize_the_client_size_is_used(run: Running) -> None:
    r, size = ask(run, "big.b.test.", 4096)
    assert size > 1232 and not r.flags & dns.flags.TC and count(r) == N_ADDRS
    assert r.payload == 1232, "kdns's own advertised size"


def test_tcp_is_not_cut(run: Running) -> None:
    r, _ = ask(run, "big.a.test.", 4096, tcp=True)
    assert count(r) == N_ADDRS and not r.flags & dns.flags.TC
    assert r.payload == 1232


def test_queries_without_edns_are_left_alone(run: Running) -> None:
    r, size = ask(run, "big.a.test.", None)
    assert size <= 512 and r.flags & dns.flags.TC and r.edns == -1


def test_forward_passes_the_clamped_size(run: Running, upstream: SizeUpstream) -> None:
    upstream.sizes.clear()
    r, _ = ask(run, "up.fwd.test.", 4096)
    assert r.rcode() == dns.rcode.NOERROR and r.payload == 1000
    r, _ = ask(run, "up.fwd.test.", 700)
    assert upstream.sizes[:1] == [1000]
    assert 700 in upstream.sizes, "a smaller offer goes upstream as it is"


@pytest.mark.parametrize(("line", "message"), [
    ("bufsize 511", "Corefile:2:13: bufsize: SIZE must be in [512, 4096], got 511"),
    ("bufsize 4097", "Corefile:2:13: bufsize: SIZE must be in [512, 4096], got 4097"),
    ("bufsize big", "Corefile:2:13: bufsize: SIZE must be an integer, got 'big'"),
    ("bufsize 1232 512", "Corefile:2:18: bufsize: takes one SIZE at most"),
    ("bufsize 1232 {\n    }", "Corefile:2:5: bufsize: takes no block"),
])
def test_bad_bufsize_is_a_located_error(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        KdnsServer(parse_corefile(f". {{\n    {line}\n}}\n", "Corefile")).build()
    assert str(exc.value) == message


def test_limits_are_accepted() -> None:
    for size in (512, 4096):
        text = f". {{\n    bufsize {size}\n    hosts\n}}\n"
        assert KdnsServer(parse_corefile(text, "Corefile"),).build().listeners
