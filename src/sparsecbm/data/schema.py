"""The data types: a Schema (labels, concepts, their values), Splits and Datasets; DataError."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

UNKNOWN = "unknown"
SENTIMENT = ("Negative", "Positive", UNKNOWN)  # the value index order (docs/method.md, "The model")


class DataError(ValueError):
    """Malformed or inconsistent input data; the message names file, row and column."""


def value_key(raw: str) -> str:
    """A value's spelling with letter case and runs of spaces set aside."""
    return " ".join(str(raw).split()).casefold()


def spelling(raw: str, allowed: Sequence[str]) -> str | None:
    """The one of ``allowed`` that ``raw`` names, letter case and runs of spaces aside; None if none."""
    if raw in allowed:
        return raw
    found = [a for a in allowed if value_key(a) == value_key(raw)]
    return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class Schema:
    """Label values, concept names and each concept's values (index = position)."""

    labels: tuple[str, ...]
    concepts: tuple[str, ...] = ()
    concept_values: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if len(self.labels) < 2:
            raise DataError(f"a task needs at least 2 label values, got {list(self.labels)}")
        if len(self.concepts) != len(self.concept_values):
            raise DataError(
                f"{len(self.concepts)} concepts but {len(self.concept_values)} value lists"
            )
        for name, values in zip(self.concepts, self.concept_values):
            if len(values) < 2:
                raise DataError(f"concept {name!r} needs at least 2 values, got {list(values)}")
        if len(set(self.concepts)) != len(self.concepts):
            raise DataError(f"concept names must be unique, got {list(self.concepts)}")

    @property
    def num_concept_values(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.concept_values)

    def value_of(self, concept: str, raw: str) -> str:
        """Concept ``concept``'s declared spelling of ``raw`` (letter case and spaces aside, as
        when data files are read), or a ValueError naming what exists."""
        k = self.concept_index_of(concept)
        found = spelling(raw, self.concept_values[k])
        if found is None:
            raise ValueError(f"unknown value {raw!r} for concept {concept!r}; its values are "
                             f"{list(self.concept_values[k])}")
        return found

    def label_of(self, raw: str) -> str:
        """The declared spelling of label ``raw`` (letter case and spaces aside)."""
        found = spelling(raw, self.labels)
        if found is None:
            raise ValueError(f"unknown label {raw!r}; the labels are {list(self.labels)}")
        return found

    def concept_index_of(self, concept: str) -> int:
        if concept not in self.concepts:
            raise ValueError(f"unknown concept {concept!r}; the model's concepts are {list(self.concepts)}")
        return self.concepts.index(concept)

    def concept_index(self, concept: str, value: str) -> tuple[int, int]:
        """(k, value index), or a ValueError naming the concept or value and what exists."""
        k = self.concept_index_of(concept)
        values = self.concept_values[k]
        if value not in values:
            raise ValueError(f"unknown value {value!r} for concept {concept!r}; its values are {list(values)}")
        return k, values.index(value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "concepts": {c: list(v) for c, v in zip(self.concepts, self.concept_values)},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Schema":
        concepts = d.get("concepts", {})
        return cls(
            labels=tuple(d["labels"]),
            concepts=tuple(concepts),
            concept_values=tuple(tuple(v) for v in concepts.values()),
        )


@dataclass(frozen=True)
class Split:
    """One split: ``texts[i]`` has label ``labels[i]`` and concept values ``concepts[i, k]``."""

    texts: tuple[str, ...]
    labels: np.ndarray  # (n,) int64 label indices
    concepts: np.ndarray  # (n, K) int64 concept value indices
    source: str = ""
    # The family of each row, when the data has one (CEBaB: original_id, shared by a review and the
    # human edits of it, each changing one aspect): the near-paraphrases a correction should carry to.
    groups: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:  # never every text
        first = self.texts[0] if self.texts else ""
        first = first if len(first) <= 40 else first[:40] + "..."
        source = f", from {self.source}" if self.source else ""
        return f"Split({len(self)} rows{source}; first text {first!r})"

    def rows(self, idx: Sequence[int]) -> "Split":
        """The examples at ``idx``, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        return Split(tuple(self.texts[i] for i in idx), self.labels[idx], self.concepts[idx], self.source,
                     None if self.groups is None else tuple(self.groups[i] for i in idx))

    def head(self, n: int | None) -> "Split":
        """The first ``n`` examples (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return self.rows(range(n))

    def sample(self, n: int | None, seed: int) -> "Split":
        """``n`` examples drawn without replacement (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return self.rows(np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False)))


@dataclass(frozen=True)
class Dataset:
    """A named data set: its schema and its splits (``train``, ``dev``, ``test``)."""

    name: str
    schema: Schema
    splits: dict[str, Split]
    spec: dict[str, Any] = field(default_factory=dict)  # how to load it again (saved with models)
    annotated: tuple[str, ...] = ()  # concepts whose values come from ``sparsecbm annotate`` (a *_confidence column)

    def __repr__(self) -> str:  # never every text: a summary that fits a screen
        sizes = ", ".join(f"{name} {len(split)}" for name, split in self.splits.items())
        return (f"Dataset({self.name!r}: {sizes} rows; labels {list(self.schema.labels)}; "
                f"concepts {list(self.schema.concepts)})")

    def __getitem__(self, split: str) -> Split:
        if split not in self.splits:
            raise DataError(
                f"data set {self.name!r} has no split {split!r}; it has {sorted(self.splits)}"
            )
        return self.splits[split]
