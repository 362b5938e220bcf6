"""The classifiers: Standard (backbone + linear head) and the dense joint CBM.

CBM pathway (METHOD.md §1): ``z = pool(f(x))`` -> concept logits ``p(z)`` (one
block of ``C_k`` logits per concept) -> activations ``a = sigmoid(logits)`` ->
task logits ``g(a)``. Pooling is a mean over real tokens (padding never counts)
or, for decoders, optionally the last real token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from .backbones import hidden_size
from .data import Schema

MODEL_KINDS = ("standard", "cbm")
POOLINGS = ("mean", "last")


@dataclass(frozen=True)
class ModelConfig:
    """What a saved model is: its kind, backbone name, pooling and data schema."""

    kind: str = "cbm"  # "standard" (task head on z) or "cbm" (concept bottleneck)
    backbone: str = "minilm"  # as the user named it; the weights themselves are saved
    pooling: str = "mean"  # "mean" over real tokens, or "last" real token (decoders)
    schema: Schema = field(default_factory=lambda: Schema(labels=("0", "1")))

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind must be one of {list(MODEL_KINDS)}, got {self.kind!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {self.pooling!r}")
        if self.kind != "standard" and not self.schema.concepts:
            raise ValueError(
                f"a {self.kind!r} model needs concept annotations; the data has none "
                "(use --model standard, or name --concept-columns)"
            )

    @property
    def has_concepts(self) -> bool:
        return self.kind != "standard"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = self.schema.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return cls(**{**d, "schema": Schema.from_dict(d["schema"])})


@dataclass
class CBMOutput:
    """One forward pass. ``concept_logits`` is empty for a Standard model."""

    task_logits: torch.Tensor  # (n, C_y)
    concept_logits: tuple[torch.Tensor, ...] = ()  # K tensors, (n, C_k) each
    activations: torch.Tensor | None = None  # (n, sum C_k) = sigmoid(concept logits)


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (n, T, E) over positions where ``attention_mask`` (n, T) is 1."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (n, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The hidden state of the last real token of each row (right padding)."""
    last = attention_mask.sum(1).clamp(min=1) - 1  # (n,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class ConceptBottleneckModel(nn.Module):
    """A transformer backbone with a Standard head or a concept bottleneck."""

    def __init__(self, backbone: PreTrainedModel, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        width = hidden_size(backbone.config)
        n_labels = len(config.schema.labels)
        if config.has_concepts:
            self.concept_sizes = config.schema.num_concept_values
            self.projector = nn.Linear(width, sum(self.concept_sizes))  # p_psi
            self.classifier = nn.Linear(sum(self.concept_sizes), n_labels)  # g_phi
        else:
            self.concept_sizes = ()
            self.head = nn.Linear(width, n_labels)

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters outside the backbone (trained with their own learning rate)."""
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled representation z, (n, E), in float32."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pool = masked_mean if self.config.pooling == "mean" else last_token
        return pool(hidden.float(), attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> CBMOutput:
        z = self.encode(input_ids, attention_mask)
        if not self.config.has_concepts:
            return CBMOutput(task_logits=self.head(z))
        logits = self.projector(z)  # (n, sum C_k)
        activations = torch.sigmoid(logits)
        return CBMOutput(
            task_logits=self.classifier(activations),
            concept_logits=torch.split(logits, self.concept_sizes, dim=1),
            activations=activations,
        )


def joint_loss(
    out: CBMOutput, labels: torch.Tensor, concepts: torch.Tensor | None, gamma: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """CE(task) + gamma * sum_k CE(concept k logits, c_k) (Eq. 1; CE on logits).

    ``concepts`` is (n, K) value indices. A Standard model's loss is CE(task).
    """
    task = F.cross_entropy(out.task_logits, labels)
    if not out.concept_logits:
        return task, {"task": task.item()}
    concept = sum(
        F.cross_entropy(logits, concepts[:, k]) for k, logits in enumerate(out.concept_logits)
    )
    return task + gamma * concept, {"task": task.item(), "concepts": concept.item()}
