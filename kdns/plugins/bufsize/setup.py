"""bufsize: parse ``bufsize [SIZE]`` (CoreDNS's syntax and range) and build the handler."""

from __future__ import annotations

from kdns.config.model import Directive, error
from kdns.plugins.bufsize.handler import DEFAULT_SIZE, MAX_SIZE, MIN_SIZE, BufsizeHandler
from kdns.plugins.setup_context import SetupContext


def setup(d: Directive, ctx: SetupContext) -> BufsizeHandler:
    if d.block is not None:
        raise error(d, "bufsize", "takes no block")
    if not d.args:
        return BufsizeHandler(DEFAULT_SIZE)
    if len(d.args) > 1:
        raise error(d.args[1], "bufsize", "takes one SIZE at most")
    tok = d.args[0]
    try:
        size = int(tok.text, 10)
    except ValueError:
        raise error(tok, "bufsize", f"SIZE must be an integer, got {tok.text!r}") from None
    if not MIN_SIZE <= size <= MAX_SIZE:
        # RFC 6891 §6.2.5: below 512 means 512; CoreDNS accepts 512..4096.
        raise error(tok, "bufsize", f"SIZE must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")
    return BufsizeHandler(size)
