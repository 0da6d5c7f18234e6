"""ready: ``/ready`` (default ``:8181``) answers 200 once every plugin that can report
readiness says it is ready, else 503 with the names of those that are not.

Readiness also fails at once when the server starts draining (SIGTERM), while ``/health``
keeps answering, so the Service stops sending new queries before the process goes away.
"""

from __future__ import annotations

import threading
from typing import Any

from kdns.config.model import Directive, error
from kdns.plugins.base import Next, Request, Response
from kdns.plugins.http import Route, split_addr
from kdns.plugins.setup_context import SetupContext


class ReadyHandler:
    name = "ready"

    def __init__(self, addr: str, process: dict[str, Any]) -> None:
        self.addr = addr
        self._process = process
        self.routes = (Route(addr, "/ready", self.check),)

    def check(self) -> tuple[int, str, bytes]:
        draining: threading.Event | None = self._process.get("draining")
        if draining is not None and draining.is_set():
            return 503, "text/plain", b"shutting down"
        if not self._process.get("serving", True):
            # Plugins may be synced a moment before the DNS sockets are bound: a Service that
            # routed traffic on this 200 would see "connection refused".
            return 503, "text/plain", b"not listening for DNS yet"
        waiting = sorted({r.name for r in self._process.get("ready_reporters", ())
                          if not r.ready()})
        if waiting:
            return 503, "text/plain", ", ".join(waiting).encode()
        return 200, "text/plain", b"OK"

    def passes(self, qname_lower: str, qtype: int, answers: int) -> bool:
        return True  # serve() hands every question on and returns the reply as is

    def serve(self, req: Request, nxt: Next) -> Response:
        return nxt(req)


def setup(d: Directive, ctx: SetupContext) -> ReadyHandler:
    if len(d.args) > 1:
        raise error(d.args[1], "ready", "expected at most one address")
    addr = d.args[0].text if d.args else ":8181"
    try:
        split_addr(addr, 8181)
    except ValueError as err:
        raise error(d.args[0] if d.args else d, "ready", str(err)) from None
    if d.block:
        raise error(d.block[0], "ready", f"unknown property '{d.block[0].name.text}'")
    return ReadyHandler(addr, ctx.process)
