"""forward setup: the directive's syntax, defaults, resolv.conf files, the self-loop guard and
located errors (``file:line:col``)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from dnslib import RCODE

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.plugins.forward.handler import ForwardHandler
from kdns.plugins.forward.setup import (
    ForwardConfig,
    UpstreamAddr,
    parse_config,
    parse_hostport,
    parse_resolv_conf,
    setup,
)
from kdns.plugins.setup_context import SetupContext

README = Path(__file__).resolve().parents[2] / "kdns" / "plugins" / "forward" / "README.md"


def config(body: str, tmp_path: Path, *, key: str = ".:53", **process: Any) -> ForwardConfig:
    """Parse ``key { <body> }`` and run forward's parse on its forward directive.

    The directive is always on line 2, column 3 of the Corefile."""
    text = f"{key} {{\n  {body}\n}}\n"
    block = parse_corefile(text, "Corefile")[0]
    d = next(d for d in block.directives if d.name.text == "forward")
    return parse_config(d, SetupContext(block.keys, tmp_path, process=dict(process)))


def fails(body: str, tmp_path: Path, **kw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        config(body, tmp_path, **kw)
    return str(info.value)


def labels(cfg: ForwardConfig) -> list[str]:
    return [u.label for u in cfg.upstreams]


# -- valid -----------------------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    cfg = config("forward . 10.0.0.1", tmp_path)
    assert cfg == ForwardConfig(".", (UpstreamAddr("10.0.0.1", 53),))
    assert (cfg.policy, cfg.max_fails, cfg.expire, cfg.health_check, cfg.max_concurrent) == (
        "random", 2, 10.0, 0.5, 0)
    assert cfg.hc_domain == "." and cfg.hc_recursion_desired


def test_every_option(tmp_path: Path) -> None:
    cfg = config("""forward Example.ORG 10.0.0.1 {
    except Internal.example.org lab.example.org.
    force_tcp
    prefer_udp
    expire 30s
    max_idle_conns 8
    max_fails 5
    max_connect_attempts 3
    health_check 2s no_rec domain Probe.Example.
    policy round_robin
    max_concurrent 1000
    next NXDOMAIN
    failover servfail REFUSED
    failfast_all_unhealthy_upstreams
  }""", tmp_path)
    assert cfg == ForwardConfig(
        "example.org.", (UpstreamAddr("10.0.0.1", 53),),
        except_zones=("internal.example.org.", "lab.example.org."), force_tcp=True,
        prefer_udp=True, expire=30.0, max_idle_conns=8, max_fails=5, max_connect_attempts=3,
        health_check=2.0, hc_recursion_desired=False, hc_domain="probe.example.",
        policy="round_robin", max_concurrent=1000, next_rcodes=(RCODE.NXDOMAIN,),
        failover_rcodes=(RCODE.SERVFAIL, RCODE.REFUSED), failfast_all_unhealthy_upstreams=True)


@pytest.mark.parametrize(("to", "label"), [
    ("10.0.0.1", "10.0.0.1:53"),
    ("10.0.0.1:1053", "10.0.0.1:1053"),
    ("dns://10.0.0.2", "10.0.0.2:53"),
    ("dns://10.0.0.2:5353", "10.0.0.2:5353"),
    ("2001:db8::1", "[2001:db8::1]:53"),
    ("[2001:db8::1]", "[2001:db8::1]:53"),
    ("[2001:db8::1]:5353", "[2001:db8::1]:5353"),
    ("dns://[::1]:5353", "[::1]:5353"),
])
def test_upstream_forms(to: str, label: str, tmp_path: Path) -> None:
    assert labels(config(f"forward . {to}", tmp_path)) == [label]


def test_several_upstreams_keep_their_order(tmp_path: Path) -> None:
    cfg = config("forward . 10.0.0.10:53 10.0.0.11:1053 [2003::1]:53", tmp_path)
    assert labels(cfg) == ["10.0.0.10:53", "10.0.0.11:1053", "[2003::1]:53"]


def test_from_cidr_uses_the_first_reverse_zone(tmp_path: Path) -> None:
    assert config("forward 10.0.0.0/8 10.0.0.1", tmp_path).from_zone == "10.in-addr.arpa."


def test_matches(tmp_path: Path) -> None:
    cfg = config("forward example.org 10.0.0.1 {\n    except lab.example.org\n  }", tmp_path)
    assert cfg.matches("example.org.")
    assert cfg.matches("www.example.org.")
    assert not cfg.matches("x.lab.example.org.")
    assert not cfg.matches("lab.example.org.")
    assert not cfg.matches("example.com.")
    assert not cfg.matches("badexample.org.")


def test_resolv_conf_file(tmp_path: Path) -> None:
    (tmp_path / "resolv.conf").write_text(
        "# generated\nsearch default.svc.cluster.local svc.cluster.local\n"
        "nameserver 10.96.0.10   # kube-dns\nnameserver 2001:db8::53\n"
        "nameserver not-an-ip\noptions ndots:5\n;nameserver 10.9.9.9\n")
    cfg = config("forward . resolv.conf 10.0.0.5:1053", tmp_path)
    assert labels(cfg) == ["10.96.0.10:53", "[2001:db8::53]:53", "10.0.0.5:1053"]
    abs_cfg = config(f"forward . {tmp_path / 'resolv.conf'}", tmp_path)
    assert labels(abs_cfg) == ["10.96.0.10:53", "[2001:db8::53]:53"]


def test_parse_resolv_conf_and_hostport() -> None:
    assert parse_resolv_conf("nameserver 1.1.1.1\n  nameserver\tfe80::1%eth0\nnameserver\n") == [
        "1.1.1.1", "fe80::1%eth0"]
    assert parse_hostport("[::1]:53") == ("::1", 53)
    with pytest.raises(ValueError, match=r"must be 1\.\.65535"):
        parse_hostport("1.2.3.4:0")


def test_setup_builds_and_publishes_the_handler(tmp_path: Path) -> None:
    block = parse_corefile(".:53 {\n  forward . 10.0.0.1\n}\n", "Corefile")[0]
    ctx = SetupContext(block.keys, tmp_path)
    handler = setup(block.directives[0], ctx)
    assert isinstance(handler, ForwardHandler)
    assert ctx.shared["forward"] is handler
    assert [u.label for u in handler.upstreams] == ["10.0.0.1:53"]
    handler.stop()


def test_next_rcodes(tmp_path: Path) -> None:
    cfg = config("forward . 10.0.0.1 {\n    next NXDOMAIN SERVFAIL\n  }", tmp_path)
    assert cfg.next_rcodes == (RCODE.NXDOMAIN, RCODE.SERVFAIL)


def test_tls_and_hostname_upstreams(tmp_path: Path) -> None:
    cfg = config("forward . tls://127.0.0.1 tls://[::1]:8853 localhost:5300 {\n"
                 "    tls_servername dns.test.\n  }", tmp_path)
    assert [(u.host, u.port, u.transport, u.hostname) for u in cfg.upstreams][:3] == [
        ("127.0.0.1", 853, "tls", None), ("::1", 8853, "tls", None),
        ("127.0.0.1", 5300, "dns", "localhost")]
    assert cfg.tls_servername == "dns.test"
    assert cfg.tls_context is not None  # system CAs: the default context
    src = config("forward . 127.0.0.1 {\n    source_address 127.0.0.1\n  }", tmp_path)
    assert src.source_address == "127.0.0.1" and src.tls_context is None


# -- the self-loop guard ---------------------------------------------------------------------------


def test_resolv_conf_pointing_at_kdns_itself_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    msg = fails("forward . resolv.conf", tmp_path)
    assert msg.startswith("Corefile:2:13: forward: every nameserver in 'resolv.conf' "
                          "(127.0.0.1:53) is this kdns server's own listener")


def test_self_entries_are_dropped_with_a_warning(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "resolv.conf").write_text(
        "nameserver 127.0.0.53\nnameserver 192.0.2.1\nnameserver 127.0.0.1\n")
    with caplog.at_level(logging.WARNING, logger="kdns.forward"):
        cfg = config("forward . resolv.conf", tmp_path)
    assert labels(cfg) == ["192.0.2.1:53"]
    assert caplog.text.count("forwarding to it would loop") == 2
    assert "127.0.0.53:53" in caplog.text


def test_local_resolver_on_another_port_is_kept(tmp_path: Path) -> None:
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.53\n")
    # kdns on 1053 does not answer 127.0.0.53:53, so systemd-resolved there is a real upstream.
    assert labels(config("forward . resolv.conf", tmp_path, key=".:1053")) == ["127.0.0.53:53"]
    # The --dns-port flag moves a port-53 key too, when the server tells setup about it.
    assert labels(config("forward . resolv.conf", tmp_path, dns_port=1053)) == ["127.0.0.53:53"]
    # Bound to one address, kdns only shadows that address.
    assert labels(config("forward . resolv.conf", tmp_path, dns_addr="127.0.0.2")) == [
        "127.0.0.53:53"]
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.2\n")
    assert "own listener" in fails("forward . resolv.conf", tmp_path, dns_addr="127.0.0.2")


def test_explicit_addresses_are_not_second_guessed(tmp_path: Path) -> None:
    assert labels(config("forward . 127.0.0.1", tmp_path)) == ["127.0.0.1:53"]


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "expected"), [
    ("forward", "Corefile:2:3: forward: needs FROM and at least one TO"),
    ("forward .", "Corefile:2:3: forward: needs FROM and at least one TO"),
    ("forward . 10.0.0.1:99999",
     "Corefile:2:13: forward: invalid port '99999' in '10.0.0.1:99999': must be 1..65535"),
    ("forward . 300.1.1.1",
     "Corefile:2:13: forward: not an IP address, host name or file: '300.1.1.1'"),
    ("forward . -dns-.example", "Corefile:2:13: forward: not an IP address, host name or file"),
    ("forward . localhost:0", "Corefile:2:13: forward: invalid port '0' in 'localhost:0'"),
    ("forward . dns://10.0.0.1:0", "Corefile:2:13: forward: invalid port '0'"),
    ("forward . dns://10.0.0.1:65536", "Corefile:2:13: forward: invalid port '65536'"),
    ("forward . dns://dns_ex$ample", "Corefile:2:13: forward: not an IP address, host name"),
    ("forward . [::1", "Corefile:2:13: forward: missing ']' in '[::1'"),
    ("forward . [::1]x", "Corefile:2:13: forward: unexpected 'x' after ']'"),
    ("forward . tls://127.0.0.1 {\n    tls /nonexistent/ca.pem\n  }",
     "Corefile:3:5: forward: tls: cannot load /nonexistent/ca.pem"),
    ("forward . tls://127.0.0.1 {\n    tls a b c d\n  }",
     "Corefile:3:15: forward: tls takes at most CERT KEY CA"),
    ("forward . 10.0.0.1 {\n    tls_servername\n  }",
     "Corefile:3:5: forward: tls_servername needs one NAME"),
    ("forward . 127.0.0.1 {\n    source_address nowhere\n  }",
     "Corefile:3:20: forward: source_address: not an IP address: 'nowhere'"),
    ("forward . 127.0.0.1 {\n    source_address 192.0.2.77\n  }",
     "Corefile:3:20: forward: source_address: 192.0.2.77 is not an address of this host"),
    ("forward . 127.0.0.1 {\n    source_address ::1\n  }",
     "Corefile:3:20: forward: source_address: ::1 is IPv6, every upstream must be"),
    ("forward . https://9.9.9.9",
     "Corefile:2:13: forward: https:// upstreams are not supported by kdns yet"),
    ("forward . udp://9.9.9.9",
     "Corefile:2:13: forward: 'udp' is not supported as a destination protocol"),
    ("forward . /nonexistent/resolv.conf",
     "Corefile:2:13: forward: cannot read resolv.conf file '/nonexistent/resolv.conf'"),
    ("forward bad..zone 10.0.0.1", "Corefile:2:11: forward: invalid zone 'bad..zone'"),
    ("forward . 10.0.0.1 {\n    bogus 1\n  }", "Corefile:3:5: forward: unknown property 'bogus'"),
    ("forward . 10.0.0.1 {\n    max_fails x\n  }",
     "Corefile:3:15: forward: max_fails: not a non-negative integer: 'x'"),
    ("forward . 10.0.0.1 {\n    max_fails\n  }", "Corefile:3:5: forward: max_fails needs one"),
    ("forward . 10.0.0.1 {\n    max_concurrent -1\n  }",
     "Corefile:3:20: forward: max_concurrent: not a non-negative integer: '-1'"),
    ("forward . 10.0.0.1 {\n    policy fastest\n  }",
     "Corefile:3:12: forward: unknown policy 'fastest'"),
    ("forward . 10.0.0.1 {\n    policy\n  }", "Corefile:3:5: forward: policy needs one of"),
    ("forward . 10.0.0.1 {\n    expire 10\n  }",
     "Corefile:3:12: forward: expire: invalid duration '10'"),
    ("forward . 10.0.0.1 {\n    health_check\n  }",
     "Corefile:3:5: forward: health_check needs a DURATION"),
    ("forward . 10.0.0.1 {\n    health_check 1s bogus\n  }",
     "Corefile:3:21: forward: health_check: unknown option 'bogus'"),
    ("forward . 10.0.0.1 {\n    health_check 1s domain\n  }",
     "Corefile:3:21: forward: health_check: domain needs an FQDN"),
    ("forward . 10.0.0.1 {\n    force_tcp yes\n  }",
     "Corefile:3:15: forward: force_tcp takes no arguments"),
    ("forward . 10.0.0.1 {\n    except\n  }", "Corefile:3:5: forward: except needs at least"),
    ("forward . 10.0.0.1 {\n    failover NOERROR\n  }",
     "Corefile:3:14: forward: failover: NOERROR cannot be used"),
    ("forward . 10.0.0.1 {\n    failover BOGUS\n  }",
     "Corefile:3:14: forward: unknown rcode 'BOGUS'"),
    ("forward . 10.0.0.1 {\n    next\n  }", "Corefile:3:5: forward: next needs at least one"),
])
def test_errors(body: str, expected: str, tmp_path: Path) -> None:
    assert fails(body, tmp_path).startswith(expected)


def test_at_most_15_upstreams(tmp_path: Path) -> None:
    ups = " ".join(f"10.0.0.{i}" for i in range(1, 17))
    msg = fails(f"forward . {ups}", tmp_path)
    col = 3 + len("forward . ") + len(" ".join(f"10.0.0.{i}" for i in range(1, 16))) + 1
    assert msg == f"Corefile:2:{col}: forward: more than 15 upstreams configured"
    config(f"forward . {' '.join(f'10.0.0.{i}' for i in range(1, 16))}", tmp_path)


def test_resolv_conf_without_nameservers(tmp_path: Path) -> None:
    (tmp_path / "empty.conf").write_text("search example.org\n")
    assert fails("forward . empty.conf", tmp_path) == (
        "Corefile:2:13: forward: no nameservers found in 'empty.conf'")


def test_readme_examples_parse_and_set_up(tmp_path: Path) -> None:
    blocks = re.findall(r"```corefile\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 4
    for text in blocks:
        for block in parse_corefile(text, "README.md", env={}):
            for d in block.directives:
                if d.name.text == "forward" and "/etc/resolv.conf" not in [a.text for a in d.args]:
                    parse_config(d, SetupContext(block.keys, tmp_path))
