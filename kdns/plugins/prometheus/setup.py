"""prometheus: ``/metrics`` (default ``localhost:9153``) with CoreDNS's metric names.

The families come from the server's collector and from each plugin's ``metrics()``; this
plugin only exposes them. Several blocks may name the same address: they share one endpoint.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kdns.config.model import Directive, error
from kdns.plugins.base import Next, Request, Response
from kdns.plugins.http import Route, listen_addr
from kdns.plugins.setup_context import SetupContext


class PrometheusHandler:
    name = "prometheus"

    def __init__(self, addr: str, process: dict[str, Any]) -> None:
        self.addr = addr
        self._process = process
        self.routes = (Route(addr, "/metrics", self.scrape),)

    def scrape(self) -> tuple[int, str, bytes]:
        registry = self._process.get("metrics_registry")
        if registry is None:
            return 503, "text/plain", b"metrics are not ready"
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)

    def serve(self, req: Request, nxt: Next) -> Response:
        return nxt(req)


def setup(d: Directive, ctx: SetupContext) -> PrometheusHandler:
    addr = listen_addr(d, "prometheus", "localhost:9153", 9153)
    for opt in d.block or ():
        raise error(opt, "prometheus", f"unknown property '{opt.name.text}'")
    return PrometheusHandler(addr, ctx.process)
