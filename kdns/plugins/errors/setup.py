"""errors: log the errors the chain raises (CoreDNS ``errors``).

Without it, an escaped exception still becomes SERVFAIL and is counted, but only this plugin
writes the log line, with ``consolidate`` folding repeated messages into one per period.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass

from kdns.config.durations import parse_duration
from kdns.config.model import Directive, error
from kdns.plugins.base import Next, Request, Response
from kdns.plugins.setup_context import SetupContext

log = logging.getLogger("kdns.errors")


@dataclass(frozen=True, slots=True)
class Consolidate:
    period: float
    pattern: re.Pattern[str]
    level: int
    show_first: bool


@dataclass(frozen=True, slots=True)
class ErrorsConfig:
    consolidate: tuple[Consolidate, ...] = ()
    stacktrace: bool = False


class ErrorsHandler:
    name = "errors"

    def __init__(self, cfg: ErrorsConfig) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._counts: dict[int, int] = {}
        self._since: dict[int, float] = {}

    def passes(self, qname_lower: str, qtype: int, answers: int) -> bool:
        # serve() only reports what raises; a wire answer that raises is retried by the chain.
        return True

    def serve(self, req: Request, nxt: Next) -> Response:
        try:
            resp = nxt(req)
        except Exception as err:
            self.report(f"{req.qname} {req.qtype}: {err}", exc=err)
            raise
        # A plugin that answered SERVFAIL for a reason worth logging (a template that failed
        # to render) leaves it here rather than raising, which would count as a panic.
        failure = req.meta.get("error")
        if failure is not None:
            self.report(f"{req.qname} {req.qtype}: {failure}")
        return resp

    def report(self, message: str, exc: BaseException | None = None) -> None:
        """Log ``message`` unless a consolidate rule folds it into a periodic summary."""
        for i, rule in enumerate(self.cfg.consolidate):
            if rule.pattern.search(message):
                now = time.monotonic()
                with self._lock:
                    first = i not in self._since or now - self._since[i] >= rule.period
                    if first:
                        folded = self._counts.pop(i, 0)
                        self._since[i] = now
                    else:
                        self._counts[i] = self._counts.get(i, 0) + 1
                if first:
                    if folded:
                        log.log(rule.level, "%d errors like '%s' occurred in last %ss",
                                folded, rule.pattern.pattern, rule.period)
                    if rule.show_first or not folded:
                        log.log(rule.level, "%s", message)
                return
        log.error("%s", message, exc_info=exc if self.cfg.stacktrace else None)


_LEVELS = {"warning": logging.WARNING, "error": logging.ERROR, "info": logging.INFO,
           "debug": logging.DEBUG}


def setup(d: Directive, ctx: SetupContext) -> ErrorsHandler:
    if d.args:
        raise error(d.args[0], "errors", f"unexpected argument '{d.args[0].text}'")
    rules: list[Consolidate] = []
    stack = False
    for opt in d.block or ():
        args = opt.args
        if opt.name.text == "stacktrace" and not args and opt.block is None:
            stack = True
        elif opt.name.text == "consolidate":
            if not 2 <= len(args) <= 4:
                raise error(opt, "errors", "consolidate needs DURATION REGEXP [LEVEL] [show_first]")
            try:
                period = parse_duration(args[0].text)
            except ValueError as err:
                raise error(args[0], "errors", str(err)) from None
            try:
                pattern = re.compile(args[1].text)
            except re.error as err:
                raise error(args[1], "errors", f"invalid regexp: {err}") from None
            level, show_first = logging.ERROR, False
            for extra in args[2:]:
                if extra.text == "show_first":
                    show_first = True
                elif extra.text in _LEVELS:
                    level = _LEVELS[extra.text]
                else:
                    raise error(extra, "errors", f"unknown level '{extra.text}'")
            rules.append(Consolidate(period, pattern, level, show_first))
        else:
            raise error(opt, "errors", f"unknown property '{opt.name.text}'")
    handler = ErrorsHandler(ErrorsConfig(tuple(rules), stack))
    ctx.shared["errors"] = handler
    return handler
