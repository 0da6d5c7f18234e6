"""loop: parse the argument-less ``loop`` directive and build the prober for the block's zone.

The probe name lives under the block's first zone (CoreDNS uses the first server block key), so
only a loop on the path that zone's queries take is found: with ``forward .`` in a ``.:53``
block, that is the upstream path of every external name.
"""

from __future__ import annotations

import hashlib

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
    # Workers of `kdns serve --workers N` share one probe name per zone (derived from the
    # supervisor's seed) and only worker 0, on its first start, probes: the kernel hands the
    # probe to any worker and each must recognise it, but N probers (or a restarted one) would
    # make one worker see several honest probes and take them for a loop.
    seed = ctx.process.get("loop_seed")
    qname = _shared_name(str(seed), zone) if seed is not None else None
    handler = LoopHandler(zone, tuple(k.port for k in ctx.keys), ctx.process, ctx.shared,
                          qname=qname, probe=bool(ctx.process.get("loop_probe", True)))
    ctx.shared[NAME] = handler
    return handler


def _shared_name(seed: str, zone: str) -> str:
    """A probe name like :func:`probe_name`'s, the same in every worker of one supervisor."""
    digest = hashlib.sha256(f"{seed}/{zone}".encode()).digest()
    a = int.from_bytes(digest[:8], "big") >> 1
    b = int.from_bytes(digest[8:16], "big") >> 1
    return f"{a}.{b}." if zone == "." else f"{a}.{b}.{zone}"
