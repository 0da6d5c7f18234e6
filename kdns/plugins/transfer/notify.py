"""NOTIFY (RFC 1996) to secondaries when a transferable zone's serial moves.

This module owns when and how secondaries are told. A thread polls each zone's serial (one
attribute read per zone every :data:`POLL_INTERVAL`; nothing on the query path) and, when it
moved since the last NOTIFY, sends one to every ``to`` address of the zone, at most once per
:data:`MIN_INTERVAL` per zone (longer for zones that are slow to transfer): a burst of cluster
changes within that time becomes a single NOTIFY carrying the newest serial (and the
secondary's one AXFR fetches all of it). The first NOTIFY goes out once the zone is first
served (RFC 1996 §4.7 suggests notifying on start).

Each round sends over UDP and waits for the secondary's acknowledgement (a reply with the same
ID and opcode NOTIFY); unanswered targets are retried :data:`TRIES` times in all, then left to
their refresh timer (RFC 1996 §3.6: a missed NOTIFY costs only latency).
"""

from __future__ import annotations

import logging
import random
import select
import socket
import threading
import time
from collections.abc import Callable

from dnslib import OPCODE, QTYPE, DNSHeader, DNSQuestion, DNSRecord

log = logging.getLogger("kdns.transfer")

_rng = random.Random()
"""This module's own random source: drawing from the shared ``random`` state would make
every other user of it (a test's seeded strategy, say) depend on this plugin's traffic."""

POLL_INTERVAL = 0.25
"""How often zone serials are compared with the last one notified."""
MIN_INTERVAL = 1.0
"""Least time between two NOTIFY rounds for one zone (bursts are coalesced into one); the
transfer plugin stretches it to four times what building the zone's transfer last cost."""
TRIES = 3
ACK_TIMEOUT = 1.0
"""Seconds to wait for acknowledgements before resending to the targets that have not."""

Target = tuple[str, str, int]
"""(zone, IP, port)."""


def notify_message(zone: str, qid: int) -> DNSRecord:
    """RFC 1996 §3.7: opcode NOTIFY, AA set, the zone's SOA as the question."""
    return DNSRecord(DNSHeader(id=qid, opcode=OPCODE.NOTIFY, aa=1, rd=0),
                     q=DNSQuestion(zone, QTYPE.SOA))


def send_notify(zone: str, targets: list[tuple[str, int]], *, tries: int = TRIES,
                timeout: float = ACK_TIMEOUT) -> set[tuple[str, int]]:
    """Send NOTIFY for ``zone`` to every target; return those that acknowledged."""
    acked: set[tuple[str, int]] = set()
    ids = {t: _rng.randrange(1 << 16) for t in targets}
    socks: dict[int, socket.socket] = {}
    try:
        for ip, _port in targets:
            fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
            if fam not in socks:
                try:
                    s = socket.socket(fam, socket.SOCK_DGRAM)
                except OSError as err:  # e.g. no IPv6 on this host: the others still go
                    log.warning("NOTIFY for %s: cannot open a socket for %s: %s", zone, ip, err)
                    continue
                s.setblocking(False)
                socks[fam] = s
        for _attempt in range(tries):
            pending = [t for t in targets if t not in acked
                       and (socket.AF_INET6 if ":" in t[0] else socket.AF_INET) in socks]
            if not pending:
                break
            for t in pending:
                data = notify_message(zone, ids[t]).pack()
                try:
                    socks[socket.AF_INET6 if ":" in t[0] else socket.AF_INET].sendto(data, t)
                except OSError as err:
                    log.debug("NOTIFY %s to %s:%d: %s", zone, t[0], t[1], err)
            deadline = time.monotonic() + timeout
            while socks and len(acked) < len(targets):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                ready, _, _ = select.select(list(socks.values()), [], [], left)
                for s in ready:
                    try:
                        data, addr = s.recvfrom(65535)
                    except OSError:
                        continue
                    key = (str(addr[0]), int(addr[1]))
                    if key not in ids or len(data) < 4:
                        continue
                    qid = int.from_bytes(data[:2], "big")
                    is_ack = data[2] & 0x80 and (data[2] >> 3) & 0xF == OPCODE.NOTIFY
                    if is_ack and qid == ids[key]:
                        acked.add(key)
    finally:
        for s in socks.values():
            s.close()
    return acked


class Notifier:
    """Watches zone serials and sends coalesced NOTIFYs; :meth:`tick` is one pass (tests call
    it with an injected clock instead of running the thread)."""

    def __init__(self, targets: list[Target], serial: Callable[[str], int | None], *,
                 interval: Callable[[], float] = lambda: MIN_INTERVAL,
                 now: Callable[[], float] = time.monotonic,
                 send: Callable[[str, list[tuple[str, int]]], set[tuple[str, int]]]
                 = send_notify) -> None:
        self._by_zone: dict[str, list[tuple[str, int]]] = {}
        for zone, ip, port in targets:
            self._by_zone.setdefault(zone, []).append((ip, port))
        self._serial = serial
        self._interval = interval
        self._now = now
        self._send = send
        self._notified: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self.sent = 0
        """NOTIFY rounds sent (one per zone change that was notified)."""
        self.unacknowledged = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        for zone, targets in self._by_zone.items():
            serial = self._serial(zone)
            if serial is None or self._notified.get(zone) == serial:
                continue
            now = self._now()
            last = self._last.get(zone)
            if last is not None and now - last < self._interval():
                continue  # coalesce: the next pass after the interval sends the newest serial
            self._notified[zone] = serial
            self._last[zone] = now
            self.sent += 1
            acked = self._send(zone, targets)
            missing = [t for t in targets if t not in acked]
            self.unacknowledged += len(missing)
            if missing:
                log.warning("NOTIFY for %s serial %d not acknowledged by %s", zone, serial,
                            ", ".join(f"{ip}:{port}" for ip, port in missing))
            else:
                log.info("sent NOTIFY for %s serial %d to %d secondaries", zone, serial,
                         len(targets))

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kdns-transfer-notify",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL_INTERVAL):
            try:
                self.tick()
            except Exception:  # one failed round must not end notifying
                log.exception("sending NOTIFY failed")

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)
