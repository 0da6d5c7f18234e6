"""template: the Go-template subset evaluator and the directive's setup errors."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdns.config.model import ConfigError, Location, ServerKey
from kdns.config.parser import parse_corefile
from kdns.plugins import gotemplate
from kdns.plugins.gotemplate import TemplateExecError, TemplateSyntaxError
from kdns.plugins.setup_context import SetupContext
from kdns.plugins.template.handler import TemplateHandler, parse_rr
from kdns.plugins.template.setup import setup

DATA = {
    "Name": "ip-10-1-2-3.example.", "Zone": "example.", "Class": "IN", "Type": "A",
    "Match": ["ip-10-1-2-3.example.", "1", "2"], "Group": {"0": "x", "1": "1", "b": "0a"},
    "Meta": lambda key: {"kubernetes/namespace": "default"}.get(key, ""),
}


@pytest.mark.parametrize(("text", "want"), [
    ("{{ .Name }} 60 IN A 1.2.3.4", "ip-10-1-2-3.example. 60 IN A 1.2.3.4"),
    ("{{ .Group.b }}", "0a"),
    ("{{ index .Match 1 }}.{{ index .Group \"1\" }}", "1.1"),
    ("{{ parseInt .Group.b 16 8 }}", "10"),
    ("{{ .Group.b | printf \"%s-x\" }}", "0a-x"),
    ("{{ printf \"%03d\" (parseInt .Group.b 16 8) }}", "010"),
    ('{{ .Meta "kubernetes/namespace" }}/{{ .Meta "nope" }}', "default/"),
    ("{{ .Group.nosuch }}", "<no value>"),
    ("{{ len .Match }} {{ eq .Type \"A\" }} {{ not .Zone }}", "3 true false"),
    ("a  {{- .Zone -}}  b", "aexample.b"),
    ("x{{/* a comment */}}y", "xy"),
    ("{{ `raw\\n` }}", "raw\\n"),
])
def test_renders(text: str, want: str) -> None:
    assert gotemplate.parse(text).execute(DATA) == want


@pytest.mark.parametrize("text", [
    "{{", "{{ .Name", "{{ notAFunction }}", "{{ if .Name }}x{{ end }}", "{{ range .Match }}",
    "{{ $x := 1 }}", "{{ .Name 1 }}", "{{ }}", "{{ (index .Match 1 }}", '{{ "\\q" }}',
    "{{ .Name | }}", "{{ template \"x\" }}",
])
def test_rejects_outside_the_subset(text: str) -> None:
    with pytest.raises(TemplateSyntaxError):
        gotemplate.parse(text)


@pytest.mark.parametrize("text", [
    "{{ index .Match 7 }}", "{{ parseInt .Name 10 8 }}", "{{ parseInt \"300\" 10 8 }}",
    "{{ index .Zone 1 }}", "{{ .Meta }}", "{{ .Meta 1 2 }}", "{{ .Name.X }}",
    "{{ lt .Match 1 }}",
])
def test_execution_errors(text: str) -> None:
    with pytest.raises(TemplateExecError):
        gotemplate.parse(text).execute(DATA)


def test_rr_parsing_as_miekg_reads_it() -> None:
    soa = parse_rr("invalid. 60 IN SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)")
    assert soa.ttl == 60 and str(soa.rdata).split()[-1] == "60"
    cname = parse_rr("foogle.com 60 IN CNAME google.com")
    assert str(cname.rname) == "foogle.com." and str(cname.rdata) == "google.com."
    assert parse_rr("a.example. IN A 192.0.2.1").ttl == 3600
    assert str(parse_rr('t.example. 0 IN TXT "a (b)"').rdata) == '"a (b)"'
    txt = parse_rr('t.example. 0 IN TXT "say \\"(hi)\\"" "(x)"').rdata
    assert txt.data == [b'say "(hi)"', b"(x)"]
    for bad in ("test.example.", "a.example. 60 IN A 300.1.1.1", "", "a. 60 IN A 1.2.3.4\nb. A 1.2.3.4"):
        with pytest.raises(ValueError):
            parse_rr(bad)


def _setup(text: str) -> TemplateHandler | None:
    blocks = parse_corefile(f"example.:53 {{\n{text}\n}}\n", "Corefile")
    ctx = SetupContext((ServerKey("example.", 53, "dns", Location("Corefile", 1, 1)),),
                       Path("."))
    handler = None
    for d in blocks[0].directives:
        handler = setup(d, ctx) or handler
    return handler


@pytest.mark.parametrize(("text", "where", "message"), [
    ("template", "2:1", "wrong argument count"),
    ("template X A", "2:10", "invalid query class X"),
    ("template IN NOPE", "2:13", "invalid RR class NOPE"),
    ("template ANY ANY {\n notavailable\n}", "3:2", "unknown property 'notavailable'"),
    ("template ANY ANY {\n answer\n}", "3:2", "answer: wrong argument count"),
    ("template ANY ANY {\n rcode\n}", "3:2", "rcode: wrong argument count"),
    ("template ANY ANY {\n rcode UNDEFINED\n}", "3:8", "unknown rcode UNDEFINED"),
    ('template ANY ANY {\n answer "{{"\n}', "3:9", "could not compile template"),
    ('template ANY ANY {\n authority "{{ notAFunction }}"\n}', "3:12",
     'function "notAFunction" not defined'),
    ('template ANY ANY {\n additional "{{ .Grup.d }}"\n}', "3:13", "can't evaluate field Grup"),
    ('template ANY ANY {\n answer "{{ .Question.Nope }}"\n}', "3:9", "field Nope in .Question"),
    ('template ANY ANY {\n answer "{{ .Group.1 }}"\n}', "3:9", 'use index .Group "N"'),
    ("template ANY ANY {\n match (?P<x>\n}", "3:8", "could not parse regex"),
    ("template ANY ANY {\n ederror 99\n}", "3:10", "invalid extended error code 99"),
    ("template ANY ANY bad..zone", "2:18", "invalid zone"),
])
def test_setup_errors_are_located(text: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _setup(text)
    assert str(exc.value).startswith(f"Corefile:{where}: template: "), str(exc.value)
    assert message in str(exc.value)


def test_directives_add_up_in_order_and_track_client_dependence() -> None:
    h = _setup("""
template IN A {
  answer "{{ .Name }} 60 IN A 192.0.2.1"
  fallthrough
}
template IN TXT other.example {
  answer "{{ .Name }} 60 IN TXT {{ .Remote }}"
}
template ANY ANY {
}
""")
    assert h is not None
    rules = h.cfg.rules
    assert [r.qtype for r in rules] == [1, 16, 255]
    assert [r.client_dependent for r in rules] == [False, True, False]
    assert rules[0].fallthrough == () and rules[1].fallthrough is None
    assert rules[1].zones == ("other.example.",) and rules[0].zones == ("example.",)
    assert h.zones == ("other.example.", "example.")


ALPHABET = st.sampled_from(["{{", "}}", " ", ".", "Name", "Group", "Match", "Meta", "index",
                            "parseInt", "printf", "len", "eq", "|", "(", ")", '"', "`", "1",
                            "16", "8", "-", "a", "x", "\\", "/*", "*/", "%d", "$", "if", "end",
                            "%c", "%.2f", "99999999999", "Question", "Message", "Remote", "Id"])


@given(st.lists(ALPHABET, max_size=25).map("".join))
@settings(max_examples=400, deadline=None)
def test_any_text_parses_or_is_a_syntax_error_and_runs_or_is_an_exec_error(text: str) -> None:
    """Templates come from the Corefile and run per query: only the two documented errors may
    escape (any other exception would turn into a SERVFAIL counted as a panic)."""
    try:
        tmpl = gotemplate.parse(text)
    except TemplateSyntaxError:
        return
    with contextlib.suppress(TemplateExecError):
        assert isinstance(tmpl.execute(DATA), str)
