"""dns64's frozen configuration (its own module, so setup and handler do not import each other)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

WELL_KNOWN_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
"""RFC 6052 §2.1."""


@dataclass(frozen=True, slots=True)
class Dns64Config:
    prefix: ipaddress.IPv6Network = WELL_KNOWN_PREFIX
    translate_all: bool = False
    """Synthesize even when the name has AAAA records (not RFC 6147 §5.1.1)."""
    allow_ipv4: bool = False
    """Also for queries that came over IPv4 (by default only IPv6 clients, as CoreDNS)."""
