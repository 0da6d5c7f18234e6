"""metadata setup: ``metadata [ZONES...] { map SOURCE LABELS... { INPUT VALUES...; default
VALUES...|RCODE } }`` (CoreDNS's syntax; zones default to the server block's).

SOURCE is a template of the request (see :data:`.handler.REQUEST_FIELDS`), parsed by the same
evaluator as the *template* plugin; each row gives one value per label, and a ``default`` row
with a single response code name answers a miss with that rcode.
"""

from __future__ import annotations

from kdns.config.model import Directive, error
from kdns.config.zones import zone_args
from kdns.plugins.gotemplate import TemplateSyntaxError, parse
from kdns.plugins.metadata.handler import (
    REQUEST_FIELDS,
    MetadataConfig,
    MetadataHandler,
    MetadataMap,
)
from kdns.plugins.setup_context import SetupContext

NAME = "metadata"
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5,
          "YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10}


def _map(opt: Directive) -> MetadataMap:
    if not opt.args:
        raise error(opt, NAME, "map: missing source")
    src_tok, label_toks = opt.args[0], opt.args[1:]
    try:
        source = parse(src_tok.text)
    except TemplateSyntaxError as err:
        raise error(src_tok, NAME, f"map: invalid source {src_tok.text}: {err}") from None
    for path in source.fields():
        if len(path) != 1 or path[0] not in REQUEST_FIELDS:
            raise error(src_tok, NAME, f"map: the source can read {', '.join(sorted(REQUEST_FIELDS))}"
                                       f", not .{'.'.join(path)}")
    if not label_toks:
        raise error(opt, NAME, "map: missing label(s)")
    labels = tuple(t.text for t in label_toks)
    if not opt.block:
        raise error(opt, NAME, "map: missing value(s)")
    rows: dict[str, tuple[str, ...]] = {}
    rcode: int | None = None
    for row in opt.block:
        if row.block is not None:
            raise error(row, NAME, f"map: unexpected block after '{row.name.text}'")
        values = tuple(t.text for t in row.args)
        if (row.name.text == "default" and len(values) == 1
                and values[0].upper() in RCODES):
            rcode = RCODES[values[0].upper()]
            continue
        if len(values) != len(labels):
            raise error(row, NAME, f"map: number of values must match labels ({len(labels)}), "
                                   f"got {len(values)}")
        rows[row.name.text] = values
    return MetadataMap(source, labels, rows, rcode)


def setup(d: Directive, ctx: SetupContext) -> MetadataHandler:
    zones = zone_args(d.args, NAME) if d.args else list(ctx.zones)
    mapping: MetadataMap | None = None
    for opt in d.block or ():
        if opt.name.text != "map":
            raise error(opt.name, NAME, f"unknown property '{opt.name.text}'")
        if mapping is not None:
            raise error(opt, NAME, "map: only one map per metadata directive")
        mapping = _map(opt)
    cfg = MetadataConfig(tuple(sorted(zones, key=len, reverse=True)), mapping)
    handler = MetadataHandler(cfg, ctx)
    ctx.shared[NAME] = handler
    return handler
