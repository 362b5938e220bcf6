"""Sparsity-based intervention: correct a concept by rewiring its mask (METHOD.md §5).

The backbone theta, projector psi and classifier phi never change; only
concept k's mask M_k does. One step on text x with the true value c_k:

1. G = dL_k / d(M_k * theta) at x through subnetwork k, with L_k the concept's
   cross-entropy against c_k, plus (when the task label y is known) the
   cross-entropy of concept k's share of the task logits against y.
2. Saliency S_q = |G_q theta_q| for every prunable weight q (pruned ones too:
   the gradient at a pruned position says what growing it would do).
3. Drop the n kept weights with the lowest S, grow the n pruned weights with
   the highest S, n = round(ratio * #prunable weights). Sparsity is unchanged
   and exactly 2n mask bits flip. n = 0 changes nothing. Among equal
   saliencies the choice is deterministic (a seeded threshold estimate, then
   top-k over the candidates): exactly n either way.
4. Re-predict; repeat up to ``steps`` times while the concept is still wrong.

Edits are flat indices over the concatenation of the concept's prunable
weights (in ``model.masks[concept]`` order), so an edit can be undone bit for
bit. Persistent edits are logged on the classifier (``clf.interventions``) and
saved with it (``interventions.json`` + ``interventions.safetensors``).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .classifier import Classifier, check_texts
from .files import atomic_path, write_json

LOG_JSON = "interventions.json"
LOG_TENSORS = "interventions.safetensors"


@dataclass
class Edit:
    """One persisted mask edit: which bits of which concept flipped, and why."""

    concept: str
    value: str  # the corrected value
    ratio: float
    steps: int
    text: str
    label: str | None
    time: float
    per_layer: dict[str, dict[str, int]]  # param -> {"dropped": n, "grown": n}
    drop: torch.Tensor = field(repr=False)  # flat indices, every step concatenated
    grow: torch.Tensor = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        del d["drop"], d["grow"]
        d["bits_flipped"] = 2 * int(self.drop.numel())
        return d


@dataclass(frozen=True)
class InterventionResult:
    concept: str
    value: str  # the corrected value
    before: dict[str, Any]  # {"value", "probability", "label"}
    after: dict[str, Any]
    fixed: bool  # the concept now predicts ``value``
    steps: int  # steps run (stops early once fixed)
    n: int  # bits dropped (= grown) per step
    per_layer: dict[str, dict[str, int]]  # param -> {"dropped": n, "grown": n}, over all steps
    persisted: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _buffers(clf: Classifier, masks_k: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat float scores, kept bits and pruned bits, reused across calls (a fresh
    ~40 MB array per step costs more in page faults than the work itself)."""
    total = sum(m.numel() for m in masks_k.values())
    cached = getattr(clf, "_edit_buffers", None)
    if cached is None or cached[0].size != total:
        cached = (np.empty(total, np.float32), np.empty(total, bool), np.empty(total, bool))
        clf._edit_buffers = cached
    return cached


def drop_and_grow(
    clf: Classifier, masks_k: dict[str, torch.Tensor], scores: np.ndarray, n: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The n kept weights of lowest saliency and the n pruned ones of highest, as
    flat indices. The two searches run on two threads (numpy releases the GIL)."""
    _, kept_bits, pruned_bits = _buffers(clf, masks_k)
    for name, start, end in _offsets(masks_k):
        kept_bits[start:end] = masks_k[name].detach().cpu().numpy().reshape(-1)
    np.logical_not(kept_bits, out=pruned_bits)
    with ThreadPoolExecutor(2) as pool:
        drop = pool.submit(pick, scores, kept_bits, n, False, seed)
        grow = pool.submit(pick, scores, pruned_bits, n, True, seed)
        return torch.from_numpy(drop.result()), torch.from_numpy(grow.result())


# ---------------------------------------------------------------- one step


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


def _check(clf: Classifier, concept: str, value: str, label: str | None, ratio: float, steps: int) -> tuple[int, int, int | None]:
    if clf.config.kind != "sparsecbm":
        raise ValueError(f"interventions rewire concept masks; a {clf.config.kind!r} model has none (train --model sparsecbm)")
    schema = clf.schema
    k, v = concept_value(clf, concept, value)
    if label is not None and label not in schema.labels:
        raise ValueError(f"unknown label {label!r}; the labels are {list(schema.labels)}")
    if not 0.0 <= ratio < 0.5:
        raise ValueError(f"ratio must be in [0, 0.5), got {ratio}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return k, v, None if label is None else schema.labels.index(label)


def tokenize_one(clf: Classifier, text: str) -> dict[str, torch.Tensor]:
    """One text, tokenized as the model reads it, on the model's device."""
    enc = clf.tokenizer([text], truncation=True, max_length=clf.max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"].to(clf.device), "attention_mask": enc["attention_mask"].to(clf.device)}


def saliency(
    clf: Classifier, k: int, batch: dict[str, torch.Tensor], value: int, label: int | None, out: np.ndarray | None = None
) -> np.ndarray:
    """S = |dL_k/d(M_k theta) * theta| over concept k's prunable weights, flat float32 (into ``out``)."""
    model = clf.model
    concept = clf.schema.concepts[k]
    params = dict(model.backbone.named_parameters())
    masked = {n: w.detach().requires_grad_(True) for n, w in model.masked_weights(concept, trainable=False).items()}
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            z = model.encode(batch["input_ids"], batch["attention_mask"], weights=masked)
            cols = model.concept_slice(k)
            logits = F.linear(z, model.projector.weight[cols], model.projector.bias[cols])
            loss = F.cross_entropy(logits, torch.tensor([value], device=logits.device))
            if label is not None:
                task = model.concept_term(k, torch.sigmoid(logits)) + model.classifier.bias
                loss = loss + F.cross_entropy(task, torch.tensor([label], device=logits.device))
            grads = torch.autograd.grad(loss, list(masked.values()))
    finally:
        model.train(was_training)
    if out is None:
        out = np.empty(sum(g.numel() for g in grads), np.float32)
    start = 0
    for n, g in zip(masked, grads):
        piece = torch.from_numpy(out[start : start + g.numel()]).view(g.shape)
        torch.mul(g, params[n].detach(), out=piece).abs_()  # no temporaries
        start += g.numel()
    return out


def concept_k_logits(clf: Classifier, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
    """Concept k's logits (C_k,) on one tokenized text, through its current mask."""
    model = clf.model
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return model.concept_logits(batch["input_ids"], batch["attention_mask"], k)[0].float().cpu()
    finally:
        model.train(was_training)


def task_from(clf: Classifier, concept_logits: list[torch.Tensor]) -> torch.Tensor:
    """Task logits (C_y,) or (n, C_y) from every concept's logits, (C_k,) or (n, C_k) each (Eq. 3)."""
    with torch.inference_mode():
        a = torch.sigmoid(torch.cat(concept_logits, dim=-1)).to(clf.device)
        return clf.model.classifier(a).float().cpu()


def edit(
    clf: Classifier, k: int, batch: dict[str, torch.Tensor], logits: torch.Tensor, value: int, label: int | None,
    n: int, steps: int, seed: int = 0,
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Run up to ``steps`` drop/grow steps on concept k's mask (left edited), stopping
    once the concept predicts ``value``; ``logits`` (C_k,) are its logits before the
    edit, which the caller already has. Returns per-step drops and grows and the
    concept's logits afterwards."""
    concept = clf.schema.concepts[k]
    masks_k = clf.model.masks[concept]
    drops: list[torch.Tensor] = []
    grows: list[torch.Tensor] = []
    if n == 0:  # nothing would flip: no gradient, no step
        return drops, grows, logits
    try:
        for step in range(steps):
            if int(logits.argmax()) == value:
                break
            scores = saliency(clf, k, batch, value, label, out=_buffers(clf, masks_k)[0])
            drop, grow = drop_and_grow(clf, masks_k, scores, n, seed + step)
            flip(clf.model, concept, drop, grow)
            drops.append(drop)
            grows.append(grow)
            logits = concept_k_logits(clf, batch, k)
    except BaseException:
        revert(clf.model, concept, drops, grows)
        raise
    return drops, grows, logits


def _describe(clf: Classifier, k: int, concept_logits: list[torch.Tensor]) -> dict[str, Any]:
    p = concept_logits[k].softmax(-1)
    v = int(p.argmax())
    return {"value": clf.schema.concept_values[k][v], "probability": float(p[v]),
            "label": clf.schema.labels[int(task_from(clf, concept_logits).argmax())]}


def intervene(
    clf: Classifier,
    text: str,
    concept: str,
    value: str,
    *,
    ratio: float = 0.01,
    steps: int = 1,
    persist: bool = False,
    label: str | None = None,
    seed: int = 0,
) -> InterventionResult:
    """Correct ``concept`` to ``value`` on ``text`` by rewiring its mask.

    ``persist=False`` restores the mask afterwards (the paper's per-example
    protocol); ``persist=True`` keeps the edit and appends it to
    ``clf.interventions`` (undo with :func:`undo`). ``label``, when known, adds
    the task term to the loss whose gradient ranks the weights."""
    (text,) = check_texts([text])
    k, v, y = _check(clf, concept, value, label, ratio, steps)
    masks_k = clf.model.masks[concept]
    n = round(ratio * sum(m.numel() for m in masks_k.values()))
    batch = tokenize_one(clf, text)
    logits = [concept_k_logits(clf, batch, j) for j in range(len(clf.schema.concepts))]
    before = _describe(clf, k, logits)
    drops, grows, logits[k] = edit(clf, k, batch, logits[k], v, y, n, steps, seed)
    after = _describe(clf, k, logits)
    drop_all = torch.cat(drops) if drops else torch.zeros(0, dtype=torch.long)
    grow_all = torch.cat(grows) if grows else torch.zeros(0, dtype=torch.long)
    per_layer = _count(masks_k, drop_all, grow_all)
    if persist and drops:
        clf.interventions.append(Edit(concept, value, ratio, len(drops), text, label, time.time(), per_layer,
                                      drop_all.to(torch.int64), grow_all.to(torch.int64)))
    else:
        revert(clf.model, concept, drops, grows)
    return InterventionResult(concept, value, before, after, after["value"] == value, len(drops), n, per_layer,
                              persist and bool(drops))


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
    steps = _split_steps(edit)
    revert(clf.model, edit.concept, [d for d, _ in steps], [g for _, g in steps])
    clf.interventions.pop()
    return edit


def _split_steps(edit: Edit) -> list[tuple[torch.Tensor, torch.Tensor]]:
    n = edit.drop.numel() // max(edit.steps, 1)
    return [(edit.drop[i * n : (i + 1) * n], edit.grow[i * n : (i + 1) * n]) for i in range(edit.steps)]


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
    path = Path(path)
    if not (path / LOG_JSON).exists():
        return []
    meta = json.loads((path / LOG_JSON).read_text(encoding="utf-8"))
    tensors = load_file(str(path / LOG_TENSORS))
    edits = []
    for i, d in enumerate(meta["edits"]):
        d = {k: v for k, v in d.items() if k != "bits_flipped"}
        edits.append(Edit(**d, drop=tensors[f"{i}.drop"], grow=tensors[f"{i}.grow"]))
    return edits
