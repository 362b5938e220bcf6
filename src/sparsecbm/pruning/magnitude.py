"""Magnitude scores |theta|: identical for every concept, the control that shows
what data-dependent (second-order, Wanda) scores add."""

from __future__ import annotations

import torch

from ..classifier import Classifier
from ..data import Split


def score(clf: Classifier, k: int, split: Split, config, gamma: float, seed: int, progress: bool = False) -> list[torch.Tensor]:
    model = clf.model
    params = dict(model.backbone.named_parameters())
    return [params[n].detach().abs() for n in model.masks[model.config.schema.concepts[k]]]
