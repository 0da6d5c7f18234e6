"""The chain order is CoreDNS's: ORDER against verbatim copies of CoreDNS's own order lists.

Two copies, because neither stored revision has every directive kdns needs:

* ``PLUGIN_CFG``: the ``name:package`` lines of ``plugin.cfg`` from github.com/coredns/coredns,
  commit f03a9a780a7f91664d74745729d72446ec42726e (it predates ``timeouts`` and ``header``, and
  names the minimal plugin's directive ``minimal-responses``);
* ``ZDIRECTIVES``: ``Directives`` in ``core/dnsserver/zdirectives.go`` from the same repository,
  commit f697e0cdeee117238c49c3ae592675cb85f59337, which ``directives_generate.go`` writes from
  that revision's ``plugin.cfg`` in file order (it has ``timeouts``, ``header``, ``minimal``).

Every pair of directives that both ORDER and a copy name must come in the same relative order.
"""

from __future__ import annotations

import itertools

import pytest

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.plugins import registry
from kdns.server.app import KdnsServer, ServeOptions

PLUGIN_CFG = """\
metadata:metadata
cancel:cancel
tls:tls
reload:reload
nsid:nsid
bufsize:bufsize
root:root
bind:bind
debug:debug
trace:trace
ready:ready
health:health
pprof:pprof
prometheus:metrics
errors:errors
log:log
dnstap:dnstap
local:local
dns64:dns64
acl:acl
any:any
chaos:chaos
loadbalance:loadbalance
cache:cache
rewrite:rewrite
dnssec:dnssec
autopath:autopath
minimal-responses:minimal
template:template
transfer:transfer
hosts:hosts
route53:route53
azure:azure
clouddns:clouddns
k8s_external:k8s_external
kubernetes:kubernetes
file:file
auto:auto
secondary:secondary
etcd:etcd
loop:loop
forward:forward
grpc:grpc
erratic:erratic
whoami:whoami
on:github.com/coredns/caddy/onevent
sign:sign
"""

ZDIRECTIVES = """\
	"root",
	"metadata",
	"geoip",
	"cancel",
	"tls",
	"timeouts",
	"reuseport",
	"reload",
	"nsid",
	"bufsize",
	"bind",
	"debug",
	"trace",
	"ready",
	"health",
	"pprof",
	"prometheus",
	"errors",
	"log",
	"dnstap",
	"local",
	"dns64",
	"acl",
	"any",
	"chaos",
	"loadbalance",
	"tsig",
	"cache",
	"rewrite",
	"header",
	"dnssec",
	"autopath",
	"minimal",
	"template",
	"transfer",
	"hosts",
	"route53",
	"azure",
	"clouddns",
	"k8s_external",
	"kubernetes",
	"file",
	"auto",
	"secondary",
	"etcd",
	"loop",
	"forward",
	"grpc",
	"erratic",
	"whoami",
	"on",
	"sign",
	"view",
"""

CFG_ORDER = [line.split(":", 1)[0] for line in PLUGIN_CFG.splitlines()]
Z_ORDER = [line.strip().strip('",') for line in ZDIRECTIVES.splitlines()]

# Directives kdns has or plans (the CoreDNS ones a cluster DNS server needs).
WANTED = ("metadata", "bind", "bufsize", "nsid", "debug", "ready", "health", "prometheus",
          "errors", "log", "dnstap", "local", "dns64", "acl", "any", "chaos", "loadbalance",
          "cache", "rewrite", "header", "autopath", "minimal", "template", "transfer", "hosts",
          "k8s_external", "kubernetes", "file", "loop", "forward", "whoami", "timeouts",
          "reload")
KDNS_ONLY = {"limits"}
"""kdns's own directives (not in CoreDNS): placed next to the CoreDNS setting they extend."""


def _pairs_out_of_order(reference: list[str]) -> list[tuple[str, str]]:
    pos = {name: i for i, name in enumerate(reference)}
    shared = [n for n in registry.ORDER if n in pos]
    return [(a, b) for a, b in itertools.combinations(shared, 2) if pos[a] > pos[b]]


@pytest.mark.parametrize("reference", [CFG_ORDER, Z_ORDER], ids=["plugin.cfg", "zdirectives"])
def test_order_follows_coredns(reference: list[str]) -> None:
    assert _pairs_out_of_order(reference) == []


def test_the_two_copies_agree_on_the_wanted_directives() -> None:
    # (They differ elsewhere: ``root``, a setting of the whole server, moved to the top.)
    pos = {name: i for i, name in enumerate(Z_ORDER)}
    shared = [n for n in CFG_ORDER if n in pos and n in WANTED]
    assert [pos[n] for n in shared] == sorted(pos[n] for n in shared)


def test_order_names_every_wanted_directive_once() -> None:
    assert len(set(registry.ORDER)) == len(registry.ORDER)
    assert set(WANTED) <= set(registry.ORDER)
    assert set(registry.ORDER) - set(WANTED) == KDNS_ONLY


def test_every_coredns_directive_in_order_is_in_the_newer_copy() -> None:
    # So the relative-order check above covers all of ORDER but kdns's own directives.
    assert set(registry.ORDER) - KDNS_ONLY <= set(Z_ORDER)


def test_every_implemented_directive_has_a_place() -> None:
    assert set(registry.IMPLEMENTED) <= set(registry.ORDER)


@pytest.mark.parametrize("before,after", [("acl", "rewrite"), ("cache", "rewrite"),
                                          ("rewrite", "autopath"), ("acl", "cache"),
                                          ("loadbalance", "cache"), ("kubernetes", "forward")])
def test_pairs_that_decide_behaviour(before: str, after: str) -> None:
    assert registry.rank(before) < registry.rank(after)


@pytest.mark.parametrize("name", [n for n in registry.ORDER if n not in registry.IMPLEMENTED])
def test_planned_directive_is_a_located_not_supported_error(name: str) -> None:
    text = f".:53 {{\n    {name}\n}}\n"
    with pytest.raises(ConfigError) as exc:
        KdnsServer(parse_corefile(text, "Corefile"), ServeOptions(http=False)).build()
    assert str(exc.value).startswith("Corefile:2:5: ")
    assert "not supported" in str(exc.value)
