"""Which mask bits a correction flips: the ranking rules, the auto ladder, and flipping them."""

from __future__ import annotations

import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..settings import setting

if TYPE_CHECKING:
    from ..interfaces import ClassifierLike as Classifier


SELECTIONS = ("taylor", "paper")
AUTO = "auto"
AUTO_START = 1e-6  # the auto ladder's first rung, as a fraction of the prunable weights
MAX_RATIO = 1e-3  # the auto ladder's default cap (0.1 %)


def check_ratio(ratio) -> float | str:
    """``ratio``: "auto" or a fraction of the prunable weights in [0, 0.5)."""
    if ratio != AUTO and (isinstance(ratio, (str, bool)) or not 0.0 <= ratio < 0.5):
        raise ValueError(f"ratio must be {AUTO!r} or a fraction in [0, 0.5), got {ratio!r}")
    return ratio


def check_max_ratio(max_ratio) -> float:
    """``max_ratio``, the cap of ``ratio="auto"``: a fraction in (0, 0.5)."""
    if isinstance(max_ratio, bool) or not isinstance(max_ratio, (int, float)) or not 0.0 < max_ratio < 0.5:
        raise ValueError(f"max_ratio must be a fraction in (0, 0.5), got {max_ratio!r}")
    return max_ratio


def check_selection(selection) -> str:
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {list(SELECTIONS)}, got {selection!r}")
    return selection


def check_confidence(confidence) -> float | None:
    """``confidence``: a probability in [0, 1); 0 or None: the value read at all (the plain search)."""
    if confidence is not None and (isinstance(confidence, bool) or not isinstance(confidence, (int, float))
                                   or not 0.0 <= confidence < 1.0):
        raise ValueError(f"confidence must be a probability in [0, 1), got {confidence!r}")
    return confidence


def check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps!r}")
    return steps


@dataclass(frozen=True)
class EditSettings:
    """How a correction edits a concept's mask, declared once: the keywords of ``correct``
    and their defaults, and the command line's flags of the same names."""

    selection: str = setting("taylor", "taylor (default): signed first-order estimate; paper: |G theta|, the paper's "
                             "rule", choices=SELECTIONS)
    max_ratio: float = setting(MAX_RATIO, "the cap of a ratio of auto (the explorer's is always auto): the largest "
                               "fraction of the prunable weights one step may flip", check=check_max_ratio)
    steps: int = setting(1, "steps per correction while still wrong", check=check_steps)
    confidence: float | None = setting(0.9, "a ratio of auto goes on until each corrected text reads its value "
                                       "with at least this probability, not barely: such an edit carries to the "
                                       "text's paraphrases (docs/interventions.md); 0: until it reads it at all",
                                       kind=float, metavar="P", check=check_confidence)

    def __post_init__(self) -> None:
        check_selection(self.selection)
        check_max_ratio(self.max_ratio)
        check_steps(self.steps)
        check_confidence(self.confidence)


EDIT = EditSettings()  # the defaults


def pick(scores: np.ndarray, allowed: np.ndarray, n: int, largest: bool, seed: int = 0) -> np.ndarray:
    """Flat indices (ascending) of the n smallest (or largest) ``scores`` among
    the ``allowed`` positions, exactly, without sorting all of them.

    A threshold from a seeded sample keeps a candidate set about 1.5 n large; a
    partition (not a sort) of the candidates picks the n. numpy, on the CPU:
    its elementwise passes over ~10^7 weights are several times faster than
    torch's here."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    available = int(np.count_nonzero(allowed))
    if n > available:
        raise ValueError(f"cannot choose {n} weights among {available}")
    total = scores.size
    probe = np.random.default_rng(seed).integers(total, size=min(total, 1 << 16))
    sample = scores[probe][allowed[probe]]
    q = 1.5 * n / available + 1e-3
    candidates = None
    while sample.size >= 64 and q < 0.5:
        threshold = np.quantile(sample, 1.0 - q if largest else q)
        near = scores >= threshold if largest else scores <= threshold
        np.logical_and(near, allowed, out=near)
        candidates = np.flatnonzero(near)
        if candidates.size >= n:
            break
        candidates, q = None, 2 * q
    if candidates is None:  # few allowed positions, or a large share of them: take them all
        candidates = np.flatnonzero(allowed)
    values = scores[candidates]
    chosen = np.zeros(candidates.size, bool)
    chosen[np.argpartition(-values if largest else values, n - 1)[:n]] = True
    return candidates[chosen].astype(np.int64)  # ascending, as the candidates are (no sort needed)


def _offsets(masks_k: dict[str, torch.Tensor]) -> list[tuple[str, int, int]]:
    out, start = [], 0
    for name, m in masks_k.items():
        out.append((name, start, start + m.numel()))
        start += m.numel()
    return out


def _split(indices, offsets: list[tuple[str, int, int]]) -> list[np.ndarray]:
    """Flat indices -> per parameter local indices (sorted)."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size > 1 and not (idx[1:] > idx[:-1]).all():
        idx = np.sort(idx)
    cuts = np.searchsorted(idx, [start for _, start, _ in offsets[1:]])
    return [part - start for part, (_, start, _) in zip(np.split(idx, cuts), offsets)]


def flip(model, concept: str, drop, grow, undo: bool = False) -> dict[str, dict[str, int]]:
    """Clear ``drop`` and set ``grow`` (flat indices over the concept's prunable
    weights) in ``model.masks[concept]``, in place; ``undo`` does the reverse.
    Returns per parameter the number of bits dropped and grown."""
    masks_k = model.masks[concept]
    offsets = _offsets(masks_k)
    counts = {}
    for (name, _, _), d, g in zip(offsets, _split(drop, offsets), _split(grow, offsets)):
        if d.size or g.size:
            model.encoder.update_mask(concept, name, clear=g if undo else d, set_=d if undo else g)
            counts[name] = {"dropped": int(d.size), "grown": int(g.size)}
    return counts


_SCRATCH: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # classifier -> name -> array


def scratch(clf: Classifier, name: str, size: int, dtype) -> np.ndarray:
    """A working array of ``size`` elements kept for ``clf`` between corrections (uninitialised;
    dropped with the classifier): a fresh ~40 MB array per correction step costs more in page
    faults than the work itself."""
    buffers = _SCRATCH.setdefault(clf, {})
    buf = buffers.get(name)
    if buf is None or buf.size != size or buf.dtype != np.dtype(dtype):
        buf = buffers[name] = np.empty(size, dtype)
    return buf


def edit_buffers(clf: Classifier, masks_k: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat float scores, kept bits and pruned bits, reused across calls (:func:`scratch`)."""
    total = sum(m.numel() for m in masks_k.values())
    return (scratch(clf, "edit_scores", total, np.float32), scratch(clf, "edit_kept", total, bool),
            scratch(clf, "edit_pruned", total, bool))


def _signed(clf: Classifier, penalty: np.ndarray, kept_bits: np.ndarray) -> np.ndarray:
    """``-penalty`` where a bit is kept and ``+penalty`` where it is pruned (``penalty``
    >= 0, float32), by setting the sign bit from the mask: exact, and plain passes
    instead of two masked ufuncs over 10^7 weights. Written into a reused buffer."""
    buf = scratch(clf, "signed_penalty", penalty.size, np.uint32)
    np.left_shift(kept_bits.view(np.uint8), np.uint32(31), out=buf)
    np.bitwise_or(buf, penalty.view(np.uint32), out=buf)
    return buf.view(np.float32)


def rank(
    clf: Classifier, masks_k: dict[str, torch.Tensor], scores: np.ndarray, n_max: int, selection: str, seed: int,
    penalty: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Kept weights to drop and pruned weights to grow, best first, at most ``n_max``
    of each and as many of one as of the other (flat indices).

    ``taylor`` (scores ``G theta``): drop the largest positive, grow the most
    negative; bits whose first-order estimate would not lower the loss are left
    out, so the lists may be shorter than ``n_max``. ``paper`` (scores
    ``|G theta|``): drop the lowest, grow the highest. The two searches run on
    two threads (numpy releases the GIL).

    ``penalty`` (taylor only; >= 0 per weight, e.g. ``caution *`` :func:`curvature`)
    is the estimated cost of flipping each bit elsewhere: it is subtracted from
    a drop's gain ``G theta`` and from a grow's ``-G theta`` (``scores`` is
    changed in place), so only bits whose gain exceeds their cost are flipped."""
    _, kept_bits, pruned_bits = edit_buffers(clf, masks_k)
    for name, start, end in _offsets(masks_k):
        kept_bits[start:end] = masks_k[name].detach().cpu().numpy().reshape(-1)
    np.logical_not(kept_bits, out=pruned_bits)
    if penalty is not None:
        if selection != "taylor":
            raise ValueError("a penalty (the guard's caution) applies to selection='taylor' only")
        np.add(scores, _signed(clf, penalty, kept_bits), out=scores)
    n_kept = int(np.count_nonzero(kept_bits))
    n_drop, n_grow = min(n_max, n_kept), min(n_max, kept_bits.size - n_kept)
    drop_largest = selection == "taylor"
    grow_largest = selection == "paper"
    with ThreadPoolExecutor(2) as pool:
        drop = pool.submit(pick, scores, kept_bits, n_drop, drop_largest, seed)
        grow = pool.submit(pick, scores, pruned_bits, n_grow, grow_largest, seed)
        drop, grow = drop.result(), grow.result()
    drop = drop[np.argsort(-scores[drop] if drop_largest else scores[drop], kind="stable")]
    grow = grow[np.argsort(-scores[grow] if grow_largest else scores[grow], kind="stable")]
    if selection == "taylor":
        drop = drop[: int(np.count_nonzero(scores[drop] > 0))]
        grow = grow[: int(np.count_nonzero(scores[grow] < 0))]
    n = min(drop.size, grow.size)
    return drop[:n], grow[:n]


def auto_ladder(total: int, n_max: int) -> list[int]:
    """The bit counts ``ratio="auto"`` tries: 1e-6 of the ``total`` prunable weights
    (at least 1), doubling, then ``n_max`` itself."""
    rungs, n = [], max(1, int(np.ceil(AUTO_START * total)))
    while n < n_max:
        rungs.append(n)
        n *= 2
    return rungs + [n_max] if n_max > 0 else []


def revert(model, concept: str, drops, grows) -> None:
    """Undo per-step flips, last step first."""
    for d, g in zip(reversed(drops), reversed(grows)):
        flip(model, concept, d, g, undo=True)


def count_flips(masks_k, drop, grow) -> dict[str, dict[str, int]]:
    """Per parameter: how many of the flat indices ``drop`` and ``grow`` fall in it."""
    offsets = _offsets(masks_k)
    return {name: {"dropped": int(d.size), "grown": int(g.size)}
            for (name, _, _), d, g in zip(offsets, _split(drop, offsets), _split(grow, offsets)) if d.size or g.size}
