"""The fast path's countdown (kdns.server.dispatch): a stored reply carrying a
:class:`~kdns.plugins.base.Countdown` is replayed until its deadline with its TTLs rewritten per
elapsed second, and its producer is told once per second.

Time is not slept: each reply's countdown starts at a ``born`` placed in the past, so the
elapsed second the fast path reads is known (and the margins are hundreds of milliseconds).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dnslib import EDNS0, QTYPE, RR, DNSQuestion, DNSRecord

from kdns.plugins.base import Countdown, Request, Response
from kdns.server.dispatch import Dispatcher, Zone, build_chain

NAME = "www.example.com."


class Producer:
    """A plugin answering like a cache hit: every record at TTL ``ttl - elapsed``, with a
    countdown built by ``countdown(elapsed)``; counts the queries and ticks it sees."""

    name = "cache"

    def __init__(self, make: Callable[[Callable[[], bool]], Countdown], elapsed: int) -> None:
        self.make = make
        self.elapsed = elapsed
        self.queries = 0
        self.ticks = 0
        self.alive = True

    def tick(self) -> bool:
        self.ticks += 1
        return self.alive

    def serve(self, req: Request, nxt: object) -> Response:
        self.queries += 1
        reply = req.msg.reply()
        left = 30 - self.elapsed
        reply.add_answer(*RR.fromZone(f"{NAME} {left} IN A 192.0.2.1\n{NAME} {left} IN A 192.0.2.2"))
        reply.add_auth(*RR.fromZone(f"example.com. {left} IN NS ns.example.com."))
        return Response(reply, "cache", fast=True, deps=(), expires=time.monotonic() + 1.0,
                        countdown=self.make(self.tick))


def rig(producer: Producer) -> Dispatcher:
    return Dispatcher({".": Zone(".", build_chain([producer]), "dns://:53")}, "udp", "dns://:53")


def ask(disp: Dispatcher, *, qid: int = 7, name: str = NAME, edns: bool = True) -> DNSRecord:
    q = DNSRecord(q=DNSQuestion(name, QTYPE.A))
    q.header.id = qid
    if edns:
        q.add_ar(EDNS0(udp_len=1232))
    out = disp.serve(bytes(q.pack()), ("127.0.0.1", 1))
    assert out is not None
    return DNSRecord.parse(out)


def ttls(msg: DNSRecord) -> list[int]:
    return [int(r.ttl) for r in (*msg.rr, *msg.auth, *msg.ar) if r.rtype != QTYPE.OPT]


def test_replays_past_the_second_with_ttls_of_the_elapsed_second() -> None:
    # built at elapsed second 4 (TTL 26), replayed 5.5 s after born: second 5, TTL 25
    p = Producer(lambda tick: Countdown(born=time.monotonic() - 5.5, elapsed=4,
                                        until=time.monotonic() + 20, tick=tick), elapsed=4)
    disp = rig(p)
    assert ttls(ask(disp)) == [26, 26, 26]
    assert p.ticks == 0
    for qid in (8, 9):
        replay = ask(disp, qid=qid)
        assert replay.header.id == qid and ttls(replay) == [25, 25, 25]
        assert replay.ar and replay.ar[0].rtype == QTYPE.OPT  # the OPT is left as it was
    assert ttls(ask(disp, name=NAME.upper())) == [25, 25, 25]  # patched spelling, same bytes
    assert p.queries == 1 and disp.counters.slow == 1
    assert p.ticks == 1  # once for the new second, not per replay


def test_no_replay_past_the_deadline() -> None:
    p = Producer(lambda tick: Countdown(born=time.monotonic() - 29.5, elapsed=29,
                                        until=time.monotonic() - 0.001, tick=tick), elapsed=29)
    disp = rig(p)
    ask(disp)
    ask(disp)
    assert p.queries == 2 and disp.counters.slow == 2


def test_producer_stops_the_replay() -> None:
    p = Producer(lambda tick: Countdown(born=time.monotonic() - 5.5, elapsed=4,
                                        until=time.monotonic() + 20, tick=tick), elapsed=4)
    p.alive = False  # the entry was evicted: the next second's replay must ask again
    disp = rig(p)
    ask(disp)
    assert ttls(ask(disp)) == [26, 26, 26]  # from the producer again, not replayed
    assert p.queries == 2 and p.ticks == 1


def test_fixed_ttls_are_not_rewritten() -> None:
    p = Producer(lambda tick: Countdown(born=time.monotonic() - 5.5, elapsed=0,
                                        until=time.monotonic() + 20, tick=tick, fixed=True),
                 elapsed=0)
    disp = rig(p)
    ask(disp)
    assert ttls(ask(disp)) == [30, 30, 30] and p.queries == 1 and p.ticks == 1


def test_replays_without_countdown_keep_the_one_second_limit() -> None:
    class OneSecond(Producer):
        def serve(self, req: Request, nxt: object) -> Response:
            resp = super().serve(req, nxt)
            resp.countdown = None
            resp.expires = time.monotonic() - 0.001  # its second is over
            return resp

    p = OneSecond(lambda tick: Countdown(0.0, 0, 0.0, tick), elapsed=0)
    disp = rig(p)
    ask(disp)
    ask(disp)
    assert p.queries == 2


def test_a_counting_down_reply_is_charged_its_countdown() -> None:
    from kdns.server.store import ENTRY_OVERHEAD, TICKING_OVERHEAD

    p = Producer(lambda tick: Countdown(born=time.monotonic(), elapsed=0,
                                        until=time.monotonic() + 20, tick=tick), elapsed=0)
    disp = rig(p)
    ask(disp)
    ((key, entry),) = disp.store.entries.items()
    assert isinstance(entry.reply, bytes) and entry.ticking is not None
    assert entry.size == len(key) + ENTRY_OVERHEAD + 2 * len(entry.reply) + TICKING_OVERHEAD
    assert disp.store.bytes == entry.size
