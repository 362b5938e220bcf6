"""A guard against regressions: texts with known concepts that a kept edit must not hurt.

An edit of concept k's mask changes only concept k's logits, so the guard
caches every concept's logits on its texts and, per edit, re-runs concept k's
subnetwork alone (one forward pass over the guard). The edit is accepted only if
concept k's accuracy on the guard drops by at most ``tolerance`` and the task
accuracy by at most ``task_tolerance`` (fractions: 0.01 is one point).

    guard = Guard(data["train"].head(300))
    r = clf.intervene(text, "food", "Positive", persist=True, guard=guard)
    r.guard  # {"accepted": ..., "reason": ..., "concept_accuracy": [before, after], ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .data import Split
from .intervention import concept_k_logits, task_from, tokenize

EPS = 1e-9  # accuracies are ratios of counts: equal ones may differ in the last bit


def _stamp(model, k: int) -> tuple:
    """What concept k's logits depend on that an edit can change: its masks and the
    backbone's weights (the tensors themselves, so that their ids stay unique)."""
    concept = model.config.schema.concepts[k]
    masks = tuple((m, m._version) for m in model.masks[concept].values())
    weights = tuple((p, p._version) for p in model.parameters())
    return masks + weights


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x[0] is y[0] and x[1] == y[1] for x, y in zip(a, b))


@dataclass
class Guard:
    """Texts with known concept values and labels (a :class:`Split`) that judge edits."""

    split: Split
    tolerance: float = 0.0  # largest allowed drop of the edited concept's accuracy (fraction)
    task_tolerance: float = 0.0  # largest allowed drop of the task accuracy (fraction)
    _batches: list | None = field(default=None, init=False, repr=False)
    _cache: dict[int, tuple[tuple, torch.Tensor]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.split, Split):
            raise TypeError(f"guard: expected a Split (texts with concept values and labels), got {type(self.split).__name__}")
        if len(self.split) == 0:
            raise ValueError("guard: the guard set is empty")
        for name in ("tolerance", "task_tolerance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1] (0.01 = one point), got {value!r}")

    def __len__(self) -> int:
        return len(self.split)

    def _logits(self, clf, k: int) -> torch.Tensor:
        """Concept k's logits (n, C_k) on the guard for the model as it is now (cached)."""
        if self._batches is None:
            self._batches = tokenize(clf, self.split.texts)
        stamp = _stamp(clf.model, k)
        hit = self._cache.get(k)
        if hit is None or not _same(hit[0], stamp):
            hit = (stamp, concept_k_logits(clf, self._batches, k))
            self._cache[k] = hit
        return hit[1]

    def concept_logits(self, clf) -> list[torch.Tensor]:
        """Every concept's logits on the guard, (n, C_k) each."""
        return [self._logits(clf, k) for k in range(len(clf.schema.concepts))]

    def restore(self, clf, k: int, logits: torch.Tensor) -> None:
        """After a bit-exact rollback: concept k's logits are ``logits`` again (no pass needed)."""
        self._cache[k] = (_stamp(clf.model, k), logits)

    def scores(self, clf, logits: list[torch.Tensor], k: int) -> tuple[float, float]:
        """(concept k accuracy, task accuracy) on the guard from these concept logits."""
        concept = float(np.mean(logits[k].argmax(-1).numpy() == self.split.concepts[:, k]))
        task = float(np.mean(task_from(clf, logits).argmax(-1).numpy() == self.split.labels))
        return concept, task

    def judge(self, clf, k: int, before: list[torch.Tensor]) -> dict[str, Any]:
        """The verdict on the edit now in concept k's mask, against the logits ``before`` it."""
        after = list(before)
        after[k] = self._logits(clf, k)
        (c0, t0), (c1, t1) = self.scores(clf, before, k), self.scores(clf, after, k)
        reasons = []
        if c1 < c0 - self.tolerance - EPS:
            reasons.append(f"{clf.schema.concepts[k]} accuracy on the guard fell {100 * c0:.1f} -> {100 * c1:.1f} % "
                           f"(tolerance {100 * self.tolerance:g} points)")
        if t1 < t0 - self.task_tolerance - EPS:
            reasons.append(f"task accuracy on the guard fell {100 * t0:.1f} -> {100 * t1:.1f} % "
                           f"(tolerance {100 * self.task_tolerance:g} points)")
        changed = int((after[k].argmax(-1) != before[k].argmax(-1)).sum())
        return {"accepted": not reasons, "reason": "; ".join(reasons) or "no drop beyond the tolerances",
                "n": len(self), "concept_accuracy": [c0, c1], "task_accuracy": [t0, t1],
                "predictions_changed": changed, "tolerance": self.tolerance, "task_tolerance": self.task_tolerance}
