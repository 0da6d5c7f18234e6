"""A short run of tools/rollout_under_load.py: an instance replaced under load loses nothing."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_rollout_under_load_loses_no_query() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "rollout_under_load.py"),
                        "--rate", "1000", "--rollovers", "1", "--lameduck", "0.5"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "lost: 0," in r.stdout and "wrong answers: 0," in r.stdout
