"""Magnitude scores |theta|: identical for every concept, the control that shows
what data-dependent (second-order, Wanda) scores add."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..data import Split

if TYPE_CHECKING:
    from ..interfaces import ClassifierLike as Classifier


def score(clf: Classifier, k: int, split: Split, config, gamma: float, seed: int, progress: bool = False) -> list[torch.Tensor]:
    model = clf.model
    params = dict(model.backbone.named_parameters())
    return [params[n].detach().abs() for n in model.masks[model.config.schema.concepts[k]]]
