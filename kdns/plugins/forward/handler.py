"""forward handler: send queries under FROM to upstream resolvers and relay their replies.

Query path (``serve``; called concurrently from the UDP worker pool and TCP connection threads,
so it may block up to its deadline):

1. not under FROM, or under an ``except`` zone -> ``nxt(req)``;
2. over ``max_concurrent`` in flight -> REFUSED (counted, never a health failure);
3. order the upstreams by ``policy``, skipping those marked down; when every one is down,
   health checking is assumed broken and one random upstream is tried (CoreDNS), unless
   ``failfast_all_unhealthy_upstreams``;
4. for each: exchange over the client's transport (``force_tcp``: TCP; ``prefer_udp``: UDP),
   redoing it over TCP when a UDP reply has TC. Each try gets ``read_timeout`` (2 s, as in
   CoreDNS) and the whole query at most ``total_timeout`` (5 s). A timeout or socket error
   counts a failure on that upstream, kicks off its health probe and moves on; a reply whose
   rcode is in ``failover`` moves on too (the last such reply is returned if all do);
5. relay the reply with the client's ID and question (so the client's spelling of the name is
   echoed); nothing answered -> SERVFAIL.

Health: after ``max_fails`` consecutive failures an upstream is down. A failure starts one
probe thread for that upstream that sends ``health_check.domain IN NS`` (RD unless ``no_rec``)
every ``health_check`` interval until any reply comes back, which marks it up again.

Counters for the metrics collector (plain ints, read at scrape time):

* per upstream (``handler.upstreams[i]``, label ``upstream.label`` = ``IP:port``):
  ``requests`` (query exchanges sent, a TCP retry after TC included; probes not),
  ``failures`` (query exchanges that failed),
  ``healthcheck_failures``, ``mismatches`` (datagrams ignored for a wrong ID or question),
  ``rcodes`` {rcode name: replies}, ``durations`` {rcode name: :class:`Histogram` over
  :data:`DURATION_BUCKETS`} (``coredns_proxy_request_duration_seconds{to,rcode}``),
  ``conn_cache_hits`` / ``conn_cache_misses`` {proto: n}, ``fails`` (current consecutive
  failures) and ``down(max_fails)``;
* per handler: ``max_concurrent_rejects`` (``coredns_forward_max_concurrent_rejects_total``),
  ``healthcheck_broken`` (``coredns_forward_healthcheck_broken_total``), ``servfails`` (queries
  answered SERVFAIL because no upstream replied) and ``inflight``.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dnslib import RCODE, DNSRecord
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from kdns.plugins.base import Next, Request, Response, WouldBlock, must_not_block
from kdns.plugins.forward.upstream import (
    DURATION_BUCKETS,
    Histogram,
    Upstream,
    UpstreamError,
)
from kdns.plugins.metrics import buckets
from kdns.plugins.setup_context import SetupContext

if TYPE_CHECKING:
    from kdns.plugins.forward.setup import ForwardConfig

__all__ = ["DURATION_BUCKETS", "ForwardHandler", "Histogram", "Upstream"]

log = logging.getLogger("kdns.forward")

_rng = random.Random()
"""This module's own random source: drawing from the shared ``random`` state would make
every other user of it (a test's seeded strategy, say) depend on this plugin's traffic."""

READ_TIMEOUT = 2.0
"""Seconds to wait for one upstream's reply (CoreDNS's static read timeout)."""
TOTAL_TIMEOUT = 5.0
"""Seconds one query may spend across all its tries (CoreDNS's ``defaultTimeout``)."""
HEALTH_TIMEOUT = 1.0
"""Seconds a health probe waits for its reply (CoreDNS's health-check read timeout)."""
MIN_PROBE_INTERVAL = 0.01
"""Floor for ``health_check 0`` so a probe loop never spins."""


class ForwardHandler:
    name = "forward"
    blocking = True
    """serve() waits on the network: the UDP listener answers misses from its worker pool."""

    def __init__(self, cfg: ForwardConfig, *, read_timeout: float | None = None,
                 total_timeout: float | None = None, health_timeout: float | None = None,
                 trace: Any = None) -> None:
        self.cfg = cfg
        self.trace = trace
        """``kdns resolve``'s record of where each name went (see kdns.resolve.ForwardTrace);
        with no ``--upstream`` there, nothing is sent."""
        self.read_timeout = READ_TIMEOUT if read_timeout is None else read_timeout
        self.total_timeout = TOTAL_TIMEOUT if total_timeout is None else total_timeout
        self.health_timeout = HEALTH_TIMEOUT if health_timeout is None else health_timeout
        self.upstreams = [
            Upstream(u.host, u.port, expire=cfg.expire, max_idle=cfg.max_idle_conns,
                     force_tcp_health=cfg.force_tcp,
                     tls=cfg.tls_context if u.transport == "tls" else None,
                     server_name=cfg.tls_servername or u.hostname or u.host,
                     source=cfg.source_address)
            for u in cfg.upstreams
        ]
        self.others: list[ForwardHandler] = []
        """Later ``forward`` directives of the same block, in Corefile order: this handler
        stands in the chain for all of them (see :meth:`serve`)."""
        self._rr = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sweeper: threading.Thread | None = None
        self.inflight = 0
        self.max_concurrent_rejects = 0
        self.healthcheck_broken = 0
        self.servfails = 0

    # -- lifecycle -------------------------------------------------------------------------

    def chain(self, other: ForwardHandler) -> None:
        """Add a later ``forward`` of the same server block."""
        self.others.append(other)

    def start(self) -> None:
        """Start the pool sweeper, which closes idle TCP connections after ``expire``."""
        for other in self.others:
            other.start()
        if self._sweeper is None and self.cfg.expire > 0 and not self._stop.is_set():
            self._sweeper = threading.Thread(target=self._sweep, name="forward-sweep",
                                             daemon=True)
            self._sweeper.start()

    def stop(self) -> None:
        """Stop probes and the sweeper, and close every pooled connection."""
        for other in self.others:
            other.stop()
        self._stop.set()
        with self._lock:
            threads = list(self._threads)
            if self._sweeper is not None:
                threads.append(self._sweeper)
        for up in self.upstreams:
            up.close()
        for t in threads:
            t.join(timeout=self.health_timeout + 1.0)

    def _sweep(self) -> None:
        interval = min(max(self.cfg.expire / 2, 0.05), 5.0)
        while not self._stop.wait(interval):
            for up in self.upstreams:
                up.sweep()

    # -- query path ------------------------------------------------------------------------

    def serve(self, req: Request, nxt: Next) -> Response:
        if not self.others:
            return self.serve_one(req, nxt)
        # Several forwards in one block, as CoreDNS chains them: the first whose FROM covers
        # the name answers; with `next RCODE...` a reply of that rcode moves on to the next.
        group = [self, *self.others]

        def step(i: int) -> Next:
            if i == len(group):
                return nxt
            return lambda r: group[i].serve_one(r, step(i + 1))

        return step(0)(req)

    def serve_one(self, req: Request, nxt: Next) -> Response:
        if not self.cfg.matches(req.qname_lower):
            return nxt(req)
        if self.trace is not None:
            labels = ", ".join(u.label + (f" from {u.from_file}" if u.from_file else "")
                               for u in self.cfg.upstreams)
            if self.trace.upstream is None:
                self.trace.note(req.qname_lower, f"would:{labels}")
                return self._error(req, RCODE.SERVFAIL)
            self.trace.note(req.qname_lower, labels)
        if must_not_block():
            raise WouldBlock  # the UDP loop hands this query to its worker pool
        limit = self.cfg.max_concurrent
        if limit:
            with self._lock:
                over = self.inflight >= limit
                if over:
                    self.max_concurrent_rejects += 1
                else:
                    self.inflight += 1
            if over:
                return self._error(req, RCODE.REFUSED)
            try:
                return self._forward(req, nxt)
            finally:
                with self._lock:
                    self.inflight -= 1
        return self._forward(req, nxt)

    def order(self) -> list[Upstream]:
        """The upstreams to try for one query, by policy, without those marked down."""
        ups = self.upstreams
        policy = self.cfg.policy
        if policy == "sequential" or len(ups) == 1:
            ordered = list(ups)
        elif policy == "round_robin":
            i = next(self._rr) % len(ups)
            ordered = ups[i:] + ups[:i]
        else:
            ordered = _rng.sample(ups, len(ups))
        max_fails = self.cfg.max_fails
        if max_fails == 0:
            return ordered
        healthy = [u for u in ordered if not u.down(max_fails)]
        if healthy:
            return healthy
        with self._lock:
            self.healthcheck_broken += 1
        if self.cfg.failfast_all_unhealthy_upstreams:
            return []
        # Every upstream is down: assume health checking itself is broken (CoreDNS).
        return [_rng.choice(ups)]

    def _forward(self, req: Request, nxt: Next) -> Response:
        cfg = self.cfg
        query = bytearray(req.msg.pack())
        tcp = cfg.force_tcp or (req.proto == "tcp" and not cfg.prefer_udp)
        deadline = time.monotonic() + self.total_timeout
        failed = 0
        last: DNSRecord | None = None
        for up in self.order():
            if time.monotonic() >= deadline:
                break
            if cfg.max_connect_attempts and failed >= cfg.max_connect_attempts:
                break
            try:
                reply = self._exchange(up, query, tcp, deadline)
            except UpstreamError as err:
                failed += 1
                log.debug("%s %s: %s", req.qname, up.label, err)
                self._failed(up)
                continue
            if reply.header.rcode in cfg.failover_rcodes:
                last = reply
                continue
            if reply.header.rcode in cfg.next_rcodes:
                return nxt(req)  # CoreDNS `next`: the following forward (or plugin) tries
            return self._relay(req, reply)
        if last is not None:
            return self._relay(req, last)
        with self._lock:
            self.servfails += 1
        return self._error(req, RCODE.SERVFAIL)

    def _exchange(self, up: Upstream, query: bytearray, tcp: bool, deadline: float) -> DNSRecord:
        started = time.perf_counter()
        raw = up.exchange(query, tcp=tcp, deadline=min(deadline, time.monotonic()
                                                        + self.read_timeout))
        reply = _parse(raw, up)
        if reply.header.tc and not tcp:
            # RFC 7766 §5: a truncated UDP reply is retried over TCP.
            try:
                raw = up.exchange(query, tcp=True, deadline=min(deadline, time.monotonic()
                                                                 + self.read_timeout))
                reply = _parse(raw, up)
            except UpstreamError as err:
                # The truncated reply is still an answer: the client can retry over TCP itself.
                log.debug("%s: TCP retry after TC failed: %s", up.label, err)
        up.succeeded(int(reply.header.rcode), time.perf_counter() - started)
        return reply

    def _failed(self, up: Upstream) -> None:
        up.failed()
        if self.cfg.max_fails == 0:
            return
        with self._lock:
            if up.probing or self._stop.is_set():
                return
            up.probing = True
            t = threading.Thread(target=self._probe, args=(up,), daemon=True,
                                 name=f"forward-hc-{up.label}")
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()

    def _probe(self, up: Upstream) -> None:
        """Probe ``up`` until it answers (CoreDNS: first at once, then every interval)."""
        interval = max(self.cfg.health_check, MIN_PROBE_INTERVAL)
        try:
            while not self._stop.is_set():
                if up.probe(self.cfg.hc_domain, self.cfg.hc_recursion_desired,
                            self.health_timeout):
                    with self._lock:
                        # A query may have failed since the probe answered; then keep going,
                        # since _failed saw `probing` set and started no probe of its own.
                        if up.fails == 0:
                            up.probing = False
                            log.debug("%s answers health checks again", up.label)
                            return
                if self._stop.wait(interval):
                    return
        finally:
            with self._lock:
                up.probing = False

    @staticmethod
    def _relay(req: Request, reply: DNSRecord) -> Response:
        reply.header.id = req.msg.header.id
        reply.questions = list(req.msg.questions)  # the client's spelling of the name (0x20)
        return Response(reply, "forward")

    @staticmethod
    def _error(req: Request, rcode: int) -> Response:
        reply = req.msg.reply(ra=1, aa=0)
        reply.header.rcode = rcode
        return Response(reply, "forward")

    def metrics(self, ctx: SetupContext) -> Iterator[Any]:
        """CoreDNS's forward/proxy families (reference §3), from the plain counters."""
        duration = HistogramMetricFamily("coredns_proxy_request_duration_seconds", "Histogram of "
                                         "the time each request took.",
                                         labels=["proxy_name", "to", "rcode"])
        hc = CounterMetricFamily("coredns_proxy_healthcheck_failures", "Count of failed health "
                                 "checks per upstream.", labels=["proxy_name", "to", "rcode"])
        conn_hits = CounterMetricFamily("coredns_proxy_conn_cache_hits", "Counter of connection "
                                        "cache hits per upstream and protocol.",
                                        labels=["proxy_name", "to", "proto"])
        conn_misses = CounterMetricFamily("coredns_proxy_conn_cache_misses", "Counter of "
                                          "connection cache misses per upstream and protocol.",
                                          labels=["proxy_name", "to", "proto"])
        requests = CounterMetricFamily("coredns_forward_requests", "Counter of requests made per "
                                       "upstream. Deprecated.", labels=["to"])
        responses = CounterMetricFamily("coredns_forward_responses", "Counter of responses "
                                        "received per upstream. Deprecated.", labels=["to", "rcode"])
        group = [self, *self.others]
        for up in (u for f in group for u in f.upstreams):
            for rcode, h in up.durations.items():
                duration.add_metric(["forward", up.label, rcode], buckets(h.bounds, h.counts), h.sum)
            # kdns does not tell health-check failures apart by rcode (most are timeouts)
            hc.add_metric(["forward", up.label, ""], up.healthcheck_failures)
            for proto in ("tcp-tls",) if up.tls is not None else ("udp", "tcp"):
                conn_hits.add_metric(["forward", up.label, proto], up.conn_cache_hits.get(proto, 0))
                conn_misses.add_metric(["forward", up.label, proto],
                                       up.conn_cache_misses.get(proto, 0))
            requests.add_metric([up.label], up.requests)
            for rcode, n in up.rcodes.items():
                responses.add_metric([up.label, rcode], n)
        yield from (duration, hc, conn_hits, conn_misses, requests, responses)
        yield CounterMetricFamily("coredns_forward_healthcheck_broken", "Counter of the number of "
                                  "complete failures of the healthchecks.",
                                  value=sum(f.healthcheck_broken for f in group))
        yield CounterMetricFamily("coredns_forward_max_concurrent_rejects", "Counter of the number "
                                  "of queries rejected because the concurrent queries were at "
                                  "maximum.", value=sum(f.max_concurrent_rejects for f in group))


def _parse(raw: bytes, up: Upstream) -> DNSRecord:
    try:
        return DNSRecord.parse(raw)
    except Exception as err:  # dnslib raises several unrelated types on bad input
        raise UpstreamError(f"{up.label}: unreadable reply: {err}") from None
