"""Every option a plugin accepts changes what it does, or is a documented no-op that logs.

For each plugin with options, a table row per option: the directive with the option set, what
it changes in the built plugin (compared with the same directive without it), and the name of
the setting the running code reads. The audit then checks three things:

* the option changes the built plugin's setting (it is not parsed and dropped);
* some code other than the parser reads that setting (``.name`` outside an assignment): the
  fault this guards against is an option parsed into a config field that nothing reads;
* the table covers every option the plugin's README lists in its Syntax section, so a new
  option cannot slip in untested.

Documented no-ops (``file``'s ``reload_by_mtime``; ``forward``'s ``tls`` and
``tls_servername`` without a ``tls://`` upstream, and its ``prefer_udp`` with ``force_tcp``;
the ``kubernetes`` ``apiserver_*`` options with ``manifests``; ``template``'s deprecated
``upstream`` addresses; ``prometheus``'s ``client_ca`` with ``client_auth none``) must log a
line saying so. An option that only means something next to another (``loadbalance``'s
``reload`` with ``weighted``, ``prometheus``'s ``tls`` sub-options) or that is required
(``transfer``'s ``to``) is compared with a baseline directive of its own rather than the bare
head. Whether each setting then does the right thing is shown by the plugin's own behaviour
tests; this table is the completeness check across them.
"""

from __future__ import annotations

import logging
import re
import shutil
import ssl
import subprocess
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
    base: str | None = None
    """The directive without the option, when it is not ``BASE[plugin]``."""


BASE = {
    "bind": "bind 127.0.0.1 ::1",
    "cache": "cache",
    "dns64": "dns64",
    "errors": "errors",
    "file": "file db.example.org example.org",
    "forward": "forward . 127.0.0.1:5399",
    "header": "header",
    "health": "health 127.0.0.1:8080",
    "hosts": "hosts hosts.txt example.org",
    "k8s_external": "k8s_external example.org",
    "kubernetes": "kubernetes cluster.local",
    "limits": "limits",
    "loadbalance": "loadbalance",
    "local": "local",
    "log": "log",
    "metadata": "metadata",
    "prometheus": "prometheus 127.0.0.1:9153",
    "ready": "ready 127.0.0.1:8181",
    "template": "template IN A example.org",
    "timeouts": "timeouts",
    "transfer": "transfer example.org",
}
"""Each plugin's directive head without options."""


def cfg(attr: str) -> Callable[[Any], Any]:
    return lambda h: getattr(h.cfg, attr)


def limit(key: str) -> Callable[[Any], Any]:
    return lambda h: h.listener_limits.get(key)


def block(plugin: str, *lines: str, head: str | None = None) -> str:
    body = "".join(f"        {ln}\n" for ln in lines)
    return f"{head or BASE[plugin]} {{\n{body}    }}"


def rule(attr: str) -> Callable[[Any], Any]:
    """A setting of the first rule of a plugin that collects rules (template)."""
    return lambda h: getattr(h.cfg.rules[0], attr)


def route_tls(probe: Callable[[ssl.SSLContext], Any]) -> Callable[[Any], Any]:
    """A property of the TLS context prometheus serves ``/metrics`` with."""
    return lambda h: probe(h.routes[0].tls)


def trusts_test_ca(ctx: ssl.SSLContext) -> bool:
    return CA_NAME in str(ctx.get_ca_certs())


CA_NAME = "kdns option audit CA"
FWD_TLS = "forward . tls://127.0.0.1:5399"
K8S_MC = "kubernetes cluster.local clusterset.local"
ISOLATE = ("pods verified", "isolate {", "}")
WEIGHTED = "loadbalance weighted weights.txt"
MAP = ("map {{.Proto}} proto {", "    udp u")
PROM_TLS = ("tls cert.pem key.pem {", "    client_auth none", "}")
PROM_CA = ("tls cert.pem key.pem {", "    client_ca cert.pem", "}")


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
    Row("forward", "next", block("forward", "next NXDOMAIN"), cfg("next_rcodes"),
        "next_rcodes"),
    Row("forward", "failfast_all_unhealthy_upstreams",
        block("forward", "failfast_all_unhealthy_upstreams"),
        cfg("failfast_all_unhealthy_upstreams"), "failfast_all_unhealthy_upstreams"),
    Row("forward", "tls", block("forward", "tls cert.pem", head=FWD_TLS),
        lambda h: trusts_test_ca(h.cfg.tls_context), "tls_context", base=FWD_TLS),
    Row("forward", "tls_servername", block("forward", "tls_servername dns.example", head=FWD_TLS),
        cfg("tls_servername"), "tls_servername", base=FWD_TLS),
    Row("forward", "source_address", block("forward", "source_address 127.0.0.1"),
        cfg("source_address"), "source_address"),
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
    Row("kubernetes", "isolate", block("kubernetes", *ISOLATE),
        lambda h: h.cfg.isolate is not None, "isolate", base=block("kubernetes", "pods verified")),
    Row("kubernetes", "allow", block("kubernetes", *ISOLATE[:2], "    allow default", "}"),
        lambda h: h.cfg.isolate.allow, "isolate", base=block("kubernetes", *ISOLATE)),
    Row("kubernetes", "unknown", block("kubernetes", *ISOLATE[:2], "    unknown deny", "}"),
        lambda h: h.cfg.isolate.unknown_allow, "isolate", base=block("kubernetes", *ISOLATE)),
    Row("kubernetes", "multicluster", block("kubernetes", "multicluster clusterset.local",
                                            head=K8S_MC),
        cfg("multicluster"), "multicluster", base=K8S_MC),
    # limits and timeouts (they only carry listener settings; baseline: the server defaults)
    *(Row("limits", key, block("limits", f"{key} 7"), limit(key), key)
      for key in ("tcp_connections", "tcp_queries", "udp_queue", "udp_workers")),
    *(Row("timeouts", word, block("timeouts", f"{word} 7s"), limit(f"tcp_{word}"),
          f"tcp_{word}") for word in ("read", "write", "idle")),
    # log
    Row("log", "class", block("log", "class denial"), lambda h: [r.classes for r in h.rules],
        "classes"),
    Row("log", "minDuration", block("log", "minDuration 50ms"),
        lambda h: [r.min_duration for r in h.rules], "min_duration"),
    # header (a rule needs an action: each selector is compared with the other one)
    Row("header", "query", block("header", "query set rd"), lambda h: (h.query, h.response),
        "query", base=block("header", "response set rd")),
    Row("header", "response", block("header", "response set rd"),
        lambda h: (h.query, h.response), "response", base=block("header", "query set rd")),
    # bind (no handler: it sets the block's listen addresses)
    Row("bind", "except", block("bind", "except ::1"), lambda c: c.listen_hosts, "listen_hosts"),
    # dns64
    Row("dns64", "prefix", block("dns64", "prefix 2001:db8::/96"), cfg("prefix"), "prefix"),
    Row("dns64", "translate_all", block("dns64", "translate_all"), cfg("translate_all"),
        "translate_all"),
    Row("dns64", "allow_ipv4", block("dns64", "allow_ipv4"), cfg("allow_ipv4"), "allow_ipv4"),
    # k8s_external
    Row("k8s_external", "apex", block("k8s_external", "apex ns"), cfg("apex"), "apex"),
    Row("k8s_external", "ttl", block("k8s_external", "ttl 60"), cfg("ttl"), "ttl"),
    Row("k8s_external", "headless", block("k8s_external", "headless"), cfg("headless"),
        "headless"),
    Row("k8s_external", "fallthrough", block("k8s_external", "fallthrough"), cfg("fallthrough"),
        "fallthrough"),
    # loadbalance
    Row("loadbalance", "prefer", block("loadbalance", "prefer 10.0.0.0/8"), cfg("prefer"),
        "prefer"),
    Row("loadbalance", "reload", block("loadbalance", "reload 5s", head=WEIGHTED),
        lambda h: h.picker.reload, "reload", base=WEIGHTED),
    # local
    Row("local", "localhost_prefix", block("local", "localhost_prefix off"),
        lambda h: h.localhost_prefix, "localhost_prefix"),
    # metadata
    Row("metadata", "map", block("metadata", *MAP, "}"), cfg("map"), "map"),
    Row("metadata", "default", block("metadata", *MAP, "    default d", "}"),
        lambda h: h.cfg.map.rows, "rows", base=block("metadata", *MAP, "}")),
    Row("metadata", "default", block("metadata", *MAP, "    default REFUSED", "}"),
        lambda h: h.cfg.map.rcode_on_miss, "rcode_on_miss", base=block("metadata", *MAP, "}")),
    # prometheus
    Row("prometheus", "runtime_metrics", block("prometheus", "runtime_metrics"),
        lambda h: h._runtime is not None, "_runtime"),
    Row("prometheus", "tls", block("prometheus", *PROM_TLS), lambda h: h.routes[0].tls is None,
        "tls"),
    Row("prometheus", "client_ca", block("prometheus", *PROM_CA), route_tls(trusts_test_ca),
        "tls", base=block("prometheus", *PROM_TLS)),
    Row("prometheus", "min_version", block("prometheus", *PROM_TLS[:2], "    min_version 1.2",
                                           "}"),
        route_tls(lambda c: c.minimum_version), "tls", base=block("prometheus", *PROM_TLS)),
    Row("prometheus", "client_auth", block("prometheus", *PROM_CA[:2], "    client_auth verify",
                                           "}"),
        route_tls(lambda c: c.verify_mode), "tls", base=block("prometheus", *PROM_CA)),
    # ready
    Row("ready", "monitor", block("ready", "monitor continuously"), lambda h: h.monitor,
        "monitor"),
    # template
    Row("template", "match", block("template", "match ^www[.]"),
        lambda h: [r.pattern for r in h.cfg.rules[0].regex], "regex"),
    *(Row("template", section, block("template", f'{section} "{rr}"'),
          lambda h: [r.section for r in h.cfg.rules[0].records], "records")
      for section, rr in (("answer", "{{ .Name }} 60 IN A 192.0.2.1"),
                          ("additional", "ns.example.org. 60 IN A 192.0.2.1"),
                          ("authority", "example.org. 60 IN NS ns.example.org."))),
    Row("template", "rcode", block("template", "rcode NXDOMAIN"), rule("rcode"), "rcode"),
    Row("template", "ederror", block("template", "ederror 15 blocked"), rule("ede"), "ede"),
    Row("template", "fallthrough", block("template", "fallthrough"), rule("fallthrough"),
        "fallthrough"),
    Row("template", "upstream", block("template", "upstream"), rule("upstream"), "upstream"),
    # transfer ('to' is required: each row compares with another 'to')
    Row("transfer", "to", block("transfer", "to 192.0.2.2:5300"),
        lambda h: h.rules[0].targets, "targets", base=block("transfer", "to 192.0.2.1")),
    Row("transfer", "to", block("transfer", "to *"),
        lambda h: h.rules[0].anyone, "anyone", base=block("transfer", "to 192.0.2.1")),
]

NO_OPS_WITH_MANIFESTS = [
    Row("kubernetes", opt, block("kubernetes", "manifests objects", f"{opt} 3"),
        cfg(opt), None, f"{opt} has no effect with manifests")
    for opt in ("apiserver_qps", "apiserver_burst", "apiserver_max_inflight")
]

NO_OPS_WITHOUT_TLS_UPSTREAM = [
    Row("forward", opt, block("forward", line), cfg(opt), None,
        f"{opt} has no effect: no upstream is tls://")
    for opt, line in (("tls", "tls"), ("tls_servername", "tls_servername dns.example"))
]

CA_WITHOUT_CLIENT_AUTH = Row("prometheus", "client_ca",
                             block("prometheus", *PROM_TLS[:2], "    client_ca cert.pem", "}"),
                             route_tls(trusts_test_ca), None,
                             "client_ca has no effect with client_auth none")
UDP_UNDER_FORCE_TCP = Row("forward", "prefer_udp", block("forward", "force_tcp", "prefer_udp"),
                          cfg("prefer_udp"), None, "prefer_udp has no effect with force_tcp")
UPSTREAM_ADDRESSES = Row("template", "upstream", block("template", "upstream 192.0.2.53"),
                         rule("upstream"), None, "upstream's arguments have no effect")

NO_OPS = ([(f"manifests-{r.option}", r) for r in NO_OPS_WITH_MANIFESTS]
          + [(f"plain-forward-{r.option}", r) for r in NO_OPS_WITHOUT_TLS_UPSTREAM]
          + [("forward-prefer_udp-with-force_tcp", UDP_UNDER_FORCE_TCP),
             ("template-upstream-addresses", UPSTREAM_ADDRESSES),
             ("prometheus-client_ca-without-client_auth", CA_WITHOUT_CLIENT_AUTH)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """A self-signed CA certificate and its key (cert.pem, key.pem), made with openssl."""
    if shutil.which("openssl") is None:
        return None
    d = tmp_path_factory.mktemp("pki")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "key.pem", "-out",
                    "cert.pem", "-days", "1", "-subj", f"/CN={CA_NAME}", "-addext",
                    "basicConstraints=critical,CA:TRUE"],
                   cwd=d, check=True, capture_output=True, timeout=60)
    return d


@pytest.fixture
def setup_dir(tmp_path: Path, pki: Path | None) -> Path:
    (tmp_path / "db.example.org").write_text(ZONE)
    (tmp_path / "hosts.txt").write_text("192.0.2.10 www.example.org\n")
    (tmp_path / "weights.txt").write_text("www.example.org\n192.0.2.10 3\n")
    (tmp_path / "objects").mkdir()
    if pki is not None:
        for name in ("cert.pem", "key.pem"):
            shutil.copy(pki / name, tmp_path / name)
    return tmp_path


def build(line: str, where: Path) -> Any:
    blk = parse_corefile(f"example.org:53 {{\n    {line}\n}}\n", str(where / "Corefile"))[0]
    d = blk.directives[0]
    func = registry.setup_func(d.name.text)
    if func is None:  # a plugin the registry does not list yet: its setup module directly
        import importlib

        func = importlib.import_module(f"kdns.plugins.{d.name.text}.setup").setup
    ctx = SetupContext(blk.keys, where, process={})
    handler = func(d, ctx)
    # A directive without a handler (bind) leaves its effect in the block's context.
    return handler if handler is not None else ctx


def _baseline(row: Row, where: Path) -> Any:
    if row.plugin in ("limits", "timeouts"):
        return type("Defaults", (), {"listener_limits": {}})()
    return build(row.base or BASE[row.plugin], where)


@pytest.mark.parametrize("row", ROWS + [r for _, r in NO_OPS],
                         ids=[f"{r.plugin}-{r.option}" for r in ROWS] + [i for i, _ in NO_OPS])
def test_option_changes_the_plugin_or_logs_that_it_does_not(
        row: Row, setup_dir: Path, pki: Path | None, caplog: pytest.LogCaptureFixture) -> None:
    if pki is None and "cert.pem" in row.line:
        pytest.skip("needs the openssl CLI to make a certificate")
    with caplog.at_level(logging.INFO, logger="kdns"):
        handler = build(row.line, setup_dir)
    if row.reads is None:
        assert row.logs is not None and row.logs in caplog.text
        return
    baseline = _baseline(row, setup_dir)
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
    ``{ ... }`` of its code blocks (placeholders in capitals are not options; CoreDNS's
    ``minDuration`` is one), each alternative of a bracketed ``[query|response]``."""
    text = (KDNS / "plugins" / plugin / "README.md").read_text()
    syntax = text.split("## Syntax", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for fence in re.findall(r"(?:~~~|```)[^\n]*\n(.*?)(?:~~~|```)", syntax, re.S):
        depth = 0
        for line in fence.splitlines():
            word = line.split()[0] if line.split() else ""
            alternatives = re.fullmatch(r"\[([a-z_|]+)\]", word)
            if depth > 0 and alternatives:
                names.update(alternatives.group(1).split("|"))
            elif depth > 0 and re.fullmatch(r"[a-z][A-Za-z_]*", word):
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
