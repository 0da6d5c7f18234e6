"""whoami: ``whoami`` takes no arguments (CoreDNS's syntax)."""

from __future__ import annotations

from kdns.config.model import Directive, error
from kdns.plugins.setup_context import SetupContext
from kdns.plugins.whoami.handler import WhoamiHandler


def setup(d: Directive, ctx: SetupContext) -> WhoamiHandler:
    if d.args:
        raise error(d.args[0], "whoami", f"unexpected argument '{d.args[0].text}'")
    if d.block is not None:
        raise error(d, "whoami", "takes no block")
    return WhoamiHandler()
