"""Label selectors: grammar, matching semantics (apimachinery's), canonical form, errors."""

from __future__ import annotations

import pytest

from kdns.k8s.selectors import parse_selector

LABELS = {"app": "web", "env": "prod", "tier": "frontend", "example.com/team": "dns"}


@pytest.mark.parametrize(
    ("expr", "matches"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("app!=web", False),
        ("missing!=x", True),  # != matches objects without the key
        ("env in (prod, staging)", True),
        ("env in (staging,qa)", False),
        ("env notin (prod)", False),
        ("missing notin (a,b)", True),  # notin matches objects without the key
        ("missing in (a)", False),
        ("app", True),
        ("missing", False),
        ("!missing", True),
        ("!app", False),
        ("app=web,env=prod", True),
        ("app=web,env=dev", False),
        ("environment in (staging, qa),application=nginx", False),
        ("example.com/team=dns", True),
        ("  app = web ,  tier in ( frontend )  ", True),
        ("app=", False),
    ],
)
def test_matches(expr: str, matches: bool) -> None:
    assert parse_selector(expr).matches(LABELS) is matches


def test_empty_value_matches_empty_label() -> None:
    assert parse_selector("flag=").matches({"flag": ""})
    assert not parse_selector("flag=").matches({})


def test_none_labels_are_empty() -> None:
    assert parse_selector("!a").matches(None)
    assert not parse_selector("a").matches(None)


@pytest.mark.parametrize(
    ("expr", "canonical"),
    [
        ("", ""),
        ("b=2,a==1", "a=1,b=2"),
        ("env in (qa, staging, qa)", "env in (qa,staging)"),
        ("x notin (b,a)", "x notin (a,b)"),
        ("!k, j", "j,!k"),
        ("a!=1", "a!=1"),
    ],
)
def test_canonical_form(expr: str, canonical: str) -> None:
    sel = parse_selector(expr)
    assert str(sel) == canonical
    assert str(parse_selector(str(sel))) == canonical  # canonical form round-trips


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("a=b,", "trailing ','"),
        (",a", "expected a label key"),
        ("a in b", "expected '('"),
        ("a in ()", "needs values"),
        ("a in (x", "end of input"),
        ("a in (x,)", "trailing ','"),
        ("a b", "unsupported operator"),
        ("a > 3", "unsupported operator"),
        ("-bad=x", "invalid label key"),
        ("a=-bad-", "invalid label value"),
        ("a=" + "x" * 64, "invalid label value"),
        ("Bad_Prefix/a=b", "invalid label key"),
        ("a=(b)", "expected a value"),
        ("!", "end of input"),
        ("a=b c", "expected ','"),
    ],
)
def test_errors_are_clear(expr: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="label selector") as info:
        parse_selector(expr)
    assert fragment in str(info.value)
