"""prometheus: ``/metrics`` (default ``localhost:9153``) with CoreDNS's metric names.

The families come from the server's collector and from each plugin's ``metrics()``; this
plugin only exposes them. Several blocks may name the same address: they share one endpoint.

``runtime_metrics`` is CoreDNS's switch for the Go runtime set; kdns's runtime is CPython, so it
adds prometheus-client's process, garbage-collector and platform collectors (``process_*``,
``python_gc_*``, ``python_info``) in a registry of their own, appended to each scrape. CoreDNS's
``tls`` block (HTTPS with client certificates) is refused with a located error.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)

from kdns.config.model import Directive, error
from kdns.plugins.base import Next, Request, Response
from kdns.plugins.http import Route, split_addr
from kdns.plugins.setup_context import SetupContext


class PrometheusHandler:
    name = "prometheus"

    def __init__(self, addr: str, process: dict[str, Any], runtime_metrics: bool = False) -> None:
        self.addr = addr
        self.runtime_metrics = runtime_metrics
        self._process = process
        self.routes = (Route(addr, "/metrics", self.scrape),)
        self._runtime: CollectorRegistry | None = None
        if runtime_metrics:
            self._runtime = CollectorRegistry(auto_describe=False)
            for collector in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
                self._runtime.register(collector)

    def scrape(self) -> tuple[int, str, bytes]:
        registry = self._process.get("metrics_registry")
        if registry is None:
            return 503, "text/plain", b"metrics are not ready"
        body = generate_latest(registry)
        if self._runtime is not None:
            body += generate_latest(self._runtime)
        return 200, CONTENT_TYPE_LATEST, body

    def serve(self, req: Request, nxt: Next) -> Response:
        return nxt(req)


def setup(d: Directive, ctx: SetupContext) -> PrometheusHandler:
    if len(d.args) > 1:
        raise error(d.args[1], "prometheus", "expected at most one address")
    addr = d.args[0].text if d.args else "localhost:9153"
    try:
        split_addr(addr, 9153)
    except ValueError as err:
        raise error(d.args[0] if d.args else d, "prometheus", str(err)) from None
    runtime_metrics = False
    for opt in d.block or ():
        name = opt.name.text
        if name == "runtime_metrics":
            if opt.args or opt.block is not None:
                raise error(opt.args[0] if opt.args else opt, "prometheus",
                            "runtime_metrics takes no arguments")
            runtime_metrics = True
        elif name == "tls":
            raise error(opt, "prometheus", "tls (HTTPS metrics) is not supported by kdns yet")
        else:
            raise error(opt, "prometheus", f"unknown option: {name}")
    return PrometheusHandler(addr, ctx.process, runtime_metrics)
