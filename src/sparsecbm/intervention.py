"""Sparsity-based intervention: correct a concept by rewiring its mask (METHOD.md §5).

The backbone theta, projector psi and classifier phi never change; only
concept k's mask M_k does. One step on texts x_1..x_n with true values c_k:

1. G = dL_k / d(M_k * theta), summed over the texts, through subnetwork k,
   with L_k = CE(phi_k a_k + b, y) + gamma * CE(logits_k, c_k) (the model's
   one definition, at the gamma the masks were mined with; the task term only
   when the labels are known).
2. Rank the weights (``selection``):

   - ``taylor`` (default): by a first-order Taylor expansion in the mask bit,
     dropping kept weight q changes L_k by about ``-G_q theta_q`` and growing
     pruned weight q by about ``+G_q theta_q``. Drop the kept weights with the
     largest positive ``G theta``, grow the pruned ones with the most negative;
     a bit whose estimate would not lower the loss is never flipped.
   - ``paper``: saliency ``|G theta|``; drop the kept weights of lowest
     saliency, grow the pruned ones of highest (the paper's rule, blind to
     sign; kept to reproduce its Fig. 3).

3. Flip the first n of each ranking: n = round(ratio * #prunable weights), or
   with ``ratio="auto"`` the smallest n of a geometric ladder (1e-6 of the
   prunable weights, doubling, up to ``max_ratio``) that fixes every text of
   the batch (failing that, the one fixing the most, then of lowest loss).
   Sparsity is unchanged: as many bits are dropped as grown.
4. Re-predict; repeat up to ``steps`` times while a text is still wrong.

Edits are flat indices over the concatenation of the concept's prunable
weights (in ``model.masks[concept]`` order), so an edit can be undone bit for
bit. Persistent edits are logged on the classifier (``clf.interventions``) and
saved with it (``interventions.json`` + ``interventions.safetensors``). A
:class:`~sparsecbm.guard.Guard` checks an edit on texts it did not see and
rolls it back when that concept's or the task's accuracy there drops.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .batching import check_texts
from .files import atomic_path, write_json

if TYPE_CHECKING:
    from .interfaces import ClassifierLike as Classifier

LOG_JSON = "interventions.json"
LOG_TENSORS = "interventions.safetensors"
SELECTIONS = ("taylor", "paper")
AUTO = "auto"
AUTO_START = 1e-6  # the auto ladder's first rung, as a fraction of the prunable weights
MAX_RATIO = 1e-3  # the auto ladder's default cap (0.1 %)
CHUNK = 32  # texts per forward pass when a correction batch is large


@dataclass
class Edit:
    """One persisted mask edit: which bits of which concept flipped, and why."""

    concept: str
    values: list[str]  # the corrected value, per text
    texts: list[str]
    labels: list[str] | None  # the task labels used in the loss, or None
    ratio: float | str  # as asked: a fraction, or "auto"
    selection: str
    steps: int
    step_sizes: list[int]  # bits dropped (= grown) at each step
    time: float
    per_layer: dict[str, dict[str, int]]  # param -> {"dropped": n, "grown": n}
    guard: dict[str, Any] | None  # the guard's verdict, when one checked the edit
    drop: torch.Tensor = field(repr=False)  # flat indices, every step concatenated
    grow: torch.Tensor = field(repr=False)

    @property
    def bits_flipped(self) -> int:
        return 2 * int(self.drop.numel())

    def describe(self) -> str:
        what = f"{self.concept} -> {self.values[0]!r}" if len(set(self.values)) == 1 else f"{self.concept} -> {self.values}"
        on = repr(self.texts[0][:50]) if len(self.texts) == 1 else f"{len(self.texts)} texts"
        return (f"{what}, ratio {self.ratio}, {self.selection}, {self.steps} step(s), "
                f"{self.bits_flipped} bits flipped, on {on}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        del d["drop"], d["grow"]
        d["bits_flipped"] = self.bits_flipped
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], drop: torch.Tensor, grow: torch.Tensor) -> "Edit":
        d = {k: v for k, v in d.items() if k != "bits_flipped"}
        if "text" in d:  # a log written before batch corrections: one text, equal steps, the paper's rule
            steps = max(int(d["steps"]), 1)
            text, value, label = d.pop("text"), d.pop("value"), d.pop("label", None)
            d.update(texts=[text], values=[value], labels=None if label is None else [label], selection="paper",
                     step_sizes=[int(drop.numel()) // steps] * steps, guard=None)
        return cls(**d, drop=drop, grow=grow)


@dataclass(frozen=True)
class CorrectionResult:
    """What one correction (of one or several texts, one concept) did."""

    concept: str
    values: list[str]  # the corrected value, per text
    before: list[dict[str, Any]]  # per text {"value", "probability", "label"}
    after: list[dict[str, Any]]  # the same once the edit is in place (or what it would have been, if rolled back)
    fixed: list[bool]  # per text: the concept now predicts the corrected value
    selection: str
    ratio: float | str  # as asked
    steps: int  # steps run (stops early once every text is fixed)
    step_sizes: list[int]  # bits dropped (= grown) at each step
    per_layer: dict[str, dict[str, int]]  # param -> {"dropped": n, "grown": n}, over all steps
    persisted: bool  # the edit is in place and logged
    outcome: str  # what happened to the edit and why, in words
    guard: dict[str, Any] | None = None  # the guard's verdict (accepted, reason, accuracies before/after)

    @property
    def n(self) -> int:
        """Bits dropped (= grown) in all."""
        return sum(self.step_sizes)

    @property
    def bits_flipped(self) -> int:
        return 2 * self.n

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n": self.n, "bits_flipped": self.bits_flipped}


@dataclass(frozen=True)
class InterventionResult:
    """What correcting one concept on one text did."""

    concept: str
    value: str  # the corrected value
    before: dict[str, Any]  # {"value", "probability", "label"}
    after: dict[str, Any]
    fixed: bool  # the concept now predicts ``value``
    selection: str
    steps: int  # steps run (stops early once fixed)
    n: int  # bits dropped (= grown) over all steps
    per_layer: dict[str, dict[str, int]]  # param -> {"dropped": n, "grown": n}, over all steps
    persisted: bool
    outcome: str  # what happened to the edit and why, in words
    guard: dict[str, Any] | None = None

    @property
    def bits_flipped(self) -> int:
        return 2 * self.n

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bits_flipped": self.bits_flipped}


# ---------------------------------------------------------------- selection


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
            model.update_mask(concept, name, clear=g if undo else d, set_=d if undo else g)
            counts[name] = {"dropped": int(d.size), "grown": int(g.size)}
    return counts


def edit_buffers(clf: Classifier, masks_k: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat float scores, kept bits and pruned bits, reused across calls (a fresh
    ~40 MB array per step costs more in page faults than the work itself)."""
    total = sum(m.numel() for m in masks_k.values())
    cached = clf.caches.get("edit_buffers")
    if cached is None or cached[0].size != total:
        cached = (np.empty(total, np.float32), np.empty(total, bool), np.empty(total, bool))
        clf.caches["edit_buffers"] = cached
    return cached


def _signed(clf: Classifier, penalty: np.ndarray, kept_bits: np.ndarray) -> np.ndarray:
    """``-penalty`` where a bit is kept and ``+penalty`` where it is pruned (``penalty``
    >= 0, float32), by setting the sign bit from the mask: exact, and plain passes
    instead of two masked ufuncs over 10^7 weights. Written into a reused buffer."""
    buf = clf.caches.get("penalty_buffer")
    if buf is None or buf.size != penalty.size:
        buf = clf.caches["penalty_buffer"] = np.empty(penalty.size, np.uint32)
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


# ---------------------------------------------------------------- one edit


def tokenize(clf: Classifier, texts: Sequence[str]) -> list[tuple[slice, dict[str, torch.Tensor]]]:
    """Texts as the model reads them, in chunks of at most CHUNK (padded per chunk), on its device."""
    chunks = []
    for start in range(0, len(texts), CHUNK):
        enc = clf.tokenizer(list(texts[start : start + CHUNK]), padding=True, truncation=True,
                            max_length=clf.max_length, return_tensors="pt")
        chunks.append((slice(start, start + CHUNK), {key: enc[key].to(clf.device) for key in ("input_ids", "attention_mask")}))
    return chunks


def tokenize_one(clf: Classifier, text: str) -> list[tuple[slice, dict[str, torch.Tensor]]]:
    """One text, tokenized as the model reads it (one chunk)."""
    return tokenize(clf, [text])


def concept_k_logits(clf: Classifier, batches: list[tuple[slice, dict]], k: int) -> torch.Tensor:
    """Concept k's logits (n, C_k) on tokenized texts, through its current mask, on the CPU."""
    model = clf.model
    with model.evaluating(), torch.inference_mode():
        return torch.cat([model.concept_logits(b["input_ids"], b["attention_mask"], k).float().cpu() for _, b in batches])


def _gradients(
    clf: Classifier, k: int, batches: list[tuple[slice, dict]], values: torch.Tensor, labels: torch.Tensor | None,
    masked: dict[str, torch.Tensor],
):
    """Per batch, the gradient of L_k (summed over its texts) with respect to concept
    k's masked weights ``masked`` (which must require grad): a generator of lists."""
    model = clf.model
    with model.evaluating(), torch.enable_grad():
        for rows, b in batches:
            y = None if labels is None else labels[rows].to(clf.device)
            loss = model.concept_loss(b["input_ids"], b["attention_mask"], k, values[rows].to(clf.device), y,
                                      gamma=clf.mining_gamma, reduction="sum", weights=masked)
            yield torch.autograd.grad(loss, list(masked.values()))


def _masked_leaves(clf: Classifier, k: int) -> dict[str, torch.Tensor]:
    concept = clf.schema.concepts[k]
    return {n: w.detach().requires_grad_(True) for n, w in clf.model.masked_weights(concept, trainable=False).items()}


def _flat_times_theta(clf: Classifier, names, tensors, out: np.ndarray, square: bool = False) -> np.ndarray:
    """``out`` (flat float32) = concat of ``tensors * theta`` (or ``tensors * theta^2``) over the named weights."""
    params = dict(clf.model.backbone.named_parameters())
    start = 0
    for n, g in zip(names, tensors):
        piece = torch.from_numpy(out[start : start + g.numel()]).view(g.shape)
        theta = params[n].detach()
        if square:
            piece.copy_((g * theta * theta).cpu())
        elif g.device.type == "cpu":
            torch.mul(g, theta, out=piece)  # no temporaries
        else:
            piece.copy_((g * theta).cpu())
        start += g.numel()
    return out


def saliency(
    clf: Classifier, k: int, batches: list[tuple[slice, dict]], values: torch.Tensor, labels: torch.Tensor | None,
    *, selection: str = "taylor", out: np.ndarray | None = None,
) -> np.ndarray:
    """``G theta`` (taylor) or ``|G theta|`` (paper) over concept k's prunable weights,
    flat float32 (into ``out``); G is the gradient of L_k summed over the texts."""
    masked = _masked_leaves(clf, k)
    grads = None
    for g in _gradients(clf, k, batches, values, labels, masked):
        grads = list(g) if grads is None else [a.add_(c) for a, c in zip(grads, g)]
    if out is None:
        out = np.empty(sum(g.numel() for g in grads), np.float32)
    _flat_times_theta(clf, masked, grads, out)
    if selection == "paper":
        np.abs(out, out=out)
    return out


def curvature(
    clf: Classifier, k: int, texts: Sequence[str], values: torch.Tensor, labels: torch.Tensor | None,
    *, progress: bool = False,
) -> np.ndarray:
    """What flipping each of concept k's mask bits costs on ``texts``, to second order:
    ``theta^2 F / 2`` with F the diagonal empirical Fisher of L_k (the mean of
    squared per-text gradients), flat float32 over the prunable weights. One
    forward+backward per text. At a trained model the first-order term of a
    general set's loss is small; this is the term that grows with |theta|, which
    is what makes a large weight's drop hurt every input."""
    masked = _masked_leaves(clf, k)
    fisher = [torch.zeros_like(w) for w in masked.values()]
    singles = [(slice(i, i + 1), b) for i in range(len(texts)) for _, b in tokenize(clf, [texts[i]])]
    for g in tqdm(_gradients(clf, k, singles, values, labels, masked), total=len(singles),
                  desc=f"guard curvature ({clf.schema.concepts[k]})", disable=not progress, leave=False):
        for f, x in zip(fisher, g):
            f.addcmul_(x, x)
    for f in fisher:
        f.mul_(0.5 / max(1, len(texts)))
    return _flat_times_theta(clf, masked, fisher, np.empty(sum(f.numel() for f in fisher), np.float32), square=True)


def _n_bits(total: int, ratio: float) -> int:
    return round(ratio * total)


def edit(
    clf: Classifier, k: int, batches: list[tuple[slice, dict]], logits: torch.Tensor, values: torch.Tensor,
    labels: torch.Tensor | None, *, ratio: float | str, selection: str, steps: int, max_ratio: float = MAX_RATIO,
    seed: int = 0, penalty: np.ndarray | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], torch.Tensor]:
    """Run up to ``steps`` drop/grow steps on concept k's mask (left edited), stopping
    once every text predicts its ``values`` (n,); ``logits`` (n, C_k) are concept k's
    logits before the edit, which the caller already has. Returns per-step drops
    and grows (sorted flat indices) and the concept's logits afterwards.
    ``penalty``: per-bit cost of a flip elsewhere, see :func:`rank`."""
    concept = clf.schema.concepts[k]
    masks_k = clf.model.masks[concept]
    total = sum(m.numel() for m in masks_k.values())
    n_max = _n_bits(total, max_ratio if ratio == AUTO else ratio)
    drops: list[np.ndarray] = []
    grows: list[np.ndarray] = []
    try:
        for step in range(steps):
            if n_max == 0 or bool((logits.argmax(-1) == values).all()):
                break  # nothing to flip, or nothing left to fix: no gradient, no step
            scores = saliency(clf, k, batches, values, labels, selection=selection, out=edit_buffers(clf, masks_k)[0])
            drop, grow = rank(clf, masks_k, scores, n_max, selection, seed + step, penalty)
            if drop.size == 0:
                break  # no bit would lower the loss
            if ratio == AUTO:
                n, logits = search(clf, k, batches, values, drop, grow, total)
            else:
                n = drop.size
                flip(clf.model, concept, drop, grow)
                logits = concept_k_logits(clf, batches, k)
            drops.append(np.sort(drop[:n]))
            grows.append(np.sort(grow[:n]))
    except BaseException:
        revert(clf.model, concept, drops, grows)
        raise
    return drops, grows, logits


def search(
    clf: Classifier, k: int, batches: list[tuple[slice, dict]], values: torch.Tensor, drop: np.ndarray,
    grow: np.ndarray, total: int,
) -> tuple[int, torch.Tensor]:
    """Flip growing prefixes of the rankings along the auto ladder; stop at the first
    that fixes every text. Leaves the best prefix flipped (every text fixed, else
    the most fixed, then the lowest concept loss) and returns its size and logits."""
    model, concept = clf.model, clf.schema.concepts[k]
    done, best = 0, None
    try:
        for n in auto_ladder(total, drop.size):
            flip(model, concept, drop[done:n], grow[done:n])  # the rankings nest: flip only what is new
            done = n
            logits = concept_k_logits(clf, batches, k)
            fixed = int((logits.argmax(-1) == values).sum())
            loss = float(F.cross_entropy(logits, values, reduction="sum"))
            if best is None or (fixed, -loss) > (best[1], -best[2]):
                best = (n, fixed, loss, logits)
            if fixed == len(values):
                break
        n = best[0]
        flip(model, concept, drop[n:done], grow[n:done], undo=True)
    except BaseException:
        flip(model, concept, drop[:done], grow[:done], undo=True)
        raise
    return n, best[3]


def _as_list(name: str, given, n: int, allow_none: bool = False) -> list | None:
    """One str for every text, or a sequence of n; a clear error naming the argument otherwise."""
    if given is None and allow_none:
        return None
    if isinstance(given, str):
        return [given] * n
    if given is None or not hasattr(given, "__len__"):
        raise TypeError(f"{name}: expected a str or a list of {n} str, got {type(given).__name__}")
    given = list(given)
    if len(given) != n:
        raise ValueError(f"{name}: {len(given)} given for {n} texts; give one per text (or one str for all)")
    return given


def _check(
    clf: Classifier, concept: str, values: list[str], labels: list[str] | None, ratio, selection: str, steps: int,
    max_ratio: float,
) -> tuple[int, torch.Tensor, torch.Tensor | None]:
    if clf.config.kind != "sparsecbm":
        raise ValueError(f"interventions rewire concept masks; a {clf.config.kind!r} model has none (train --model sparsecbm)")
    schema = clf.schema
    k, _ = concept_value(clf, concept, values[0])
    v = torch.tensor([concept_value(clf, concept, value)[1] for value in values])
    y = None
    if labels is not None:
        for label in labels:
            if label not in schema.labels:
                raise ValueError(f"labels: unknown label {label!r}; the labels are {list(schema.labels)}")
        y = torch.tensor([schema.labels.index(label) for label in labels])
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {list(SELECTIONS)}, got {selection!r}")
    if ratio != AUTO and (isinstance(ratio, str) or not 0.0 <= ratio < 0.5):
        raise ValueError(f"ratio must be {AUTO!r} or a fraction in [0, 0.5), got {ratio!r}")
    if not 0.0 < max_ratio < 0.5:
        raise ValueError(f"max_ratio must be a fraction in (0, 0.5), got {max_ratio!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return k, v, y


def concept_value(clf: Classifier, concept: str, value: str) -> tuple[int, int]:
    """(k, value index), or a ValueError naming the concept or value and what exists."""
    schema = clf.schema
    if concept not in schema.concepts:
        raise ValueError(f"unknown concept {concept!r}; the model's concepts are {list(schema.concepts)}")
    k = schema.concepts.index(concept)
    values = schema.concept_values[k]
    if value not in values:
        raise ValueError(f"unknown value {value!r} for concept {concept!r}; its values are {list(values)}")
    return k, values.index(value)


def task_from(clf: Classifier, concept_logits: list[torch.Tensor]) -> torch.Tensor:
    """Task logits (C_y,) or (n, C_y) from every concept's logits, (C_k,) or (n, C_k) each (Eq. 3)."""
    with torch.inference_mode():
        return clf.model.task_logits_from([l.to(clf.device) for l in concept_logits]).float().cpu()


def _describe(clf: Classifier, k: int, concept_logits: list[torch.Tensor]) -> list[dict[str, Any]]:
    p = concept_logits[k].softmax(-1)  # (n, C_k)
    v = p.argmax(-1)
    label = task_from(clf, concept_logits).argmax(-1)
    schema = clf.schema
    return [{"value": schema.concept_values[k][int(v[i])], "probability": float(p[i, v[i]]),
             "label": schema.labels[int(label[i])]} for i in range(len(p))]


def correct(
    clf: Classifier,
    texts: Sequence[str],
    concept: str,
    values: str | Sequence[str],
    labels: str | Sequence[str] | None = None,
    *,
    ratio: float | str = AUTO,
    selection: str = "taylor",
    steps: int = 1,
    max_ratio: float = MAX_RATIO,
    persist: bool = False,
    guard=None,
    keep_unfixed: bool = False,
    seed: int = 0,
) -> CorrectionResult:
    """Correct ``concept`` to ``values`` (one per text, or one for all) on ``texts``
    with one edit of its mask, ranked by the gradient of L_k summed over them.

    ``ratio``: a fraction of the prunable weights to drop (and grow) per step, or
    ``"auto"``: the smallest count on the ladder (up to ``max_ratio``) that fixes
    them. ``labels``, when known, add the task term to L_k. ``persist=True``
    keeps the edit and logs it as one entry of ``clf.interventions`` (undo with
    :func:`undo`); otherwise the mask is restored. An edit that fixes none of
    the texts is rolled back unless ``keep_unfixed``. A ``guard``
    (:class:`~sparsecbm.guard.Guard`) shapes and judges the edit: with the
    taylor rule each bit's gain must exceed its second-order cost on the guard's
    texts (``guard.caution``), and the edit is kept only if the guard's
    accuracies hold and no earlier logged correction of the concept is undone;
    a rejected edit is rolled back bit for bit and not logged. ``outcome`` in the
    result says what happened and why."""
    texts = check_texts(texts)
    if not texts:
        raise ValueError("texts: no corrections given (an empty batch)")
    values = _as_list("values", values, len(texts))
    labels = _as_list("labels", labels, len(texts), allow_none=True)
    k, v, y = _check(clf, concept, values, labels, ratio, selection, steps, max_ratio)
    batches = tokenize(clf, texts)
    logits = [concept_k_logits(clf, batches, j) for j in range(len(clf.schema.concepts))]
    before = _describe(clf, k, logits)
    guard_before = guard.concept_logits(clf) if guard is not None else None
    logged_before = guard.logged_logits(clf, k) if guard is not None else None
    penalty = guard.penalty(clf, k) if guard is not None and selection == "taylor" else None
    drops, grows, logits[k] = edit(clf, k, batches, logits[k], v, y, ratio=ratio, selection=selection, steps=steps,
                                   max_ratio=max_ratio, seed=seed, penalty=penalty)
    keep, verdict = persist and bool(drops), None
    try:
        after = _describe(clf, k, logits)
        fixed = [a["value"] == value for a, value in zip(after, values)]
        if not drops:
            outcome = "nothing flipped: " + ("already right" if all(fixed) else "no weight would lower the loss")
        elif not (any(fixed) or keep_unfixed):
            keep, outcome = False, "rolled back: the edit fixed none of the texts"
        else:
            outcome = "kept" if persist else "preview only: the model is unchanged until the edit is kept"
        if guard is not None and drops and (keep or not persist):  # no verdict needed on an edit already refused
            verdict = guard.judge(clf, k, guard_before, logged_before)
            if not verdict["accepted"]:
                keep, outcome = False, f"rolled back by the guard: {verdict['reason']}"
    except BaseException:
        keep = False
        raise
    finally:
        if not keep:
            revert(clf.model, concept, drops, grows)
            if guard is not None and drops:
                guard.restore(clf, k, guard_before[k], logged_before)
    drop_all = np.concatenate(drops) if drops else np.zeros(0, np.int64)
    grow_all = np.concatenate(grows) if grows else np.zeros(0, np.int64)
    per_layer = _count(clf.model.masks[concept], drop_all, grow_all)
    sizes = [int(d.size) for d in drops]
    if keep:
        clf.interventions.append(Edit(concept, values, texts, labels, ratio, selection, len(drops), sizes, time.time(),
                                      per_layer, verdict, torch.from_numpy(drop_all), torch.from_numpy(grow_all)))
    return CorrectionResult(concept, values, before, after, fixed, selection, ratio, len(drops), sizes, per_layer,
                            keep, outcome, verdict)


def intervene(
    clf: Classifier,
    text: str,
    concept: str,
    value: str,
    *,
    label: str | None = None,
    **kwargs: Any,
) -> InterventionResult:
    """Correct ``concept`` to ``value`` on one ``text`` by rewiring its mask.

    ``ratio`` ("auto"), ``selection`` ("taylor"), ``steps`` (1), ``max_ratio``,
    ``persist`` (False), ``guard``, ``keep_unfixed``, ``seed``: as in :func:`correct`. ``label``,
    when known, adds the task term to the loss that ranks the weights."""
    (text,) = check_texts([text])
    r = correct(clf, [text], concept, [value], None if label is None else [label], **kwargs)
    return InterventionResult(concept, value, r.before[0], r.after[0], r.fixed[0], r.selection, r.steps, r.n,
                              r.per_layer, r.persisted, r.outcome, r.guard)


def revert(model, concept: str, drops, grows) -> None:
    """Undo per-step flips, last step first."""
    for d, g in zip(reversed(drops), reversed(grows)):
        flip(model, concept, d, g, undo=True)


def _count(masks_k, drop, grow) -> dict[str, dict[str, int]]:
    """Per parameter: how many of the flat indices ``drop`` and ``grow`` fall in it."""
    offsets = _offsets(masks_k)
    return {name: {"dropped": int(d.size), "grown": int(g.size)}
            for (name, _, _), d, g in zip(offsets, _split(drop, offsets), _split(grow, offsets)) if d.size or g.size}


def undo(clf: Classifier) -> Edit:
    """Revert the last persisted edit exactly; returns it."""
    if not clf.interventions:
        raise ValueError("there is no intervention to undo")
    edit = clf.interventions[-1]
    # Steps are undone last-first: a bit dropped at one step and grown back at a
    # later one ends where it started.
    cuts = np.cumsum(edit.step_sizes)[:-1]
    revert(clf.model, edit.concept, np.split(edit.drop.numpy(), cuts), np.split(edit.grow.numpy(), cuts))
    clf.interventions.pop()
    return edit


def oracle(clf: Classifier, text: str, corrections: dict[str, str]) -> dict[str, Any]:
    """The classic CBM intervention: set each corrected concept's activations to
    its true value (1 for it, 0 for the others) and re-run the classifier.
    Fixes the output, not the subnetwork. Returns the label and its probabilities."""
    (text,) = check_texts([text])
    if not clf.config.has_concepts:
        raise ValueError("a Standard model has no concepts to intervene on")
    for concept, value in corrections.items():
        concept_value(clf, concept, value)
    out = clf.forward_texts([text])
    return oracle_labels(clf, out.activations, [corrections])[0]


def oracle_labels(clf: Classifier, activations: torch.Tensor, corrections: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Oracle intervention on a batch of activations (n, sum C_k): one dict of corrections per row."""
    schema = clf.schema
    a = activations.clone()
    for i, corr in enumerate(corrections):
        for concept, value in corr.items():
            k = schema.concepts.index(concept)
            cols = clf.model.concept_slice(k)
            onehot = torch.zeros(cols.stop - cols.start)
            onehot[schema.concept_values[k].index(value)] = 1.0
            a[i, cols] = onehot
    with torch.inference_mode():
        logits = clf.model.classifier(a.to(clf.device)).float().cpu()
    probs = logits.softmax(-1)
    return [{"label": schema.labels[int(p.argmax())], "probabilities": dict(zip(schema.labels, map(float, p)))}
            for p in probs]


# ---------------------------------------------------------------- persistence


def save_log(clf: Classifier, path: str | os.PathLike) -> None:
    """Write the intervention log next to the model (JSON + safetensors of flipped bits)."""
    path = Path(path)
    if not clf.interventions:
        for name in (LOG_JSON, LOG_TENSORS):
            (path / name).unlink(missing_ok=True)
        return
    tensors = {}
    for i, e in enumerate(clf.interventions):
        tensors[f"{i}.drop"] = e.drop.to(torch.int64).contiguous()
        tensors[f"{i}.grow"] = e.grow.to(torch.int64).contiguous()
    with atomic_path(path / LOG_TENSORS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "sparsecbm-interventions"})
    write_json(path / LOG_JSON, {"format": "sparsecbm-interventions", "edits": [e.to_json() for e in clf.interventions]})


def load_log(path: str | os.PathLike) -> list[Edit]:
    """The intervention log of a model folder ([] when it has none); a damaged log
    gets a ValueError naming the file."""
    path = Path(path)
    if not (path / LOG_JSON).exists():
        return []
    try:
        meta = json.loads((path / LOG_JSON).read_text(encoding="utf-8"))
        edits = meta["edits"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path / LOG_JSON}: damaged intervention log ({type(e).__name__}: {e})") from None
    try:
        tensors = load_file(str(path / LOG_TENSORS))
    except Exception as e:  # missing, truncated or garbled
        raise ValueError(f"{path / LOG_TENSORS}: damaged or missing ({e}); it must match {LOG_JSON}") from None
    try:
        return [Edit.from_json(d, tensors[f"{i}.drop"], tensors[f"{i}.grow"]) for i, d in enumerate(edits)]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path / LOG_JSON}: does not match {LOG_TENSORS} ({type(e).__name__}: {e})") from None
