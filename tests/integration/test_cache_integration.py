"""cache + forward over real sockets: kdns on 127.0.0.1 in front of a tiny dnslib upstream.

The upstream counts the queries it answers, so "served from cache" is observed from outside:
the second query must not reach it, and must come back with a TTL counted down from the cap.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.flags
import dns.rcode
import dns.rdatatype
import pytest
from dnslib import QTYPE, RCODE, RR, DNSRecord

from tests.conftest import DEMO, Running, start_server


class Upstream:
    """A UDP DNS server on 127.0.0.1: ``nx.*`` is NXDOMAIN with an SOA, ``two.*`` two A
    records, anything else one A record, all with TTL 300. Counts the queries per name (lower case)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.queries: dict[str, int] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="test-upstream", daemon=True)

    def count(self, name: str) -> int:
        with self.lock:
            return self.queries.get(name.lower(), 0)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            query = DNSRecord.parse(data)
            name = str(query.q.qname)
            with self.lock:
                self.queries[name.lower()] = self.queries.get(name.lower(), 0) + 1
            reply = query.reply()
            if name.lower().startswith("nx."):
                reply.header.rcode = RCODE.NXDOMAIN
                reply.add_auth(*RR.fromZone("example. 60 IN SOA ns.example. host.example. 1 7200 "
                                            "1800 86400 60"))
            elif query.q.qtype == QTYPE.A and name.lower().startswith("two."):
                reply.add_answer(*RR.fromZone(f"{name} 300 IN A 192.0.2.7\n"
                                              f"{name} 300 IN A 192.0.2.8"))
            elif query.q.qtype == QTYPE.A:
                reply.add_answer(*RR.fromZone(f"{name} 300 IN A 192.0.2.7"))
            self.sock.sendto(reply.pack(), addr)

    def __enter__(self) -> Upstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


def running(corefile: str, tmp_path: Path) -> Iterator[Running]:
    server = start_server(corefile, tmp_path)
    try:
        yield Running(server)
    finally:
        server.stop()


@pytest.fixture
def kdns(upstream: Upstream, tmp_path: Path) -> Iterator[Running]:
    yield from running(f".:53 {{\n    cache 30\n    forward . 127.0.0.1:{upstream.port}\n}}\n", tmp_path)


def a_ttl(msg: object) -> int:
    rrset = msg.answer[0]  # type: ignore[attr-defined]
    assert rrset.rdtype == dns.rdatatype.A and rrset[0].address == "192.0.2.7"
    return int(rrset.ttl)


def test_second_query_is_served_from_cache_with_smaller_ttl(kdns: Running, upstream: Upstream) -> None:
    first = kdns.udp("www.example.com.")
    assert a_ttl(first) == 30  # upstream says 300; `cache 30` caps it
    assert upstream.count("www.example.com.") == 1

    second = kdns.udp("WWW.Example.COM.")
    assert a_ttl(second) <= 30
    assert second.question[0].name.to_text() == "WWW.Example.COM."  # the client's spelling
    assert upstream.count("www.example.com.") == 1

    # The TTL counts down by whole seconds spent in the cache; poll until it has moved once.
    deadline = time.monotonic() + 3
    asked = 2
    while (ttl := a_ttl(kdns.udp("www.example.com."))) == 30 and time.monotonic() < deadline:
        asked += 1
        time.sleep(0.05)
    asked += 1
    assert ttl == 29
    assert upstream.count("www.example.com.") == 1
    cache = next(h for h in kdns.server.handlers() if h.name == "cache")
    replayed = kdns.server.replays().get(cache.replay_tokens["success"], 0)
    assert cache.counters.misses == 1 and cache.counters.hits_success + replayed == asked - 1


def test_nxdomain_with_soa_is_cached(kdns: Running, upstream: Upstream) -> None:
    for _ in range(3):
        reply = kdns.udp("nx.example.")
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert reply.authority[0].rdtype == dns.rdatatype.SOA
    assert upstream.count("nx.example.") == 1


def test_tcp_client_gets_the_cached_answer(kdns: Running, upstream: Upstream) -> None:
    kdns.udp("both.example.com.")
    reply = kdns.tcp("both.example.com.")
    assert a_ttl(reply) <= 30 and upstream.count("both.example.com.") == 1


def test_cluster_names_falling_through_are_never_cached(upstream: Upstream,
                                                        tmp_path: Path) -> None:
    corefile = f"""\
.:53 {{
    cache 30
    kubernetes cluster.local {{
        manifests {DEMO}
        fallthrough
    }}
    forward . 127.0.0.1:{upstream.port}
}}
"""
    for server in running(corefile, tmp_path):
        name = "nosuchservice.default.svc.cluster.local."
        for _ in range(3):
            server.udp(name)
        # kubernetes does not know the name and falls through to forward each time: the
        # cache never answers for the kubernetes zone, so a later Service shows up at once.
        assert upstream.count(name) == 3
        server.udp("www.example.com.")
        server.udp("www.example.com.")
        assert upstream.count("www.example.com.") == 1


def test_cache_hits_are_replayed_by_the_fast_path_and_keep_counting_down(
    kdns: Running, upstream: Upstream,
) -> None:
    kdns.udp("www.example.com.")  # miss: from the upstream
    kdns.udp("www.example.com.")  # hit: from the cache, stored in the fast path
    udp = kdns.server.listeners[0].udp
    assert udp is not None
    cache = next(h for h in kdns.server.handlers() if h.name == "cache")
    hits = cache.counters.hits_success
    ttls = {a_ttl(kdns.udp("www.example.com.")) for _ in range(20)}
    assert cache.counters.hits_success - hits <= 1  # replayed, not asked of the cache again
    assert len(ttls) <= 2  # at most one tick of the TTL inside the replay window
    t0 = time.monotonic()
    first = a_ttl(kdns.udp("www.example.com."))
    while time.monotonic() - t0 < 2.2:
        time.sleep(0.05)
    later = a_ttl(kdns.udp("www.example.com."))
    assert later <= first - 2  # the countdown continues past the replay window
    assert upstream.count("www.example.com.") == 1


@pytest.mark.parametrize("wrapper, qname", [
    ("loadbalance", "two.example.com."),
    ("rewrite name alias.example.com two.example.com", "alias.example.com."),
])
def test_cache_hits_behind_another_plugin_still_count_down(
    upstream: Upstream, tmp_path: Path, wrapper: str, qname: str,
) -> None:
    """loadbalance and rewrite wrap cache (CoreDNS's order): the reply they rebuild must keep
    the cache's one-second replay limit, or the fast path replays a frozen TTL past expiry."""
    for kdns in running(f".:53 {{\n    {wrapper}\n    cache 30\n"
                        f"    forward . 127.0.0.1:{upstream.port}\n}}\n", tmp_path):
        def ttl(kdns: Running = kdns) -> int:
            r = kdns.udp(qname)
            assert sorted(rr.address for rr in r.answer[0]) == ["192.0.2.7", "192.0.2.8"]
            return int(r.answer[0].ttl)

        first = ttl()
        for _ in range(50):
            ttl()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.2:
            time.sleep(0.05)
        assert ttl() <= first - 2
        assert upstream.count("two.example.com.") == 1


def test_fast_path_replays_count_as_cache_hits(kdns: Running, upstream: Upstream) -> None:
    """A hit the fast path replays never reaches the cache plugin, yet it is a cache hit: the
    hit ratio on a CoreDNS dashboard must not read low because kdns is fast."""
    from prometheus_client import generate_latest

    def series(name: str, **labels: str) -> float:
        text = generate_latest(kdns.server.registry).decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line
                                                   for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    for _ in range(31):
        kdns.udp("www.example.com.")
    for _ in range(11):
        kdns.udp("nx.example.com.")
    assert upstream.count("www.example.com.") == 1 and upstream.count("nx.example.com.") == 1
    assert series("coredns_cache_hits_total", type="success") == 30
    assert series("coredns_cache_hits_total", type="denial") == 10
    assert series("coredns_cache_misses_total") == 2
    assert series("coredns_cache_requests_total") == 42
    # the fast path did the replaying: the cache plugin itself saw only a few of them
    cache = next(h for h in kdns.server.handlers() if h.name == "cache")
    assert cache.counters.hits < 40
    # a new data generation folds the replays into the aggregates: still counted once
    from kdns.plugins.base import GENERATION

    GENERATION.bump()
    kdns.udp("www.example.com.")
    assert series("coredns_cache_hits_total", type="success") == 31
    assert series("coredns_cache_requests_total") == 43


def _series(kdns: Running, name: str, **labels: str) -> float:
    from prometheus_client import generate_latest

    total = 0.0
    for line in generate_latest(kdns.server.registry).decode().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _watch(kdns: Running, qname: str, seconds: float,
           until: Callable[[list[int]], bool] = lambda seen: False) -> list[int]:
    """The answer TTLs of ``qname`` asked every 20 ms for at most ``seconds`` (or until
    ``until(seen so far)``): a bounded loop of at most seconds / 0.02 queries."""
    seen: list[int] = []
    t0 = time.monotonic()
    for _ in range(int(seconds / 0.02)):
        seen.append(a_ttl(kdns.udp(qname)))
        if time.monotonic() - t0 >= seconds or until(seen):
            break
        time.sleep(0.02)
    return seen


def test_fast_path_replays_count_down_across_seconds_with_exact_metrics(
    kdns: Running, upstream: Upstream,
) -> None:
    """Past its first second a hit is still replayed by the fast path (the cache plugin sees
    one hit in all), its TTLs rewritten as the seconds pass, and every replay is a hit."""
    kdns.udp("www.example.com.")   # miss
    seen = _watch(kdns, "www.example.com.", 2.3)
    asked = 1 + len(seen)
    assert seen == sorted(seen, reverse=True) and seen[0] == 30 and seen[-1] <= 28
    assert seen[-1] >= 30 - 3 and set(seen) <= set(range(seen[-1], 31))
    cache = next(h for h in kdns.server.handlers() if h.name == "cache")
    assert cache.counters.hits_success == 1  # the first hit; the rest were replays
    assert _series(kdns, "coredns_cache_hits_total", type="success") == asked - 1
    assert _series(kdns, "coredns_cache_requests_total") == asked
    assert _series(kdns, "coredns_cache_misses_total") == 1
    assert upstream.count("www.example.com.") == 1
    tcp = kdns.tcp("www.example.com.")   # the TCP listener's store counts down alike
    assert a_ttl(tcp) <= seen[-1]


def test_fast_path_stops_replaying_at_expiry(upstream: Upstream, tmp_path: Path) -> None:
    for kdns in running(f".:53 {{\n    cache 2\n    forward . 127.0.0.1:{upstream.port}\n}}\n",
                        tmp_path):
        kdns.udp("www.example.com.")   # miss: TTL 2, expires 2 s from now
        seen = _watch(kdns, "www.example.com.", 3.0,
                      until=lambda seen: upstream.count("www.example.com.") == 2)
        # counted down to 1, never replayed as 0, then asked again upstream at expiry
        assert upstream.count("www.example.com.") == 2
        *replayed, refetched = seen
        assert replayed == sorted(replayed, reverse=True) and set(replayed) == {2, 1}
        assert refetched == 2   # the new entry


def test_serve_stale_still_answers_expired_entries_with_ttl_zero(
    upstream: Upstream, tmp_path: Path,
) -> None:
    corefile = (f".:53 {{\n    cache 2 {{\n        serve_stale 1h\n    }}\n"
                f"    forward . 127.0.0.1:{upstream.port}\n}}\n")
    for kdns in running(corefile, tmp_path):
        kdns.udp("www.example.com.")
        seen = _watch(kdns, "www.example.com.", 3.0, until=lambda seen: seen[-1] == 0)
        cache = next(h for h in kdns.server.handlers() if h.name == "cache")
        assert seen[-1] == 0 and cache.counters.served_stale == 1
        before = seen[: seen.index(0)]
        assert before == sorted(before, reverse=True) and set(before) == {2, 1}
        assert cache.wait_idle(5)
        assert a_ttl(kdns.udp("www.example.com.")) == 2   # refreshed behind the stale answer
        assert upstream.count("www.example.com.") == 2


def test_prefetch_still_refreshes_a_name_replayed_by_the_fast_path(
    upstream: Upstream, tmp_path: Path,
) -> None:
    corefile = (f".:53 {{\n    cache 4 {{\n        prefetch 1 1m 50%\n    }}\n"
                f"    forward . 127.0.0.1:{upstream.port}\n}}\n")
    for kdns in running(corefile, tmp_path):
        kdns.udp("www.example.com.")
        seen = _watch(kdns, "www.example.com.", 3.8,
                      until=lambda seen: upstream.count("www.example.com.") == 2)
        cache = next(h for h in kdns.server.handlers() if h.name == "cache")
        assert upstream.count("www.example.com.") == 2 and cache.counters.prefetches == 1
        assert cache.counters.misses == 1 and 0 not in seen   # refreshed before it expired


def test_replays_count_down_from_the_ttl_the_cache_stored(
    upstream: Upstream, tmp_path: Path,
) -> None:
    """rewrite runs behind cache (CoreDNS's order), so the cache stores its TTL of 10 and the
    fast path counts down from that, as the cache itself would."""
    corefile = (f".:53 {{\n    rewrite ttl exact www.example.com 10\n    cache 30\n"
                f"    forward . 127.0.0.1:{upstream.port}\n}}\n")
    for kdns in running(corefile, tmp_path):
        seen = _watch(kdns, "www.example.com.", 2.2)
        assert seen[0] == 10 and seen == sorted(seen, reverse=True) and seen[-1] <= 8
        assert upstream.count("www.example.com.") == 1
        cache = next(h for h in kdns.server.handlers() if h.name == "cache")
        assert cache.counters.hits_success == 1
