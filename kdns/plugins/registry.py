"""The plugin chain's fixed execution order and the setup function of every directive.

Like CoreDNS's ``plugin.cfg``, ORDER is data: a Corefile lists directives in any order and the
chain always runs them in this order. Setup modules are imported lazily so a Corefile that does
not use a plugin never pays for importing it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from kdns.config.model import Directive
from kdns.plugins.setup_context import SetupContext

ORDER: tuple[str, ...] = (
    "metadata",
    "timeouts",
    "limits",
    "reload",
    "nsid",
    "bufsize",
    "bind",
    "debug",
    "ready",
    "health",
    "prometheus",
    "errors",
    "log",
    "local",
    "dns64",
    "loadbalance",
    "rewrite",
    "header",
    "autopath",
    "minimal",
    "acl",
    "any",
    "chaos",
    "cache",
    "template",
    "hosts",
    "kubernetes",
    "file",
    "loop",
    "forward",
    "whoami",
)
"""Execution order (a subset of CoreDNS's plugin.cfg, same relative order)."""

IMPLEMENTED: dict[str, str] = {
    "errors": "kdns.plugins.errors.setup",
    "log": "kdns.plugins.log.setup",
    "health": "kdns.plugins.health.setup",
    "ready": "kdns.plugins.ready.setup",
    "kubernetes": "kdns.plugins.kubernetes.setup",
    "forward": "kdns.plugins.forward.setup",
    "cache": "kdns.plugins.cache.setup",
    "hosts": "kdns.plugins.hosts.setup",
    "file": "kdns.plugins.file.setup",
    "rewrite": "kdns.plugins.rewrite.setup",
    "loadbalance": "kdns.plugins.loadbalance.setup",
    "autopath": "kdns.plugins.autopath.setup",
    "loop": "kdns.plugins.loop.setup",
    "acl": "kdns.plugins.acl.setup",
    "timeouts": "kdns.plugins.timeouts.setup",
    "limits": "kdns.plugins.limits.setup",
    "prometheus": "kdns.plugins.prometheus.setup",
    "reload": "kdns.plugins.reload.setup",
    "bind": "kdns.plugins.bind.setup",
    "any": "kdns.plugins.any.setup",
    "chaos": "kdns.plugins.chaos.setup",
    "bufsize": "kdns.plugins.bufsize.setup",
    "local": "kdns.plugins.local.setup",
    "whoami": "kdns.plugins.whoami.setup",
    "minimal": "kdns.plugins.minimal.setup",
    "header": "kdns.plugins.header.setup",
    "nsid": "kdns.plugins.nsid.setup",
    "debug": "kdns.plugins.debug.setup",
    "dns64": "kdns.plugins.dns64.setup",
    "template": "kdns.plugins.template.setup",
    "metadata": "kdns.plugins.metadata.setup",
}
"""Directive -> module with ``setup(directive, ctx)``."""

KNOWN_COREDNS = frozenset(
    {
        "acl", "any", "auto", "autopath", "azure", "bind", "bufsize", "cache", "cancel", "chaos",
        "clouddns", "debug", "dns64", "dnssec", "dnstap", "erratic", "errors", "etcd", "file",
        "forward", "geoip", "grpc", "grpc_server", "header", "health", "hosts", "https",
        "import", "k8s_external", "kubernetes", "loadbalance", "local", "log", "loop",
        "metadata", "minimal", "multisocket", "nomad", "nsid", "on", "pprof", "prometheus",
        "quic", "ready", "reload", "rewrite", "root", "route53", "secondary", "sign", "template",
        "timeouts", "tls", "trace", "transfer", "tsig", "view", "whoami",
    }
)

REPEATABLE = frozenset({"rewrite", "acl", "bind", "template", "log"})
"""Directives that may appear several times in a block; their setup returns the handler the
first time and ``None`` after (adding rules to it). ``bind`` has no handler: each line adds
addresses to the block's ``listen_hosts``."""

SetupFunc = Callable[[Directive, SetupContext], Any]


def setup_func(name: str) -> SetupFunc | None:
    """The setup function for ``name``, or ``None`` when kdns does not implement it."""
    module = IMPLEMENTED.get(name)
    if module is None:
        return None
    fn: SetupFunc = importlib.import_module(module).setup
    return fn


def rank(name: str) -> int:
    return ORDER.index(name) if name in ORDER else len(ORDER)
