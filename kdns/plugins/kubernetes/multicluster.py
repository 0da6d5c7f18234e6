"""kubernetes with ``multicluster ZONES...``: the clusterset zones beside the cluster zone.

This module owns serving the multicluster zones (KEP-1645) from their own view
(:mod:`~kdns.plugins.kubernetes.mcview`) and answer function
(:mod:`~kdns.plugins.kubernetes.mcanswer`), and the lifecycle of the informers that feed it:
ServiceImports (``multicluster.x-k8s.io/v1alpha1``, optional: a cluster without the CRD gets
one log line, an empty clusterset and a look every minute) and the EndpointSlices labelled
``multicluster.kubernetes.io/service-name``. Every other query goes to the cluster zone's
handler unchanged, except reverse names of clusterset addresses the cluster zone has no
PTR for.

Readiness: the multicluster informers do not hold ``/ready`` (the cluster zone is what a node's
pods need first); until ServiceImports and imported slices are listed once, names in a
multicluster zone that do not exist answer SERVFAIL (as the cluster zone does before its first
sync), so clients retry rather than cache a negative answer.
"""

from __future__ import annotations

import logging

from dnslib import PTR, QTYPE, RCODE, RR

from kdns.k8s.mcs import MCS_SERVICE_NAME_LABEL
from kdns.k8s.source import ResourceSpec, Source
from kdns.plugins.answering import Answer, answer_reply
from kdns.plugins.base import Next, Request, Response, WireAnswer
from kdns.plugins.kubernetes.answer import answer, ptr_targets
from kdns.plugins.kubernetes.handler import KubernetesHandler
from kdns.plugins.kubernetes.mcanswer import mc_answer
from kdns.plugins.kubernetes.mcview import McView, McViewBuilder
from kdns.plugins.kubernetes.setup import KubernetesConfig, is_reverse
from kdns.plugins.kubernetes.view import reverse_ip

log = logging.getLogger("kdns.kubernetes")


def mc_resource_specs(cfg: KubernetesConfig) -> list[ResourceSpec]:
    """ServiceImports (optional CRD) and the MCS-labelled EndpointSlices; ``labels`` narrows
    both, as it does the cluster zone's kinds."""
    slices = MCS_SERVICE_NAME_LABEL + (f",{cfg.labels}" if cfg.labels else "")
    return [ResourceSpec("serviceimports", label_selector=cfg.labels, optional=True),
            ResourceSpec("importedslices", label_selector=slices)]


class MulticlusterHandler(KubernetesHandler):
    def __init__(self, cfg: KubernetesConfig, *, mc_builder: McViewBuilder | None = None,
                 **kw: object) -> None:
        super().__init__(cfg, **kw)  # type: ignore[arg-type]
        self.mc_zones = frozenset(cfg.multicluster)
        self._mc_builder = mc_builder or McViewBuilder(namespaces=cfg.namespaces)
        self._mc_source: Source | None = None

    @property
    def mc_view(self) -> McView:
        return self._mc_builder.view

    @property
    def mc_builder(self) -> McViewBuilder:
        return self._mc_builder

    def serve(self, req: Request, nxt: Next) -> Response:
        zone = self.zone_of(req.qname_lower)
        if zone is not None and is_reverse(zone) and req.qclass == 1:
            resp = self._mc_reverse(req, zone)
            if resp is not None:
                return resp
        if zone not in self.mc_zones or req.qclass != 1:
            return super().serve(req, nxt)
        assert zone is not None
        view = self._mc_builder.view
        ans = mc_answer(req.qname, req.qtype, view, self.cfg, zone)
        if ans.name_error:
            if self.cfg.fallthrough_covers(req.qname_lower):
                return nxt(req)
            if not view.synced:
                ans = Answer(RCODE.SERVFAIL, authority=ans.authority)
        reply = answer_reply(req, ans)
        fast = view.synced and ans.rcode != RCODE.SERVFAIL
        return Response(reply, self.name, fast=fast, generation=view.generation)

    def answer_wire(self, qname_lower: str, qtype: int) -> WireAnswer | None:
        """The cold path takes cluster-zone names only: a clusterset name is answered from the
        ServiceImports by :meth:`serve`, which the cluster zone's wire answers know nothing of."""
        if self.zone_of(qname_lower) in self.mc_zones:
            return None
        return super().answer_wire(qname_lower, qtype)

    def _mc_reverse(self, req: Request, zone: str) -> Response | None:
        """PTR for a clusterset IP or an imported endpoint's address that has no PTR in the
        cluster zone (MCS DNS spec §2.3.3, §2.4.3: the cluster's own name wins); None leaves
        the question to the cluster zone."""
        ip = reverse_ip(req.qname)
        mc_view = self._mc_builder.view
        names = mc_view.ptr(ip) if ip is not None else ()
        if ip is None or not names:
            return None
        view = self.view
        if ptr_targets(view, self.cfg, ip):
            return None
        # The negative answer of the cluster zone carries the reverse zone's SOA.
        soa = answer(req.qname, QTYPE.SOA, view, self.cfg, zone).authority
        mc_zone = self.cfg.multicluster[0]
        if req.qtype == QTYPE.PTR:
            ans = Answer(RCODE.NOERROR, tuple(
                RR(req.qname, QTYPE.PTR, ttl=self.cfg.ttl, rdata=PTR(f"{n}.{mc_zone}"))
                for n in names))
        else:
            ans = Answer(RCODE.NOERROR, authority=soa)
        fast = view.synced and mc_view.synced
        # Built from both views: stored under the newer generation, which either moving drops.
        return Response(answer_reply(req, ans), self.name, fast=fast,
                        generation=max(view.generation, mc_view.generation))

    def start(self) -> None:
        super().start()
        if self._mc_source is not None:
            return
        from kdns.k8s.client import ConnectionConfig
        from kdns.k8s.informer import ApiSource

        cfg = self.cfg
        conn = ConnectionConfig(kubeconfig=cfg.kubeconfig, context=cfg.context,
                                endpoint=cfg.endpoint, tls=cfg.tls)
        source = ApiSource(conn, mc_resource_specs(cfg), self._mc_builder)
        source.start()
        self._mc_source = source

    def stop(self) -> None:
        source, self._mc_source = self._mc_source, None
        if source is not None:
            source.stop()
        super().stop()
