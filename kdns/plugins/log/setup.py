"""log: one line per query in CoreDNS's common log format.

``{remote}:{port} - {id} "{type} {class} {name} {proto} {size} {do} {bufsize}" {rcode}
{rflags} {rsize} {duration}``. The server writes the line after the reply is encoded (only then
are the reply's size and flags known); this handler marks the request for it. A block that uses
``log`` is served without the fast path, so every query is seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dnslib import CLASS, QTYPE, RCODE

from kdns.config.model import Directive, error
from kdns.plugins.base import Next, Request, Response
from kdns.plugins.setup_context import SetupContext

log = logging.getLogger("kdns.log")

CLASSES = ("all", "denial", "error", "success")


@dataclass(frozen=True, slots=True)
class LogConfig:
    names: tuple[str, ...]
    """Name suffixes to log (lower case, trailing dot); ``(".",)`` logs everything."""
    classes: frozenset[str]


def _name(code: int, table: object) -> str:
    try:
        return str(table[code])  # type: ignore[index]
    except Exception:
        return str(code)


class LogHandler:
    name = "log"
    sees_every_query = True  # each query is a log line: never answered around this plugin

    def __init__(self, cfg: LogConfig) -> None:
        self.cfg = cfg

    def serve(self, req: Request, nxt: Next) -> Response:
        if any(req.qname_lower.endswith(n) or n == "." for n in self.cfg.names):
            req.meta["log"] = self
        return nxt(req)

    def emit(self, req: Request, reply: bytes, duration: float) -> None:
        rcode = reply[3] & 0xF if len(reply) >= 4 else RCODE.SERVFAIL
        klass = ("success" if rcode == RCODE.NOERROR else
                 "denial" if rcode == RCODE.NXDOMAIN else "error")
        if "all" not in self.cfg.classes and klass not in self.cfg.classes:
            return
        flags = []
        if len(reply) >= 4:
            bits = (reply[2] << 8) | reply[3]
            for bit, label in ((0x8000, "qr"), (0x0400, "aa"), (0x0200, "tc"), (0x0100, "rd"),
                               (0x0080, "ra")):
                if bits & bit:
                    flags.append(label)
        log.info(
            '%s:%d - %d "%s %s %s %s %d %s %d" %s %s %d %.6fs',
            req.client[0], req.client[1], req.msg.header.id, _name(req.qtype, QTYPE),
            _name(req.qclass, CLASS), req.qname, req.proto, len(req.msg.pack()),
            str(req.do).lower(), req.max_size, _name(rcode, RCODE), ",".join(flags), len(reply),
            duration,
        )


def setup(d: Directive, ctx: SetupContext) -> LogHandler:
    names: list[str] = []
    for tok in d.args:
        if "{" in tok.text:
            raise error(tok, "log", "custom log formats are not supported by kdns yet")
        names.append(tok.text.lower().rstrip(".") + ".")
    classes: set[str] = set()
    for opt in d.block or ():
        if opt.name.text != "class" or not opt.args:
            raise error(opt, "log", f"unknown property '{opt.name.text}'")
        for tok in opt.args:
            if tok.text not in CLASSES:
                raise error(tok, "log", f"unknown class '{tok.text}' (one of {', '.join(CLASSES)})")
            classes.add(tok.text)
    names = [n if n != ".." else "." for n in names]
    return LogHandler(LogConfig(tuple(names) or (".",), frozenset(classes or {"all"})))
