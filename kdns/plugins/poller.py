"""A daemon thread that calls a function every interval until stopped (the file and hosts
plugins' reloaders). A failing call is logged and the loop goes on: one bad read must not end
reloading for the life of the process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kdns.config.durations import parse_duration
from kdns.config.model import Directive, error

log = logging.getLogger("kdns.server")


class Poller:
    def __init__(self, name: str, interval: float, func: Callable[[], object]) -> None:
        self.name = name
        self.interval = interval
        self.func = func
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start polling; does nothing when the interval is 0 (disabled) or already running."""
        if self.interval <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.func()
            except Exception:
                log.exception("%s failed", self.name)

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)


def reload_interval(opt: Directive, plugin: str) -> float:
    """The ``reload DURATION`` option of a file-reading plugin (0 disables polling)."""
    if len(opt.args) != 1:
        raise error(opt, plugin, "reload needs a duration (zero to disable)")
    try:
        return parse_duration(opt.args[0].text)
    except ValueError as err:
        raise error(opt.args[0], plugin, str(err)) from None

