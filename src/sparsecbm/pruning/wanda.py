"""Wanda scores |theta_ij| * ||X_j||_2 (Sun et al. 2023), per concept.

X_j is input feature j of a prunable linear layer, gathered over the real
tokens of calibration texts run through concept k's current subnetwork. The
calibration texts are the concept's data: rows where concept k is annotated
(its value is not "unknown"), so each concept gets its own statistics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import UNKNOWN, Split
from ..data.batching import iter_batches

if TYPE_CHECKING:
    from ..interfaces import ClassifierLike as Classifier


def concept_rows(split: Split, schema, k: int) -> np.ndarray:
    """Rows where concept k has a known value (all rows if it is never known)."""
    values = schema.concept_values[k]
    if UNKNOWN in values:
        rows = np.flatnonzero(split.concepts[:, k] != values.index(UNKNOWN))
        if len(rows):
            return rows
    return np.arange(len(split))


class _InputNorms:
    """Running sum of squares of each input feature of one linear layer, real tokens only."""

    def __init__(self, in_features: int, device: torch.device) -> None:
        self.sq = torch.zeros(in_features, dtype=torch.float64, device=device)
        self.token_mask: torch.Tensor | None = None  # (n, T), set before each batch

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x = args[0].detach()  # (n, T, in)
        if self.token_mask is not None:
            x = x * self.token_mask.unsqueeze(-1).to(x.dtype)
        self.sq += x.double().pow(2).sum(dim=(0, 1))


def score(clf: Classifier, k: int, split: Split, config, gamma: float, seed: int, progress: bool = False) -> list[torch.Tensor]:
    model = clf.model
    concept = model.config.schema.concepts[k]
    names = list(model.masks[concept])
    modules = dict(model.backbone.named_modules())
    params = dict(model.backbone.named_parameters())
    norms = {n: _InputNorms(params[n].shape[1], params[n].device) for n in names}
    handles = [modules[n.removesuffix(".weight")].register_forward_pre_hook(norms[n]) for n in names]
    rng = np.random.default_rng(seed)
    pool = concept_rows(split, model.config.schema, k)
    idx = np.sort(rng.choice(pool, size=min(config.calibration, len(pool)), replace=False))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            batches = iter_batches(clf.tokenizer, split.texts, idx, config.fisher_batch_size, clf.max_length)
            for _, batch in tqdm(batches, desc=f"calibration {concept}", disable=not progress, leave=False):
                batch = {key: v.to(clf.device) for key, v in batch.items()}
                for hook in norms.values():
                    hook.token_mask = batch["attention_mask"]
                model.encode(batch["input_ids"], batch["attention_mask"], concept)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [params[n].detach().abs() * norms[n].sq.sqrt().float().unsqueeze(0) for n in names]
