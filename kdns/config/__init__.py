"""kdns.config: the Corefile lexer and parser and the frozen model they produce."""

from kdns.config.model import (
    ConfigError,
    Directive,
    Location,
    ServerBlock,
    ServerKey,
    Token,
    error,
)
from kdns.config.parser import load_corefile, parse_corefile

__all__ = [
    "ConfigError",
    "Directive",
    "Location",
    "ServerBlock",
    "ServerKey",
    "Token",
    "error",
    "load_corefile",
    "parse_corefile",
]
