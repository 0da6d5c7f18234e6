"""Network namespaces a test creates and removes, and code run inside them.

Everything a node-cache test touches lives in namespaces named ``kdns-<tag>-<pid>-<n>``;
the host's own network is never changed. Code runs inside a namespace on a thread that has
joined it (``setns`` moves only the calling thread), so dnspython sockets opened there belong
to that namespace while the test itself stays outside.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


def can_use_netns() -> str | None:
    """None when namespaces can be made here; else why not (for a skip reason)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (scripts/system-deps)"
    return None


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {res.stderr.strip()}")
    return res


class Netns:
    def __init__(self, tag: str) -> None:
        self.name = f"kdns-{tag}-{os.getpid()}-{next(_counter)}"
        sh("ip", "netns", "add", self.name)
        self.ip("link", "set", "lo", "up")

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", self.name, *args, check=check)

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.name, *args, check=check)

    def argv(self, *args: str) -> list[str]:
        """A command line that runs ``args`` inside the namespace (for Popen)."""
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a thread inside the namespace; its result or its exception."""
        box: dict[str, object] = {}

        def target() -> None:
            try:
                fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, os.strerror(err))
                finally:
                    os.close(fd)
                box["value"] = fn()
            except BaseException as err:  # handed to the caller's thread
                box["error"] = err

        t = threading.Thread(target=target, name=f"in-{self.name}")
        t.start()
        t.join()
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["value"]  # type: ignore[return-value]

    def delete(self) -> None:
        sh("ip", "netns", "del", self.name, check=False)
