"""reload: poll the Corefile and swap to a changed configuration without a restart.

``reload [INTERVAL] [JITTER]`` (defaults 30s and 15s; CoreDNS's minimums of 2s and 1s, and
jitter at most half the interval). Every INTERVAL ± JITTER the Corefile's SHA512 is compared with
the one running; on a change the new text is parsed and every plugin set up again. Any error
(located ``file:line:col``) is logged and counted, and the running configuration keeps serving;
otherwise the server swaps chains under its live sockets (``KdnsServer.reload``).

Metrics: ``coredns_reload_failed_total`` and ``coredns_reload_version_info{hash,value}``.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from kdns.config.durations import parse_duration
from kdns.config.model import ConfigError, Directive, error
from kdns.plugins.base import Next, Request, Response
from kdns.plugins.setup_context import SetupContext

log = logging.getLogger("kdns.reload")

MIN_INTERVAL = 2.0
MIN_JITTER = 1.0


def corefile_hash(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


class ReloadHandler:
    name = "reload"

    def __init__(self, interval: float, jitter: float, process: dict[str, Any]) -> None:
        self.interval = interval
        self.jitter = jitter
        self._process = process
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def passes(self, qname_lower: str, qtype: int, answers: int) -> bool:
        return True  # serve() hands every question on and returns the reply as is

    def serve(self, req: Request, nxt: Next) -> Response:
        return nxt(req)

    def start(self) -> None:
        path: Path | None = self._process.get("corefile_path")
        if path is None or self._process.get("reload") is None:
            log.info("reload: the configuration is not from a file; nothing to watch")
            return
        if self._process.get("reload_owner") not in (None, self):
            # Several blocks may say `reload`: one poller per process is enough.
            return
        self._process["reload_owner"] = self
        try:
            self._process.setdefault("reload_hash", corefile_hash(path.read_bytes()))
        except OSError as err:
            log.warning("reload: cannot read %s: %s", path, err)
        self._thread = threading.Thread(target=self._run, args=(path,), daemon=True,
                                        name="reload")
        self._thread.start()

    def _run(self, path: Path) -> None:
        while not self._stop.wait(self.interval + random.uniform(-self.jitter, self.jitter)):
            if self.check(path):
                return  # the new configuration's reload plugin polls from now on

    def check(self, path: Path) -> bool:
        """Reload if the file changed; True when a new configuration took over."""
        try:
            data = path.read_bytes()
        except OSError as err:
            log.warning("reload: cannot read %s: %s (keeping the running configuration)", path, err)
            return False
        digest = corefile_hash(data)
        if digest == self._process.get("reload_hash"):
            return False
        from kdns.config.parser import parse_corefile

        try:
            blocks = parse_corefile(data.decode("utf-8", "replace"), str(path))
            self._process["reload_owner"] = None
            self._process["reload"](blocks)
        except (ConfigError, ValueError, OSError) as err:
            self._process["reload_owner"] = self
            self._process["reload_failed"] = self._process.get("reload_failed", 0) + 1
            self._process["reload_hash"] = digest  # do not retry the same broken text
            log.error("reload: %s (keeping the running configuration)", err)
            return False
        self._process["reload_hash"] = digest
        log.info("reload: configuration %s... is running", digest[:12])
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._process.get("reload_owner") is self:
            self._process["reload_owner"] = None

    def metrics(self, ctx: SetupContext) -> Iterator[Any]:
        yield CounterMetricFamily("coredns_reload_failed", "Counter of the number of failed "
                                  "reload attempts.", value=self._process.get("reload_failed", 0))
        info = GaugeMetricFamily("coredns_reload_version_info", "A metric with a constant '1' "
                                 "value labeled by hash, and value which type of hash generated.",
                                 labels=["hash", "value"])
        digest = self._process.get("reload_hash")
        if digest:
            info.add_metric(["sha512", digest], 1)
        yield info


def _duration(tok: Any, what: str, minimum: float) -> float:
    try:
        value = parse_duration(tok.text)
    except ValueError as err:
        raise error(tok, "reload", str(err)) from None
    if value < minimum:
        raise error(tok, "reload", f"{what} must be at least {minimum:g}s, got {tok.text}")
    return value


def setup(d: Directive, ctx: SetupContext) -> ReloadHandler:
    if len(d.args) > 2:
        raise error(d.args[2], "reload", "expected at most INTERVAL and JITTER")
    if d.block:
        raise error(d.block[0], "reload", f"unknown property '{d.block[0].name.text}'")
    interval = _duration(d.args[0], "interval", MIN_INTERVAL) if d.args else 30.0
    jitter = _duration(d.args[1], "jitter", MIN_JITTER) if len(d.args) > 1 else 15.0
    if jitter > interval / 2:
        raise error(d.args[1] if len(d.args) > 1 else d, "reload",
                    f"jitter must be at most half the interval ({interval / 2:g}s)")
    return ReloadHandler(interval, jitter, ctx.process)
