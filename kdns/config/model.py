"""The parsed form of a Corefile: frozen objects every plugin's setup reads.

The lexer and parser (``kdns.config.parser``) produce these; plugins never see raw text. Every
token keeps its :class:`Location` so a setup error can name ``file:line:col``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    """The token's value: quotes removed, escapes resolved, ``{$ENV}`` expanded."""
    loc: Location


@dataclass(frozen=True, slots=True)
class Directive:
    """One line of a block (``ttl 30``) or a directive with its own nested block."""

    name: Token
    args: tuple[Token, ...]
    block: tuple[Directive, ...] | None
    """``None`` when the directive has no ``{ ... }``; a (possibly empty) tuple when it has."""

    @property
    def loc(self) -> Location:
        return self.name.loc


@dataclass(frozen=True, slots=True)
class ServerKey:
    """One key of a server block, e.g. ``cluster.local:53`` or ``dns://.:1053``."""

    zone: str
    """Normalised zone: lower case, with a trailing dot (``.`` for the root). CIDR keys such as
    ``10.0.0.0/24`` are expanded by the parser into their reverse zones, one key each."""
    port: int | None
    """The key's port, or ``None`` when the key gave none (the server's default applies)."""
    scheme: str
    """``dns`` (also for keys without a scheme). Other schemes are rejected by the parser."""
    loc: Location


@dataclass(frozen=True, slots=True)
class ServerBlock:
    keys: tuple[ServerKey, ...]
    directives: tuple[Directive, ...]
    loc: Location


class ConfigError(ValueError):
    """A located configuration error: ``str(err)`` is ``file:line:col: message``."""

    def __init__(self, loc: Location | None, message: str) -> None:
        self.loc = loc
        self.message = message
        super().__init__(f"{loc}: {message}" if loc is not None else message)


def error(at: Token | Directive | Location | None, directive: str | None, message: str) -> ConfigError:
    """Build a ConfigError at a token/directive: ``Corefile:12:5: kubernetes: ttl must be ...``."""
    loc = at.loc if isinstance(at, Token | Directive) else at
    return ConfigError(loc, f"{directive}: {message}" if directive else message)
