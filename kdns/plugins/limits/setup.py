"""limits: resource bounds of a listener (a kdns directive; CoreDNS has no equivalent).

``tcp_connections N`` (default 1000): open TCP connections; at the limit the one idle longest
is closed to admit a new one, else the new one is refused. ``tcp_queries N`` (default 0, no
limit): queries per TCP connection before kdns closes it. ``udp_queue N`` (default 2000):
UDP queries waiting for an upstream (``forward``) before new ones are shed; ``udp_workers N``
(default 32): threads waiting on upstreams. Every shed is counted in a ``kdns_*`` metric.
"""

from __future__ import annotations

from typing import Any

from kdns.config.model import Directive, error
from kdns.plugins.base import Next, Request, Response
from kdns.plugins.setup_context import SetupContext

FIELDS: dict[str, tuple[str, int, int]] = {
    "tcp_connections": ("tcp_connections", 1, 1_000_000),
    "tcp_queries": ("tcp_queries", 0, 1_000_000_000),
    "udp_queue": ("udp_queue", 1, 1_000_000),
    "udp_workers": ("udp_workers", 1, 1024),
}


class LimitsHandler:
    name = "limits"

    def __init__(self, limits: dict[str, Any]) -> None:
        self.listener_limits = limits

    def passes(self, qname_lower: str, qtype: int, answers: int) -> bool:
        return True  # serve() hands every question on and returns the reply as is

    def serve(self, req: Request, nxt: Next) -> Response:
        return nxt(req)


def setup(d: Directive, ctx: SetupContext) -> LimitsHandler:
    if d.args:
        raise error(d.args[0], "limits", f"unexpected argument '{d.args[0].text}'")
    if not d.block:
        raise error(d, "limits", "needs a block, e.g. limits { tcp_connections 1000 }")
    limits: dict[str, Any] = {}
    for opt in d.block:
        spec = FIELDS.get(opt.name.text)
        if spec is None:
            raise error(opt, "limits", f"unknown property '{opt.name.text}' "
                                       f"(one of {', '.join(FIELDS)})")
        key, low, high = spec
        if len(opt.args) != 1 or not opt.args[0].text.isdigit():
            raise error(opt.args[0] if opt.args else opt, "limits",
                        f"{opt.name.text} needs one whole number")
        value = int(opt.args[0].text)
        if not low <= value <= high:
            raise error(opt.args[0], "limits", f"{opt.name.text} must be in [{low}, {high}], "
                                               f"got {value}")
        limits[key] = value
    return LimitsHandler(limits)
