"""A steady, bounded UDP query load for the tools' rollout and reload checks.

Many client sockets (many 4-tuples, so SO_REUSEPORT spreads them across instances) send demo
cluster names at a fixed rate; each reply is matched by socket and ID and its rcode checked.
"""

from __future__ import annotations

import random
import selectors
import socket
import struct
import threading
import time

NAMES = [
    (b"\x05kubia\x07default\x03svc\x07cluster\x05local\x00", 0),
    (b"\x09nginx-svc\x07default\x03svc\x07cluster\x05local\x00", 0),
    (b"\x04nope\x07default\x03svc\x07cluster\x05local\x00", 3),
]
"""(wire name, expected rcode): two services of the demo cluster and one missing name."""


def wire(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"


class Load:
    """A steady query rate from ``clients`` sockets; every query must get the right rcode.
    ``names``: (wire name, expected rcode) pairs asked in turn (default :data:`NAMES`)."""

    def __init__(self, port: int, rate: int, clients: int = 64,
                 names: list[tuple[bytes, int]] | None = None) -> None:
        self.port, self.rate = port, rate
        self.names = names or NAMES
        self.socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(clients)]
        for s in self.socks:
            s.setblocking(False)
            s.bind(("127.0.0.1", 0))
        self.sent = self.answered = self.wrong = 0
        self.outstanding: dict[tuple[int, int], tuple[float, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, settle: float = 2.5) -> None:
        self._stop.set()
        self._thread.join()
        # collect late replies for queries still in flight, then count the rest as lost
        self._collect(time.monotonic() + settle)

    def _collect(self, until: float) -> None:
        sel = selectors.DefaultSelector()
        for s in self.socks:
            sel.register(s, selectors.EVENT_READ)
        while self.outstanding and time.monotonic() < until:
            for key, _ in sel.select(timeout=0.05):
                self._read(key.fileobj)  # type: ignore[arg-type]
        sel.close()

    def _read(self, s: socket.socket) -> None:
        while True:
            try:
                data = s.recv(4096)
            except BlockingIOError:
                return
            if len(data) < 12:
                continue
            qid = struct.unpack_from("!H", data)[0]
            entry = self.outstanding.pop((s.fileno(), qid), None)
            if entry is None:
                continue
            self.answered += 1
            if data[3] & 0xF != entry[1]:
                self.wrong += 1

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        for s in self.socks:
            sel.register(s, selectors.EVENT_READ)
        interval = 1.0 / self.rate
        next_send = time.monotonic()
        i = 0
        while not self._stop.is_set():
            now = time.monotonic()
            while next_send <= now:
                s = self.socks[i % len(self.socks)]
                name, rcode = self.names[i % len(self.names)]
                qid = random.getrandbits(16)
                while (s.fileno(), qid) in self.outstanding:
                    qid = random.getrandbits(16)
                packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + name + b"\x00\x01\x00\x01"
                try:
                    s.sendto(packet, ("127.0.0.1", self.port))
                    self.sent += 1
                    self.outstanding[(s.fileno(), qid)] = (now, rcode)
                except OSError:
                    pass
                i += 1
                next_send += interval
            for key, _ in sel.select(timeout=max(0.0, next_send - time.monotonic())):
                self._read(key.fileobj)  # type: ignore[arg-type]
        sel.close()
