"""The subnetwork encoder: text -> pooled representation z, through the dense backbone or
through one concept's masked subnetwork.

SparseCBM (Eq. 3): concept k reads the backbone with weights ``M_k * theta``,
``z_k = pool(f_{M_k * theta}(x))``. The concept is an explicit argument of every pass
(``functional_call`` with the masked weights), never module state: the authors' code kept
it in a switch that never reached the masked layers, so every concept used the first mask.
Pooling is a mean over real tokens (padding never counts) or, for decoders, optionally the
last real token.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.autograd.graph import increment_version
from torch.func import functional_call
from transformers import PreTrainedModel

from .cache import VersionedCache
from .masks import Masks, MaskView, check_masks

POOLINGS = ("mean", "last")


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (n, T, E) over positions where ``attention_mask`` (n, T) is 1."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (n, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The hidden state of the last real token of each row (right padding)."""
    last = attention_mask.sum(1).clamp(min=1) - 1  # (n,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class SubnetworkEncoder(nn.Module):
    """A transformer backbone and, for SparseCBM, one boolean mask per concept and prunable
    weight (buffers, in ``state_dict`` as ``concept_masks.<k>.<param:name>``) that every pass
    of that concept reads; edit or replace one and the next pass reflects it. The masked
    weights ``M_k * theta`` are kept (:class:`~sparsecbm.cache.VersionedCache`) until the
    weight or the mask changes."""

    def __init__(self, backbone: PreTrainedModel, pooling: str = "mean", concepts: tuple[str, ...] = (),
                 masks: Masks | None = None) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        self.backbone, self.pooling, self.concepts = backbone, pooling, tuple(concepts)
        self.concept_masks: nn.ModuleList | None = None
        if masks is not None:
            check_masks(masks, backbone, self.concepts)
            # Buffers, so state_dict()/load_state_dict() and .to() carry them;
            # one child per concept, buffer names are parameter names with ":" for ".".
            self.concept_masks = nn.ModuleList()
            for concept in self.concepts:
                store = nn.Module()
                for name, mask in masks[concept].items():
                    store.register_buffer(name.replace(".", ":"), mask)  # the encoder owns them now
                self.concept_masks.append(store)
        self._mask_view: MaskView | None = None
        self._products = VersionedCache()  # (concept, name) -> M_k * theta, a constant
        self._number_masks = VersionedCache()  # (concept, name) -> M_k as 0/1 numbers

    @property
    def masks(self) -> MaskView | None:
        """``masks[concept][param_name]``: the boolean buffers (None without masks)."""
        if self.concept_masks is None:
            return None
        if self._mask_view is None:
            self._mask_view = MaskView(self)
        return self._mask_view

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

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)  # moves the mask buffers (as new tensors)
        self._mask_view = None
        self.clear_caches()
        return self

    def clear_caches(self) -> None:
        """Drop the kept masked weights; the next pass rebuilds them (a cold start)."""
        self._products.clear()
        self._number_masks.clear()

    def masked_weights(self, concept: str, trainable: bool | None = None) -> dict[str, torch.Tensor]:
        """``M_k * theta`` for every prunable weight of ``concept``'s subnetwork.

        Trainable products (the default when gradients are enabled) are built
        fresh, so gradients reach theta only through kept positions; under
        autocast (``--precision bf16``) they are built in the autocast dtype
        (the same values the matrix products would cast them to, one cast
        fewer per weight). Otherwise they are constants, kept and rebuilt
        when the weight or the mask changes (in place or replaced);
        explanations take gradients with respect to the input through these
        constants.
        """
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
            else:
                out[name] = self._products.get((concept, name), (weight, mask), lambda: _product(weight, mask),
                                               weight.device)
        return out

    def _number_mask(self, concept: str, name: str, mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``mask`` as 0/1 numbers of ``like``'s dtype and device, kept until the mask
        changes (a product with the bool mask itself converts it to numbers on every call)."""
        def numbers() -> torch.Tensor:
            with torch.inference_mode(False), torch.no_grad():
                return mask.to(device=like.device, dtype=like.dtype)
        return self._number_masks.get((concept, name), (mask,), numbers, like.dtype, like.device)

    def update_mask(self, concept: str, name: str, clear: np.ndarray, set_: np.ndarray) -> None:
        """Clear flat positions ``clear`` and set ``set_`` of one mask in place, and
        patch the kept ``M_k * theta`` at those positions only (instead of
        rebuilding it on the next pass) when it was current.

        On the CPU the writes go through numpy views (torch's per-call overhead
        on small index sets costs more than the writes); the mask's version
        counter is bumped by hand so every cache keyed on it still sees the edit."""
        mask = self.masks[concept][name]
        weight = dict(self.backbone.named_parameters())[name]
        product, current = self._products.peek((concept, name), (weight, mask), weight.device)
        _write(mask, clear, False)
        _write(mask, set_, True)
        if not current:
            return  # nothing kept (or the weight changed too): the next pass rebuilds
        _write(product, clear, 0.0)
        _write(product, set_, weight.detach(), source_index=set_)
        self._products.put((concept, name), (weight, mask), product, weight.device)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        concept: str | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        weights: dict[str, torch.Tensor] | None = None,
        frozen: bool = False,
    ) -> torch.Tensor:
        """Pooled representation z, (n, E), float32: through the dense backbone, or through
        ``concept``'s subnetwork.

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
        if weights is None and concept is not None:
            weights = self.masked_weights(concept, trainable=False if frozen else None)
        if weights is None:
            hidden = self.backbone(**inputs).last_hidden_state
        else:
            hidden = functional_call(self.backbone, weights, args=(), kwargs=inputs).last_hidden_state
        pool = masked_mean if self.pooling == "mean" else last_token
        return pool(hidden.float(), attention_mask)  # pooled in float32


def _product(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Never an inference tensor: a kept constant may enter an autograd graph.
    with torch.inference_mode(False), torch.no_grad():
        return weight.detach() * mask.to(weight.device)


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
