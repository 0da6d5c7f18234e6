"""loadbalance setup: ``loadbalance [round_robin] { prefer CIDR... }`` or ``loadbalance weighted
WEIGHTFILE { reload DURATION }``, as CoreDNS's ``plugin/loadbalance/setup.go`` parses them.

The weight file is read here, so a malformed one is an error naming the file and line at load
(CoreDNS fails at startup the same way). A missing file is an error unless ``reload`` is on,
when, as in CoreDNS, kdns warns and keeps trying.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

from kdns.config.durations import parse_duration
from kdns.config.model import Directive, error
from kdns.plugins.loadbalance.handler import LoadBalanceConfig, LoadBalanceHandler, Network
from kdns.plugins.loadbalance.weighted import WeightedPicker, WeightFileError
from kdns.plugins.setup_context import SetupContext

NAME = "loadbalance"
POLICIES = ("round_robin", "weighted")
DEFAULT_RELOAD = 30.0

log = logging.getLogger("kdns.loadbalance")


def parse_config(d: Directive, config_dir: Path = Path(".")) -> LoadBalanceConfig:
    policy = "round_robin"
    if d.args:
        tok = d.args[0]
        if tok.text not in POLICIES:
            raise error(tok, NAME, f"unknown policy '{tok.text}' (expected round_robin or "
                                   "weighted)")
        policy = tok.text
        if policy == "weighted":
            return _weighted(d, config_dir)
        if len(d.args) > 1:
            raise error(d.args[1], NAME, f"unexpected argument '{d.args[1].text}'")
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


def _weighted(d: Directive, config_dir: Path) -> LoadBalanceConfig:
    if len(d.args) < 2:
        raise error(d.args[0], NAME, "missing weight file argument")
    if len(d.args) > 2:
        raise error(d.args[2], NAME, "unexpected argument(s)")
    path = Path(d.args[1].text)
    if not path.is_absolute():
        path = config_dir / path
    reload = DEFAULT_RELOAD
    for opt in d.block or ():
        if opt.name.text != "reload" or opt.block is not None:
            raise error(opt, NAME, f"unknown property '{opt.name.text}'")
        if len(opt.args) != 1:
            raise error(opt.args[1] if opt.args else opt, NAME,
                        "reload needs one DURATION" if not opt.args else "unexpected argument")
        try:
            reload = parse_duration(opt.args[0].text)
        except ValueError:
            raise error(opt.args[0], NAME,
                        f"invalid reload duration '{opt.args[0].text}'") from None
    return LoadBalanceConfig("weighted", (), str(path), reload)


def setup(d: Directive, ctx: SetupContext) -> LoadBalanceHandler:
    cfg = parse_config(d, ctx.config_dir)
    if cfg.weight_file is None:
        return LoadBalanceHandler(cfg)
    picker = WeightedPicker(Path(cfg.weight_file), cfg.reload)
    try:
        picker.load()
    except WeightFileError as err:
        raise error(d.args[1], NAME, str(err)) from None
    except OSError as err:
        if cfg.reload == 0:
            raise error(d.args[1], NAME, f"cannot read weight file: {err.strerror}") from None
        log.warning("%s: loadbalance: cannot read weight file %s (%s); trying again every %gs",
                    d.args[1].loc, cfg.weight_file, err.strerror, cfg.reload)
    return LoadBalanceHandler(cfg, picker=picker)
