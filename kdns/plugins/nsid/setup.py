"""nsid: parse ``nsid [DATA...]`` (CoreDNS's syntax: the words joined by spaces; default the
host name)."""

from __future__ import annotations

import socket

from kdns.config.model import Directive, error
from kdns.plugins.nsid.handler import NsidHandler
from kdns.plugins.setup_context import SetupContext


def _hostname() -> str:
    try:
        return socket.gethostname() or "localhost"
    except OSError:
        return "localhost"


def setup(d: Directive, ctx: SetupContext) -> NsidHandler:
    if d.block is not None:
        raise error(d, "nsid", "takes no block")
    data = " ".join(a.text for a in d.args) if d.args else _hostname()
    encoded = data.encode()
    if len(encoded) > 512:
        # An option's length field allows 65535, but the NSID rides in every reply asking
        # for it: keep it far below the 512 bytes a reply may be cut to.
        raise error(d.args[0], "nsid", f"DATA is {len(encoded)} bytes; at most 512")
    return NsidHandler(encoded)
