"""cache plugin: setup grammar (valid and located errors) and the handler driven directly.

The handler runs with an injected clock and a fake next plugin (the rest of the chain: it
answers from a table and counts the queries it sees), so nothing here sleeps or opens a socket.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, DNSRecord

from kdns.config.model import ConfigError, Directive
from kdns.config.parser import parse_corefile
from kdns.plugins.base import Request, Response
from kdns.plugins.cache.handler import CacheHandler, classify
from kdns.plugins.cache.setup import CacheConfig, effective_capacity, parse_config, setup
from kdns.plugins.setup_context import SetupContext

README = Path(__file__).resolve().parents[2] / "kdns" / "plugins" / "cache" / "README.md"

# ---------------------------------------------------------------------------------------------
# helpers


def directive(text: str) -> tuple[Directive, SetupContext]:
    """The ``cache`` directive of a one-block Corefile, and a SetupContext from its keys."""
    block = parse_corefile(text, "Corefile", env={})[0]
    ctx = SetupContext(keys=block.keys, config_dir=Path("."))
    d = next(d for d in block.directives if d.name.text == "cache")
    return d, ctx


def config(body: str, keys: str = ".") -> CacheConfig:
    d, ctx = directive(f"{keys} {{\n{body}\n}}\n")
    return parse_config(d, ctx)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def query(qname: str, qtype: str = "A", *, do: bool = False, cd: bool = False,
          qid: int = 4242) -> Request:
    msg = DNSRecord.question(qname, qtype)
    msg.header.id = qid
    msg.header.cd = int(cd)
    if do:
        msg.add_ar(EDNS0(flags="do", udp_len=1232))
    return Request(msg, qname if qname.endswith(".") else qname + ".", qname.lower().rstrip(".") + ".",
                   getattr(QTYPE, qtype), 1, ("127.0.0.1", 40000), "udp", "dns://:53", ".", 512, do)


def soa(zone: str, ttl: int, minimum: int) -> RR:
    return RR.fromZone(f"{zone} {ttl} IN SOA ns.{zone} host.{zone} 1 7200 1800 86400 {minimum}")[0]


Answer = Callable[[Request], DNSRecord]


def a_record(ip: str = "192.0.2.1", ttl: int = 300) -> Answer:
    def build(req: Request) -> DNSRecord:
        reply = req.msg.reply()
        reply.add_answer(*RR.fromZone(f"{req.qname} {ttl} IN A {ip}"))
        return reply
    return build


def rcode_reply(rcode: int, *auth: RR, tc: bool = False) -> Answer:
    def build(req: Request) -> DNSRecord:
        reply = req.msg.reply()
        reply.header.rcode = rcode
        reply.header.tc = int(tc)
        for r in auth:
            reply.add_auth(r)
        return reply
    return build


class Upstream:
    """The next plugin: answers with ``answer`` (or raises ``fail``) and counts queries."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer = answer or a_record()
        self.fail: Exception | None = None
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, req: Request) -> Response:
        with self.lock:
            self.calls.append(req.qname)
        if self.fail is not None:
            raise self.fail
        return Response(self.answer(req), "forward")


def inline(job: Callable[[], None]) -> None:
    job()


@dataclass
class Rig:
    handler: CacheHandler
    clock: Clock
    up: Upstream

    def ask(self, qname: str = "www.example.com.", qtype: str = "A", **kw: Any) -> Response:
        return self.handler.serve(query(qname, qtype, **kw), self.up)


def rig(body: str = "cache", *, answer: Answer | None = None, shared: dict[str, Any] | None = None,
        threaded: bool = False) -> Rig:
    clock = Clock()
    handler = CacheHandler(config(body), shared=shared, now=clock,
                           background=None if threaded else inline)
    return Rig(handler, clock, Upstream(answer))


def ttls(resp: Response) -> list[int]:
    return [int(r.ttl) for r in (*resp.msg.rr, *resp.msg.auth, *resp.msg.ar)]


# ---------------------------------------------------------------------------------------------
# setup: valid


VALID: list[tuple[str, str, dict[str, Any]]] = [
    ("defaults", "cache", {"zones": (".",), "success_ttl": 3600, "denial_ttl": 1800,
                           "success_min_ttl": 5, "denial_min_ttl": 5, "success_capacity": 9984,
                           "denial_capacity": 9984, "servfail": 5.0, "prefetch": 0, "stale": 0.0,
                           "verify_stale": False, "keepttl": False}),
    ("ttl caps both", "cache 30", {"success_ttl": 30, "denial_ttl": 30}),
    ("ttl and zones", "cache 30 Example.ORG 10.0.0.0/24",
     {"success_ttl": 30, "zones": ("example.org.", "0.0.10.in-addr.arpa.")}),
    ("zones only", "cache example.org", {"zones": ("example.org.",), "success_ttl": 3600}),
    ("success", "cache {\n success 5000 60 2\n}",
     {"success_capacity": 4864, "success_ttl": 60, "success_min_ttl": 2}),
    ("denial overrides arg", "cache 30 {\n denial 2500 10\n}",
     {"denial_capacity": 2304, "denial_ttl": 10, "success_ttl": 30}),
    ("capacity floor", "cache {\n success 100\n}", {"success_capacity": 1024}),
    ("denial 0 disables denials", "cache example.org {\n denial 0\n}",
     {"disable_denial": ("example.org.",), "disable_success": ()}),
    ("success 0 disables successes", "cache {\n success 0 60\n}",
     {"disable_success": (".",), "success_ttl": 60}),
    ("min ttl zero", "cache {\n denial 9984 5 0\n}", {"denial_min_ttl": 0}),
    ("prefetch default", "cache {\n prefetch 10\n}",
     {"prefetch": 10, "prefetch_window": 60.0, "prefetch_percentage": 10}),
    ("prefetch zero window", "cache {\n prefetch 1 0s\n}",
     {"prefetch": 1, "prefetch_window": 0.0}),
    ("prefetch full", "cache {\n prefetch 3 2m 50%\n}",
     {"prefetch": 3, "prefetch_window": 120.0, "prefetch_percentage": 50}),
    ("serve_stale default", "cache {\n serve_stale\n}", {"stale": 3600.0, "verify_stale": False}),
    ("serve_stale verify", "cache {\n serve_stale 10m verify\n}", {"stale": 600.0, "verify_stale": True}),
    ("serve_stale immediate", "cache {\n serve_stale 1h IMMEDIATE\n}", {"stale": 3600.0}),
    ("servfail", "cache {\n servfail 30s\n}", {"servfail": 30.0}),
    ("servfail off", "cache {\n servfail 0\n}", {"servfail": 0.0}),
    ("servfail max", "cache {\n servfail 5m\n}", {"servfail": 300.0}),
    ("disable", "cache 30 {\n disable success cluster.local\n disable denial cluster.local Foo.\n}",
     {"disable_success": ("cluster.local.",), "disable_denial": ("cluster.local.", "foo.")}),
    ("disable everywhere", "cache example.org {\n disable denial\n}",
     {"disable_denial": ("example.org.",), "disable_success": ()}),
    ("keepttl", "cache {\n keepttl\n}", {"keepttl": True}),
]


@pytest.mark.parametrize(("body", "want"), [(b, w) for _, b, w in VALID], ids=[i for i, _, _ in VALID])
def test_setup_valid(body: str, want: dict[str, Any]) -> None:
    cfg = config(body)
    for field_name, value in want.items():
        assert getattr(cfg, field_name) == value, field_name


def test_setup_zones_default_to_block_keys() -> None:
    cfg = config("cache 10", keys="example.org:1053 10.0.0.0/23")
    assert cfg.zones == ("example.org.", "0.0.10.in-addr.arpa.", "1.0.10.in-addr.arpa.")


def test_setup_publishes_handler_and_is_once_per_block() -> None:
    d, ctx = directive(". {\ncache\n}\n")
    handler = setup(d, ctx)
    assert ctx.shared["cache"] is handler and handler.name == "cache"
    with pytest.raises(ConfigError, match=r"^Corefile:2:1: cache: cache may be used only once"):
        setup(d, ctx)


@pytest.mark.parametrize(("requested", "effective"),
                         [(1, 1024), (1023, 1024), (1024, 1024), (1279, 1024), (1280, 1280),
                          (9984, 9984), (10000, 9984)])
def test_effective_capacity(requested: int, effective: int) -> None:
    assert effective_capacity(requested) == effective


# ---------------------------------------------------------------------------------------------
# setup: located errors (line 2 is the cache line; block options start on line 3 at column 2)

INVALID: list[tuple[str, str]] = [
    ("cache 0", "2:7: cache: cache TTL can not be zero or negative: 0"),
    ("cache -5", "2:7: cache: cache TTL can not be zero or negative: -5"),
    ("cache 30 exa..mple", "2:10: cache: invalid zone 'exa..mple'"),
    ("cache 10.0.0.0/33", "2:7: cache: invalid CIDR '10.0.0.0/33'"),
    ("cache {\n success\n}", "3:2: cache: success needs CAPACITY [TTL] [MINTTL]"),
    ("cache {\n success lots\n}",
     "3:10: cache: success CAPACITY must be a non-negative integer, got 'lots'"),
    ("cache {\n denial -1\n}", "3:9: cache: denial CAPACITY must be a non-negative integer, got '-1'"),
    ("cache {\n denial 100 0\n}", "3:13: cache: cache TTL can not be zero or negative: 0"),
    ("cache {\n success 100 10s\n}", "3:14: cache: cache TTL can not be zero or negative: 10s"),
    ("cache {\n success 100 10 -1\n}", "3:17: cache: cache min TTL can not be negative: -1"),
    ("cache {\n success 100 10 1 2\n}", "3:19: cache: success takes at most 3 arguments"),
    ("cache {\n prefetch\n}", "3:2: cache: prefetch needs AMOUNT [DURATION] [PERCENTAGE%]"),
    ("cache {\n prefetch 1 1m 10% x\n}", "3:20: cache: prefetch needs AMOUNT"),
    ("cache {\n prefetch -1\n}", "3:11: cache: prefetch AMOUNT must be a non-negative integer, got '-1'"),
    ("cache {\n prefetch 2 soon\n}", "3:13: cache: invalid duration 'soon'"),
    ("cache {\n prefetch 2 1m 20\n}", "3:16: cache: last character of percentage should be `%`, got '20'"),
    ("cache {\n prefetch 2 1m x%\n}", "3:16: cache: percentage must be an integer, got 'x%'"),
    ("cache {\n prefetch 2 1m 95%\n}", "3:16: cache: percentage should fall in range [10, 90]: 95"),
    ("cache {\n prefetch 2 1m 9%\n}", "3:16: cache: percentage should fall in range [10, 90]: 9"),
    ("cache {\n serve_stale 1x\n}", "3:14: cache: invalid duration '1x'"),
    ("cache {\n serve_stale 1h before\n}", "3:17: cache: invalid value for serve_stale refresh mode"),
    ("cache {\n serve_stale 1h verify now\n}", "3:24: cache: serve_stale takes at most"),
    ("cache {\n servfail\n}", "3:2: cache: servfail needs one DURATION"),
    ("cache {\n servfail 1s 2s\n}", "3:14: cache: servfail needs one DURATION"),
    ("cache {\n servfail 6m\n}", "3:11: cache: caching SERVFAIL responses over 5 minutes is not permitted"),
    ("cache {\n servfail 5\n}", "3:11: cache: invalid duration '5'"),
    ("cache {\n disable\n}", "3:2: cache: disable needs success|denial [ZONES...]"),
    ("cache {\n disable positive\n}", "3:10: cache: cache type for disable must be success or"),
    ("cache {\n disable denial a..b\n}", "3:17: cache: invalid zone 'a..b'"),
    ("cache {\n keepttl yes\n}", "3:10: cache: keepttl takes no arguments"),
    ("cache {\n negative 100\n}", "3:2: cache: unknown property 'negative'"),
    ("cache {\n success 100 {\n }\n}", "3:2: cache: success does not take a block"),
]


@pytest.mark.parametrize(("body", "message"), INVALID, ids=[b.split("\n")[-2] if "\n" in b else b
                                                            for b, _ in INVALID])
def test_setup_invalid(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(body)
    assert str(info.value).startswith(f"Corefile:{message}"), str(info.value)


def test_readme_corefile_blocks_parse_and_set_up() -> None:
    blocks = re.findall(r"```corefile\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    for text in blocks:
        for block in parse_corefile(text, "README.md", env={}):
            for d in block.directives:
                if d.name.text == "cache":
                    parse_config(d, SetupContext(keys=block.keys, config_dir=Path(".")))


# ---------------------------------------------------------------------------------------------
# classification (pure)


def test_classify_table() -> None:
    cfg = CacheConfig()
    req = query("x.example.com.")
    ok = a_record(ttl=42)(req)
    assert classify(ok, cfg) == ("success", 42)
    assert classify(rcode_reply(RCODE.NOERROR)(req), cfg) is None  # NODATA without SOA
    assert classify(rcode_reply(RCODE.NXDOMAIN, soa("example.com.", 60, 30))(req), cfg) == ("denial", 30)
    assert classify(rcode_reply(RCODE.NOERROR, soa("example.com.", 20, 900))(req), cfg) == ("denial", 20)
    assert classify(rcode_reply(RCODE.SERVFAIL)(req), cfg) == ("denial", 5)
    for rc in (RCODE.REFUSED, RCODE.FORMERR, RCODE.NOTIMP, RCODE.YXDOMAIN):
        assert classify(rcode_reply(rc, soa("example.com.", 60, 30))(req), cfg) is None
    badvers = a_record()(req)
    badvers.add_ar(EDNS0(ext_rcode=1, udp_len=1232))
    assert classify(badvers, cfg) is None
    plain_opt = a_record(ttl=42)(req)
    plain_opt.add_ar(EDNS0(udp_len=1232, flags="do"))
    assert classify(plain_opt, cfg) == ("success", 42)


# ---------------------------------------------------------------------------------------------
# success, countdown, caps


def test_success_is_cached_and_counts_down() -> None:
    r = rig("cache")
    first = r.ask()
    assert first.plugin == "forward" and ttls(first) == [300]
    r.clock.advance(10.4)
    second = r.ask()
    # a hit may be replayed by the server's fast path, but only for up to a second
    assert second.plugin == "cache" and second.fast
    assert 0 < second.expires - time.monotonic() <= 1.0
    assert ttls(second) == [290]
    assert str(second.msg.rr[0].rdata) == "192.0.2.1"
    assert r.up.calls == ["www.example.com."]
    c = r.handler.counters
    assert (c.requests, c.hits_success, c.hits_denial, c.misses) == (2, 1, 0, 1)
    assert r.handler.entries("success") == 1 and r.handler.entries("denial") == 0


def test_success_expires() -> None:
    r = rig("cache", answer=a_record(ttl=20))
    r.ask()
    r.clock.advance(19.9)
    assert ttls(r.ask()) == [1]
    r.clock.advance(0.1)  # 20 s in the cache: 0 left, so it is gone
    resp = r.ask()
    assert resp.plugin == "forward" and len(r.up.calls) == 2


def test_ttl_never_increases_between_answers() -> None:
    r = rig("cache 30", answer=a_record(ttl=300))
    seen = []
    for _ in range(12):
        seen.append(ttls(r.ask())[0])
        r.clock.advance(2.5)
    assert seen[0] == 30 and seen == sorted(seen, reverse=True)
    assert len(r.up.calls) == 1


@pytest.mark.parametrize(("body", "upstream_ttl", "want"), [
    ("cache", 7200, 3600),
    ("cache 30", 300, 30),
    ("cache", 1, 5),                              # min TTL 5 s
    ("cache {\n success 9984 60 2\n}", 1, 2),     # MINTTL override
    ("cache {\n success 9984 60\n}", 600, 60),
])
def test_success_ttl_caps(body: str, upstream_ttl: int, want: int) -> None:
    r = rig(body, answer=a_record(ttl=upstream_ttl))
    assert ttls(r.ask()) == [want]
    r.clock.advance(want - 0.5)
    assert r.ask().plugin == "cache"
    r.clock.advance(0.5)
    assert r.ask().plugin == "forward"


def test_zero_ttl_with_zero_min_is_not_cached() -> None:
    r = rig("cache {\n success 9984 60 0\n}", answer=a_record(ttl=0))
    r.ask()
    r.ask()
    assert len(r.up.calls) == 2 and r.handler.entries("success") == 0


def test_min_ttl_of_all_records_rules() -> None:
    def cname_chain(req: Request) -> DNSRecord:
        reply = req.msg.reply()
        reply.add_answer(*RR.fromZone(f"{req.qname} 300 IN CNAME target.example.net."))
        reply.add_answer(*RR.fromZone("target.example.net. 40 IN A 192.0.2.9"))
        return reply
    r = rig("cache", answer=cname_chain)
    assert ttls(r.ask()) == [40, 40]
    r.clock.advance(15)
    assert ttls(r.ask()) == [25, 25]


def test_keepttl_serves_stored_ttl() -> None:
    r = rig("cache 60 {\n keepttl\n}")
    r.ask()
    r.clock.advance(45)
    resp = r.ask()
    assert resp.plugin == "cache" and ttls(resp) == [60]
    r.clock.advance(15)
    assert r.ask().plugin == "forward"


# ---------------------------------------------------------------------------------------------
# countdown: how long the server's fast path may replay a hit without asking the cache


def test_hit_may_be_replayed_counting_down_until_expiry() -> None:
    r = rig("cache", answer=a_record(ttl=100))
    r.ask()
    r.clock.advance(10.4)
    resp = r.ask()
    cd = resp.countdown
    assert cd is not None and not cd.fixed and cd.elapsed == 10 and ttls(resp) == [90]
    mono = time.monotonic()
    # the fast path's clock: born 10.4 s ago, the entry's 100 s end 89.6 s from now
    assert 10.3 < mono - cd.born < 10.5 and 89.5 < cd.until - mono < 89.7
    assert cd.tick()
    r.clock.advance(88.8)          # 0.8 s left: not worth a countdown, the 1 s limit applies
    late = r.ask()
    assert late.fast and late.countdown is None and ttls(late) == [1]


def test_countdown_stops_where_prefetch_must_decide() -> None:
    r = rig("cache {\n prefetch 2 1m 50%\n}", answer=a_record(ttl=100))
    r.ask()
    r.clock.advance(10)
    cd = r.ask().countdown
    assert cd is not None and 39.9 < cd.until - time.monotonic() < 40.1  # 50 s left from then on
    r.clock.advance(45)            # inside the prefetch window: every query reaches the cache
    assert r.ask().countdown is None


def test_keepttl_countdown_leaves_ttls_fixed() -> None:
    r = rig("cache 60 {\n keepttl\n}")
    r.ask()
    r.clock.advance(5)
    cd = r.ask().countdown
    assert cd is not None and cd.fixed and 54.9 < cd.until - time.monotonic() < 55.1


def test_ticks_keep_prefetch_popularity() -> None:
    """Replays never reach the cache; their once-a-second ticks count for popularity as the
    hits that reached it once a second did, so a name asked all the time is still prefetched."""
    def run(tick: bool) -> int:
        r = rig("cache {\n prefetch 3 10s 50%\n}", answer=a_record(ttl=100))
        r.ask()
        r.clock.advance(1)
        cd = r.ask().countdown     # hits=1; replayed from now on
        assert cd is not None
        for _ in range(10):
            r.clock.advance(5)
            if tick:
                assert cd.tick()
        r.ask()                    # 49 s left <= 50: popular only if the ticks counted
        return r.handler.counters.prefetches

    assert run(tick=True) == 1
    assert run(tick=False) == 0    # a 50 s gap resets the count to 1


def test_tick_stops_replay_of_an_evicted_or_replaced_entry() -> None:
    r = rig("cache {\n success 1024\n serve_stale 1h verify\n}", answer=a_record(ttl=100))
    for i in range(1024):
        r.ask(f"n{i}.example.com.")
    cds = [r.ask(f"n{i}.example.com.").countdown for i in (1, 0)][::-1]
    assert cds[0] is not None and cds[1] is not None
    for i in range(2, 1024):
        r.ask(f"n{i}.example.com.")  # n1 and n0 are now the least recently used
    assert cds[0].tick()           # a replay of n0 this second: n0 is used again
    r.ask("extra.example.com.")    # pushes out the least recently used: n1, not n0
    assert cds[0].tick() and not cds[1].tick()
    r.clock.advance(150)           # n0 expires and is refreshed (verify): a new entry
    assert r.ask("n0.example.com.").plugin == "forward"
    assert not cds[0].tick()


# ---------------------------------------------------------------------------------------------
# denial and errors


def test_nxdomain_with_soa_cached_for_soa_minimum() -> None:
    r = rig("cache", answer=rcode_reply(RCODE.NXDOMAIN, soa("example.com.", 60, 30)))
    first = r.ask("nope.example.com.")
    assert first.msg.header.rcode == RCODE.NXDOMAIN and ttls(first) == [30]
    r.clock.advance(29)
    hit = r.ask("nope.example.com.")
    assert hit.plugin == "cache" and hit.msg.header.rcode == RCODE.NXDOMAIN
    assert hit.msg.auth[0].rtype == QTYPE.SOA and ttls(hit) == [1]
    r.clock.advance(1)
    assert r.ask("nope.example.com.").plugin == "forward"
    assert r.handler.counters.hits_denial == 1 and r.handler.entries("denial") == 1


def test_nodata_with_soa_cached_and_denial_cap() -> None:
    r = rig("cache {\n denial 9984 10\n}", answer=rcode_reply(RCODE.NOERROR, soa("example.com.", 900, 900)))
    assert ttls(r.ask(qtype="AAAA")) == [10]
    r.clock.advance(9)
    hit = r.ask(qtype="AAAA")
    assert hit.plugin == "cache" and hit.msg.header.rcode == RCODE.NOERROR and not hit.msg.rr


@pytest.mark.parametrize("rcode", [RCODE.NXDOMAIN, RCODE.NOERROR])
def test_denial_without_soa_not_cached(rcode: int) -> None:
    r = rig("cache", answer=rcode_reply(rcode))
    r.ask()
    r.ask()
    assert len(r.up.calls) == 2 and r.handler.entries("denial") == 0


@pytest.mark.parametrize("rcode", [RCODE.REFUSED, RCODE.FORMERR, RCODE.NOTIMP])
def test_errors_never_cached(rcode: int) -> None:
    r = rig("cache", answer=rcode_reply(rcode, soa("example.com.", 60, 60)))
    r.ask()
    r.ask()
    assert len(r.up.calls) == 2


def test_truncated_not_cached() -> None:
    def truncated(req: Request) -> DNSRecord:
        reply = a_record()(req)
        reply.header.tc = 1
        return reply
    r = rig("cache", answer=truncated)
    r.ask()
    r.ask()
    assert len(r.up.calls) == 2


def test_servfail_cached_five_seconds_by_default() -> None:
    r = rig("cache", answer=rcode_reply(RCODE.SERVFAIL))
    r.ask()
    r.clock.advance(4.9)
    hit = r.ask()
    assert hit.plugin == "cache" and hit.msg.header.rcode == RCODE.SERVFAIL
    r.clock.advance(0.1)
    assert r.ask().plugin == "forward" and len(r.up.calls) == 2


@pytest.mark.parametrize(("body", "cached_for"), [("cache {\n servfail 0\n}", 0),
                                                  ("cache {\n servfail 30s\n}", 30)])
def test_servfail_duration(body: str, cached_for: int) -> None:
    r = rig(body, answer=rcode_reply(RCODE.SERVFAIL))
    r.ask()
    r.clock.advance(max(cached_for - 1, 0))
    assert r.ask().plugin == ("cache" if cached_for else "forward")


def test_mismatched_question_is_dropped() -> None:
    def wrong(req: Request) -> DNSRecord:
        return a_record()(query("other.example.com."))
    r = rig("cache", answer=wrong)
    r.ask()
    r.ask()
    assert len(r.up.calls) == 2 and r.handler.counters.drops == 2


def test_exception_from_next_propagates_and_caches_nothing() -> None:
    r = rig("cache")
    r.up.fail = TimeoutError("upstream timed out")
    with pytest.raises(TimeoutError):
        r.ask()
    assert r.handler.entries("success") == 0 and r.handler.counters.misses == 1


def test_success_replaces_denial_for_same_key() -> None:
    r = rig("cache", answer=rcode_reply(RCODE.NXDOMAIN, soa("example.com.", 5, 5)))
    r.ask()
    r.clock.advance(5)
    r.up.answer = a_record()
    r.ask()
    assert r.handler.entries("denial") == 0 and r.handler.entries("success") == 1


# ---------------------------------------------------------------------------------------------
# keys, echo, zones


def test_reply_echoes_client_id_flags_and_case() -> None:
    r = rig("cache")
    r.ask("www.example.com.", qid=1)
    q = query("WwW.ExAmple.COM.", qid=777)
    q.msg.header.rd = 0
    resp = r.handler.serve(q, r.up)
    h = resp.msg.header
    assert resp.plugin == "cache"
    assert (h.id, h.qr, h.rd, h.rcode) == (777, 1, 0, RCODE.NOERROR)
    assert str(resp.msg.q.qname) == "WwW.ExAmple.COM."
    assert str(resp.msg.rr[0].rname) == "WwW.ExAmple.COM."
    assert len(r.up.calls) == 1


def test_do_and_cd_bits_are_part_of_the_key() -> None:
    r = rig("cache")
    r.ask()
    r.ask(do=True)
    r.ask(cd=True)
    assert len(r.up.calls) == 3
    assert r.ask(do=True).plugin == "cache" and r.ask(cd=True).plugin == "cache"
    assert r.handler.entries("success") == 3


def test_qtype_and_name_are_part_of_the_key() -> None:
    r = rig("cache")
    r.ask("a.example.com.")
    r.ask("b.example.com.")
    r.ask("a.example.com.", "TXT")
    assert len(r.up.calls) == 3


def test_cache_zones_limit_what_is_cached() -> None:
    r = rig("cache example.org")
    r.ask("www.example.com.")
    r.ask("www.example.com.")
    r.ask("www.example.org.")
    assert r.ask("www.example.org.").plugin == "cache"
    assert len(r.up.calls) == 3
    assert r.handler.counters.requests == 2  # names outside the cache's zones are not requests


def test_stored_reply_is_not_shared_with_the_client() -> None:
    r = rig("cache")
    first = r.ask()
    first.msg.rr[0].ttl = 99999
    first.msg.rr.clear()
    second = r.ask()
    second.msg.rr[0].rdata = None
    assert ttls(r.ask()) == [300] and str(r.ask().msg.rr[0].rdata) == "192.0.2.1"


# ---------------------------------------------------------------------------------------------
# disable and the kubernetes rule


def test_disable_success_zone() -> None:
    r = rig("cache {\n disable success example.org\n}")
    r.ask("www.example.org.")
    r.ask("www.example.org.")
    r.ask("www.example.com.")
    r.ask("www.example.com.")
    assert r.up.calls == ["www.example.org.", "www.example.org.", "www.example.com."]
    r.up.answer = rcode_reply(RCODE.NXDOMAIN, soa("example.org.", 60, 60))
    r.ask("gone.example.org.")
    assert r.ask("gone.example.org.").plugin == "cache"  # denial still cached there


def test_disable_denial_zone() -> None:
    r = rig("cache {\n disable denial example.org\n}",
            answer=rcode_reply(RCODE.NXDOMAIN, soa("example.org.", 60, 60)))
    r.ask("gone.example.org.")
    r.ask("gone.example.org.")
    assert len(r.up.calls) == 2
    r.up.answer = a_record()
    r.ask("www.example.org.")
    assert r.ask("www.example.org.").plugin == "cache"


@dataclass
class FakeKubernetes:
    zones: tuple[str, ...]


def test_kubernetes_zones_are_never_cached() -> None:
    shared: dict[str, Any] = {}
    r = rig("cache 30", shared=shared)
    # Registered after the cache was built: setup order is not fixed.
    shared["kubernetes"] = FakeKubernetes(("cluster.local.", "in-addr.arpa."))
    for name in ("web.default.svc.cluster.local.", "Web.Default.SVC.Cluster.Local.", "cluster.local."):
        r.ask(name)
        r.ask(name)
    r.up.answer = rcode_reply(RCODE.NXDOMAIN, soa("cluster.local.", 5, 5))
    r.ask("new.default.svc.cluster.local.")
    r.ask("new.default.svc.cluster.local.")
    assert len(r.up.calls) == 8
    assert r.handler.entries("success") == r.handler.entries("denial") == 0
    assert r.handler.counters.requests == 0
    r.up.answer = a_record()
    r.ask("www.example.com.")
    assert r.ask("www.example.com.").plugin == "cache"  # other names still cached


def test_kubernetes_rule_beats_the_corefile() -> None:
    shared: dict[str, Any] = {"kubernetes": FakeKubernetes(("cluster.local.",))}
    r = rig("cache cluster.local {\n success 9984 3600 600\n}", shared=shared)
    r.ask("web.default.svc.cluster.local.")
    r.ask("web.default.svc.cluster.local.")
    assert len(r.up.calls) == 2


# ---------------------------------------------------------------------------------------------
# capacity


def test_capacity_bound_evicts_least_recently_used() -> None:
    r = rig("cache {\n success 1024\n}")
    for i in range(1024):
        r.ask(f"n{i}.example.com.")
    assert r.handler.entries("success") == 1024 and r.handler.counters.evictions == 0
    r.ask("n0.example.com.")      # hit: n0 becomes recently used, n1 is now the oldest
    r.ask("extra.example.com.")   # a new entry pushes one out
    assert r.handler.entries("success") == 1024
    c = r.handler.counters
    assert (c.evictions_success, c.evictions_denial, c.evictions) == (1, 0, 1)
    before = len(r.up.calls)
    assert r.ask("n0.example.com.").plugin == "cache"
    assert r.ask("n1.example.com.").plugin == "forward"
    assert len(r.up.calls) == before + 1


# ---------------------------------------------------------------------------------------------
# prefetch


def test_prefetch_refreshes_popular_entry_near_expiry() -> None:
    r = rig("cache {\n prefetch 2 1m 50%\n}", answer=a_record("192.0.2.1", ttl=100))
    r.ask()
    r.clock.advance(10)
    r.ask()                       # hits=1, 90 s left
    r.clock.advance(10)
    r.ask()                       # hits=2 but 80 s left > 50
    assert len(r.up.calls) == 1 and r.handler.counters.prefetches == 0
    r.up.answer = a_record("192.0.2.2", ttl=100)
    r.clock.advance(40)
    resp = r.ask()                # hits=3, 40 s left <= 50: serve cached, refresh behind
    assert resp.plugin == "cache" and ttls(resp) == [40] and str(resp.msg.rr[0].rdata) == "192.0.2.1"
    assert len(r.up.calls) == 2 and r.handler.counters.prefetches == 1
    r.clock.advance(1)
    fresh = r.ask()
    assert fresh.plugin == "cache" and ttls(fresh) == [99] and str(fresh.msg.rr[0].rdata) == "192.0.2.2"


def test_prefetch_needs_hits_without_long_gaps() -> None:
    r = rig("cache {\n prefetch 3 10s 90%\n}", answer=a_record(ttl=100))
    r.ask()
    for _ in range(5):            # hits 11 s apart: each gap resets the count to 1
        r.clock.advance(11)
        r.ask()
    assert r.handler.counters.prefetches == 0 and len(r.up.calls) == 1


def test_prefetch_off_by_default() -> None:
    r = rig("cache", answer=a_record(ttl=10))
    r.ask()
    for _ in range(9):
        r.clock.advance(1)
        r.ask()
    assert len(r.up.calls) == 1 and r.handler.counters.prefetches == 0


def test_prefetch_in_background_thread() -> None:
    r = rig("cache {\n prefetch 1 1m 90%\n}", answer=a_record(ttl=10), threaded=True)
    try:
        release = threading.Event()
        r.ask()
        slow = r.up.answer

        def blocked(req: Request) -> DNSRecord:
            assert release.wait(5)
            return slow(req)
        r.up.answer = blocked
        r.clock.advance(2)
        resp = r.ask()            # served at once even though the refresh blocks
        assert resp.plugin == "cache" and ttls(resp) == [8]
        r.ask()                   # one refresh per name at a time
        release.set()
        assert r.handler.wait_idle(5)
        assert len(r.up.calls) == 2 and r.handler.counters.prefetches == 1
        assert ttls(r.ask()) == [10]
        assert threading.current_thread().name not in r.up.calls
    finally:
        r.handler.stop()
    assert not any(t.name.startswith("kdns-cache") for t in threading.enumerate())


# ---------------------------------------------------------------------------------------------
# serve_stale


def test_serve_stale_immediate_serves_ttl_zero_and_refreshes() -> None:
    r = rig("cache {\n serve_stale 1h\n}", answer=a_record("192.0.2.1", ttl=30))
    r.ask()
    r.up.fail = ConnectionError("upstream down")
    r.clock.advance(100)
    stale = r.ask()
    assert stale.plugin == "cache" and ttls(stale) == [0] and str(stale.msg.rr[0].rdata) == "192.0.2.1"
    assert r.handler.counters.served_stale == 1 and len(r.up.calls) == 2  # refresh tried
    r.up.fail = None
    r.up.answer = a_record("192.0.2.2", ttl=30)
    assert ttls(r.ask()) == [0]   # still stale: this query triggers the refresh
    fresh = r.ask()
    assert ttls(fresh) == [30] and str(fresh.msg.rr[0].rdata) == "192.0.2.2"
    assert r.handler.counters.served_stale == 2


def test_serve_stale_refresh_servfail_keeps_stale_entry() -> None:
    r = rig("cache {\n serve_stale 1h\n}", answer=a_record(ttl=30))
    r.ask()
    r.up.answer = rcode_reply(RCODE.SERVFAIL)
    r.clock.advance(60)
    assert ttls(r.ask()) == [0]
    again = r.ask()
    assert again.msg.header.rcode == RCODE.NOERROR and ttls(again) == [0]


def test_serve_stale_window_ends() -> None:
    r = rig("cache {\n serve_stale 10m\n}", answer=a_record(ttl=30))
    r.ask()
    r.clock.advance(30 + 599)
    assert r.ask().plugin == "cache"
    r.up.fail = ConnectionError("down")
    r.clock.advance(30 + 600)
    with pytest.raises(ConnectionError):
        r.ask()


def test_no_serve_stale_by_default() -> None:
    r = rig("cache", answer=a_record(ttl=30))
    r.ask()
    r.clock.advance(31)
    r.up.fail = ConnectionError("down")
    with pytest.raises(ConnectionError):
        r.ask()


def test_serve_stale_verify_prefers_upstream() -> None:
    r = rig("cache {\n serve_stale 1h verify\n}", answer=a_record("192.0.2.1", ttl=30))
    r.ask()
    r.clock.advance(60)
    r.up.answer = a_record("192.0.2.2", ttl=30)
    fresh = r.ask()
    assert str(fresh.msg.rr[0].rdata) == "192.0.2.2" and ttls(fresh) == [30]
    assert r.handler.counters.served_stale == 0


@pytest.mark.parametrize("failure", ["raise", "servfail", "refused"])
def test_serve_stale_verify_falls_back_to_stale(failure: str) -> None:
    r = rig("cache {\n serve_stale 1h verify\n}", answer=a_record("192.0.2.1", ttl=30))
    r.ask()
    r.clock.advance(60)
    if failure == "raise":
        r.up.fail = TimeoutError("no answer")
    else:
        r.up.answer = rcode_reply(RCODE.SERVFAIL if failure == "servfail" else RCODE.REFUSED)
    stale = r.ask()
    assert stale.plugin == "cache" and ttls(stale) == [0] and str(stale.msg.rr[0].rdata) == "192.0.2.1"
    assert r.handler.counters.served_stale == 1 and len(r.up.calls) == 2


def test_verify_nxdomain_replaces_stale_success() -> None:
    r = rig("cache {\n serve_stale 1h verify\n}", answer=a_record(ttl=30))
    r.ask()
    r.clock.advance(60)
    r.up.answer = rcode_reply(RCODE.NXDOMAIN, soa("example.com.", 60, 60))
    assert r.ask().msg.header.rcode == RCODE.NXDOMAIN
    assert r.ask().plugin == "cache" and r.handler.entries("success") == 0


# ---------------------------------------------------------------------------------------------
# concurrency and lifecycle


def test_concurrent_serving_keeps_counters_consistent() -> None:
    r = rig("cache {\n success 1024\n}")
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(300):
                resp = r.ask(f"n{(i * 7 + n) % 1500}.example.com.")
                assert resp.msg.rr
        except BaseException as err:  # reported below
            errors.append(err)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    c = r.handler.counters
    assert c.requests == 2400 == c.hits + c.misses
    assert r.handler.entries("success") <= 1024


def test_stop_refuses_new_refreshes() -> None:
    r = rig("cache {\n serve_stale\n}", answer=a_record(ttl=5), threaded=True)
    r.ask()
    r.handler.stop()
    r.clock.advance(10)
    assert ttls(r.ask()) == [0]
    assert len(r.up.calls) == 1 and r.handler.wait_idle(0)
