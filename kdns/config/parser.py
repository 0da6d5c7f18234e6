"""Corefile parser: tokens to the frozen model in ``kdns.config.model``.

Owns the structure of a Corefile (Caddyfile v1 as CoreDNS reads it): server blocks and their
keys, nested directive blocks, snippets, ``import`` of snippets and files, and the checks on
keys (scheme, port, CIDR reverse zones, duplicates). Directive names are kept as written;
whether a plugin exists is the server's question, not the parser's.

Grammar, one line at a time::

    file      := ( snippet | server | import-line )*
    snippet   := "(" NAME ")" "{" tokens-up-to-the-matching "}"
    server    := KEY ( [","] KEY )* ( "{" line* "}" | line* EOF )   # braces optional if alone
    line      := NAME ARG* [ "{" line* "}" ] | import-line
    import    := "import" ( SNIPPET | PATH | GLOB ) ARG*

A ``{`` ends its line (only a ``}`` may follow it there) and a ``}`` closes the innermost open
block; it may end a line of arguments. ``import`` is expanded in place wherever a line starts,
so a snippet or file may hold anything from one directive to whole server blocks, but its
braces must balance (a snippet's do by construction; a file's are checked when imported).
"""

from __future__ import annotations

import glob
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from kdns.config.lexer import LexToken, tokenize
from kdns.config.model import (
    ConfigError,
    Directive,
    Location,
    ServerBlock,
    ServerKey,
    Token,
)

_MAX_IMPORT_DEPTH = 64
_ARG_RE = re.compile(r"\{args(?:\[(\d+)\]|\.(\d+))\}")
_ARG_SPREAD_RE = re.compile(r"\{args\[(\d*):(\d*)\]\}")
_UNSUPPORTED_ZONE_CHARS = frozenset("{}[]()\"',;@:/\\ \t")


def parse_corefile(
    text: str,
    filename: str = "Corefile",
    *,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> tuple[ServerBlock, ...]:
    """Parse Corefile text; ``filename`` names it in errors, ``base_dir`` anchors imports."""
    environ: Mapping[str, str] = os.environ if env is None else env
    base = Path(os.path.abspath(base_dir if base_dir is not None else Path(filename).parent))
    root_id = str((base / Path(filename).name).resolve())
    origin = _Origin(base, ((root_id, filename),), ())
    toks = [_Tok(t, origin) for t in tokenize(text, filename, environ)]
    blocks = _Parser(toks, environ).parse()
    if not blocks:
        raise ConfigError(Location(filename, 1, 1), "no server blocks")
    _check_duplicates(blocks)
    return blocks


def load_corefile(path: str | Path, *, env: Mapping[str, str] | None = None) -> tuple[ServerBlock, ...]:
    """Read and parse the Corefile at ``path``; imports resolve against its directory."""
    p = Path(path)
    text = _read(p, None, "cannot read Corefile")
    return parse_corefile(text, str(path), env=env, base_dir=p.parent)


# ---------------------------------------------------------------------------------------------
# token stream


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where a run of tokens came from: what relative imports resolve against, the chain of
    imports that brought them in (for cycle detection), and the import's arguments."""

    base: Path
    chain: tuple[tuple[str, str], ...]
    """(identity, display) per import step, root first: a resolved file path or ``(name)``."""
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Tok:
    lex: LexToken
    origin: _Origin

    @property
    def text(self) -> str:
        return self.lex.text

    @property
    def loc(self) -> Location:
        return self.lex.loc

    @property
    def brace(self) -> str:
        return self.lex.brace

    @property
    def line_start(self) -> bool:
        return self.lex.line_start

    def token(self) -> Token:
        return Token(self.lex.text, self.lex.loc)


@dataclass(frozen=True, slots=True)
class _Snippet:
    body: tuple[_Tok, ...]
    loc: Location


def _err(at: _Tok | Location, message: str) -> ConfigError:
    return ConfigError(at.loc if isinstance(at, _Tok) else at, message)


class _Parser:
    def __init__(self, toks: list[_Tok], env: Mapping[str, str]) -> None:
        self.toks = toks
        self.pos = 0
        self.env = env
        self.snippets: dict[str, _Snippet] = {}

    def peek(self) -> _Tok | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def at_import(self, tok: _Tok) -> bool:
        return tok.line_start and not tok.brace and tok.text == "import"

    # -- top level ------------------------------------------------------------------------

    def parse(self) -> tuple[ServerBlock, ...]:
        blocks: list[ServerBlock] = []
        while (tok := self.peek()) is not None:
            if self.at_import(tok):
                self.expand_import()
                continue
            if tok.brace == "}":
                raise _err(tok, "unexpected '}'")
            if tok.brace == "{":
                raise _err(tok, "server block has no keys")
            key_parts = self.key_parts()
            if any(_is_snippet_name(text) for text, _ in key_parts):
                self.define_snippet(key_parts, tok)
                continue
            if not key_parts:
                raise _err(tok, "server block has no keys")
            keys = tuple(k for text, loc in key_parts for k in parse_key(text, loc))
            nxt = self.peek()
            if nxt is not None and nxt.brace == "{":
                # Caddy also takes the block's "{" at the start of the next line.
                self.take()
                self.after_open()
                directives = self.block(nxt)
                self.after_close()
            elif nxt is not None and nxt.brace == "}":
                raise _err(nxt, "unexpected '}'")
            else:
                # Caddy's rule: a Corefile holding a single server block may omit its braces;
                # the block then runs to the end of the file.
                if blocks:
                    raise _err(
                        tok,
                        "server block needs { } when the Corefile has more than one server block",
                    )
                directives = self.block(None)
            blocks.append(ServerBlock(keys, directives, tok.loc))
        return tuple(blocks)

    def key_parts(self) -> list[tuple[str, Location]]:
        """Read a server block's keys: whitespace and/or comma separated; a trailing comma
        carries the list on to the next line."""
        parts: list[tuple[str, Location]] = []
        expecting = False
        while True:
            tok = self.take()
            offset = 0
            for piece in tok.text.split(","):
                if piece:
                    loc = tok.loc
                    if tok.lex.verbatim and offset:
                        loc = Location(loc.file, loc.line, loc.col + offset)
                    parts.append((piece, loc))
                offset += len(piece) + 1
            expecting = tok.text.endswith(",")
            nxt = self.peek()
            if nxt is None:
                if expecting:
                    raise _err(tok, "expected another key after ','")
                return parts
            if nxt.brace:
                if expecting:
                    raise _err(nxt, "expected another key after ','")
                return parts
            if nxt.line_start and not expecting:
                return parts

    def define_snippet(self, key_parts: list[tuple[str, Location]], first: _Tok) -> None:
        if len(key_parts) != 1:
            raise _err(first, "a snippet definition (name) must be the only key of its block")
        text, loc = key_parts[0]
        name = text[1:-1]
        if not name:
            raise _err(loc, "snippet name is empty")
        if name in self.snippets:
            raise _err(loc, f"snippet ({name}) is already defined at {self.snippets[name].loc}")
        opener = self.peek()
        if opener is None or opener.brace != "{":
            raise _err(opener if opener is not None else loc, f"snippet ({name}) needs a {{ }} block")
        self.take()
        self.after_open()
        start = self.pos
        depth = 1
        while (tok := self.peek()) is not None:
            self.take()
            if tok.brace == "{":
                depth += 1
            elif tok.brace == "}":
                depth -= 1
                if depth == 0:
                    break
        if depth:
            raise _err(opener, "unclosed '{': no matching '}'")
        self.snippets[name] = _Snippet(tuple(self.toks[start : self.pos - 1]), loc)
        self.after_close()

    # -- blocks and directives --------------------------------------------------------------

    def block(self, opener: _Tok | None) -> tuple[Directive, ...]:
        """Read lines up to the ``}`` matching ``opener`` (to the end of input when None)."""
        out: list[Directive] = []
        while True:
            tok = self.peek()
            if tok is None:
                if opener is not None:
                    raise _err(opener, "unclosed '{': no matching '}'")
                return tuple(out)
            if tok.brace == "}":
                if opener is None:
                    raise _err(tok, "unexpected '}'")
                self.take()
                return tuple(out)
            if tok.brace == "{":
                raise _err(tok, "unexpected '{' at the start of a line: a block must follow a name")
            if self.at_import(tok):
                self.expand_import()
                continue
            out.append(self.directive())

    def directive(self) -> Directive:
        name = self.take()
        args: list[Token] = []
        while (tok := self.peek()) is not None and not tok.line_start and not tok.brace:
            args.append(self.take().token())
        block: tuple[Directive, ...] | None = None
        if tok is not None and not tok.line_start and tok.brace == "{":
            self.take()
            self.after_open()
            block = self.block(tok)
            self.after_close()
        return Directive(name.token(), tuple(args), block)

    def after_open(self) -> None:
        nxt = self.peek()
        if nxt is not None and not nxt.line_start and nxt.brace != "}":
            raise _err(nxt, "unexpected token after '{': a block's contents start on the next line")

    def after_close(self) -> None:
        nxt = self.peek()
        if nxt is not None and not nxt.line_start and nxt.brace != "}":
            raise _err(nxt, "unexpected token after '}'")

    # -- import ---------------------------------------------------------------------------

    def expand_import(self) -> None:
        """Replace the ``import`` line at ``pos`` with the tokens it names."""
        imp = self.toks[self.pos]
        end = self.pos + 1
        while end < len(self.toks) and not self.toks[end].line_start and not self.toks[end].brace:
            end += 1
        if end < len(self.toks) and not self.toks[end].line_start and self.toks[end].brace == "{":
            raise _err(self.toks[end], "import does not take a block")
        args = self.toks[self.pos + 1 : end]
        if not args:
            raise _err(imp, "import needs a snippet name or a file path")
        target, extra = args[0], tuple(t.text for t in args[1:])
        pattern = target.text
        if not pattern:
            raise _err(target, "import needs a non-empty snippet name or file path")
        if len(imp.origin.chain) >= _MAX_IMPORT_DEPTH:
            raise _err(target, f"imports nested more than {_MAX_IMPORT_DEPTH} deep")

        sources: list[_Tok] = []
        snippet = self.snippets.get(pattern)
        if snippet is not None:
            origin = self.step(imp, target, f"snippet:{pattern}", f"({pattern})", None, extra)
            # Relative imports inside a snippet resolve where the snippet was written.
            sources = [_Tok(t.lex, replace(origin, base=t.origin.base)) for t in snippet.body]
        else:
            for path in self.import_paths(target, pattern):
                origin = self.step(imp, target, str(path.resolve()), str(path), path.parent, extra)
                text = _read(path, target, "cannot import")
                lexed = tokenize(text, str(path), self.env)
                _check_balanced(lexed)
                sources.extend(_Tok(lex, origin) for lex in lexed)
        self.toks[self.pos : end] = _splice(sources, imp)

    def step(
        self, imp: _Tok, target: _Tok, ident: str, display: str, base: Path | None, args: tuple[str, ...]
    ) -> _Origin:
        chain = imp.origin.chain
        for i, (seen, _) in enumerate(chain):
            if seen == ident:
                cycle = " -> ".join([d for _, d in chain[i:]] + [display])
                raise _err(target, f"import cycle: {cycle}")
        return _Origin(base if base is not None else imp.origin.base, (*chain, (ident, display)), args)

    def import_paths(self, target: _Tok, pattern: str) -> list[Path]:
        full = os.path.normpath(os.path.join(target.origin.base, pattern))
        if any(c in pattern for c in "*?["):
            # A glob matching nothing is fine (an empty conf.d); Go's Glob sees dotfiles too.
            matches = sorted(glob.glob(full, include_hidden=True))
            return [Path(m) for m in matches if os.path.isfile(m)]
        path = Path(full)
        if not path.exists():
            raise _err(
                target,
                f"import {pattern}: no snippet ({pattern}) is defined before this line "
                f"and no file {path} exists",
            )
        if path.is_dir():
            raise _err(target, f"cannot import {path}: is a directory")
        return [path]


def _check_balanced(lexed: list[LexToken]) -> None:
    """An imported file must close what it opens, so a missing brace is reported inside
    that file instead of at some distant brace of the importer."""
    open_at: list[LexToken] = []
    for lex in lexed:
        if lex.brace == "{":
            open_at.append(lex)
        elif lex.brace == "}":
            if not open_at:
                raise ConfigError(lex.loc, "unexpected '}'")
            open_at.pop()
    if open_at:
        raise ConfigError(open_at[-1].loc, "unclosed '{': no matching '}'")


def _splice(sources: list[_Tok], imp: _Tok) -> list[_Tok]:
    """Imported tokens with their arguments filled in. The import line started a line, so what
    it brings in does too; a token that expands to nothing passes its line start on."""
    out: list[_Tok] = []
    carry = True
    for src in sources:
        carry = carry or src.line_start
        for tok in _substitute(src, imp):
            if carry and not tok.line_start:
                tok = replace(tok, lex=replace(tok.lex, line_start=True))
            out.append(tok)
            carry = False
    return out


def _substitute(tok: _Tok, imp: _Tok) -> list[_Tok]:
    """Fill ``{args[N]}`` / ``{args.N}`` (and whole-token ``{args[i:j]}``) from the import."""
    args = tok.origin.args
    text = tok.text
    if "{args" not in text:
        return [tok]
    spread = _ARG_SPREAD_RE.fullmatch(text)
    if spread is not None:
        lo = int(spread.group(1)) if spread.group(1) else 0
        hi = int(spread.group(2)) if spread.group(2) else len(args)
        return [
            replace(tok, lex=replace(tok.lex, text=a, verbatim=False, line_start=tok.line_start and i == 0))
            for i, a in enumerate(args[lo:hi])
        ]

    def sub(m: re.Match[str]) -> str:
        index = int(m.group(1) if m.group(1) is not None else m.group(2))
        if index >= len(args):
            raise _err(
                tok,
                f"{m.group(0)} is out of range: the import at {imp.loc} gives {len(args)} argument(s)",
            )
        return args[index]

    new_text = _ARG_RE.sub(sub, text)
    if new_text == text:
        return [tok]
    return [replace(tok, lex=replace(tok.lex, text=new_text, verbatim=False))]


def _read(path: Path, at: _Tok | None, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(at.loc if at is not None else None, f"{what} {path}: {reason}") from exc


def _is_snippet_name(text: str) -> bool:
    return len(text) >= 2 and text.startswith("(") and text.endswith(")")


# ---------------------------------------------------------------------------------------------
# server keys


def parse_key(text: str, loc: Location) -> list[ServerKey]:
    """One key as written (``dns://cluster.local:53``, ``10.0.0.0/23``) to its ServerKeys:
    one per zone, several for a CIDR that does not fall on a label boundary."""
    rest = text
    scheme = "dns"
    if "://" in rest:
        written, rest = rest.split("://", 1)
        if not written:
            raise ConfigError(loc, f"missing scheme before :// in key {text!r}")
        if written.lower() != "dns":
            raise ConfigError(loc, f"scheme {written} is not supported by kdns")
    if rest.startswith("["):
        raise ConfigError(loc, f"{text!r} is an address, not a zone: a key is ZONE[:PORT]")
    port: int | None = None
    slash, colon = rest.find("/"), rest.rfind(":")
    if colon > slash:  # for an IPv6 CIDR, colons before the "/" belong to the address
        port = _port(rest[colon + 1 :], text, loc)
        rest = rest[:colon]
    zones = reverse_zones(rest, loc) if slash != -1 else [_zone(rest, text, loc)]
    return [ServerKey(zone, port, scheme, loc) for zone in zones]


def _port(written: str, key: str, loc: Location) -> int:
    if not written:
        raise ConfigError(loc, f"missing port after ':' in key {key!r}")
    if not (written.isascii() and written.isdigit()) or not 1 <= int(written) <= 65535:
        raise ConfigError(loc, f"invalid port {written!r} in key {key!r}: must be 1..65535")
    return int(written)


def _zone(written: str, key: str, loc: Location) -> str:
    if not written:
        raise ConfigError(loc, f"empty zone in key {key!r}")
    bad = sorted({c for c in written if c in _UNSUPPORTED_ZONE_CHARS or c.isspace()})
    if bad:
        raise ConfigError(loc, f"invalid zone {written!r}: unexpected {''.join(bad)!r}")
    zone = written.lower()
    if zone == ".":
        return zone
    if not zone.endswith("."):
        zone += "."
    labels = zone[:-1].split(".")
    if any(not label for label in labels):
        raise ConfigError(loc, f"invalid zone {written!r}: empty label")
    if any(len(label) > 63 for label in labels):
        raise ConfigError(loc, f"invalid zone {written!r}: a label is longer than 63 characters")
    if len(zone) > 254:
        raise ConfigError(loc, f"invalid zone {written!r}: longer than 255 octets")
    return zone


def reverse_zones(cidr: str, loc: Location) -> list[str]:
    """The reverse zones covering ``cidr``, as CoreDNS's ``plugin/pkg/cidr`` computes them.

    A prefix on a label boundary (8 bits for IPv4, a 4-bit nibble for IPv6) is one zone;
    otherwise the prefix is rounded up to the next boundary and each subnet gets its zone,
    so ``10.0.0.0/23`` is ``0.0.10.in-addr.arpa.`` and ``1.0.10.in-addr.arpa.``.
    """
    _, _, prefix = cidr.partition("/")
    try:
        if not (prefix.isascii() and prefix.isdigit()):
            raise ValueError(f"prefix length {prefix!r} is not a number")
        net = ipaddress.ip_network(cidr, strict=False)  # Go's ParseCIDR also masks host bits
    except ValueError as exc:
        raise ConfigError(loc, f"invalid CIDR {cidr!r}: {exc}") from None
    unit = 8 if net.version == 4 else 4
    rounded = -(-net.prefixlen // unit) * unit
    subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [net]
    if rounded != net.prefixlen:
        subnets = list(net.subnets(new_prefix=rounded))
    zones: list[str] = []
    for sub in subnets:
        if sub.version == 4:
            labels = str(sub.network_address).split(".")[: rounded // 8]
            suffix = "in-addr.arpa."
        else:
            labels = list(sub.network_address.exploded.replace(":", ""))[: rounded // 4]
            suffix = "ip6.arpa."
        zones.append(".".join([*reversed(labels), suffix]) if labels else suffix)
    return zones


def _check_duplicates(blocks: tuple[ServerBlock, ...]) -> None:
    """The same scheme+zone+port twice is an error, as in CoreDNS. A key without a port is
    compared as written: only the server knows which port it defaults to. Blocks that listen on
    different addresses (different ``bind`` arguments) may serve the same zone and port; the
    server checks the resolved addresses again when it plans its listeners."""
    seen: dict[tuple[str, str, int | None, tuple[str, ...]], Location] = {}
    for block in blocks:
        binds = tuple(sorted(a.text for d in block.directives if d.name.text == "bind"
                             for a in d.args))
        for key in block.keys:
            ident = (key.scheme, key.zone, key.port, binds)
            if ident in seen:
                where = f"{key.scheme}://{key.zone}" + (f":{key.port}" if key.port is not None else "")
                raise ConfigError(
                    key.loc,
                    f"cannot serve {where} - it is already defined (at {seen[ident]})",
                )
            seen[ident] = key.loc
