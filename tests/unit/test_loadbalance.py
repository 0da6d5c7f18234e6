"""loadbalance: uniform shuffles on the slow path, an even cycle of orders for fast replies,
CNAMEs first, MX shuffled apart, nothing mutated in place, and setup errors with file:line:col."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import pytest
from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, TXT, A, DNSHeader, DNSQuestion, DNSRecord

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.plugins.base import Request, Response
from kdns.plugins.loadbalance.handler import MAX_ORDERS, LoadBalanceConfig, LoadBalanceHandler
from kdns.plugins.loadbalance.setup import setup
from kdns.plugins.loadbalance.weighted import WeightedPicker, WeightFileError, parse_weights
from kdns.plugins.setup_context import SetupContext

README = Path(__file__).resolve().parents[2] / "kdns" / "plugins" / "loadbalance" / "README.md"
NAME = "web.shop.svc.cluster.local."


def request(qtype: int = QTYPE.A) -> Request:
    msg = DNSRecord(DNSHeader(id=99, rd=1), q=DNSQuestion(NAME, qtype))
    return Request(msg, NAME, NAME, qtype, 1, ("127.0.0.1", 5353), "udp", "dns://:53", ".", 512)


def addresses(n: int) -> list[RR]:
    return [RR(NAME, QTYPE.A, rdata=A(f"10.0.0.{i}"), ttl=5) for i in range(1, n + 1)]


class Backend:
    """The next plugin: the same records (the same RR objects) every time."""

    def __init__(self, records: list[RR], *, fast: bool = False, rcode: int = RCODE.NOERROR) -> None:
        self.records = records
        self.fast = fast
        self.rcode = rcode
        self.replies: list[DNSRecord] = []

    def __call__(self, req: Request) -> Response:
        reply = DNSRecord(DNSHeader(id=req.msg.header.id, qr=1, aa=1, rcode=self.rcode),
                          q=req.msg.q)
        reply.rr.extend(self.records)
        reply.add_ar(RR("extra.example.", QTYPE.A, rdata=A("192.0.2.1")))
        self.replies.append(reply)
        return Response(reply, "kubernetes", fast=self.fast, generation=3)


def key(rr: RR) -> str:
    return f"{QTYPE[rr.rtype]} {rr.rdata}"


def handler(seed: int = 1) -> LoadBalanceHandler:
    return LoadBalanceHandler(rng=random.Random(seed))


# ---------------------------------------------------------------------------------------------
# slow path: uniform shuffle every time


def test_slow_path_every_record_leads_about_equally_often() -> None:
    records = addresses(4)
    h, backend = handler(), Backend(records)
    firsts: Counter[str] = Counter()
    orders = set()
    for _ in range(4000):
        resp = h.serve(request(), backend)
        assert resp.variants is None and not resp.fast
        assert sorted(map(key, resp.msg.rr)) == sorted(map(key, records))
        firsts[key(resp.msg.rr[0])] += 1
        orders.add(tuple(map(key, resp.msg.rr)))
    assert set(firsts) == set(map(key, records))
    assert all(850 <= c <= 1150 for c in firsts.values()), firsts  # 1000 expected, sd ~27
    assert len(orders) == 24  # every permutation of 4 shows up


def test_cname_first_then_other_records_then_addresses_then_mx() -> None:
    records = [
        RR(NAME, QTYPE.A, rdata=A("10.0.0.1")),
        RR(NAME, QTYPE.MX, rdata=MX("mx1.example.", 10)),
        RR(NAME, QTYPE.TXT, rdata=TXT("hello")),
        RR(NAME, QTYPE.AAAA, rdata=AAAA("fd00::1")),
        RR("alias.example.", QTYPE.CNAME, rdata=CNAME(NAME)),
        RR(NAME, QTYPE.MX, rdata=MX("mx2.example.", 20)),
        RR(NAME, QTYPE.A, rdata=A("10.0.0.2")),
        RR(NAME, QTYPE.MX, rdata=MX("mx3.example.", 30)),
    ]
    h, backend = handler(), Backend(records)
    mx_firsts: Counter[str] = Counter()
    addr_firsts: Counter[str] = Counter()
    for _ in range(600):
        rr = h.serve(request(QTYPE.ANY), backend).msg.rr
        types = [r.rtype for r in rr]
        assert types[:2] == [QTYPE.CNAME, QTYPE.TXT]
        assert set(types[2:5]) == {QTYPE.A, QTYPE.AAAA} and types[5:] == [QTYPE.MX] * 3
        addr_firsts[key(rr[2])] += 1
        mx_firsts[key(rr[5])] += 1
    assert len(addr_firsts) == 3 and min(addr_firsts.values()) > 120
    assert len(mx_firsts) == 3 and min(mx_firsts.values()) > 120


def test_glibc_order_for_a_cname_chain() -> None:
    records = [RR("a.example.", QTYPE.CNAME, rdata=CNAME("b.example.")),
               RR("b.example.", QTYPE.CNAME, rdata=CNAME(NAME)), *addresses(3)]
    h, backend = handler(), Backend(records)
    for _ in range(50):
        rr = h.serve(request(), backend).msg.rr
        assert [str(r.rname) for r in rr[:2]] == ["a.example.", "b.example."]


@pytest.mark.parametrize(("records", "rcode", "qtype"), [
    (addresses(1), RCODE.NOERROR, QTYPE.A),
    ([RR(NAME, QTYPE.CNAME, rdata=CNAME("x.")), *addresses(1)], RCODE.NOERROR, QTYPE.A),
    (addresses(3), RCODE.NXDOMAIN, QTYPE.A),
    (addresses(3), RCODE.NOERROR, QTYPE.AXFR),
    ([RR(NAME, QTYPE.TXT, rdata=TXT(str(i))) for i in range(5)], RCODE.NOERROR, QTYPE.TXT),
], ids=["one-address", "cname-and-one", "nxdomain", "axfr", "no-addresses"])
def test_replies_left_alone(records: list[RR], rcode: int, qtype: int) -> None:
    backend = Backend(records, fast=True, rcode=rcode)
    resp = handler().serve(request(qtype), backend)
    assert resp.msg is backend.replies[0] and resp.variants is None


def test_the_backends_message_and_records_are_not_mutated() -> None:
    records = addresses(5)
    backend = Backend(records, fast=True)
    h = handler()
    for fast in (True, False):
        backend.fast = fast
        resp = h.serve(request(), backend)
        original = backend.replies[-1]
        assert [key(r) for r in original.rr] == [key(r) for r in records]
        assert len(original.ar) == 1 and resp.msg is not original
        for msg in [resp.msg, *(resp.variants or [])]:
            assert msg.rr is not original.rr and msg.ar is not original.ar
            assert msg.header is not original.header and msg.header.rcode == original.header.rcode
            assert [str(r.rname) for r in msg.ar] == ["extra.example."]


# ---------------------------------------------------------------------------------------------
# fast path: a cycle of orders the server hands out in turn


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_fast_reply_cycle_is_the_rotations_so_each_record_leads_once(n: int) -> None:
    records = addresses(n)
    resp = handler(n).serve(request(), Backend(records, fast=True))
    assert resp.fast and resp.generation == 3 and resp.plugin == "kubernetes"
    assert resp.variants is not None and len(resp.variants) == n - 1
    cycle = [resp.msg, *resp.variants]
    for msg in cycle:
        assert sorted(map(key, msg.rr)) == sorted(map(key, records))  # a permutation
        assert msg.q.qname == resp.msg.q.qname and msg.header.id == 99
    # every record first exactly once, and in every position exactly once
    for pos in range(n):
        assert sorted(key(m.rr[pos]) for m in cycle) == sorted(map(key, records))
    # the variants have their own lists: the server appends the OPT record to each
    assert len({id(m.ar) for m in cycle}) == n


def test_fast_reply_cycle_starts_from_a_uniform_order() -> None:
    records = addresses(3)
    h = handler()
    firsts = Counter(key(h.serve(request(), Backend(records, fast=True)).msg.rr[0])
                     for _ in range(3000))
    assert len(firsts) == 3 and all(850 <= c <= 1150 for c in firsts.values()), firsts


def test_fast_reply_with_many_records_stores_eight_orders_with_distinct_leaders() -> None:
    records = addresses(20)
    h = handler()
    firsts: Counter[str] = Counter()
    for _ in range(500):
        resp = h.serve(request(), Backend(records, fast=True))
        assert resp.variants is not None and len(resp.variants) == MAX_ORDERS - 1
        cycle = [resp.msg, *resp.variants]
        leaders = [key(m.rr[0]) for m in cycle]
        assert len(set(leaders)) == MAX_ORDERS
        for m in cycle:
            assert sorted(map(key, m.rr)) == sorted(map(key, records))
        firsts.update(leaders)
    # 500 cycles x 8 leaders = 4000 over 20 records: 200 each expected (sd ~13)
    assert len(firsts) == 20 and all(140 <= c <= 260 for c in firsts.values()), firsts


def test_fast_reply_with_addresses_and_mx_balances_both() -> None:
    records = [*addresses(4), *(RR(NAME, QTYPE.MX, rdata=MX(f"mx{i}.example.", 10))
                                for i in range(2))]
    resp = handler().serve(request(QTYPE.ANY), Backend(records, fast=True))
    assert resp.variants is not None and len(resp.variants) == 3
    cycle = [resp.msg, *resp.variants]
    assert len({key(m.rr[0]) for m in cycle}) == 4
    assert Counter(key(m.rr[4]) for m in cycle) == Counter({key(records[4]): 2, key(records[5]): 2})


def test_dispatcher_hands_out_the_cycle_in_turn() -> None:
    """With the real fast path: after the first (slow) query, replays rotate the leader."""
    from kdns.plugins.base import GENERATION
    from kdns.server.dispatch import Dispatcher, Zone, build_chain

    records = addresses(3)

    class Kube:
        name = "kubernetes"

        def serve(self, req: Request, nxt: object) -> Response:
            reply = DNSRecord(DNSHeader(id=req.msg.header.id, qr=1, aa=1), q=req.msg.q)
            reply.rr.extend(records)
            return Response(reply, "kubernetes", fast=True, generation=GENERATION.value)

    chain = build_chain([handler(), Kube()])
    disp = Dispatcher({".": Zone(".", chain, "dns://:53")}, "udp", "dns://:53")
    query = bytes(DNSRecord(DNSHeader(id=7, rd=1), q=DNSQuestion(NAME, QTYPE.A)).pack())
    leaders = []
    for _ in range(9):
        out = disp.serve(query, ("127.0.0.1", 1))
        assert out is not None
        leaders.append(str(DNSRecord.parse(out).rr[0].rdata))
    assert disp.counters.slow == 1  # the other eight were fast-path replays
    assert sorted(leaders[:3]) == sorted(leaders[3:6]) == sorted(leaders[6:]) == \
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


# ---------------------------------------------------------------------------------------------
# setup


def directive(line: str) -> tuple[object, SetupContext]:
    block = parse_corefile(f".:53 {{\n    {line}\n}}\n", "Corefile", env={})[0]
    return block.directives[0], SetupContext(block.keys, Path("."))


@pytest.mark.parametrize("line", ["loadbalance", "loadbalance round_robin",
                                  "loadbalance round_robin {\n    }",
                                  "loadbalance {\n prefer 10.0.0.0/8 fd00::/8\n prefer 192.0.2.1\n}"])
def test_setup_valid(line: str) -> None:
    d, ctx = directive(line)
    h = setup(d, ctx)  # type: ignore[arg-type]
    assert isinstance(h, LoadBalanceHandler) and h.cfg.policy == "round_robin"


INVALID = [
    ("loadbalance weighted", "2:17: loadbalance: missing weight file argument"),
    ("loadbalance weighted a b", "2:28: loadbalance: unexpected argument(s)"),
    ("loadbalance weighted /nonexistent/w {\n        reload 0\n    }",
     "2:26: loadbalance: cannot read weight file"),
    ("loadbalance weighted w {\n        reload soon\n    }",
     "3:16: loadbalance: invalid reload duration 'soon'"),
    ("loadbalance weighted w {\n        prefer 10.0.0.0/8\n    }",
     "3:9: loadbalance: unknown property 'prefer'"),
    ("loadbalance random", "2:17: loadbalance: unknown policy 'random' (expected round_robin"),
    ("loadbalance round_robin extra", "2:29: loadbalance: unexpected argument 'extra'"),
    ("loadbalance {\n        prefer\n    }", "3:9: loadbalance: prefer needs at least one CIDR"),
    ("loadbalance {\n        prefer 10.0.0.0/8 10.1.0/33\n    }",
     "3:27: loadbalance: invalid CIDR '10.1.0/33'"),
    ("loadbalance round_robin {\n        limit_answers 5\n    }",
     "3:9: loadbalance: unknown property 'limit_answers'"),
    ("loadbalance {\n        reload 10s\n    }", "3:9: loadbalance: unknown property 'reload'"),
]


@pytest.mark.parametrize(("line", "message"), INVALID, ids=[line for line, _ in INVALID])
def test_setup_invalid(line: str, message: str) -> None:
    d, ctx = directive(line)
    with pytest.raises(ConfigError) as info:
        setup(d, ctx)  # type: ignore[arg-type]
    assert str(info.value).startswith(f"Corefile:{message}"), str(info.value)


def test_readme_corefile_blocks_parse_and_set_up() -> None:
    blocks = re.findall(r"```corefile\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    for text in blocks:
        for block in parse_corefile(text, "README.md", env={}):
            (d,) = [d for d in block.directives if d.name.text == "loadbalance"]
            assert isinstance(setup(d, SetupContext(block.keys, Path("."))), LoadBalanceHandler)


# -- weighted ----------------------------------------------------------------------------------


WEIGHTS = """\
# comment
web.shop.svc.cluster.local
10.0.0.1 3
10.0.0.2 1

other.example.
2001:db8::1 255
"""


def test_weight_file_parses_as_coredns_does() -> None:
    assert parse_weights(WEIGHTS, "w") == {
        NAME: {"10.0.0.1": 3, "10.0.0.2": 1}, "other.example.": {"2001:db8::1": 255}}


@pytest.mark.parametrize(("text", "message"), [
    ("10.0.0.1\n", "w:1: wrong domain name '10.0.0.1'"),
    ("a.example\n10.0.0.300 2\n", "w:2: wrong IP address '10.0.0.300'"),
    ("a.example\n10.0.0.1 0\n", "w:2: wrong weight value '0'"),
    ("a.example\n10.0.0.1 256\n", "w:2: wrong weight value '256'"),
    ("10.0.0.1 2\n", "w:1: missing domain name"),
    ("a.example\n10.0.0.1 2 3\n", "w:2: could not parse weight line"),
])
def test_weight_file_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(WeightFileError, match=re.escape(message)):
        parse_weights(text, "w")


def test_weighted_setup_reports_the_file_line(tmp_path: Path) -> None:
    (tmp_path / "w").write_text("a.example\n10.0.0.1 x\n")
    block = parse_corefile(".:53 {\n    loadbalance weighted w\n}\n", "Corefile", env={})[0]
    with pytest.raises(ConfigError) as info:
        setup(block.directives[0], SetupContext(block.keys, tmp_path))
    assert str(info.value).startswith("Corefile:2:26: loadbalance: ")
    assert f"{tmp_path / 'w'}:2: wrong weight value 'x'" in str(info.value)


def weighted_handler(tmp_path: Path, seed: int = 7) -> LoadBalanceHandler:
    (tmp_path / "w").write_text(WEIGHTS)
    picker = WeightedPicker(tmp_path / "w", 0, rng=random.Random(seed))
    picker.load()
    return LoadBalanceHandler(LoadBalanceConfig("weighted", (), str(tmp_path / "w"), 0),
                              picker=picker)


def test_weighted_slow_path_draws_the_leader_by_weight(tmp_path: Path) -> None:
    h = weighted_handler(tmp_path)
    records = [RR(NAME, QTYPE.A, rdata=A(f"10.0.0.{i}"), ttl=5) for i in (1, 2, 3)]
    leads: Counter[str] = Counter()
    for _ in range(5000):
        out = h.serve(request(), Backend(records))
        leads[str(out.msg.rr[0].rdata)] += 1
        # as CoreDNS: the leader swaps places with the first record, nothing else moves
        got = [str(rr.rdata) for rr in out.msg.rr]
        i = ["10.0.0.1", "10.0.0.2", "10.0.0.3"].index(got[0])
        expected = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        expected[0], expected[i] = expected[i], expected[0]
        assert got == expected
    # weights 3, 1 and 1 (no entry): 60%, 20%, 20%
    assert 2700 < leads["10.0.0.1"] < 3300
    assert 800 < leads["10.0.0.2"] < 1200 and 800 < leads["10.0.0.3"] < 1200


def test_weighted_fast_path_cycle_leads_in_proportion(tmp_path: Path) -> None:
    h = weighted_handler(tmp_path)
    records = [RR(NAME, QTYPE.A, rdata=A(f"10.0.0.{i}"), ttl=5) for i in (1, 2)]
    out = h.serve(request(), Backend(records, fast=True))
    orders = [out.msg, *(out.variants or [])]
    assert len(orders) == MAX_ORDERS
    leads = Counter(str(m.rr[0].rdata) for m in orders)
    assert leads == {"10.0.0.1": 6, "10.0.0.2": 2}


def test_weighted_leaves_other_types_alone(tmp_path: Path) -> None:
    h = weighted_handler(tmp_path)
    records = [RR(NAME, QTYPE.MX, rdata=MX(f"mx{i}.example."), ttl=5) for i in (1, 2)]
    got = h.serve(request(QTYPE.MX), Backend(records))
    assert [str(rr.rdata) for rr in got.msg.rr] == ["10 mx1.example.", "10 mx2.example."]
