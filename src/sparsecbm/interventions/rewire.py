"""One correction: rank, flip, re-predict, keep or roll back (``correct``, ``intervene``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.batching import check_texts
from ..outputs import ConceptOutputs
from .gradients import concept_k_outputs, saliency, tokenize
from .nearby import Nearby
from .ranking import (
    AUTO,
    EDIT,
    MAX_RATIO,
    EditSettings,
    auto_ladder,
    check_confidence,
    check_ratio,
    count_flips,
    edit_buffers,
    flip,
    rank,
    revert,
)
from .results import CorrectionResult, Edit, InterventionResult, Plan

if TYPE_CHECKING:
    from ..interfaces import ClassifierLike as Classifier


def _n_bits(total: int, ratio: float) -> int:
    return round(ratio * total)


def reached(logits: ConceptOutputs, values: torch.Tensor, confidence: float | None = None) -> torch.Tensor:
    """(n,) bool: each text reads its value in ``values``, with at least ``confidence``
    probability when given (an edit searched to that confidence is sure, not barely right)."""
    right = logits.values() == values
    if confidence is not None:
        right &= logits.logits.softmax(-1).gather(1, values[:, None]).squeeze(1) >= confidence
    return right


def edit(
    clf: Classifier, k: int, batches: list[tuple[slice, dict]], logits: ConceptOutputs, values: torch.Tensor,
    labels: torch.Tensor | None, *, ratio: float | str, selection: str, steps: int, max_ratio: float = MAX_RATIO,
    seed: int = 0, penalty: np.ndarray | None = None, primary: int | None = None, confidence: float | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], ConceptOutputs]:
    """Run up to ``steps`` drop/grow steps on concept k's mask (left edited), stopping
    once every text predicts its ``values`` (n,); ``logits`` are concept k's
    outputs before the edit, which the caller already has. Returns per-step drops
    and grows (sorted flat indices) and the concept's outputs afterwards.
    ``penalty``: per-bit cost of a flip elsewhere, see :func:`rank`. ``primary``: the
    first texts are the corrections and the rest only to be kept (a repair): the search
    counts the first ones fixed before the others. ``confidence``: a text counts as fixed only
    once its value has at least this probability."""
    concept = clf.schema.concepts[k]
    masks_k = clf.model.masks[concept]
    total = sum(m.numel() for m in masks_k.values())
    n_max = _n_bits(total, max_ratio if ratio == AUTO else ratio)
    drops: list[np.ndarray] = []
    grows: list[np.ndarray] = []
    try:
        for step in range(steps):
            if n_max == 0 or bool(reached(logits, values, None if step == 0 else confidence).all()):
                break  # nothing to flip, already right (no edit needed), or fixed to the confidence asked
            scores = saliency(clf, k, batches, values, labels, selection=selection, out=edit_buffers(clf, masks_k)[0])
            drop, grow = rank(clf, masks_k, scores, n_max, selection, seed + step, penalty)
            if drop.size == 0:
                break  # no bit would lower the loss
            if ratio == AUTO:
                n, logits = search(clf, k, batches, values, drop, grow, total, primary, confidence)
            else:
                n = drop.size
                flip(clf.model, concept, drop, grow)
                logits = concept_k_outputs(clf, batches, k)
            drops.append(np.sort(drop[:n]))
            grows.append(np.sort(grow[:n]))
    except BaseException:
        revert(clf.model, concept, drops, grows)
        raise
    return drops, grows, logits


def search(
    clf: Classifier, k: int, batches: list[tuple[slice, dict]], values: torch.Tensor, drop: np.ndarray,
    grow: np.ndarray, total: int, primary: int | None = None, confidence: float | None = None,
) -> tuple[int, ConceptOutputs]:
    """Flip growing prefixes of the rankings along the auto ladder; stop at the first
    that fixes every text (to ``confidence``, when given). Leaves the best prefix flipped (every text fixed, else
    the most fixed, then the lowest concept loss; with ``primary``, the most of the
    first ``primary`` texts fixed before the rest) and returns its size and logits."""
    model, concept = clf.model, clf.schema.concepts[k]
    done, best = 0, None
    try:
        for n in auto_ladder(total, drop.size):
            flip(model, concept, drop[done:n], grow[done:n])  # the rankings nest: flip only what is new
            done = n
            logits = concept_k_outputs(clf, batches, k)
            right = reached(logits, values, confidence)
            fixed = (int(right[:primary].sum()), int(right.sum()))
            loss = float(F.cross_entropy(logits.logits, values, reduction="sum"))
            if best is None or (fixed, -loss) > (best[1], -best[2]):
                best = (n, fixed, loss, logits)
            if fixed[1] == len(values):
                break
        n = best[0]
        flip(model, concept, drop[n:done], grow[n:done], undo=True)
    except BaseException:
        flip(model, concept, drop[:done], grow[:done], undo=True)
        raise
    return n, best[3]


def _as_list(name: str, given, n: int, allow_none: bool = False) -> list | None:
    """One str for every text, or a sequence of n; a clear error naming the argument otherwise."""
    if given is None and allow_none:
        return None
    if isinstance(given, str):
        return [given] * n
    if given is None or not hasattr(given, "__len__"):
        raise TypeError(f"{name}: expected a str or a list of {n} str, got {type(given).__name__}")
    given = list(given)
    if len(given) != n:
        raise ValueError(f"{name}: {len(given)} given for {n} texts; give one per text (or one str for all)")
    return given


def _check(
    clf: Classifier, concept: str, values: list[str], labels: list[str] | None, ratio, selection: str, steps: int,
    max_ratio: float,
) -> tuple[int, torch.Tensor, torch.Tensor | None]:
    clf.require_masks("to rewire")
    schema = clf.schema
    k, _ = clf.schema.concept_index(concept, values[0])
    v = torch.tensor([clf.schema.concept_index(concept, value)[1] for value in values])
    y = None
    if labels is not None:
        for label in labels:
            if label not in schema.labels:
                raise ValueError(f"labels: unknown label {label!r}; the labels are {list(schema.labels)}")
        y = torch.tensor([schema.labels.index(label) for label in labels])
    check_ratio(ratio)
    EditSettings(selection=selection, max_ratio=max_ratio, steps=steps)  # checks each
    return k, v, y


def _describe(clf: Classifier, k: int, outputs: list[ConceptOutputs]) -> list[dict[str, Any]]:
    p = outputs[k].logits.softmax(-1)  # (n, C_k)
    v = p.argmax(-1)
    label = clf.task_logits(outputs).argmax(-1)
    schema = clf.schema
    return [{"value": schema.concept_values[k][int(v[i])], "probability": float(p[i, v[i]]),
             "label": schema.labels[int(label[i])]} for i in range(len(p))]


def correct(
    clf: Classifier,
    texts: Sequence[str],
    concept: str,
    values: str | Sequence[str],
    labels: str | Sequence[str] | None = None,
    *,
    ratio: float | str = AUTO,
    selection: str = EDIT.selection,
    steps: int = EDIT.steps,
    max_ratio: float = EDIT.max_ratio,
    persist: bool = False,
    guard=None,
    keep_unfixed: bool = False,
    seed: int = 0,
    plan: Plan | None = None,
    nearby: Nearby | None = None,
    confidence: float | None = EDIT.confidence,
) -> CorrectionResult:
    """Correct ``concept`` to ``values`` (one per text, or one for all) on ``texts``
    with one edit of its mask, ranked by the gradient of L_k summed over them.

    ``ratio``: a fraction of the prunable weights to drop (and grow) per step, or
    ``"auto"``: the smallest count on the ladder (up to ``max_ratio``) that fixes
    them. ``labels``, when known, add the task term to L_k. ``persist=True``
    keeps the edit and logs it as one entry of ``clf.interventions`` (undo with
    :func:`undo`); otherwise the mask is restored. An edit that fixes none of
    the texts is rolled back unless ``keep_unfixed``. A ``guard``
    (:class:`~sparsecbm.interventions.Guard`) shapes and judges the edit: with the
    taylor rule each bit's gain must exceed its second-order cost on the guard's
    texts (``guard.caution``), and the edit is kept only if the guard's
    accuracies hold and no earlier logged correction of the concept is undone;
    a rejected edit is rolled back bit for bit and not logged. ``outcome`` in the
    result says what happened and why. ``plan``: the result's ``plan`` of an earlier
    correction of the same texts on the same model (a preview), applied as it is with no
    search: a Keep then keeps exactly the edit that was previewed, without computing it again.
    ``nearby`` (:class:`~sparsecbm.interventions.Nearby`): the result's ``nearby`` lists which of
    the texts nearest the corrected ones change their value of the concept with the edit in place.
    ``confidence``: the auto search goes on until every text reads its value with at least this
    probability (default 0.9, ``EditSettings.confidence``; 0 or None: until it reads it at all)."""
    texts = check_texts(texts)
    if not texts:
        raise ValueError("texts: no corrections given (an empty batch)")
    values = [clf.schema.value_of(concept, v) for v in _as_list("values", values, len(texts))]
    labels = _as_list("labels", labels, len(texts), allow_none=True)
    labels = None if labels is None else [clf.schema.label_of(label) for label in labels]
    k, v, y = _check(clf, concept, values, labels, ratio, selection, steps, max_ratio)
    check_confidence(confidence)
    if nearby is not None and not isinstance(nearby, Nearby):
        raise TypeError(f"nearby: expected a sparsecbm.interventions.Nearby (the texts to search), got {type(nearby).__name__}")
    batches = tokenize(clf, texts)
    logits = [concept_k_outputs(clf, batches, j) for j in range(len(clf.schema.concepts))]
    before = _describe(clf, k, logits)
    guard_before = guard.concept_logits(clf) if guard is not None else None
    logged_before = guard.logged_logits(clf, k) if guard is not None else None
    penalty = guard.penalty(clf, k) if guard is not None and selection == "taylor" else None
    if nearby is not None:
        near_rows, near_similarity = nearby.nearest(texts)
        near_before = nearby.read(clf, k, near_rows)
    if plan is None:
        drops, grows, logits[k] = edit(clf, k, batches, logits[k], v, y, ratio=ratio, selection=selection,
                                       steps=steps, max_ratio=max_ratio, seed=seed, penalty=penalty,
                                       confidence=confidence)
    else:
        drops, grows = plan
        for drop, grow in zip(drops, grows):
            flip(clf.model, concept, drop, grow)
        logits[k] = concept_k_outputs(clf, batches, k)
    keep, verdict, reach = persist and bool(drops), None, None
    try:
        after = _describe(clf, k, logits)
        fixed = [a["value"] == value for a, value in zip(after, values)]
        if not drops:
            outcome = "nothing flipped: " + ("already right" if all(fixed) else "no weight would lower the loss")
        elif not (any(fixed) or keep_unfixed):
            keep, outcome = False, "rolled back: the edit fixed none of the texts"
        else:
            outcome = "kept" if persist else "preview only: the model is unchanged until the edit is kept"
        if guard is not None and drops and (keep or not persist):  # no verdict needed on an edit already refused
            verdict = guard.judge(clf, k, guard_before, logged_before)
            if not verdict["accepted"] and plan is None and guard.repairs:
                verdict, logits[k] = _repair(clf, k, texts, batches, v, y, guard, guard_before, logged_before,
                                             verdict, drops, grows, ratio=ratio, selection=selection, max_ratio=max_ratio, seed=seed,
                                             penalty=penalty, confidence=confidence)
                after = _describe(clf, k, logits)
                fixed = [a["value"] == value for a, value in zip(after, values)]
                if verdict["accepted"] and not (any(fixed) or keep_unfixed):
                    verdict = {**verdict, "accepted": False, "reason": "the repaired edit fixed none of the texts"}
            if not verdict["accepted"]:
                keep, outcome = False, f"rolled back by the guard: {verdict['reason']}"
        if nearby is not None:
            near_after = nearby.read(clf, k, near_rows, edited=True) if drops else near_before
            reach = nearby.report(clf, k, near_rows, near_similarity, near_before, near_after)
    except BaseException:
        keep = False
        raise
    finally:
        if not keep:
            revert(clf.model, concept, drops, grows)
            if guard is not None and drops:
                guard.restore(clf, k, guard_before[k], logged_before)
    drop_all = np.concatenate(drops) if drops else np.zeros(0, np.int64)
    grow_all = np.concatenate(grows) if grows else np.zeros(0, np.int64)
    per_layer = count_flips(clf.model.masks[concept], drop_all, grow_all)
    sizes = [int(d.size) for d in drops]
    if keep:
        clf.interventions.append(Edit(
            concept=concept, values=values, texts=texts, labels=labels, ratio=ratio, selection=selection,
            steps=len(drops), step_sizes=sizes, time=time.time(), per_layer=per_layer, guard=verdict,
            drop=torch.from_numpy(drop_all), grow=torch.from_numpy(grow_all)))
    return CorrectionResult(concept=concept, values=values, before=before, after=after, fixed=fixed,
                            selection=selection, ratio=ratio, steps=len(drops), step_sizes=sizes, per_layer=per_layer,
                            persisted=keep, outcome=outcome, guard=verdict, nearby=reach, plan=(drops, grows))


def _repair(clf: Classifier, k: int, texts: list[str], batches: list, values: torch.Tensor, labels: torch.Tensor | None, guard,
            guard_before: list[ConceptOutputs], logged_before, verdict: dict[str, Any], drops: list, grows: list,
            **edit_args) -> tuple[dict[str, Any], ConceptOutputs]:
    """Up to ``guard.repairs`` more edit steps while the guard refuses: each is fitted from the
    edited mask to the corrected texts and to the guard texts whose value of concept k the edit
    changed without making it right, kept at their earlier values (``Guard.anchors``). Appends
    the steps to ``drops`` / ``grows``; returns the last verdict and concept k's outputs on ``texts``
    (tokenized as ``batches``)."""
    rows = np.zeros(0, np.int64)
    anchor_values = torch.zeros(0, dtype=values.dtype)
    for _ in range(guard.repairs):
        new_rows, new_values = guard.anchors(clf, k, guard_before)
        if new_rows.size == 0:
            break  # a refusal for the task alone: no text to keep
        keep = ~np.isin(new_rows, rows)
        rows, anchor_values = np.concatenate([rows, new_rows[keep]]), torch.cat([anchor_values, new_values[keep]])
        both = tokenize(clf, texts + [guard.split.texts[i] for i in rows])
        all_labels = None if labels is None else torch.cat([labels, torch.as_tensor(guard.split.labels[rows])])
        all_values = torch.cat([values, anchor_values])
        more_drops, more_grows, _ = edit(clf, k, both, concept_k_outputs(clf, both, k), all_values, all_labels,
                                         steps=1, primary=len(texts), **edit_args)
        if not more_drops:
            break  # nothing left that would lower the loss
        drops += more_drops
        grows += more_grows
        verdict = guard.judge(clf, k, guard_before, logged_before)
        if verdict["accepted"]:
            break
    return verdict, concept_k_outputs(clf, batches, k)


def intervene(
    clf: Classifier,
    text: str,
    concept: str,
    value: str,
    *,
    label: str | None = None,
    **kwargs: Any,
) -> InterventionResult:
    """Correct ``concept`` to ``value`` on one ``text`` by rewiring its mask.

    ``ratio`` ("auto"), ``selection`` ("taylor"), ``steps`` (1), ``max_ratio``,
    ``persist`` (False), ``guard``, ``keep_unfixed``, ``seed``, ``plan``, ``nearby``, ``confidence``: as in
    :func:`correct`. ``label``,
    when known, adds the task term to the loss that ranks the weights."""
    (text,) = check_texts([text])
    r = correct(clf, [text], concept, [value], None if label is None else [label], **kwargs)
    return InterventionResult(concept=concept, value=value, before=r.before[0], after=r.after[0], fixed=r.fixed[0],
                              selection=r.selection, steps=r.steps, n=r.n, per_layer=r.per_layer,
                              persisted=r.persisted, outcome=r.outcome, guard=r.guard, nearby=r.nearby, plan=r.plan)
