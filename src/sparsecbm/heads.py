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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BOTTLENECKS = ("soft", "hard", "embedding")
# How far an intervened value's embedding moves toward its training prototype: chosen on CEBaB dev,
# one wrong concept set true, mean over 3 seeds of the CBM and the SparseCBM
# (benchmarks/experiments/value_prototypes.py; docs/interventions.md#value-prototypes).
PROTOTYPE_MIX = 0.5


def check_head(kind: str, bottleneck: str, residual: int, embedding_dim: int, prefix: str = "") -> None:
    """A clear ValueError for a label head that cannot be built; ``prefix`` is "--" when the
    names are command-line flags."""
    if bottleneck not in BOTTLENECKS:
        raise ValueError(f"{prefix}bottleneck must be one of {list(BOTTLENECKS)}, got {bottleneck!r}")
    if residual < 0 or embedding_dim < 1:
        raise ValueError(f"{prefix}residual must be >= 0 and {prefix}embedding{'-' if prefix else '_'}dim >= 1, "
                         f"got {residual}, {embedding_dim}")
    if kind == "standard" and (bottleneck != "soft" or residual):
        raise ValueError(f"{prefix}bottleneck and {prefix}residual apply to concept models (cbm, sparsecbm), "
                         "not --model standard")


def straight_through(a: torch.Tensor) -> torch.Tensor:
    """onehot(argmax a) forward, the gradient of ``a`` backward (identity)."""
    hard = F.one_hot(a.argmax(-1), a.shape[-1]).to(a.dtype)
    return hard + a - a.detach() if a.requires_grad else hard


class LabelHead:
    """Mixed into :class:`~sparsecbm.model.ConceptBottleneckModel`: the label head's modules
    (``classifier``; ``embedder`` with an embedding bottleneck; ``side`` and ``side_out``
    with a residual) and its arithmetic. Needs ``config``, ``concept_sizes`` and
    ``concept_slice`` from the model."""

    value_prototypes: torch.Tensor | None = None  # (sum C_k, m): each value's mean embedding, set after training

    def build_head(self, width: int, n_labels: int) -> None:
        config = self.config
        sizes = self.concept_sizes
        self.embedding_dim = config.embedding_dim if config.bottleneck == "embedding" else 0
        inputs = len(sizes) * self.embedding_dim if self.embedding_dim else sum(sizes)
        self.classifier = nn.Linear(inputs, n_labels)  # g_phi
        if self.embedding_dim:
            self.embedder = nn.Linear(width, sum(sizes) * self.embedding_dim)
        if config.residual:
            self.side = nn.Linear(width, config.residual)
            self.side_out = nn.Linear(config.residual, n_labels, bias=False)
        self.feature_sizes = tuple(c * self.embedding_dim + config.residual for c in sizes)

    @property
    def has_features(self) -> bool:
        return any(self.feature_sizes)

    def head_features(self, z: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, ...]:
        """Each concept's features (n, F_k) read from z (n, E), or concept k's alone (a 1-tuple)."""
        ks = range(len(self.concept_sizes)) if k is None else [k]
        if not self.has_features:
            return tuple(z.new_zeros(len(z), 0) for _ in ks)
        m = self.embedding_dim
        emb = self.embedder(z) if m else None
        side = self.side(z) if self.config.residual else None
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
        """What the classifier reads of concept k: (n, C_k) values or (n, m) mixed embedding."""
        if self.config.bottleneck == "hard":
            return straight_through(a_k) if self.training else F.one_hot(a_k.argmax(-1), a_k.shape[-1]).to(a_k.dtype)
        if not self.embedding_dim:
            return a_k
        e = f_k[:, : a_k.shape[-1] * self.embedding_dim].reshape(len(a_k), a_k.shape[-1], self.embedding_dim)
        return torch.einsum("nv,nvm->nm", a_k, F.leaky_relu(e))

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
            size = self.concept_sizes[k]
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

    def classifier_columns(self, k: int) -> slice:
        """Concept k's columns of the classifier's weight."""
        if self.embedding_dim:
            return slice(k * self.embedding_dim, (k + 1) * self.embedding_dim)
        return self.concept_slice(k)

    def concept_term(self, k: int, activations_k: torch.Tensor, features_k: torch.Tensor | None = None) -> torch.Tensor:
        """Concept k's additive share of the task logits, ``phi_k . input_k``: (n, C_y)."""
        x = self.concept_input(k, activations_k, features_k)
        return x @ self.classifier.weight[:, self.classifier_columns(k)].T

    def value_terms(self, k: int, a_k: torch.Tensor, f_k: torch.Tensor | None, y: int) -> list[float]:
        """One text's concept k term of label y's logit, value by value (their sum is the term):
        a soft or embedding head's term is linear in the activations ``a_k`` (C_k,), so each
        value's part is the term with the other values' activations at 0; a hard head's term
        is its predicted value's."""
        f = None if f_k is None else f_k[None]
        if self.config.bottleneck == "hard":
            term = float(self.concept_term(k, a_k[None], f)[0, y])
            return [term if v == int(a_k.argmax()) else 0.0 for v in range(len(a_k))]
        rows = torch.eye(len(a_k), device=a_k.device) * a_k[None]  # one value's activation per row
        return [float(self.concept_term(k, row[None], f)[0, y]) for row in rows]

    def concept_terms(self, activations: torch.Tensor, features: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
        """Every concept's share of the task logits, (n, K, C_y)."""
        features = features or (None,) * len(self.concept_sizes)
        return torch.stack([self.concept_term(k, activations[:, self.concept_slice(k)], features[k])
                            for k in range(len(self.concept_sizes))], dim=1)

    def side_term(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor | None:
        """The side channel's share of the task logits (n, C_y), from the mean of every
        concept's side numbers; None without a side channel."""
        r = self.config.residual
        return self.side_out(torch.stack([f[:, -r:] for f in features]).mean(0)) if r else None

    def read_label(self, activations: torch.Tensor, features: tuple[torch.Tensor, ...] = (),
                   side: bool = True) -> torch.Tensor:
        """Task logits (n, C_y) = sum_k term_k [+ side channel] + bias. ``side=False``:
        what the concepts alone give."""
        if self.has_features and not features:
            raise ValueError("this label head reads per-concept features; pass the model's features too")
        if self.config.bottleneck == "soft":
            logits = self.classifier(activations)  # one product (today's model, bit for bit)
        else:
            logits = self.concept_terms(activations, features).sum(1) + self.classifier.bias
        term = self.side_term(features) if side else None
        return logits if term is None else logits + term

    def hard_values(self, activations: torch.Tensor) -> torch.Tensor:
        """Each concept's predicted value as 0/1 activations (n, sum C_k)."""
        return torch.cat([F.one_hot(activations[:, self.concept_slice(k)].argmax(-1), size).to(activations.dtype)
                          for k, size in enumerate(self.concept_sizes)], dim=1)

    def values_only(self, activations: torch.Tensor, features: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
        """Task logits from the predicted concept *values* alone: each concept at its predicted
        value as 0/1 (with an embedding head, that value's embedding), no side channel."""
        return self.read_label(self.hard_values(activations), features, side=False)

    def logit_parts(self, activations: torch.Tensor, features: tuple[torch.Tensor, ...] = ()) -> dict[str, torch.Tensor]:
        """The winning label's logit per text, taken apart, float32 on the CPU (each (n,) unless
        noted): ``values`` (n, K), each concept's term at its predicted value as 0/1 (with an
        embedding head, that value's embedding); ``nuance`` (n, K), the rest of each concept's
        term; ``side``, the side channel; ``bias``; ``label``, the winner; ``values_label``,
        the label the concept values alone give (no nuance, no side channel); and ``share``,
        ``sum_k |values_k| / (sum_k |values_k| + sum_k |nuance_k| + |side| + |bias|)``."""
        dtype = self.classifier.weight.dtype
        a, f = activations.to(dtype), tuple(x.to(dtype) for x in features)
        y = self.read_label(a, f).argmax(-1)
        rows = torch.arange(len(y))
        hard = self.hard_values(a)
        terms = self.concept_terms(a, f)[rows, :, y]  # (n, K)
        values = self.concept_terms(hard, f)[rows, :, y]
        side = self.side_term(f)
        side = side[rows, y] if side is not None else torch.zeros_like(y, dtype=a.dtype)
        bias = self.classifier.bias[y]
        value = values.abs().sum(1)
        share = value / (value + (terms - values).abs().sum(1) + side.abs() + bias.abs()).clamp_min(1e-12)
        parts = {"values": values, "nuance": terms - values, "side": side, "bias": bias, "label": y,
                 "values_label": self.read_label(hard, f, side=False).argmax(-1), "share": share}
        return {k: v.detach().cpu() if k.endswith("label") else v.detach().float().cpu() for k, v in parts.items()}

    def logits_of(self, k: int, outputs_k: torch.Tensor) -> torch.Tensor:
        """Concept k's logits (..., C_k) from its outputs (logits first, then features)."""
        return outputs_k[..., : self.concept_sizes[k]]

    def predicted_values(self, outputs) -> "np.ndarray":
        """Each text's predicted value index per concept, (n, K), from per-concept outputs."""
        return np.stack([self.logits_of(k, o).argmax(-1).numpy() for k, o in enumerate(outputs)], axis=1)

    def join_outputs(self, logits, features=()) -> list[torch.Tensor]:
        """Per-concept outputs (n, C_k + F_k) from logits and features (``CBMOutput``)."""
        return [torch.cat([l, features[k]], dim=-1) if features else l for k, l in enumerate(logits)]

    def split_outputs(self, outputs) -> tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]:
        """Per-concept outputs (n, C_k + F_k) -> (logits, features)."""
        logits = [o[..., :c] for o, c in zip(outputs, self.concept_sizes)]
        features = tuple(o[..., c:] for o, c in zip(outputs, self.concept_sizes)) if self.has_features else ()
        return logits, features
