"""Sharded copy-on-write dicts: the indexes of the kubernetes view.

This module owns how the view's indexes change cheaply: each is split into :data:`SHARDS`
dicts; a publish hands the parts to the new View as they are, and the builder copies a part
only when it next writes to it (copy-on-write), so a one-Service change among 50,000 costs a few
small dict copies, not a copy of the world.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")

SHARDS = 256
"""Parts each index is split into. A publish hands every part to the new View as it is (no
copy); the builder copies a part only when it next writes to it. So a one-Service change costs
a few copies of ~1/256 of an index instead of a copy of all 50,000 entries."""
_MASK = SHARDS - 1


class Shards(Generic[_K, _V]):
    """The builder's side of a sharded, copy-on-write dict."""

    __slots__ = ("_parts", "_shared")

    def __init__(self) -> None:
        self._parts: list[dict[_K, _V]] = [{} for _ in range(SHARDS)]
        self._shared = [False] * SHARDS

    def get(self, key: _K) -> _V | None:
        return self._parts[hash(key) & _MASK].get(key)

    def __contains__(self, key: _K) -> bool:
        return key in self._parts[hash(key) & _MASK]

    def _writable(self, key: _K) -> dict[_K, _V]:
        i = hash(key) & _MASK
        if self._shared[i]:  # a published View holds this part: copy before writing
            self._parts[i] = dict(self._parts[i])
            self._shared[i] = False
        return self._parts[i]

    def __setitem__(self, key: _K, value: _V) -> None:
        self._writable(key)[key] = value

    def pop(self, key: _K) -> None:
        if key in self:
            del self._writable(key)[key]

    def all_keys(self) -> list[_K]:
        return [k for part in self._parts for k in part]

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts)

    def freeze(self) -> tuple[dict[_K, _V], ...]:
        """The current parts for a View; from now on they are read-only for the builder."""
        self._shared = [True] * SHARDS
        return tuple(self._parts)


def _get(parts: tuple[dict[_K, _V], ...], key: _K) -> _V | None:
    return parts[hash(key) & _MASK].get(key) if parts else None
