"""What the model's parts hand each other: typed outputs instead of packed tensors.

- :class:`ConceptOutputs`: one concept's logits and the label head's features of it, on n
  texts (what the encoder-projector side gives the label head, concept by concept).
- :class:`CBMOutput`: one forward pass of the whole model.
- :class:`LogitParts`: the winning label's logit per text, taken apart (``LabelHead.logit_parts``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class ConceptOutputs:
    """Concept k's outputs on n texts: ``logits`` (n, C_k) and ``features`` (n, F_k), the
    numbers the label head reads of concept k besides its activations (F_k = 0 for a soft
    head without a side channel). Indexing takes rows: ``outputs[0]`` is one text's
    (leading dimension dropped), ``outputs[rows]`` a subset's."""

    logits: torch.Tensor
    features: torch.Tensor

    def values(self) -> torch.Tensor:
        """The predicted value index per text, (n,)."""
        return self.logits.argmax(-1)

    def __len__(self) -> int:
        return len(self.logits)

    def __getitem__(self, rows) -> "ConceptOutputs":
        return ConceptOutputs(self.logits[rows], self.features[rows])

    def __setitem__(self, rows, other: "ConceptOutputs") -> None:
        """Write ``other``'s rows into these rows, in place."""
        self.logits[rows] = other.logits
        self.features[rows] = other.features

    def to(self, *args, **kwargs) -> "ConceptOutputs":
        """Both tensors through ``Tensor.to`` (a device, a dtype)."""
        return ConceptOutputs(self.logits.to(*args, **kwargs), self.features.to(*args, **kwargs))

    def cpu_float(self) -> "ConceptOutputs":
        """float32 copies on the CPU, out of any autograd graph (what caches and callers keep)."""
        return ConceptOutputs(self.logits.detach().float().cpu(), self.features.detach().float().cpu())

    def clone(self) -> "ConceptOutputs":
        return ConceptOutputs(self.logits.clone(), self.features.clone())

    @staticmethod
    def cat(parts: Sequence["ConceptOutputs"]) -> "ConceptOutputs":
        """Rows of several chunks, in order."""
        return ConceptOutputs(torch.cat([p.logits for p in parts]), torch.cat([p.features for p in parts]))


def predicted_values(outputs: Sequence[ConceptOutputs]) -> np.ndarray:
    """Each text's predicted value index per concept, (n, K), from every concept's outputs."""
    return np.stack([o.values().cpu().numpy() for o in outputs], axis=1)


@dataclass
class CBMOutput:
    """One forward pass. ``concept_logits`` is empty for a Standard model."""

    task_logits: torch.Tensor  # (n, C_y)
    concept_logits: tuple[torch.Tensor, ...] = ()  # K tensors, (n, C_k) each
    activations: torch.Tensor | None = None  # (n, sum C_k) = sigmoid(concept logits)
    features: tuple[torch.Tensor, ...] = ()  # K tensors (n, F_k): what the label head reads besides (heads.py)

    def per_concept(self) -> list[ConceptOutputs]:
        """Every concept's :class:`ConceptOutputs` (features of width 0 when the head reads none)."""
        return [ConceptOutputs(logits, self.features[k] if self.features else logits.new_zeros(len(logits), 0))
                for k, logits in enumerate(self.concept_logits)]

    def predicted_values(self) -> np.ndarray:
        """Each text's predicted value index per concept, (n, K)."""
        return predicted_values(self.per_concept())


@dataclass(frozen=True)
class LogitParts:
    """The winning label's logit per text, taken apart, float32 on the CPU (each (n,) unless
    noted). ``values`` (n, K): each concept's term at its predicted value as 0/1 (with an
    embedding head, that value's embedding); ``nuance`` (n, K): the rest of each concept's
    term; ``side``: the side channel; ``bias``; ``label``: the winner; ``values_label``: the
    label the concept values alone give (no nuance, no side channel); ``share``:
    ``sum_k |values_k| / (sum_k |values_k| + sum_k |nuance_k| + |side| + |bias|)``."""

    values: torch.Tensor
    nuance: torch.Tensor
    side: torch.Tensor
    bias: torch.Tensor
    label: torch.Tensor
    values_label: torch.Tensor
    share: torch.Tensor
