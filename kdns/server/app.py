"""The server's lifecycle: Corefile blocks -> plugin chains -> listeners, start, drain, stop.

``KdnsServer.build`` runs every plugin's setup (all configuration errors surface here, located,
before anything binds); ``start`` starts the plugins (the kubernetes plugin waits up to its
``startup_timeout`` for the first list), then the probes and the DNS listeners; ``shutdown``
fails readiness at once, keeps serving for the ``health`` plugin's lameduck period, then stops.
"""

from __future__ import annotations

import gc
import logging
import socket
import threading
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector

from kdns.config.model import ConfigError, Directive, ServerBlock, error
from kdns.plugins import registry
from kdns.plugins.base import GENERATION, ErrorReporter, SeesEveryQuery
from kdns.plugins.http import Route
from kdns.plugins.metrics import listen_label
from kdns.plugins.setup_context import Overrides, SetupContext
from kdns.server.dispatch import Dispatcher, Zone, build_chain, client_scoper, cold_path
from kdns.server.httpd import HttpEndpoint
from kdns.server.listeners import (
    Limits,
    ListenError,
    TcpListener,
    UdpListener,
    bind_pair,
    shared_with_another,
)
from kdns.server.metrics import ServerCollector
from kdns.server.store import DEFAULT_MAX_BYTES

log = logging.getLogger("kdns.server")

DEFAULT_DNS_PORT = 53
DRAIN_GRACE = 30.0
"""How long a second ``stop()`` waits for the first to finish draining."""
RELOAD_GRACE = 5.0
"""Seconds the previous configuration's plugins keep running after a reload, so queries that
were in flight on the old chain (a forward waiting on its upstream) finish normally."""


@dataclass(frozen=True, slots=True)
class ServeOptions:
    config_dir: Path = Path(".")
    overrides: Overrides = field(default_factory=Overrides)
    dns_addr: str | None = None
    """Bind DNS listeners to this address instead of all interfaces, in every server block
    without a ``bind`` directive (``bind`` takes precedence where present)."""
    corefile: Path | None = None
    """The Corefile the configuration came from (``reload`` watches it); None: built-in."""
    dns_port: int | None = None
    """Replaces port 53 (given or implied) in every server key, for unprivileged runs; 0 picks
    a free port."""
    reply_store_bytes: int = DEFAULT_MAX_BYTES
    """Budget of each listener's store of ready-made replies (``--reply-store-mb``)."""
    http: bool = True
    """Serve the plugins' HTTP endpoints (probes, metrics). A worker of ``--workers N`` does
    not: its supervisor serves them for every worker."""


@dataclass(slots=True)
class Block:
    block: ServerBlock
    handlers: list[Any]
    ctx: SetupContext


@dataclass(slots=True)
class Listener:
    host: str
    port: int
    """The bound port (the configured one until ``start_listeners``; differs for port 0)."""
    zones: dict[str, Zone]
    udp: UdpListener | None = None
    tcp: TcpListener | None = None
    limits: Limits = field(default_factory=Limits)
    """From the ``timeouts`` and ``limits`` directives of the first block on this address
    that has them (a listener is shared, so its limits are too)."""
    v6: tuple[UdpListener, TcpListener] | None = None
    """With no bind address: the IPv6 sockets ("::", v6-only) beside the IPv4 ones."""
    config_port: int = -1
    """The port the configuration asked for; reload matches listeners on (host, config_port)."""

    def set_zones(self, zones: dict[str, Zone]) -> None:
        """Swap the zone table under live sockets (one reference assignment per dispatcher)."""
        label = listen_label(self.host, self.port)
        for z in zones.values():
            z.server_label = label
        self.zones = zones
        for side in self.sides():
            side.dispatcher.zones = zones
            side.dispatcher.rescope()

    def sides(self) -> list[UdpListener | TcpListener]:
        out: list[UdpListener | TcpListener] = [s for s in (self.udp, self.tcp) if s is not None]
        if self.v6 is not None:
            out.extend(self.v6)
        return out


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
        if name in seen and name not in registry.REPEATABLE:
            raise error(d, name, f"this plugin can only be used once per server block "
                                 f"(first at {seen[name].loc})")
        seen[name] = d
        handler = func(d, ctx)
        if handler is not None:
            built.append((registry.rank(name), handler))
    built.sort(key=lambda item: item[0])
    for _, h in built:
        # Checks that need the whole block (autopath needs the block's kubernetes plugin,
        # wherever the Corefile put it) run once every directive is set up.
        finish = getattr(h, "finish_setup", None)
        if callable(finish):
            finish()
    return Block(block, [h for _, h in built], ctx)


def _limits(handlers: list[Any]) -> Limits:
    """The listener limits a block asks for (``timeouts``, ``limits``), over the defaults."""
    values: dict[str, Any] = {}
    for h in handlers:
        values.update(getattr(h, "listener_limits", {}))
    return Limits(**values)


class KdnsServer:
    def __init__(self, blocks: tuple[ServerBlock, ...], opts: ServeOptions | None = None) -> None:
        self.opts = opts or ServeOptions()
        self.blocks_config = blocks
        self.process: dict[str, Any] = {
            "draining": threading.Event(),
            "ready_reporters": [],
            "listen_addrs": [],
            "fatal": self.fatal,
            "serving": False,
            "reload": self.reload,
            "corefile_path": self.opts.corefile,
            # forward's self-loop guard compares resolv.conf upstreams with where we listen
            "dns_port": self.opts.dns_port,
            "dns_addr": self.opts.dns_addr,
        }
        self.fatal_message: str | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServerCollector(self))
        # process_resident_memory_bytes, CPU seconds, open fds: what CoreDNS exports too (Go's
        # process collector), and what the memory alert in deploy/observability reads.
        ProcessCollector(registry=self.registry)
        self.process["metrics_registry"] = self.registry
        self.process["replays"] = self.replays
        self.blocks: list[Block] = []
        self.listeners: list[Listener] = []
        self.http: list[HttpEndpoint] = []
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        """Set once everything has stopped: ``wait()`` returning lets ``kdns serve`` exit, so
        it must not be set while a drain is still answering queued queries."""
        self._started = False
        self._reload_lock = threading.Lock()
        self.reloads = 0

    # -- build -------------------------------------------------------------------------------

    def build(self) -> KdnsServer:
        """Run every plugin's setup; raises ConfigError (located) on any bad directive."""
        self.blocks, self.listeners = self._plan(self.blocks_config)
        self.process["ready_reporters"] = self._reporters(self.blocks)
        return self

    def _plan(self, config: tuple[ServerBlock, ...]) -> tuple[list[Block], list[Listener]]:
        if not config:
            raise ConfigError(None, "the Corefile defines no server blocks")
        blocks = [_setup_block(b, self.opts, self.process) for b in config]
        by_addr: dict[tuple[str, int], Listener] = {}
        # (zone, port) -> hosts serving it: a zone on every interface and on one address of
        # the same port would have two listeners contend for the same packets (CoreDNS too
        # refuses this).
        served: dict[tuple[str, int], set[str]] = {}
        for blk in blocks:
            chain = build_chain(blk.handlers)
            every = any(isinstance(h, SeesEveryQuery) and h.sees_every_query
                        for h in blk.handlers)
            errors = next((h for h in blk.handlers if isinstance(h, ErrorReporter)), None)
            # ``bind`` chooses the block's addresses; without it, --dns-addr or every interface.
            hosts = blk.ctx.listen_hosts or [self.opts.dns_addr or ""]
            for key in blk.block.keys:
                port = key.port if key.port is not None else DEFAULT_DNS_PORT
                if self.opts.dns_port is not None and port == DEFAULT_DNS_PORT:
                    port = self.opts.dns_port
                for host in hosts:
                    lst = by_addr.get((host, port))
                    if lst is None:
                        lst = by_addr[(host, port)] = Listener(host, port, {}, config_port=port,
                                                               limits=_limits(blk.handlers))
                    if key.zone in lst.zones:
                        raise error(key.loc, None, f"cannot serve dns://{key.zone}:{port} - "
                                                   "it is already defined")
                    others = served.setdefault((key.zone, port), set())
                    if others and ("" in others or not host):
                        other = next(iter(others - {host}), "")
                        raise error(key.loc, None, f"cannot serve dns://{key.zone}:{port} - zone "
                                                   "overlap listener capacity with "
                                                   f"dns://{key.zone}:{port} on "
                                                   f"{other or 'every interface'}")
                    others.add(host)
                    label = listen_label(host, port)
                    lst.zones[key.zone] = Zone(key.zone, chain, label, errors is not None,
                                               not every, errors,
                                               any(getattr(h, "blocking", False)
                                                   for h in blk.handlers),
                                               tuple(h.name for h in blk.handlers),
                                               cold_path(blk.handlers),
                                               client_scoper(blk.handlers))
        return blocks, list(by_addr.values())

    @staticmethod
    def _reporters(blocks: list[Block]) -> list[Any]:
        return [h for b in blocks for h in b.handlers if callable(getattr(h, "ready", None))]

    def extra_metrics(self) -> Iterator[Any]:
        """Families the server itself adds beyond the dispatchers' (reload, for one)."""
        yield from ()

    def replays(self) -> dict[Hashable, int]:
        """Fast-path replays so far by the producing plugin's token (``Response.tally``),
        for plugins that count them (the cache's hits): dropped entries plus live ones."""
        out: dict[Hashable, int] = {}
        for lst in self.listeners:
            for side in lst.sides():
                d = side.dispatcher
                for token, n in d.stats.replay_counts(d.store.entries.values()).items():
                    out[token] = out.get(token, 0) + n
        return out

    def handlers(self, blocks: list[Block] | None = None) -> list[Any]:
        return [h for b in (self.blocks if blocks is None else blocks) for h in b.handlers]

    # -- run ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Probes, then plugins (which may wait for their first sync), then DNS listeners."""
        self.start_http()
        self.start_plugins()
        # What start-up built (modules, the first view) lives as long as the process: keep
        # it out of the cyclic collector's full passes, which the stored replies trigger.
        gc.freeze()
        self.start_listeners()
        self._started_hooks()

    def fatal(self, message: str) -> None:
        """A plugin found that the process must not run (e.g. a forwarding loop): stop now."""
        log.critical("%s", message)
        self.fatal_message = message
        threading.Thread(target=self.stop, daemon=True, name="fatal-stop").start()

    def start_http(self, blocks: list[Block] | None = None) -> None:
        """Bring HTTP endpoints in line with the handlers' routes: an address already served
        keeps its socket and gets the new routes; a new one starts; a dropped one stops."""
        if not self.opts.http:
            return
        routes: dict[str, list[Route]] = {}
        for h in self.handlers(blocks):
            for r in getattr(h, "routes", ()):
                routes.setdefault(r.addr, []).append(r)
        current = {ep.addr: ep for ep in self.http}
        kept: list[HttpEndpoint] = []
        for addr, rs in routes.items():
            ep = current.pop(addr, None)
            if ep is not None:
                ep.set_routes(rs)
            else:
                ep = HttpEndpoint(addr, rs)
                ep.start()
                log.info("http %s serving %s", addr, ", ".join(r.path for r in rs))
            kept.append(ep)
        for ep in current.values():
            ep.stop()
        self.http = kept

    def start_plugins(self, blocks: list[Block] | None = None) -> None:
        for h in self.handlers(blocks):
            start = getattr(h, "start", None)
            if callable(start):
                start()

    def _started_hooks(self, blocks: list[Block] | None = None) -> None:
        for h in self.handlers(blocks):
            started = getattr(h, "started", None)
            if callable(started):
                started()

    def start_listeners(self, listeners: list[Listener] | None = None) -> None:
        # Port 0 picks a free port once per configured port: every address a Corefile port
        # is bound to (``bind``) then answers on the same port, as it would on 53.
        picked = {lst.config_port: lst.port for lst in self.listeners
                  if lst.config_port == 0 and lst.udp is not None}
        for lst in self.listeners if listeners is None else listeners:
            if lst.port == 0 and lst.config_port in picked:
                lst.port = picked[lst.config_port]
            what = ("zone " if len(lst.zones) == 1 else "zones ") + " ".join(sorted(lst.zones))
            # Workers of --workers N share their port on purpose.
            shared = (self.process.get("source_hub") is None
                      and shared_with_another(lst.host, lst.port))
            try:
                udp_sock, tcp_sock = bind_pair(lst.host, lst.port)
            except OSError as err:
                raise ListenError(what, lst.host, lst.port, err) from None
            if shared:
                log.warning("udp %s:%d is already bound by another process that shares it "
                            "(SO_REUSEPORT, e.g. another kdns): the kernel splits queries "
                            "between both; unless this is a rollout, stop one of them",
                            lst.host or "0.0.0.0", lst.port)
            lst.port = udp_sock.getsockname()[1]
            if lst.config_port == 0:
                picked.setdefault(lst.config_port, lst.port)
            label = listen_label(lst.host, lst.port)
            for z in lst.zones.values():
                z.server_label = label
            family = 2 if ":" in lst.host else 1
            lim = lst.limits
            lst.udp = UdpListener(udp_sock, Dispatcher(lst.zones, "udp", label, family,
                                                             max_bytes=self.opts.reply_store_bytes),
                                  offload=any(z.blocking for z in lst.zones.values()),
                                  workers=lim.udp_workers, queue_size=lim.udp_queue)
            lst.tcp = TcpListener(tcp_sock, Dispatcher(lst.zones, "tcp", label, family,
                                                             max_bytes=self.opts.reply_store_bytes),
                                  limits=lim)
            lst.udp.start()
            lst.tcp.start()
            if not lst.host and socket.has_ipv6:
                try:
                    u6, t6 = bind_pair("::", lst.port)
                except OSError as err:  # no IPv6 on this host: IPv4 alone is still a server
                    log.info("not listening on IPv6 [::]:%d: %s", lst.port, err)
                else:
                    offload = any(z.blocking for z in lst.zones.values())
                    lst.v6 = (UdpListener(u6, Dispatcher(lst.zones, "udp", label, 2,
                                                         max_bytes=self.opts.reply_store_bytes),
                                          offload=offload, workers=lim.udp_workers,
                                          queue_size=lim.udp_queue),
                              TcpListener(t6, Dispatcher(lst.zones, "tcp", label, 2,
                                                         max_bytes=self.opts.reply_store_bytes),
                                          limits=lim))
                    for side in lst.v6:
                        side.start()
            self.process["listen_addrs"].append((lst.host or "127.0.0.1", lst.port))
            # The same address `kdns serve` prints on stdout (0.0.0.0 for all interfaces).
            log.info("listening on udp+tcp %s:%d%s for %s", lst.host or "0.0.0.0", lst.port,
                     f" and [::]:{lst.port}" if lst.v6 is not None else "", what)
        self._started = True
        self.process["serving"] = True

    # -- reload ------------------------------------------------------------------------------

    def reload(self, config: tuple[ServerBlock, ...]) -> None:
        """Swap to a new configuration while serving.

        Setup errors raise before anything changes (the old configuration keeps serving).
        Listeners on an address and port both configurations use keep their sockets and get
        the new chains by one reference swap; in-flight queries finish on the old chain, whose
        plugins are stopped only after a grace period.
        """
        with self._reload_lock:
            blocks, listeners = self._plan(config)
            try:
                self.start_plugins(blocks)
            except BaseException:
                self._stop_handlers(blocks)
                raise
            old_blocks = self.blocks
            current = {(lst.host, lst.config_port): lst for lst in self.listeners}
            merged: list[Listener] = []
            fresh: list[Listener] = []
            for lst in listeners:
                live = current.pop((lst.host, lst.config_port), None)
                if live is not None and live.udp is not None:
                    live.set_zones(lst.zones)
                    blocking = any(z.blocking for z in lst.zones.values())
                    for side in live.sides():
                        if isinstance(side, UdpListener) and side.offload != blocking:
                            side.set_offload(blocking)
                        elif isinstance(side, TcpListener):
                            side.limits = lst.limits  # UDP queue sizes apply at bind only
                    live.limits = lst.limits
                    merged.append(live)
                else:
                    fresh.append(lst)
                    merged.append(lst)
            self.start_listeners(fresh)
            for gone in current.values():
                self._stop_listener(gone, drain=True)
            self.blocks, self.listeners = blocks, merged
            self.process["ready_reporters"] = self._reporters(blocks)
            GENERATION.bump()  # stored replies came from the old chains
            self.start_http(blocks)
            self._started_hooks(blocks)
            timer = threading.Timer(RELOAD_GRACE, self._stop_handlers, args=(old_blocks,))
            timer.daemon = True
            timer.start()
            self.reloads += 1

    def _stop_handlers(self, blocks: list[Block]) -> None:
        for h in self.handlers(blocks):
            stop = getattr(h, "stop", None)
            if callable(stop):
                try:
                    stop()
                except Exception:
                    log.exception("stopping plugin %s", h.name)

    @staticmethod
    def _stop_listener(lst: Listener, drain: bool = False) -> None:
        for side in lst.sides():
            if isinstance(side, UdpListener):
                side.stop(drain=drain)
            else:
                side.stop()

    @property
    def lameduck(self) -> float:
        return max((getattr(h, "lameduck", 0.0) for h in self.handlers()), default=0.0)

    def shutdown(self, *, lameduck: float | None = None) -> None:
        """Graceful stop: not ready at once, keep answering for the lameduck period, stop."""
        if self._stopping.is_set():
            return
        self.process["draining"].set()
        wait = self.lameduck if lameduck is None else lameduck
        if wait > 0 and self._started:
            log.info("shutting down: not ready, serving for lameduck %.1fs", wait)
            time.sleep(wait)
        self.stop(drain=True)

    def stop(self, drain: bool = False) -> None:
        if self._stopping.is_set():
            # A second caller returns when the first has finished (bounded: never hang a
            # caller that the first one might be waiting for).
            self._stopped.wait(DRAIN_GRACE)
            return
        self._stopping.set()
        try:
            for lst in self.listeners:
                self._stop_listener(lst, drain)
            self._stop_handlers(self.blocks)
            for ep in self.http:
                ep.stop()
            log.info("stopped")
        finally:
            self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def dispatcher(self, proto: str = "udp") -> Dispatcher:
        """A dispatcher over every zone of every block, for in-process use (``kdns resolve``)."""
        zones: dict[str, Zone] = {}
        for lst in self.listeners:
            for name, z in lst.zones.items():
                zones.setdefault(name, z)
        return Dispatcher(zones, proto, "dns://local")
