"""The classifiers: Standard (backbone + linear head), the dense joint CBM and SparseCBM,
each built from parts with one job each:

- ``encoder`` (:class:`~sparsecbm.encoder.SubnetworkEncoder`): text -> pooled z, through
  the dense backbone or one concept's masked subnetwork (it owns the masks);
- ``projector`` (:class:`~sparsecbm.heads.ConceptProjector`): z -> concept logits, one block
  of ``C_k`` logits per concept;
- ``head``: the label head (:class:`~sparsecbm.heads.LabelHead`: soft, hard or embedding,
  with or without a side channel; every concept's share stays additive), or a plain
  linear layer on z for a Standard model.

CBM pathway (docs/method.md): ``z = pool(f(x))`` -> concept logits ``p(z)`` ->
activations ``a = sigmoid(logits)`` -> task logits ``g(a)``. SparseCBM (Eq. 3): concept k
reads the backbone with weights ``M_k * theta``, ``z_k = pool(f_{M_k * theta}(x))``,
``logits_k = psi_k z_k``, and the label head reads concept k's activations and features
from z_k. The parts exchange :class:`~sparsecbm.outputs.ConceptOutputs`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from .backbones import hidden_size
from .data import Schema
from .encoder import POOLINGS, SubnetworkEncoder
from .heads import ConceptProjector, LabelHead, check_head
from .masks import Masks, MaskView, check_masks, full_masks
from .outputs import CBMOutput, ConceptOutputs

MODEL_KINDS = ("standard", "cbm", "sparsecbm")


def check_concepts(kind: str, schema: Schema) -> None:
    """A concept model needs data with concepts: a clear error before any work starts."""
    if kind != "standard" and not schema.concepts:
        raise ValueError(f"a {kind!r} model needs concept annotations; the data has none "
                         "(use --model standard, or name --concept-columns)")


@dataclass(frozen=True)
class ModelConfig:
    """What a saved model is: its kind, backbone name, pooling and data schema."""

    kind: str = "cbm"  # "standard" (head on z), "cbm" (dense bottleneck) or "sparsecbm" (a subnetwork per concept)
    backbone: str = "minilm"  # as the user named it; the weights themselves are saved
    pooling: str = "mean"  # "mean" over real tokens, or "last" real token (decoders)
    schema: Schema = field(default_factory=lambda: Schema(labels=("0", "1")))
    bottleneck: str = "soft"  # what the label head reads: "soft" activations, "hard" values, or "embedding"s
    residual: int = 0  # R unnamed side-channel numbers from the text straight to the label (0: none)
    embedding_dim: int = 16  # m numbers per concept value (embedding bottleneck only)

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind must be one of {list(MODEL_KINDS)}, got {self.kind!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {self.pooling!r}")
        check_head(self.kind, self.bottleneck, self.residual, self.embedding_dim)
        check_concepts(self.kind, self.schema)

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


class ConceptBottleneckModel(nn.Module):
    """A transformer backbone with a Standard head, a concept bottleneck, or
    a concept bottleneck whose concepts each read their own masked subnetwork.

    For SparseCBM, ``self.masks[concept][param_name]`` is the boolean mask that every
    pass of that concept reads; edit or replace it and the next forward reflects it.
    """

    def __init__(self, backbone: PreTrainedModel, config: ModelConfig, masks: Masks | None = None) -> None:
        super().__init__()
        self.config = config
        concepts = config.schema.concepts
        if config.kind == "sparsecbm":
            masks = masks if masks is not None else full_masks(backbone, concepts)
        elif masks is not None:
            raise ValueError(f"a {config.kind!r} model has no concept masks")
        self.encoder = SubnetworkEncoder(backbone, config.pooling, concepts, masks)
        width = hidden_size(backbone.config)
        n_labels = len(config.schema.labels)
        self.projector: ConceptProjector | None = None
        if config.has_concepts:
            self.projector = ConceptProjector(width, config.schema.num_concept_values)
            self.head = LabelHead(width, config.schema.num_concept_values, n_labels, config.bottleneck,
                                  config.residual, config.embedding_dim)
        else:
            self.head = nn.Linear(width, n_labels)

    @property
    def backbone(self) -> PreTrainedModel:
        return self.encoder.backbone

    @property
    def concept_sizes(self) -> tuple[int, ...]:
        """C_k, the number of values of each concept (none for a Standard model)."""
        return self.projector.sizes if self.projector is not None else ()

    @property
    def masks(self) -> MaskView | None:
        """``masks[concept][param_name]``: the boolean buffers every pass of that
        concept reads (None unless SparseCBM). Edit a tensor in place, or assign
        ``masks[concept][name] = ...``, ``masks[concept] = {...}`` or
        ``model.masks = {...}``: each copies into the buffers."""
        return self.encoder.masks

    @masks.setter
    def masks(self, masks: Masks) -> None:
        if self.encoder.masks is None:
            raise ValueError(f"a {self.config.kind!r} model has no concept masks")
        check_masks(masks, self.backbone, self.config.schema.concepts)
        for concept, per_param in masks.items():
            self.encoder.set_masks(concept, per_param)

    def weights_only(self, format_version: int = 2) -> nn.Module:
        """A module sharing every weight but not the mask buffers: what ``model.safetensors``
        holds (masks are saved bit-packed on their own). Its state_dict keys are the model's;
        with ``format_version=1``, those of the first save format, where the model was one
        flat module (``backbone.*``, ``classifier.*`` for ``head.linear.*``, ...)."""
        view = nn.Module()
        if format_version == 1:
            view.add_module("backbone", self.backbone)
            if self.projector is None:
                view.add_module("head", self.head)
                return view
            view.add_module("projector", self.projector)
            view.add_module("classifier", self.head.linear)
            for name in ("embedder", "side", "side_out"):
                if hasattr(self.head, name):
                    view.add_module(name, getattr(self.head, name))
            return view
        encoder = nn.Module()
        encoder.add_module("backbone", self.backbone)
        view.add_module("encoder", encoder)
        for name, child in self.named_children():
            if name != "encoder":
                view.add_module(name, child)
        return view

    def clear_caches(self) -> None:
        """Drop the kept masked weights; the next pass rebuilds them (a cold start)."""
        self.encoder.clear_caches()

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode (no dropout) for the block, then the mode it was in."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters outside the backbone (trained with their own learning rate)."""
        return [p for n, p in self.named_parameters() if not n.startswith("encoder.")]

    def encode(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor, concept: str | None = None,
               **encode_kwargs) -> torch.Tensor:
        """Pooled representation z, (n, E), in the heads' dtype (:meth:`SubnetworkEncoder.forward`)."""
        z = self.encoder(input_ids, attention_mask, concept, **encode_kwargs)
        return z.to((self.projector if self.projector is not None else self.head).weight.dtype)

    def concept_outputs(
        self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor, k: int, *, dense: bool = False,
        features: bool = True, **encode_kwargs,
    ) -> ConceptOutputs:
        """Concept k's logits (n, C_k) and (``features=True``) the label head's features of it
        (n, F_k; none for a soft head without side channel): from its own subnetwork
        (SparseCBM) or the dense backbone (CBM, or ``dense=True``: a SparseCBM's shared
        weights without masks). ``encode_kwargs`` go to :meth:`SubnetworkEncoder.forward`."""
        concept = self.config.schema.concepts[k] if self.config.kind == "sparsecbm" and not dense else None
        z = self.encode(input_ids, attention_mask, concept, **encode_kwargs)
        logits = self.projector.concept(z, k)
        if not (features and self.head.feature_sizes[k]):
            return ConceptOutputs(logits, logits.new_zeros(len(logits), 0))
        return ConceptOutputs(logits, self.head.head_features(z, k)[0])

    def concept_loss(
        self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor, k: int, values: torch.Tensor,
        labels: torch.Tensor | None = None, *, gamma: float, reduction: str = "mean", **encode_kwargs,
    ) -> torch.Tensor:
        """L_k = CE(phi_k a_k + b, y) + gamma * CE(logits_k, c_k) (docs/method.md), through
        concept k's subnetwork: the loss that ranks weights for mining and for
        interventions. The task term uses concept k's own share of the task
        logits, so one pass suffices; without ``labels`` it is left out.
        ``values`` (n,) are concept k's value indices; ``encode_kwargs`` go to :meth:`encode`."""
        outputs = self.concept_outputs(input_ids, attention_mask, k, features=labels is not None, **encode_kwargs)
        loss = gamma * F.cross_entropy(outputs.logits, values, reduction=reduction)
        if labels is not None:
            loss = loss + F.cross_entropy(self.head.concept_share(k, outputs), labels, reduction=reduction)
        return loss

    def task_logits(self, outputs: Sequence[ConceptOutputs]) -> torch.Tensor:
        """Task logits (..., C_y) from every concept's outputs (:meth:`concept_outputs`)."""
        return self.head.task_logits(outputs)

    def intervened(self, out: CBMOutput, chosen: torch.Tensor, concepts: torch.Tensor) -> CBMOutput:
        """``out`` with the concepts ``chosen`` ((n, K) bool) set to their true values
        ``concepts`` ((n, K) indices) as 0/1 activations (and, once the head has value
        prototypes, the features ``LabelHead.true_features`` gives), and the task logits read again."""
        activations, features = self.head.set_values(out.activations, out.features, concepts, chosen)
        return CBMOutput(task_logits=self.head.read_label(activations, features), concept_logits=out.concept_logits,
                         activations=activations, features=features)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> CBMOutput:
        if not self.config.has_concepts:
            return CBMOutput(task_logits=self.head(self.encode(input_ids, attention_mask)))
        if self.config.kind == "sparsecbm":
            outputs = [self.concept_outputs(input_ids, attention_mask, k) for k in range(len(self.concept_sizes))]
            logits = torch.cat([o.logits for o in outputs], dim=1)  # (n, sum C_k)
            features = tuple(o.features for o in outputs) if self.head.has_features else ()
        else:
            z = self.encode(input_ids, attention_mask)
            logits = self.projector(z)
            features = self.head.head_features(z) if self.head.has_features else ()
        activations = torch.sigmoid(logits)
        return CBMOutput(
            task_logits=self.head(activations, features),
            concept_logits=torch.split(logits, self.concept_sizes, dim=1),
            activations=activations,
            features=features,
        )


def joint_loss(
    out: CBMOutput, labels: torch.Tensor, concepts: torch.Tensor | None, gamma: float, task_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """task_weight * CE(task) + gamma * sum_k CE(concept k logits, c_k) (Eq. 1; CE on logits).

    ``concepts`` is (n, K) value indices. A Standard model's loss is CE(task).
    ``task_weight=0`` trains the concept model alone (sequential and independent CBMs).
    """
    task = F.cross_entropy(out.task_logits, labels)
    if not out.concept_logits:
        return task, {"task": task.item()}
    concept = sum(
        F.cross_entropy(logits, concepts[:, k]) for k, logits in enumerate(out.concept_logits)
    )
    return task_weight * task + gamma * concept, {"task": task.item(), "concepts": concept.item()}
