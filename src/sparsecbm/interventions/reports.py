"""What the protocols over a split report: typed results, each with ``to_dict()`` for JSON.

The JSON keeps the names the results files have always had ("NI", "SI", "oracle"),
so files written before these types read the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Scores:
    """Mean concept and task scores of one set of predictions on a split."""

    concept_accuracy: float
    concept_macro_f1: float
    task_accuracy: float
    task_macro_f1: float

    @classmethod
    def of(cls, result: dict[str, Any]) -> "Scores":
        """From :func:`sparsecbm.metrics.evaluate_predictions`'s result."""
        concepts = result["concepts"]["mean"]
        return cls(concept_accuracy=concepts["accuracy"], concept_macro_f1=concepts["macro_f1"],
                   task_accuracy=result["task"]["accuracy"], task_macro_f1=result["task"]["macro_f1"])


@dataclass(frozen=True, kw_only=True)
class Fixes:
    """Over every (text, wrong concept) pair, corrected alone: labels fixed and broken."""

    pairs: int
    fixed: int
    broken: int
    net: float  # (fixed - broken) / pairs

    def line(self, how: str = "corrected alone") -> str:
        return (f"one wrong concept {how}, over {self.pairs} (text, concept) pairs: {self.fixed} labels "
                f"fixed, {self.broken} broken (net {100 * self.net:+.1f} %)")


@dataclass(frozen=True, kw_only=True)
class OracleScores(Scores):
    """Scores with every wrong concept's activations set to its true value."""

    single_fixes: Fixes


@dataclass(frozen=True, kw_only=True)
class RatioScores(Scores):
    """Scores with every wrong concept's mask rewired at one ratio (each restored after its example)."""

    ratio: float | str
    corrections_fixed: float  # share of the wrong concepts that the edit fixed
    fixed: int
    median_bits_per_fix: float
    mean_bits_per_correction: float
    curve: list[float]  # task accuracy with 0..K of the rewired concepts swapped in
    single_fixes: Fixes


@dataclass(frozen=True, kw_only=True)
class PerExampleResult:
    """:func:`~sparsecbm.interventions.protocols.per_example`: NI, oracle, and SI per ratio."""

    n: int
    wrong_concepts: int
    examples_with_a_wrong_concept: int
    steps: int
    uses_task_label: bool
    selection: str
    max_ratio: float
    no_intervention: Scores  # "NI"
    oracle: OracleScores
    rewired: dict[str, RatioScores]  # "SI": per ratio, as written ("0.01", "auto")

    def rows(self) -> list[tuple[str, Scores]]:
        """(name, scores) of NI, each SI ratio and the oracle, in that order."""
        return [("NI", self.no_intervention), *((f"SI r={k}", v) for k, v in self.rewired.items()), ("oracle", self.oracle)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {**{k: d[k] for k in ("n", "wrong_concepts", "examples_with_a_wrong_concept", "steps", "uses_task_label",
                                     "selection", "max_ratio")},
                "NI": d["no_intervention"], "oracle": d["oracle"], "SI": d["rewired"]}


@dataclass(frozen=True, kw_only=True)
class SplitChange:
    """A split's scores before and after a stream of edits."""

    before: Scores
    after: Scores
    n: int


@dataclass(frozen=True, kw_only=True)
class PersistentResult:
    """:func:`~sparsecbm.interventions.protocols.persistent`: a stream of kept edits and what it did."""

    ratio: float | str
    selection: str
    steps: int
    max_ratio: float
    uses_task_label: bool
    guard: dict[str, Any] | None  # {"n", "tolerance", "task_tolerance"} of the guard, when one judged
    confidence: float | None = None  # the auto search's (EditSettings.confidence)
    batch: int = 1  # reviews per edit: 1, each wrong concept alone
    edits: int  # kept
    corrections_kept: int  # wrong concepts whose edit was kept (= edits when each is corrected alone)
    wrong_concepts: int
    outcomes: dict[str, int]  # outcome kind -> wrong concepts; "already right": read right when its turn came
    fixed_when_edited: int
    still_fixed_at_end: int
    still_fixed_fraction: float
    wrong_concepts_right_at_end: int
    median_bits_per_kept_edit: float
    median_seconds_per_correction: float
    bits_changed: int  # mask bits that differ from the original masks at the end
    bits_flipped_by_edits: int
    kept_counts_unchanged: bool  # every concept keeps as many weights as before
    sparsity: dict[str, float]
    edit_split: SplitChange
    eval_split: SplitChange

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class CurvesResult:
    """:func:`~sparsecbm.interventions.curves.intervention_curves`."""

    n: int
    concepts: list[str]
    j: list[int]  # concepts set true: 0..K
    curves: dict[str, list[float]]  # "order/values" -> task accuracy at each j
    hard_concepts_task_accuracy: float
    task_accuracy: float
    single_fixes: Fixes
    concept_share: float
    rewiring_single_fixes: Fixes | None = None  # the same fixes by rewiring masks, when measured

    def with_rewiring(self, name: str, curve: list[float], fixes: Fixes) -> "CurvesResult":
        """This result with a rewiring curve and its single fixes added."""
        return replace(self, curves={**self.curves, name: curve}, rewiring_single_fixes=fixes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["rewiring_single_fixes"] is None:
            del d["rewiring_single_fixes"]
        return d


@dataclass(frozen=True, kw_only=True)
class EditOutcome:
    """One graded correction of :func:`~sparsecbm.interventions.yardstick.family_edits`."""

    row: int  # the corrected review
    concept: str
    kept: bool  # persisted (the guard, if any, let it through); graded, then undone
    fixed: bool  # kept, and the review now has the gold value
    outcome: str
    bits_flipped: int
    seconds: float  # the correction, the guard's judgement included
    siblings: int  # same family, same gold value of the concept
    siblings_wrong_before: int
    siblings_fixed: int  # wrong before, right after
    siblings_right_before: int
    siblings_broken: int  # right before, wrong after
    unrelated: int  # reviews of other families
    unrelated_changed: int  # whose value of the concept changed
    unrelated_concept_accuracy: tuple[float, float]  # before, after
    unrelated_task_accuracy: tuple[float, float]


@dataclass(frozen=True, kw_only=True)
class FamilyEditsResult:
    """Single corrections on a split's families: reliability, generalisation, harm, locality."""

    method: str  # how corrections were made: "mask rewiring" (the settings below), or another editor's name
    selection: str
    ratio: float | str
    max_ratio: float
    steps: int
    uses_task_label: bool
    keep_unfixed: bool
    seed: int
    confidence: float | None = None  # the auto search's (EditSettings.confidence)
    guard: dict[str, Any] | None
    corrections: int  # drawn
    kept: int
    kept_share: float
    reliability: float  # fixed / kept
    generalisation: float  # over kept edits: siblings fixed / siblings wrong before
    effective_generalisation: float  # the same over every drawn correction (a refused edit fixes none)
    sibling_harm: float  # over kept edits: siblings broken / siblings right before
    locality: float  # over kept edits: unrelated reviews whose concept value is unchanged
    unrelated_concept_accuracy_change: float  # mean per kept edit, in points
    unrelated_task_accuracy_change: float  # mean per kept edit, in points
    median_seconds: float
    edits: list[EditOutcome]

    @classmethod
    def of(cls, edits: list[EditOutcome], **settings: Any) -> "FamilyEditsResult":
        kept = [e for e in edits if e.kept]

        def share(part: int, whole: int) -> float:
            return part / whole if whole else 0.0

        def mean_change(pairs: list[tuple[float, float]]) -> float:
            return 100 * sum(b - a for a, b in pairs) / len(pairs) if pairs else 0.0

        return cls(
            **settings, corrections=len(edits), kept=len(kept), kept_share=share(len(kept), len(edits)),
            reliability=share(sum(e.fixed for e in kept), len(kept)),
            generalisation=share(sum(e.siblings_fixed for e in kept), sum(e.siblings_wrong_before for e in kept)),
            effective_generalisation=share(sum(e.siblings_fixed for e in kept), sum(e.siblings_wrong_before for e in edits)),
            sibling_harm=share(sum(e.siblings_broken for e in kept), sum(e.siblings_right_before for e in kept)),
            locality=1 - share(sum(e.unrelated_changed for e in kept), sum(e.unrelated for e in kept)),
            unrelated_concept_accuracy_change=mean_change([e.unrelated_concept_accuracy for e in kept]),
            unrelated_task_accuracy_change=mean_change([e.unrelated_task_accuracy for e in kept]),
            median_seconds=float(sorted(e.seconds for e in edits)[len(edits) // 2]) if edits else 0.0,
            edits=edits)

    def line(self) -> str:
        return (f"{self.kept} of {self.corrections} corrections kept ({100 * self.kept_share:.0f} %); reliability "
                f"{100 * self.reliability:.1f} %, generalisation {100 * self.generalisation:.1f} % "
                f"(over every correction {100 * self.effective_generalisation:.1f} %), sibling harm "
                f"{100 * self.sibling_harm:.1f} %, locality {100 * self.locality:.1f} % (unrelated reviews' concept "
                f"accuracy {self.unrelated_concept_accuracy_change:+.2f}, task {self.unrelated_task_accuracy_change:+.2f} "
                f"points per edit)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
