"""What a text that *said* another concept value would look like to the label head.

An intervention sets concept k's activations (and, with the embedding head, its value
embedding) and leaves every other concept's features as the text gave them. That answers
"what if the model had read k differently in this very text". "What if the review had
said k = v'" is another question: a review rewritten that way also changes how the
*other* concepts are read, because each concept's features carry some of the text's
overall tone (on CEBaB's dev pairs about two thirds of a dense CBM's logit change
under a human edit of one aspect comes from the other concepts' terms:
``python -m benchmarks.experiments.what_if_shift``).

:class:`ValueShifts` holds what that looks like on average, from the training texts:
for every other concept j, the mean of j's features over the texts whose true value of
j is u and of k is v. A counterfactual k: v -> v' then moves concept j's features by
``mean[j, u, k, v'] - mean[j, u, k, v]`` (u: j's predicted value), when both cells hold
at least ``MIN_TEXTS`` training texts, and not at all otherwise. Fitted in the same pass
over the training texts as the value prototypes and saved beside them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

MIN_TEXTS = 5  # training texts a (u, v) cell needs before its mean is trusted


class ValueShifts:
    """Per concept j: ``means[j]`` (C_j, sum C_k, F_j), the mean features of j over the training
    texts with j's true value u and concept k's true value v (column ``offset[k] + v``), and
    ``counts[j]`` (C_j, sum C_k), how many texts each mean is over."""

    def __init__(self, sizes: Sequence[int], means: Sequence[torch.Tensor], counts: Sequence[torch.Tensor]) -> None:
        self.sizes = tuple(sizes)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)
        self.means, self.counts = list(means), list(counts)
        total = sum(self.sizes)
        for j, (m, c) in enumerate(zip(self.means, self.counts)):
            if m.dim() != 3 or tuple(m.shape[:2]) != (self.sizes[j], total) or tuple(c.shape) != (self.sizes[j], total):
                raise ValueError(f"value shifts of concept {j}: shapes {tuple(m.shape)} and {tuple(c.shape)} do not fit "
                                 f"concept sizes {self.sizes}")

    @classmethod
    def fit(cls, features: Sequence[torch.Tensor], truth: np.ndarray, sizes: Sequence[int]) -> "ValueShifts":
        """From every concept's features on the training texts (one row per text) and their true
        values ``truth`` (n, K)."""
        truth = torch.as_tensor(np.asarray(truth)).long()
        every = torch.cat([F.one_hot(truth[:, k], size) for k, size in enumerate(sizes)], 1).float()  # (n, sum C_k)
        means, counts = [], []
        for j, f_j in enumerate(features):
            own = F.one_hot(truth[:, j], sizes[j]).float()  # (n, C_j)
            c = own.T @ every  # (C_j, sum C_k): texts per (j's value u, k's value v)
            total = torch.einsum("nu,nc,nf->ucf", own, every, f_j.detach().float().cpu())
            means.append(total / c.clamp_min(1)[..., None])  # an empty cell's mean is 0 (and never used)
            counts.append(c)
        return cls(sizes, means, counts)

    def shifted(self, features: Sequence[torch.Tensor], predicted: torch.Tensor, values: torch.Tensor,
                chosen: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, ...]:
        """``features`` (one (n, F_j) tensor per concept) with every concept j not ``chosen`` ((n, K)
        bool) moved, for each chosen concept k of its row, by ``scale`` times the mean shift of j
        from k's ``predicted`` value to its new one (``values``; both (n, K) indices)."""
        out = []
        for j, f_j in enumerate(features):
            shift = torch.zeros_like(f_j)
            m, c = self.means[j].to(f_j), self.counts[j]
            u = predicted[:, j].cpu()
            for k in range(len(self.sizes)):
                moving = chosen[:, k].cpu() & ~chosen[:, j].cpu() & (values[:, k].cpu() != predicted[:, k].cpu())
                if k == j or not moving.any():
                    continue
                rows = torch.nonzero(moving).flatten()
                new, old = self.offsets[k] + values[rows, k].cpu(), self.offsets[k] + predicted[rows, k].cpu()
                trusted = (c[u[rows], new] >= MIN_TEXTS) & (c[u[rows], old] >= MIN_TEXTS)
                delta = m[u[rows], new] - m[u[rows], old]
                shift[rows.to(f_j.device)] += torch.where(trusted[:, None].to(f_j.device), delta, torch.zeros_like(delta))
            out.append(f_j + scale * shift)
        return tuple(out)

    def tensors(self) -> dict[str, torch.Tensor]:
        """For a safetensors file: ``shift_means.<j>`` and ``shift_counts.<j>``."""
        out = {}
        for j, (m, c) in enumerate(zip(self.means, self.counts)):
            out[f"shift_means.{j}"] = m.detach().float().cpu().contiguous()
            out[f"shift_counts.{j}"] = c.detach().float().cpu().contiguous()
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], sizes: Sequence[int]) -> "ValueShifts | None":
        """The shifts in a file's tensors, or None when it has none (a file from before them)."""
        if "shift_means.0" not in tensors:
            return None
        try:
            return cls(sizes, [tensors[f"shift_means.{j}"] for j in range(len(sizes))],
                       [tensors[f"shift_counts.{j}"] for j in range(len(sizes))])
        except KeyError as e:
            raise ValueError(f"value shifts: {e.args[0]} is missing") from None
