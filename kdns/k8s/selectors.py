"""Kubernetes label selectors: parse, match, and print in canonical form.

This module owns the label-selector grammar of ``k8s.io/apimachinery/pkg/labels`` as far as DNS
needs it: ``k=v``, ``k==v``, ``k!=v``, ``k in (a, b)``, ``k notin (a,b)``, ``k`` and ``!k``,
joined by commas (an AND). The API informers pass ``str(selector)`` to the API server as
``labelSelector``; the manifest source and the fake API server match objects client-side with
:meth:`Selector.matches`, so both paths share one set of semantics.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_NAME_RE = re.compile(rf"^{_NAME}$")
_PREFIX_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_TOKEN_RE = re.compile(r"\s*(?:(?P<op>==|!=|=|!|\(|\)|,)|(?P<word>[^\s,()=!]+))")

# Operators as printed in the canonical form (apimachinery's Requirement.String; "==" is
# printed as "=" because the two are the same requirement).
EXISTS, NOT_EXISTS, EQUALS, NOT_EQUALS, IN, NOT_IN = "exists", "!", "=", "!=", "in", "notin"


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        # "!=" and "notin" match objects that lack the key, as in apimachinery.
        if self.op == EXISTS:
            return self.key in labels
        if self.op == NOT_EXISTS:
            return self.key not in labels
        if self.op in (EQUALS, IN):
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values

    def __str__(self) -> str:
        if self.op == EXISTS:
            return self.key
        if self.op == NOT_EXISTS:
            return f"!{self.key}"
        if self.op in (EQUALS, NOT_EQUALS):
            return f"{self.key}{self.op}{self.values[0]}"
        return f"{self.key} {self.op} ({','.join(self.values)})"


@dataclass(frozen=True, slots=True)
class Selector:
    """An AND of requirements; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def empty(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _validate_key(key: str, expr: str) -> str:
    prefix, slash, name = key.rpartition("/")
    ok = bool(_NAME_RE.match(name)) and len(name) <= 63
    if slash:
        ok = ok and bool(prefix) and len(prefix) <= 253 and bool(_PREFIX_RE.match(prefix))
    if not ok:
        raise ValueError(f"label selector {expr!r}: invalid label key {key!r}")
    return key


def _validate_value(value: str, expr: str) -> str:
    if value and (len(value) > 63 or not _NAME_RE.match(value)):
        raise ValueError(f"label selector {expr!r}: invalid label value {value!r}")
    return value


def _tokens(expr: str) -> Iterator[tuple[str, str]]:
    pos = 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            return
        m = _TOKEN_RE.match(expr, pos)
        if m is None:  # pragma: no cover - the word class accepts any other character
            raise ValueError(f"label selector {expr!r}: unexpected character at {pos}")
        pos = m.end()
        if m.group("op"):
            yield ("op", m.group("op"))
        else:
            yield ("word", m.group("word"))


def parse_selector(expr: str) -> Selector:
    """Parse a label selector; raises ValueError naming the expression and the problem."""
    toks = list(_tokens(expr))
    i = 0

    def peek() -> tuple[str, str] | None:
        return toks[i] if i < len(toks) else None

    def take(what: str) -> tuple[str, str]:
        nonlocal i
        if i >= len(toks):
            raise ValueError(f"label selector {expr!r}: expected {what}, found end of input")
        i += 1
        return toks[i - 1]

    def word(what: str) -> str:
        kind, text = take(what)
        if kind != "word":
            raise ValueError(f"label selector {expr!r}: expected {what}, found {text!r}")
        return text

    reqs: dict[str, list[Requirement]] = {}
    while i < len(toks):
        if peek() == ("op", "!"):
            take("!")
            key = _validate_key(word("a label key after '!'"), expr)
            req = Requirement(key, NOT_EXISTS)
        else:
            key = _validate_key(word("a label key"), expr)
            nxt = peek()
            if nxt is None or nxt == ("op", ","):
                req = Requirement(key, EXISTS)
            elif nxt[1] in ("=", "==", "!="):
                take("operator")
                op = NOT_EQUALS if nxt[1] == "!=" else EQUALS
                after = peek()
                value = ""
                if after is not None and after[0] == "word":
                    value = word("a value")
                elif after is not None and after != ("op", ","):
                    raise ValueError(
                        f"label selector {expr!r}: expected a value after {key}{nxt[1]},"
                        f" found {after[1]!r}"
                    )
                req = Requirement(key, op, (_validate_value(value, expr),))
            elif nxt in (("word", "in"), ("word", "notin")):
                take("operator")
                if take("'('") != ("op", "("):
                    raise ValueError(f"label selector {expr!r}: expected '(' after {nxt[1]}")
                values: list[str] = []
                while True:
                    tok = take("a value or ')'")
                    if tok == ("op", ")"):
                        if values:
                            raise ValueError(f"label selector {expr!r}: trailing ',' in set")
                        break
                    if tok[0] != "word":
                        raise ValueError(
                            f"label selector {expr!r}: expected a value in set, found {tok[1]!r}"
                        )
                    values.append(_validate_value(tok[1], expr))
                    sep = take("',' or ')'")
                    if sep == ("op", ")"):
                        break
                    if sep != ("op", ","):
                        raise ValueError(
                            f"label selector {expr!r}: expected ',' or ')', found {sep[1]!r}"
                        )
                if not values:
                    raise ValueError(f"label selector {expr!r}: {key} {nxt[1]} () needs values")
                req = Requirement(key, IN if nxt[1] == "in" else NOT_IN, tuple(sorted(set(values))))
            else:
                raise ValueError(
                    f"label selector {expr!r}: unsupported operator {nxt[1]!r} after {key!r}"
                )
        reqs.setdefault(req.key, []).append(req)
        if i < len(toks):
            sep = take("','")
            if sep != ("op", ","):
                raise ValueError(f"label selector {expr!r}: expected ',', found {sep[1]!r}")
            if i == len(toks):
                raise ValueError(f"label selector {expr!r}: trailing ','")
    # Canonical order: by key (stable within a key), as apimachinery sorts requirements.
    ordered = tuple(r for key in sorted(reqs) for r in reqs[key])
    return Selector(ordered)
