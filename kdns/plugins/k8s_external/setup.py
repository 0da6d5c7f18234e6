"""k8s_external setup: ``k8s_external [ZONE...] { apex APEX; ttl TTL; headless; fallthrough
[ZONES...] }`` into a frozen :class:`ExternalConfig`.

Defaults and ranges are CoreDNS's (``plugin/k8s_external/setup.go``): apex label ``dns``, TTL 5
seconds in [0, 3600], zones from the server block when none are given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kdns.config.model import Directive, error
from kdns.config.zones import in_zone, zone_args
from kdns.plugins.setup_context import SetupContext

if TYPE_CHECKING:
    from kdns.plugins.k8s_external.handler import ExternalHandler

NAME = "k8s_external"
DEFAULT_TTL = 5
MAX_TTL = 3600
DEFAULT_APEX = "dns"


@dataclass(frozen=True, slots=True)
class ExternalConfig:
    zones: tuple[str, ...]
    """Lower case with a trailing dot."""
    apex: str = DEFAULT_APEX
    """The label under each zone where the nameserver records live (``ns1.dns.<zone>``)."""
    ttl: int = DEFAULT_TTL
    headless: bool = False
    """Also answer the endpoints of headless Services (``<endpoint>.<svc>.<ns>.<zone>``)."""
    fallthrough: tuple[str, ...] | None = None
    """None: never; empty: for every name; else for names in these zones."""

    def fallthrough_covers(self, qname_lower: str) -> bool:
        if self.fallthrough is None:
            return False
        return not self.fallthrough or any(in_zone(qname_lower, z) for z in self.fallthrough)


def parse_config(d: Directive, ctx: SetupContext) -> ExternalConfig:
    zones = tuple(zone_args(d.args, NAME)) if d.args else ctx.zones
    if not zones:
        raise error(d, NAME, "needs at least one zone")
    apex, ttl, headless = DEFAULT_APEX, DEFAULT_TTL, False
    fallthrough: tuple[str, ...] | None = None
    for opt in d.block or ():
        name, args = opt.name.text, opt.args
        if opt.block is not None:
            raise error(opt, NAME, f"{name} does not take a block")
        if name == "ttl":
            if len(args) != 1:
                raise error(args[1] if args else opt, NAME, "ttl needs one TTL")
            text = args[0].text
            value = int(text) if text.lstrip("+-").isdigit() else None
            if value is None:
                raise error(args[0], NAME, f"ttl must be an integer, got {text!r}")
            if not 0 <= value <= MAX_TTL:
                raise error(args[0], NAME, f"ttl must be in range [0, {MAX_TTL}]: {value}")
            ttl = value
        elif name == "apex":
            if len(args) != 1:
                raise error(args[1] if args else opt, NAME, "apex needs one APEX label")
            label = args[0].text.lower().strip(".")
            if not label or len(label) > 63 or "." in label or not label.isascii() \
                    or any(c.isspace() or c in "{}()\"';@:/\\" for c in label):
                raise error(args[0], NAME, f"apex must be one DNS label, got {args[0].text!r}")
            apex = label
        elif name == "headless":
            if args:
                raise error(args[0], NAME, "headless takes no arguments")
            headless = True
        elif name == "fallthrough":
            fallthrough = tuple(zone_args(args, NAME))
        else:
            raise error(opt, NAME, f"unknown property '{name}'")
    return ExternalConfig(zones, apex, ttl, headless, fallthrough)


def setup(d: Directive, ctx: SetupContext) -> ExternalHandler:
    from kdns.plugins.k8s_external.handler import ExternalHandler

    if NAME in ctx.shared:
        raise error(d, NAME, "k8s_external may be used only once per server block")
    handler = ExternalHandler(parse_config(d, ctx), ctx.shared)
    ctx.shared[NAME] = handler
    return handler
