"""cache: parse ``cache [TTL] [ZONES...] { ... }`` into a frozen :class:`CacheConfig`.

This module owns the option grammar and CoreDNS's defaults (``plugin/cache/setup.go`` and its
README): caps of 3600 s (success) and 1800 s (denial) lowered by the TTL argument, a minimum
TTL of 5 s, 9984 entries per cache rounded down to a multiple of 256 with a floor of 1024,
SERVFAIL cached 5 s (at most 5 min), ``prefetch`` defaults 1m and 10%, ``serve_stale``
defaults 1h and ``immediate``. Every bad argument is a located error:
``Corefile:3:17: cache: percentage should fall in range [10, 90]: 95``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kdns.config.durations import parse_duration
from kdns.config.model import Directive, Token, error
from kdns.config.zones import zone_arg
from kdns.plugins.setup_context import SetupContext

if TYPE_CHECKING:
    from kdns.plugins.cache.handler import CacheHandler

NAME = "cache"

SUCCESS = "success"
DENIAL = "denial"

MAX_TTL = 3600
"""Success cap without a TTL argument (CoreDNS ``dnsutil.MaximumDefaulTTL``)."""
MAX_NTTL = 1800
"""Denial cap without a TTL argument: half of MAX_TTL, as in CoreDNS."""
MIN_TTL = 5
DEFAULT_CAPACITY = 9984
"""256 shards of 39 entries in CoreDNS; kdns keeps the number so sizing advice carries over."""
SHARDS = 256
MIN_SHARD = 4
"""CoreDNS's ``cache.New`` gives every shard at least 4 entries: a floor of 1024 in all."""
DEFAULT_SERVFAIL = 5.0
MAX_SERVFAIL = 300.0
DEFAULT_PREFETCH_WINDOW = 60.0
DEFAULT_PREFETCH_PERCENTAGE = 10
DEFAULT_STALE = 3600.0

_INT = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi accepts


def effective_capacity(requested: int) -> int:
    """CoreDNS's rule: a multiple of 256, rounded down, and never below 1024.

    kdns keeps the floor rather than honouring a tiny capacity: a cache of a few dozen entries
    would thrash on the search-path walk of one pod (4 suffixes x A/AAAA per external name).
    """
    return max(MIN_SHARD, requested // SHARDS) * SHARDS


@dataclass(frozen=True, slots=True)
class CacheConfig:
    zones: tuple[str, ...] = (".",)
    """Names the cache acts for (lower case, trailing dot); others pass straight through."""
    success_capacity: int = DEFAULT_CAPACITY
    success_ttl: int = MAX_TTL
    success_min_ttl: int = MIN_TTL
    denial_capacity: int = DEFAULT_CAPACITY
    denial_ttl: int = MAX_NTTL
    denial_min_ttl: int = MIN_TTL
    servfail: float = DEFAULT_SERVFAIL
    """Seconds a SERVFAIL is cached; 0 turns it off."""
    prefetch: int = 0
    """Hits that make an entry popular; 0 turns prefetching off."""
    prefetch_window: float = DEFAULT_PREFETCH_WINDOW
    """A gap of this many seconds between hits resets the popularity count."""
    prefetch_percentage: int = DEFAULT_PREFETCH_PERCENTAGE
    stale: float = 0.0
    """How long after expiry an entry may still be served (serve_stale); 0 turns it off."""
    verify_stale: bool = False
    """serve_stale ``verify``: ask the next plugin first, serve stale only if that fails."""
    disable_success: tuple[str, ...] = ()
    disable_denial: tuple[str, ...] = ()
    keepttl: bool = False


def _int(tok: Token) -> int | None:
    return int(tok.text) if _INT.fullmatch(tok.text) else None


def _duration(tok: Token) -> float:
    try:
        return parse_duration(tok.text)
    except ValueError as err:
        raise error(tok, NAME, str(err)) from None


def _zones(tokens: tuple[Token, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(z for tok in tokens for z in _zone_arg(tok)))


def _cap_ttl_min(opt: Directive) -> tuple[int, int | None, int | None]:
    """``success|denial CAPACITY [TTL] [MINTTL]``."""
    kind, args = opt.name.text, opt.args
    if not args:
        raise error(opt, NAME, f"{kind} needs CAPACITY [TTL] [MINTTL]")
    if len(args) > 3:
        raise error(args[3], NAME, f"{kind} takes at most 3 arguments: CAPACITY [TTL] [MINTTL]")
    cap = _int(args[0])
    if cap is None or cap < 0:
        raise error(args[0], NAME,
                    f"{kind} CAPACITY must be a non-negative integer, got {args[0].text!r}")
    ttl = mint = None
    if len(args) > 1:
        ttl = _int(args[1])
        if ttl is None or ttl <= 0:
            raise error(args[1], NAME, f"cache TTL can not be zero or negative: {args[1].text}")
    if len(args) > 2:
        mint = _int(args[2])
        if mint is None or mint < 0:
            raise error(args[2], NAME, f"cache min TTL can not be negative: {args[2].text}")
    return cap, ttl, mint


def parse_config(d: Directive, ctx: SetupContext) -> CacheConfig:
    args = d.args
    ttl_arg: int | None = None
    if args and _INT.fullmatch(args[0].text):
        ttl_arg = int(args[0].text)
        if ttl_arg <= 0:
            raise error(args[0], NAME, f"cache TTL can not be zero or negative: {args[0].text}")
        args = args[1:]
    zones = _zones(args) if args else (ctx.zones or (".",))

    o: dict[str, object] = {}
    if ttl_arg is not None:
        o["success_ttl"] = o["denial_ttl"] = ttl_arg
    disabled: dict[str, list[str]] = {SUCCESS: [], DENIAL: []}
    zero_capacity: list[str] = []
    for opt in d.block or ():
        name, oargs = opt.name.text, opt.args
        if opt.block is not None:
            raise error(opt, NAME, f"{name} does not take a block")
        if name in (SUCCESS, DENIAL):
            cap, ttl, mint = _cap_ttl_min(opt)
            if cap == 0:
                # CoreDNS accepts 0 (its shard floor then still keeps 1024 entries) and its
                # maintainers answer "set denial to 0" to disable negative caching: that intent
                # is what operators write it for, so 0 stores nothing of that kind.
                zero_capacity.append(name)
            o[f"{name}_capacity"] = effective_capacity(cap)
            if ttl is not None:
                o[f"{name}_ttl"] = ttl
            if mint is not None:
                o[f"{name}_min_ttl"] = mint
        elif name == "prefetch":
            if not 1 <= len(oargs) <= 3:
                at = oargs[3] if oargs else opt
                raise error(at, NAME, "prefetch needs AMOUNT [DURATION] [PERCENTAGE%]")
            amount = _int(oargs[0])
            if amount is None or amount < 0:
                raise error(oargs[0], NAME,
                            f"prefetch AMOUNT must be a non-negative integer, got {oargs[0].text!r}")
            o["prefetch"] = amount
            if len(oargs) > 1:
                # CoreDNS takes any duration, 0 too (then only back-to-back hits count)
                o["prefetch_window"] = _duration(oargs[1])
            if len(oargs) > 2:
                pct = oargs[2]
                if not pct.text.endswith("%"):
                    raise error(pct, NAME, f"last character of percentage should be `%`, got {pct.text!r}")
                num = int(pct.text[:-1]) if _INT.fullmatch(pct.text[:-1]) else None
                if num is None:
                    raise error(pct, NAME, f"percentage must be an integer, got {pct.text!r}")
                if not 10 <= num <= 90:
                    raise error(pct, NAME, f"percentage should fall in range [10, 90]: {num}")
                o["prefetch_percentage"] = num
        elif name == "serve_stale":
            if len(oargs) > 2:
                raise error(oargs[2], NAME, "serve_stale takes at most [DURATION] [REFRESH_MODE]")
            o["stale"] = _duration(oargs[0]) if oargs else DEFAULT_STALE
            if len(oargs) > 1:
                mode = oargs[1].text.lower()
                if mode not in ("immediate", "verify"):
                    raise error(oargs[1], NAME, f"invalid value for serve_stale refresh mode: "
                                                f"{oargs[1].text!r} (use immediate or verify)")
                o["verify_stale"] = mode == "verify"
        elif name == "servfail":
            if len(oargs) != 1:
                raise error(oargs[1] if oargs else opt, NAME, "servfail needs one DURATION")
            dur = _duration(oargs[0])
            if dur > MAX_SERVFAIL:
                raise error(oargs[0], NAME, "caching SERVFAIL responses over 5 minutes is not permitted")
            o["servfail"] = dur
        elif name == "disable":
            if not oargs:
                raise error(opt, NAME, "disable needs success|denial [ZONES...]")
            kind = oargs[0].text
            if kind not in disabled:
                raise error(oargs[0], NAME,
                            f"cache type for disable must be success or denial, got {kind!r}")
            # Without zones, the kind is disabled wherever the cache acts.
            disabled[kind].extend(_zones(oargs[1:]) if len(oargs) > 1 else zones)
        elif name == "keepttl":
            if oargs:
                raise error(oargs[0], NAME, "keepttl takes no arguments")
            o["keepttl"] = True
        else:
            raise error(opt, NAME, f"unknown property '{name}'")
    for kind in zero_capacity:
        disabled[kind].extend(zones)
    return CacheConfig(
        zones=tuple(zones),
        disable_success=tuple(dict.fromkeys(disabled[SUCCESS])),
        disable_denial=tuple(dict.fromkeys(disabled[DENIAL])),
        **o,  # type: ignore[arg-type]
    )


def setup(d: Directive, ctx: SetupContext) -> CacheHandler:
    from kdns.plugins.cache.handler import CacheHandler

    if NAME in ctx.shared:
        raise error(d, NAME, "cache may be used only once per server block")
    handler = CacheHandler(parse_config(d, ctx), shared=ctx.shared)
    ctx.shared[NAME] = handler
    return handler


def _zone_arg(tok: Token) -> list[str]:
    return zone_arg(tok, NAME)
