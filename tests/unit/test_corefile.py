"""Corefile lexer and parser: structure, keys, env, snippets, imports and located errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kdns.config.lexer import expand_env, tokenize
from kdns.config.model import ConfigError, Directive, Location, ServerBlock
from kdns.config.parser import load_corefile, parse_corefile

Shape = tuple[Any, ...]


def parse(text: str, **kw: Any) -> tuple[ServerBlock, ...]:
    kw.setdefault("env", {})
    return parse_corefile(text, **kw)


def shape(directives: tuple[Directive, ...] | None) -> Shape | None:
    """Directives as plain nested tuples: (name, (args...), children-or-None)."""
    if directives is None:
        return None
    return tuple((d.name.text, tuple(a.text for a in d.args), shape(d.block)) for d in directives)


def keys(block: ServerBlock) -> list[tuple[str, int | None]]:
    return [(k.zone, k.port) for k in block.keys]


def parse_error(text: str, **kw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, **kw)
    return str(info.value)


KUBEADM = """\
.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
"""

NODELOCAL = """\
cluster.local:53 {
    errors
    cache {
            success 9984 30
            denial 9984 5
    }
    reload
    loop
    bind 169.254.20.10 10.96.0.10
    forward . 10.96.0.11 {
            force_tcp
    }
    prometheus :9253
    health 169.254.20.10:8080
    }
in-addr.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind 169.254.20.10 10.96.0.10
    forward . 10.96.0.11 {
            force_tcp
    }
    prometheus :9253
    }
ip6.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind 169.254.20.10 10.96.0.10
    forward . 10.96.0.11 {
            force_tcp
    }
    prometheus :9253
    }
.:53 {
    errors
    cache 30
    reload
    loop
    bind 169.254.20.10 10.96.0.10
    forward . /etc/resolv.conf
    prometheus :9253
    }
"""


# ------------------------------------------------------------------------------------------
# whole files


def test_kubeadm_default() -> None:
    (block,) = parse(KUBEADM)
    assert keys(block) == [(".", 53)]
    assert block.keys[0].scheme == "dns"
    assert block.loc == Location("Corefile", 1, 1)
    assert shape(block.directives) == (
        ("errors", (), None),
        ("health", (), (("lameduck", ("5s",), None),)),
        ("ready", (), None),
        (
            "kubernetes",
            ("cluster.local", "in-addr.arpa", "ip6.arpa"),
            (
                ("pods", ("insecure",), None),
                ("fallthrough", ("in-addr.arpa", "ip6.arpa"), None),
                ("ttl", ("30",), None),
            ),
        ),
        ("prometheus", (":9153",), None),
        ("forward", (".", "/etc/resolv.conf"), (("max_concurrent", ("1000",), None),)),
        (
            "cache",
            ("30",),
            (
                ("disable", ("success", "cluster.local"), None),
                ("disable", ("denial", "cluster.local"), None),
            ),
        ),
        ("loop", (), None),
        ("reload", (), None),
        ("loadbalance", (), None),
    )
    kube = block.directives[3]
    assert kube.loc == Location("Corefile", 7, 5)
    assert kube.args[1].loc == Location("Corefile", 7, 30)
    assert kube.block is not None and kube.block[2].args[0].loc == Location("Corefile", 10, 12)


def test_nodelocal_shape() -> None:
    blocks = parse(NODELOCAL)
    assert [keys(b) for b in blocks] == [
        [("cluster.local.", 53)],
        [("in-addr.arpa.", 53)],
        [("ip6.arpa.", 53)],
        [(".", 53)],
    ]
    assert shape(blocks[0].directives)[1] == (  # type: ignore[index]
        "cache",
        (),
        (("success", ("9984", "30"), None), ("denial", ("9984", "5"), None)),
    )
    assert [d.name.text for d in blocks[3].directives] == [
        "errors",
        "cache",
        "reload",
        "loop",
        "bind",
        "forward",
        "prometheus",
    ]
    assert blocks[1].loc == Location("Corefile", 16, 1)


def test_multiple_keys_whitespace_commas_and_continuation() -> None:
    (a, b, c) = parse(
        "cluster.local in-addr.arpa {\n}\n"
        "a.example,b.example , c.example:1053 {\n}\n"
        "x.example,\n  y.example {\n whoami\n}\n"
    )
    assert keys(a) == [("cluster.local.", None), ("in-addr.arpa.", None)]
    assert keys(b) == [("a.example.", None), ("b.example.", None), ("c.example.", 1053)]
    assert b.keys[1].loc == Location("Corefile", 3, 11)  # column of the key after the comma
    assert keys(c) == [("x.example.", None), ("y.example.", None)]
    assert c.keys[1].loc == Location("Corefile", 6, 3)
    assert shape(c.directives) == (("whoami", (), None),)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (".", [(".", None, "dns")]),
        (".:53", [(".", 53, "dns")]),
        ("Cluster.LOCAL", [("cluster.local.", None, "dns")]),
        ("cluster.local.:53", [("cluster.local.", 53, "dns")]),
        ("dns://cluster.local:53", [("cluster.local.", 53, "dns")]),
        ("dns://.:1053", [(".", 1053, "dns")]),
        ("DNS://example.org", [("example.org.", None, "dns")]),
        ("example.org:65535", [("example.org.", 65535, "dns")]),
        ("10.0.0.0/8", [("10.in-addr.arpa.", None, "dns")]),
        ("172.16.0.0/16", [("16.172.in-addr.arpa.", None, "dns")]),
        ("10.0.0.0/24", [("0.0.10.in-addr.arpa.", None, "dns")]),
        ("10.0.0.0/24:53", [("0.0.10.in-addr.arpa.", 53, "dns")]),
        ("10.0.0.7/24", [("0.0.10.in-addr.arpa.", None, "dns")]),  # host bits masked, like Go
        ("10.0.0.0/32", [("0.0.0.10.in-addr.arpa.", None, "dns")]),
        ("0.0.0.0/0", [("in-addr.arpa.", None, "dns")]),
        (
            "10.0.0.0/23",
            [("0.0.10.in-addr.arpa.", None, "dns"), ("1.0.10.in-addr.arpa.", None, "dns")],
        ),
        ("2001:db8::/32", [("8.b.d.0.1.0.0.2.ip6.arpa.", None, "dns")]),
        ("fd00::/64:1053", [("0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", 1053, "dns")]),
        (
            "fd00::/62",
            [(f"{n}.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", None, "dns") for n in ("0", "1", "2", "3")],
        ),
        (
            "fd00:0:0:10::/63",
            [
                ("0.1.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", None, "dns"),
                ("1.1.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", None, "dns"),
            ],
        ),
    ],
)
def test_keys(key: str, expected: list[tuple[str, int | None, str]]) -> None:
    (block,) = parse(f"{key} {{\n}}\n")
    assert [(k.zone, k.port, k.scheme) for k in block.keys] == expected
    assert all(k.loc == Location("Corefile", 1, 1) for k in block.keys)


def test_cidr_slash17_expands_to_128_zones() -> None:
    (block,) = parse("10.128.0.0/17 {\n}\n")
    zones = [k.zone for k in block.keys]
    assert len(zones) == 128
    assert zones[0] == "0.128.10.in-addr.arpa."
    assert zones[-1] == "127.128.10.in-addr.arpa."


def test_braceless_single_block() -> None:
    (block,) = parse("# a comment\n.:1053\nerrors\nforward . 1.1.1.1 {\n  max_fails 3\n}\n")
    assert keys(block) == [(".", 1053)]
    assert shape(block.directives) == (
        ("errors", (), None),
        ("forward", (".", "1.1.1.1"), (("max_fails", ("3",), None),)),
    )
    (only_keys,) = parse(".:53")
    assert keys(only_keys) == [(".", 53)] and only_keys.directives == ()


def test_open_brace_on_next_line_is_accepted() -> None:
    (block,) = parse(".:53\n{\n  errors\n}\n")
    assert shape(block.directives) == (("errors", (), None),)


def test_nested_blocks_any_depth_and_close_after_args() -> None:
    (block,) = parse("a {\n b 1 {\n  c {\n   d 2 3\n   e }\n  }\n f { }\n}\n")
    assert shape(block.directives) == (
        ("b", ("1",), (("c", (), (("d", ("2", "3"), None), ("e", (), None))),)),
        ("f", (), ()),
    )


def test_comments_everywhere() -> None:
    text = (
        "# top\n"
        ".:53 { # after open\n"
        "    # alone\n"
        "    errors # trailing\n"
        "    log foo#bar  # '#' inside a token is text\n"
        "    cache 30 { # nested\n"
        "       # inside\n"
        "    } # after close\n"
        '    hosts "# not a comment"\n'
        "} # end\n"
        "# bottom"
    )
    (block,) = parse(text)
    assert shape(block.directives) == (
        ("errors", (), None),
        ("log", ("foo#bar",), None),
        ("cache", ("30",), ()),
        ("hosts", ("# not a comment",), None),
    )


def test_quoted_strings() -> None:
    text = (
        ". {\n"
        '  a "with space" "esc \\"q\\"" "back\\slash" ""\n'
        '  b "two\nlines" after\n'
        '  c "{" "}"\n'
        '  d x"y z"\n'
        '  e "a"b\n'
        "}\n"
    )
    (block,) = parse(text)
    assert shape(block.directives) == (
        ("a", ("with space", 'esc "q"', "back\\slash", ""), None),
        ("b", ("two\nlines", "after"), None),
        ("c", ("{", "}"), None),
        ("d", ('x"y', 'z"'), None),
        ("e", ("a", "b"), None),
    )
    b = block.directives[1]
    assert b.args[0].loc == Location("Corefile", 3, 5)
    assert b.args[1].loc == Location("Corefile", 4, 8)


def test_curly_text_tokens_are_not_braces() -> None:
    (block,) = parse(". {\n  rewrite name regex (.*)\\.x {1}.y\n  t {}\n}\n")
    assert shape(block.directives) == (
        ("rewrite", ("name", "regex", "(.*)\\.x", "{1}.y"), None),
        ("t", ("{}",), None),
    )


def test_crlf_tabs_and_bom() -> None:
    (block,) = parse("\ufeff.:53 {\r\n\terrors\r\n\tlog\tx\r\n}\r\n")
    assert shape(block.directives) == (("errors", (), None), ("log", ("x",), None))
    assert block.directives[1].args[0].loc == Location("Corefile", 3, 6)


def test_directive_names_not_validated() -> None:
    (block,) = parse(". {\n  no_such_plugin 1\n  Errors\n}\n")
    assert [d.name.text for d in block.directives] == ["no_such_plugin", "Errors"]


# ------------------------------------------------------------------------------------------
# environment


def test_env_substitution() -> None:
    env = {"ZONE": "Cluster.Local", "PORT": "1053", "UP": "8.8.8.8 9.9.9.9", "EMPTY": ""}
    text = (
        "{$ZONE}:{$PORT} {\n"
        "  forward . {$UP}\n"
        "  a {%PORT%} x{$ZONE}y\n"
        "  b {$UNSET} {$UNSET:dflt} {%UNSET:win%} {$EMPTY:dflt}\n"
        "  c {$UNSET:127.0.0.1:53} {$PORT:no}\n"
        '  d "{$PORT}"\n'
        "}\n"
    )
    (block,) = parse(text, env=env)
    assert keys(block) == [("cluster.local.", 1053)]
    assert shape(block.directives) == (
        ("forward", (".", "8.8.8.8 9.9.9.9"), None),  # a value stays one token
        ("a", ("1053", "xCluster.Localy"), None),
        ("b", ("", "dflt", "win", ""), None),
        ("c", ("127.0.0.1:53", "1053"), None),
        ("d", ("1053",), None),
    )


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDNS_TEST_ZONE", "example.org")
    (block,) = parse_corefile("{$KDNS_TEST_ZONE} {\n}\n")
    assert keys(block) == [("example.org.", None)]


def test_env_value_is_not_rescanned_nor_a_brace() -> None:
    assert expand_env("{$A}", {"A": "{$B}", "B": "no"}) == "{$B}"
    (block,) = parse(". {\n  a {$OPEN}\n}\n", env={"OPEN": "{"})
    assert shape(block.directives) == (("a", ("{",), None),)


def test_lexer_line_start_flags() -> None:
    toks = tokenize('a "b\nc" d\ne', "F", {})
    assert [(t.text, t.line_start) for t in toks] == [
        ("a", True),
        ("b\nc", False),
        ("d", False),
        ("e", True),
    ]
    assert toks[3].loc == Location("F", 3, 1)


# ------------------------------------------------------------------------------------------
# snippets and imports


def test_snippet_with_args_both_spellings() -> None:
    text = (
        "(common) {\n"
        "  errors\n"
        "  forward . {args[0]} {args.1}\n"
        "  log {args[0]}-suffix\n"
        "}\n"
        "(all) {\n"
        "  bind {args[:]}\n"
        "  rest {args[1:]}\n"
        "}\n"
        "a.example {\n"
        "  import common 1.1.1.1 8.8.8.8\n"
        "  whoami\n"
        "}\n"
        "b.example {\n"
        "  import all x y z\n"
        "}\n"
    )
    a, b = parse(text)
    assert shape(a.directives) == (
        ("errors", (), None),
        ("forward", (".", "1.1.1.1", "8.8.8.8"), None),
        ("log", ("1.1.1.1-suffix",), None),
        ("whoami", (), None),
    )
    # imported tokens point at the snippet's text
    assert a.directives[0].loc == Location("Corefile", 2, 3)
    assert a.directives[1].args[1].loc == Location("Corefile", 3, 13)
    assert shape(b.directives) == (("bind", ("x", "y", "z"), None), ("rest", ("y", "z"), None))


def test_snippet_imported_at_top_level_defines_blocks() -> None:
    text = "(blk) {\n  {args[0]} {\n    errors\n  }\n}\nimport blk a.example\nimport blk b.example\n"
    a, b = parse(text)
    assert keys(a) == [("a.example.", None)] and keys(b) == [("b.example.", None)]
    assert a.loc == Location("Corefile", 2, 3)


def test_snippet_inside_nested_block_and_on_line_with_close() -> None:
    text = "(opts) {\n  max_fails 3\n}\n. {\n  forward . 1.1.1.1 {\n    import opts\n  }\n}\n"
    (block,) = parse(text)
    assert shape(block.directives) == (("forward", (".", "1.1.1.1"), (("max_fails", ("3",), None),)),)


def test_import_files_glob_and_relative(tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "b.conf").write_text("b.example {\n  whoami\n}\n")
    (conf / "a.conf").write_text("a.example {\n  import ../snips/common.conf\n}\n")
    (conf / "notes.txt").write_text("not imported")
    (tmp_path / "snips").mkdir()
    (tmp_path / "snips" / "common.conf").write_text("# shared\nerrors\nlog\n")
    corefile = tmp_path / "Corefile"
    corefile.write_text(". {\n  import snips/common.conf\n}\nimport conf.d/*.conf\nimport none/*.conf\n")
    root, a, b = load_corefile(corefile, env={})
    assert shape(root.directives) == (("errors", (), None), ("log", (), None))
    assert root.directives[0].loc == Location(str(tmp_path / "snips" / "common.conf"), 2, 1)
    assert keys(a) == [("a.example.", None)]  # glob matches come in sorted order
    assert a.loc == Location(str(conf / "a.conf"), 1, 1)
    # a relative import inside an imported file resolves against that file's directory
    assert shape(a.directives) == (("errors", (), None), ("log", (), None))
    assert keys(b) == [("b.example.", None)]


def test_import_file_with_args_and_base_dir(tmp_path: Path) -> None:
    (tmp_path / "fwd.conf").write_text("forward . {args[0]}\n")
    text = ". {\n  import fwd.conf 10.0.0.1\n}\n"
    (block,) = parse(text, base_dir=tmp_path)
    assert shape(block.directives) == (("forward", (".", "10.0.0.1"), None),)
    (block2,) = parse(text, filename=str(tmp_path / "Corefile"))  # base_dir from filename
    assert shape(block2.directives) == shape(block.directives)


def test_load_corefile_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "Corefile"
    with pytest.raises(ConfigError) as info:
        load_corefile(missing)
    assert str(missing) in str(info.value)


def test_import_cycle_of_files(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("import b.conf\n")
    (tmp_path / "b.conf").write_text("\n  import a.conf\n")
    corefile = tmp_path / "Corefile"
    corefile.write_text(". {\n  import a.conf\n}\n")
    with pytest.raises(ConfigError) as info:
        load_corefile(corefile, env={})
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    assert str(info.value) == f"{b}:2:10: import cycle: {a} -> {b} -> {a}"


def test_import_self_is_a_cycle(tmp_path: Path) -> None:
    corefile = tmp_path / "Corefile"
    corefile.write_text(". {\n}\nimport Corefile\n")
    with pytest.raises(ConfigError) as info:
        load_corefile(corefile, env={})
    assert str(info.value) == f"{corefile}:3:8: import cycle: {corefile} -> {corefile}"


def test_import_cycle_of_snippets() -> None:
    text = "(a) {\n  import b\n}\n(b) {\n  import a\n}\n. {\n  import a\n}\n"
    assert parse_error(text) == "Corefile:5:10: import cycle: (a) -> (b) -> (a)"


def test_same_snippet_twice_is_not_a_cycle() -> None:
    text = "(s) {\n  log\n}\n(t) {\n  import s\n  import s\n}\n. {\n  import t\n  import t\n}\n"
    (block,) = parse(text)
    assert [d.name.text for d in block.directives] == ["log"] * 4


# ------------------------------------------------------------------------------------------
# duplicates


def test_duplicate_keys() -> None:
    assert parse_error("cluster.local:53 {\n}\nCLUSTER.local.:53 {\n}\n") == (
        "Corefile:3:1: cannot serve dns://cluster.local.:53 - it is already defined (at Corefile:1:1)"
    )
    assert parse_error(". .:1053 . {\n}\n") == (
        "Corefile:1:10: cannot serve dns://. - it is already defined (at Corefile:1:1)"
    )
    assert parse_error("10.0.0.0/24 {\n}\n10.0.0.0/23 {\n}\n").startswith(
        "Corefile:3:1: cannot serve dns://0.0.10.in-addr.arpa. - it is already defined"
    )
    # the same zone on different ports is fine
    assert len(parse(".:53 {\n}\n.:1053 {\n}\n")) == 2


# ------------------------------------------------------------------------------------------
# errors, each with its exact location


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "Corefile:1:1: no server blocks"),
        ("# just a comment\n\n  # another\n", "Corefile:1:1: no server blocks"),
        ("(snip) {\n  log\n}\n", "Corefile:1:1: no server blocks"),
        ("}\n", "Corefile:1:1: unexpected '}'"),
        (". {\n}\n}\n", "Corefile:3:1: unexpected '}'"),
        (". {\n  errors\n  }\n }\n", "Corefile:4:2: unexpected '}'"),
        (".\nerrors\n}\n", "Corefile:3:1: unexpected '}'"),
        (". }\n", "Corefile:1:3: unexpected '}'"),
        (". {\n  errors\n", "Corefile:1:3: unclosed '{': no matching '}'"),
        (
            ". {\n  cache 30 {\n    success 1\n}\n",
            "Corefile:1:3: unclosed '{': no matching '}'",
        ),
        (
            ". {\n  cache 30 {\n    success 1\n",
            "Corefile:2:12: unclosed '{': no matching '}'",
        ),
        ("{\n  errors\n}\n", "Corefile:1:1: server block has no keys"),
        ('"" {\n}\n', "Corefile:1:1: server block has no keys"),
        (
            ". {\n  foo { bar\n  }\n}\n",
            "Corefile:2:9: unexpected token after '{': a block's contents start on the next line",
        ),
        (
            ". { errors }\n",
            "Corefile:1:5: unexpected token after '{': a block's contents start on the next line",
        ),
        (". {\n  foo {\n  } bar\n}\n", "Corefile:3:5: unexpected token after '}'"),
        (
            ". {\n  forward .\n  {\n  }\n}\n",
            "Corefile:3:3: unexpected '{' at the start of a line: a block must follow a name",
        ),
        ('. {\n  log "oops\n}\n', "Corefile:2:7: unterminated quoted string"),
        (
            ". {\n  import nosuch\n}\n",
            "Corefile:2:10: import nosuch: no snippet (nosuch) is defined before this line",
        ),
        (". {\n  import\n}\n", "Corefile:2:3: import needs a snippet name or a file path"),
        (
            '. {\n  import ""\n}\n',
            "Corefile:2:10: import needs a non-empty snippet name or file path",
        ),
        ("(s) {\n}\n. {\n  import s {\n  }\n}\n", "Corefile:4:12: import does not take a block"),
        (
            "(s) {\n  log {args[1]}\n}\n. {\n  import s a\n}\n",
            "Corefile:2:7: {args[1]} is out of range: the import at Corefile:5:3 gives 1 argument(s)",
        ),
        ("(s) {\n}\n(s) {\n}\n", "Corefile:3:1: snippet (s) is already defined at Corefile:1:1"),
        ("(s)\nlog\n", "Corefile:2:1: snippet (s) needs a { } block"),
        ("(s) (t) {\n}\n", "Corefile:1:1: a snippet definition (name) must be the only key"),
        ("() {\n}\n", "Corefile:1:1: snippet name is empty"),
        (".:0 {\n}\n", "Corefile:1:1: invalid port '0' in key '.:0': must be 1..65535"),
        (".:65536 {\n}\n", "Corefile:1:1: invalid port '65536' in key '.:65536'"),
        ("x.org:dns {\n}\n", "Corefile:1:1: invalid port 'dns' in key 'x.org:dns'"),
        ("a.org b.org: {\n}\n", "Corefile:1:7: missing port after ':' in key 'b.org:'"),
        (":53 {\n}\n", "Corefile:1:1: empty zone in key ':53'"),
        ("10.0.0.0/33 {\n}\n", "Corefile:1:1: invalid CIDR '10.0.0.0/33'"),
        ("10.0.0/24 {\n}\n", "Corefile:1:1: invalid CIDR '10.0.0/24'"),
        ("10.0.0.0/x {\n}\n", "Corefile:1:1: invalid CIDR '10.0.0.0/x'"),
        ("fd00::/129 {\n}\n", "Corefile:1:1: invalid CIDR 'fd00::/129'"),
        ("a.b/c {\n}\n", "Corefile:1:1: invalid CIDR 'a.b/c'"),
        ("tls://. {\n}\n", "Corefile:1:1: scheme tls is not supported by kdns"),
        ("a.org https://b.org {\n}\n", "Corefile:1:7: scheme https is not supported by kdns"),
        ("grpc://.:443 {\n}\n", "Corefile:1:1: scheme grpc is not supported by kdns"),
        ("quic://. {\n}\n", "Corefile:1:1: scheme quic is not supported by kdns"),
        ("foo://. {\n}\n", "Corefile:1:1: scheme foo is not supported by kdns"),
        ("://. {\n}\n", "Corefile:1:1: missing scheme before :// in key"),
        ("[::1]:53 {\n}\n", "Corefile:1:1: '[::1]:53' is an address, not a zone"),
        ("a..b {\n}\n", "Corefile:1:1: invalid zone 'a..b': empty label"),
        ("a,\n{\n}\n", "Corefile:2:1: expected another key after ','"),
        ("a,", "Corefile:1:1: expected another key after ','"),
        (
            ". {\n}\nexample.org\nerrors\n",
            "Corefile:3:1: server block needs { } when the Corefile has more than one",
        ),
        (". {\n}\n{$Z} {\n}\n", "Corefile:3:1: server block has no keys"),
    ],
)
def test_errors(text: str, expected: str) -> None:
    assert parse_error(text).startswith(expected)


def test_error_location_in_imported_file(tmp_path: Path) -> None:
    (tmp_path / "bad.conf").write_text("errors\n  cache 30 {\n")
    message = parse_error(". {\n  import bad.conf\n}\n", base_dir=tmp_path)
    assert message == f"{tmp_path / 'bad.conf'}:2:12: unclosed '{{': no matching '}}'"


def test_imported_file_must_balance_its_braces(tmp_path: Path) -> None:
    (tmp_path / "extra.conf").write_text("log\n}\n")
    message = parse_error(". {\n  import extra.conf\n}\n", base_dir=tmp_path)
    assert message == f"{tmp_path / 'extra.conf'}:2:1: unexpected '}}'"


def test_missing_plain_file_is_an_error_but_empty_glob_is_not(tmp_path: Path) -> None:
    message = parse_error(". {\n  import missing.conf\n}\n", base_dir=tmp_path)
    assert message.startswith("Corefile:2:10: import missing.conf: no snippet")
    assert str(tmp_path / "missing.conf") in message
    (block,) = parse(". {\n  import missing/*.conf\n  log\n}\n", base_dir=tmp_path)
    assert shape(block.directives) == (("log", (), None),)


def test_import_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    message = parse_error(". {\n  import d\n}\n", base_dir=tmp_path)
    assert message == f"Corefile:2:10: cannot import {tmp_path / 'd'}: is a directory"


def test_custom_filename_in_errors() -> None:
    assert parse_error(". {\n", filename="conf/Corefile.test") == (
        "conf/Corefile.test:1:3: unclosed '{': no matching '}'"
    )
