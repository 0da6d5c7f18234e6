"""A short run of tools/rollout_under_load.py: instances replaced under load lose no query, in
the kubeadm setting (its Corefile, forward to a local dnsmasq, EndpointSlice churn).

The old instance fails readiness, serves through its lameduck period, steers new datagrams to
its SO_REUSEPORT sibling, answers what was queued, then exits 0. Any lost query fails the test
(it once lost a few: ``kdns serve`` exited while the drain was still answering, fixed in
``KdnsServer.stop``; see test_lifecycle's ``test_wait_returns_only_once_the_drain_is_done``)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.kubeadm import dnsmasq_available


@pytest.mark.skipif(not dnsmasq_available(), reason="needs dnsmasq (scripts/system-deps)")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_rollout_under_load_loses_no_query(workers: str) -> None:
    """With ``--workers 2`` four worker processes of two instances share the port during the
    overlap, and the old supervisor drains both of its workers."""
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "rollout_under_load.py"),
                        "--rate", "2000", "--rollovers", "2", "--lameduck", "0.5",
                        "--workers", workers],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    m = re.search(r"queries sent: (\d+), answered: (\d+), lost: (\d+), wrong answers: (\d+), "
                  r"rollovers: 2, slice changes: (\d+), instance exit codes: \[0, 0, 0\]",
                  r.stdout)
    assert m is not None, r.stdout + r.stderr
    sent, _, lost, wrong, changes = (int(g) for g in m.groups())
    assert sent > 4000 and wrong == 0, r.stdout
    assert changes > 20, r.stdout  # the cluster changed all along (every 50 ms)
    assert lost == 0, r.stdout
    assert r.returncode == 0, r.stdout
