"""local: parse ``local [{ localhost_prefix on|off }]`` (CoreDNS's syntax)."""

from __future__ import annotations

from kdns.config.model import Directive, error
from kdns.plugins.local.handler import LocalHandler
from kdns.plugins.metrics import process_counter
from kdns.plugins.setup_context import SetupContext


def setup(d: Directive, ctx: SetupContext) -> LocalHandler:
    if d.args:
        raise error(d.args[0], "local", f"unexpected argument '{d.args[0].text}'")
    prefix = True
    for opt in d.block or ():
        if opt.name.text != "localhost_prefix":
            raise error(opt, "local", f"unknown property '{opt.name.text}'")
        if len(opt.args) != 1:
            raise error(opt, "local", "localhost_prefix expects 'on' or 'off'")
        value = opt.args[0].text
        if value not in ("on", "off"):
            raise error(opt.args[0], "local", f"localhost_prefix expects 'on' or 'off', got "
                                              f"{value!r}")
        prefix = value == "on"
    return LocalHandler(localhost_prefix=prefix,
                        counter=process_counter(ctx, "local.localhost_requests"))
