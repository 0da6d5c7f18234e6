"""transfer: serve AXFR (and IXFR, as a full transfer) of the zones other plugins publish.

This module owns the transfer side of the chain: who may transfer (the ``to`` addresses),
which plugin's zone is sent (a :class:`~kdns.plugins.base.Transferer` from
``ctx.shared["transferers"]``), and cutting the records into messages (RFC 5936 §2.2: the SOA
first and last, each message at most 64 KiB). As CoreDNS's *transfer*:

* AXFR/IXFR over UDP: REFUSED (RFC 5936 §4.2 requires TCP for AXFR);
* a zone no rule covers, or one no plugin can transfer: passed down the chain;
* a client not listed in ``to``: REFUSED;
* IXFR with the current serial: the SOA alone (up to date, RFC 1995 §2); with any other serial
  a full transfer in AXFR form (RFC 1995 §4: a server without history may do that).

Beyond CoreDNS, the NOTIFY sender (``notify.py``) tells the ``to`` addresses when a zone's
serial moves, so secondaries follow within seconds instead of their refresh interval.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
import time
from typing import TYPE_CHECKING, Any

from dnslib import QTYPE, RCODE, RR, DNSBuffer, DNSHeader, DNSRecord

from kdns.config.model import error
from kdns.config.zones import in_zone
from kdns.plugins.base import Next, Request, Response, Transferer
from kdns.plugins.transfer.notify import MIN_INTERVAL, Notifier

if TYPE_CHECKING:
    from kdns.plugins.transfer.setup import TransferRule

log = logging.getLogger("kdns.transfer")

MESSAGE_BUDGET = 15 * 1024
"""Bytes of records per transfer message, counted uncompressed (an upper bound of what they
take once compressed). Far under the 65,535-byte TCP limit on purpose: a compression pointer
holds a 14-bit offset (RFC 1035 §4.1.4), so every name must start in the first 16 KiB for the
encoder to point at it; past that, dnslib would write a pointer that does not fit."""


def _size(rr: RR) -> int:
    buf = DNSBuffer()
    rr.pack(buf)
    return len(buf.data)


def chunks(records: list[RR], budget: int = MESSAGE_BUDGET) -> list[list[RR]]:
    """``records`` cut in order into runs of at most ``budget`` uncompressed bytes."""
    out: list[list[RR]] = []
    run: list[RR] = []
    used = 0
    for rr in records:
        size = _size(rr)
        if run and used + size > budget:
            out.append(run)
            run, used = [], 0
        run.append(rr)
        used += size
    if run:
        out.append(run)
    return out


class TransferHandler:
    name = "transfer"

    def __init__(self, rules: list[TransferRule], shared: dict[str, Any],
                 process: dict[str, Any]) -> None:
        self.rules = rules
        self._shared = shared
        self._process = process
        self.sources: list[Transferer] = []
        self.notifier: Notifier | None = None
        self.transfers = 0
        self.refused = 0
        self._cache: tuple[tuple[object, ...], int, int, list[bytes], RR] | None = None
        """(key, serial, record count, messages without their ID, SOA) of the last transfer."""
        self.last_build_seconds = 0.0
        """What enumerating and encoding the last transfer cost (paces NOTIFY)."""

    def add(self, rule: TransferRule) -> None:
        self.rules.append(rule)

    def finish_setup(self) -> None:
        """Find the block's zone sources; a rule zone nothing can transfer is a located error
        (it would silently never transfer)."""
        self.sources = list(self._shared.get("transferers", ()))
        served = [z for src in self.sources for z in src.zones]
        for rule in self.rules:
            for zone in rule.zones:
                # As in CoreDNS, a rule for a parent zone (the block's ".") covers every zone
                # below it that a plugin can transfer.
                if not any(in_zone(z, zone) for z in served):
                    raise error(rule.loc, self.name, f"no plugin in this server block can "
                                f"transfer zone {zone!r} or a zone below it (transfer needs "
                                "e.g. kubernetes authoritative for it)")
        # NOTIFY goes, per transferable zone, to the 'to' addresses of the rule covering it.
        targets: set[tuple[str, str, int]] = set()
        for zone in served:
            covering = self._rule(zone)
            if covering is not None:
                targets.update((zone, t.ip.compressed, t.port) for t in covering.targets)
        # With `kdns serve --workers N` every worker runs this plugin; one NOTIFY sender is
        # enough, so only worker 0 (or a single process) sends.
        if targets and self._process.get("worker_index", 0) == 0:
            self.notifier = Notifier(sorted(targets), self._serial, interval=self._interval)

    def _interval(self) -> float:
        # Every NOTIFY makes each secondary transfer the zone; under constant churn, spacing
        # them at least four times what building a transfer costs keeps transfers under a
        # quarter of a core per secondary (5,000 Services: ~1-3 s to build).
        return max(MIN_INTERVAL, 4 * self.last_build_seconds)

    def _source(self, zone: str) -> Transferer | None:
        return next((s for s in self.sources if s.authoritative(zone)), None)

    def _serial(self, zone: str) -> int | None:
        src = self._source(zone)
        return None if src is None else src.serial(zone)

    def _rule(self, qname: str) -> TransferRule | None:
        best: TransferRule | None = None
        best_len = -1
        for rule in self.rules:
            for zone in rule.zones:
                if in_zone(qname, zone) and len(zone) > best_len:
                    best, best_len = rule, len(zone)
        return best

    @staticmethod
    def _allowed(rule: TransferRule, client: str) -> bool:
        if rule.anyone:
            return True
        try:
            ip = ipaddress.ip_address(client.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(t.ip == ip for t in rule.targets)

    def _reply(self, req: Request, rcode: int) -> Response:
        h = req.msg.header
        msg = DNSRecord(DNSHeader(id=h.id, qr=1, opcode=h.opcode, rd=h.rd, rcode=rcode),
                        q=req.msg.q)
        return Response(msg, self.name)

    def serve(self, req: Request, nxt: Next) -> Response:
        if req.qtype not in (QTYPE.AXFR, QTYPE.IXFR):
            return nxt(req)
        if req.proto != "tcp":
            return self._reply(req, RCODE.REFUSED)
        rule = self._rule(req.qname_lower)
        if rule is None:
            return nxt(req)
        source = self._source(req.qname_lower)
        if source is None:
            return nxt(req)  # below a zone (AXFR of svc.cluster.local): not a zone we send
        if not self._allowed(rule, req.client[0]):
            self.refused += 1
            log.info("refused transfer of %s to %s (not in 'to')", req.qname_lower,
                     req.client[0])
            return self._reply(req, RCODE.REFUSED)
        client_serial: int | None = None
        if req.qtype == QTYPE.IXFR:
            # RFC 1995 §3: the query's Authority section holds the client's SOA.
            soas = [rr for rr in req.msg.auth if rr.rtype == QTYPE.SOA]
            if len(req.msg.auth) != 1 or len(soas) != 1:
                return self._reply(req, RCODE.FORMERR)
            client_serial = int(soas[0].rdata.times[0])
        zone = req.qname_lower
        h = req.msg.header
        # Messages are cached without their ID, per data version and question (the reply
        # echoes the question as asked): secondaries fetching after one NOTIFY share the work.
        key = (id(source), zone, source.version(zone), req.qname, req.qtype, h.rd)
        cached = self._cache if self._cache is not None and self._cache[0] == key else None
        if cached is None:
            t0 = time.perf_counter()
            got = source.records(zone)
            if got is None or not got[2]:
                return self._reply(req, RCODE.SERVFAIL)  # not synced yet: the secondary retries
            serial, version, records = got
            bodies = [bytes(self._message(req, run).pack())[2:]
                      for run in chunks([*records, records[0]])]
            key = (id(source), zone, version, req.qname, req.qtype, h.rd)
            cached = (key, serial, len(records) + 1, bodies, records[0])
            self._cache = cached
            self.last_build_seconds = time.perf_counter() - t0
        _key, serial, count, bodies, soa = cached
        if client_serial is not None and client_serial == serial:
            return Response(self._message(req, [soa]), self.name)  # up to date (RFC 1995 §2)
        self.transfers += 1
        log.info("outgoing transfer of %d records of zone %s to %s for %d SOA serial",
                 count, zone, req.client[0], serial)
        qid = struct.pack("!H", h.id)
        first = DNSRecord.parse(qid + bodies[0])
        return Response(first, self.name, more=tuple(qid + b for b in bodies[1:]))

    @staticmethod
    def _message(req: Request, records: list[RR]) -> DNSRecord:
        h = req.msg.header
        msg = DNSRecord(DNSHeader(id=h.id, qr=1, aa=1, opcode=h.opcode, rd=h.rd), q=req.msg.q)
        msg.rr = list(records)
        return msg

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self.notifier is not None:
            self.notifier.start()

    def stop(self) -> None:
        if self.notifier is not None:
            self.notifier.stop()
