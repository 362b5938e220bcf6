"""Zero-label concept scoring: clauses of a text against each concept value's example phrases.

A review speaks of an aspect in one clause ("Best dumplings in town", "but the waiter was
rude"), so each text is cut into clauses and each clause embedded once. A clause's relevance to
concept k is its highest cosine similarity to any phrase of k (values and ``about``). Concepts
compete for clauses: a clause counts for the concept it is most relevant to, and only when that
relevance reaches the file's threshold. Concept k's value is then read at its most relevant
clause (the value whose phrases it matches best); a concept with no clause is "not mentioned".
Each value's similarity is read against its median over the clauses about k in the same texts
(when there are enough), so that a generic phrase does not win everywhere: an annotation thus
depends a little on the other texts of the file. The task label is never looked at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .concept_file import ConceptFile
from .encoder import SentenceEncoder

_SENTENCES = re.compile(r"(?<=[.!?;])\s+|\n+")
# Clauses end at contrast words, semicolons, commas and "and": a review rarely speaks of two aspects
# in one clause ("Lovely room, great pasta and a rude waiter"). On CEBaB dev, cutting at commas and
# every "and" helped most on food, the aspect reviews most often mention beside another.
_CLAUSES = re.compile(r",?\s+\b(?:but|although|though|however|while|whereas|yet)\b\s+|;|,\s+|\s+and\s+", re.I)
TEMPERATURE = 0.05  # softness of the zero-label confidence (cosine units)
MIN_CENTRE = 30  # clauses about a concept needed to read its values against their median


def clauses(text: str) -> list[str]:
    """The sentences of ``text`` cut further at contrast words ("but", "although", ...),
    semicolons, commas and "and"."""
    parts = [c.strip() for s in _SENTENCES.split(text) for c in _CLAUSES.split(s)]
    return [p for p in parts if p] or [text.strip() or text]


@dataclass(frozen=True)
class ConceptScores:
    """One concept over n texts: the zero-label decision, its confidence, the deciding clause,
    and the similarity features a calibrator can learn from."""

    values: np.ndarray  # (n,) index into the concept file's values (not mentioned = last)
    confidence: np.ndarray  # (n,) in [0, 1]
    evidence: tuple[str, ...]  # the clause that decided ("" when not mentioned)
    features: np.ndarray  # (n, F) float32
    mention: np.ndarray | None = None  # (n,) probability that the text mentions the concept (a sentence encoder's)
    clause: np.ndarray | None = None  # (n, d) the deciding clause's embedding (zeros when not mentioned)

    def take(self, rows) -> "ConceptScores":
        """The scores of some texts only (``rows``: a slice or indices)."""
        def pick(x):
            return None if x is None else x[rows]
        evidence = np.asarray(self.evidence, dtype=object)[rows]
        return ConceptScores(values=self.values[rows], confidence=self.confidence[rows], evidence=tuple(evidence),
                             features=self.features[rows], mention=pick(self.mention), clause=pick(self.clause))


def score_texts(texts: list[str], concept_file: ConceptFile, encoder: SentenceEncoder, *,
                progress: bool = False) -> list[ConceptScores]:
    """Score every concept of ``concept_file`` on ``texts`` (one :class:`ConceptScores` per concept)."""
    pieces = [clauses(t) for t in texts]
    flat = [c for cs in pieces for c in cs]
    owner = np.repeat(np.arange(len(texts)), [len(cs) for cs in pieces])  # (m,) text of each clause
    clause_emb = encoder.encode(flat, progress=progress, desc="embedding clauses")
    phrase_emb = [encoder.encode([p for _, ps in spec.phrases for p in ps] + list(spec.about))
                  for spec in concept_file.concepts]
    sims = []  # per concept: (m, V) best similarity to each mentioned value, (m,) to its topic phrases
    for k, spec in enumerate(concept_file.concepts):
        by_value, start = [], 0
        for _, ps in spec.phrases:
            by_value.append((clause_emb @ phrase_emb[k][start:start + len(ps)].T).max(1))
            start += len(ps)
        about = (clause_emb @ phrase_emb[k][start:].T).max(1) if spec.about else np.full(len(flat), -1.0, np.float32)
        sims.append((np.stack(by_value, 1), about))
    relevance = np.stack([np.maximum(v.max(1), a) for v, a in sims], 1)  # (m, K)
    winner = relevance.argmax(1)
    return [_concept_scores(sims[k], relevance[:, k], winner == k, owner, flat, clause_emb, len(texts),
                            concept_file.threshold) for k in range(len(sims))]


def _concept_scores(sims: tuple[np.ndarray, np.ndarray], relevance: np.ndarray, won: np.ndarray,
                    owner: np.ndarray, flat: list[str], clause_emb: np.ndarray, n: int,
                    threshold: float) -> ConceptScores:
    by_value, about = sims
    n_values = by_value.shape[1]
    counted = won & (relevance >= threshold)
    # The deciding clause of each text: its most relevant clause among those won by concept k.
    best_rel = _per_text(np.where(won, relevance, -1.0), owner, n, np.maximum, -1.0)
    decisive = np.full(n, -1)
    for j in np.flatnonzero(won):
        t = owner[j]
        if relevance[j] == best_rel[t] and decisive[t] < 0:
            decisive[t] = j
    mentioned = best_rel >= threshold
    at_clause = np.where(decisive[:, None] >= 0, by_value[np.maximum(decisive, 0)], 0.0)  # (n, V)
    # A value is read against the typical clause about k in the same texts: phrases that are merely
    # generic ("It was great.") would otherwise win most clauses (it helped on CEBaB dev). Too few
    # clauses about k make that median noise: then the raw similarities decide.
    offset = np.median(by_value[won], axis=0) if won.sum() >= MIN_CENTRE else np.zeros(n_values)
    centred_at = at_clause - offset
    values = np.where(mentioned, centred_at.argmax(1), n_values)
    p_mention = 1.0 / (1.0 + np.exp(-(best_rel - threshold) / TEMPERATURE))
    polarity = np.exp((centred_at - centred_at.max(1, keepdims=True)) / TEMPERATURE)
    polarity /= polarity.sum(1, keepdims=True)
    confidence = np.where(mentioned, p_mention * polarity.max(1), 1.0 - p_mention)
    evidence = tuple(flat[j] if ok else "" for j, ok in zip(decisive, mentioned))
    contrast = by_value - by_value.mean(1, keepdims=True)  # each value against the concept's other values
    features = [
        _per_text(relevance, owner, n, np.maximum, -1.0),
        best_rel,
        _per_text(about, owner, n, np.maximum, -1.0),
        _per_text(won.astype(np.float32), owner, n, np.add, 0.0),
        _per_text(counted.astype(np.float32), owner, n, np.add, 0.0),
    ]
    for v in range(n_values):
        features += [_per_text(by_value[:, v], owner, n, np.maximum, -1.0),
                     _per_text(np.where(won, by_value[:, v], -1.0), owner, n, np.maximum, -1.0),
                     _per_text(np.where(won, contrast[:, v], 0.0), owner, n, np.add, 0.0),
                     at_clause[:, v]]
    features += [*np.eye(n_values + 1)[values].T, confidence]  # the zero-label decision itself
    clause = np.where(mentioned[:, None], clause_emb[np.maximum(decisive, 0)], 0.0).astype(np.float32)
    return ConceptScores(values=values.astype(np.int64), confidence=confidence.astype(np.float32),
                         evidence=evidence, features=np.stack(features, 1).astype(np.float32),
                         mention=p_mention.astype(np.float32), clause=clause)


def _per_text(x: np.ndarray, owner: np.ndarray, n: int, ufunc: np.ufunc, start: float) -> np.ndarray:
    """Reduce clause values to their texts (``ufunc`` is np.maximum or np.add)."""
    out = np.full(n, start, dtype=np.float64)
    ufunc.at(out, owner, x)
    return out
