"""What an edit does beyond its own text: the nearest texts of a split, read before and after.

A mask edit of concept k changes how k is *read*, so it can carry to texts that say
the same thing (wanted) or to texts that merely share words (not wanted). Before a
user keeps an edit, :class:`Nearby` shows both: the ``count`` texts of a split most
like the corrected ones (cosine of TF-IDF word vectors: cheap, needs no second
model, and finds rewordings and near-duplicates), concept k's value on each before
the edit and with it in place, and which of them change.

    nearby = Nearby(data["test"].texts, count=20)
    r = clf.intervene(text, "service", "Positive", nearby=nearby)
    r.nearby  # {"n": 20, "changed": 3, "texts": [{"row", "text", "similarity", "before", "after"}, ...]}
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from scipy import sparse

from ..outputs import ConceptOutputs
from .gradients import concept_k_outputs, tokenize

if TYPE_CHECKING:
    from ..interfaces import ClassifierLike as Classifier

COUNT = 20  # nearest texts read before and after an edit (two passes of one subnetwork over them)
WORD = re.compile(r"\w+")


def check_count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"count must be a whole number of at least 1 (the nearest texts to read), got {value!r}")
    return value


class Nearby:
    """The texts of a split nearest to corrected texts (TF-IDF cosine), for showing an edit's reach."""

    def __init__(self, texts: Sequence[str], count: int = COUNT,
                 cached: Callable[[Classifier, int], ConceptOutputs | None] | None = None) -> None:
        self.texts = list(texts)
        # Concept k's outputs on every text for the model as it is now, when the caller keeps them
        # (the explorer's browse table): then only the pass with the edit in place is needed.
        self.cached = cached
        if not self.texts:
            raise ValueError("nearby: the split to search is empty")
        self.count = check_count(count)
        counts = [Counter(WORD.findall(t.lower())) for t in self.texts]
        self.vocab: dict[str, int] = {}
        for c in counts:
            for w in c:
                self.vocab.setdefault(w, len(self.vocab))
        df = np.zeros(len(self.vocab))
        for c in counts:
            df[[self.vocab[w] for w in c]] += 1
        self.idf = np.log((1 + len(self.texts)) / (1 + df)) + 1  # scikit-learn's smoothed idf
        self.matrix = sparse.vstack([self._vector(c) for c in counts]).tocsr()

    def __len__(self) -> int:
        return len(self.texts)

    def _vector(self, counts: Counter) -> sparse.csr_matrix:
        known = [(self.vocab[w], n) for w, n in counts.items() if w in self.vocab]
        cols = np.array([j for j, _ in known], dtype=np.int64)
        vals = np.array([n for _, n in known], dtype=np.float64) * self.idf[cols]
        norm = np.linalg.norm(vals)
        return sparse.csr_matrix((vals / norm if norm else vals, (np.zeros(len(cols), np.int64), cols)),
                                 shape=(1, len(self.vocab)))

    def nearest(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(rows, similarities) of the ``count`` texts most like any of ``texts``, most alike first;
        a text identical to a corrected one is left out (its change is the edit itself), and so is
        a text that shares no word with them (it is not near at all)."""
        queries = sparse.vstack([self._vector(Counter(WORD.findall(t.lower()))) for t in texts])
        similarity = (self.matrix @ queries.T).toarray().max(axis=1)
        same = set(texts)
        candidates = np.array([i for i, t in enumerate(self.texts) if t not in same and similarity[i] > 0], dtype=np.int64)
        order = candidates[np.argsort(-similarity[candidates], kind="stable")][: self.count]
        return order, similarity[order]

    def read(self, clf: Classifier, k: int, rows: np.ndarray, *, edited: bool = False) -> ConceptOutputs:
        """Concept k's outputs on ``rows`` through its mask as it is now (from ``cached`` when the
        mask is not ``edited`` and the caller has them)."""
        known = None if edited or self.cached is None else self.cached(clf, k)
        if known is not None:
            return known[torch.as_tensor(rows)]
        return concept_k_outputs(clf, tokenize(clf, [self.texts[i] for i in rows]), k)

    def report(self, clf: Classifier, k: int, rows: np.ndarray, similarity: np.ndarray, before: ConceptOutputs,
               after: ConceptOutputs) -> dict[str, Any]:
        """The nearest texts whose concept k value the edit changes, in words."""
        values = clf.schema.concept_values[k]
        was, now = before.values().tolist(), after.values().tolist()
        changed = [{"row": int(r), "text": self.texts[r], "similarity": round(float(s), 4), "before": values[a],
                    "after": values[b]} for r, s, a, b in zip(rows, similarity, was, now) if a != b]
        return {"n": len(rows), "changed": len(changed), "texts": changed}


def describe(nearby: dict[str, Any], concept: str, shown: int = 3, width: int = 60) -> str:
    """One line for a person: how many of the nearest texts the edit changes, the first few named."""
    line = f"the edit changes {concept} on {nearby['changed']} of the {nearby['n']} nearest texts"
    for t in nearby["texts"][:shown]:
        text = t["text"] if len(t["text"]) <= width else t["text"][: width - 3] + "..."
        line += f"\n  {t['before']} -> {t['after']}: {text!r}"
    more = nearby["changed"] - shown
    return line + (f"\n  and {more} more" if more > 0 else "")
