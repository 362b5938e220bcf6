"""Every concept's outputs (``ConceptOutputs``: logits and label-head features) on a fixed set of texts, kept until that concept's
subnetwork changes: what the guard judges an edit by, and what the explorer
browses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch

from ..cache import VersionedCache, same, stamp
from ..outputs import ConceptOutputs
from .gradients import concept_k_outputs, tokenize

if TYPE_CHECKING:
    from ..interfaces import ClassifierLike as Classifier


class SplitLogits:
    """Concept k's outputs (:class:`~sparsecbm.outputs.ConceptOutputs`) on ``texts``, recomputed only when concept k's masks or
    the model's weights change. The texts run shortest first, so that a chunk pads to
    texts of its own length; the rows come back in the given order."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = tuple(texts)
        self._batches: list | None = None
        self._order: torch.Tensor | None = None
        self._cache = VersionedCache()

    def __len__(self) -> int:
        return len(self.texts)

    def batches(self, clf: Classifier) -> list:
        """The texts tokenized for ``clf``, shortest first (made once)."""
        if self._batches is None:
            order = np.argsort([len(t) for t in self.texts], kind="stable")
            self._batches = tokenize(clf, [self.texts[i] for i in order])
            self._order = torch.from_numpy(np.argsort(order))
        return self._batches

    @staticmethod
    def depends_on(clf: Classifier, k: int) -> list[torch.Tensor]:
        """What concept k's logits depend on that an edit can change: its masks and the weights."""
        return [*clf.model.masks[clf.schema.concepts[k]].values(), *clf.model.parameters()]

    def concept(self, clf: Classifier, k: int) -> ConceptOutputs:
        return self._cache.get(k, self.depends_on(clf, k),
                               lambda: concept_k_outputs(clf, self.batches(clf), k)[self._order])

    def all(self, clf: Classifier) -> list[ConceptOutputs]:
        """Every concept's outputs."""
        return [self.concept(clf, k) for k in range(len(clf.schema.concepts))]

    def kept(self, clf: Classifier, k: int) -> tuple[ConceptOutputs | None, bool]:
        """(concept k's outputs as last computed, or None; whether they are those of the model now)."""
        return self._cache.peek(k, self.depends_on(clf, k))

    def stale(self, clf: Classifier) -> list[int]:
        """The concepts whose kept outputs are missing or older than the model."""
        return [k for k in range(len(clf.schema.concepts)) if not self.kept(clf, k)[1]]

    def refresh_steps(self, clf: Classifier, k: int) -> Iterator[None]:
        """Recompute concept k's outputs one chunk of texts at a time, yielding after each, so
        that a caller can let other work run in between (the explorer keeps them fresh in the
        background this way). Kept at the end, unless the model changed meanwhile: then the
        work is dropped and the generator ends early."""
        start = stamp(self.depends_on(clf, k))
        parts = []
        for chunk in self.batches(clf):
            if not same(start, stamp(self.depends_on(clf, k))):
                return
            parts.append(concept_k_outputs(clf, [chunk], k))
            yield
        if same(start, stamp(self.depends_on(clf, k))):
            self.put(clf, k, ConceptOutputs.cat(parts)[self._order])

    def put(self, clf: Classifier, k: int, outputs: ConceptOutputs) -> None:
        """Concept k's outputs are ``outputs`` for the model as it is now (after a bit-exact rollback)."""
        self._cache.put(k, self.depends_on(clf, k), outputs)
