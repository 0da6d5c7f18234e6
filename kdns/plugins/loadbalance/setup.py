"""loadbalance setup: ``loadbalance [round_robin]``.

CoreDNS's other policies and options are recognised and refused with a located error, so a
Corefile written for CoreDNS says what kdns lacks instead of silently balancing differently.
"""

from __future__ import annotations

from kdns.config.model import Directive, error
from kdns.plugins.loadbalance.handler import LoadBalanceConfig, LoadBalanceHandler
from kdns.plugins.setup_context import SetupContext

NAME = "loadbalance"
POLICIES = ("round_robin",)
UNSUPPORTED_POLICIES = ("weighted",)
UNSUPPORTED_OPTIONS = ("prefer", "limit_answers")


def parse_config(d: Directive) -> LoadBalanceConfig:
    policy = "round_robin"
    if d.args:
        tok = d.args[0]
        if tok.text in UNSUPPORTED_POLICIES:
            raise error(tok, NAME, f"the {tok.text} policy is not supported by kdns yet")
        if tok.text not in POLICIES:
            raise error(tok, NAME, f"unknown policy '{tok.text}' (expected round_robin)")
        if len(d.args) > 1:
            raise error(d.args[1], NAME, f"unexpected argument '{d.args[1].text}'")
        policy = tok.text
    for opt in d.block or ():
        if opt.name.text in UNSUPPORTED_OPTIONS:
            raise error(opt, NAME, f"{opt.name.text} is not supported by kdns yet")
        raise error(opt, NAME, f"unknown property '{opt.name.text}'")
    return LoadBalanceConfig(policy)


def setup(d: Directive, ctx: SetupContext) -> LoadBalanceHandler:
    return LoadBalanceHandler(parse_config(d))
