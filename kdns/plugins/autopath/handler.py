"""autopath: answer a pod's first search-path query with the name its resolver would end on.

This module owns the search walk (CoreDNS ``plugin/autopath``) and the decision of which of
its replies may enter the server's fast path. For a query under the client's first search
element (``<ns>.svc.<zone>``):

1. ask the rest of the chain the name as sent; anything but NXDOMAIN is returned unchanged;
2. strip the first element to get the base name and ask ``base.<element>`` for each later
   element, then the bare ``base.``; the first reply that is not NXDOMAIN wins (CoreDNS's rule:
   NODATA, SERVFAIL or REFUSED also end the walk). A step that raises counts as NXDOMAIN
   (CoreDNS would answer SERVFAIL). It is returned for the question as sent,
   with ``<qname> CNAME <found name>`` first in the answer when the reply has records (as
   CoreDNS's ``cnamer``: a NODATA reply gets no CNAME, there is no record to alias);
3. when every element is NXDOMAIN, the first reply goes back unchanged.

The client's namespace comes from its source IP through the kubernetes plugin (Running,
non-hostNetwork pods only). When that is unknown or ambiguous autopath never guesses: the
query goes down the chain untouched (reference §5 P2).

The fast path stores replies keyed by the query bytes alone, so a reply that depends on who
asked must say ``fast=False``. With ``@kubernetes`` that is every reply whose outcome autopath
could change for *some* client: an NXDOMAIN for a name below some ``<label>.svc.<zone>``,
whether or not this client was autopathed. Answers the walk does not touch (not NXDOMAIN)
keep their flag. The walk itself is deterministic: the same snapshot, client namespace and
host search list always give the same reply.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from dnslib import CNAME, QTYPE, RCODE, RR, DNSHeader, DNSQuestion, DNSRecord

from kdns.config.zones import in_zone
from kdns.plugins.base import Next, Request, Response

if TYPE_CHECKING:
    from kdns.plugins.autopath.setup import AutopathConfig
    from kdns.plugins.setup_context import SetupContext

log = logging.getLogger("kdns.autopath")

MAX_NAME = 254
"""Longest presentation name with its trailing dot (RFC 1035 §2.3.4: 255 octets on the wire)."""


class NamespaceProvider(Protocol):
    """What autopath needs from the kubernetes plugin (it never imports it)."""

    @property
    def zones(self) -> tuple[str, ...]: ...

    def namespace_of(self, ip: str) -> str | None: ...



def below(name: str, zone: str) -> bool:
    """``name`` is strictly below ``zone``."""
    return name != zone and in_zone(name, zone)


def _join(base: str, suffix: str) -> str:
    return f"{base}." if suffix in ("", ".") else f"{base}.{suffix}"


class AutopathHandler:
    name = "autopath"

    def __init__(self, cfg: AutopathConfig, provider: NamespaceProvider | None = None) -> None:
        self.cfg = cfg
        self.provider = provider
        self.deferred_check: Callable[[], NamespaceProvider] | None = None
        """Set by setup when the kubernetes plugin was not set up yet; run by start()."""
        self.success_total: dict[str, int] = {}
        """Autopathed answers per ``server`` label (coredns_autopath_success_total)."""
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------

    def finish_setup(self) -> None:
        """Resolve the namespace provider once every plugin of the block is set up; raises the
        located ConfigError when the block cannot support ``@kubernetes``. Idempotent."""
        check, self.deferred_check = self.deferred_check, None
        if check is not None and self.provider is None:
            self.provider = check()

    def start(self) -> None:
        self.finish_setup()

    # -- serving -------------------------------------------------------------------------------

    def serve(self, req: Request, nxt: Next) -> Response:
        qname = req.qname_lower
        if not any(in_zone(qname, z) for z in self.cfg.zones):
            return nxt(req)
        if not self.cfg.kubernetes:
            return self._walk(req, nxt, self.cfg.search, kube_zone=None)
        if self.provider is None:
            self.finish_setup()
        provider = self.provider
        if provider is None:
            return nxt(req)
        kube_zone = self._kube_zone(qname, provider.zones)
        if kube_zone is None:
            # Not a cluster name: no search list applies, the reply is the same for everyone.
            return nxt(req)
        ip = req.client[0]
        if ip.startswith("::ffff:") and "." in ip:
            ip = ip[7:]  # an IPv4 client seen through a dual-stack socket
        ns = provider.namespace_of(ip)
        if ns is None:
            return self._plain(req, nxt, kube_zone)
        return self._walk(req, nxt, self.search_list(ns, kube_zone), kube_zone=kube_zone)

    def search_list(self, namespace: str, zone: str) -> tuple[str, ...]:
        """The kubelet's search line for a pod in ``namespace`` (reference §1.7), then this
        host's search domains; without the final bare name, which the walk adds."""
        tail = "" if zone == "." else zone
        head = (f"{namespace}.svc.{tail}", f"svc.{tail}", zone)
        return tuple(dict.fromkeys((*head, *self.cfg.search)))

    @staticmethod
    def _kube_zone(qname: str, zones: tuple[str, ...]) -> str | None:
        best: str | None = None
        for z in zones:
            if in_zone(qname, z) and (best is None or len(z) > len(best)):
                best = z
        return best

    @staticmethod
    def client_dependent(qname: str, kube_zone: str) -> bool:
        """Could autopath rewrite an NXDOMAIN for ``qname`` for some client? Yes when the name
        is below ``<label>.svc.<zone>``: a pod in namespace <label> gets the walk."""
        svc = "svc." if kube_zone == "." else f"svc.{kube_zone}"
        if not qname.endswith("." + svc):
            return False
        head = qname[: -len(svc) - 1]
        return "." in head

    def _plain(self, req: Request, nxt: Next, kube_zone: str) -> Response:
        """The chain's reply, untouched except that it must not be replayed to other clients
        when autopath would have completed it for some of them."""
        resp = nxt(req)
        if resp.fast and resp.msg.header.rcode == RCODE.NXDOMAIN and \
                self.client_dependent(req.qname_lower, kube_zone):
            return _with_fast(resp, False)
        return resp

    def _walk(self, req: Request, nxt: Next, search: tuple[str, ...],
              kube_zone: str | None) -> Response:
        first = search[0]
        if not below(req.qname_lower, first):
            # CoreDNS also fires for the first element itself, then fails to strip it and
            # answers SERVFAIL; kdns lets that name through.
            return nxt(req) if kube_zone is None else self._plain(req, nxt, kube_zone)
        first_resp = nxt(req)
        if first_resp.msg.header.rcode != RCODE.NXDOMAIN:
            return first_resp
        # Keep the client's spelling of the base name (CoreDNS loses it: its TODO).
        base = req.qname[: len(req.qname) - len(first) - 1]
        consulted = [first_resp]
        failed = False
        for suffix in (*search[1:], ""):
            candidate = _join(base, suffix)
            if len(candidate) > MAX_NAME:
                continue
            try:
                resp = nxt(_sub_request(req, candidate))
            except Exception as err:
                # E.g. no plugin after kubernetes for the bare name in a cluster-only block.
                # The client would have got NXDOMAIN here and walked on: let it (CoreDNS
                # returns the error, turning a plain miss into SERVFAIL).
                log.debug("autopath %s: %s failed: %s", req.qname, candidate, err)
                failed = True
                continue
            consulted.append(resp)
            if resp.msg.header.rcode == RCODE.NXDOMAIN:
                continue
            with self._lock:
                self.success_total[req.server] = self.success_total.get(req.server, 0) + 1
            log.debug("autopath %s -> %s", req.qname, candidate)
            fast, deps = self._fastness(consulted, kube_zone)
            return Response(_cnamed(req, resp.msg), self.name, fast=fast,
                            deps=deps, expires=_soonest(consulted))
        fast, deps = self._fastness(consulted, kube_zone)
        return Response(first_resp.msg, first_resp.plugin, fast=fast and not failed,
                        deps=deps, variants=first_resp.variants,
                        expires=_soonest(consulted))

    @staticmethod
    def _fastness(consulted: list[Response], kube_zone: str | None
                  ) -> tuple[bool, tuple[Hashable, ...] | None]:
        """With ``@kubernetes`` the walk depends on the client: never fast. With a fixed
        search list it depends only on the replies it consulted: fast when all of them were,
        and then on everything each of them depended on."""
        if kube_zone is not None or not all(r.fast for r in consulted):
            return False, None
        deps: list[Hashable] = []
        for r in consulted:
            if r.deps is None:
                return True, None
            deps.extend(r.deps)
        return True, tuple(dict.fromkeys(deps))

    # -- metrics -------------------------------------------------------------------------------

    def metrics(self, _ctx: SetupContext) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        fam = CounterMetricFamily("coredns_autopath_success",
                                  "Counter of requests that did autopath.", labels=["server"])
        with self._lock:
            counts = sorted(self.success_total.items())
        for server, n in counts:
            fam.add_metric([server], n)
        yield fam


def _soonest(consulted: list[Response]) -> float:
    """The earliest replay deadline of the replies a walk consulted (0: none has one): a
    stored walk may be replayed only while every step of it may."""
    return min((r.expires for r in consulted if r.expires), default=0.0)


def _with_fast(resp: Response, fast: bool) -> Response:
    return dataclasses.replace(resp, fast=fast)  # keeps expires and variants


def _sub_request(req: Request, name: str) -> Request:
    """``req`` asking for ``name`` instead: a new message, so the client's is never changed."""
    h = req.msg.header
    header = DNSHeader(id=h.id, bitmap=h.bitmap, q=1, ar=len(req.msg.ar))
    q = req.msg.questions[0]
    msg = DNSRecord(header, questions=[DNSQuestion(name, q.qtype, q.qclass)],
                    ar=list(req.msg.ar))
    return Request(msg, name, name.lower(), req.qtype, req.qclass, req.client, req.proto,
                   req.server, req.zone, req.max_size, req.do, dict(req.meta))


def _cnamed(req: Request, found: DNSRecord) -> DNSRecord:
    """A new reply for the question as sent, with ``qname CNAME <owner of the first answer>``
    (its TTL too; CoreDNS's ``cnamer``) ahead of ``found``'s records: the found name, spelled
    as the records spell it. ``found`` may be shared (a cache's stored reply), so it is copied,
    not changed."""
    h = found.header
    header = DNSHeader(id=req.msg.header.id, bitmap=h.bitmap)
    reply = DNSRecord(header, questions=[req.msg.questions[0]], rr=list(found.rr),
                      auth=list(found.auth), ar=list(found.ar))
    if found.rr:
        first = found.rr[0]
        reply.rr.insert(0, RR(req.qname, QTYPE.CNAME, ttl=first.ttl, rdata=CNAME(first.rname)))
    return reply
