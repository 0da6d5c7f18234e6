"""loadbalance setup: ``loadbalance [round_robin] { prefer CIDR... }``.

CoreDNS's ``weighted`` policy is recognised and refused with a located error, so a Corefile
written for CoreDNS says what kdns lacks instead of silently balancing differently.
"""

from __future__ import annotations

import ipaddress

from kdns.config.model import Directive, error
from kdns.plugins.loadbalance.handler import LoadBalanceConfig, LoadBalanceHandler, Network
from kdns.plugins.setup_context import SetupContext

NAME = "loadbalance"
POLICIES = ("round_robin",)
UNSUPPORTED_POLICIES = ("weighted",)


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
    prefer: list[Network] = []
    for opt in d.block or ():
        if opt.name.text != "prefer" or opt.block is not None:
            raise error(opt, NAME, f"unknown property '{opt.name.text}'")
        if not opt.args:
            raise error(opt, NAME, "prefer needs at least one CIDR")
        for tok in opt.args:
            try:
                prefer.append(ipaddress.ip_network(tok.text, strict=False))
            except ValueError as err:
                raise error(tok, NAME, f"invalid CIDR {tok.text!r}: {err}") from None
    return LoadBalanceConfig(policy, tuple(prefer))


def setup(d: Directive, ctx: SetupContext) -> LoadBalanceHandler:
    return LoadBalanceHandler(parse_config(d))
