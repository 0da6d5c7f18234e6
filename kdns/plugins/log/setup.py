"""log setup: ``log [NAMES...] [FORMAT] { class CLASSES...; minDuration [DURATION] }``.

CoreDNS's syntax: a lone argument is a name; with two or more, the last is the format when it
contains ``{`` (``{common}`` and ``{combined}`` name the two built-in formats). The directive
may repeat in a block; every ``log`` line adds its rules (one per name) and a query is logged
by the first rule whose name covers it. Each ``class`` line adds classes; ``minDuration``
(default 100ms when given without a value) also logs replies that took longer.

Where CoreDNS would print a mistyped placeholder (``{nmae}``) literally, kdns rejects it at
load, and ``{local}`` (the server address a query arrived on) is a located error: kdns does not
track it per query.
"""

from __future__ import annotations

import re

from kdns.config.durations import parse_duration
from kdns.config.model import Directive, Token, error
from kdns.config.zones import zone_arg
from kdns.plugins.log.handler import (
    CLASSES,
    COMBINED,
    COMMON,
    DEFAULT_MIN_DURATION,
    PLACEHOLDERS,
    LogHandler,
    LogRule,
    parse_format,
)
from kdns.plugins.setup_context import SetupContext

NAME = "log"
_LABEL = re.compile(r"\{>?[A-Za-z_][A-Za-z0-9_]*\}")


def _format(tok: Token) -> str:
    text = tok.text
    if text == "{common}":
        return COMMON
    if text == "{combined}":
        return COMBINED
    for m in _LABEL.finditer(text):
        label = m.group()
        if label == "{local}":
            raise error(tok, NAME, "placeholder {local} is not supported by kdns yet")
        if label not in PLACEHOLDERS and label not in ("{common}", "{combined}"):
            raise error(tok, NAME, f"unknown placeholder {label} (known: "
                                   f"{' '.join(sorted(PLACEHOLDERS))}, {{/METADATA}})")
    return text.replace("{common}", COMMON).replace("{combined}", COMBINED)


def setup(d: Directive, ctx: SetupContext) -> LogHandler | None:
    args = list(d.args)
    fmt = COMMON
    if len(args) == 1 and "{" in args[0].text:
        raise error(args[0], NAME, f"'{args[0].text}' would be read as a name (CoreDNS takes a "
                                   "lone argument as one); write: log . FORMAT")
    if len(args) > 1 and "{" in args[-1].text:
        fmt = _format(args[-1])
        args = args[:-1]
    names: list[str] = []
    for tok in args:
        if "{" in tok.text:
            raise error(tok, NAME, f"only the last argument may be a format, got {tok.text!r}")
        names.extend(zone_arg(tok, NAME))
    classes: set[str] = set()
    min_duration = 0.0
    for opt in d.block or ():
        prop = opt.name.text
        if opt.block is not None:
            raise error(opt, NAME, f"unexpected block after '{prop}'")
        if prop == "class":
            if not opt.args:
                raise error(opt, NAME, "class needs at least one of: " + " ".join(CLASSES))
            for tok in opt.args:
                if tok.text not in CLASSES:
                    raise error(tok, NAME,
                                f"unknown class '{tok.text}' (one of {', '.join(CLASSES)})")
                classes.add(tok.text)
        elif prop == "minDuration":
            if len(opt.args) > 1:
                raise error(opt.args[1], NAME, "minDuration takes at most one duration")
            if not opt.args:
                min_duration = DEFAULT_MIN_DURATION
            else:
                try:
                    min_duration = parse_duration(opt.args[0].text)
                except ValueError:
                    raise error(opt.args[0], NAME,
                                f"Illegal duration found: '{opt.args[0].text}'") from None
        else:
            raise error(opt.name, NAME, f"unknown property '{prop}'")
    parsed = parse_format(fmt)
    rules = [LogRule(n, parsed, frozenset(classes or {"all"}), min_duration)
             for n in names or ["."]]
    existing = ctx.shared.get(NAME)
    if isinstance(existing, LogHandler):
        existing.rules.extend(rules)
        return None
    handler = LogHandler(rules)
    ctx.shared[NAME] = handler
    return handler
