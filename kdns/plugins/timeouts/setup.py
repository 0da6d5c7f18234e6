"""timeouts: how long a TCP client may take (CoreDNS syntax, applied to kdns's DNS-over-TCP).

``read``: to send the rest of a query once its first byte arrived; ``write``: to take a reply;
``idle``: to start the next query on an open connection. Each is 1s..24h, as in CoreDNS.
The handler answers nothing: the server reads ``listener_limits`` when it binds.
"""

from __future__ import annotations

from typing import Any

from kdns.config.durations import parse_duration
from kdns.config.model import Directive, error
from kdns.plugins.base import Next, Request, Response
from kdns.plugins.setup_context import SetupContext

MIN, MAX = 1.0, 24 * 3600.0
FIELDS = {"read": "tcp_read", "write": "tcp_write", "idle": "tcp_idle"}


class TimeoutsHandler:
    name = "timeouts"

    def __init__(self, limits: dict[str, Any]) -> None:
        self.listener_limits = limits

    def passes(self, qname_lower: str, qtype: int, answers: int) -> bool:
        return True  # serve() hands every question on and returns the reply as is

    def serve(self, req: Request, nxt: Next) -> Response:
        return nxt(req)


def setup(d: Directive, ctx: SetupContext) -> TimeoutsHandler:
    if d.args:
        raise error(d.args[0], "timeouts", f"unexpected argument '{d.args[0].text}'")
    if not d.block:
        raise error(d, "timeouts", "needs a block with read, write or idle")
    limits: dict[str, Any] = {}
    for opt in d.block:
        key = FIELDS.get(opt.name.text)
        if key is None:
            raise error(opt, "timeouts", f"unknown property '{opt.name.text}'")
        if len(opt.args) != 1:
            raise error(opt, "timeouts", f"{opt.name.text} needs one DURATION")
        try:
            value = parse_duration(opt.args[0].text)
        except ValueError as err:
            raise error(opt.args[0], "timeouts", str(err)) from None
        if not MIN <= value <= MAX:
            raise error(opt.args[0], "timeouts",
                        f"{opt.name.text} must be between 1s and 24h, got {opt.args[0].text}")
        limits[key] = value
    return TimeoutsHandler(limits)
