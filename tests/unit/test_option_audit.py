"""Every option a plugin accepts changes what it does, or is a documented no-op that logs.

For each plugin with options, a table row per option: the directive with the option set, what
it changes in the built plugin (compared with the same directive without it), and the name of
the setting the running code reads. The audit then checks three things:

* the option changes the built plugin's setting (it is not parsed and dropped);
* some code other than the parser reads that setting (``.name`` outside an assignment): the
  fault this guards against is an option parsed into a config field that nothing reads;
* the table covers every option the plugin's README lists in its Syntax section, so a new
  option cannot slip in untested.

Documented no-ops (``file``'s ``reload_by_mtime``, ``forward``'s ``next``, the ``kubernetes``
``apiserver_*`` options with ``manifests``) must log a line saying so. Whether each setting
then does the right thing is shown by the plugin's own behaviour tests; this table is the
completeness check across them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kdns.config.parser import parse_corefile
from kdns.plugins import registry
from kdns.plugins.setup_context import SetupContext

ROOT = Path(__file__).resolve().parents[2]
KDNS = ROOT / "kdns"

ZONE = """\
$ORIGIN example.org.
@ 3600 IN SOA ns.example.org. admin.example.org. 1 7200 3600 1209600 3600
@ 3600 IN NS ns.example.org.
ns 3600 IN A 192.0.2.1
"""


@dataclass(frozen=True)
class Row:
    plugin: str
    option: str
    """The option's name as the README's Syntax lists it."""
    line: str
    """The directive with the option (``{base}`` stands for the directive's head)."""
    probe: Callable[[Any], Any]
    """What the option sets in the built handler."""
    reads: str | None
    """The attribute the running code reads; None for a documented no-op."""
    logs: str | None = None
    """For a no-op: text the setup's log line must contain."""


BASE = {
    "cache": "cache",
    "errors": "errors",
    "file": "file db.example.org example.org",
    "forward": "forward . 127.0.0.1:5399",
    "health": "health 127.0.0.1:8080",
    "hosts": "hosts hosts.txt example.org",
    "kubernetes": "kubernetes cluster.local",
    "limits": "limits",
    "log": "log",
    "timeouts": "timeouts",
}
"""Each plugin's directive head without options."""


def cfg(attr: str) -> Callable[[Any], Any]:
    return lambda h: getattr(h.cfg, attr)


def limit(key: str) -> Callable[[Any], Any]:
    return lambda h: h.listener_limits.get(key)


def block(plugin: str, *lines: str) -> str:
    body = "".join(f"        {ln}\n" for ln in lines)
    return f"{BASE[plugin]} {{\n{body}    }}"


ROWS = [
    # cache
    Row("cache", "success", block("cache", "success 2048 60 1"), cfg("success_capacity"),
        "success_capacity"),
    Row("cache", "denial", block("cache", "denial 2048 60 1"), cfg("denial_ttl"), "denial_ttl"),
    Row("cache", "prefetch", block("cache", "prefetch 3 2m 20%"), cfg("prefetch"), "prefetch"),
    Row("cache", "serve_stale", block("cache", "serve_stale 10m verify"), cfg("stale"), "stale"),
    Row("cache", "servfail", block("cache", "servfail 2s"), cfg("servfail"), "servfail"),
    Row("cache", "disable", block("cache", "disable success example.org"),
        cfg("disable_success"), "disable_success"),
    Row("cache", "keepttl", block("cache", "keepttl"), cfg("keepttl"), "keepttl"),
    # errors
    Row("errors", "consolidate", block("errors", 'consolidate 5m "timeout$" warning'),
        cfg("consolidate"), "consolidate"),
    Row("errors", "stacktrace", block("errors", "stacktrace"), cfg("stacktrace"), "stacktrace"),
    # file
    Row("file", "reload", block("file", "reload 5s"), cfg("reload"), "reload"),
    Row("file", "fallthrough", block("file", "fallthrough"), cfg("fallthrough"), "fallthrough"),
    Row("file", "reload_by_mtime", block("file", "reload_by_mtime"), cfg("reload"), None,
        "reload_by_mtime has no effect"),
    # forward
    Row("forward", "except", block("forward", "except example.org"), cfg("except_zones"),
        "except_zones"),
    Row("forward", "force_tcp", block("forward", "force_tcp"), cfg("force_tcp"), "force_tcp"),
    Row("forward", "prefer_udp", block("forward", "prefer_udp"), cfg("prefer_udp"),
        "prefer_udp"),
    Row("forward", "expire", block("forward", "expire 30s"), cfg("expire"), "expire"),
    Row("forward", "max_idle_conns", block("forward", "max_idle_conns 4"),
        cfg("max_idle_conns"), "max_idle_conns"),
    Row("forward", "max_fails", block("forward", "max_fails 5"), cfg("max_fails"), "max_fails"),
    Row("forward", "max_connect_attempts", block("forward", "max_connect_attempts 3"),
        cfg("max_connect_attempts"), "max_connect_attempts"),
    Row("forward", "health_check", block("forward", "health_check 2s no_rec domain x.org"),
        lambda h: (h.cfg.health_check, h.cfg.hc_recursion_desired, h.cfg.hc_domain),
        "hc_domain"),
    Row("forward", "policy", block("forward", "policy sequential"), cfg("policy"), "policy"),
    Row("forward", "max_concurrent", block("forward", "max_concurrent 1000"),
        cfg("max_concurrent"), "max_concurrent"),
    Row("forward", "failover", block("forward", "failover SERVFAIL"), cfg("failover_rcodes"),
        "failover_rcodes"),
    Row("forward", "next", block("forward", "next NXDOMAIN"), cfg("next_rcodes"), None,
        "'next' has no effect"),
    Row("forward", "failfast_all_unhealthy_upstreams",
        block("forward", "failfast_all_unhealthy_upstreams"),
        cfg("failfast_all_unhealthy_upstreams"), "failfast_all_unhealthy_upstreams"),
    # health
    Row("health", "lameduck", block("health", "lameduck 5s"), lambda h: h.lameduck,
        "lameduck"),
    # hosts
    Row("hosts", "ttl", block("hosts", "ttl 60"), cfg("ttl"), "ttl"),
    Row("hosts", "no_reverse", block("hosts", "no_reverse"), cfg("reverse"), "reverse"),
    Row("hosts", "reload", block("hosts", "reload 0"), cfg("reload"), "reload"),
    Row("hosts", "fallthrough", block("hosts", "fallthrough"), cfg("fallthrough"),
        "fallthrough"),
    Row("hosts", "fallthrough_unsupported",
        block("hosts", "fallthrough", "fallthrough_unsupported"),
        cfg("fallthrough_unsupported"), "fallthrough_unsupported"),
    # kubernetes
    Row("kubernetes", "endpoint", block("kubernetes", "endpoint http://127.0.0.1:1"),
        cfg("endpoint"), "endpoint"),
    Row("kubernetes", "tls", block("kubernetes", "endpoint https://127.0.0.1:1",
                                   "tls c.pem k.pem ca.pem"), cfg("tls"), "tls"),
    Row("kubernetes", "kubeconfig", block("kubernetes", "kubeconfig kc.yaml ctx"),
        cfg("kubeconfig"), "kubeconfig"),
    Row("kubernetes", "manifests", block("kubernetes", "manifests objects"), cfg("manifests"),
        "manifests"),
    Row("kubernetes", "namespaces", block("kubernetes", "namespaces default"),
        cfg("namespaces"), "namespaces"),
    Row("kubernetes", "namespace_labels", block("kubernetes", "namespace_labels team=dns"),
        lambda h: h.cfg.resource_specs(), "namespace_labels"),
    Row("kubernetes", "labels", block("kubernetes", "labels app=web"),
        lambda h: h.cfg.resource_specs(), "labels"),
    Row("kubernetes", "pods", block("kubernetes", "pods verified"), cfg("kinds"), "pods"),
    Row("kubernetes", "endpoint_pod_names", block("kubernetes", "endpoint_pod_names"),
        cfg("endpoint_pod_names"), "endpoint_pod_names"),
    Row("kubernetes", "ttl", block("kubernetes", "ttl 30"), cfg("ttl"), "ttl"),
    Row("kubernetes", "noendpoints", block("kubernetes", "noendpoints"), cfg("kinds"), "kinds"),
    Row("kubernetes", "fallthrough", block("kubernetes", "fallthrough"), cfg("fallthrough"),
        "fallthrough"),
    Row("kubernetes", "ignore", block("kubernetes", "ignore empty_service"),
        cfg("ignore_empty_service"), "ignore_empty_service"),
    Row("kubernetes", "startup_timeout", block("kubernetes", "startup_timeout 1s"),
        cfg("startup_timeout"), "startup_timeout"),
    Row("kubernetes", "apiserver_qps", block("kubernetes", "apiserver_qps 20"),
        cfg("apiserver_qps"), "apiserver_qps"),
    Row("kubernetes", "apiserver_burst", block("kubernetes", "apiserver_burst 20"),
        cfg("apiserver_burst"), "apiserver_burst"),
    Row("kubernetes", "apiserver_max_inflight", block("kubernetes", "apiserver_max_inflight 2"),
        cfg("apiserver_max_inflight"), "apiserver_max_inflight"),
    # limits and timeouts (they only carry listener settings; baseline: the server defaults)
    *(Row("limits", key, block("limits", f"{key} 7"), limit(key), key)
      for key in ("tcp_connections", "tcp_queries", "udp_queue", "udp_workers")),
    *(Row("timeouts", word, block("timeouts", f"{word} 7s"), limit(f"tcp_{word}"),
          f"tcp_{word}") for word in ("read", "write", "idle")),
    # log
    Row("log", "class", block("log", "class denial"), cfg("classes"), "classes"),
]

NO_OPS_WITH_MANIFESTS = [
    Row("kubernetes", opt, block("kubernetes", "manifests objects", f"{opt} 3"),
        cfg(opt), None, f"{opt} has no effect with manifests")
    for opt in ("apiserver_qps", "apiserver_burst", "apiserver_max_inflight")
]


@pytest.fixture
def setup_dir(tmp_path: Path) -> Path:
    (tmp_path / "db.example.org").write_text(ZONE)
    (tmp_path / "hosts.txt").write_text("192.0.2.10 www.example.org\n")
    (tmp_path / "objects").mkdir()
    return tmp_path


def build(line: str, where: Path) -> Any:
    blk = parse_corefile(f"example.org:53 {{\n    {line}\n}}\n", str(where / "Corefile"))[0]
    d = blk.directives[0]
    func = registry.setup_func(d.name.text)
    if func is None:  # a plugin the registry does not list yet: its setup module directly
        import importlib

        func = importlib.import_module(f"kdns.plugins.{d.name.text}.setup").setup
    return func(d, SetupContext(blk.keys, where, process={}))


def _baseline(plugin: str, where: Path) -> Any:
    if plugin in ("limits", "timeouts"):
        return type("Defaults", (), {"listener_limits": {}})()
    return build(BASE[plugin], where)


@pytest.mark.parametrize("row", ROWS + NO_OPS_WITH_MANIFESTS,
                         ids=[f"{r.plugin}-{r.option}" for r in ROWS]
                         + [f"manifests-{r.option}" for r in NO_OPS_WITH_MANIFESTS])
def test_option_changes_the_plugin_or_logs_that_it_does_not(
        row: Row, setup_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="kdns"):
        handler = build(row.line, setup_dir)
    if row.reads is None:
        assert row.logs is not None and row.logs in caplog.text
        return
    baseline = _baseline(row.plugin, setup_dir)
    assert row.probe(handler) != row.probe(baseline)


def _sources() -> str:
    return "\n".join(p.read_text() for p in KDNS.rglob("*.py"))


SOURCES = _sources()


@pytest.mark.parametrize("row", [r for r in ROWS if r.reads],
                         ids=[f"{r.plugin}-{r.option}" for r in ROWS if r.reads])
def test_the_setting_is_read_by_running_code(row: Row) -> None:
    assert row.reads is not None
    # An attribute read: ``.name`` not followed by an assignment (``self.name = ...``).
    reads = re.findall(rf"\.{re.escape(row.reads)}\b(?!\s*=[^=])", SOURCES)
    assert reads, f"nothing reads .{row.reads}"


def documented_options(plugin: str) -> set[str]:
    """Option names in the README's Syntax section: the first word of the lines inside a
    ``{ ... }`` of its code blocks (placeholders in capitals are not options)."""
    text = (KDNS / "plugins" / plugin / "README.md").read_text()
    syntax = text.split("## Syntax", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for fence in re.findall(r"(?:~~~|```)[^\n]*\n(.*?)(?:~~~|```)", syntax, re.S):
        depth = 0
        for line in fence.splitlines():
            word = line.split()[0] if line.split() else ""
            if depth > 0 and re.fullmatch(r"[a-z_]+", word):
                names.add(word)
            depth += line.count("{") - line.count("}")
    return names


@pytest.mark.parametrize("plugin", sorted(BASE))
def test_the_table_covers_every_documented_option(plugin: str) -> None:
    tested = {r.option for r in ROWS if r.plugin == plugin}
    documented = documented_options(plugin)
    assert documented, f"no options found in {plugin}'s README Syntax"
    assert documented <= tested, f"untested: {sorted(documented - tested)}"


@pytest.mark.parametrize("plugin", sorted(p for p in registry.IMPLEMENTED if p not in BASE))
def test_plugins_without_options_document_none(plugin: str) -> None:
    # acl and rewrite have rule grammars, not options: their own tests cover each word.
    if plugin in ("acl", "rewrite"):
        pytest.skip("rule grammar, covered by test_acl.py / test_rewrite.py")
    assert documented_options(plugin) == set()
