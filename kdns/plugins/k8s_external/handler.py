"""k8s_external handler: answers the external zones from the kubernetes plugin's view.

The kubernetes handler of the same server block is found in ``ctx.shared`` when the server
starts (Corefile order does not matter), as CoreDNS looks it up in ``OnStartup``; without one
the plugin passes every query on, as CoreDNS does. Replies depend only on the question and the
view, so they are stored in the fast path under the view's generation like cluster names.
"""

from __future__ import annotations

import logging
from typing import Any

from dnslib import RCODE

from kdns.config.zones import longest_zone
from kdns.plugins.answering import authoritative_reply, chase
from kdns.plugins.base import Next, Request, Response
from kdns.plugins.k8s_external.answer import answer
from kdns.plugins.k8s_external.setup import NAME, ExternalConfig

log = logging.getLogger("kdns.k8s_external")

PROVIDER = "kubernetes"


class ExternalHandler:
    name = NAME

    def __init__(self, cfg: ExternalConfig, shared: dict[str, Any]) -> None:
        self.cfg = cfg
        self._shared = shared
        self._by_length = sorted(cfg.zones, key=len, reverse=True)
        self._k8s: Any = None

    def start(self) -> None:
        self._k8s = self._shared.get(PROVIDER)
        if self._k8s is None:
            log.warning("k8s_external: no kubernetes plugin in this server block; "
                        "queries for %s pass to the next plugin", ", ".join(self.cfg.zones))

    def ns_ips(self, view: Any) -> tuple[str, ...]:
        """The nameserver's addresses: the external IPs of the Services whose endpoints are
        this server (the kube-dns Service's), else this host's own addresses (CoreDNS's
        ``nsAddrs(external=true)``)."""
        local: tuple[str, ...] = tuple(self._k8s.cfg.local_ips)
        found: list[str] = []
        for ip in local:
            for entry in view.ptr_services(ip):
                found.extend(entry.service.external_ips)
        return tuple(dict.fromkeys(found)) or local

    def serve(self, req: Request, nxt: Next) -> Response:
        zone = longest_zone(req.qname_lower, self._by_length)
        k8s = self._k8s if self._k8s is not None else self._shared.get(PROVIDER)
        if zone is None or req.qclass != 1 or k8s is None:
            return nxt(req)
        self._k8s = k8s
        view = k8s.view
        ans = answer(req.qname, req.qtype, view, self.cfg, zone, lambda: self.ns_ips(view))
        rcode = ans.rcode
        if ans.name_error:
            if self.cfg.fallthrough_covers(req.qname_lower):
                return nxt(req)
            if not view.synced:
                rcode = RCODE.SERVFAIL  # before the first sync a denial would be a lie
        reply = authoritative_reply(req, rcode, True, ans.answer, ans.authority, ans.additional)
        chased = ans.chase is not None
        if ans.chase is not None:
            chase(req, ans.chase, reply, nxt, last_rcode=False)
        fast = view.synced and not chased and rcode != RCODE.SERVFAIL
        return Response(reply, self.name, fast=fast, generation=view.generation)
