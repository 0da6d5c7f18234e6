"""Setup of errors, log, health, ready, prometheus: valid arguments, and located errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.plugins import registry
from kdns.plugins.setup_context import SetupContext


def _setup(line: str) -> object:
    block = parse_corefile(f".:53 {{\n    {line}\n}}\n", "Corefile")[0]
    d = block.directives[0]
    func = registry.setup_func(d.name.text)
    assert func is not None
    return func(d, SetupContext(block.keys, Path("."), process={}))


@pytest.mark.parametrize(
    "line",
    [
        "errors",
        "errors {\n        consolidate 5m \".* timeout$\" warning show_first\n        stacktrace\n    }",
        "log",
        "log example.org {\n        class denial error\n    }",
        "health",
        "health 127.0.0.1:8080 {\n        lameduck 5s\n    }",
        "health [::1]:8080",
        "ready",
        "ready :8181",
        "prometheus",
        "prometheus 0.0.0.0:9153",
    ],
)
def test_valid(line: str) -> None:
    assert _setup(line) is not None


@pytest.mark.parametrize(
    ("line", "where", "message"),
    [
        ("errors now", "2:12", "unexpected argument"),
        ("errors {\n        consolidate 5m\n    }", "3:9", "consolidate needs"),
        ("errors {\n        consolidate soon x\n    }", "3:21", "invalid duration"),
        ("errors {\n        consolidate 5m (\n    }", "3:24", "invalid regexp"),
        ("errors {\n        consolidate 5m x loud\n    }", "3:26", "unknown level"),
        ("errors {\n        panic\n    }", "3:9", "unknown property"),
        ("log {\n        class sometimes\n    }", "3:15", "unknown class"),
        ("log . \"{remote} {nmae}\"", "2:11", "unknown placeholder {nmae}"),
        ("health :http", "2:12", "port"),
        ("health {\n        lameduck\n    }", "3:9", "lameduck needs"),
        ("health {\n        lameduck forever\n    }", "3:18", "invalid duration"),
        ("health :8080 :8081", "2:18", "at most one address"),
        ("ready :99999", "2:11", "port"),
        ("ready {\n        monitor x\n    }", "3:9", "unknown property"),
        ("prometheus :99999", "2:16", "port"),
        ("prometheus a b", "2:18", "at most one address"),
    ],
)
def test_invalid_is_located(line: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _setup(line)
    assert str(err.value).startswith(f"Corefile:{where}:"), str(err.value)
    assert message in str(err.value)


def test_errors_consolidate_folds_repeats(caplog: pytest.LogCaptureFixture) -> None:
    h = _setup("errors {\n        consolidate 1h \"timeout\"\n    }")
    caplog.set_level(logging.INFO, logger="kdns.errors")
    for _ in range(5):
        h.report("upstream timeout")  # type: ignore[attr-defined]
    h.report("something else")  # type: ignore[attr-defined]
    texts = [r.getMessage() for r in caplog.records]
    assert texts == ["upstream timeout", "something else"]
