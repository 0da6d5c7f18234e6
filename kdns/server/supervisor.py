"""``kdns serve --workers N``: N worker processes on one port, one set of watches, one /metrics.

A Python process answers from one core, so a many-core node runs N workers
(``kdns.server.worker``), each a full DNS server bound to the same address and port with
``SO_REUSEPORT``; the kernel spreads clients over them by a hash of the 4-tuple. This
supervisor owns what must exist once per kdns instance:

* **Watches.** One :class:`~kdns.k8s.fanout.SharedSource` per distinct kubernetes source
  configuration, fanned out to every worker's view builder. The API server sees the same
  list+watch requests as from a single-process kdns, whatever N is.
* **HTTP.** ``/health``, ``/ready`` (200 only when every worker listens and is ready) and
  ``/metrics`` (every worker's families merged: counters and histograms summed, so a scrape
  reads like one CoreDNS instance) on the addresses the Corefile names.
* **Lifecycle.** Start-up fails as a single process would (a located Corefile error, exit 2)
  before any worker starts; a worker that dies is restarted (back-off up to
  :data:`RESTART_MAX`) and gets the whole cluster state replayed; SIGTERM drains every worker
  through the lameduck period; a fatal condition in a worker (a forwarding loop) stops all.
* **Reload.** The supervisor's ``reload`` poller validates a changed Corefile and tells all
  workers at once.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from kdns.config.model import ConfigError, ServerBlock
from kdns.k8s.fanout import Op, SharedSource
from kdns.plugins.base import SharesSource
from kdns.server.app import KdnsServer, ServeOptions
from kdns.server.ipc import Channel, encode
from kdns.server.listeners import bind_pair

log = logging.getLogger("kdns.workers")

RESTART_MIN = 0.5
RESTART_MAX = 30.0
"""Back-off between restarts of a worker that keeps dying (doubling from RESTART_MIN)."""
START_GRACE = 30.0
"""How long start-up waits for every worker to listen, beyond the kubernetes startup_timeout."""
REQUEST_TIMEOUT = 2.0
"""How long a probe or a scrape waits for a worker's answer."""
METRICS_REFRESH = 10.0
"""Seconds between the supervisor's own scrapes of its workers (see ``_refresh_metrics``)."""
STOP_GRACE = 10.0
"""After the lameduck period, how long a worker may take to exit before it is killed."""

SUM_GAUGES = frozenset({"kdns_fast_path_entries", "coredns_cache_entries"})
"""Gauges that count things each worker holds separately: the instance holds their sum."""
MAX_FAMILIES = frozenset({"coredns_build_info", "coredns_plugin_enabled",
                          "kdns_kubernetes_stale", "kdns_kubernetes_view_age_seconds",
                          "kdns_kubernetes_services", "coredns_hosts_entries",
                          "coredns_hosts_reload_timestamp_seconds"})
"""Facts every worker reports alike (or the worst of): one value, not N times it."""
MIN_FAMILIES = frozenset({"kdns_kubernetes_synced"})
"""Synced only when every worker is."""
FIRST_FAMILIES = frozenset({"coredns_kubernetes_dns_programming_duration_seconds"})
"""Every worker programs every change: one worker's histogram is the instance's."""
SUPERVISOR_FAMILIES = frozenset({"coredns_reload_failed", "coredns_reload_version_info"})
"""Families the supervisor itself owns (it runs the reload poller)."""


@dataclass(eq=False)
class Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    chan: Channel | None = None
    pid: int = 0
    listening: list[tuple[str, int]] | None = None
    restarts: int = 0
    backoff: float = RESTART_MIN
    started_at: float = 0.0
    failed: tuple[str, int] | None = None
    """A start-up failure the worker reported: (message, exit code)."""
    up: threading.Event = field(default_factory=threading.Event)
    replies: dict[int, Any] = field(default_factory=dict)
    waiting: set[int] = field(default_factory=set)
    """Request ids still awaited: a reply that comes after its request gave up is dropped."""
    reply_cond: threading.Condition = field(default_factory=threading.Condition)
    last_scrape: list[Metric] | None = None
    """The worker's families at the last scrape: its counters are kept when it dies."""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.chan is not None \
            and not self.chan.closed


class WorkerReady:
    """One worker, as a ready reporter for the ``ready`` plugin (named by what it waits for)."""

    def __init__(self, sup: Supervisor, worker: Worker) -> None:
        self.sup = sup
        self.worker = worker
        self.name = f"worker {worker.index}"

    def ready(self) -> bool:
        w = self.worker
        if not w.alive or w.listening is None:
            self.name = f"worker {w.index} (not listening)"
            return False
        st = self.sup.request(w, "status")
        if st is None:
            self.name = f"worker {w.index} (no answer)"
            return False
        waiting = list(st["waiting"]) + ([] if st["serving"] else ["not serving"])
        self.name = f"worker {w.index}" + (f" ({', '.join(waiting)})" if waiting else "")
        return not waiting


class Supervisor:
    """The ``--workers N`` counterpart of :class:`~kdns.server.app.KdnsServer` (same calls)."""

    def __init__(self, blocks: tuple[ServerBlock, ...], opts: ServeOptions, workers: int, *,
                 log_level: str = "info") -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.opts = opts
        self.n = workers
        self.log_level = log_level
        self.front = KdnsServer(blocks, opts)
        self.process = self.front.process
        self.fatal_message: str | None = None
        self.workers = [Worker(i) for i in range(workers)]
        self.sources: dict[Hashable, SharedSource] = {}
        self._sids: dict[Hashable, int] = {}
        self._sid_counter = itertools.count(1)
        self._config_keys: set[Hashable] = set()
        self._sources_lock = threading.Lock()
        self._req_ids = itertools.count(1)
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._loop_seed = secrets.token_hex(16)
        self._placeholder: tuple[socket.socket, socket.socket] | None = None
        self._retired: list[Metric] = []
        """Counters and histograms of workers that exited, as last scraped: added to the live
        workers' so the instance's counters never go down when a worker is restarted (a
        decrease reads as a reset to Prometheus, and rate() would spike)."""
        self._metrics_lock = threading.Lock()
        self.listeners: list[Any] = []
        """(host, port) of the DNS sockets, as worker 0 bound them (``kdns serve`` prints them)."""
        self.worker_opts = opts

    # -- build -------------------------------------------------------------------------------

    def build(self) -> Supervisor:
        """Every plugin's setup runs here first: a bad Corefile fails before any worker."""
        self.front.build()
        self._config_keys = self._keys(self.front)
        for key in self._config_keys:
            src = self._source(key)
            src.load_once()  # a manifest that does not load fails start-up, as single-process
        self.process["ready_reporters"] = [WorkerReady(self, w) for w in self.workers]
        self.process["serving"] = False
        self.process["reload"] = self._reload
        self.process["fatal"] = self.fatal
        registry = CollectorRegistry(auto_describe=False)
        registry.register(WorkersCollector(self))
        self.process["metrics_registry"] = registry
        return self

    @staticmethod
    def _keys(server: KdnsServer) -> set[Hashable]:
        return {h.source_key() for h in server.handlers() if isinstance(h, SharesSource)}

    def _source(self, key: Any) -> SharedSource:
        with self._sources_lock:
            src = self.sources.get(key)
            if src is None:
                sid = self._sids.setdefault(key, next(self._sid_counter))
                src = SharedSource(key, key.factory(), list(key.specs),
                                   frame=functools.partial(_live, sid))
                self.sources[key] = src
            return src

    # -- run ---------------------------------------------------------------------------------

    def start(self) -> None:
        opts = self.opts
        if opts.dns_port == 0:
            # Every worker must bind the same port: pick it here, and hold it (SO_REUSEPORT)
            # until the workers have bound it too.
            udp, tcp = bind_pair(opts.dns_addr or "", 0)
            self._placeholder = (udp, tcp)
            opts = replace(opts, dns_port=udp.getsockname()[1])
        self.worker_opts = replace(opts, http=False)
        for src in list(self.sources.values()):
            src.start()
            log.info("kubernetes: reading from %s for %d workers", src.describe(), self.n)
        self.front.start_http()
        for h in self.front.handlers():
            if h.name == "reload":
                h.start()
        for w in self.workers:
            self._spawn(w)
        timeout = START_GRACE + max((getattr(h.cfg, "startup_timeout", 0.0)
                                     for h in self.front.handlers() if h.name == "kubernetes"),
                                    default=0.0)
        deadline = time.monotonic() + timeout
        try:
            for w in self.workers:
                while not w.up.wait(0.1):
                    if w.failed is not None or (w.proc is not None and w.proc.poll() is not None):
                        msg, code = w.failed or (f"worker {w.index} exited with code "
                                                 f"{w.proc.returncode if w.proc else '?'} "
                                                 "while starting", 1)
                        raise (ConfigError(None, msg) if code == 2 else OSError(msg))
                    if time.monotonic() > deadline:
                        raise OSError(f"worker {w.index} did not start listening in "
                                      f"{timeout:.0f}s")
        except BaseException:
            self.stop()
            raise
        if self._placeholder is not None:
            for s in self._placeholder:
                s.close()
            self._placeholder = None
        first = self.workers[0].listening or []
        self.listeners = [_Addr(host, port) for host, port in first]
        self.process["listen_addrs"] = [(h or "127.0.0.1", p) for h, p in first]
        self.process["serving"] = True
        threading.Thread(target=self._monitor, daemon=True, name="workers-monitor").start()
        threading.Thread(target=self._refresh_metrics, daemon=True,
                         name="workers-metrics").start()
        log.info("%d workers serving (pids %s)", self.n,
                 " ".join(str(w.pid) for w in self.workers))

    def _spawn(self, w: Worker) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kdns.server.worker", str(child.fileno())],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            child.close()
        w.proc, w.pid = proc, proc.pid
        w.chan = Channel(parent, f"worker-{w.index}")
        w.listening, w.failed = None, None
        w.up.clear()
        w.started_at = time.monotonic()
        w.chan.send({"index": w.index, "opts": self.worker_opts, "log_level": self.log_level,
                     "loop_seed": self._loop_seed, "restarts": w.restarts})
        threading.Thread(target=self._read, args=(w, w.chan), daemon=True,
                         name=f"worker-{w.index}-link").start()

    def _read(self, w: Worker, chan: Channel) -> None:
        """Messages from one worker, until its link closes."""
        while True:
            msg = chan.recv()
            if msg is None:
                break
            kind = msg[0]
            try:
                if kind == "subscribe":
                    self._subscribe(w, chan, msg[1], msg[2])
                elif kind == "unsubscribe":
                    self._unsubscribe(chan, msg[1])
                elif kind == "reply":
                    with w.reply_cond:
                        if msg[1] in w.waiting:
                            w.replies[msg[1]] = msg[2]
                            w.reply_cond.notify_all()
                elif kind == "listening":
                    w.listening = [(str(h), int(p)) for h, p in msg[1]]
                    w.up.set()
                elif kind == "failed":
                    w.failed = (str(msg[1]), int(msg[2]))
                    log.error("worker %d: %s", w.index, msg[1])
                elif kind == "fatal":
                    self.fatal(str(msg[1]))
            except Exception:
                log.exception("handling %r from worker %d", kind, w.index)
        chan.close()
        with w.reply_cond:
            w.reply_cond.notify_all()  # requests to this worker give up now, not at timeout
        self.retire(w)
        for key in list(self.sources):
            src = self.sources.get(key)
            if src is not None:
                src.unsubscribe(chan)
        self._collect_unused()

    def _subscribe(self, w: Worker, chan: Channel, sub_id: int, key: Any) -> None:
        try:
            src = self._source(key)
            if src.subscribers == 0 and key not in self._config_keys:
                # A worker's reload asked for a source the supervisor's configuration did not
                # start (the supervisor reloads first, so this is a race or an older worker).
                src.load_once()
            if not src.started:
                src.start()
        except (ValueError, OSError) as err:
            chan.send(("subscribe_failed", sub_id, str(err)))
            return
        sid = self._sids[key]
        src.subscribe(chan, sub_id, chan.send_frame, functools.partial(_replay, sub_id, sid))

    def _unsubscribe(self, chan: Channel, sub_id: int) -> None:
        for src in list(self.sources.values()):
            src.unsubscribe(chan, sub_id)
        self._collect_unused()

    def _collect_unused(self) -> None:
        """Stop sources that no configuration uses and no worker reads any more."""
        with self._sources_lock:
            gone = [k for k, s in self.sources.items()
                    if s.subscribers == 0 and k not in self._config_keys]
            stopped = [self.sources.pop(k) for k in gone]
        for s in stopped:
            log.info("kubernetes: stopping watches no configuration uses: %s", s.describe())
            s.stop()

    def _monitor(self) -> None:
        """Restart workers that exit while the instance is serving."""
        while not self._stopping.wait(0.2):
            for w in self.workers:
                if w.proc is None or w.proc.poll() is None:
                    continue
                if self._stopping.is_set():
                    return
                code = w.proc.returncode
                uptime = time.monotonic() - w.started_at
                if uptime > 60:
                    w.backoff = RESTART_MIN  # it ran fine for a while: start over
                log.error("worker %d (pid %d) exited with code %s after %.1fs; restarting in "
                          "%.1fs", w.index, w.pid, code, uptime, w.backoff)
                if w.chan is not None:
                    w.chan.close()
                w.proc = None
                delay, w.backoff = w.backoff, min(RESTART_MAX, w.backoff * 2)
                if self._stopping.wait(delay):
                    return
                w.restarts += 1
                self._spawn(w)

    # -- metrics -----------------------------------------------------------------------------

    def _refresh_metrics(self) -> None:
        """Keep every worker's last scrape recent even when nobody scrapes ``/metrics``: a
        worker that dies leaves at most this much of its counting unreported."""
        while not self._stopping.wait(METRICS_REFRESH):
            try:
                self.scrape()
            except Exception:  # a metrics hiccup must never stop the refresh
                log.exception("refreshing the workers' metrics")

    def retire(self, w: Worker) -> None:
        """The worker's link closed: fold its last counters into the retired ones, once."""
        with self._metrics_lock:
            last, w.last_scrape = w.last_scrape, None
            if last:
                self._retired = list(merge([self._retired, cumulative(last)]))

    def scrape(self) -> list[tuple[Worker, list[Metric]]]:
        """Every live worker's families (kept as its last scrape) and the retired counters."""
        out: list[tuple[Worker, list[Metric]]] = []
        for w in self.workers:
            if w.alive and w.listening is not None:
                chan = w.chan
                fams = self.request(w, "scrape")
                if fams is None:
                    continue
                with self._metrics_lock:
                    # Only while that same process is still linked. A worker that died since
                    # its reply is counted from what was retired, in this scrape and the next
                    # alike, so the instance's counters never step back.
                    if chan is None or w.chan is not chan or chan.closed:
                        continue
                    w.last_scrape = fams
                out.append((w, fams))
        return out

    def retired(self) -> list[Metric]:
        with self._metrics_lock:
            return list(self._retired)

    # -- requests to workers -----------------------------------------------------------------

    def request(self, w: Worker, what: str, timeout: float = REQUEST_TIMEOUT) -> Any:
        """Ask one worker (``status`` or ``scrape``); None if it does not answer in time."""
        chan = w.chan
        if chan is None or chan.closed:
            return None
        req_id = next(self._req_ids)
        with w.reply_cond:
            w.waiting.add(req_id)
        try:
            if not chan.send(("request", req_id, what)):
                return None
            deadline = time.monotonic() + timeout
            with w.reply_cond:
                while req_id not in w.replies:
                    left = deadline - time.monotonic()
                    if left <= 0 or chan.closed:
                        return None
                    w.reply_cond.wait(left)
                return w.replies.pop(req_id)
        finally:
            with w.reply_cond:
                w.waiting.discard(req_id)
                w.replies.pop(req_id, None)

    # -- reload ------------------------------------------------------------------------------

    def _reload(self, config: tuple[ServerBlock, ...]) -> None:
        """The supervisor's reload poller found a new Corefile: check it, then tell workers."""
        blocks, _listeners = self.front._plan(config)
        old = self.front.blocks
        self.front.blocks = blocks
        self.front.start_http(blocks)
        for h in self.front.handlers(old):
            if h.name == "reload":
                h.stop()
        for h in self.front.handlers(blocks):
            if h.name == "reload":
                h.start()
        self._config_keys = self._keys(self.front)
        for key in self._config_keys:
            self._source(key)
        for w in self.workers:
            if w.chan is not None:
                w.chan.send(("reload",))
        self._collect_unused()

    # -- stop --------------------------------------------------------------------------------

    def fatal(self, message: str) -> None:
        log.critical("%s", message)
        if self.fatal_message is None:
            self.fatal_message = message
        threading.Thread(target=self.stop, daemon=True, name="fatal-stop").start()

    @property
    def lameduck(self) -> float:
        return self.front.lameduck

    def shutdown(self, *, lameduck: float | None = None) -> None:
        """Graceful: not ready at once, every worker serves its lameduck period, then stops."""
        self._halt(self.lameduck if lameduck is None else lameduck)

    def stop(self, drain: bool = False) -> None:
        self._halt(0.0)

    def _halt(self, lameduck: float) -> None:
        if self._stopping.is_set():
            self._stopped.wait(lameduck + STOP_GRACE + 5)
            return
        self._stopping.set()
        self.process["draining"].set()
        if lameduck > 0:
            log.info("shutting down: not ready, workers serve for lameduck %.1fs", lameduck)
        for w in self.workers:
            if w.chan is not None:
                w.chan.send(("shutdown", lameduck))
        deadline = time.monotonic() + lameduck + STOP_GRACE
        for w in self.workers:
            proc = w.proc
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) did not stop; killing it", w.index, proc.pid)
                proc.kill()
                proc.wait(5)
            if w.chan is not None:
                w.chan.close()
        for s in list(self.sources.values()):
            s.stop()
        for h in self.front.handlers():
            if h.name == "reload":
                h.stop()
        for ep in self.front.http:
            ep.stop()
        if self._placeholder is not None:
            for sock in self._placeholder:
                sock.close()
        log.info("stopped")
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)


@dataclass(frozen=True)
class _Addr:
    host: str
    port: int


def _live(sid: int, ops: list[Op]) -> bytes:
    return encode(("ops", sid, ops))


def _replay(sub_id: int, sid: int, ops: list[Op]) -> bytes:
    return encode(("replay", sub_id, sid, ops))


class WorkersCollector(Collector):
    """``/metrics`` for the instance: every live worker's families, merged."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup

    def collect(self) -> Iterator[Metric]:
        scrapes = self.sup.scrape()
        yield from merge([self.sup.retired(), *(fams for _, fams in scrapes)])
        yield from self._own(scrapes)

    def _own(self, scrapes: list[tuple[Worker, list[Metric]]]) -> Iterator[Metric]:
        sup = self.sup
        up = GaugeMetricFamily("kdns_worker_up", "1 while the worker process answers the "
                               "supervisor.", labels=["worker"])
        restarts = CounterMetricFamily("kdns_worker_restarts", "Times the supervisor restarted "
                                       "the worker after it exited.", labels=["worker"])
        requests = CounterMetricFamily("kdns_worker_requests", "DNS requests the worker "
                                       "answered since it (re)started (how evenly SO_REUSEPORT "
                                       "spreads the load).", labels=["worker"])
        answered = {w.index: fams for w, fams in scrapes}
        for w in sup.workers:
            up.add_metric([str(w.index)], 1 if w.index in answered else 0)
            restarts.add_metric([str(w.index)], w.restarts)
            total = 0.0
            for fam in answered.get(w.index, ()):
                if fam.name == "coredns_dns_requests":
                    total += sum(s.value for s in fam.samples if s.name.endswith("_total"))
            requests.add_metric([str(w.index)], total)
        yield from (up, restarts, requests)
        yield GaugeMetricFamily("kdns_workers", "Worker processes configured "
                                "(kdns serve --workers).", value=sup.n)
        yield GaugeMetricFamily("kdns_shared_sources", "Sets of Kubernetes watches the "
                                "supervisor runs for all workers.", value=len(sup.sources))
        for blk in sup.front.blocks:
            for h in blk.handlers:
                if h.name == "reload":
                    yield from h.metrics(blk.ctx)
                    return


def merge(scrapes: list[list[Metric]]) -> Iterator[Metric]:
    """Merge families from several workers into one instance's families.

    Samples are matched by name and labels. Counters and histograms add up; gauges that count
    per-worker holdings add up; facts every worker shares take the maximum (or the minimum for
    "synced"); the programming-duration histogram is taken from the first worker only.
    """
    order: list[str] = []
    first: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for fams in scrapes:
        for fam in fams:
            if fam.name in SUPERVISOR_FAMILIES:
                continue
            how = _rule(fam)
            table = values.get(fam.name)
            if table is None:
                order.append(fam.name)
                first[fam.name] = fam
                table = values[fam.name] = {}
            elif how == "first":
                continue
            for s in fam.samples:
                k = (s.name, tuple(sorted(s.labels.items())))
                old = table.get(k)
                if old is None:
                    table[k] = s.value
                elif how == "sum":
                    table[k] = old + s.value
                elif how == "max":
                    table[k] = max(old, s.value)
                elif how == "min":
                    table[k] = min(old, s.value)
    for name in order:
        proto = first[name]
        out = Metric(proto.name, proto.documentation, proto.type, proto.unit)
        for (sname, labels), value in values[name].items():
            out.add_sample(sname, dict(labels), value)
        yield out


def cumulative(fams: list[Metric]) -> list[Metric]:
    """The families that add up over a worker's life (counters, histograms), without the ones
    merged by another rule: what a dead worker leaves to the instance's totals."""
    return [f for f in fams if _rule(f) == "sum" and f.type != "gauge"
            and f.name not in SUPERVISOR_FAMILIES]


def _rule(fam: Metric) -> str:
    if fam.name in FIRST_FAMILIES:
        return "first"
    if fam.name in MIN_FAMILIES:
        return "min"
    if fam.name in MAX_FAMILIES:
        return "max"
    if fam.type == "gauge" and fam.name not in SUM_GAUGES:
        return "max"
    return "sum"


def default_workers(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """``--workers auto``: one worker per CPU this process may use.

    The CPUs it may run on (affinity, so a cpuset is respected), capped by the cgroup's CPU
    quota rounded up: a Pod limited to 2 CPUs on a 64-core node gets 2 workers, not 64
    processes competing for two CPUs' worth of time.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit(cgroup_root)
    if quota is not None:
        cpus = min(cpus, quota)
    return max(1, cpus)


def cgroup_cpu_limit(root: Path) -> int | None:
    """The CPU quota of this cgroup in whole CPUs (rounded up), or None when unlimited.

    cgroup v2 ``cpu.max`` ("max 100000" or "150000 100000"), else v1's ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us`` (-1: unlimited).
    """
    try:
        quota_s, period_s = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota_s = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period_s = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota_s == "max":
        return None
    try:
        quota, period = int(quota_s), int(period_s)
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, -(-quota // period))
