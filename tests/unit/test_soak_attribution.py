"""tools/soak.py puts lost replies on the machine only with kdns's own counters clean and the
machine shown to be short of CPU; anything else stays kdns's failure."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SOAK = Path(__file__).resolve().parents[2] / "tools" / "soak.py"


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tools_soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


CLEAN: dict[str, Any] = {"lost": 30, "other_errors": 0, "checked": 20_000, "server_drops": 0,
                         "requests": 20_000, "answered_all": True, "sent": 20_000,
                         "cpu_wait": 0.2}


def test_late_replies_on_a_starved_machine_are_the_machines(soak: ModuleType) -> None:
    assert soak.attribute(**CLEAN)


@pytest.mark.parametrize("change", [
    {"lost": 0},                       # nothing to excuse
    {"other_errors": 1},               # a wrong answer, an ERROR line, an early exit...
    {"server_drops": 1},               # kdns's socket overflowed or it shed a query
    {"requests": 19_999},              # a query never reached kdns
    {"requests": None},                # no /metrics scrape
    {"answered_all": False},           # kdns counted a request it did not answer
    {"cpu_wait": 0.05},                # the machine had CPU to spare: kdns was slow
    {"lost": 1001},                    # more than 5 % late is not a busy machine
])
def test_anything_else_stays_a_failure(soak: ModuleType, change: dict[str, Any]) -> None:
    assert not soak.attribute(**{**CLEAN, **change})
