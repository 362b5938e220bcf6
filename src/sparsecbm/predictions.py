"""What ``Classifier.predict`` returns for one text: the label, its probabilities and every concept."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WhatIf:
    """The label the model would give were one concept another value (the others as predicted)."""

    label: str
    probabilities: dict[str, float]

    @property
    def probability(self) -> float:
        return self.probabilities[self.label]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "probability": self.probability, "probabilities": dict(self.probabilities)}


def what_if_line(alternatives: dict[str, WhatIf]) -> str:
    """``Negative -> 3 (41%), unknown -> 4 (52%)``: one concept's other values and the label each gives."""
    return ", ".join(f"{value} -> {w.label} ({100 * w.probability:.0f}%)" for value, w in alternatives.items())


def what_if_dict(what_if: dict[str, dict[str, WhatIf]]) -> dict[str, dict[str, dict[str, Any]]]:
    return {concept: {value: w.to_dict() for value, w in alternatives.items()} for concept, alternatives in what_if.items()}


@dataclass(frozen=True)
class ConceptPrediction:
    value: str
    probs: dict[str, float]


@dataclass(frozen=True)
class Prediction:
    """The prediction for one text: the label and, for a CBM, every concept."""

    label: str
    label_probs: dict[str, float]
    concepts: dict[str, ConceptPrediction]
    truncated: bool = False  # the text was longer than the model reads: only its first max_length tokens counted
    concept_share: float | None = None  # share of the label's logit carried by the concept values (CBMs)
    values_label: str | None = None  # the label the concept values alone give (no nuance, no side channel)
    side: float | None = None  # the side channel's part of the label's logit (None: the model has none)
    # Per concept, per value other than the predicted one: the label were the concept that value.
    what_if: dict[str, dict[str, WhatIf]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "label_probs": dict(self.label_probs),
            "concepts": {
                name: {"value": c.value, "probs": dict(c.probs)} for name, c in self.concepts.items()
            },
            "truncated": self.truncated,
            "concept_share": self.concept_share,
            "values_label": self.values_label,
            "side": self.side,
            "what_if": what_if_dict(self.what_if),
        }
