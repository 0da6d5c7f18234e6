"""Client-side limits on requests to the Kubernetes API (``apiserver_qps``, ``_burst``,
``_max_inflight``).

This module owns the two limits CoreDNS puts on its client-go connection, with client-go's
semantics:

* a token bucket (client-go ``flowcontrol.NewTokenBucketRateLimiter(qps, burst)``, which is
  ``golang.org/x/time/rate``): the bucket holds ``burst`` tokens and starts full, refills at
  ``qps`` tokens a second, and every request (each list page, each watch) takes one, waiting
  for it when the bucket is empty. Waiters reserve in arrival order, so tokens go negative and
  each later waiter waits one interval more (``rate.Limiter.Reserve``);
* a cap on concurrent requests (CoreDNS's semaphore RoundTripper): a request holds a slot from
  the moment it is sent until its response headers arrive, as a Go RoundTrip does; reading a
  long watch body holds none, so informers never starve each other.

client-go reads an unset or zero QPS as 5 and an unset or zero burst as 10; kdns applies those
defaults only once either option is given (see the kubernetes README). Time and waiting are
injected so the bucket can be tested without sleeping.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

DEFAULT_QPS = 5.0
"""client-go's ``rest.DefaultQPS``: what an unset or zero ``apiserver_qps`` means."""
DEFAULT_BURST = 10
"""client-go's ``rest.DefaultBurst``: what an unset or zero ``apiserver_burst`` means."""


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """The Corefile's three options as given (None: not in the Corefile)."""

    qps: float | None = None
    burst: int | None = None
    max_inflight: int | None = None

    @property
    def rate_limited(self) -> bool:
        return self.qps is not None or self.burst is not None

    def bucket(self) -> tuple[float, int] | None:
        """(qps, burst) of the token bucket, or None when neither option was given."""
        if not self.rate_limited:
            return None
        return (self.qps or DEFAULT_QPS, self.burst or DEFAULT_BURST)


class Stopped(Exception):
    """The source stopped while a request waited for a token or a slot."""


class TokenBucket:
    def __init__(self, qps: float, burst: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"token bucket needs qps > 0 and burst >= 1, got {qps}, {burst}")
        self.rate = qps
        self.capacity = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take one token; the seconds the caller must wait before sending (0: at once)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class RequestGate:
    """Both limits for one API connection; every request goes through :meth:`request`."""

    def __init__(self, limits: ApiLimits, stop: threading.Event, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        shape = limits.bucket()
        self.bucket = TokenBucket(*shape, clock=clock) if shape is not None else None
        inflight = limits.max_inflight or 0
        self.slots = threading.BoundedSemaphore(inflight) if inflight > 0 else None
        self._stop = stop
        self.waited = 0.0
        """Seconds requests spent waiting for tokens so far (for logs and tests)."""

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Wait for a token and a slot (or raise Stopped), hold the slot for the block."""
        if self.bucket is not None:
            delay = self.bucket.reserve()
            if delay > 0:
                self.waited += delay
                if self._stop.wait(delay):
                    raise Stopped()
        if self.slots is None:
            yield
            return
        while not self.slots.acquire(timeout=0.1):
            if self._stop.is_set():
                raise Stopped()
        try:
            yield
        finally:
            self.slots.release()
