"""health: process liveness on ``/health`` (default ``:8080``), with ``lameduck DURATION``.

``/health`` answers 200 "OK" for as long as the process serves DNS, including the lameduck
period after SIGTERM (so the kubelet does not kill a draining pod). The server reads
``lameduck`` to know how long to keep serving after it stops being ready.
"""

from __future__ import annotations

from kdns.config.durations import parse_duration
from kdns.config.model import Directive, error
from kdns.plugins.base import Next, Request, Response
from kdns.plugins.http import Route, split_addr
from kdns.plugins.setup_context import SetupContext


class HealthHandler:
    name = "health"

    def __init__(self, addr: str, lameduck: float) -> None:
        self.addr = addr
        self.lameduck = lameduck
        self.routes = (Route(addr, "/health", lambda: (200, "text/plain", b"OK")),)

    def passes(self, qname_lower: str, qtype: int, answers: int) -> bool:
        return True  # serve() hands every question on and returns the reply as is

    def serve(self, req: Request, nxt: Next) -> Response:
        return nxt(req)


def setup(d: Directive, ctx: SetupContext) -> HealthHandler:
    if len(d.args) > 1:
        raise error(d.args[1], "health", "expected at most one address")
    addr = d.args[0].text if d.args else ":8080"
    if d.args:
        try:
            split_addr(addr, 8080)
        except ValueError as err:
            raise error(d.args[0], "health", str(err)) from None
    lameduck = 0.0
    for opt in d.block or ():
        if opt.name.text != "lameduck":
            raise error(opt, "health", f"unknown property '{opt.name.text}'")
        if len(opt.args) != 1:
            raise error(opt, "health", "lameduck needs one DURATION")
        try:
            lameduck = parse_duration(opt.args[0].text)
        except ValueError as err:
            raise error(opt.args[0], "health", str(err)) from None
    return HealthHandler(addr, lameduck)
