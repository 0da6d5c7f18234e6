"""A small, safe evaluator for the subset of Go's text/template CoreDNS's Corefiles use.

CoreDNS renders each resource record of a *template*, and the source of a *metadata* ``map``,
with Go's ``text/template``. kdns parses that syntax at setup into a tree and evaluates it per
query, with no ``eval`` and no access to anything but the fields it is handed. Supported: text,
``{{ pipeline }}`` actions (with ``{{-`` / ``-}}`` trimming and ``{{/* comments */}}``), field
chains (``.Name``, ``.Group.a``, ``.Question.Name``), method calls with arguments
(``.Meta "key"``), string, raw-string and integer literals, parenthesised pipelines, ``|``
pipes, and the functions ``index``, ``len``, ``print``, ``printf``, ``eq``, ``ne``, ``lt``,
``le``, ``gt``, ``ge``, ``and``, ``or``, ``not`` and CoreDNS's ``parseInt``. Control structures
(``if``, ``range``, ``with`` ...) and variables are rejected at parse time, so an unsupported
template is a located setup error, never a template that silently renders something else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class TemplateSyntaxError(ValueError):
    """The template text is not in the supported subset (raised at setup)."""


class TemplateExecError(ValueError):
    """Evaluating the template failed for this query (index out of range, bad parseInt...)."""


NO_VALUE = "<no value>"
"""What Go prints for a missing map key (``.Group.nosuch``)."""


@dataclass(frozen=True, slots=True)
class Field:
    path: tuple[str, ...]
    """``.A.B`` -> ("A", "B"); ``.`` -> ()."""


@dataclass(frozen=True, slots=True)
class Literal:
    value: object


@dataclass(frozen=True, slots=True)
class Func:
    name: str


@dataclass(frozen=True, slots=True)
class Command:
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Pipeline:
    commands: tuple[Command, ...]


Node = Field | Literal | Func | Pipeline
Part = str | Pipeline


def _go_index(item: object, *keys: object) -> object:
    for key in keys:
        if isinstance(item, Mapping):
            if not isinstance(key, str):
                raise TemplateExecError(f"value has type {type(key).__name__}; should be string")
            item = item.get(key, NO_VALUE)
        elif isinstance(item, Sequence) and not isinstance(item, str):
            if not isinstance(key, int) or isinstance(key, bool):
                raise TemplateExecError("cannot index slice/array with a non-integer")
            if not 0 <= key < len(item):
                raise TemplateExecError(f"error calling index: index out of range: {key}")
            item = item[key]
        else:
            raise TemplateExecError(f"can't index item of type {type(item).__name__}")
    return item


def _parse_int(s: object, base: object, bits: object) -> int:
    """strconv.ParseUint(s, base, bitSize)."""
    if not isinstance(s, str) or not isinstance(base, int) or not isinstance(bits, int):
        raise TemplateExecError("parseInt wants (string, int, int)")
    if base not in (0, *range(2, 37)) or bits not in (0, 8, 16, 32, 64):
        raise TemplateExecError(f"parseInt: invalid base {base} or bit size {bits}")
    try:
        value = int(s.replace("_", "") if base == 0 else s, base)
    except ValueError:
        raise TemplateExecError(f'strconv.ParseUint: parsing "{s}": invalid syntax') from None
    if value < 0 or value >= 1 << (bits or 64):
        raise TemplateExecError(f'strconv.ParseUint: parsing "{s}": value out of range')
    return value


_GO_VERB = re.compile(r"%([-+# 0]*\d{0,3}(?:\.\d{1,3})?)([vsdqxXobeEfgGtc%])")
"""A verb with at most three digits of width and precision: a record is at most 65535 bytes, and
a larger width would only build a huge string per query (left as literal text instead)."""


def _printf(fmt: object, *args: object) -> str:
    """Go's fmt.Sprintf for the common verbs (``%s %d %v %x %02d %q %%``)."""
    if not isinstance(fmt, str):
        raise TemplateExecError("printf wants a format string")
    it = iter(args)

    def one(m: re.Match[str]) -> str:
        flags, verb = m.group(1), m.group(2)
        if verb == "%":
            return "%"
        try:
            arg = next(it)
        except StopIteration:
            return f"%!{verb}(MISSING)"
        if verb in "vs":
            return ("%" + flags + "s") % render(arg)
        if verb == "q":
            return '"' + render(arg).replace("\\", "\\\\").replace('"', '\\"') + '"'
        if verb == "t":
            return render(arg)
        try:
            return ("%" + flags + ("i" if verb == "d" else verb)) % arg
        except (TypeError, ValueError, OverflowError):
            return f"%!{verb}({type(arg).__name__}={render(arg)})"

    return _GO_VERB.sub(one, fmt)


def _cmp(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def fn(a: object, *bs: object) -> bool:
        if not bs:
            raise TemplateExecError("missing argument for comparison")
        try:
            return all(op(a, b) for b in bs) if op is _eq else op(a, bs[0])
        except TypeError:
            raise TemplateExecError("incompatible types for comparison") from None
    return fn


def _eq(a: object, b: object) -> bool:
    return a == b


def _truth(v: object) -> bool:
    return bool(v) and v != NO_VALUE


FUNCS: dict[str, Callable[..., object]] = {
    "index": _go_index,
    "len": lambda v: len(v),
    "print": lambda *a: "".join(render(x) for x in a),
    "printf": _printf,
    "eq": _cmp(_eq),
    "ne": _cmp(lambda a, b: a != b),
    "lt": _cmp(lambda a, b: a < b),
    "le": _cmp(lambda a, b: a <= b),
    "gt": _cmp(lambda a, b: a > b),
    "ge": _cmp(lambda a, b: a >= b),
    "not": lambda v: not _truth(v),
    "and": lambda *a: next((x for x in a if not _truth(x)), a[-1]),
    "or": lambda *a: next((x for x in a if _truth(x)), a[-1]),
    "parseInt": _parse_int,
}

_KEYWORDS = frozenset({"if", "else", "end", "range", "with", "define", "template", "block",
                       "break", "continue", "nil"})

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<dot>\.)(?![0-9])
  | (?P<str>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<num>[-+]?(?:0[xX][0-9a-fA-F]+|0[oO]?[0-7]+|0[bB][01]+|[0-9]+))(?![.\w])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[()|])
  | (?P<var>\$[A-Za-z0-9_]*)
""", re.X)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


def _unquote(s: str) -> str:
    out, i = [], 1
    while i < len(s) - 1:
        c = s[i]
        if c == "\\":
            nxt = s[i + 1]
            if nxt not in _ESCAPES:
                raise TemplateSyntaxError(f"unknown escape sequence in {s}")
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _tokens(action: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(action):
        m = _TOKEN.match(action, pos)
        if m is None:
            if action[pos] == "." and action[pos + 1 : pos + 2].isdigit():
                # Go reads ".Group.1" as .Group applied to the number .1, which fails on every
                # query; say so at load instead.
                raise TemplateSyntaxError(f"a field name cannot start with a digit in "
                                          f"{{{{{action}}}}}: use index .Group \"N\" or "
                                          f"index .Match N")
            raise TemplateSyntaxError(f"unexpected {action[pos]!r} in action {{{{{action}}}}}")
        kind = m.lastgroup or ""
        pos = m.end()
        if kind == "ws":
            continue
        if kind == "var":
            raise TemplateSyntaxError(f"variables ({m.group()}) are not supported by kdns")
        out.append((kind, m.group()))
    return out


class _Parser:
    def __init__(self, toks: list[tuple[str, str]], action: str) -> None:
        self.toks, self.pos, self.action = toks, 0, action

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def pipeline(self) -> Pipeline:
        cmds = [self.command()]
        while (t := self.peek()) is not None and t == ("punct", "|"):
            self.pos += 1
            cmds.append(self.command())
        return Pipeline(tuple(cmds))

    def command(self) -> Command:
        ops: list[Node] = []
        while (t := self.peek()) is not None and t not in (("punct", "|"), ("punct", ")")):
            ops.append(self.operand())
        if not ops:
            raise TemplateSyntaxError(f"missing value for command in {{{{{self.action}}}}}")
        head = ops[0]
        if len(ops) > 1 and not isinstance(head, Func) and not (
                isinstance(head, Field) and head.path[-1:] == ("Meta",)):
            raise TemplateSyntaxError(f"can't give argument to non-function in "
                                      f"{{{{{self.action}}}}}")
        return Command(tuple(ops))

    def operand(self) -> Node:
        kind, text = self.toks[self.pos]
        self.pos += 1
        if kind == "field":
            return Field(tuple(text[1:].split(".")))
        if kind == "dot":
            return Field(())
        if kind == "str":
            return Literal(_unquote(text))
        if kind == "raw":
            return Literal(text[1:-1])
        if kind == "num":
            return Literal(int(text.replace("0o", "0").replace("0O", "0"), 0)
                           if not re.fullmatch(r"[-+]?0[0-7]+", text) else int(text, 8))
        if kind == "ident":
            if text in ("true", "false"):
                return Literal(text == "true")
            if text in _KEYWORDS:
                raise TemplateSyntaxError(f"'{text}' is not supported by kdns's template subset")
            if text not in FUNCS:
                raise TemplateSyntaxError(f'function "{text}" not defined')
            return Func(text)
        if text == "(":
            inner = self.pipeline()
            if self.peek() != ("punct", ")"):
                raise TemplateSyntaxError(f"unclosed left paren in {{{{{self.action}}}}}")
            self.pos += 1
            return inner
        raise TemplateSyntaxError(f"unexpected {text!r} in {{{{{self.action}}}}}")


@dataclass(frozen=True, slots=True)
class Template:
    source: str
    parts: tuple[Part, ...]

    def fields(self) -> set[tuple[str, ...]]:
        """Every field chain the template reads (to validate names and tell what it uses)."""
        out: set[tuple[str, ...]] = set()

        def walk(n: object) -> None:
            if isinstance(n, Field):
                out.add(n.path)
            elif isinstance(n, Pipeline):
                for c in n.commands:
                    for o in c.operands:
                        walk(o)

        for p in self.parts:
            walk(p)
        return out

    def execute(self, data: Mapping[str, Any]) -> str:
        out: list[str] = []
        for p in self.parts:
            out.append(p if isinstance(p, str) else render(_pipe(p, data)))
        return "".join(out)


def parse(text: str) -> Template:
    """Parse ``text``; TemplateSyntaxError when it leaves the supported subset."""
    parts: list[Part] = []
    pos = 0
    trim_next = False
    while True:
        start = text.find("{{", pos)
        chunk = text[pos:] if start < 0 else text[pos:start]
        if trim_next:
            chunk = chunk.lstrip(" \t\r\n")
        if start < 0:
            if chunk:
                parts.append(chunk)
            break
        inner_start = start + 2
        if text.startswith("- ", inner_start) or text.startswith("-\t", inner_start):
            chunk = chunk.rstrip(" \t\r\n")
            inner_start += 1
        if chunk:
            parts.append(chunk)
        end = text.find("}}", inner_start)
        if end < 0:
            raise TemplateSyntaxError("unclosed action")
        inner = text[inner_start:end]
        trim_next = False
        if inner.endswith(" -") or inner.endswith("\t-"):
            inner = inner[:-1]
            trim_next = True
        pos = end + 2
        stripped = inner.strip()
        if stripped.startswith("/*"):
            if not stripped.endswith("*/"):
                raise TemplateSyntaxError("unclosed comment")
            continue
        toks = _tokens(inner)
        if not toks:
            raise TemplateSyntaxError("missing value for command")
        p = _Parser(toks, inner)
        pipe = p.pipeline()
        if p.peek() is not None:
            raise TemplateSyntaxError(f"unexpected {p.peek()[1]!r} in {{{{{inner}}}}}")  # type: ignore[index]
        parts.append(pipe)
    return Template(text, tuple(parts))


def _field(path: tuple[str, ...], data: Mapping[str, Any], args: list[object]) -> object:
    value: object = data
    for i, name in enumerate(path):
        if isinstance(value, Mapping):
            value = value.get(name, NO_VALUE)
        else:
            attr = getattr(value, "template_fields", None)
            if attr is None or name not in attr:
                raise TemplateExecError(f"can't evaluate field {name} in type "
                                        f"{type(value).__name__}")
            value = attr[name]
        if callable(value) and i == len(path) - 1:
            try:
                return value(*args)
            except TypeError:
                raise TemplateExecError(f"wrong number of args for {name}: want 1 got "
                                        f"{len(args)}") from None
    if args:
        raise TemplateExecError(f"{'.'.join(path)} is not a method but has arguments")
    return value


def _pipe(p: Pipeline, data: Mapping[str, Any]) -> object:
    result: object = None
    for i, cmd in enumerate(p.commands):
        head, *rest = cmd.operands
        args = [_value(o, data) for o in rest]
        if i > 0:
            args.append(result)
        if isinstance(head, Func):
            try:
                result = FUNCS[head.name](*args)
            except TemplateExecError:
                raise
            except (TypeError, IndexError, KeyError) as err:
                raise TemplateExecError(f"error calling {head.name}: {err}") from None
        elif isinstance(head, Field):
            result = _field(head.path, data, args)
        else:
            if args:
                raise TemplateExecError("can't give argument to non-function")
            result = _value(head, data)
    return result


def _value(n: Node, data: Mapping[str, Any]) -> object:
    if isinstance(n, Literal):
        return n.value
    if isinstance(n, Field):
        return _field(n.path, data, [])
    if isinstance(n, Pipeline):
        return _pipe(n, data)
    raise TemplateExecError(f"function {n.name} used as a value")


def render(v: object) -> str:
    """Go's default formatting (``fmt.Print``) for the value kinds templates produce."""
    if v is None:
        return NO_VALUE
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, Mapping):
        return "map[" + " ".join(f"{k}:{render(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, list | tuple):
        return "[" + " ".join(render(x) for x in v) + "]"
    return str(v)
