"""The Prometheus view of the server: CoreDNS's metric names and labels, read at scrape time.

Nothing here runs on the packet path. The collector sums the dispatchers' aggregates and live
fast-path entries (``kdns.server.stats``) into CoreDNS's families (reference §3), and asks every
plugin that has a ``metrics()`` method for its own families, so dashboards built for CoreDNS read
kdns unchanged.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from kdns import __version__
from kdns.server.listeners import UdpListener
from kdns.server.stats import DURATION_BUCKETS, SIZE_BUCKETS, Stats, rcode_label

if TYPE_CHECKING:
    from kdns.server.app import KdnsServer
    from kdns.server.dispatch import Dispatcher

UNKNOWN_CLIENT = "unknown"
"""The ``client_namespace`` of clients whose address is no known Pod (or several Pods')."""

VIEW = ""
"""kdns has no ``view`` plugin; the label is kept (empty) so CoreDNS queries match."""


def _hist_buckets(counts: dict[float, int], bounds: Iterable[float]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0
    for b in bounds:
        running += counts.get(b, 0)
        out.append((_fmt(b), running))
    running += counts.get(float("inf"), 0)
    out.append(("+Inf", running))
    return out


def _fmt(b: float) -> str:
    return repr(float(b))


class ServerCollector(Collector):
    def __init__(self, server: KdnsServer) -> None:
        self.server = server

    def _dispatchers(self) -> Iterator[Dispatcher]:
        for lst in self.server.listeners:
            for side in lst.sides():
                yield side.dispatcher

    def _clients(self) -> Iterator[Any]:
        """kdns_client_requests_total and kdns_search_waste_total: the dispatchers' plain
        per-client-namespace integers, summed (label values are namespaces or ``unknown``)."""
        by_rcode: dict[tuple[str, str], int] = {}
        waste: dict[str, int] = {}
        for d in self._dispatchers():
            for who, counts in list(d.client_counts.items()):
                for code, n in enumerate(counts):
                    if n:
                        k = (UNKNOWN_CLIENT if who.startswith("/") else who, rcode_label(code))
                        by_rcode[k] = by_rcode.get(k, 0) + n
            for who, n in list(d.waste_counts.items()):
                waste[who] = waste.get(who, 0) + n
        requests = CounterMetricFamily("kdns_client_requests", "Replies by the namespace of the "
                                       "Pod that asked (unknown: no known Pod) and rcode.",
                                       labels=["client_namespace", "rcode"])
        for (ns, label), n in sorted(by_rcode.items()):
            requests.add_metric([ns, label], n)
        wasted = CounterMetricFamily("kdns_search_waste", "In-zone NXDOMAIN replies to names "
                                     "made of another name plus one of the client's search "
                                     "suffixes, by client namespace.",
                                     labels=["client_namespace"])
        for ns, n in sorted(waste.items()):
            wasted.add_metric([ns], n)
        yield from (requests, wasted)

    def collect(self) -> Iterator[Any]:
        # Marks this scrape for plugins whose families are shared by several blocks
        # (kdns.plugins.metrics.ProcessCounter reports them once per scrape).
        self.server.process["scrape"] = object()
        requests = CounterMetricFamily("coredns_dns_requests", "Counter of DNS requests made per "
                                       "zone, protocol and family.",
                                       labels=["server", "zone", "view", "proto", "family", "type"])
        responses = CounterMetricFamily("coredns_dns_responses", "Counter of response status codes.",
                                        labels=["server", "zone", "view", "rcode", "plugin"])
        do = CounterMetricFamily("coredns_dns_do_requests", "Counter of DNS requests with DO bit set "
                                 "per zone.", labels=["server", "view", "zone"])
        duration = HistogramMetricFamily("coredns_dns_request_duration_seconds", "Histogram of the "
                                         "time (in seconds) each request took per zone.",
                                         labels=["server", "zone", "view", "type"])
        req_size = HistogramMetricFamily("coredns_dns_request_size_bytes", "Size of the EDNS0 UDP "
                                         "buffer in bytes (64K for TCP) per zone and protocol.",
                                         labels=["server", "zone", "view", "proto"])
        resp_size = HistogramMetricFamily("coredns_dns_response_size_bytes", "Size of the returned "
                                          "response in bytes.",
                                          labels=["server", "zone", "view", "proto"])
        panics = 0
        for d in self._dispatchers():
            snap: Stats = d.stats.snapshot(d.store.entries.values())
            panics += snap.panics
            server, proto, family = d.server_label, d.proto, str(d.family)
            req_counts: dict[tuple[str, str], int] = {}
            resp_counts: dict[tuple[str, str, str], int] = {}
            do_counts: dict[str, int] = {}
            qsize: dict[str, dict[float, int]] = {}
            rsize: dict[str, dict[float, int]] = {}
            for (zone, qtype, rcode, plugin, rq, rs, dobit), n in snap.counts.items():
                req_counts[(zone, qtype)] = req_counts.get((zone, qtype), 0) + n
                k = (zone, rcode, plugin)
                resp_counts[k] = resp_counts.get(k, 0) + n
                if dobit:
                    do_counts[zone] = do_counts.get(zone, 0) + n
                for table, size in ((qsize, rq), (rsize, rs)):
                    bucket = next((b for b in SIZE_BUCKETS if size <= b), float("inf"))
                    zt = table.setdefault(zone, {})
                    zt[bucket] = zt.get(bucket, 0) + n
            for (zone, qtype), n in req_counts.items():
                requests.add_metric([server, zone, VIEW, proto, family, qtype], n)
            for (zone, rcode, plugin), n in resp_counts.items():
                responses.add_metric([server, zone, VIEW, rcode, plugin], n)
            for zone, n in do_counts.items():
                do.add_metric([server, VIEW, zone], n)
            for (zone, qtype), dur in snap.durations.items():
                counts = {b: dur.buckets[i] for i, b in enumerate(DURATION_BUCKETS)}
                counts[float("inf")] = dur.buckets[-1]
                duration.add_metric([server, zone, VIEW, qtype],
                                    _hist_buckets(counts, DURATION_BUCKETS), dur.total)
            for table, fam in ((qsize, req_size), (rsize, resp_size)):
                for zone, counts in table.items():
                    fam.add_metric([server, zone, VIEW, proto], _hist_buckets(counts, SIZE_BUCKETS),
                                   sum(b * n for b, n in counts.items() if b != float("inf")))
        yield from (requests, responses, do, duration, req_size, resp_size)
        yield CounterMetricFamily("coredns_panics", "A metrics that counts the number of panics.",
                                  value=panics)
        info = GaugeMetricFamily("coredns_build_info", "A metric with a constant '1' value labeled "
                                 "by version, revision, and goversion from which CoreDNS was built.",
                                 labels=["version", "revision", "goversion"])
        info.add_metric([__version__, "kdns", f"python{platform.python_version()}"], 1)
        yield info
        enabled = GaugeMetricFamily("coredns_plugin_enabled", "A metric that indicates whether a "
                                    "plugin is enabled on per server and zone basis.",
                                    labels=["server", "zone", "view", "name"])
        for lst in self.server.listeners:
            for z in lst.zones.values():
                for name in z.plugins:
                    enabled.add_metric([z.server_label, z.name, VIEW, name], 1)
        yield enabled
        entries = GaugeMetricFamily("kdns_fast_path_entries", "Precomputed replies held by the "
                                    "fast path.", labels=["server", "proto"])
        shed = CounterMetricFamily("kdns_udp_shed", "UDP queries dropped because the slow-path "
                                   "queue was full.", labels=["server"])
        rejected = CounterMetricFamily("kdns_tcp_rejected_connections", "TCP connections closed at "
                                       "once because the connection limit was reached.",
                                       labels=["server"])
        timed_out = CounterMetricFamily("kdns_tcp_timed_out_connections", "TCP connections "
                                        "closed because a query did not arrive in time (idle "
                                        "or read timeout).", labels=["server"])
        shed_idle = CounterMetricFamily("kdns_tcp_shed_idle_connections", "Idle TCP connections "
                                        "closed at the connection limit to admit a new one.",
                                        labels=["server"])
        query_limited = CounterMetricFamily("kdns_tcp_query_limited_connections", "TCP "
                                            "connections closed after tcp_queries answers.",
                                            labels=["server"])
        shed_by: dict[str, int] = {}
        rejected_by: dict[str, int] = {}
        timed_out_by: dict[str, int] = {}
        shed_idle_by: dict[str, int] = {}
        limited_by: dict[str, int] = {}
        entries_by: dict[tuple[str, str], int] = {}
        for lst in self.server.listeners:
            for side in lst.sides():
                d = side.dispatcher
                ek = (d.server_label, d.proto)
                entries_by[ek] = entries_by.get(ek, 0) + len(d.store)
                if isinstance(side, UdpListener):
                    shed_by[d.server_label] = shed_by.get(d.server_label, 0) + side.shed
                else:
                    rejected_by[d.server_label] = rejected_by.get(d.server_label, 0) + side.rejected
                    timed_out_by[d.server_label] = (timed_out_by.get(d.server_label, 0)
                                                    + side.timed_out)
                    shed_idle_by[d.server_label] = (shed_idle_by.get(d.server_label, 0)
                                                    + side.shed_idle)
                    limited_by[d.server_label] = (limited_by.get(d.server_label, 0)
                                                  + side.query_limited)
        for (server, proto), n in entries_by.items():
            entries.add_metric([server, proto], n)
        for server, n in shed_by.items():
            shed.add_metric([server], n)
        for server, n in rejected_by.items():
            rejected.add_metric([server], n)
        for cfam, ctable in ((timed_out, timed_out_by), (shed_idle, shed_idle_by),
                             (query_limited, limited_by)):
            for server, n in ctable.items():
                cfam.add_metric([server], n)
        yield from (entries, shed, rejected, timed_out, shed_idle, query_limited)
        yield from self._clients()
        seen: set[int] = set()
        for blk in self.server.blocks:
            for h in blk.handlers:
                fn = getattr(h, "metrics", None)
                if callable(fn) and id(h) not in seen:
                    seen.add(id(h))
                    yield from fn(blk.ctx)
        yield from self.server.extra_metrics()
