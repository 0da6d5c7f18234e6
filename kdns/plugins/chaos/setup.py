"""chaos: parse ``chaos [VERSION] [AUTHORS...]`` (CoreDNS's syntax) into a ChaosConfig."""

from __future__ import annotations

from kdns.config.model import Directive, error
from kdns.plugins.chaos.config import DEFAULT_AUTHORS, DEFAULT_VERSION, ChaosConfig
from kdns.plugins.chaos.handler import ChaosHandler, trim
from kdns.plugins.setup_context import SetupContext


def parse(d: Directive) -> ChaosConfig:
    if d.block is not None:
        raise error(d, "chaos", "takes no block")
    args = [a.text for a in d.args]
    if not args:
        return ChaosConfig(DEFAULT_VERSION, DEFAULT_AUTHORS)
    if len(args) == 1:
        return ChaosConfig(trim(args[0]), DEFAULT_AUTHORS)
    # As CoreDNS: authors are de-duplicated and sorted (replies shuffle them anyway).
    return ChaosConfig(trim(args[0]), tuple(sorted({trim(a) for a in args[1:]})))


def setup(d: Directive, ctx: SetupContext) -> ChaosHandler:
    return ChaosHandler(parse(d))
