"""file: authoritative answers from loaded zones, and the reload loop that keeps them current.

This module owns the lookup rules of CoreDNS's ``plugin/file/lookup.go`` as a pure function
(:func:`lookup`: zone + question -> :class:`Answer`, no I/O) and the handler around it:

* apex SOA: the SOA, apex NS in authority; apex NS: the NS set, in-zone addresses of the name
  servers in additional;
* a name at or below a zone cut (NS at a non-apex owner): a referral, AA=0, the cut's NS set in
  authority and glue (in-zone A/AAAA of the NS targets) in additional. DS at the cut itself is the
  parent's data and is answered normally (RFC 4035 §3.1.4.1);
* an existing name: the RRset (owner spelled as the query spelled it), apex NS in authority, and
  for MX/SRV the in-zone addresses of the targets in additional (CoreDNS additionalProcessing);
* CNAME (any type but CNAME asked): the CNAME, then the target resolved again inside the zone, up
  to 8 hops; the final rcode is the target's (RFC 6604: a dangling in-zone CNAME is NXDOMAIN).
  A target outside the zone is resolved through the rest of the chain, as the kubernetes plugin
  does for ExternalName (CoreDNS asks its upstream);
* NODATA (NOERROR, SOA in authority) for existing names without the type and for empty
  non-terminals; NXDOMAIN with SOA for names that do not exist. The SOA's TTL is
  min(TTL, MINIMUM) (RFC 2308 §3);
* wildcards (RFC 4592): when the name does not exist, ``*.<closest encloser>`` answers for it
  with the owner rewritten to the query name. An empty non-terminal blocks a wildcard (§2.2.2)
  where CoreDNS would synthesise from it;
* AXFR/IXFR: REFUSED (transfers belong to a *transfer* plugin kdns does not have); ANY: NODATA,
  as CoreDNS (the *any* plugin, ahead in the chain, gives RFC 8482's HINFO instead);
  DNAME: served as plain data, not substituted (kdns does not implement DNAME).

Reload: every ``reload`` seconds a daemon thread reads each file and compares its SHA-256 with
the loaded one; a changed file is parsed and swapped in with one assignment, then GENERATION is
bumped. That catches a new SOA serial (CoreDNS's rule) and any edit that forgot to bump it (kdns
reloads it too and warns). A file that fails to parse keeps the old zone and logs ``file:line``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable

from dnslib import CLASS, QTYPE, RCODE, RR

from kdns.config.zones import in_zone, longest_zone
from kdns.plugins.answering import MAX_CHASE, Answer, answer_reply, chase
from kdns.plugins.base import GENERATION, Next, Request, Response
from kdns.plugins.file.setup import NAME, FileConfig, Zone, ZoneFileError, build_zone, parent
from kdns.plugins.poller import Poller

log = logging.getLogger("kdns.file")


_SOA, _NS, _CNAME, _DS, _A, _AAAA, _MX, _SRV = (
    QTYPE.SOA, QTYPE.NS, QTYPE.CNAME, QTYPE.DS, QTYPE.A, QTYPE.AAAA, QTYPE.MX, QTYPE.SRV)


def _owned(rr: RR, owner: str) -> RR:
    return RR(owner, rr.rtype, rr.rclass, rr.ttl, rr.rdata)


def _target(rr: RR) -> str:
    name = str(rr.rdata.label).lower()
    return name if name.endswith(".") else name + "."


class _Q:
    """One lookup: the zone, the question, and the apex as the query spelled it (so owner names
    compress against the question and echo the client's case)."""

    __slots__ = ("apex", "qtype", "zone")

    def __init__(self, zone: Zone, qname: str, qtype: int) -> None:
        self.zone = zone
        self.qtype = qtype
        self.apex = "." if zone.origin == "." else qname[len(qname) - len(zone.origin):]

    def apex_ns(self) -> tuple[RR, ...]:
        return tuple(_owned(rr, self.apex) for rr in self.zone.ns)

    def soa_negative(self) -> RR:
        soa = self.zone.soa
        return RR(self.apex, _SOA, soa.rclass, min(soa.ttl, soa.rdata.times[4]), soa.rdata)

    def nodata(self) -> Answer:
        return Answer(RCODE.NOERROR, authority=(self.soa_negative(),))

    def addresses(self, names: list[str]) -> tuple[RR, ...]:
        """In-zone A/AAAA records of ``names``, deduplicated, in order."""
        out: list[RR] = []
        for name in dict.fromkeys(names):
            if not in_zone(name, self.zone.origin):
                continue
            node = self.zone.nodes.get(name, {})
            out.extend(node.get(_A, ()))
            out.extend(node.get(_AAAA, ()))
        return tuple(out)


def _cut(zone: Zone, name: str, qtype: int) -> str | None:
    """The topmost zone cut at or above ``name`` (RFC 1034 §4.3.2 step 3b), if any."""
    if not zone.cuts:
        return None
    found = None
    n = name
    while n != zone.origin and n != ".":
        if n in zone.cuts and not (qtype == _DS and n == name):
            found = n
        n = parent(n)
    return found


def _wildcard(zone: Zone, name: str) -> str | None:
    """The source of synthesis for a name that does not exist: ``*.`` + its closest encloser
    (RFC 4592 §3.3.1), if the zone has one."""
    n = parent(name)
    while n not in zone.names:
        if n == "." or n == zone.origin:
            return None
        n = parent(n)
    source = "*." + n if n != "." else "*."
    return source if source in zone.nodes else None


def lookup(zone: Zone, qname: str, qtype: int) -> Answer:
    """The authoritative answer for ``qname`` (as sent, trailing dot, inside ``zone``)."""
    q = _Q(zone, qname, qtype)
    name = qname.lower()
    if name == zone.origin:
        if qtype == _SOA:
            return Answer(RCODE.NOERROR, (_owned(zone.soa, qname),), q.apex_ns())
        if qtype == _NS and zone.ns:
            ns = tuple(_owned(rr, qname) for rr in zone.ns)
            return Answer(RCODE.NOERROR, ns, (), q.addresses([_target(rr) for rr in zone.ns]))
    cut = _cut(zone, name, qtype)
    if cut is not None:
        ns_set = zone.nodes[cut][_NS]
        return Answer(RCODE.NOERROR, (), ns_set, q.addresses([_target(rr) for rr in ns_set]),
                      aa=False)
    return _resolve(q, qname, name, 0)


def _resolve(q: _Q, qname: str, name: str, depth: int) -> Answer:
    zone = q.zone
    node = zone.nodes.get(name)
    if node is None:
        if name in zone.names:
            return q.nodata()  # empty non-terminal
        source = _wildcard(zone, name)
        if source is None:
            return Answer(RCODE.NXDOMAIN, authority=(q.soa_negative(),), name_error=True)
        node = zone.nodes[source]
    cname = node.get(_CNAME)
    if cname and q.qtype != _CNAME:
        return _chase(q, [_owned(cname[0], qname)], _target(cname[0]), depth)
    rrs = node.get(q.qtype)
    if not rrs:
        return q.nodata()
    answer = tuple(_owned(rr, qname) for rr in rrs)
    extra: list[str] = []
    if q.qtype in (_MX, _SRV):
        extra = [str(rr.rdata.label if q.qtype == _MX else rr.rdata.target).lower() for rr in rrs]
    return Answer(RCODE.NOERROR, answer, q.apex_ns(), q.addresses(extra))


def _chase(q: _Q, chain: list[RR], target: str, depth: int) -> Answer:
    zone = q.zone
    if not in_zone(target, zone.origin):
        return Answer(RCODE.NOERROR, tuple(chain), q.apex_ns(), chase=target)
    if depth >= MAX_CHASE or _cut(zone, target, q.qtype) is not None:
        # Too long (or a loop), or delegated away: the resolver follows the last CNAME itself.
        return Answer(RCODE.NOERROR, tuple(chain), q.apex_ns())
    sub = _resolve(q, target, target, depth + 1)
    return Answer(sub.rcode, (*chain, *sub.answer), sub.authority, sub.additional,
                  chase=sub.chase)


# -- the handler ---------------------------------------------------------------------------------


class _Loaded:
    """One served zone: where it comes from and the zone currently answering."""

    __slots__ = ("bad_digest", "origin", "unreadable", "zone")

    def __init__(self, origin: str, zone: Zone) -> None:
        self.origin = origin
        self.zone = zone
        self.bad_digest: bytes | None = None
        self.unreadable = False


class FileHandler:
    name = NAME

    def __init__(self, cfg: FileConfig, zones: dict[str, Zone], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self._clock = clock
        self._zones = {origin: _Loaded(origin, z) for origin, z in zones.items()}
        self._by_length = sorted(self._zones, key=len, reverse=True)
        self._lock = threading.Lock()
        self._poller = Poller("file-reload", cfg.reload, self.reload)
        self.reload_timestamp = clock()
        """When a zone was last (re)loaded, for metrics."""

    @property
    def zones(self) -> dict[str, Zone]:
        return {origin: z.zone for origin, z in self._zones.items()}

    @property
    def entries(self) -> dict[str, int]:
        """Records per zone (CoreDNS's per-domain entries gauge), read at scrape time."""
        return {origin: z.zone.records for origin, z in self._zones.items()}

    def zone_of(self, qname_lower: str) -> str | None:
        return longest_zone(qname_lower, self._by_length)

    # -- serving ----------------------------------------------------------------------------

    def serve(self, req: Request, nxt: Next) -> Response:
        origin = self.zone_of(req.qname_lower)
        if origin is None or req.qclass != CLASS.IN:
            return nxt(req)
        zone = self._zones[origin].zone
        if req.qtype in (QTYPE.AXFR, QTYPE.IXFR):
            ans = Answer(RCODE.REFUSED, aa=False)
        else:
            ans = lookup(zone, req.qname, req.qtype)
        if ans.name_error and self.cfg.fallthrough_covers(req.qname_lower):
            return nxt(req)
        reply = answer_reply(req, ans)
        if ans.chase is not None:
            # RFC 6604: the rcode of the last name in the chain (an NXDOMAIN target counts).
            chase(req, ans.chase, reply, nxt, last_rcode=True)
            return Response(reply, self.name)
        return Response(reply, self.name, fast=True, deps=(("file", id(self), origin),))

    # -- reloading --------------------------------------------------------------------------

    def reload(self) -> list[str]:
        """Re-read every zone file; reload those whose content changed. Returns their origins.

        A file that cannot be read or parsed keeps the zone being served (logged once per
        distinct failure)."""
        changed: list[str] = []
        with self._lock:
            for loaded in self._zones.values():
                path = self.cfg.path
                try:
                    data = path.read_bytes()
                except OSError as err:
                    if not loaded.unreadable:
                        loaded.unreadable = True
                        log.warning("file: cannot read %s (%s); keeping zone %s with SOA serial %d",
                                    path, err.strerror or err, loaded.origin, loaded.zone.serial)
                    continue
                loaded.unreadable = False
                digest = hashlib.sha256(data).digest()
                if digest in (loaded.zone.digest, loaded.bad_digest):
                    continue
                try:
                    zone = build_zone(data, loaded.origin, path)
                except ZoneFileError as err:
                    loaded.bad_digest = digest
                    log.error("file: %s; keeping zone %s with SOA serial %d", err.where(path),
                              loaded.origin, loaded.zone.serial)
                    continue
                old = loaded.zone
                if zone.serial == old.serial:
                    log.warning("file: %s changed but its SOA serial %d did not; reloading anyway "
                                "(secondaries will not notice the change)", path, zone.serial)
                loaded.zone = zone
                loaded.bad_digest = None
                changed.append(loaded.origin)
                log.info("file: reloaded zone %s from %s with SOA serial %d (was %d)",
                         loaded.origin, path, zone.serial, old.serial)
            if changed:
                # After the swap (see Generation): evicts only the changed zones' replies.
                GENERATION.bump(("file", id(self), origin) for origin in changed)
                self.reload_timestamp = self._clock()
        return changed

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._poller.start()

    def stop(self) -> None:
        self._poller.stop()

