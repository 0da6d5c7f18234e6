"""ready: ``/ready`` (default ``:8181``) answers 200 once every plugin that can report
readiness says it is ready, else 503 with the names of those that are not.

Readiness also fails at once when the server starts draining (SIGTERM), while ``/health``
keeps answering, so the Service stops sending new queries before the process goes away.

``monitor until-ready`` (CoreDNS's default) stops asking a plugin once it has said ready, so a
plugin that later loses its source does not take the pod out of the Service; ``monitor
continuously`` asks every plugin on every request. Reporters that stand for whole worker
processes (``monitor_always``) are asked every time in both modes: a dead worker is not a
plugin's passing hiccup.
"""

from __future__ import annotations

import threading
from typing import Any

from kdns.config.model import Directive, error
from kdns.plugins.base import Next, Request, Response, always_passes
from kdns.plugins.http import Route, listen_addr
from kdns.plugins.setup_context import SetupContext

MONITOR_MODES = ("until-ready", "continuously")


class ReadyHandler:
    name = "ready"

    def __init__(self, addr: str, process: dict[str, Any], monitor: str = "until-ready") -> None:
        self.addr = addr
        self.monitor = monitor
        self._process = process
        self.routes = (Route(addr, "/ready", self.check),)
        self._lock = threading.Lock()
        self._reporters: object = None
        """The reporter list ``_done`` belongs to; a reload installs a new list and starts over,
        as CoreDNS resets its list on reload."""
        self._done: set[int] = set()

    def _waiting(self) -> list[str]:
        reporters = self._process.get("ready_reporters", ())
        with self._lock:
            if reporters is not self._reporters:
                self._reporters, self._done = reporters, set()
            waiting: set[str] = set()
            for i, r in enumerate(reporters):
                if i in self._done:
                    continue
                if not r.ready():
                    waiting.add(r.name)
                elif self.monitor == "until-ready" and not getattr(r, "monitor_always", False):
                    self._done.add(i)
            return sorted(waiting)

    def check(self) -> tuple[int, str, bytes]:
        draining: threading.Event | None = self._process.get("draining")
        if draining is not None and draining.is_set():
            return 503, "text/plain", b"shutting down"
        if not self._process.get("serving", True):
            # Plugins may be synced a moment before the DNS sockets are bound: a Service that
            # routed traffic on this 200 would see "connection refused".
            return 503, "text/plain", b"not listening for DNS yet"
        waiting = self._waiting()
        if waiting:
            return 503, "text/plain", ", ".join(waiting).encode()
        return 200, "text/plain", b"OK"

    passes = always_passes  # serve() hands every question on and returns the reply as is

    def serve(self, req: Request, nxt: Next) -> Response:
        return nxt(req)


def setup(d: Directive, ctx: SetupContext) -> ReadyHandler:
    addr = listen_addr(d, "ready", ":8181", 8181)
    monitor = "until-ready"
    for opt in d.block or ():
        if opt.name.text != "monitor":
            raise error(opt, "ready", f"unknown property '{opt.name.text}'")
        if len(opt.args) != 1 or opt.block is not None:
            raise error(opt, "ready", "monitor needs one of until-ready, continuously")
        if opt.args[0].text not in MONITOR_MODES:
            raise error(opt.args[0], "ready", f"monitor type '{opt.args[0].text}' not supported "
                                              "(use until-ready or continuously)")
        monitor = opt.args[0].text
    return ReadyHandler(addr, ctx.process, monitor)
