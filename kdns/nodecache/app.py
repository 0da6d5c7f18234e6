"""node-cache's lifecycle around a kdns server.

1. Fill the base Corefile's pillars and write the Corefile (``-conf``).
2. Create the interface holding the local IPs (so the server can bind them).
3. Build and start the server from that Corefile (a bad Corefile stops here, before any rule).
4. Once it serves: write the pidfile, then install the iptables rules (node-cache waits for its
   pidfile for the same reason: rules that steer traffic to a cache that never came up would
   break DNS on the node).
5. Every ``-syncinterval``: restore the interface and any removed rule; every 10 s: rewrite the
   Corefile when the base Corefile or the kube-dns ConfigMap changed (``reload`` picks it up).
6. On SIGTERM: fail readiness, keep serving for the lameduck period, remove the rules and the
   interface (unless ``-skipteardown``) while the sockets are still open, then close them. With
   the rules gone, Pods' queries to the kube-dns ClusterIP (transparent mode) go through
   kube-proxy to the cluster DNS again while the cache restarts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from kdns.nodecache import corefile
from kdns.nodecache.flags import Params
from kdns.nodecache.iptables import Iptables, rules_for
from kdns.nodecache.netif import Interface, NetworkSetupError

log = logging.getLogger("kdns.nodecache")

CONFIG_SYNC = 10.0
"""Seconds between checks of the base Corefile and the kube-dns ConfigMap (node-cache's
``DefaultConfigSyncPeriod``)."""


class NodeCacheError(RuntimeError):
    """A start-up failure with a message fit for the operator (the CLI exits 2)."""


class NodeCache:
    def __init__(self, params: Params, environ: dict[str, str] | None = None,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.params = params
        self.environ = dict(os.environ if environ is None else environ)
        self.now = now
        self.server: Any = None
        self.interface: Interface | None = None
        self.iptables: Iptables | None = None
        self.iptables_ready = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._torn_down = False
        self._created_interface = False
        self._close_lock = threading.Lock()
        self.metrics = CollectorRegistry(auto_describe=False)
        self.setup_errors = Counter("coredns_nodecache_setup_errors", "The number of errors "
                                    "during periodic network setup for node-cache",
                                    ["errortype"], registry=self.metrics)
        self.http: Any = None
        env = corefile.svc_env(params.upstream_svc)
        self.cluster_dns = self.environ.get(env, "")
        if not self.cluster_dns:
            log.warning("%s is not set: no address for the %s Service (-upstreamsvc)", env,
                        params.upstream_svc)
        self.kubedns_dir = corefile.kubedns_cm_path(params.kubedns_cm_path)
        self.kube = corefile.KubeDnsConfig()

    # -- Corefile ----------------------------------------------------------------------------

    def render(self) -> str:
        """The Corefile to serve now; NodeCacheError when the base cannot be used at all."""
        try:
            base = Path(self.params.base_corefile).read_text()
        except OSError as err:
            raise NodeCacheError(f"cannot read -basecorefile {self.params.base_corefile}: "
                                 f"{err.strerror}") from None
        if corefile.CLUSTER_DNS in base and not self.cluster_dns:
            raise NodeCacheError(
                f"{self.params.base_corefile} uses {corefile.CLUSTER_DNS} but "
                f"{corefile.svc_env(self.params.upstream_svc)} is not set: the kubelet sets it "
                f"when the {self.params.upstream_svc} Service exists in the Pod's namespace "
                "(enableServiceLinks)")
        return corefile.fill(base, local_ip_str=self.params.local_ip_str,
                             cluster_dns=self.cluster_dns, kube=self.kube,
                             port=self.params.local_port)

    def _read_kubedns(self) -> None:
        if not self.kubedns_dir:
            return
        try:
            self.kube = corefile.read_kubedns_config(self.kubedns_dir)
        except (OSError, ValueError) as err:
            # As node-cache: an invalid ConfigMap keeps the Corefile as it was.
            log.error("invalid kube-dns config in %s: %s", self.kubedns_dir, err)
            self.setup_errors.labels("configmap").inc()

    def write_corefile(self) -> bool:
        """Rewrite -conf when its content would change; True when it was written."""
        self._read_kubedns()
        text = self.render()
        path = Path(self.params.corefile)
        try:
            if path.is_file() and path.read_text() == text:
                return False
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            tmp.replace(path)  # reload must never read a half-written file
        except OSError as err:
            raise NodeCacheError(f"cannot write -conf {path}: {err.strerror}") from None
        log.info("updated %s: %d stub domains, upstream servers %s", path,
                 len(self.kube.stub_domains),
                 " ".join(self.kube.upstream_nameservers) or "/etc/resolv.conf")
        return True

    # -- network -----------------------------------------------------------------------------

    def setup_interface(self) -> None:
        if self.interface is None:
            return
        try:
            if not self.interface.ensure():
                log.info("added interface %s (%s)", self.interface.name,
                         self.interface.link_type)
        except NetworkSetupError as err:
            log.error("%s", err)
            self.setup_errors.labels("interface_add").inc()

    def setup_iptables(self) -> None:
        if self.iptables is None or not self.iptables_ready:
            return
        _, errors = self.iptables.ensure()
        for e in errors:
            log.error("cannot add iptables rule %s", e)
            kind = "iptables_lock" if "xtables lock" in e else "iptables"
            self.setup_errors.labels(kind).inc()

    def teardown(self) -> None:
        if self._torn_down or self.params.skip_teardown:
            return
        self._torn_down = True
        log.info("tearing down")
        # Rules first: traffic for the kube-dns ClusterIP goes back to kube-proxy's DNAT while
        # the interface (and these sockets) still answer anything already on its way here.
        if self.iptables is not None:
            self.iptables.remove()
        if self.interface is not None:
            try:
                self.interface.remove()
            except NetworkSetupError as err:
                log.error("%s", err)

    # -- lifecycle ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Steps 1 and 2; NodeCacheError when the cache cannot start."""
        p = self.params
        self.write_corefile()
        if p.setup_iptables:
            try:
                self.iptables = Iptables(rules_for(p.local_ips, p.local_port, p.health_port),
                                         p.ipv6)
                self.iptables.check_access()
            except NetworkSetupError as err:
                raise NodeCacheError(str(err)) from None
        if p.setup_interface:
            try:
                self.interface = Interface(p.interface_name, p.local_ips)
                if not self.interface.ensure():
                    self._created_interface = True
                    log.info("added interface %s (%s)", p.interface_name,
                             self.interface.link_type)
            except NetworkSetupError as err:
                raise NodeCacheError(str(err)) from None

    def build(self) -> Any:
        """Step 3: the server, set up from the written Corefile (ConfigError propagates)."""
        from kdns.config.parser import load_corefile
        from kdns.server.app import KdnsServer, ServeOptions

        path = Path(self.params.corefile)
        blocks = load_corefile(str(path))
        opts = ServeOptions(path.resolve().parent, corefile=path.resolve())
        self.server = KdnsServer(blocks, opts).build()
        return self.server

    def started(self) -> None:
        """Step 4, once the server's listeners are bound."""
        from kdns.plugins.http import Route
        from kdns.server.httpd import HttpEndpoint

        if self.params.pidfile:
            Path(self.params.pidfile).write_text(f"{os.getpid()}\n")
        self.iptables_ready = True
        self.setup_iptables()

        def metrics() -> tuple[int, str, bytes]:
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.metrics)

        try:
            self.http = HttpEndpoint(self.params.metrics_listen_address,
                                     [Route(self.params.metrics_listen_address, "/metrics",
                                            metrics)])
            self.http.start()
        except OSError as err:
            log.error("cannot serve metrics on %s: %s", self.params.metrics_listen_address, err)
            self.http = None
        self._thread = threading.Thread(target=self._periodic, daemon=True,
                                        name="nodecache-sync")
        self._thread.start()

    def sync_once(self, network: bool, config: bool) -> None:
        if network:
            self.setup_interface()
            self.setup_iptables()
        if config:
            try:
                self.write_corefile()
            except NodeCacheError as err:
                log.error("%s", err)
                self.setup_errors.labels("configmap").inc()

    def _periodic(self) -> None:
        next_net = self.now() + self.params.sync_interval
        next_conf = self.now() + CONFIG_SYNC
        while True:
            wait = max(0.0, min(next_net, next_conf) - self.now())
            if self._stop.wait(wait):
                return
            t = self.now()
            due_net, due_conf = t >= next_net, t >= next_conf
            if due_net:
                next_net = t + self.params.sync_interval
            if due_conf:
                next_conf = t + CONFIG_SYNC
            try:
                self.sync_once(due_net, due_conf)
            except Exception:  # the check must keep running whatever one round met
                log.exception("periodic network/config check failed")

    def abort(self) -> None:
        """Undo a start that failed before serving: only the interface, and only when this
        process created it (no rules exist yet; an interface that was already there may be
        another instance's, which is still serving)."""
        if self.interface is not None and self._created_interface and not self.params.skip_teardown:
            try:
                self.interface.remove()
            except NetworkSetupError as err:
                log.error("%s", err)
        self.close()

    def shutdown(self) -> None:
        """Step 6: lameduck, teardown, close."""
        server = self.server
        if server is not None:
            server.process["draining"].set()
            wait = server.lameduck
            if wait > 0:
                log.info("shutting down: not ready, serving for lameduck %.1fs", wait)
                time.sleep(wait)
        self.stop_sync()
        self.teardown()
        if server is not None:
            server.shutdown(lameduck=0)
        self.close()

    def stop_sync(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=35)

    def close(self) -> None:
        with self._close_lock:  # the signal's shutdown thread and the main thread both close
            if self.http is not None:
                self.http.stop()
                self.http = None
            if self.params.pidfile:
                with contextlib.suppress(OSError):
                    Path(self.params.pidfile).unlink()


def run(params: Params, out: Callable[[str], None]) -> int:
    """Run until SIGTERM/SIGINT; the process exit code. ``out`` prints an error line."""
    import signal

    from kdns.config.model import ConfigError

    cache = NodeCache(params)
    try:
        cache.prepare()
        server = cache.build()
    except (NodeCacheError, ConfigError, ValueError) as err:
        out(f"kdns node-cache: {err}")
        cache.abort()
        return 2

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        # The lameduck wait must not run inside the signal handler of the main thread's wait.
        threading.Thread(target=cache.shutdown, daemon=True, name="shutdown").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
    except (ConfigError, ValueError, OSError) as err:
        out(f"kdns node-cache: cannot serve: {err}")
        server.stop()
        cache.abort()
        return 2
    for lst in server.listeners:
        print(f"kdns: serving on {lst.host or '0.0.0.0'}:{lst.port}", flush=True)
    cache.started()
    while not server.wait(1.0):
        pass
    # Stopped by a plugin (e.g. loop) rather than a signal: still leave the node clean.
    cache.stop_sync()
    cache.teardown()
    cache.close()
    if server.fatal_message is not None:
        out(f"kdns node-cache: {server.fatal_message}")
        return 1
    return 0
