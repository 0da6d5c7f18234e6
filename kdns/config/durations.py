"""Go-style durations (``5s``, ``500ms``, ``1m30s``, ``2h``) as CoreDNS's Corefile writes them."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ValueError with a readable message on a malformed value.

    A bare ``0`` is accepted (as in Go); any other number needs a unit.
    """
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _PART.match(text, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r} (use e.g. 500ms, 5s, 1m)")
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(f"invalid duration {text!r} (use e.g. 500ms, 5s, 1m)")
    return total
