"""Derived values kept until what they were computed from changes.

A value derived from tensors (masked weights, a split's logits, a mask
summary) stays valid while those same tensor objects are unchanged. torch
counts every in-place change of a tensor in its version counter, so a
*stamp* — each tensor with its version — says whether a kept value is stale:

    cache = VersionedCache()
    logits = cache.get(("logits", k), masks_of_k, lambda: compute(k))

One helper, owned by the object whose value it keeps (a classifier, a guard),
instead of one hand-written stamp per cache.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable, TypeVar

import torch

T = TypeVar("T")


def stamp(tensors: Iterable[torch.Tensor], *extra: Hashable) -> tuple:
    """(the tensors themselves, held so their ids stay unique; their versions; ``extra``)."""
    tensors = tuple(tensors)
    return tensors, tuple(t._version for t in tensors), extra


def same(a: tuple, b: tuple) -> bool:
    """Whether two stamps name the same tensors at the same versions (and equal extras)."""
    return (len(a[0]) == len(b[0]) and all(x is y for x, y in zip(a[0], b[0]))
            and a[1] == b[1] and a[2] == b[2])


class VersionedCache:
    """Values by key, each recomputed when the stamp it was computed under goes stale."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[tuple, Any]] = {}

    def get(self, key: Hashable, tensors: Iterable[torch.Tensor], compute: Callable[[], T], *extra: Hashable) -> T:
        now = stamp(tensors, *extra)
        hit = self._entries.get(key)
        if hit is None or not same(hit[0], now):
            hit = (now, compute())
            self._entries[key] = hit
        return hit[1]

    def peek(self, key: Hashable, tensors: Iterable[torch.Tensor], *extra: Hashable) -> tuple[Any, bool]:
        """(the value kept under ``key``, or None; whether it is still fresh), computing nothing."""
        hit = self._entries.get(key)
        if hit is None:
            return None, False
        return hit[1], same(hit[0], stamp(tensors, *extra))

    def put(self, key: Hashable, tensors: Iterable[torch.Tensor], value: Any, *extra: Hashable) -> None:
        """Keep ``value`` as computed from ``tensors`` as they are now."""
        self._entries[key] = (stamp(tensors, *extra), value)

    def pop(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
