"""Smoke run of ``bench/scale.py`` at a small size: kdns syncs from the fake API server, the
relist and the change-visibility loop complete, the headless checks run, every figure and goal
line is printed, and nothing is left running. It checks that the benchmark works, not a speed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "scale.py"


@pytest.mark.slow
def test_scale_benchmark_smoke(tmp_path: Path) -> None:
    out_json = tmp_path / "scale.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--sizes", "300", "--changes", "5",
         "--headless-endpoints", "600", "--repeat", "100", "--json", str(out_json)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    log = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, log
    m = re.search(r"^SCALE services=300 ready_s=([\d.]+) rss_ready_mb=([\d.]+) "
                  r"rss_steady_mb=([\d.]+) relist_peak_mb=([\d.]+) change_p50_ms=([\d.]+) "
                  r"change_max_ms=([\d.]+)$", proc.stdout, re.M)
    assert m, log
    ready, rss, steady, peak, p50, mx = map(float, m.groups())
    assert 0 < ready < 60 and rss > 5 and steady > 5 and peak >= 5, log
    assert 0 < p50 <= mx, log
    for key in ("rss", "relist", "ready", "change_p50", "change_max"):
        assert re.search(rf"^GOAL scale 300 {key}: .*: (PASS|FAIL)$", proc.stdout, re.M), log
    # The headless correctness checks are not speed goals: they must pass on any machine.
    for key in ("udp_edns", "udp_plain", "tcp"):
        assert re.search(rf"^GOAL headless {key}: .*: PASS$", proc.stdout, re.M), log

    data = json.loads(out_json.read_text())
    assert data["scale"][0]["services"] == 300
    assert len(data["scale"][0]["change_ms"]) == 5
    assert data["headless"]["tcp_answers"] == 600  # 600 A records fit in one TCP message

    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", proc.stderr)]
    assert len(pids) == 2, log  # one kdns for the scale size, one for the headless run
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"kdns pid {pid} still running\n{log}"
    tmp = re.search(r"^scale benchmark in (\S+)$", proc.stderr, re.M)
    assert tmp and not Path(tmp.group(1)).exists(), log
