"""hosts: answer A, AAAA and PTR from a hosts file plus inline entries, and reload the file.

This module owns the serving rules (CoreDNS ``plugin/hosts/hosts.go``) and the reload loop:

* a name outside the plugin's zones passes to the next plugin, except PTR queries, which are
  answered for any reverse name the index holds (CoreDNS: "PTR zones don't need to be specified");
* a PTR query the index cannot answer always passes on, whatever ``fallthrough`` says (CoreDNS);
* A/AAAA for a known name: its addresses; any other type (or a family it lacks): NODATA, i.e.
  NOERROR with an empty answer, unless ``fallthrough_unsupported`` hands it on;
* an unknown name: the next plugin when ``fallthrough`` covers it, else NXDOMAIN. CoreDNS answers
  SERVFAIL here ("we don't have a SOA"); kdns says what is true, NXDOMAIN, without an SOA (so it
  is not negatively cached, RFC 2308 §5);
* replies carry AA=1 like CoreDNS's, but never an SOA or NS: a hosts file is not a zone.

Reload: every ``reload`` seconds a daemon thread compares the file's (mtime, size, inode) with
the last read and rebuilds the index when it moved; the new index is swapped in with one
assignment and GENERATION bumped, so the fast path drops replies built from the old one. A file
that vanishes or cannot be read keeps the last good data (CoreDNS keeps serving it too) and logs
one WARNING until the file is readable again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from dnslib import AAAA, CLASS, PTR, QTYPE, RCODE, RR, A, DNSHeader, DNSRecord
from prometheus_client.core import GaugeMetricFamily

from kdns.plugins.base import GENERATION, Next, Request, Response
from kdns.plugins.hosts.setup import NAME, Entry, HostsConfig, HostsData, build_data, parse_hosts_text
from kdns.plugins.poller import Poller
from kdns.plugins.setup_context import SetupContext

log = logging.getLogger("kdns.hosts")

_Stat = tuple[int, int, int]


class HostsHandler:
    name = NAME

    def __init__(self, cfg: HostsConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self._clock = clock
        self._file_entries: tuple[Entry, ...] = ()
        self._stat: _Stat | None = None
        self._warned = False
        self._lock = threading.Lock()  # one reader of the file at a time (thread vs. a test)
        self._poller = Poller("hosts-reload", cfg.reload, self.reload)
        self.data: HostsData = build_data(cfg.inline, reverse=cfg.reverse)
        self.entries = self.data.entries
        """``coredns_hosts_entries``: read by the metrics collector at scrape time."""
        self.reload_timestamp = 0.0
        """``coredns_hosts_reload_timestamp_seconds``: when the data was last (re)built."""
        self.deps: tuple[Hashable, ...] = (("hosts", id(self)),)
        """What every reply of this handler depends on: its data, bumped on a reload."""
        self.reload()

    # -- serving ----------------------------------------------------------------------------

    def serve(self, req: Request, nxt: Next) -> Response:
        if req.qclass != CLASS.IN:
            return nxt(req)
        data = self.data
        qname, qtype, cfg = req.qname_lower, req.qtype, self.cfg
        if qtype == QTYPE.PTR:
            names = data.ptr.get(qname)
            if not names:
                return nxt(req)
            return self._reply(req, [
                RR(req.qname, QTYPE.PTR, ttl=cfg.ttl, rdata=PTR(n)) for n in names])
        if not cfg.covers(qname):
            return nxt(req)
        found = data.addresses(qname)
        if found is None:
            if cfg.fallthrough_covers(qname):
                return nxt(req)
            return self._reply(req, [], rcode=RCODE.NXDOMAIN)
        v4, v6 = found
        if qtype == QTYPE.A:
            rrs = [RR(req.qname, QTYPE.A, ttl=cfg.ttl, rdata=A(ip)) for ip in v4]
        elif qtype == QTYPE.AAAA:
            rrs = [RR(req.qname, QTYPE.AAAA, ttl=cfg.ttl, rdata=AAAA(ip)) for ip in v6]
        else:
            if cfg.fallthrough_unsupported and cfg.fallthrough_covers(qname):
                return nxt(req)
            rrs = []
        return self._reply(req, rrs)

    def _reply(self, req: Request, answer: list[RR],
               rcode: int = RCODE.NOERROR) -> Response:
        h = req.msg.header
        header = DNSHeader(id=h.id, qr=1, opcode=h.opcode, aa=1, rd=h.rd, ra=1, rcode=rcode)
        header.cd = h.cd
        reply = DNSRecord(header, q=req.msg.questions[0])
        reply.rr.extend(answer)
        return Response(reply, self.name, fast=True, deps=self.deps)

    # -- loading ----------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the file if its mtime, size or inode changed; True when the data changed.

        On any read error the last good data stays (with one WARNING per outage)."""
        with self._lock:
            path = self.cfg.path
            try:
                st = path.stat()
                key: _Stat = (st.st_mtime_ns, st.st_size, st.st_ino)
                if key == self._stat:
                    return False
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError as err:
                if not self._warned:
                    self._warned = True
                    log.warning("hosts: cannot read %s (%s); keeping the last data (%d entries)",
                                path, err.strerror or err, self.entries)
                return False
            if self._warned:
                log.info("hosts: %s is readable again", path)
                self._warned = False
            first = self._stat is None
            self._file_entries = tuple(parse_hosts_text(text, self.cfg.zones))
            self._stat = key
            data = build_data((*self._file_entries, *self.cfg.inline), reverse=self.cfg.reverse)
            self.data = data
            GENERATION.bump(self.deps)  # after the swap: see Generation
            self.entries = data.entries
            self.reload_timestamp = self._clock()
            if first:
                log.debug("hosts: read %s: %d entries", path, data.entries)
            else:
                log.info("hosts: reloaded %s: %d entries", path, data.entries)
            return True

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._poller.start()

    def metrics(self, ctx: SetupContext) -> Iterator[Any]:
        """coredns_hosts_entries and coredns_hosts_reload_timestamp_seconds."""
        yield GaugeMetricFamily("coredns_hosts_entries", "The combined number of entries in "
                                "hosts and Corefile.", value=self.entries)
        yield GaugeMetricFamily("coredns_hosts_reload_timestamp_seconds", "The timestamp of the "
                                "last reload of hosts file.", value=self.reload_timestamp)

    def stop(self) -> None:
        self._poller.stop()
