"""The classifiers: Standard (backbone + linear head), the dense joint CBM and SparseCBM.

CBM pathway (METHOD.md §1): ``z = pool(f(x))`` -> concept logits ``p(z)`` (one
block of ``C_k`` logits per concept) -> activations ``a = sigmoid(logits)`` ->
task logits ``g(a)`` (the label head ``g``, soft, hard or embedding, with or
without a side channel, is in heads.py; every concept's share stays additive).
Pooling is a mean over real tokens (padding never counts) or, for decoders,
optionally the last real token.

SparseCBM (Eq. 3): concept k reads the backbone with weights ``M_k * theta``,
``z_k = pool(f_{M_k * theta}(x))``, ``logits_k = psi_k z_k``, and the task
logits are the sum over concepts of ``phi_k sigmoid(logits_k)`` plus the bias
(with the soft head; the other heads read concept k's features from z_k too).
The concept is an explicit argument of every pass (``functional_call`` with the
masked weights), never module state: the authors' code kept it in a switch that
never reached the masked layers, so every concept used the first mask.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from collections.abc import Mapping
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.graph import increment_version
from torch.func import functional_call
from transformers import PreTrainedModel

from .backbones import hidden_size
from .data import Schema
from .heads import LabelHead, check_head
from .masks import Masks, MaskView, check_masks, full_masks

MODEL_KINDS = ("standard", "cbm", "sparsecbm")
POOLINGS = ("mean", "last")


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


@dataclass
class CBMOutput:
    """One forward pass. ``concept_logits`` is empty for a Standard model."""

    task_logits: torch.Tensor  # (n, C_y)
    concept_logits: tuple[torch.Tensor, ...] = ()  # K tensors, (n, C_k) each
    activations: torch.Tensor | None = None  # (n, sum C_k) = sigmoid(concept logits)
    features: tuple[torch.Tensor, ...] = ()  # K tensors (n, F_k): what the label head reads besides (heads.py)


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (n, T, E) over positions where ``attention_mask`` (n, T) is 1."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (n, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The hidden state of the last real token of each row (right padding)."""
    last = attention_mask.sum(1).clamp(min=1) - 1  # (n,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class ConceptBottleneckModel(LabelHead, nn.Module):
    """A transformer backbone with a Standard head, a concept bottleneck, or
    a concept bottleneck whose concepts each read their own masked subnetwork.

    For SparseCBM, ``self.masks[concept][param_name]`` is the boolean mask (a
    buffer, in ``state_dict`` as ``concept_masks.<k>.<param:name>``) that every
    pass of that concept reads; edit or replace it and the next forward reflects it.
    """

    def __init__(self, backbone: PreTrainedModel, config: ModelConfig, masks: Masks | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        width = hidden_size(backbone.config)
        n_labels = len(config.schema.labels)
        if config.has_concepts:
            self.concept_sizes = config.schema.num_concept_values
            self.projector = nn.Linear(width, sum(self.concept_sizes))  # p_psi
            self.build_head(width, n_labels)  # g_phi (heads.py)
        else:
            self.concept_sizes = self.feature_sizes = ()
            self.head = nn.Linear(width, n_labels)
        self.concept_masks: nn.ModuleList | None = None
        self._mask_view: Masks | None = None
        if config.kind == "sparsecbm":
            masks = masks if masks is not None else full_masks(backbone, config.schema.concepts)
            check_masks(masks, backbone, config.schema.concepts)
            # Buffers, so state_dict()/load_state_dict() and .to() carry them;
            # one child per concept, buffer names are parameter names with ":" for ".".
            self.concept_masks = nn.ModuleList()
            for concept in config.schema.concepts:
                store = nn.Module()
                for name, mask in masks[concept].items():
                    store.register_buffer(name.replace(".", ":"), mask)  # the model owns them now
                self.concept_masks.append(store)
        elif masks is not None:
            raise ValueError(f"a {config.kind!r} model has no concept masks")
        self._masked_cache: dict[tuple[str, str], tuple[tuple, torch.Tensor]] = {}
        self._number_masks: dict[tuple[str, str], tuple[tuple, torch.Tensor]] = {}

    @property
    def masks(self) -> Masks | None:
        """``masks[concept][param_name]``: the boolean buffers every pass of that
        concept reads (None unless SparseCBM). Edit a tensor in place, or assign
        ``masks[concept][name] = ...``, ``masks[concept] = {...}`` or
        ``model.masks = {...}``: each copies into the buffers."""
        if self.concept_masks is None:
            return None
        if self._mask_view is None:
            self._mask_view = MaskView(self)
        return self._mask_view

    @masks.setter
    def masks(self, masks: Masks) -> None:
        if self.concept_masks is None:
            raise ValueError(f"a {self.config.kind!r} model has no concept masks")
        check_masks(masks, self.backbone, self.config.schema.concepts)
        for concept, per_param in masks.items():
            self.set_masks(concept, per_param)

    def set_masks(self, concept: str, per_param: Mapping[str, torch.Tensor]) -> None:
        """Copy new masks for some of ``concept``'s weights into its buffers (in place:
        every cache keyed on a mask's version sees the change)."""
        current = self.masks[concept]
        with torch.inference_mode(False), torch.no_grad():
            for name, mask in per_param.items():
                if name not in current:
                    raise KeyError(f"{name!r} is not a prunable weight of this backbone")
                if mask.shape != current[name].shape or mask.dtype != torch.bool:
                    raise ValueError(f"mask {concept!r}/{name}: expected bool {tuple(current[name].shape)}, "
                                     f"got {mask.dtype} {tuple(mask.shape)}")
                current[name].copy_(mask)

    def weights_only(self) -> nn.Module:
        """A module sharing every child but the mask buffers: what ``model.safetensors``
        holds (masks are saved bit-packed on their own). Its state_dict keys are the model's."""
        view = nn.Module()
        for name, child in self.named_children():
            if name != "concept_masks":
                view.add_module(name, child)
        return view

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)  # moves the mask buffers (as new tensors)
        self._mask_view = None
        self.clear_caches()
        return self

    def clear_caches(self) -> None:
        """Drop the cached masked weights; the next pass rebuilds them (a cold start)."""
        self._masked_cache.clear()
        self._number_masks.clear()

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
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]

    def concept_slice(self, k: int) -> slice:
        """Columns of concept k in the (n, sum C_k) logits and activations."""
        start = sum(self.concept_sizes[:k])
        return slice(start, start + self.concept_sizes[k])

    def masked_weights(self, concept: str, trainable: bool | None = None) -> dict[str, torch.Tensor]:
        """``M_k * theta`` for every prunable weight of ``concept``'s subnetwork.

        Trainable products (the default when gradients are enabled) are built
        fresh, so gradients reach theta only through kept positions; under
        autocast (``--precision bf16``) they are built in the autocast dtype
        (the same values the matrix products would cast them to, one cast
        fewer per weight). Otherwise they are constants, cached and rebuilt
        when the weight or the mask changes (in place or replaced);
        explanations take gradients with respect to the input through these
        constants.
        """
        assert self.masks is not None
        params = dict(self.backbone.named_parameters())
        if trainable is None:
            trainable = torch.is_grad_enabled()
        out = {}
        for name, mask in self.masks[concept].items():
            weight = params[name]
            if trainable:
                low = _autocast_dtype(weight)
                weight = weight if low is None else weight.to(low)
                out[name] = weight * self._number_mask(concept, name, mask, weight)
                continue
            # Holding the tensors keeps their ids unique while the stamp lives.
            stamp = (weight, weight._version, mask, mask._version, weight.device)
            hit = self._masked_cache.get((concept, name))
            if hit is None or not _same_stamp(hit[0], stamp):
                # Never an inference tensor: a cached constant may enter an autograd graph.
                with torch.inference_mode(False), torch.no_grad():
                    hit = (stamp, weight.detach() * mask.to(weight.device))
                self._masked_cache[(concept, name)] = hit
            out[name] = hit[1]
        return out

    def _number_mask(self, concept: str, name: str, mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``mask`` as 0/1 numbers of ``like``'s dtype and device, cached until the mask
        changes (a product with the bool mask itself converts it to numbers on every call)."""
        stamp = (mask, mask._version, like.dtype, like.device)
        hit = self._number_masks.get((concept, name))
        if hit is None or hit[0][0] is not mask or hit[0][1:] != stamp[1:]:
            with torch.inference_mode(False), torch.no_grad():
                hit = (stamp, mask.to(device=like.device, dtype=like.dtype))
            self._number_masks[(concept, name)] = hit
        return hit[1]

    def update_mask(self, concept: str, name: str, clear: np.ndarray, set_: np.ndarray) -> None:
        """Clear flat positions ``clear`` and set ``set_`` of one mask in place, and
        patch the cached ``M_k * theta`` at those positions only (instead of
        rebuilding it on the next pass) when the cache was current.

        On the CPU the writes go through numpy views (torch's per-call overhead
        on small index sets costs more than the writes); the mask's version
        counter is bumped by hand so every cache keyed on it still sees the edit."""
        mask = self.masks[concept][name]
        hit = self._masked_cache.get((concept, name))
        was_current = hit is not None and hit[0][2] is mask and hit[0][3] == mask._version
        _write(mask, clear, False)
        _write(mask, set_, True)
        if not was_current or hit[0][0]._version != hit[0][1]:
            return  # no current cache (or the weight changed too): the next pass rebuilds
        stamp, product = hit
        _write(product, clear, 0.0)
        _write(product, set_, stamp[0].detach(), source_index=set_)
        self._masked_cache[(concept, name)] = ((stamp[0], stamp[1], mask, mask._version, stamp[4]), product)

    def encode(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        concept: str | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        weights: dict[str, torch.Tensor] | None = None,
        frozen: bool = False,
    ) -> torch.Tensor:
        """Pooled representation z, (n, E), in the heads' dtype: through the dense
        backbone, or through ``concept``'s subnetwork.

        ``inputs_embeds`` (n, T, E) replaces the token embeddings of
        ``input_ids`` (explanations take gradients with respect to them);
        ``weights`` overrides ``concept``'s masked weights (interventions pass
        their own ``M_k * theta`` with gradients); ``frozen`` reads the subnetwork
        as constants even with gradients on (explanations differentiate with
        respect to the input only)."""
        inputs = {"attention_mask": attention_mask}
        if inputs_embeds is not None:
            inputs["inputs_embeds"] = inputs_embeds
        else:
            inputs["input_ids"] = input_ids
        if weights is not None:
            hidden = functional_call(self.backbone, weights, args=(), kwargs=inputs).last_hidden_state
        elif concept is None:
            hidden = self.backbone(**inputs).last_hidden_state
        else:
            weights = self.masked_weights(concept, trainable=False if frozen else None)
            hidden = functional_call(self.backbone, weights, args=(), kwargs=inputs).last_hidden_state
        pool = masked_mean if self.config.pooling == "mean" else last_token
        head = self.projector if self.config.has_concepts else self.head
        return pool(hidden.float(), attention_mask).to(head.weight.dtype)  # pooled in float32

    def concept_outputs(
        self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor, k: int, *, dense: bool = False,
        features: bool = True, **encode_kwargs,
    ) -> torch.Tensor:
        """Concept k's logits (n, C_k), then (``features=True``) the label head's features of
        concept k (n, F_k; none for a soft head without side channel): from its own
        subnetwork (SparseCBM) or the dense backbone (CBM, or ``dense=True``: a SparseCBM's
        shared weights without masks). ``encode_kwargs`` go to :meth:`encode`."""
        concept = self.config.schema.concepts[k] if self.config.kind == "sparsecbm" and not dense else None
        z = self.encode(input_ids, attention_mask, concept, **encode_kwargs)
        cols = self.concept_slice(k)
        logits = F.linear(z, self.projector.weight[cols], self.projector.bias[cols])
        if not (features and self.feature_sizes[k]):
            return logits
        return torch.cat([logits, *self.head_features(z, k)], dim=1)

    def concept_logits(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor, k: int, **kwargs) -> torch.Tensor:
        """Concept k's logits (n, C_k); see :meth:`concept_outputs`."""
        return self.concept_outputs(input_ids, attention_mask, k, features=False, **kwargs)

    def concept_loss(
        self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor, k: int, values: torch.Tensor,
        labels: torch.Tensor | None = None, *, gamma: float, reduction: str = "mean", **encode_kwargs,
    ) -> torch.Tensor:
        """L_k = CE(phi_k a_k + b, y) + gamma * CE(logits_k, c_k) (METHOD.md §3.1), through
        concept k's subnetwork: the loss that ranks weights for mining and for
        interventions. The task term uses concept k's own share of the task
        logits, so one pass suffices; without ``labels`` it is left out.
        ``values`` (n,) are concept k's value indices; ``encode_kwargs`` go to :meth:`encode`."""
        outputs = self.concept_outputs(input_ids, attention_mask, k, features=labels is not None, **encode_kwargs)
        logits = outputs[:, : self.concept_sizes[k]]  # (n, C_k)
        loss = gamma * F.cross_entropy(logits, values, reduction=reduction)
        if labels is not None:
            task = self.concept_part(k, outputs)  # (n, C_y)
            loss = loss + F.cross_entropy(task, labels, reduction=reduction)
        return loss

    def concept_part(self, k: int, outputs_k: torch.Tensor) -> torch.Tensor:
        """Concept k's own share of the task logits plus the bias (n, C_y), from its outputs
        (:meth:`concept_outputs`): its term, its 1/K of the side channel, and the bias."""
        c, r = self.concept_sizes[k], self.config.residual
        features = outputs_k[:, c:] if self.feature_sizes[k] else None
        task = self.concept_term(k, torch.sigmoid(outputs_k[:, :c]), features) + self.classifier.bias
        return task + self.side_out(features[:, -r:]) / len(self.concept_sizes) if r else task

    def task_logits_from(self, concept_outputs: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Task logits (..., C_y) from every concept's outputs (:meth:`concept_outputs`)."""
        logits, features = self.split_outputs(concept_outputs)
        activations = torch.sigmoid(torch.cat(logits, dim=-1))
        if activations.dim() == 1:
            return self.read_label(activations[None], tuple(f[None] for f in features))[0]
        return self.read_label(activations, features)

    def intervened(self, out: CBMOutput, chosen: torch.Tensor, concepts: torch.Tensor) -> CBMOutput:
        """``out`` with the concepts ``chosen`` ((n, K) bool) set to their true values
        ``concepts`` ((n, K) indices) as 0/1 activations (and, once the model has value
        prototypes, the features :meth:`true_features` gives), and the task logits read again."""
        parts = []
        for k, size in enumerate(self.concept_sizes):
            a_k = out.activations[:, self.concept_slice(k)]
            true_k = F.one_hot(concepts[:, k], size).to(a_k.dtype)
            parts.append(torch.where(chosen[:, k : k + 1], true_k, a_k))
        activations = torch.cat(parts, dim=1)
        features = self.true_features(out.features, concepts, out.activations, chosen)
        return CBMOutput(task_logits=self.read_label(activations, features), concept_logits=out.concept_logits,
                         activations=activations, features=features)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> CBMOutput:
        if not self.config.has_concepts:
            return CBMOutput(task_logits=self.head(self.encode(input_ids, attention_mask)))
        if self.config.kind == "sparsecbm":
            outputs = [self.concept_outputs(input_ids, attention_mask, k) for k in range(len(self.concept_sizes))]
            per_concept, features = self.split_outputs(outputs)
            logits = torch.cat(per_concept, dim=1)  # (n, sum C_k)
        else:
            z = self.encode(input_ids, attention_mask)
            logits = self.projector(z)
            features = self.head_features(z) if self.has_features else ()
        activations = torch.sigmoid(logits)
        return CBMOutput(
            task_logits=self.read_label(activations, features),
            concept_logits=torch.split(logits, self.concept_sizes, dim=1),
            activations=activations,
            features=features,
        )


def _write(target: torch.Tensor, index: np.ndarray, value, source_index: np.ndarray | None = None) -> None:
    """``target.view(-1)[index] = value`` (a scalar, or ``value.view(-1)[source_index]``), in place."""
    if index.size == 0:
        return
    if target.device.type == "cpu" and target.is_contiguous() and not target.requires_grad:
        flat = target.numpy().reshape(-1)  # a view
        flat[index] = value if source_index is None else value.numpy().reshape(-1)[source_index]
        increment_version(target)
        return
    idx = torch.from_numpy(index).to(target.device)
    with torch.inference_mode(False), torch.no_grad():
        target.view(-1)[idx] = value if source_index is None else value.reshape(-1)[idx]


def _autocast_dtype(weight: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast casts ``weight``'s matrix products to, or None when it is off."""
    kind = weight.device.type
    if weight.dtype != torch.float32 or not torch.is_autocast_enabled(kind):
        return None
    return torch.get_autocast_dtype(kind)


def _same_stamp(a: tuple, b: tuple) -> bool:
    return a[0] is b[0] and a[1] == b[1] and a[2] is b[2] and a[3] == b[3] and a[4] == b[4]


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
