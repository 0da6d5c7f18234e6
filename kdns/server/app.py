"""The server's lifecycle: Corefile blocks -> plugin chains -> listeners, start, drain, stop.

``KdnsServer.build`` runs every plugin's setup (all configuration errors surface here, located,
before anything binds); ``start`` starts the plugins (the kubernetes plugin waits up to its
``startup_timeout`` for the first list), then the probes and the DNS listeners; ``shutdown``
fails readiness at once, keeps serving for the ``health`` plugin's lameduck period, then stops.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdns.config.model import ConfigError, Directive, ServerBlock, error
from kdns.plugins import registry
from kdns.plugins.http import Route
from kdns.plugins.setup_context import Overrides, SetupContext
from kdns.server.dispatch import Dispatcher, Zone, build_chain
from kdns.server.httpd import HttpEndpoint
from kdns.server.listeners import TcpListener, UdpListener, bind_pair

log = logging.getLogger("kdns.server")

DEFAULT_DNS_PORT = 53


@dataclass(frozen=True, slots=True)
class ServeOptions:
    config_dir: Path = Path(".")
    overrides: Overrides = field(default_factory=Overrides)
    dns_addr: str | None = None
    """Bind DNS listeners to this address instead of all interfaces."""
    dns_port: int | None = None
    """Replaces port 53 (given or implied) in every server key, for unprivileged runs; 0 picks
    a free port."""


@dataclass(slots=True)
class Block:
    block: ServerBlock
    handlers: list[Any]
    ctx: SetupContext


@dataclass(slots=True)
class Listener:
    host: str
    port: int
    zones: dict[str, Zone]
    udp: UdpListener | None = None
    tcp: TcpListener | None = None


def _setup_block(block: ServerBlock, opts: ServeOptions, process: dict[str, Any]) -> Block:
    ctx = SetupContext(block.keys, opts.config_dir, opts.overrides, {}, process)
    seen: dict[str, Directive] = {}
    built: list[tuple[int, Any]] = []
    for d in block.directives:
        name = d.name.text
        func = registry.setup_func(name)
        if func is None:
            if name in registry.KNOWN_COREDNS:
                raise error(d, name, "plugin is not supported by kdns yet")
            raise error(d, None, f"unknown directive '{name}'")
        if name in seen:
            raise error(d, name, f"this plugin can only be used once per server block "
                                 f"(first at {seen[name].loc})")
        seen[name] = d
        handler = func(d, ctx)
        if handler is not None:
            built.append((registry.rank(name), handler))
    built.sort(key=lambda item: item[0])
    return Block(block, [h for _, h in built], ctx)


class KdnsServer:
    def __init__(self, blocks: tuple[ServerBlock, ...], opts: ServeOptions | None = None) -> None:
        self.opts = opts or ServeOptions()
        self.blocks_config = blocks
        self.process: dict[str, Any] = {"draining": threading.Event(), "ready_reporters": []}
        self.blocks: list[Block] = []
        self.listeners: list[Listener] = []
        self.http: list[HttpEndpoint] = []
        self._stopped = threading.Event()
        self._started = False

    # -- build -------------------------------------------------------------------------------

    def build(self) -> KdnsServer:
        """Run every plugin's setup; raises ConfigError (located) on any bad directive."""
        if not self.blocks_config:
            raise ConfigError(None, "the Corefile defines no server blocks")
        self.blocks = [_setup_block(b, self.opts, self.process) for b in self.blocks_config]
        by_addr: dict[tuple[str, int], Listener] = {}
        for blk in self.blocks:
            chain = build_chain(blk.handlers)
            names = {h.name for h in blk.handlers}
            errors = next((h for h in blk.handlers if h.name == "errors"), None)
            for key in blk.block.keys:
                port = key.port if key.port is not None else DEFAULT_DNS_PORT
                if self.opts.dns_port is not None and port == DEFAULT_DNS_PORT:
                    port = self.opts.dns_port
                host = self.opts.dns_addr or ""
                lst = by_addr.setdefault((host, port), Listener(host, port, {}))
                if key.zone in lst.zones:
                    raise error(key.loc, None, f"cannot serve dns://{key.zone}:{port} - "
                                               "it is already defined")
                label = f"dns://{host}:{port}"
                lst.zones[key.zone] = Zone(key.zone, chain, label, errors is not None,
                                           "log" not in names, errors,
                                           any(getattr(h, "blocking", False) for h in blk.handlers))
        self.listeners = list(by_addr.values())
        reporters = [h for b in self.blocks for h in b.handlers if callable(getattr(h, "ready", None))]
        self.process["ready_reporters"] = reporters
        return self

    def handlers(self) -> list[Any]:
        return [h for b in self.blocks for h in b.handlers]

    # -- run ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Probes, then plugins (which may wait for their first sync), then DNS listeners."""
        self.start_http()
        self.start_plugins()
        self.start_listeners()

    def start_http(self) -> None:
        routes: dict[str, list[Route]] = {}
        for h in self.handlers():
            for r in getattr(h, "routes", ()):
                routes.setdefault(r.addr, []).append(r)
        for addr, rs in routes.items():
            ep = HttpEndpoint(addr, rs)
            ep.start()
            self.http.append(ep)
            log.info("http %s serving %s", addr, ", ".join(r.path for r in rs))

    def start_plugins(self) -> None:
        for h in self.handlers():
            start = getattr(h, "start", None)
            if callable(start):
                start()

    def start_listeners(self) -> None:
        for lst in self.listeners:
            udp_sock, tcp_sock = bind_pair(lst.host, lst.port)
            lst.port = udp_sock.getsockname()[1]
            label = f"dns://{lst.host}:{lst.port}"
            for z in lst.zones.values():
                z.server_label = label
            lst.udp = UdpListener(udp_sock, Dispatcher(lst.zones, "udp", label),
                                  offload=any(z.blocking for z in lst.zones.values()))
            lst.tcp = TcpListener(tcp_sock, Dispatcher(lst.zones, "tcp", label))
            lst.udp.start()
            lst.tcp.start()
            log.info("listening on udp+tcp %s:%d for %s", lst.host or "*", lst.port,
                     " ".join(sorted(lst.zones)))
        self._started = True

    @property
    def lameduck(self) -> float:
        return max((getattr(h, "lameduck", 0.0) for h in self.handlers()), default=0.0)

    def shutdown(self, *, lameduck: float | None = None) -> None:
        """Graceful stop: not ready at once, keep answering for the lameduck period, stop."""
        if self._stopped.is_set():
            return
        self.process["draining"].set()
        wait = self.lameduck if lameduck is None else lameduck
        if wait > 0 and self._started:
            log.info("shutting down: not ready, serving for lameduck %.1fs", wait)
            time.sleep(wait)
        self.stop()

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        for lst in self.listeners:
            if lst.udp is not None:
                lst.udp.stop()
            if lst.tcp is not None:
                lst.tcp.stop()
        for h in self.handlers():
            stop = getattr(h, "stop", None)
            if callable(stop):
                try:
                    stop()
                except Exception:
                    log.exception("stopping plugin %s", h.name)
        for ep in self.http:
            ep.stop()
        log.info("stopped")

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def dispatcher(self, proto: str = "udp") -> Dispatcher:
        """A dispatcher over every zone of every block, for in-process use (``kdns resolve``)."""
        zones: dict[str, Zone] = {}
        for lst in self.listeners:
            for name, z in lst.zones.items():
                zones.setdefault(name, z)
        return Dispatcher(zones, proto, "dns://local")
