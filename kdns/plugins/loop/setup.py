"""loop: parse the argument-less ``loop`` directive and build the prober for the block's zone.

The probe name lives under the block's first zone (CoreDNS uses the first server block key), so
only a loop on the path that zone's queries take is found: with ``forward .`` in a ``.:53``
block, that is the upstream path of every external name.
"""

from __future__ import annotations

from kdns.config.model import Directive, error
from kdns.plugins.loop.handler import LoopHandler
from kdns.plugins.setup_context import SetupContext

NAME = "loop"


def setup(d: Directive, ctx: SetupContext) -> LoopHandler:
    if d.args:
        raise error(d.args[0], NAME, f"takes no arguments, got '{d.args[0].text}'")
    if d.block is not None:
        raise error(d, NAME, "loop does not take a block")
    zone = ctx.keys[0].zone if ctx.keys else "."
    handler = LoopHandler(zone, tuple(k.port for k in ctx.keys), ctx.process, ctx.shared)
    ctx.shared[NAME] = handler
    return handler
