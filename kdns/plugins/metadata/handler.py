"""metadata: collect the labels other plugins publish about a request, as CoreDNS's *metadata*.

For a query under the plugin's zones the handler attaches a
:class:`~kdns.plugins.base.Metadata` to ``req.meta["metadata"]``; the block's providers (the
handlers with a ``metadata(req)`` method, e.g. *kubernetes*) are only asked when a consumer
reads a label, so an unused label costs one small object per query. Consumers read
``req.meta["metadata"].get(label)``; without this plugin there is nothing to read and they
print CoreDNS's defaults.

The plugin is a provider itself when it has a ``map``: a template of the request (``{{ .IP }}``,
``{{ .Type }}``...) picks a row of ``metadata/LABEL`` values. A map with ``default RCODE``
must know at once whether a row matched (a miss is answered with that rcode), so only then is
it evaluated for every query.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from dnslib import CLASS, QTYPE, DNSHeader, DNSRecord

from kdns.config.zones import longest_zone
from kdns.plugins.base import Metadata, MetadataProvider, Next, Request, Response
from kdns.plugins.gotemplate import Template, TemplateExecError
from kdns.plugins.setup_context import SetupContext

ERROR_LABEL = "metadata/error"
REQUEST_FIELDS = frozenset({"IP", "Port", "Proto", "Family", "Type", "QType", "Name", "QName",
                            "Class", "QClass", "Size", "Do", "Len"})
"""What a map's source may read: the methods of CoreDNS's request.Request that need nothing
kdns does not track per query (LocalIP and LocalPort are left out)."""


@dataclass(frozen=True, slots=True)
class MetadataMap:
    source: Template
    labels: tuple[str, ...]
    rows: Mapping[str, tuple[str, ...]]
    """Source value -> one value per label; ``default`` is the row for a miss."""
    rcode_on_miss: int | None = None


@dataclass(frozen=True, slots=True)
class MetadataConfig:
    zones: tuple[str, ...]
    """Longest first."""
    map: MetadataMap | None = field(default=None)


def _name(code: int, table: object) -> str:
    try:
        return str(table[code])  # type: ignore[index]
    except Exception:
        return str(code)


def request_fields(req: Request) -> dict[str, object]:
    """CoreDNS's request.Request as a map source sees it."""
    return {
        "IP": req.client[0], "Port": str(req.client[1]), "Proto": req.proto,
        "Family": 2 if ":" in req.client[0] else 1, "Type": _name(req.qtype, QTYPE),
        "QType": req.qtype, "Name": req.qname_lower, "QName": req.qname,
        "Class": _name(req.qclass, CLASS), "QClass": req.qclass, "Size": req.max_size,
        "Do": req.do, "Len": len(req.msg.pack()),
    }


class MetadataHandler:
    name = "metadata"

    def __init__(self, cfg: MetadataConfig, ctx: SetupContext) -> None:
        self.cfg = cfg
        self._ctx = ctx
        self.providers: tuple[MetadataProvider, ...] = ()

    def finish_setup(self) -> None:
        """Every handler of the block is set up: providers publish themselves in
        ``ctx.shared`` under their directive name (as autopath finds kubernetes there)."""
        found = [h for h in self._ctx.shared.values()
                 if h is not self and callable(getattr(h, "metadata", None))]
        if self.cfg.map is not None:
            found.insert(0, self)  # first, as CoreDNS's metadata is first in the chain
        self.providers = tuple(dict.fromkeys(found))

    def serve(self, req: Request, nxt: Next) -> Response:
        if self.providers and longest_zone(req.qname_lower, self.cfg.zones) is not None:
            md = Metadata(req, self.providers)
            req.meta["metadata"] = md
            m = self.cfg.map
            if m is not None and m.rcode_on_miss is not None:
                failure = md.get(ERROR_LABEL)
                if failure is not None:
                    req.meta["error"] = f"metadata: {failure()}"
                    h = req.msg.header
                    reply = DNSRecord(DNSHeader(id=h.id, qr=1, opcode=h.opcode, rd=h.rd, ra=1,
                                                rcode=m.rcode_on_miss), q=req.msg.questions[0])
                    return Response(reply, self.name)
        return nxt(req)

    def metadata(self, req: Request) -> dict[str, Callable[[], str]]:
        """The ``map`` rows as labels (CoreDNS's mapping.go)."""
        m = self.cfg.map
        if m is None:
            return {}
        try:
            key = m.source.execute(request_fields(req))
        except TemplateExecError as err:
            return {ERROR_LABEL: _const(f"unable to resolve {m.source.source}: {err}")}
        row = m.rows.get(key)
        if row is None:
            row = m.rows.get("default")
        if row is None:
            if m.rcode_on_miss is not None:
                return {ERROR_LABEL: _const(f"no values found for {m.source.source} '{key}'")}
            return {}
        return {f"metadata/{label}": _const(value) for label, value in zip(m.labels, row,
                                                                           strict=True)}


def _const(value: str) -> Callable[[], str]:
    return lambda: value
