"""The label head g of a concept model: concept activations (and, for some heads, per-concept
features) -> task logits, always as a sum of visible parts:

    task logits = sum_k term_k + side channel + bias

- ``soft`` (the paper's): ``term_k = phi_k a_k``, ``a_k = sigmoid(concept k's logits)``.
- ``hard``: ``term_k = phi_k onehot(argmax a_k)``; training passes a straight-through
  gradient (the forward reads the value, the backward the activations).
- ``embedding`` (Concept Embedding Models, Espinosa Zarlenga et al. 2022): every value v
  of concept k has an embedding ``e_kv(z)`` (m numbers) read from the text; the head
  reads their mix ``sum_v a_kv e_kv``, so nuance stays attributed to its concept; an
  intervention sets ``a_k`` to the true value's 0/1 and so swaps in that value's embedding,
  moved ``PROTOTYPE_MIX`` of the way to its *prototype* (the mean of ``e_kv`` over the
  training texts whose true value is v; :meth:`LabelHead.true_features`) once the trained
  model has them. A text whose value the model got wrong reads its true value's embedding
  through the wrong belief; the prototype says what the value usually means.
- ``residual R`` (any of the above): R unnamed numbers ``r = W_r z`` go straight to the
  label, ``side = phi_r r``: what the concepts do not explain, shown as such.

Concept k's *features* (n, F_k) are the numbers its head part reads besides its
activations: its value embeddings (C_k * m) then its R side-channel numbers, all read from
concept k's pooled text z_k (its own subnetwork in SparseCBM), so a mask edit of concept k
moves exactly its own parts. The side channel reads the mean over concepts of their
R numbers (in a dense CBM every concept's z is the same, so it is ``W_r z``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .counterfactuals import ValueShifts
from .files import atomic_path
from .outputs import ConceptOutputs, LogitParts
from .settings import SettingError

BOTTLENECKS = ("soft", "hard", "embedding")
# How far an intervened value's embedding moves toward its training prototype: chosen on CEBaB dev,
# one wrong concept set true, mean over 3 seeds of the CBM and the SparseCBM
# (benchmarks/experiments/value_prototypes.py; docs/interventions.md#value-prototypes).
PROTOTYPE_MIX = 0.5
PROTOTYPES = "prototypes.safetensors"  # the value prototypes' (and value shifts') file in a model folder
# How much of the mean shift of the other concepts' features a "what if" applies (0: none, an intervention).
# Chosen on CEBaB dev by L2, mean over the dense CBM and two default SparseCBMs, at WHAT_IF_SPREAD
# (benchmarks/experiments/what_if_shift.py; docs/explanations.md#causal-cebabs-explanation-benchmark).
WHAT_IF_SHIFT = 1.25
# How much less sure a "what if" is than a reading of the text itself: its label probabilities are read at
# this many times the model's temperature (the argmax, its label, is unchanged). Chosen on CEBaB dev by L2
# (benchmarks/experiments/what_if_shift.py; docs/explanations.md#causal-cebabs-explanation-benchmark).
WHAT_IF_SPREAD = 1.25


def check_head(kind: str, bottleneck: str, residual: int, embedding_dim: int) -> None:
    """A clear error (:class:`~sparsecbm.settings.SettingError`) for a label head that cannot be built."""
    if bottleneck not in BOTTLENECKS:
        raise SettingError("bottleneck", f" must be one of {list(BOTTLENECKS)}, got {bottleneck!r}")
    if residual < 0:
        raise SettingError("residual", f" must be >= 0, got {residual}")
    if embedding_dim < 1:
        raise SettingError("embedding_dim", f" must be >= 1, got {embedding_dim}")
    if kind == "standard" and (bottleneck != "soft" or residual):
        raise SettingError("bottleneck", " and residual apply to concept models (cbm, sparsecbm), not a standard model",
                           also=["residual"])


def straight_through(a: torch.Tensor) -> torch.Tensor:
    """onehot(argmax a) forward, the gradient of ``a`` backward (identity)."""
    hard = F.one_hot(a.argmax(-1), a.shape[-1]).to(a.dtype)
    return hard + a - a.detach() if a.requires_grad else hard


def concept_columns(sizes: tuple[int, ...], k: int) -> slice:
    """Columns of concept k in (n, sum C_k) logits or activations (C_k = ``sizes[k]``)."""
    start = sum(sizes[:k])
    return slice(start, start + sizes[k])


class ConceptProjector(nn.Linear):
    """p_psi: pooled text z (n, E) -> every concept's logits, one block of C_k columns per
    concept (:func:`concept_columns`); :meth:`concept` gives concept k's block alone."""

    def __init__(self, width: int, sizes: tuple[int, ...]) -> None:
        super().__init__(width, sum(sizes))
        self.sizes = tuple(sizes)

    def concept(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """Concept k's logits (n, C_k) from z."""
        cols = concept_columns(self.sizes, k)
        return F.linear(z, self.weight[cols], self.bias[cols])


class LabelHead(nn.Module):
    """g_phi: concept activations and features -> task logits, as a sum of visible parts. Its
    modules: ``linear`` (phi and the bias), ``embedder`` with an embedding bottleneck, ``side``
    and ``side_out`` with a side channel; its state besides: ``value_prototypes`` (fitted
    after training, saved as ``prototypes.safetensors`` beside the weights)."""

    def __init__(self, width: int, sizes: tuple[int, ...], n_labels: int, bottleneck: str = "soft",
                 residual: int = 0, embedding_dim: int = 16) -> None:
        super().__init__()
        check_head("cbm", bottleneck, residual, embedding_dim)
        self.sizes, self.bottleneck, self.residual = tuple(sizes), bottleneck, residual
        self.embedding_dim = embedding_dim if bottleneck == "embedding" else 0
        inputs = len(sizes) * self.embedding_dim if self.embedding_dim else sum(sizes)
        self.linear = nn.Linear(inputs, n_labels)  # phi
        if self.embedding_dim:
            self.embedder = nn.Linear(width, sum(sizes) * self.embedding_dim)
        if residual:
            self.side = nn.Linear(width, residual)
            self.side_out = nn.Linear(residual, n_labels, bias=False)
        self.feature_sizes = tuple(c * self.embedding_dim + residual for c in sizes)
        self.value_prototypes: torch.Tensor | None = None  # (sum C_k, m): each value's mean embedding
        self.value_shifts: ValueShifts | None = None  # how other concepts' features move with a concept's value

    def concept_slice(self, k: int) -> slice:
        """Columns of concept k in the (n, sum C_k) activations."""
        return concept_columns(self.sizes, k)

    @property
    def has_features(self) -> bool:
        return any(self.feature_sizes)

    def head_features(self, z: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, ...]:
        """Each concept's features (n, F_k) read from z (n, E), or concept k's alone (a 1-tuple)."""
        ks = range(len(self.sizes)) if k is None else [k]
        if not self.has_features:
            return tuple(z.new_zeros(len(z), 0) for _ in ks)
        m = self.embedding_dim
        emb = self.embedder(z) if m else None
        side = self.side(z) if self.residual else None
        out = []
        for j in ks:
            parts = []
            if m:
                cols = self.concept_slice(j)
                parts.append(emb[:, cols.start * m : cols.stop * m])
            if side is not None:
                parts.append(side)
            out.append(torch.cat(parts, dim=1))
        return tuple(out)

    def concept_input(self, k: int, a_k: torch.Tensor, f_k: torch.Tensor | None) -> torch.Tensor:
        """What ``linear`` reads of concept k: (n, C_k) values or (n, m) mixed embedding."""
        if self.bottleneck == "hard":
            return straight_through(a_k) if self.training else F.one_hot(a_k.argmax(-1), a_k.shape[-1]).to(a_k.dtype)
        if not self.embedding_dim:
            return a_k
        e = f_k[:, : a_k.shape[-1] * self.embedding_dim].reshape(len(a_k), a_k.shape[-1], self.embedding_dim)
        return torch.einsum("nv,nvm->nm", a_k, F.leaky_relu(e))

    def set_values(self, activations: torch.Tensor, features: tuple[torch.Tensor, ...], values: torch.Tensor,
                   chosen: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The activations and features the head reads once the concepts ``chosen`` ((n, K)
        bool) are set to ``values`` ((n, K) indices): their true value as 0/1, and the
        features of :meth:`true_features`."""
        parts = []
        for k, size in enumerate(self.sizes):
            a_k = activations[:, self.concept_slice(k)]
            parts.append(torch.where(chosen[:, k : k + 1], F.one_hot(values[:, k], size).to(a_k.dtype), a_k))
        return torch.cat(parts, dim=1), self.true_features(features, values, activations, chosen)

    def true_features(self, features: tuple[torch.Tensor, ...], values: torch.Tensor, activations: torch.Tensor,
                      chosen: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """``features`` as an intervention reads them when the concepts ``chosen`` ((n, K) bool;
        default all) are set to ``values`` ((n, K) value indices): where that changes the
        predicted value (from ``activations``, (n, sum C_k)), the true value's embedding moved
        ``PROTOTYPE_MIX`` of the way to its prototype; a value confirmed changes nothing. The
        same features without an embedding head or prototypes (a model trained before them)."""
        if not self.embedding_dim or self.value_prototypes is None:
            return features
        m, out = self.embedding_dim, []
        for k, f_k in enumerate(features):
            size = self.sizes[k]
            changed = activations[:, self.concept_slice(k)].argmax(-1).to(f_k.device) != values[:, k].to(f_k.device)
            chosen_k = changed if chosen is None else changed & chosen[:, k].to(f_k.device)
            e = f_k[:, : size * m].reshape(len(f_k), size, m)
            rows = torch.arange(len(f_k), device=f_k.device)
            v = values[:, k].to(f_k.device)
            prototype = self.value_prototypes[self.concept_slice(k)].to(f_k)[v]  # (n, m)
            moved = e.clone()
            moved[rows, v] = e[rows, v] + PROTOTYPE_MIX * (prototype - e[rows, v])
            moved = torch.where(chosen_k[:, None, None], moved, e)
            out.append(torch.cat([moved.reshape(len(f_k), -1), f_k[:, size * m:]], dim=1))
        return tuple(out)

    def counterfactual_features(self, features: tuple[torch.Tensor, ...], values: torch.Tensor,
                                activations: torch.Tensor, chosen: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``features`` as the head would read a text that *said* the ``chosen`` concepts ((n, K)
        bool) have ``values`` ((n, K) indices): the chosen concepts' as an intervention reads them
        (:meth:`true_features`), every other concept's moved by its mean shift between training
        texts with the chosen concept's new and predicted value (:mod:`sparsecbm.counterfactuals`;
        ``WHAT_IF_SHIFT`` of it). An intervention's features when the model has no shifts."""
        features = self.true_features(features, values, activations, chosen)
        if self.value_shifts is None or not WHAT_IF_SHIFT:
            return features
        predicted = torch.stack([activations[:, self.concept_slice(k)].argmax(-1) for k in range(len(self.sizes))], 1)
        return self.value_shifts.shifted(features, predicted, values, chosen, WHAT_IF_SHIFT)

    def linear_columns(self, k: int) -> slice:
        """Concept k's columns of ``linear``'s weight."""
        if self.embedding_dim:
            return slice(k * self.embedding_dim, (k + 1) * self.embedding_dim)
        return self.concept_slice(k)

    def concept_term(self, k: int, activations_k: torch.Tensor, features_k: torch.Tensor | None = None) -> torch.Tensor:
        """Concept k's additive share of the task logits, ``phi_k . input_k``: (n, C_y)."""
        x = self.concept_input(k, activations_k, features_k)
        return x @ self.linear.weight[:, self.linear_columns(k)].T

    def value_terms(self, k: int, a_k: torch.Tensor, f_k: torch.Tensor | None, y: int) -> list[float]:
        """One text's concept k term of label y's logit, value by value (their sum is the term):
        a soft or embedding head's term is linear in the activations ``a_k`` (C_k,), so each
        value's part is the term with the other values' activations at 0; a hard head's term
        is its predicted value's."""
        f = None if f_k is None else f_k[None]
        if self.bottleneck == "hard":
            term = float(self.concept_term(k, a_k[None], f)[0, y])
            return [term if v == int(a_k.argmax()) else 0.0 for v in range(len(a_k))]
        rows = torch.eye(len(a_k), device=a_k.device) * a_k[None]  # one value's activation per row
        return [float(self.concept_term(k, row[None], f)[0, y]) for row in rows]

    def concept_terms(self, activations: torch.Tensor, features: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
        """Every concept's share of the task logits, (n, K, C_y)."""
        features = features or (None,) * len(self.sizes)
        return torch.stack([self.concept_term(k, activations[:, self.concept_slice(k)], features[k])
                            for k in range(len(self.sizes))], dim=1)

    def side_term(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor | None:
        """The side channel's share of the task logits (n, C_y), from the mean of every
        concept's side numbers; None without a side channel."""
        r = self.residual
        return self.side_out(torch.stack([f[:, -r:] for f in features]).mean(0)) if r else None

    def read_label(self, activations: torch.Tensor, features: tuple[torch.Tensor, ...] = (),
                   side: bool = True) -> torch.Tensor:
        """Task logits (n, C_y) = sum_k term_k [+ side channel] + bias. ``side=False``:
        what the concepts alone give."""
        if self.has_features and not features:
            raise ValueError("this label head reads per-concept features; pass the model's features too")
        if self.bottleneck == "soft":
            logits = self.linear(activations)  # one product (today's model, bit for bit)
        else:
            logits = self.concept_terms(activations, features).sum(1) + self.linear.bias
        term = self.side_term(features) if side else None
        return logits if term is None else logits + term

    def hard_values(self, activations: torch.Tensor) -> torch.Tensor:
        """Each concept's predicted value as 0/1 activations (n, sum C_k)."""
        return torch.cat([F.one_hot(activations[:, self.concept_slice(k)].argmax(-1), size).to(activations.dtype)
                          for k, size in enumerate(self.sizes)], dim=1)

    def values_only(self, activations: torch.Tensor, features: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
        """Task logits from the predicted concept *values* alone: each concept at its predicted
        value as 0/1 (with an embedding head, that value's embedding), no side channel."""
        return self.read_label(self.hard_values(activations), features, side=False)

    def logit_parts(self, activations: torch.Tensor, features: tuple[torch.Tensor, ...] = ()) -> LogitParts:
        """The winning label's logit per text, taken apart (:class:`~sparsecbm.outputs.LogitParts`)."""
        dtype = self.linear.weight.dtype
        a, f = activations.to(dtype), tuple(x.to(dtype) for x in features)
        y = self.read_label(a, f).argmax(-1)
        rows = torch.arange(len(y))
        hard = self.hard_values(a)
        terms = self.concept_terms(a, f)[rows, :, y]  # (n, K)
        values = self.concept_terms(hard, f)[rows, :, y]
        side = self.side_term(f)
        side = side[rows, y] if side is not None else torch.zeros_like(y, dtype=a.dtype)
        bias = self.linear.bias[y]
        value = values.abs().sum(1)
        share = value / (value + (terms - values).abs().sum(1) + side.abs() + bias.abs()).clamp_min(1e-12)
        numbers = lambda x: x.detach().float().cpu()  # noqa: E731
        return LogitParts(values=numbers(values), nuance=numbers(terms - values), side=numbers(side),
                          bias=numbers(bias), label=y.detach().cpu(),
                          values_label=self.read_label(hard, f, side=False).argmax(-1).detach().cpu(),
                          share=numbers(share))

    def concept_share(self, k: int, outputs: ConceptOutputs) -> torch.Tensor:
        """Concept k's own share of the task logits plus the bias (n, C_y), from its outputs
        alone: its term, its 1/K of the side channel, and the bias."""
        r = self.residual
        features = outputs.features if self.feature_sizes[k] else None
        task = self.concept_term(k, torch.sigmoid(outputs.logits), features) + self.linear.bias
        return task + self.side_out(features[:, -r:]) / len(self.sizes) if r else task

    def task_logits(self, outputs: Sequence[ConceptOutputs]) -> torch.Tensor:
        """Task logits (..., C_y) from every concept's outputs (one text's or n texts')."""
        activations = torch.sigmoid(torch.cat([o.logits for o in outputs], dim=-1))
        features = tuple(o.features for o in outputs) if self.has_features else ()
        if activations.dim() == 1:
            return self.read_label(activations[None], tuple(f[None] for f in features))[0]
        return self.read_label(activations, features)

    def fit_prototypes(self, features: tuple[torch.Tensor, ...], truth: np.ndarray) -> torch.Tensor | None:
        """Set (and return) an embedding head's value prototypes, (sum C_k, m): per concept
        value, the mean of its embedding over the texts (``features``, one text per row)
        whose true value (``truth``, (n, K) indices) it is, over every text when none has it.
        None for other heads."""
        if not self.embedding_dim:
            return None
        m, rows = self.embedding_dim, []
        for k, f_k in enumerate(features):
            size = self.sizes[k]
            e = f_k[:, : size * m].reshape(len(f_k), size, m).float()
            values = torch.as_tensor(truth[:, k])
            rows += [e[values == v, v].mean(0) if (values == v).any() else e[:, v].mean(0) for v in range(size)]
        self.value_prototypes = torch.stack(rows)
        self.value_shifts = ValueShifts.fit(features, truth, self.sizes)
        return self.value_prototypes

    def save_prototypes(self, folder: str | os.PathLike) -> None:
        """Write (or, without them, remove) ``prototypes.safetensors`` in a model folder."""
        target = Path(folder) / PROTOTYPES
        if self.value_prototypes is None:
            target.unlink(missing_ok=True)
            return
        with atomic_path(target) as tmp:
            shifts = self.value_shifts.tensors() if self.value_shifts is not None else {}
            save_file({"value_prototypes": self.value_prototypes.detach().float().cpu().contiguous(), **shifts}, str(tmp))

    def load_prototypes(self, folder: str | os.PathLike) -> None:
        """The prototypes saved in a model folder (none when it holds none), checked against this head."""
        path = Path(folder) / PROTOTYPES
        if not path.is_file():
            self.value_prototypes, self.value_shifts = None, None
            return
        try:
            tensors = load_file(str(path))
            prototypes = tensors["value_prototypes"]
            shifts = ValueShifts.from_tensors(tensors, self.sizes)
        except Exception as e:  # safetensors' own error, no such tensor, or shifts of another shape
            raise ValueError(f"{path}: damaged or not a prototypes file ({e})") from None
        expected = (sum(self.sizes), self.embedding_dim)
        if not self.embedding_dim or tuple(prototypes.shape) != expected:
            raise ValueError(f"{path}: prototypes of shape {tuple(prototypes.shape)} do not fit this model's label head "
                             f"(expected {expected if self.embedding_dim else 'none: it has no embedding head'})")
        widths = None if shifts is None else tuple(m.shape[2] for m in shifts.means)
        if widths is not None and widths != self.feature_sizes:
            raise ValueError(f"{path}: value shifts of feature widths {widths} do not fit this model's label head "
                             f"(expected {self.feature_sizes})")
        self.value_prototypes, self.value_shifts = prototypes, shifts

    def forward(self, activations: torch.Tensor, features: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
        """Task logits (n, C_y) (:meth:`read_label` with the side channel)."""
        return self.read_label(activations, features)
