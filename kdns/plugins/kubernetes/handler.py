"""kubernetes: the chain handler, and the lifecycle of the source that feeds its view.

This module owns turning an :class:`~kdns.plugins.kubernetes.answer.Answer` into a reply, the
decisions around it that depend on more than the question (fallthrough, SERVFAIL before sync,
resolving an external CNAME target through the rest of the chain), and starting/stopping the
source (API informers, or the manifest reader with ``manifests``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from dnslib import QTYPE, RCODE
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from kdns.config.zones import in_zone, longest_zone
from kdns.k8s.source import ResourceSpec, Sink, Source, SourceFactory
from kdns.k8s.throttle import ApiLimits
from kdns.plugins.answering import Answer, answer_reply, chase
from kdns.plugins.base import Next, Request, Response, WireAnswer, with_deps
from kdns.plugins.kubernetes.answer import AMBIGUOUS, UNKNOWN, answer
from kdns.plugins.kubernetes.builder import PROGRAMMING_BUCKETS, ViewBuilder
from kdns.plugins.kubernetes.metadata import labels as metadata_labels
from kdns.plugins.kubernetes.setup import KubernetesConfig, is_reverse
from kdns.plugins.kubernetes.view import View
from kdns.plugins.kubernetes.wire_answer import answer_wire
from kdns.plugins.metrics import buckets
from kdns.plugins.setup_context import SetupContext

log = logging.getLogger("kdns.kubernetes")

WAIT_LOG_INTERVAL = 0.5
"""How often startup logs that it is still waiting for the first sync (as CoreDNS does)."""


class SourceKey(NamedTuple):
    """Everything that decides what a source reads: two kubernetes plugins with equal keys
    can share one source (``kdns serve --workers N`` runs one per key, in the supervisor)."""

    manifests: str | None
    kubeconfig: str | None
    context: str | None
    endpoint: str | None
    tls: tuple[str, str, str] | None
    specs: tuple[ResourceSpec, ...]
    limits: ApiLimits = ApiLimits()

    @classmethod
    def of(cls, cfg: KubernetesConfig) -> SourceKey:
        return cls(cfg.manifests, cfg.kubeconfig, cfg.context, cfg.endpoint, cfg.tls,
                   tuple(cfg.resource_specs()),
                   ApiLimits(cfg.apiserver_qps, cfg.apiserver_burst, cfg.apiserver_max_inflight))

    def factory(self) -> SourceFactory:
        """The factory for the source this key names; imported lazily so a Corefile that
        reads manifests never loads the API client."""

        def build(specs: list[ResourceSpec], sink: Sink) -> Source:
            if self.manifests:
                from kdns.k8s.manifests import ManifestSource

                return ManifestSource(self.manifests, specs, sink)
            from kdns.k8s.client import ConnectionConfig
            from kdns.k8s.informer import ApiSource

            conn = ConnectionConfig(kubeconfig=self.kubeconfig, context=self.context,
                                    endpoint=self.endpoint, tls=self.tls)
            return ApiSource(conn, specs, sink, limits=self.limits)

        return build


def _plain_ip(ip: str) -> str:
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]  # an IPv4 client seen through a dual-stack socket
    return ip


def _scope(owners: str | tuple[str, ...] | None) -> str:
    if owners is None:
        return UNKNOWN
    return owners if isinstance(owners, str) else AMBIGUOUS


def default_source(cfg: KubernetesConfig) -> SourceFactory:
    """The factory for the source the config names (read in this process)."""
    return SourceKey.of(cfg).factory()


class KubernetesHandler:
    name = "kubernetes"

    def __init__(self, cfg: KubernetesConfig, *, source_factory: SourceFactory | None = None,
                 builder: ViewBuilder | None = None) -> None:
        self.cfg = cfg
        self.zones = cfg.zones
        self._builder = builder or ViewBuilder(
            cfg.kinds, namespaces=cfg.namespaces, endpoint_pod_names=cfg.endpoint_pod_names)
        self._factory = source_factory or default_source(cfg)
        self._source: Source | None = None
        # Longest zone first, so cluster.local beats a configured parent zone.
        self._by_length = sorted(cfg.zones, key=len, reverse=True)
        self._forward = frozenset(z for z in cfg.zones if z != "." and not is_reverse(z))
        """Zones whose names :meth:`answer_wire` may take (not the root, not reverse zones)."""
        self.attributing = cfg.pods == "verified"
        """Client addresses map to namespaces (:class:`~kdns.plugins.base.ClientScoper`)."""
        self.isolating = cfg.isolate is not None
        self._ft_below = frozenset(
            z for z in self._forward if cfg.fallthrough is not None and (
                not cfg.fallthrough or any(in_zone(f, z) or in_zone(z, f)
                                           for f in cfg.fallthrough)))
        """Forward zones where ``fallthrough`` may cover a name (else no NXDOMAIN needs the
        check: kubeadm's ``fallthrough in-addr.arpa ip6.arpa`` leaves cluster.local alone)."""
        self._wire_zones = tuple((z, "." + z, z in self._forward, z in self._ft_below)
                                 for z in self._by_length if z != ".")
        """Per zone, longest first: the suffix below it, whether :meth:`answer_wire` takes its
        names and whether fallthrough may cover them (decided once, not per cold answer)."""

    # -- what other plugins and the server read ---------------------------------------------

    @property
    def view(self) -> View:
        return self._builder.view

    @property
    def builder(self) -> ViewBuilder:
        return self._builder

    def ready(self) -> bool:
        return self._builder.synced

    def source_key(self) -> SourceKey:
        """What this plugin reads (:class:`~kdns.plugins.base.SharesSource`)."""
        return SourceKey.of(self.cfg)

    def namespace_of(self, ip: str) -> str | None:
        """The namespace of the pod with ``ip`` (autopath); None when unknown or ambiguous."""
        return self._builder.view.namespace_of(ip)

    def zone_of(self, qname_lower: str) -> str | None:
        return longest_zone(qname_lower, self._by_length)

    def client_scope(self, ip: str) -> str:
        """The namespace of the Pod at ``ip``; :data:`UNKNOWN` when no Running Pod has it,
        :data:`AMBIGUOUS` while Pods of several namespaces claim it (an address changing
        hands). Read from the current view, so a moved address is seen at the next publish."""
        return _scope(self._builder.view.client_namespaces(_plain_ip(ip)))

    def waste_for(self, qname_lower: str) -> str | None:
        """Is an NXDOMAIN for this name search-path waste (README, Attribution)? ``*``: for
        every client of a known namespace; a namespace: for that namespace's clients only.

        The client in namespace N tries ``N.svc.Z``, ``svc.Z`` and ``Z`` in turn. A name is
        waste when it is ``B.S`` for such a suffix S with B of two labels or more, and B.S is
        not a shape the zone defines: under ``N.svc.Z`` the last label of B names no Service
        of N; under ``svc.Z`` it names no namespace; under ``Z`` it is not ``svc``, ``pod`` or
        ``dns``."""
        zone = self.zone_of(qname_lower)
        if zone is None or zone not in self._forward:
            return None
        rel = qname_lower[: len(qname_lower) - len(zone) - 1]
        labels = rel.split(".") if rel else []
        if len(labels) < 2:
            return None
        if labels[-1] != "svc":
            return "*" if labels[-1] not in ("pod", "dns") else None
        view = self._builder.view
        ns = labels[-2]
        everyone = len(labels) >= 3 and not view.namespace_exists(ns)
        own = len(labels) >= 4 and view.service(ns, labels[-3]) is None
        if everyone:
            return "*"  # (a client of a namespace the view does not have is not counted)
        return ns if own else None

    def metadata(self, req: Request) -> dict[str, Callable[[], str]]:
        """The labels CoreDNS's kubernetes plugin publishes (read through *metadata*)."""
        def client_pod() -> tuple[str, str] | None:
            if self.cfg.pods != "verified":
                return None  # CoreDNS: the client is only looked up with pods verified
            pod_of = getattr(self._builder, "pod_of", None)
            return pod_of(req.client[0]) if pod_of is not None else None

        return metadata_labels(req.qname_lower, self.zone_of(req.qname_lower), client_pod)

    # -- serving ----------------------------------------------------------------------------

    def serve(self, req: Request, nxt: Next) -> Response:
        zone = self.zone_of(req.qname_lower)
        if zone is None or req.qclass != 1:
            return nxt(req)
        view = self._builder.view
        viewer: str | None = None
        if self.isolating:
            # The scope is read from the same view the answer is, and the server stores the
            # reply under it: a reply built for one namespace is only replayed to it.
            viewer = _scope(view.client_namespaces(_plain_ip(req.client[0])))
            scopes = req.meta.get("scopes")
            if scopes is None:
                req.meta["scopes"] = scopes = set()
            scopes.add(viewer)
        ans = answer(req.qname, req.qtype, view, self.cfg, zone, viewer)
        if ans.name_error:
            # CoreDNS order: fallthrough first, then "not synced yet" turns NXDOMAIN into
            # SERVFAIL so clients retry instead of caching a negative answer.
            if self.cfg.fallthrough_covers(req.qname_lower):
                # What the rest of the chain says holds only while the name stays absent here.
                return with_deps(nxt(req), ans.deps)
            if not view.synced:
                ans = Answer(RCODE.SERVFAIL, authority=ans.authority)
        reply = answer_reply(req, ans)
        chased = ans.chase is not None and req.qtype != QTYPE.CNAME
        if chased:
            chase(req, ans.chase or "", reply, nxt, last_rcode=False)
        # The reply depends only on the question and this view unless it carries upstream data.
        fast = view.synced and not chased and ans.rcode != RCODE.SERVFAIL
        return Response(reply, self.name, fast=fast, deps=ans.deps)

    def answer_wire(self, qname_lower: str, qtype: int) -> WireAnswer | None:
        """The cold path (:class:`~kdns.plugins.base.WireAnswerer`): what :meth:`serve` says
        for a class IN question, in wire form, or None when it is not one of those shapes."""
        if self.isolating:
            return None  # under isolate the answer depends on the client: the chain decides
        for zone, below, forward, fallthrough in self._wire_zones:  # as zone_of() decides
            if qname_lower.endswith(below) or qname_lower == zone:
                if not forward:
                    return None
                return answer_wire(qname_lower, qtype, self._builder.view, self.cfg, zone,
                                   fallthrough)
        return None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the source and block until the view is synced or ``startup_timeout`` passes."""
        if self._source is not None:
            return
        self._builder.start()
        source = self._factory(self.cfg.resource_specs(), self._builder)
        try:
            load_once = getattr(source, "load_once", None)
            if load_once is not None:
                load_once()  # a broken manifest fails startup with its own message
            source.start()
        except BaseException:
            self._builder.stop()
            raise
        self._source = source
        log.info("kubernetes: reading from %s", source.describe())
        deadline = time.monotonic() + self.cfg.startup_timeout
        while True:
            left = deadline - time.monotonic()
            if self._builder.wait_synced(max(0.0, min(WAIT_LOG_INTERVAL, left))):
                return
            if time.monotonic() >= deadline:
                log.warning("starting server with unsynced Kubernetes API")
                return
            log.info("waiting for Kubernetes API before starting server")

    def stop(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            source.stop()
        self._builder.stop()

    def metrics(self, ctx: SetupContext) -> Iterator[Any]:
        """coredns_kubernetes_dns_programming_duration_seconds and kdns's view state."""
        hist = HistogramMetricFamily(
            "coredns_kubernetes_dns_programming_duration_seconds",
            "Histogram of the time (in seconds) it took to program a dns instance.",
            labels=["service_kind"])
        for kind, h in self._builder.programming.items():
            hist.add_metric([kind], buckets(PROGRAMMING_BUCKETS, h.buckets), h.total)
        yield hist
        view = self._builder.view
        synced = GaugeMetricFamily("kdns_kubernetes_synced", "1 once every informer has listed.",
                                   labels=["zone"])
        stale = GaugeMetricFamily("kdns_kubernetes_stale", "1 while the API server is unreachable "
                                  "and answers come from the last good view.", labels=["zone"])
        age = GaugeMetricFamily("kdns_kubernetes_view_age_seconds", "Seconds since the served "
                                "view last changed (its SOA serial).", labels=["zone"])
        services = GaugeMetricFamily("kdns_kubernetes_services", "Services in the served view.",
                                     labels=["zone"])
        zone = self.cfg.primary_zone
        synced.add_metric([zone], 1 if view.synced else 0)
        stale.add_metric([zone], 1 if view.stale else 0)
        age.add_metric([zone], max(0.0, time.time() - view.serial) if view.synced else 0)
        services.add_metric([zone], view.service_count())
        yield from (synced, stale, age, services)
