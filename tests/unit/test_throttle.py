"""The API request limits with injected time: client-go's token bucket and the in-flight cap."""

from __future__ import annotations

import threading

import pytest

from kdns.k8s.throttle import (
    DEFAULT_BURST,
    DEFAULT_QPS,
    ApiLimits,
    RequestGate,
    Stopped,
    TokenBucket,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("limits,bucket", [
    (ApiLimits(), None),
    (ApiLimits(max_inflight=3), None),
    (ApiLimits(qps=20.0), (20.0, DEFAULT_BURST)),
    (ApiLimits(burst=4), (DEFAULT_QPS, 4)),
    (ApiLimits(qps=0.0, burst=0), (DEFAULT_QPS, DEFAULT_BURST)),  # client-go: 0 means default
    (ApiLimits(qps=0.5, burst=1), (0.5, 1)),
])
def test_bucket_shape_follows_client_go_defaults(limits: ApiLimits,
                                                 bucket: tuple[float, int] | None) -> None:
    assert limits.bucket() == bucket


def test_full_bucket_then_one_token_per_interval() -> None:
    clock = Clock()
    tb = TokenBucket(10.0, 3, clock=clock)
    assert [tb.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst, at once
    # Each further request queues behind the previous one: 0.1 s, 0.2 s, 0.3 s.
    assert [round(tb.reserve(), 9) for _ in range(3)] == [0.1, 0.2, 0.3]
    clock.now += 0.3  # the debt is paid off exactly: the next one waits a full interval
    assert round(tb.reserve(), 9) == 0.1


def test_idle_time_refills_up_to_the_burst_only() -> None:
    clock = Clock()
    tb = TokenBucket(2.0, 2, clock=clock)
    tb.reserve()
    tb.reserve()
    clock.now += 3600  # an hour idle buys 2 tokens, not 7200
    assert [tb.reserve() for _ in range(2)] == [0.0, 0.0]
    assert tb.reserve() == pytest.approx(0.5)


@pytest.mark.parametrize("qps,burst", [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_bucket_rejects_shapes_it_cannot_serve(qps: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(qps, burst)


class RecordingStop(threading.Event):
    """A stop event whose wait() records the delay instead of sleeping."""

    def __init__(self, *, stop_on_wait: bool = False) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.stop_on_wait = stop_on_wait

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(round(timeout or 0.0, 9))
        if self.stop_on_wait:
            self.set()
        return self.is_set()


def test_gate_waits_the_reserved_delay() -> None:
    stop = RecordingStop()
    gate = RequestGate(ApiLimits(qps=4.0, burst=2), stop, clock=Clock())
    for _ in range(4):
        with gate.request():
            pass
    assert stop.waits == [0.25, 0.5]
    assert gate.waited == pytest.approx(0.75)


def test_gate_gives_up_when_stopped_while_waiting() -> None:
    stop = RecordingStop(stop_on_wait=True)
    gate = RequestGate(ApiLimits(qps=1.0, burst=1), stop, clock=Clock())
    with gate.request():
        pass
    with pytest.raises(Stopped), gate.request():
        raise AssertionError("must not be reached")


def test_no_limits_means_no_waiting() -> None:
    stop = RecordingStop()
    gate = RequestGate(ApiLimits(), stop, clock=Clock())
    for _ in range(1000):
        with gate.request():
            pass
    assert stop.waits == [] and gate.bucket is None and gate.slots is None


def test_in_flight_cap_blocks_the_next_request_until_one_finishes() -> None:
    stop = threading.Event()
    gate = RequestGate(ApiLimits(max_inflight=2), stop)
    entered = threading.Event()

    def third() -> None:
        with gate.request():
            entered.set()

    with gate.request(), gate.request():
        t = threading.Thread(target=third)
        t.start()
        assert not entered.wait(0.3)  # both slots held: the third request waits
    assert entered.wait(5)  # a slot freed: it goes
    t.join(5)


def test_in_flight_wait_ends_on_stop() -> None:
    stop = threading.Event()
    gate = RequestGate(ApiLimits(max_inflight=1), stop)
    raised: list[BaseException] = []

    def third() -> None:
        try:
            with gate.request():
                pass
        except Stopped as exc:
            raised.append(exc)

    with gate.request():
        t = threading.Thread(target=third)
        t.start()
        stop.set()
        t.join(5)
    assert len(raised) == 1 and not t.is_alive()
