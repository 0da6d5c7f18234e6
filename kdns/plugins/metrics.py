"""Helpers for plugins' ``metrics(ctx)`` methods: CoreDNS's label values, histogram shaping.

A plugin keeps plain integers on its query path and turns them into Prometheus families only
when scraped; these helpers keep that conversion the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily

from kdns.plugins.setup_context import SetupContext

VIEW = ""


def server_label(ctx: SetupContext) -> str:
    """CoreDNS's ``server`` label for the block: ``dns://<bind>:<port>`` (``dns://:53``)."""
    port = ctx.keys[0].port if ctx.keys and ctx.keys[0].port is not None else 53
    override = ctx.process.get("dns_port")
    if override is not None and port == 53:
        port = override
    listen = ctx.process.get("listen_addrs") or []
    if port == 0 and listen:
        port = listen[0][1]
    host = ctx.listen_hosts[0] if ctx.listen_hosts else ctx.process.get("dns_addr") or ""
    return listen_label(host, port)


def listen_label(host: str, port: int) -> str:
    """``dns://host:port`` as CoreDNS writes it: an IPv6 address in brackets (``dns://[::1]:53``),
    no host for every interface (``dns://:53``)."""
    return f"dns://[{host}]:{port}" if ":" in host else f"dns://{host}:{port}"


def buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Per-slot counts (last slot +Inf) -> cumulative (le, count) pairs for a family."""
    out: list[tuple[str, float]] = []
    running = 0
    for b, n in zip(bounds, counts, strict=False):
        running += n
        out.append((repr(float(b)), running))
    running += counts[len(bounds)] if len(counts) > len(bounds) else 0
    out.append(("+Inf", running))
    return out


class ProcessCounter:
    """A counter (by label values) shared by one plugin's handlers in every server block and
    kept across reloads, as CoreDNS's package-level counters are. Each handler's ``metrics``
    calls :meth:`report`: the family comes out once per scrape however many blocks use the
    plugin, since an exposition may hold a family name only once."""

    __slots__ = ("_scrape", "counts")

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], int] = {}
        self._scrape: object = None

    def inc(self, *labels: str) -> None:
        self.counts[labels] = self.counts.get(labels, 0) + 1

    def report(self, ctx: SetupContext, name: str, documentation: str,
               labels: Sequence[str] = ()) -> Iterator[CounterMetricFamily]:
        # The collector hands out a fresh "scrape" marker per scrape.
        scrape = ctx.process.get("scrape")
        if scrape is not None and scrape is self._scrape:
            return
        self._scrape = scrape
        fam = CounterMetricFamily(name, documentation, labels=list(labels))
        if not labels:
            fam.add_metric([], self.counts.get((), 0))
        for values, n in sorted(self.counts.items()):
            if labels:
                fam.add_metric(list(values), n)
        yield fam


def process_counter(ctx: SetupContext, key: str) -> ProcessCounter:
    """The process's counter ``key`` (``<plugin>.<metric>``), made on first use."""
    counter: ProcessCounter = ctx.process.setdefault(key, ProcessCounter())
    return counter
