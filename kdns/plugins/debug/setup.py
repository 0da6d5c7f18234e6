"""debug: accepted for CoreDNS Corefiles, and a no-op in kdns, said once in the log.

CoreDNS's *debug* turns off its recovery from a plugin's panic (to get a stack trace) and turns
on plugins' debug messages. kdns keeps its one error policy whatever the Corefile says: an
exception in a plugin becomes SERVFAIL and is counted, never a crash. Debug messages come from
``kdns serve --log-level debug``. There is no handler: the chain never sees *debug*.
"""

from __future__ import annotations

import logging

from kdns.config.model import Directive, error
from kdns.plugins.setup_context import SetupContext

log = logging.getLogger("kdns.plugins.debug")


def setup(d: Directive, ctx: SetupContext) -> None:
    if d.args:
        raise error(d.args[0], "debug", f"unexpected argument '{d.args[0].text}'")
    if d.block is not None:
        raise error(d, "debug", "takes no block")
    log.info("%s: debug: no effect in kdns: a plugin's exception still becomes SERVFAIL "
             "(counted in coredns_panics_total); for debug messages run with --log-level debug",
             d.loc)
