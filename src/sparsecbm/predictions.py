"""What ``Classifier.predict`` returns for one text: the label, its probabilities and every concept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
        }
