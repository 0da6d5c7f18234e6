"""hosts: setup (options, located errors), the answer rules, and reloading the file."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.plugins import registry
from kdns.plugins.base import GENERATION, Request, Response
from kdns.plugins.hosts import setup as hsetup
from kdns.plugins.hosts.handler import HostsHandler
from kdns.plugins.setup_context import SetupContext

README = Path(hsetup.__file__).parent / "README.md"

HOSTS = """\
# comment line
192.0.2.10   gateway.example.com gw.example.com   # trailing comment
192.0.2.11   db.example.com
2001:db8::11 db.example.com
2001:db8::12 v6only.example.com
192.0.2.12   db.example.com
fe80::1%eth0 linklocal.example.com
not-an-ip    broken.example.com
192.0.2.13
192.0.2.14   outside.example.net
192.0.2.100  *.apps.example.com
192.0.2.101  exact.apps.example.com
"""


def _handler(tmp_path: Path, body: str = "", args: str = "hosts", key: str = "example.com",
             hosts: str | None = HOSTS) -> HostsHandler:
    if hosts is not None:
        (tmp_path / "hosts").write_text(hosts)
    block = parse_corefile(f"{key} {{\n    {args} {{\n{body}    }}\n}}\n", "Corefile")[0]
    return hsetup.setup(block.directives[0], SetupContext(block.keys, tmp_path))


def _req(qname: str, qtype: str = "A", qclass: int = 1) -> Request:
    msg = DNSRecord.question(qname, qtype)
    msg.questions[0].qclass = qclass
    return Request(msg, qname, qname.lower(), int(getattr(QTYPE, qtype)), qclass, ("127.0.0.1", 5353),
                   "udp", "dns://:53", "example.com.", 512)


class Next:
    """A next plugin that records it was asked."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, req: Request) -> Response:
        self.calls.append(req.qname)
        return Response(req.msg.reply(), "next")


def _rdata(resp: Response) -> list[str]:
    return [str(rr.rdata) for rr in resp.msg.rr]


# -- answers -------------------------------------------------------------------------------------


def test_a_and_aaaa_answers(tmp_path: Path) -> None:
    h = _handler(tmp_path, args="hosts hosts")
    nxt = Next()
    r = h.serve(_req("db.example.com."), nxt)
    assert r.msg.header.rcode == RCODE.NOERROR and r.msg.header.aa == 1
    assert _rdata(r) == ["192.0.2.11", "192.0.2.12"]  # two lines for one name add up
    assert {rr.ttl for rr in r.msg.rr} == {3600}
    assert not r.msg.auth and not r.msg.ar  # no SOA: a hosts file is not a zone
    assert _rdata(h.serve(_req("db.example.com.", "AAAA"), nxt)) == ["2001:db8::11"]
    assert _rdata(h.serve(_req("gw.example.com."), nxt)) == ["192.0.2.10"]  # alias
    assert _rdata(h.serve(_req("linklocal.example.com.", "AAAA"), nxt)) == ["fe80::1"]
    assert nxt.calls == []


def test_owner_echoes_query_case(tmp_path: Path) -> None:
    h = _handler(tmp_path, args="hosts hosts")
    r = h.serve(_req("GateWay.Example.COM."), Next())
    assert str(r.msg.rr[0].rname) == "GateWay.Example.COM."
    assert _rdata(r) == ["192.0.2.10"]


@pytest.mark.parametrize(("qname", "qtype"), [
    ("db.example.com.", "MX"),
    ("db.example.com.", "TXT"),
    ("v6only.example.com.", "A"),       # known name, no address of that family
    ("gateway.example.com.", "AAAA"),
])
def test_known_name_other_type_is_nodata(tmp_path: Path, qname: str, qtype: str) -> None:
    h = _handler(tmp_path, args="hosts hosts")
    r = h.serve(_req(qname, qtype), Next())
    assert r.msg.header.rcode == RCODE.NOERROR and r.msg.header.aa == 1
    assert not r.msg.rr and not r.msg.auth


def test_unknown_name_is_nxdomain_and_skipped_lines_do_not_exist(tmp_path: Path) -> None:
    h = _handler(tmp_path, args="hosts hosts")
    for name in ("nope.example.com.", "broken.example.com.", "example.com."):
        r = h.serve(_req(name), Next())
        assert r.msg.header.rcode == RCODE.NXDOMAIN, name
        assert not r.msg.auth


def test_names_outside_the_zones_pass_on(tmp_path: Path) -> None:
    h = _handler(tmp_path, args="hosts hosts")
    nxt = Next()
    r = h.serve(_req("outside.example.net."), nxt)
    assert r.plugin == "next" and nxt.calls == ["outside.example.net."]
    # the entry outside the zones is dropped at load, so it also has no PTR
    r = h.serve(_req("14.2.0.192.in-addr.arpa.", "PTR"), nxt)
    assert r.plugin == "next"


def test_non_in_class_passes_on(tmp_path: Path) -> None:
    h = _handler(tmp_path, args="hosts hosts")
    nxt = Next()
    assert h.serve(_req("db.example.com.", "A", qclass=3), nxt).plugin == "next"


def test_fallthrough_all_and_by_zone(tmp_path: Path) -> None:
    h = _handler(tmp_path, "        fallthrough\n", args="hosts hosts")
    nxt = Next()
    assert h.serve(_req("nope.example.com."), nxt).plugin == "next"
    assert h.serve(_req("db.example.com.", "MX"), nxt).plugin == "hosts"  # NODATA stays
    h = _handler(tmp_path, "        fallthrough sub.example.com\n", args="hosts hosts")
    assert h.serve(_req("x.sub.example.com."), nxt).plugin == "next"
    assert h.serve(_req("nope.example.com."), nxt).msg.header.rcode == RCODE.NXDOMAIN
    assert nxt.calls == ["nope.example.com.", "x.sub.example.com."]


def test_fallthrough_unsupported(tmp_path: Path) -> None:
    h = _handler(tmp_path, "        fallthrough\n        fallthrough_unsupported\n", args="hosts hosts")
    nxt = Next()
    assert h.serve(_req("db.example.com.", "TXT"), nxt).plugin == "next"
    # A/AAAA are supported types: a missing family is still NODATA
    r = h.serve(_req("v6only.example.com.", "A"), nxt)
    assert r.plugin == "hosts" and not r.msg.rr


def test_ptr_generated_for_both_families(tmp_path: Path) -> None:
    h = _handler(tmp_path, args="hosts hosts")
    nxt = Next()
    r = h.serve(_req("10.2.0.192.in-addr.arpa.", "PTR"), nxt)
    assert _rdata(r) == ["gateway.example.com.", "gw.example.com."]
    assert r.msg.header.aa == 1 and r.msg.rr[0].ttl == 3600
    v6 = "1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
    assert _rdata(h.serve(_req(v6, "PTR"), nxt)) == ["db.example.com."]
    # reverse zones need not be among the plugin's zones; an unknown address always passes on
    assert h.serve(_req("99.2.0.192.in-addr.arpa.", "PTR"), nxt).plugin == "next"
    # wildcards get no PTR
    assert h.serve(_req("100.2.0.192.in-addr.arpa.", "PTR"), nxt).plugin == "next"


def test_no_reverse(tmp_path: Path) -> None:
    h = _handler(tmp_path, "        no_reverse\n", args="hosts hosts")
    nxt = Next()
    assert h.serve(_req("10.2.0.192.in-addr.arpa.", "PTR"), nxt).plugin == "next"


def test_wildcard_matches_one_label_exact_entry_wins(tmp_path: Path) -> None:
    h = _handler(tmp_path, args="hosts hosts")
    nxt = Next()
    assert _rdata(h.serve(_req("web.apps.example.com."), nxt)) == ["192.0.2.100"]
    assert str(h.serve(_req("Web.apps.example.com."), nxt).msg.rr[0].rname) == "Web.apps.example.com."
    assert _rdata(h.serve(_req("exact.apps.example.com."), nxt)) == ["192.0.2.101"]
    assert h.serve(_req("apps.example.com."), nxt).msg.header.rcode == RCODE.NXDOMAIN
    assert h.serve(_req("deep.web.apps.example.com."), nxt).msg.header.rcode == RCODE.NXDOMAIN
    r = h.serve(_req("web.apps.example.com.", "TXT"), nxt)
    assert r.msg.header.rcode == RCODE.NOERROR and not r.msg.rr


def test_inline_entries_merge_with_the_file(tmp_path: Path) -> None:
    body = "        192.0.2.50 db.example.com inline.example.com\n        2001:db8::50 inline.example.com\n"
    h = _handler(tmp_path, body, args="hosts hosts")
    nxt = Next()
    assert _rdata(h.serve(_req("db.example.com."), nxt)) == ["192.0.2.11", "192.0.2.12", "192.0.2.50"]
    assert _rdata(h.serve(_req("inline.example.com.", "AAAA"), nxt)) == ["2001:db8::50"]
    assert _rdata(h.serve(_req("50.2.0.192.in-addr.arpa.", "PTR"), nxt)) == [
        "db.example.com.", "inline.example.com."]


def test_ttl_option_applies_to_every_record(tmp_path: Path) -> None:
    h = _handler(tmp_path, "        ttl 60\n", args="hosts hosts")
    nxt = Next()
    assert h.serve(_req("db.example.com."), nxt).msg.rr[0].ttl == 60
    assert h.serve(_req("10.2.0.192.in-addr.arpa.", "PTR"), nxt).msg.rr[0].ttl == 60


def test_answers_are_fast_and_depend_on_the_hosts_data(tmp_path: Path) -> None:
    h = _handler(tmp_path, args="hosts hosts")
    for req in (_req("db.example.com."), _req("nope.example.com."), _req("db.example.com.", "MX")):
        r = h.serve(req, Next())
        assert r.fast and r.deps == h.deps


def test_counters(tmp_path: Path) -> None:
    now = [1000.0]
    (tmp_path / "hosts").write_text(HOSTS)
    cfg = hsetup.HostsConfig(tmp_path / "hosts", ("example.com.",))
    h = HostsHandler(cfg, clock=lambda: now[0])
    # gateway, gw, db x3, v6only, linklocal, *.apps, exact.apps
    assert h.entries == 9
    assert h.reload_timestamp == 1000.0


# -- setup ---------------------------------------------------------------------------------------


def _setup_error(tmp_path: Path, text: str) -> str:
    (tmp_path / "hosts").write_text(HOSTS)
    block = parse_corefile(text, "Corefile")[0]
    with pytest.raises(ConfigError) as info:
        hsetup.setup(block.directives[0], SetupContext(block.keys, tmp_path))
    return str(info.value)


def test_defaults(tmp_path: Path) -> None:
    block = parse_corefile("example.com example.net {\n    hosts\n}\n", "Corefile")[0]
    cfg = hsetup.parse_config(block.directives[0], SetupContext(block.keys, tmp_path))
    assert cfg.path == Path("/etc/hosts")
    assert cfg.zones == ("example.com.", "example.net.")
    assert (cfg.ttl, cfg.reverse, cfg.reload, cfg.fallthrough) == (3600, True, 5.0, None)
    assert not cfg.fallthrough_unsupported and cfg.inline == ()


def test_every_option(tmp_path: Path) -> None:
    text = ("example.com {\n    hosts hosts example.com 10.0.0.0/8 {\n        ttl 65535\n"
            "        no_reverse\n        reload 0\n        fallthrough example.com\n"
            "        fallthrough_unsupported\n        10.1.2.3 a.example.com\n    }\n}\n")
    block = parse_corefile(text, "Corefile")[0]
    cfg = hsetup.parse_config(block.directives[0], SetupContext(block.keys, tmp_path))
    assert cfg.path == tmp_path / "hosts"  # relative to the Corefile's directory
    assert cfg.zones == ("example.com.", "10.in-addr.arpa.")
    assert (cfg.ttl, cfg.reverse, cfg.reload) == (65535, False, 0.0)
    assert cfg.fallthrough == ("example.com.",) and cfg.fallthrough_unsupported
    assert cfg.inline == (hsetup.Entry("10.1.2.3", ("a.example.com.",)),)


@pytest.mark.parametrize(("line", "expected"), [
    ("ttl 0", "Corefile:3:13: hosts: ttl must be in [1, 65535], got 0"),
    ("ttl 65536", "Corefile:3:13: hosts: ttl must be in [1, 65535], got 65536"),
    ("ttl abc", "Corefile:3:13: hosts: ttl needs a number of seconds, got 'abc'"),
    ("ttl", "Corefile:3:9: hosts: ttl needs a number of seconds"),
    ("reload 5", "Corefile:3:16: hosts: invalid duration '5' (use e.g. 500ms, 5s, 1m)"),
    ("reload", "Corefile:3:9: hosts: reload needs a duration (zero to disable)"),
    ("no_reverse yes", "Corefile:3:20: hosts: no_reverse takes no arguments"),
    ("bogus 1", "Corefile:3:9: hosts: unknown property 'bogus'"),
    ("10.0.0.1", "Corefile:3:9: hosts: inline entry '10.0.0.1' needs at least one host name"),
    ("10.0.0.1 bad..name", "Corefile:3:18: hosts: invalid host name 'bad..name'"),
    ("10.0.0.1 a.*.example.com", "Corefile:3:18: hosts: invalid host name 'a.*.example.com'"),
    ("fallthrough_unsupported", "Corefile:3:9: hosts: fallthrough_unsupported requires fallthrough"),
    ("fallthrough 10.0.0.0/33", "Corefile:3:21: hosts: invalid CIDR '10.0.0.0/33'"),
])
def test_option_errors_are_located(tmp_path: Path, line: str, expected: str) -> None:
    msg = _setup_error(tmp_path, f"example.com {{\n    hosts hosts {{\n        {line}\n    }}\n}}\n")
    assert msg.startswith(expected), msg


def test_bad_zone_argument(tmp_path: Path) -> None:
    msg = _setup_error(tmp_path, "example.com {\n    hosts hosts exa..mple.com\n}\n")
    assert msg == "Corefile:2:17: hosts: invalid zone 'exa..mple.com'"


def test_missing_file_is_a_warning_and_inline_still_serves(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "kdns.hosts"):
        h = _handler(tmp_path, "        192.0.2.1 only.example.com\n", args="hosts missing", hosts=None)
    assert "file does not exist" in caplog.text and "Corefile:2:11" in caplog.text
    assert _rdata(h.serve(_req("only.example.com."), Next())) == ["192.0.2.1"]


def test_unreadable_path_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    bad = tmp_path / "dir" / "hosts"
    bad.write_text("")
    os.chmod(tmp_path / "dir", 0)
    try:
        if os.access(bad, os.R_OK):
            pytest.skip("running as root: permissions are not enforced")
        msg = _setup_error(tmp_path, f"example.com {{\n    hosts {bad}\n}}\n")
        assert msg.startswith("Corefile:2:11: hosts: unable to access hosts file")
    finally:
        os.chmod(tmp_path / "dir", 0o755)


def test_registered_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.IMPLEMENTED, "hosts", "kdns.plugins.hosts.setup")
    func = registry.setup_func("hosts")
    assert func is hsetup.setup


def test_readme_corefiles_parse_and_set_up(tmp_path: Path) -> None:
    blocks = re.findall(r"```corefile\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    (tmp_path / "example.hosts").write_text("192.0.2.1 www.example.org\n")
    for text in blocks:
        for block in parse_corefile(text, "README.md", env={}):
            for d in block.directives:
                if d.name.text == "hosts":
                    assert isinstance(hsetup.setup(d, SetupContext(block.keys, tmp_path)), HostsHandler)


# -- reload --------------------------------------------------------------------------------------


def _poll(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_reload_picks_up_changes_and_bumps_generation(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    h = _handler(tmp_path, "        reload 50ms\n", args="hosts hosts")
    h.start()
    try:
        before = GENERATION.value
        stamp = h.reload_timestamp
        (tmp_path / "hosts").write_text("192.0.2.77 db.example.com new.example.com\n")
        with caplog.at_level(logging.INFO, "kdns.hosts"):
            assert _poll(lambda: _rdata(h.serve(_req("new.example.com."), Next())) == ["192.0.2.77"])
        assert _rdata(h.serve(_req("db.example.com."), Next())) == ["192.0.2.77"]
        assert GENERATION.value > before and h.reload_timestamp >= stamp
        assert GENERATION.since(before)[1] == frozenset(h.deps)  # only this data changed
        assert h.entries == 2
        assert _poll(lambda: "reloaded" in caplog.text)
    finally:
        h.stop()
    assert h._poller._thread is None


def test_vanished_file_keeps_data_with_one_warning(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    h = _handler(tmp_path, "        reload 0\n", args="hosts hosts")
    (tmp_path / "hosts").unlink()
    with caplog.at_level(logging.WARNING, "kdns.hosts"):
        assert h.reload() is False
        assert h.reload() is False
    assert caplog.text.count("cannot read") == 1
    assert _rdata(h.serve(_req("db.example.com."), Next())) == ["192.0.2.11", "192.0.2.12"]
    (tmp_path / "hosts").write_text("192.0.2.88 back.example.com\n")
    assert h.reload() is True
    assert _rdata(h.serve(_req("back.example.com."), Next())) == ["192.0.2.88"]


def test_unchanged_file_is_not_reparsed(tmp_path: Path) -> None:
    h = _handler(tmp_path, "        reload 0\n", args="hosts hosts")
    before = GENERATION.value
    assert h.reload() is False
    assert GENERATION.value == before


def test_reload_zero_starts_no_thread(tmp_path: Path) -> None:
    h = _handler(tmp_path, "        reload 0\n", args="hosts hosts")
    h.start()
    assert h._poller._thread is None
    h.stop()
