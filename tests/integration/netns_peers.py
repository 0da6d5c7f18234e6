"""DNS peers for the resolver-agreement tests, run inside the test's network namespace.

``python -m tests.integration.netns_peers SERVFAIL_PORT SILENT_PORT ZONE_PORT`` listens on
127.0.0.1 (UDP) with three servers and prints ``ready`` once all are bound:

* SERVFAIL_PORT answers every query SERVFAIL (a broken search domain);
* SILENT_PORT reads every query and never answers (a search domain whose server times out);
* ZONE_PORT is authoritative for ``corp.example`` (a search domain outside the cluster) and
  answers NXDOMAIN for every other name (the "internet" behind kdns's ``forward .``).

It exits when its stdin closes, so it never outlives the test that started it.
"""

from __future__ import annotations

import socket
import sys
import threading

from dnslib import CNAME, QTYPE, RCODE, RR, A, DNSRecord

CORP = "corp.example."
ZONE: dict[str, list[RR]] = {
    "www.corp.example.": [RR("www.corp.example.", QTYPE.A, rdata=A("192.0.2.10"), ttl=30)],
    "intranet.corp.example.": [
        RR("intranet.corp.example.", QTYPE.A, rdata=A("192.0.2.20"), ttl=30),
        RR("intranet.corp.example.", QTYPE.A, rdata=A("192.0.2.21"), ttl=30)],
    "svc.corp.example.": [RR("svc.corp.example.", QTYPE.A, rdata=A("192.0.2.30"), ttl=30)],
    "alias.corp.example.": [
        RR("alias.corp.example.", QTYPE.CNAME, rdata=CNAME("www.corp.example."), ttl=30),
        RR("www.corp.example.", QTYPE.A, rdata=A("192.0.2.10"), ttl=30)],
    "dangling.corp.example.": [
        RR("dangling.corp.example.", QTYPE.CNAME, rdata=CNAME("gone.corp.example."), ttl=30)],
    "txtonly.corp.example.": [],
}


def zone_answer(q: DNSRecord) -> DNSRecord:
    reply = q.reply()
    name = str(q.q.qname).lower()
    if name not in ZONE and name != CORP:
        reply.header.rcode = RCODE.NXDOMAIN
        return reply
    if name == "dangling.corp.example.":
        reply.header.rcode = RCODE.NXDOMAIN  # RFC 6604: the rcode is the chain end's
    for rr in ZONE.get(name, []):
        if rr.rtype == q.q.qtype or rr.rtype == QTYPE.CNAME or reply.rr:
            reply.add_answer(rr)
    return reply


def serve(port: int, mode: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))

    def loop() -> None:
        while True:
            data, peer = s.recvfrom(4096)
            if mode == "silent":
                continue
            try:
                q = DNSRecord.parse(data)
            except Exception:
                continue
            if mode == "servfail":
                reply = q.reply()
                reply.header.rcode = RCODE.SERVFAIL
            else:
                reply = zone_answer(q)
            s.sendto(reply.pack(), peer)

    threading.Thread(target=loop, daemon=True).start()
    return s


def main() -> None:
    servfail, silent, zone = (int(a) for a in sys.argv[1:4])
    serve(servfail, "servfail")
    serve(silent, "silent")
    serve(zone, "zone")
    print("ready", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
