"""metadata setup: ``metadata [ZONES...]`` (default: the server block's zones).

CoreDNS's newer ``map`` block (labels from a template of the request) is not implemented and
is a located error, as is anything else in a block.
"""

from __future__ import annotations

from kdns.config.model import Directive, error
from kdns.config.zones import zone_args
from kdns.plugins.metadata.handler import MetadataConfig, MetadataHandler
from kdns.plugins.setup_context import SetupContext

NAME = "metadata"


def setup(d: Directive, ctx: SetupContext) -> MetadataHandler:
    zones = zone_args(d.args, NAME) if d.args else list(ctx.zones)
    for opt in d.block or ():
        if opt.name.text == "map":
            raise error(opt.name, NAME, "map is not supported by kdns yet")
        raise error(opt.name, NAME, f"unknown property '{opt.name.text}'")
    handler = MetadataHandler(MetadataConfig(tuple(sorted(zones, key=len, reverse=True))), ctx)
    ctx.shared[NAME] = handler
    return handler
