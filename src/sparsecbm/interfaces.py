"""What the explanation, intervention and pruning code needs of a classifier.

:class:`sparsecbm.classifier.Classifier` is one; it calls into those modules
for ``explain``, ``intervene`` and mining, so they name this protocol rather
than the class (the class importing them and them importing it would be an
import circle).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from .cache import VersionedCache
from .data import Schema, Split
from .model import ConceptBottleneckModel
from .outputs import CBMOutput, ConceptOutputs


class ClassifierLike(Protocol):
    """Every member those modules use, and nothing else."""

    model: ConceptBottleneckModel
    tokenizer: PreTrainedTokenizerBase
    max_length: int
    interventions: list  # persisted mask edits (sparsecbm.interventions.Edit), oldest first
    cache: VersionedCache  # derived data explanations and interventions reuse

    def require_masks(self, purpose: str) -> None: ...

    @property
    def schema(self) -> Schema: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def mining_gamma(self) -> float: ...

    def task_logits(self, outputs: Sequence[ConceptOutputs]) -> torch.Tensor: ...

    def forward_texts(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False,
                      desc: str = "predict") -> CBMOutput: ...

    def label_probabilities(self, task_logits: torch.Tensor) -> torch.Tensor: ...

    def read_label(self, activations: torch.Tensor, features=(), *, side: bool = True) -> torch.Tensor: ...

    def evaluate(self, data: Split, split: str = "test", *, batch_size: int = 64,
                 progress: bool = False) -> dict[str, Any]: ...
