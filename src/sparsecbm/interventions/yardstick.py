"""How far one correction carries: a persisted correction graded on the review's family
and on unrelated reviews, then undone (docs/interventions.md#how-far-a-correction-carries).

Model editing grades an edit by reliability (the edited input is right), generalisation
(its rephrasings are right too) and locality (unrelated inputs are unchanged); see
EasyEdit, ROME and MEMIT. CEBaB supplies the rephrasings. Every dev and test review comes in a family
(``Split.groups``, CEBaB's ``original_id``): the original and human edits of it, each
changing one *other* aspect. So for concept k, the siblings whose gold k value is the
corrected review's are near-paraphrases as far as k goes.

For each drawn correction (a wrong concept k on review i that has such siblings, one per
family), :func:`~sparsecbm.interventions.correct` runs with ``persist=True`` (the guard, if
any, decides whether the edit is kept). A kept edit is graded, then undone bit for bit:

- reliability: review i now has the gold value;
- generalisation: siblings (same family, same gold k) wrong before and right after;
- sibling harm: siblings right before and wrong after;
- locality: of ``unrelated`` reviews drawn from other families, the share whose
  k value is unchanged, and their concept-k and task accuracy before and after.

An edit the guard refuses changes nothing. The ``effective_*`` figures count it that way,
over every drawn correction; the rest are over kept edits.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from ..data import Split
from ..outputs import CBMOutput
from .guard import Guard
from .log import undo
from .ranking import AUTO, EDIT
from .reports import EditOutcome, FamilyEditsResult
from .rewire import correct

if TYPE_CHECKING:
    from ..interfaces import ClassifierLike as Classifier


def draw_corrections(split: Split, predicted: np.ndarray, n: int, seed: int) -> list[tuple[int, int, list[int]]]:
    """Up to ``n`` (row, concept, siblings) whose concept is predicted wrong and that have
    siblings of the same gold value; one per family, in a seeded order."""
    if split.groups is None:
        raise ValueError(f"{split.source or 'this split'}: no families (Split.groups); the yardstick needs a split "
                         "whose rows come in families, such as CEBaB's dev or test split")
    family = defaultdict(list)
    for i, g in enumerate(split.groups):
        family[g].append(i)
    candidates = []
    for i, k in zip(*np.nonzero(predicted != split.concepts)):
        siblings = [j for j in family[split.groups[i]] if j != i and split.concepts[j, k] == split.concepts[i, k]]
        if siblings:
            candidates.append((int(i), int(k), siblings))
    drawn, seen = [], set()
    for c in np.random.default_rng(seed).permutation(len(candidates)):
        i, k, siblings = candidates[c]
        if split.groups[i] not in seen:
            seen.add(split.groups[i])
            drawn.append((i, k, siblings))
        if len(drawn) == n:
            break
    return drawn


class MaskEditor:
    """The edit graded by default: :func:`~sparsecbm.interventions.correct` persists an edit of
    concept k's mask (the guard, if any, decides); the texts are then predicted again through it,
    and :meth:`undo` reverts it bit for bit. Another way of correcting (a retrieval memory, a
    fine-tuning step) is graded the same way by an object with these three methods and a name."""

    name = "mask rewiring"

    def __init__(self, clf: Classifier, *, guard: Guard | None = None, **settings) -> None:
        self.clf, self.guard, self.settings = clf, guard, settings

    def apply(self, text: str, k: int, value: str, label: str | None, seed: int):
        """Correct concept k of ``text``; returns :func:`correct`'s result (``persisted``: kept)."""
        return correct(self.clf, [text], self.clf.schema.concepts[k], [value], None if label is None else [label],
                       persist=True, guard=self.guard, seed=seed, **self.settings)

    def predict(self, texts: list[str], rows: np.ndarray, values: np.ndarray, task: np.ndarray):
        """(concept values (n, K), task labels (n,)) of ``texts`` (rows ``rows`` of the split, whose
        predictions before the edit are ``values``, ``task``) with the edit in place."""
        out = self.clf.forward_texts(texts)
        return out.predicted_values(), out.task_logits.argmax(-1).numpy()

    def undo(self) -> None:
        undo(self.clf)


def family_edits(
    clf: Classifier,
    split: Split,
    *,
    n: int = 60,
    unrelated: int = 150,
    seed: int = 0,
    guard: Guard | None = None,
    ratio: float | str = AUTO,
    selection: str = EDIT.selection,
    steps: int = EDIT.steps,
    max_ratio: float = EDIT.max_ratio,
    confidence: float | None = EDIT.confidence,
    use_label: bool = True,
    keep_unfixed: bool = False,
    editor=None,
    out: CBMOutput | None = None,
    progress: bool = True,
) -> FamilyEditsResult:
    """Grade ``n`` single corrections drawn from ``split``'s families (see the module's text);
    the settings are :func:`~sparsecbm.interventions.correct`'s, or ``editor`` corrects (a
    :class:`MaskEditor` with them by default). The model ends as it started: every kept edit
    is undone after it is graded. ``out``: the model's outputs on ``split`` when the caller has them."""
    clf.require_masks("to rewire")
    schema = clf.schema
    editor = editor if editor is not None else MaskEditor(clf, guard=guard, ratio=ratio, selection=selection,
                                                          steps=steps, max_ratio=max_ratio, keep_unfixed=keep_unfixed,
                                                          confidence=confidence)
    out = out if out is not None else clf.forward_texts(split.texts, progress=progress, desc="predict")
    predicted, task = out.predicted_values(), out.task_logits.argmax(-1).numpy()
    drawn = draw_corrections(split, predicted, n, seed)
    rng = np.random.default_rng(seed + 1)
    outcomes = []
    for i, k, siblings in tqdm(drawn, desc=f"family edits {selection} r={ratio}", disable=not progress):
        others = np.flatnonzero(np.asarray(split.groups) != split.groups[i])
        far = rng.choice(others, size=min(unrelated, len(others)), replace=False)
        start = time.perf_counter()
        r = editor.apply(split.texts[i], k, schema.concept_values[k][split.concepts[i, k]],
                         schema.labels[split.labels[i]] if use_label else None, seed=i)
        seconds = time.perf_counter() - start
        rows = np.asarray(siblings + far.tolist())
        now_pred, now_task = predicted[rows], task[rows]
        if r.persisted:
            try:
                now_pred, now_task = editor.predict([split.texts[j] for j in rows], rows, predicted[rows], task[rows])
            finally:  # graded or interrupted, the model is left as it was
                editor.undo()
        gold, before_k, after_k = split.concepts[rows, k], predicted[rows, k], now_pred[:, k]
        sib, unr = slice(0, len(siblings)), slice(len(siblings), None)
        outcomes.append(EditOutcome(
            row=i, concept=schema.concepts[k], kept=r.persisted, fixed=r.persisted and r.fixed[0],
            outcome=r.outcome, bits_flipped=r.bits_flipped if r.persisted else 0, seconds=seconds,
            siblings=len(siblings),
            siblings_wrong_before=int((before_k[sib] != gold[sib]).sum()),
            siblings_fixed=int(((before_k[sib] != gold[sib]) & (after_k[sib] == gold[sib])).sum()),
            siblings_right_before=int((before_k[sib] == gold[sib]).sum()),
            siblings_broken=int(((before_k[sib] == gold[sib]) & (after_k[sib] != gold[sib])).sum()),
            unrelated=len(far),
            unrelated_changed=int((before_k[unr] != after_k[unr]).sum()),
            unrelated_concept_accuracy=(float((before_k[unr] == gold[unr]).mean()), float((after_k[unr] == gold[unr]).mean())),
            unrelated_task_accuracy=(float((task[far] == split.labels[far]).mean()),
                                     float((now_task[unr] == split.labels[far]).mean())),
        ))
    return FamilyEditsResult.of(outcomes, method=editor.name, selection=selection, ratio=ratio, max_ratio=max_ratio,
                                steps=steps, confidence=confidence,
                                uses_task_label=use_label, keep_unfixed=keep_unfixed, seed=seed,
                                guard=None if guard is None else guard.describe())
