"""minimal: ``minimal`` takes no arguments (CoreDNS's syntax)."""

from __future__ import annotations

from kdns.config.model import Directive, error
from kdns.plugins.minimal.handler import MinimalHandler
from kdns.plugins.setup_context import SetupContext


def setup(d: Directive, ctx: SetupContext) -> MinimalHandler:
    if d.args:
        raise error(d.args[0], "minimal", f"unexpected argument '{d.args[0].text}'")
    if d.block is not None:
        raise error(d, "minimal", "takes no block")
    return MinimalHandler()
