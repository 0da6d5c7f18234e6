"""Helpers for plugins' ``metrics(ctx)`` methods: CoreDNS's label values, histogram shaping.

A plugin keeps plain integers on its query path and turns them into Prometheus families only
when scraped; these helpers keep that conversion the same everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    return f"dns://{host}:{port}"


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
