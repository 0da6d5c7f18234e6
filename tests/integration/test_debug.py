"""debug: loads, says once that it has no effect, and changes nothing about serving."""

from __future__ import annotations

import logging
from pathlib import Path

import dns.rcode
import pytest

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.server.app import KdnsServer
from tests.conftest import DEMO, Running, start_server


def test_debug_logs_its_location_and_serving_is_unchanged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kdns.plugins.debug")
    server = start_server(f"""\
        .:53 {{
            debug
            kubernetes cluster.local {{
                manifests {DEMO}
            }}
        }}
        """, tmp_path)
    try:
        msgs = [r.getMessage() for r in caplog.records if r.name == "kdns.plugins.debug"]
        assert len(msgs) == 1
        assert msgs[0].startswith(f"{tmp_path / 'Corefile'}:2:5: debug: no effect in kdns")
        run = Running(server)
        r = run.udp("kubia.default.svc.cluster.local.", "A")
        assert [rd.address for rs in r.answer for rd in rs] == ["10.98.237.175"]
        assert run.udp("nosuch.example.", "A").rcode() == dns.rcode.SERVFAIL  # as without it
        assert "debug" not in {h.name for h in server.handlers()}, "not in the chain"
    finally:
        server.stop()


@pytest.mark.parametrize(("text", "message"), [
    ("debug on", "Corefile:2:11: debug: unexpected argument 'on'"),
    ("debug {\n    }", "Corefile:2:5: debug: takes no block"),
])
def test_bad_debug_is_a_located_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        KdnsServer(parse_corefile(f". {{\n    {text}\n}}\n", "Corefile")).build()
    assert str(exc.value) == message
