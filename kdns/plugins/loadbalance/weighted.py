"""loadbalance ``weighted WEIGHTFILE``: per-name address weights that pick the first record.

The weight file is CoreDNS's format: a domain name on a line of its own, then ``IP WEIGHT``
lines (weight 1-255) for that name; ``#`` starts a comment. An address without a weight counts
1. For A, AAAA and SRV replies the first address record of the answer (and of the additional
section) is drawn with probability proportional to its weight and swapped to the front; the other
records keep their order (CoreDNS ``weighted.go``).

Fast-path replies are replayed without the chain, so instead of one draw per query they get a
cycle of up to ``MAX_ORDERS`` orders in which each address leads in proportion to its weight
(largest-remainder apportionment, at least once each when the cycle has room), in a random
order. The file is re-read every ``reload`` (default 30s, 0 = never) when its content changed;
a change bumps the data generation so stored replies pick up the new weights at once.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import random
import threading
from collections.abc import Iterable
from pathlib import Path

from dnslib import QTYPE, RR

from kdns.plugins.base import GENERATION

log = logging.getLogger("kdns.loadbalance")

Weights = dict[str, dict[str, int]]
"""Lower-case FQDN -> canonical IP -> weight."""


class WeightFileError(ValueError):
    """A malformed weight file: ``str()`` names the file and line."""


def parse_weights(text: str, filename: str) -> Weights:
    domains: Weights = {}
    current: dict[str, int] | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"{filename}:{lineno}"
        if len(fields) == 1:
            name = fields[0]
            try:
                ipaddress.ip_address(name)
            except ValueError:
                pass
            else:
                raise WeightFileError(f"{where}: wrong domain name {name!r} (a missing weight "
                                      "value?)")
            name = name.lower() if name.endswith(".") else name.lower() + "."
            current = domains.setdefault(name, {})
        elif len(fields) == 2:
            try:
                ip = str(ipaddress.ip_address(fields[0]))
            except ValueError:
                raise WeightFileError(f"{where}: wrong IP address {fields[0]!r}") from None
            if not (fields[1].isascii() and fields[1].isdigit()) or not 1 <= int(fields[1]) <= 255:
                raise WeightFileError(f"{where}: wrong weight value {fields[1]!r} (1..255)")
            if current is None:
                raise WeightFileError(f"{where}: missing domain name before {line!r}")
            current[ip] = int(fields[1])
        else:
            raise WeightFileError(f"{where}: could not parse weight line {line!r}")
    return domains


def _ip(rr: RR) -> str:
    return str(ipaddress.ip_address(str(rr.rdata)))


class WeightedPicker:
    """The weights of one weight file, reloaded in the background."""

    def __init__(self, path: Path, reload: float, *, rng: random.Random | None = None) -> None:
        self.path = path
        self.reload = reload
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._digest = b""
        self.weights: Weights = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self) -> bool:
        """Read the file; True when its content changed (and parsed). Raises OSError and
        WeightFileError."""
        data = self.path.read_bytes()
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:
            return False
        weights = parse_weights(data.decode(errors="replace"), str(self.path))
        with self._lock:
            self.weights, self._digest = weights, digest
        return True

    def start(self) -> None:
        if self.reload > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="loadbalance-weights",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.wait(self.reload):
            try:
                if self.load():
                    GENERATION.bump()  # stored replies were ordered with the old weights
                    log.info("loadbalance: reloaded weight file %s", self.path)
            except (OSError, WeightFileError) as err:
                log.error("loadbalance: %s; keeping the previous weights", err)

    def weight(self, rr: RR) -> int:
        with self._lock:
            ws = self.weights.get(str(rr.rname).lower())
        return ws.get(_ip(rr), 1) if ws else 1

    def top(self, address: list[RR]) -> int:
        """Index of the address drawn to lead (CoreDNS topAddressIndex: heaviest first, then a
        draw in [0, sum))."""
        weighted = sorted(((self.weight(rr), i) for i, rr in enumerate(address)),
                          key=lambda w: -w[0])
        v = self._rng.randrange(sum(w for w, _ in weighted))
        acc = 0
        for w, i in weighted:
            acc += w
            if v < acc:
                return i
        return 0  # unreachable: v < sum

    def leaders(self, address: list[RR], count: int) -> list[int]:
        """``count`` leader indexes, each address in proportion to its weight."""
        ws = [self.weight(rr) for rr in address]
        total = sum(ws)
        exact = [w * count / total for w in ws]
        shares = [int(x) for x in exact]
        # largest remainder, then every address at least once while there is room
        for i in sorted(range(len(ws)), key=lambda i: exact[i] - shares[i],
                        reverse=True)[: count - sum(shares)]:
            shares[i] += 1
        out = [i for i, n in enumerate(shares) for _ in range(n)]
        self._rng.shuffle(out)
        return out


def with_top(records: Iterable[RR], top: int) -> list[RR]:
    out = list(records)
    if top:
        out[0], out[top] = out[top], out[0]
    return out


WEIGHTED_QTYPES = (QTYPE.A, QTYPE.AAAA, QTYPE.SRV)
