"""Zone arguments of directives (``kubernetes cluster.local 10.0.0.0/24``, ``hosts FILE ZONES``,
``fallthrough ZONES``): normalised as server keys are, lower case with a trailing dot, a CIDR
expanded to its reverse zones. One implementation for every plugin."""

from __future__ import annotations

from collections.abc import Iterable

from kdns.config.model import ConfigError, Token, error

_BAD = set("{}()\"';@:/\\")


def zone_arg(tok: Token, directive: str) -> list[str]:
    """One zone argument; a CIDR gives several reverse zones. Located ConfigError if invalid."""
    from kdns.config.parser import reverse_zones

    text = tok.text.lower()
    if "/" in text:
        try:
            return reverse_zones(text, tok.loc)
        except ConfigError as err:
            raise error(tok, directive, err.message) from None
    if text != "." and not text.endswith("."):
        text += "."
    labels = [] if text == "." else text[:-1].split(".")
    if (any(not label or len(label) > 63 for label in labels) or len(text) > 254
            or any(c.isspace() or c in _BAD for c in text)):
        raise error(tok, directive, f"invalid zone {tok.text!r}")
    return [text]


def zone_args(tokens: Iterable[Token], directive: str) -> list[str]:
    """Every zone argument, in order, without duplicates."""
    zones: list[str] = []
    for tok in tokens:
        zones.extend(zone_arg(tok, directive))
    return list(dict.fromkeys(zones))


def in_zone(name: str, zone: str) -> bool:
    """``name`` (lower case, trailing dot) is ``zone`` or below it."""
    return zone == "." or name == zone or name.endswith("." + zone)


def longest_zone(name: str, zones_longest_first: Iterable[str]) -> str | None:
    """The zone ``name`` falls in, the most specific first (callers sort once, by length, so
    cluster.local beats a configured parent zone); None when none covers it."""
    for zone in zones_longest_first:
        if in_zone(name, zone):
            return zone
    return None

