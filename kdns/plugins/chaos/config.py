"""chaos's frozen configuration (its own module, so setup and handler do not import each other)."""

from __future__ import annotations

from dataclasses import dataclass

from kdns import __version__

DEFAULT_VERSION = f"kdns-{__version__}"
DEFAULT_AUTHORS = ("kdns developers",)
"""What ``authors.bind`` says when the Corefile names nobody (CoreDNS lists its maintainers)."""


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    version: str = DEFAULT_VERSION
    authors: tuple[str, ...] = DEFAULT_AUTHORS
