"""rewrite setup: parse ``rewrite [continue|stop] FIELD [MATCH] FROM TO [OPTIONS]`` into rules.

The grammar is CoreDNS's. One directive is one rule, written on the line or spread over a block
(``rewrite stop { name regex ... \\n answer name ... }``: the block's lines continue the rule, as
in CoreDNS). The directive may appear several times in a server block: the first ``setup`` call
builds the handler and publishes it in ``ctx.shared["rewrite"]``, later calls append their rule
to it and return None, so the chain holds one rewrite handler whose rules run in Corefile order.

FROM and TO of ``exact``/``prefix``/``suffix``/``substring`` are lower-cased and made fully
qualified, as CoreDNS's ``plugin.Name.Normalize`` does (so ``prefix foo bar`` turns
``foo.example.com.`` into ``bar.example.com.``); a ``regex`` FROM is used as written and matched
against the lower-case name with its trailing dot.
"""

from __future__ import annotations

import re

from dnslib import QTYPE, RCODE

from kdns.config.model import ConfigError, Directive, Token, error
from kdns.plugins.rewrite.handler import (
    CONTINUE,
    EDNS0_NSID,
    EDNS0_SUBNET,
    KINDS,
    MAX_TTL,
    STOP,
    VARIABLES,
    ClassRule,
    CnameRule,
    Edns0Rule,
    NameAnswer,
    NameRule,
    RcodeAnswer,
    RcodeRule,
    RegexRewriter,
    ResponseRule,
    RewriteConfig,
    RewriteError,
    RewriteHandler,
    Rule,
    SuffixRewriter,
    TTLAnswer,
    TTLRule,
    TypeRule,
    ValueAnswer,
    check_name,
)
from kdns.plugins.setup_context import SetupContext

NAME = "rewrite"

CLASSES = {"IN": 1, "CS": 2, "CH": 3, "HS": 4, "NONE": 254, "ANY": 255}
"""Class mnemonics as miekg/dns spells them (``rewrite class CH IN``)."""

EDNS0_ACTIONS = ("set", "replace", "append")


def _err(at: Token | Directive, message: str) -> ConfigError:
    return error(at, NAME, message)


def fqdn(text: str) -> str:
    """CoreDNS's ``plugin.Name(s).Normalize()``: lower case, with a trailing dot."""
    text = text.lower()
    return text if text.endswith(".") else text + "."


def rule_tokens(d: Directive) -> list[Token]:
    """The rule's tokens: the directive's arguments, then every token of its block's lines."""
    tokens = list(d.args)
    if d.block is None:
        return tokens
    if len(d.args) > 1:
        raise _err(d.block[0] if d.block else d,
                   "write a rule either on the directive line or in its block, not both")
    for line in d.block:
        if line.block is not None:
            raise _err(line, "a rule's block cannot hold another block")
        tokens.append(line.name)
        tokens.extend(line.args)
    return tokens


def parse_rule(d: Directive) -> Rule:
    tokens = rule_tokens(d)
    if not tokens:
        raise _err(d, "expected a rule: [continue|stop] FIELD [MATCH] FROM TO [OPTIONS]")
    mode = STOP
    i = 0
    if tokens[0].text.lower() in (STOP, CONTINUE):
        mode = tokens[0].text.lower()
        i = 1
    if i >= len(tokens):
        raise _err(tokens[0], f"expected a FIELD (name, type, class or ttl) after '{tokens[0].text}'")
    field, rest = tokens[i], tokens[i + 1:]
    kind = field.text.lower()
    if kind == "name":
        return _name_rule(mode, field, rest)
    if kind == "type":
        source, target = _pair(field, rest)
        return TypeRule(mode, _qtype(source), _qtype(target))
    if kind == "class":
        source, target = _pair(field, rest)
        return ClassRule(mode, _qclass(source), _qclass(target))
    if kind == "ttl":
        return _ttl_rule(mode, field, rest)
    if kind == "rcode":
        return _rcode_rule(mode, field, rest)
    if kind == "edns0":
        return _edns0_rule(mode, field, rest)
    if kind == "cname":
        return _cname_rule(mode, field, rest)
    if kind == "answer":
        raise _err(field, "response rewrites must begin with a name rule")
    raise _err(field, f"unknown field '{field.text}' (expected name, type, class, ttl, rcode, "
                      "edns0 or cname)")


def _pair(field: Token, rest: list[Token]) -> tuple[Token, Token]:
    if len(rest) < 2:
        raise _err(field, f"{field.text} rules need exactly two arguments: FROM TO")
    if len(rest) > 2:
        raise _err(rest[2], f"{field.text} rules need exactly two arguments: FROM TO, "
                            f"got unexpected '{rest[2].text}'")
    return rest[0], rest[1]


def _qtype(tok: Token) -> int:
    value = QTYPE.reverse.get(tok.text.upper())
    if not isinstance(value, int):
        raise _err(tok, f"invalid type '{tok.text}'")
    return value


def _qclass(tok: Token) -> int:
    value = CLASSES.get(tok.text.upper())
    if value is None:
        raise _err(tok, f"invalid class '{tok.text}' (expected one of {', '.join(CLASSES)})")
    return value


def _regex(tok: Token) -> re.Pattern[str]:
    try:
        return re.compile(tok.text)
    except re.error as err:
        raise _err(tok, f"invalid regex '{tok.text}': {err}") from None


def _template(tok: Token, regex: re.Pattern[str]) -> str:
    """A replacement with ``{N}`` groups: every group it names must exist in ``regex``."""
    used = [int(n) for n in re.findall(r"\{(\d+)\}", tok.text)]
    if used and max(used) > regex.groups:
        raise _err(tok, f"'{tok.text}' uses group {{{max(used)}}} but '{regex.pattern}' has "
                        f"only {regex.groups}")
    return fqdn(tok.text)


def _match_kind(tok: Token, what: str) -> str:
    kind = tok.text.lower()
    if kind not in KINDS:
        raise _err(tok, f"{what} rules support only exact, prefix, suffix, substring and regex "
                        f"matching, got '{tok.text}'")
    return kind


def _name_rule(mode: str, field: Token, rest: list[Token]) -> NameRule:
    if len(rest) < 2:
        raise _err(field, "name rules need [MATCH] FROM TO")
    if len(rest) == 2:
        kind, source, target, options = "exact", rest[0], rest[1], rest[2:]
    else:
        kind = _match_kind(rest[0], "name")
        source, target, options = rest[1], rest[2], rest[3:]
    auto, answers = _answer_rules(options)
    if kind == "regex":
        regex = _regex(source)
        return NameRule(mode, kind, source.text, _template(target, regex), regex, auto,
                        tuple(answers))
    src, dst = fqdn(source.text), fqdn(target.text)
    if kind == "exact":
        try:
            check_name(dst)
        except RewriteError:
            raise _err(target, f"'{target.text}' is not a valid domain name") from None
        # CoreDNS always maps an exact rewrite back: the client only ever sees its own name.
        return NameRule(mode, kind, src, dst, None, True, tuple(answers))
    if kind == "suffix" and auto:
        # The reverse of a suffix rewrite is a suffix rewrite the other way round, which also
        # covers names that only share the suffix (CNAME targets, SRV hosts).
        back = SuffixRewriter(dst, src)
        answers = [NameAnswer(back), ValueAnswer(back), *answers]
        auto = False
    return NameRule(mode, kind, src, dst, None, auto, tuple(answers))


def _answer_rules(options: list[Token]) -> tuple[bool, list[ResponseRule]]:
    """``answer auto | answer name FROM TO | answer value FROM TO``, repeatable; after the first,
    the keyword ``answer`` may be left out (CoreDNS's grammar)."""
    auto = False
    rules: list[ResponseRule] = []
    explicit_name: Token | None = None
    auto_at: Token | None = None
    j = 0
    while j < len(options):
        tok = options[j]
        if tok.text.lower() == "answer":
            j += 1
        elif j == 0:
            raise _err(tok, f"unexpected '{tok.text}' after FROM TO (expected answer auto, "
                            "answer name FROM TO or answer value FROM TO)")
        if j >= len(options):
            raise _err(tok, "answer needs auto, name FROM TO or value FROM TO")
        what = options[j]
        j += 1
        kind = what.text.lower()
        if kind == "auto":
            auto, auto_at = True, what
            continue
        if kind not in ("name", "value"):
            raise _err(what, f"unknown answer rewrite '{what.text}' (expected auto, name or value)")
        if len(options) - j < 2:
            raise _err(what, f"answer {kind} needs FROM TO")
        regex = _regex(options[j])
        rewriter = RegexRewriter(regex, _template(options[j + 1], regex))
        j += 2
        if kind == "name":
            rules.append(NameAnswer(rewriter))
            explicit_name = explicit_name or what
        else:
            rules.append(ValueAnswer(rewriter))
    if auto_at is not None and explicit_name is not None:
        raise _err(explicit_name, "answer auto cannot be combined with answer name")
    return auto, rules


def _ttl_rule(mode: str, field: Token, rest: list[Token]) -> TTLRule:
    if len(rest) < 2:
        raise _err(field, "ttl rules need [MATCH] NAME TTL|MIN-MAX")
    if len(rest) > 3:
        raise _err(rest[3], f"unexpected '{rest[3].text}' in a ttl rule")
    if len(rest) == 2:
        kind, source, ttl = "exact", rest[0], rest[1]
    else:
        kind, source, ttl = _match_kind(rest[0], "ttl"), rest[1], rest[2]
    low, high = _ttl_range(ttl)
    if kind == "regex":
        return TTLRule(mode, kind, source.text, _regex(source), TTLAnswer(low, high))
    return TTLRule(mode, kind, fqdn(source.text), None, TTLAnswer(low, high))


def _ttl_range(tok: Token) -> tuple[int, int]:
    """``30`` (exactly), ``30-300``, ``-30`` (at most) or ``30-`` (at least)."""
    text = tok.text
    low_s, dash, high_s = text.partition("-")
    bad = _err(tok, f"invalid TTL '{text}': expected SECONDS or MIN-MAX, each 0..{MAX_TTL}")
    if not dash:
        low_s = high_s = text
    elif not low_s and not high_s:
        raise bad
    if not all(part.isdigit() for part in (low_s, high_s) if part):
        raise bad
    low = int(low_s) if low_s else 0
    high = int(high_s) if high_s else MAX_TTL
    if low > MAX_TTL or high > MAX_TTL:
        raise bad
    if low > high:
        raise _err(tok, f"invalid TTL range '{text}': MIN is larger than MAX")
    return low, high


def _rcode(tok: Token, what: str) -> int:
    """An RCODE by number or mnemonic (miekg/dns spelling). Only the 4-bit header RCODEs: the
    extended ones (16-23, e.g. BADCOOKIE) live in the OPT record, which kdns does not rewrite."""
    text = tok.text.upper()
    value = int(text) if text.isdigit() else RCODE.reverse.get(text)
    if not isinstance(value, int) or not 0 <= value <= 15:
        raise _err(tok, f"invalid {what} RCODE '{tok.text}' for a rcode rule (expected 0..15 or "
                        "a name such as NOERROR, SERVFAIL, NXDOMAIN, REFUSED)")
    return value


def _rcode_rule(mode: str, field: Token, rest: list[Token]) -> RcodeRule:
    if len(rest) < 3:
        raise _err(field, f"too few ({len(rest)}) arguments for a rcode rule: "
                          "[MATCH] NAME OLD NEW")
    if len(rest) > 4:
        raise _err(rest[4], f"unexpected '{rest[4].text}' in a rcode rule")
    if len(rest) == 3:
        kind, source = "exact", rest[0]
    else:
        kind, source = _match_kind(rest[0], "rcode"), rest[1]
    answer = RcodeAnswer(_rcode(rest[-2], "matching"), _rcode(rest[-1], "replacement"))
    if kind == "regex":
        return RcodeRule(mode, kind, source.text, _regex(source), answer)
    return RcodeRule(mode, kind, fqdn(source.text), None, answer)


def _cname_rule(mode: str, field: Token, rest: list[Token]) -> CnameRule:
    """``cname MATCH FROM TO`` (the MATCH is required, as in CoreDNS)."""
    if len(rest) != 3:
        at = rest[3] if len(rest) > 3 else field
        raise _err(at, f"cname rules need MATCH FROM TO, got {len(rest)} arguments")
    kind = rest[0].text.lower()
    if kind not in KINDS:
        raise _err(rest[0], f"unknown cname rewrite type: {rest[0].text!r} (expected exact, "
                            "prefix, suffix, substring or regex)")
    source, target = rest[1].text.lower(), rest[2].text.lower()
    if kind == "regex":
        regex = _regex(rest[1])
        return CnameRule(mode, kind, source, _template(rest[2], regex), regex)
    if kind == "exact":
        # a CNAME target is always fully qualified; CoreDNS compares as written
        source, target = fqdn(source), fqdn(target)
    return CnameRule(mode, kind, source, target)


def _uint(tok: Token, limit: int, what: str) -> int:
    """Go's ``strconv.ParseUint(s, 0, ...)``: decimal, 0x hex, 0o/0 octal or 0b binary."""
    text = tok.text.lower().replace("_", "")
    try:
        if text.startswith(("0x", "0o", "0b")):
            value = int(text, 0)
        elif len(text) > 1 and text.startswith("0"):
            value = int(text, 8)
        else:
            value = int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value <= limit:
        raise _err(tok, f"invalid {what} '{tok.text}' (expected 0..{limit})")
    return value


def _edns0_rule(mode: str, field: Token, rest: list[Token]) -> Edns0Rule:
    if len(rest) < 2:
        raise _err(field, "too few arguments for an EDNS0 rule: local|nsid|subnet "
                          "set|replace|append ...")
    kind, action = rest[0].text.lower(), rest[1].text.lower()
    if action not in EDNS0_ACTIONS:
        raise _err(rest[1], f"invalid action: {rest[1].text!r} (expected set, replace or append)")
    if kind == "nsid":
        if len(rest) != 2:
            raise _err(rest[2], "EDNS0 NSID rules do not accept args")
        return Edns0Rule(mode, kind, action, EDNS0_NSID)
    if kind not in ("local", "subnet"):
        raise _err(rest[0], f"invalid rule type {rest[0].text!r} (expected local, nsid or subnet)")
    if len(rest) != 4:
        at = rest[4] if len(rest) > 4 else field
        raise _err(at, f"EDNS0 {kind} rules require exactly three args")
    if kind == "subnet":
        return Edns0Rule(mode, kind, action, EDNS0_SUBNET,
                         v4_bits=_uint(rest[2], 32, "IPv4 bit mask length"),
                         v6_bits=_uint(rest[3], 128, "IPv6 bit mask length"))
    code, data = _uint(rest[2], 0xFFFF, "EDNS0 option code"), rest[3]
    if data.text.startswith("{") and data.text.endswith("}"):
        if data.text not in VARIABLES:
            raise _err(data, f"unsupported variable name {data.text!r} (kdns has "
                             f"{', '.join(VARIABLES)})")
        return Edns0Rule(mode, kind, action, code, variable=data.text)
    if data.text.startswith("0x"):
        try:
            return Edns0Rule(mode, kind, action, code, data=bytes.fromhex(data.text[2:]))
        except ValueError:
            raise _err(data, f"invalid hex data {data.text!r}") from None
    return Edns0Rule(mode, kind, action, code, data=data.text.encode())


def setup(d: Directive, ctx: SetupContext) -> RewriteHandler | None:
    rule = parse_rule(d)
    existing = ctx.shared.get(NAME)
    if isinstance(existing, RewriteHandler):
        existing.add((rule,))
        return None  # the handler of the first directive already sits in the chain
    handler = RewriteHandler(RewriteConfig((rule,)))
    ctx.shared[NAME] = handler
    return handler
