"""Gradients and curvature of a concept's loss through its own subnetwork."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.batching import iter_batches
from ..outputs import ConceptOutputs

if TYPE_CHECKING:
    from ..interfaces import ClassifierLike as Classifier

CHUNK = 32  # texts per forward pass when a correction batch is large


def tokenize(clf: Classifier, texts: Sequence[str]) -> list[tuple[slice, dict[str, torch.Tensor]]]:
    """Texts as the model reads them (``data.batching``), in chunks of at most CHUNK (padded per
    chunk), on its device; each with the slice of ``texts`` it holds."""
    return [(slice(int(idx[0]), int(idx[-1]) + 1), {key: t.to(clf.device) for key, t in batch.items()})
            for idx, batch in iter_batches(clf.tokenizer, texts, range(len(texts)), CHUNK, clf.max_length)]


def concept_k_outputs(clf: Classifier, batches: list[tuple[slice, dict]], k: int) -> ConceptOutputs:
    """Concept k's outputs on tokenized texts, through its current mask, float32 on the CPU
    (``model.concept_outputs``)."""
    model = clf.model
    with model.evaluating(), torch.inference_mode():
        return ConceptOutputs.cat([model.concept_outputs(b["input_ids"], b["attention_mask"], k).cpu_float()
                                   for _, b in batches])


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
    return {n: w.detach().requires_grad_(True) for n, w in clf.model.encoder.masked_weights(concept, trainable=False).items()}


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
