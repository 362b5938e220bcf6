"""Intervention protocols over a data split (docs/interventions.md): NI, SI, oracle, persistent.

- :func:`per_example` (the paper's Fig. 3): for every example, each concept
  the model gets wrong is corrected to its true value by editing that concept's
  mask; the example is re-predicted and the masks restored. Concept and task
  scores with no intervention (NI), with it (SI) for each ratio, and with the
  oracle (true activations fed to the classifier).
- :func:`persistent`: edits accumulate over the corrections of one split and
  stay; a split they never saw is scored before and after (the regression
  check), and the corrected examples are re-checked at the end.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import Split
from ..masks import Masks, kept, sparsity
from ..metrics import evaluate_predictions
from ..outputs import CBMOutput, ConceptOutputs, predicted_values
from .curves import single_fixes, swap_curve, swap_fixes
from .gradients import tokenize
from .guard import Guard
from .oracle import oracle_labels
from .ranking import EDIT, MAX_RATIO, revert
from .reports import OracleScores, PerExampleResult, PersistentResult, RatioScores, Scores, SplitChange
from .rewire import correct, edit

if TYPE_CHECKING:
    from ..interfaces import ClassifierLike as Classifier


def split_scores(clf: Classifier, split: Split, outputs: list[ConceptOutputs]) -> Scores:
    """Summary scores of the predictions that every concept's outputs give."""
    task = clf.task_logits(outputs).argmax(-1).numpy()
    return Scores.of(evaluate_predictions(split, clf.schema, task, predicted_values(outputs)))


def output_scores(clf: Classifier, split: Split, out: CBMOutput) -> Scores:
    """:func:`split_scores` of a forward pass's outputs."""
    return split_scores(clf, split, out.per_concept())


def _ratio_key(ratio: float | str) -> str:
    return ratio if isinstance(ratio, str) else f"{ratio:g}"


def _median(xs: list[int]) -> float:
    return float(np.median(xs)) if xs else 0.0


def per_example(
    clf: Classifier,
    split: Split,
    ratios: list[float | str],
    *,
    selection: str = "taylor",
    steps: int = 1,
    max_ratio: float = MAX_RATIO,
    confidence: float | None = EDIT.confidence,
    use_label: bool = True,
    progress: bool = True,
    out: CBMOutput | None = None,
) -> PerExampleResult:
    """NI, SI per ratio (a fraction or "auto") and oracle scores on ``split`` (every
    mask restored after each example), with the bits each fix flipped. ``out``: the
    model's outputs on ``split`` when the caller already has them."""
    clf.require_masks("to rewire")
    schema = clf.schema
    out = out if out is not None else clf.forward_texts(split.texts, progress=progress, desc="predict")
    logits = [o.clone() for o in out.per_concept()]
    pred = predicted_values(logits)
    wrong = pred != split.concepts  # (n, K)
    corrections = [{schema.concepts[k]: schema.concept_values[k][split.concepts[i, k]] for k in np.flatnonzero(wrong[i])}
                   for i in range(len(split))]
    oracle_task = np.array([schema.labels.index(o["label"]) for o in oracle_labels(clf, out.activations, corrections, out.features)])
    no_intervention = split_scores(clf, split, logits)
    oracle = OracleScores(**vars(Scores.of(evaluate_predictions(split, schema, oracle_task, split.concepts))),
                          single_fixes=single_fixes(clf, split, out))
    rewired = {}
    rows = np.flatnonzero(wrong.any(1))
    for ratio in ratios:
        new = [o.clone() for o in logits]
        bits_per_fix, bits_all = [], []
        for i in tqdm(rows, desc=f"intervene {selection} r={_ratio_key(ratio)}", disable=not progress):
            batches = tokenize(clf, [split.texts[i]])
            label = torch.tensor([int(split.labels[i])]) if use_label else None
            for k in np.flatnonzero(wrong[i]):
                value = torch.tensor([int(split.concepts[i, k])])
                drops, grows, after = edit(clf, k, batches, logits[k][i : i + 1], value, label, ratio=ratio,
                                           selection=selection, steps=steps, max_ratio=max_ratio, seed=int(i),
                                           confidence=confidence)
                revert(clf.model, schema.concepts[k], drops, grows)
                new[k][i] = after[0]
                bits = 2 * sum(int(d.size) for d in drops)
                bits_all.append(bits)
                if int(after.values()[0]) == int(value):
                    bits_per_fix.append(bits)
        rewired[_ratio_key(ratio)] = RatioScores(
            **vars(split_scores(clf, split, new)), ratio=ratio,
            corrections_fixed=len(bits_per_fix) / max(1, int(wrong.sum())), fixed=len(bits_per_fix),
            median_bits_per_fix=_median(bits_per_fix), mean_bits_per_correction=float(np.mean(bits_all)) if bits_all else 0.0,
            curve=swap_curve(clf, split, logits, new), single_fixes=swap_fixes(clf, split, logits, new, wrong))
    return PerExampleResult(
        n=len(split), wrong_concepts=int(wrong.sum()), examples_with_a_wrong_concept=int(wrong.any(1).sum()),
        steps=steps, uses_task_label=use_label, selection=selection, max_ratio=max_ratio,
        no_intervention=no_intervention, oracle=oracle, rewired=rewired)


def _diff_bits(a: Masks, b: Masks) -> int:
    return sum(int(np.count_nonzero(a[c][n].cpu().numpy() != b[c][n].cpu().numpy())) for c in a for n in a[c])


def stream_groups(wrong: np.ndarray, batch: int) -> list[tuple[list[int], int]]:
    """The stream's corrections in order, as (rows, k): each wrong concept alone (``batch`` 1), or each
    run of ``batch`` reviews with a wrong concept corrected concept by concept, one edit over its rows."""
    rows = np.flatnonzero(wrong.any(1))
    groups = []
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        for k in range(wrong.shape[1]):
            if group := [int(i) for i in chunk if wrong[i, k]]:
                groups.append((group, k))
    return groups


def _kind(outcome: str) -> str:
    """An outcome's kind for counting; a correction the model reads right when it comes is its own kind."""
    return "already right" if outcome.endswith("already right") else outcome.split(":")[0]


def persistent(
    clf: Classifier,
    edit_split: Split,
    eval_split: Split,
    ratio: float | str,
    *,
    selection: str = "taylor",
    steps: int = 1,
    max_ratio: float = MAX_RATIO,
    confidence: float | None = EDIT.confidence,
    use_label: bool = True,
    guard: Guard | None = None,
    keep_unfixed: bool = False,
    batch: int = 1,
    progress: bool = True,
) -> PersistentResult:
    """Correct every wrong concept of ``edit_split``, in order, cumulatively (kept edits
    stay, logged on ``clf``); score ``eval_split`` before and after, and re-check the
    corrections that were fixed when their edit was kept. With a ``guard``, each
    edit is kept only if the guard's accuracies do not drop beyond its tolerances.
    ``batch``: reviews per edit; above 1, each run of that many reviews is corrected concept
    by concept, one edit over the reviews that read the concept wrong (a file of corrections)."""
    clf.require_masks("to rewire")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch: expected a whole number of reviews per edit, at least 1, got {batch!r}")
    schema = clf.schema
    original = {c: {n: m.clone() for n, m in per.items()} for c, per in clf.model.masks.items()}
    eval_before = clf.evaluate(eval_split, progress=progress)
    out = clf.forward_texts(edit_split.texts, progress=progress, desc="predict")
    edit_before = output_scores(clf, edit_split, out)
    wrong = out.predicted_values() != edit_split.concepts
    corrected = []  # (row, k) fixed at the time of its kept edit
    outcomes: dict[str, int] = {}
    bits_kept, seconds, kept_corrections = [], [], 0
    for rows, k in tqdm(stream_groups(wrong, batch), desc=f"persistent edits {selection} r={_ratio_key(ratio)}",
                        disable=not progress):
        values = [schema.concept_values[k][edit_split.concepts[i, k]] for i in rows]
        labels = [schema.labels[edit_split.labels[i]] for i in rows] if use_label else None
        start = time.perf_counter()
        r = correct(clf, [edit_split.texts[i] for i in rows], schema.concepts[k], values, labels, ratio=ratio,
                    selection=selection, steps=steps, max_ratio=max_ratio, confidence=confidence, persist=True,
                    guard=guard, keep_unfixed=keep_unfixed, seed=rows[0])
        seconds.append(time.perf_counter() - start)
        kind = _kind(r.outcome)
        outcomes[kind] = outcomes.get(kind, 0) + len(rows)
        if r.persisted:
            bits_kept.append(r.bits_flipped)
            kept_corrections += len(rows)
            corrected += [(i, k) for i, fixed in zip(rows, r.fixed) if fixed]
    final = clf.forward_texts(edit_split.texts, progress=progress, desc="re-check")
    final_pred = final.predicted_values()
    still = sum(int(final_pred[i, k] == edit_split.concepts[i, k]) for i, k in corrected)
    right_at_end = int(np.count_nonzero(final_pred[wrong] == edit_split.concepts[wrong]))
    edit_after = output_scores(clf, edit_split, final)
    eval_after = clf.evaluate(eval_split, progress=progress)
    kept_same = all(kept(original[c]) == kept(per) for c, per in clf.model.masks.items())
    return PersistentResult(
        ratio=ratio, selection=selection, steps=steps, max_ratio=max_ratio, confidence=confidence, uses_task_label=use_label,
        guard=None if guard is None else guard.describe(), batch=batch,
        edits=len(clf.interventions), corrections_kept=kept_corrections, wrong_concepts=int(wrong.sum()), outcomes=outcomes,
        fixed_when_edited=len(corrected), still_fixed_at_end=still, still_fixed_fraction=still / max(1, len(corrected)),
        wrong_concepts_right_at_end=right_at_end, median_bits_per_kept_edit=_median(bits_kept),
        median_seconds_per_correction=float(np.median(seconds)) if seconds else 0.0,
        bits_changed=_diff_bits(original, clf.model.masks),
        bits_flipped_by_edits=sum(e.bits_flipped for e in clf.interventions),
        kept_counts_unchanged=kept_same, sparsity={c: sparsity(per) for c, per in clf.model.masks.items()},
        edit_split=SplitChange(before=edit_before, after=edit_after, n=len(edit_split)),
        eval_split=SplitChange(before=Scores.of(eval_before), after=Scores.of(eval_after), n=len(eval_split)))


def plot_ratios(result: PerExampleResult, path) -> None:
    """The paper's Fig. 3: concept and task accuracy against the intervention ratio, NI and oracle as lines."""
    from ..files import atomic_path
    from ..plotting import pyplot

    plt = pyplot()

    si = sorted((r for r in result.rewired.values() if not isinstance(r.ratio, str)), key=lambda r: r.ratio)
    xs = [100 * r.ratio for r in si]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for ax, key, title in ((axes[0], "concept_accuracy", "concept accuracy"), (axes[1], "task_accuracy", "task accuracy")):
        ax.plot(xs, [100 * getattr(r, key) for r in si], "o-", label="SI (mask rewiring)")
        ax.axhline(100 * getattr(result.no_intervention, key), color="0.4", ls="--", label="NI (no intervention)")
        ax.axhline(100 * getattr(result.oracle, key), color="tab:green", ls=":", label="oracle (true activations)")
        ax.set_xscale("log")
        ax.set_xlabel("intervention ratio r (% of prunable weights dropped and grown)")
        ax.set_ylabel(f"{title} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"per-example intervention, {result.n} examples, {result.wrong_concepts} wrong concepts", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
