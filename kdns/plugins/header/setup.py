"""header: parse ``header { [query|response] set|clear FLAGS... }`` (CoreDNS's syntax; a rule
without a selector applies to responses, as CoreDNS keeps for older Corefiles)."""

from __future__ import annotations

from kdns.config.model import Directive, error
from kdns.plugins.header.handler import FLAGS, HeaderHandler, Rule
from kdns.plugins.setup_context import SetupContext

SELECTORS = ("query", "response")
ACTIONS = {"set": True, "clear": False}


def setup(d: Directive, ctx: SetupContext) -> HeaderHandler:
    if d.args:
        raise error(d.args[0], "header", f"unexpected argument '{d.args[0].text}'")
    if not d.block:
        raise error(d, "header", "needs a block with at least one rule: "
                                 "[query|response] set|clear FLAGS...")
    rules: dict[str, list[Rule]] = {"query": [], "response": []}
    for line in d.block:
        words = [line.name, *line.args]
        selector = "response"
        if words[0].text.lower() in SELECTORS:
            selector = words[0].text.lower()
            words = words[1:]
        if line.block is not None:
            raise error(line, "header", "a rule takes no block")
        if not words:
            raise error(line, "header", "no flag action provided (set or clear)")
        action = words[0].text.lower()
        if action not in ACTIONS:
            raise error(words[0], "header", f"unknown flag action={words[0].text}, "
                                            "should be set or clear")
        if len(words) < 2:
            raise error(words[0], "header", "invalid length for flags, at least one should "
                                            "be provided")
        for tok in words[1:]:
            flag = tok.text.lower()
            if flag not in FLAGS:
                raise error(tok, "header", f"unknown/unsupported flag={tok.text} "
                                           f"(supported: {', '.join(FLAGS)})")
            rules[selector].append(Rule(flag, ACTIONS[action]))
    return HeaderHandler(tuple(rules["query"]), tuple(rules["response"]))
