"""The interface that holds the local IPs (``nodelocaldns``), managed with iproute2's ``ip``.

node-cache creates a ``dummy`` link and adds every ``-localip`` as a /32 (/128): the kernel
then delivers packets for those addresses locally, and the cache binds them. Kernels built
without the dummy driver (some VM and sandbox kernels) refuse ``type dummy``; a ``bridge``
with no ports holds addresses the same way and delivers locally, so it is used instead and
the log says so. IPv6 addresses are added with ``nodad``: duplicate address detection would
leave them "tentative" and unbindable for a second or two.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

log = logging.getLogger("kdns.nodecache")

LINK_TYPES = ("dummy", "bridge")
"""Tried in order; the first the kernel accepts holds the addresses."""


class NetworkSetupError(RuntimeError):
    """The network set-up cannot be done at all (missing tool, no privilege)."""


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)


def not_permitted(stderr: str) -> bool:
    text = stderr.lower()
    return "not permitted" in text or "permission denied" in text


def privilege_hint(what: str, stderr: str) -> NetworkSetupError:
    return NetworkSetupError(
        f"{what}: {stderr.strip()}: kdns node-cache needs CAP_NET_ADMIN to set up the node's "
        "network (run as root, or add the NET_ADMIN capability to the container), or pass "
        "-setupinterface=false -setupiptables=false to leave the network alone")


def find_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise NetworkSetupError(f"'{name}' not found on PATH: install it (Debian package "
                                f"{package}) or pass -setupinterface=false -setupiptables=false")
    return path


class Interface:
    """``ip`` commands for one interface and its addresses."""

    def __init__(self, name: str, ips: tuple[str, ...]) -> None:
        self.name = name
        self.ips = ips
        self.ip = find_tool("ip", "iproute2")
        self.link_type: str | None = None

    def exists(self) -> bool:
        return _run([self.ip, "-o", "link", "show", "dev", self.name]).returncode == 0

    def addresses(self) -> set[str]:
        out = _run([self.ip, "-o", "addr", "show", "dev", self.name]).stdout
        found = set()
        for line in out.splitlines():
            parts = line.split()
            for i, word in enumerate(parts[:-1]):
                if word in ("inet", "inet6"):
                    found.add(parts[i + 1].split("/")[0])
        return found

    def _add_link(self) -> None:
        errors: list[str] = []
        for kind in LINK_TYPES:
            res = _run([self.ip, "link", "add", self.name, "type", kind])
            if res.returncode == 0:
                if kind != LINK_TYPES[0]:
                    log.warning("this kernel has no '%s' link type (%s); interface %s is a "
                                "'%s' instead, which holds the local addresses the same way",
                                LINK_TYPES[0], errors[0], self.name, kind)
                self.link_type = kind
                return
            if not_permitted(res.stderr):
                raise privilege_hint(f"cannot create interface {self.name}", res.stderr)
            errors.append(res.stderr.strip())
        raise NetworkSetupError(f"cannot create interface {self.name}: "
                                + "; ".join(f"type {k}: {e}" for k, e in zip(LINK_TYPES, errors,
                                                                             strict=True)))

    def ensure(self) -> bool:
        """Create the interface and add missing addresses; True when it already existed.

        Raises NetworkSetupError when it cannot be done at all (no privilege, no ``ip``)."""
        existed = self.exists()
        if not existed:
            self._add_link()
        present = self.addresses()
        for addr in self.ips:
            if addr in present:
                continue
            prefix = "/128" if ":" in addr else "/32"
            cmd = [self.ip, "addr", "add", addr + prefix, "dev", self.name]
            if ":" in addr:
                cmd.append("nodad")
            res = _run(cmd)
            if res.returncode != 0:
                if not_permitted(res.stderr):
                    raise privilege_hint(f"cannot add {addr} to {self.name}", res.stderr)
                raise NetworkSetupError(f"cannot add {addr} to {self.name}: "
                                        f"{res.stderr.strip()}")
            log.info("added %s to interface %s", addr, self.name)
        res = _run([self.ip, "link", "set", "dev", self.name, "up"])
        if res.returncode != 0:
            raise NetworkSetupError(f"cannot set {self.name} up: {res.stderr.strip()}")
        return existed

    def remove(self) -> None:
        if not self.exists():
            return
        res = _run([self.ip, "link", "del", "dev", self.name])
        if res.returncode != 0:
            raise NetworkSetupError(f"cannot remove interface {self.name}: "
                                    f"{res.stderr.strip()}")
        log.info("removed interface %s", self.name)
