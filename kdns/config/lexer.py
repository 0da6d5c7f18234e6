"""Corefile lexer: text to located tokens, by the Caddyfile v1 rules CoreDNS uses.

Owns: splitting on whitespace, ``#`` comments, double-quoted strings, environment substitution
(``{$NAME}``, ``{%NAME%}``, ``{$NAME:default}``) and telling a structural ``{`` / ``}`` apart
from text. It knows nothing of blocks, keys or imports; that is ``kdns.config.parser``.

Rules, as in Caddy v1's lexer:

- a token ends at whitespace; a newline between two tokens starts a new line (a newline inside
  a quoted token does not);
- ``"`` opens a quoted token only at the start of a token, and the closing ``"`` ends the token;
  inside quotes ``\\"`` is the only escape (any other backslash is kept as written);
- ``#`` starts a comment only at the start of a token, so ``foo#bar`` is one token;
- a token is a brace only when it is exactly ``{`` or ``}``, unquoted, as written in the file:
  ``"{"``, ``{}`` and ``{$X}`` (whatever X holds) are text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from kdns.config.model import ConfigError, Location

Brace = Literal["{", "}", ""]

# One pass, left to right: a substituted value is never scanned again, so a value holding
# "{$OTHER}" stays literal and no variable can expand into itself forever.
_ENV_RE = re.compile(r"\{\$([^{}:$]+)(?::([^{}]*))?\}|\{%([^{}:%]+)(?::([^{}%]*))?%\}")


@dataclass(frozen=True, slots=True)
class LexToken:
    text: str
    """Value: quotes removed, ``\\"`` resolved, environment variables substituted."""
    loc: Location
    """Where the token starts (its opening quote, for a quoted token)."""
    line_start: bool
    """True for the first token of a line (a newline, or the start of the file, before it)."""
    brace: Brace
    """``{`` or ``}`` for a structural brace, else empty."""
    verbatim: bool
    """True when ``text`` is exactly the source text (unquoted, nothing substituted), so a
    column inside the token can be computed from an offset into ``text``."""


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """Substitute ``{$NAME}``, ``{%NAME%}`` and their ``:default`` forms in ``text``.

    An unset variable without a default becomes the empty string, as in CoreDNS. A default
    applies only when the variable is unset, not when it is set to "".
    """
    if "{" not in text:
        return text

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) if m.group(1) is not None else m.group(3)
        default = m.group(2) if m.group(1) is not None else m.group(4)
        value = env.get(name)
        if value is None:
            return default if default is not None else ""
        return value

    return _ENV_RE.sub(sub, text)


def tokenize(text: str, filename: str, env: Mapping[str, str]) -> list[LexToken]:
    """Split ``text`` into tokens; raises ConfigError for an unterminated quote."""
    tokens: list[LexToken] = []
    if text.startswith("\ufeff"):
        text = text[1:]
    n = len(text)
    i = 0
    line, col = 1, 1
    new_line = True  # no token yet on the current line
    while i < n:
        ch = text[i]
        if ch == "\n":
            line, col = line + 1, 1
            new_line = True
            i += 1
            continue
        if ch.isspace():
            i, col = i + 1, col + 1
            continue
        if ch == "#":
            end = text.find("\n", i)
            end = n if end == -1 else end
            col += end - i
            i = end
            continue
        start = Location(filename, line, col)
        if ch == '"':
            value, i, line, col = _quoted(text, i, line, col, start)
            tokens.append(LexToken(expand_env(value, env), start, new_line, "", False))
        else:
            j = i
            while j < n and not text[j].isspace():
                j += 1
            raw = text[i:j]
            col += j - i
            i = j
            brace: Brace = "{" if raw == "{" else "}" if raw == "}" else ""
            value = expand_env(raw, env)
            tokens.append(LexToken(value, start, new_line, brace, value == raw))
        new_line = False
    return tokens


def _quoted(text: str, i: int, line: int, col: int, start: Location) -> tuple[str, int, int, int]:
    """Read the quoted token whose ``"`` is at ``i``; return its value and the position after it."""
    out: list[str] = []
    n = len(text)
    i, col = i + 1, col + 1
    escaped = False
    while i < n:
        ch = text[i]
        i += 1
        if ch == "\n":
            line, col = line + 1, 1
        else:
            col += 1
        if escaped:
            # Caddy resolves only \" ; any other escaped character keeps its backslash.
            if ch != '"':
                out.append("\\")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return "".join(out), i, line, col
        else:
            out.append(ch)
    raise ConfigError(start, "unterminated quoted string")
