"""Framed messages between a ``kdns serve --workers N`` supervisor and its worker processes.

One ``AF_UNIX`` stream socket per worker carries length-prefixed pickles in both directions.
Pickle is safe here because both ends are this program, started by the supervisor itself from
the same interpreter and installation; nothing outside the process tree can reach the socket
(a socketpair has no name).

Writes go through a per-channel queue drained by one writer thread, so a caller (an informer
thread fanning out a change, a scrape) never blocks on a slow worker. A worker that stops
reading for long enough to let :data:`MAX_QUEUED` bytes pile up is cut off: the supervisor
restarts it and replays the cluster state, which is cheaper and safer than unbounded memory.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import socket
import struct
import threading
from collections import deque
from typing import Any

log = logging.getLogger("kdns.workers")

HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 30
"""A frame larger than this is a protocol error, not data (a 50k-Service relist is ~30 MB)."""
MAX_QUEUED = 512 << 20
"""Bytes queued for one peer before the channel gives up on it."""


def encode(obj: Any) -> bytes:
    """One frame: the length, then the pickle. Encoded once, sent to any number of peers."""
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


class Channel:
    """One end of a worker link: ``send``/``send_frame`` queue, ``recv`` blocks."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self._out: deque[bytes] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                        name=f"ipc-{name}-writer")
        self._writer.start()

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, obj: Any) -> bool:
        return self.send_frame(encode(obj))

    def send_frame(self, frame: bytes) -> bool:
        """Queue one encoded frame; False once the channel is closed (the peer is gone)."""
        with self._cond:
            if self._closed:
                return False
            if self._queued + len(frame) > MAX_QUEUED:
                log.error("%s: peer is not reading (%d MB queued); closing the link",
                          self.name, self._queued >> 20)
                self._close_locked()
                return False
            self._out.append(frame)
            self._queued += len(frame)
            self._cond.notify()
        return True

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._out and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                frames = list(self._out)
                self._out.clear()
                self._queued = 0
            try:
                self.sock.sendall(b"".join(frames) if len(frames) > 1 else frames[0])
            except OSError:
                self.close()
                return

    def recv(self) -> Any:
        """The next message, or None at end of stream (the peer exited or closed)."""
        header = self._read(HEADER.size)
        if header is None:
            return None
        (size,) = HEADER.unpack(header)
        if size > MAX_FRAME:
            log.error("%s: frame of %d bytes; closing the link", self.name, size)
            self.close()
            return None
        body = self._read(size)
        if body is None:
            return None
        return pickle.loads(body)

    def _read(self, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def _close_locked(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._out.clear()
        self._cond.notify_all()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv
        self.sock.close()

    def close(self) -> None:
        with self._cond:
            self._close_locked()

    def flush(self, timeout: float) -> None:
        """Best effort: wait until queued frames are written (used before a clean exit)."""
        deadline = threading.Event()
        for _ in range(int(timeout / 0.01)):
            with self._cond:
                if not self._out or self._closed:
                    return
            deadline.wait(0.01)
