"""prometheus: ``/metrics`` (default ``localhost:9153``) with CoreDNS's metric names.

The families come from the server's collector and from each plugin's ``metrics()``; this
plugin only exposes them. Several blocks may name the same address: they share one endpoint.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kdns.config.model import Directive, error
from kdns.plugins.base import Next, Request, Response
from kdns.plugins.http import Route, split_addr
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

    def passes(self, qname_lower: str, qtype: int, answers: int) -> bool:
        return True  # serve() hands every question on and returns the reply as is

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
    for opt in d.block or ():
        raise error(opt, "prometheus", f"unknown property '{opt.name.text}'")
    return PrometheusHandler(addr, ctx.process)
