"""One worker process of ``kdns serve --workers N``: a whole DNS server without watches.

The supervisor (``kdns.server.supervisor``) starts ``python -m kdns.server.worker FD`` with one
end of a socketpair as FD. The worker builds the same configuration as a single-process server
and binds the same DNS ports (``SO_REUSEPORT``: the kernel spreads clients over the workers),
but three things come from, or go to, the supervisor instead:

* **Cluster objects.** Its kubernetes plugins get a :class:`RemoteSource`: a subscription to
  the supervisor's one shared source for that configuration (``kdns.k8s.fanout``), applied to
  this process's own view builder. The API server sees one set of watches per kdns instance.
* **HTTP.** Probes and ``/metrics`` are the supervisor's; a worker binds no HTTP port and
  answers ``status`` and ``scrape`` requests on the link instead.
* **Reload and shutdown.** The supervisor polls the Corefile and tells every worker at once, so
  workers never run different configurations for a whole poll interval.

When the link closes (the supervisor died), the worker stops at once: an orphan must not keep
answering from a view nobody updates.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Hashable
from typing import Any

from kdns.k8s.fanout import Op, apply_ops
from kdns.k8s.source import ResourceSpec, Sink, Source, SourceFactory
from kdns.server.ipc import Channel

log = logging.getLogger("kdns.workers")

EXIT_CONFIG = 2


class RemoteSource:
    """A :class:`~kdns.k8s.source.Source` whose objects arrive from the supervisor."""

    def __init__(self, hub: WorkerHub, key: Any, sink: Sink) -> None:
        self.hub = hub
        self.key = key
        self.sink = sink
        self.sub_id = 0
        self.sid: int | None = None
        """The supervisor's id for the shared source; set by the replay, which activates us."""

    def start(self) -> None:
        self.hub.subscribe(self)

    def stop(self) -> None:
        self.hub.unsubscribe(self)

    def synced(self) -> bool:
        return self.sid is not None

    def describe(self) -> str:
        return "the supervisor's shared watches"


class WorkerHub:
    """The worker's end of the link for cluster objects: subscriptions and their ops."""

    def __init__(self, chan: Channel) -> None:
        self.chan = chan
        self._subs: dict[int, RemoteSource] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def factory(self, key: Hashable) -> SourceFactory:
        """The factory a plugin uses instead of its own source: a subscription to the
        supervisor's source for ``key`` (the plugin's ``source_key()``)."""

        def build(_specs: list[ResourceSpec], sink: Sink) -> Source:
            return RemoteSource(self, key, sink)

        return build

    def subscribe(self, rs: RemoteSource) -> None:
        with self._lock:
            rs.sub_id = next(self._ids)
            self._subs[rs.sub_id] = rs
        self.chan.send(("subscribe", rs.sub_id, rs.key))

    def unsubscribe(self, rs: RemoteSource) -> None:
        with self._lock:
            if self._subs.pop(rs.sub_id, None) is None:
                return
        self.chan.send(("unsubscribe", rs.sub_id))

    def on_replay(self, sub_id: int, sid: int, ops: list[Op]) -> None:
        rs = self._subs.get(sub_id)
        if rs is None:
            return  # unsubscribed meanwhile
        apply_ops(rs.sink, ops)
        rs.sid = sid

    def on_ops(self, sid: int, ops: list[Op]) -> None:
        for rs in list(self._subs.values()):
            if rs.sid == sid:
                apply_ops(rs.sink, ops)


def status(server: Any) -> dict[str, Any]:
    """What the supervisor's ``/ready`` needs from this worker."""
    process = server.process
    waiting = sorted({r.name for r in process.get("ready_reporters", ()) if not r.ready()})
    return {"serving": bool(process.get("serving")), "waiting": waiting, "pid": os.getpid()}


def scrape(server: Any) -> list[Any]:
    """Every metric family this worker exposes, for the supervisor to merge."""
    return list(server.registry.collect())


def serve_link(chan: Channel, hub: WorkerHub, server: Any,
               on_eof: Callable[[], None]) -> None:
    """Read the supervisor's messages until the link closes."""
    while True:
        msg = chan.recv()
        if msg is None:
            on_eof()
            return
        kind = msg[0]
        try:
            if kind == "ops":
                hub.on_ops(msg[1], msg[2])
            elif kind == "replay":
                hub.on_replay(msg[1], msg[2], msg[3])
            elif kind == "request":
                req_id, what = msg[1], msg[2]
                payload = status(server) if what == "status" else scrape(server)
                chan.send(("reply", req_id, payload))
            elif kind == "reload":
                threading.Thread(target=_reload, args=(server,), daemon=True,
                                 name="worker-reload").start()
            elif kind == "shutdown":
                threading.Thread(target=server.shutdown, kwargs={"lameduck": msg[1]},
                                 daemon=True, name="worker-shutdown").start()
            elif kind == "subscribe_failed":
                log.error("kubernetes: the supervisor cannot read the cluster: %s", msg[2])
            else:
                log.warning("unknown message %r from the supervisor", kind)
        except Exception:
            log.exception("handling %r from the supervisor", kind)


def _reload(server: Any) -> None:
    from kdns.config.model import ConfigError
    from kdns.config.parser import load_corefile

    path = server.opts.corefile
    if path is None:
        return
    try:
        server.reload(load_corefile(path))
    except (ConfigError, ValueError, OSError) as err:
        log.error("reload: %s (keeping the running configuration)", err)
        return
    log.info("reload: worker runs the new configuration")


def _name_process(name: str) -> None:
    """Show the worker as ``kdns-worker-N`` in ps/top instead of ``python3`` (Linux's comm,
    at most 15 bytes; silently nothing elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def run(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    chan = Channel(sock, "supervisor")
    hello = chan.recv()
    if hello is None:
        return 1
    index: int = hello["index"]
    _name_process(f"kdns-worker-{index}")
    logging.basicConfig(
        level=getattr(logging, str(hello["log_level"]).upper()),
        format=f"%(asctime)s [%(levelname)s] %(name)s[w{index}]: %(message)s",
        stream=sys.stderr,
    )
    from kdns.config.model import ConfigError
    from kdns.config.parser import load_corefile, parse_corefile
    from kdns.defaults import DEFAULT_COREFILE
    from kdns.server.app import KdnsServer

    opts = hello["opts"]
    hub = WorkerHub(chan)
    try:
        if opts.corefile is None:
            blocks = parse_corefile(DEFAULT_COREFILE, "<default Corefile>")
        else:
            blocks = load_corefile(opts.corefile)
        server = KdnsServer(blocks, opts)
        server.process.update({
            "source_hub": hub,
            "loop_seed": hello["loop_seed"],
            "loop_probe": index == 0 and hello["restarts"] == 0,
            # The supervisor polls the Corefile and sends "reload"; no poller of our own.
            "reload_owner": "supervisor",
        })
        server.build()
    except (ConfigError, ValueError) as err:
        chan.send(("failed", str(err), EXIT_CONFIG))
        chan.flush(2.0)
        return EXIT_CONFIG

    # Ctrl-C in a terminal reaches the whole process group: the supervisor decides, and tells
    # us. SIGTERM sent to the group (systemd, `kill -- -PGID`) drains this worker as the
    # supervisor would.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _s, _f: threading.Thread(
        target=server.shutdown, daemon=True, name="worker-sigterm").start())

    def orphaned() -> None:
        log.error("the supervisor is gone; stopping")
        server.stop()

    threading.Thread(target=serve_link, args=(chan, hub, server, orphaned), daemon=True,
                     name="worker-link").start()
    try:
        server.start()
    except (ConfigError, ValueError, OSError) as err:
        # The same words as a single-process `kdns serve` (which the supervisor prints).
        msg = f"cannot listen: {err}" if isinstance(err, OSError) else str(err)
        chan.send(("failed", msg, EXIT_CONFIG))
        chan.flush(2.0)
        server.stop()
        return EXIT_CONFIG
    chan.send(("listening", [(lst.host, lst.port) for lst in server.listeners], os.getpid()))
    while not server.wait(1.0):
        pass
    if server.fatal_message is not None:
        chan.send(("fatal", server.fatal_message))
        chan.flush(2.0)
        return 1
    chan.flush(2.0)
    return 0


if __name__ == "__main__":  # started by the supervisor only
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: python -m kdns.server.worker FD (started by `kdns serve --workers N`)",
              file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    sys.exit(run(int(sys.argv[1])))
