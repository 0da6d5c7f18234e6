"""What a plugin's ``setup`` receives besides its directive."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdns.config.model import ServerKey


@dataclass(frozen=True, slots=True)
class Overrides:
    """Process flags that fill in Corefile settings (``kdns serve --kubeconfig ...``).

    They apply to a ``kubernetes`` directive only where the directive does not set the
    option itself, so a Corefile stays the single source of truth when it is explicit.
    """

    kubeconfig: str | None = None
    context: str | None = None
    manifests: str | None = None


@dataclass(slots=True)
class SetupContext:
    keys: tuple[ServerKey, ...]
    """The server block's keys; their zones are the block's zones."""
    config_dir: Path
    """Directory of the Corefile, for relative paths in directives."""
    overrides: Overrides = field(default_factory=Overrides)
    shared: dict[str, Any] = field(default_factory=dict)
    """Per server block: plugins publish providers here by directive name (e.g. the kubernetes
    handler, which autopath and ready ask), so plugins never import each other."""
    process: dict[str, Any] = field(default_factory=dict)
    """Shared by every server block of the process (e.g. the ready plugin's reporters and the
    draining flag the server sets on SIGTERM)."""
    listen_hosts: list[str] = field(default_factory=list)
    """Addresses the block listens on (set by ``bind``, CoreDNS's ``Config.ListenHosts``);
    empty: the server's default (``--dns-addr``, else every interface)."""

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(k.zone for k in self.keys))
