"""Docs are tested: every ```corefile block in the READMEs parses, and Corefile.example (and
the demo Corefile) set up completely with every plugin they name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kdns.config.parser import load_corefile, parse_corefile
from kdns.server.app import KdnsServer, ServeOptions

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "kdns" / "plugins").glob("*/README.md"),
               *(ROOT / "docs").glob("*.md"), *(ROOT / "bench").glob("*.md"),
               *(ROOT / "zones").glob("*.md")])
FENCE = re.compile(r"```corefile\n(.*?)```", re.S)


def _blocks() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for i, m in enumerate(FENCE.finditer(doc.read_text())):
            out.append((f"{doc.relative_to(ROOT)}#{i + 1}", m.group(1)))
    return out


BLOCKS = _blocks()


def test_there_are_corefile_examples_to_check() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize(("where", "text"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_readme_corefile_example_parses(where: str, text: str) -> None:
    blocks = parse_corefile(text, where, env={})
    assert blocks, where


@pytest.mark.parametrize("path", [ROOT / "Corefile.example", ROOT / "zones" / "demo" / "Corefile"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_corefiles_set_up_with_every_plugin(path: Path) -> None:
    blocks = load_corefile(path)
    server = KdnsServer(blocks, ServeOptions(config_dir=path.parent, corefile=path)).build()
    assert server.listeners


def test_the_builtin_default_is_the_kubeadm_corefile_and_sets_up(tmp_path: Path) -> None:
    from kdns.defaults import DEFAULT_COREFILE

    names = [d.name.text for d in parse_corefile(DEFAULT_COREFILE, "<default>")[0].directives]
    assert names == ["errors", "health", "ready", "kubernetes", "prometheus", "forward", "cache",
                     "loop", "reload", "loadbalance"]
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.1\n")  # set up only: nothing is sent anywhere
    text = DEFAULT_COREFILE.replace("/etc/resolv.conf", str(resolv))
    server = KdnsServer(parse_corefile(text, "<default>"), ServeOptions(config_dir=tmp_path))
    assert server.build().listeners
