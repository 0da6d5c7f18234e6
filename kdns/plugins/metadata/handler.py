"""metadata: collect the labels other plugins publish about a request, as CoreDNS's *metadata*.

For a query under the plugin's zones the handler attaches a
:class:`~kdns.plugins.base.Metadata` to ``req.meta["metadata"]``; the block's providers (the
handlers with a ``metadata(req)`` method, e.g. *kubernetes*) are only asked when a consumer
reads a label, so an unused label costs one small object per query. Consumers read
``req.meta["metadata"].get(label)``; without this plugin there is nothing to read and they
print CoreDNS's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdns.config.zones import longest_zone
from kdns.plugins.base import Metadata, MetadataProvider, Next, Request, Response
from kdns.plugins.setup_context import SetupContext


@dataclass(frozen=True, slots=True)
class MetadataConfig:
    zones: tuple[str, ...]
    """Longest first."""


class MetadataHandler:
    name = "metadata"

    def __init__(self, cfg: MetadataConfig, ctx: SetupContext) -> None:
        self.cfg = cfg
        self._ctx = ctx
        self.providers: tuple[MetadataProvider, ...] = ()

    def finish_setup(self) -> None:
        """Every handler of the block is set up: providers publish themselves in
        ``ctx.shared`` under their directive name (as autopath finds kubernetes there)."""
        self.providers = tuple(dict.fromkeys(
            h for h in self._ctx.shared.values()
            if h is not self and callable(getattr(h, "metadata", None))))

    def serve(self, req: Request, nxt: Next) -> Response:
        if self.providers and longest_zone(req.qname_lower, self.cfg.zones) is not None:
            req.meta["metadata"] = Metadata(req, self.providers)
        return nxt(req)
