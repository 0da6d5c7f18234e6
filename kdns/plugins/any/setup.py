"""any: answer ANY queries with RFC 8482's minimal reply (CoreDNS's *any*). No arguments."""

from __future__ import annotations

from kdns.config.model import Directive, error
from kdns.plugins.any.handler import AnyHandler
from kdns.plugins.setup_context import SetupContext


def setup(d: Directive, ctx: SetupContext) -> AnyHandler:
    if d.args:
        raise error(d.args[0], "any", f"unexpected argument '{d.args[0].text}'")
    if d.block is not None:
        raise error(d, "any", "takes no block")
    return AnyHandler()
