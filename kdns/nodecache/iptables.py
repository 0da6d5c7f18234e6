"""The iptables rules node-cache installs, checked, restored and removed with ``iptables``.

For every local IP (kubernetes/dns ``cmd/node-cache/app/cache_app.go``, ``initIptables``):
the ``raw`` table marks DNS to and from the address NOTRACK, so neither conntrack (the source
of the 5-second lookup races) nor kube-proxy's DNAT to the kube-dns Service touches it, and the
``filter`` table ACCEPTs it, because the usual "accept ESTABLISHED" rules never see untracked
packets. Rules are inserted at the top of their chain (node-cache's ``Prepend``) and removed by
deleting until none is left, so a rule somebody else also added does not survive teardown.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass

from kdns.nodecache.netif import NetworkSetupError, find_tool, not_permitted, privilege_hint

log = logging.getLogger("kdns.nodecache")

LOCK_WAIT = "5"
"""Seconds ``iptables -w`` waits for the xtables lock (kube-proxy holds it while it syncs)."""


@dataclass(frozen=True, slots=True)
class Rule:
    table: str
    chain: str
    args: tuple[str, ...]

    def __str__(self) -> str:
        return f"-t {self.table} {self.chain} {' '.join(self.args)}"


def rules_for(local_ips: tuple[str, ...], dns_port: str, health_port: str) -> tuple[Rule, ...]:
    """node-cache's rule set, in its order."""
    out: list[Rule] = []
    for ip in local_ips:
        def r(table: str, chain: str, *args: str) -> Rule:
            return Rule(table, chain, args)

        out += [
            # queries to the local IP skip conntrack ...
            r("raw", "PREROUTING", "-p", "tcp", "-d", ip, "--dport", dns_port, "-j", "NOTRACK"),
            r("raw", "PREROUTING", "-p", "udp", "-d", ip, "--dport", dns_port, "-j", "NOTRACK"),
            # ... so the filter table must accept them without the ESTABLISHED rule
            r("filter", "INPUT", "-p", "tcp", "-d", ip, "--dport", dns_port, "-j", "ACCEPT"),
            r("filter", "INPUT", "-p", "udp", "-d", ip, "--dport", dns_port, "-j", "ACCEPT"),
            # replies from the local IP, likewise
            r("raw", "OUTPUT", "-p", "tcp", "-s", ip, "--sport", dns_port, "-j", "NOTRACK"),
            r("raw", "OUTPUT", "-p", "udp", "-s", ip, "--sport", dns_port, "-j", "NOTRACK"),
            r("filter", "OUTPUT", "-p", "tcp", "-s", ip, "--sport", dns_port, "-j", "ACCEPT"),
            r("filter", "OUTPUT", "-p", "udp", "-s", ip, "--sport", dns_port, "-j", "ACCEPT"),
            # queries generated on the node itself (hostNetwork pods)
            r("raw", "OUTPUT", "-p", "tcp", "-d", ip, "--dport", dns_port, "-j", "NOTRACK"),
            r("raw", "OUTPUT", "-p", "udp", "-d", ip, "--dport", dns_port, "-j", "NOTRACK"),
            # the liveness probe to the health plugin
            r("raw", "OUTPUT", "-p", "tcp", "-d", ip, "--dport", health_port, "-j", "NOTRACK"),
            r("raw", "OUTPUT", "-p", "tcp", "-s", ip, "--sport", health_port, "-j", "NOTRACK"),
        ]
    return tuple(out)


class Iptables:
    def __init__(self, rules: tuple[Rule, ...], ipv6: bool = False) -> None:
        self.rules = rules
        self.binary = find_tool("ip6tables" if ipv6 else "iptables", "iptables")
        self._installed = False

    def _run(self, op: str, rule: Rule) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, "-w", LOCK_WAIT, "-t", rule.table, op, rule.chain,
                               *rule.args], capture_output=True, text=True, check=False,
                              timeout=30)

    def check_access(self) -> None:
        """Raise NetworkSetupError now when iptables cannot be used at all."""
        res = subprocess.run([self.binary, "-w", LOCK_WAIT, "-t", "raw", "-S", "OUTPUT"],
                             capture_output=True, text=True, check=False, timeout=30)
        if res.returncode != 0:
            if not_permitted(res.stderr):
                raise privilege_hint(f"cannot read the raw table with {self.binary}", res.stderr)
            raise NetworkSetupError(f"{self.binary} does not work here: {res.stderr.strip()}")

    def exists(self, rule: Rule) -> bool:
        return self._run("-C", rule).returncode == 0

    def ensure(self) -> tuple[int, list[str]]:
        """Insert every missing rule; the number added and the errors met (one per rule)."""
        added, errors = 0, []
        again = "back " if self._installed else ""
        for rule in self.rules:
            if self.exists(rule):
                continue
            res = self._run("-I", rule)
            if res.returncode == 0:
                added += 1
                log.info("added %siptables rule %s", again, rule)
            else:
                errors.append(f"{rule}: {res.stderr.strip()}")
        self._installed = True
        return added, errors

    def missing(self) -> list[Rule]:
        return [r for r in self.rules if not self.exists(r)]

    def remove(self) -> None:
        for rule in self.rules:
            for _ in range(100):  # bounded: a rule added 100 times over is somebody's bug
                if self._run("-D", rule).returncode != 0:
                    break
