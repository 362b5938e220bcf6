"""What a correction did, and what a kept edit records (the log's entries)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

# The bits one correction flipped, step by step: (drops, grows), flat indices over the concept's
# prunable weights. A preview's plan applied again on the same model is the same edit, bit for bit.
Plan = tuple[list[np.ndarray], list[np.ndarray]]


@dataclass(kw_only=True)
class Edit:
    """One persisted mask edit: which bits of which concept flipped, and why."""

    concept: str
    values: list[str]  # the corrected value, per text
    texts: list[str]
    labels: list[str] | None  # the task labels used in the loss, or None
    ratio: float | str  # as asked: a fraction, or "auto"
    selection: str
    steps: int
    step_sizes: list[int]  # bits dropped (= grown) at each step
    time: float
    per_layer: dict[str, dict[str, int]]  # param -> {"dropped": n, "grown": n}
    guard: dict[str, Any] | None  # the guard's verdict, when one checked the edit
    drop: torch.Tensor = field(repr=False)  # flat indices, every step concatenated
    grow: torch.Tensor = field(repr=False)

    @property
    def bits_flipped(self) -> int:
        return 2 * int(self.drop.numel())

    def describe(self) -> str:
        what = f"{self.concept} -> {self.values[0]!r}" if len(set(self.values)) == 1 else f"{self.concept} -> {self.values}"
        on = repr(self.texts[0][:50]) if len(self.texts) == 1 else f"{len(self.texts)} texts"
        return (f"{what}, ratio {self.ratio}, {self.selection}, {self.steps} step(s), "
                f"{self.bits_flipped} bits flipped, on {on}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        del d["drop"], d["grow"]
        d["bits_flipped"] = self.bits_flipped
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], drop: torch.Tensor, grow: torch.Tensor) -> "Edit":
        d = {k: v for k, v in d.items() if k != "bits_flipped"}
        if "text" in d:  # a log written before batch corrections: one text, equal steps, the paper's rule
            steps = max(int(d["steps"]), 1)
            text, value, label = d.pop("text"), d.pop("value"), d.pop("label", None)
            d.update(texts=[text], values=[value], labels=None if label is None else [label], selection="paper",
                     step_sizes=[int(drop.numel()) // steps] * steps, guard=None)
        return cls(**d, drop=drop, grow=grow)


@dataclass(frozen=True, kw_only=True)
class CorrectionResult:
    """What one correction (of one or several texts, one concept) did."""

    concept: str
    values: list[str]  # the corrected value, per text
    before: list[dict[str, Any]]  # per text {"value", "probability", "label"}
    after: list[dict[str, Any]]  # the same once the edit is in place (or what it would have been, if rolled back)
    fixed: list[bool]  # per text: the concept now predicts the corrected value
    selection: str
    ratio: float | str  # as asked
    steps: int  # steps run (stops early once every text is fixed)
    step_sizes: list[int]  # bits dropped (= grown) at each step
    per_layer: dict[str, dict[str, int]]  # param -> {"dropped": n, "grown": n}, over all steps
    persisted: bool  # the edit is in place and logged
    outcome: str  # what happened to the edit and why, in words
    guard: dict[str, Any] | None = None  # the guard's verdict (accepted, reason, accuracies before/after)
    nearby: dict[str, Any] | None = None  # the nearest texts the edit changes (``Nearby.report``), when asked
    plan: Plan | None = field(default=None, repr=False, compare=False)  # the flips, for a Keep of a preview

    @property
    def n(self) -> int:
        """Bits dropped (= grown) in all."""
        return sum(self.step_sizes)

    @property
    def bits_flipped(self) -> int:
        return 2 * self.n

    def to_dict(self) -> dict[str, Any]:
        return {**_public(self), "n": self.n, "bits_flipped": self.bits_flipped}


@dataclass(frozen=True, kw_only=True)
class InterventionResult:
    """What correcting one concept on one text did."""

    concept: str
    value: str  # the corrected value
    before: dict[str, Any]  # {"value", "probability", "label"}
    after: dict[str, Any]
    fixed: bool  # the concept now predicts ``value``
    selection: str
    steps: int  # steps run (stops early once fixed)
    n: int  # bits dropped (= grown) over all steps
    per_layer: dict[str, dict[str, int]]  # param -> {"dropped": n, "grown": n}, over all steps
    persisted: bool
    outcome: str  # what happened to the edit and why, in words
    guard: dict[str, Any] | None = None
    nearby: dict[str, Any] | None = None
    plan: Plan | None = field(default=None, repr=False, compare=False)  # the flips, for a Keep of a preview

    @property
    def bits_flipped(self) -> int:
        return 2 * self.n

    def to_dict(self) -> dict[str, Any]:
        return {**_public(self), "bits_flipped": self.bits_flipped}


def _public(result) -> dict[str, Any]:
    """A result as JSON-ready fields (its ``plan`` of flipped bits stays in memory)."""
    out = asdict(replace(result, plan=None))
    out.pop("plan")
    return out
