"""CEBaB's explanation benchmark (benchmarks/cebab_explain.py): its pairs and its errors, as CEBaB's code forms them."""

import json

import numpy as np
import pytest

from benchmarks.cebab_explain import errors, intervention_pairs, onehot_aspects


def _record(id_, original, is_original, edit_type=None, **aspects):
    return {"id": id_, "original_id": original, "is_original": is_original, "edit_type": edit_type,
            **{f"{a}_aspect_majority": aspects.get(a, "") for a in ("food", "ambiance", "service", "noise")}}


def test_pairs_run_both_ways_between_original_and_edit_and_between_edits_of_one_type():
    records = [_record("a0", "a", True, food="Positive", service="Negative"),
               _record("a1", "a", False, "food", food="Negative", service="Negative"),
               _record("a2", "a", False, "food", food="unknown", service="Negative"),
               _record("a3", "a", False, "service", food="Positive", service="Negative"),  # no validated change
               _record("b0", "b", True, food="Positive")]  # a family of one: no pairs
    pairs = intervention_pairs(records)
    got = sorted((records[p.base]["id"], records[p.counterfactual]["id"], p.concept, p.kind) for p in pairs)
    assert got == [("a0", "a1", "food", "original->edit"), ("a0", "a2", "food", "original->edit"),
                   ("a1", "a0", "food", "edit->original"), ("a1", "a2", "food", "edit->edit"),
                   ("a2", "a0", "food", "edit->original"), ("a2", "a1", "food", "edit->edit")]
    [p] = [p for p in pairs if (records[p.base]["id"], records[p.counterfactual]["id"]) == ("a1", "a2")]
    assert (p.base_value, p.counterfactual_value) == ("Negative", "unknown")


def test_the_pairs_of_cebab_test_are_the_3958_of_its_benchmark(shared_data):
    records = json.loads((shared_data / "cebab" / "test.json").read_text(encoding="utf-8"))
    pairs = intervention_pairs(records)
    assert len(pairs) == 3958
    assert {p.kind for p in pairs} == {"edit->original", "original->edit", "edit->edit"}


def test_errors_are_l2_cosine_distance_and_norm_difference_with_their_zero_rule():
    icace = np.array([[0.3, -0.4], [0.0, 0.0], [1.0, 0.0]])
    estimate = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 2.0]])
    e = errors(icace, estimate)
    assert e[0] == pytest.approx([0.5, 1.0, 0.5])  # a zero estimate: cosine distance 1, as theirs
    assert e[1] == pytest.approx([0.1, 1.0, 0.1])
    assert e[2] == pytest.approx([np.sqrt(5), 1.0, 1.0])  # orthogonal: cosine distance 1


def test_aspects_one_hot_in_their_order_with_missing_labels_as_zeros():
    x = onehot_aspects([{"food": "Negative", "service": "Positive", "ambiance": "", "noise": "no majority"}])
    assert x.tolist() == [[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]]


def test_the_tables_hold_a_standard_model_beside_concept_models():
    """A Standard model has the baselines alone: its what-if cells read '-', its per-concept rows list what it has."""
    from benchmarks.cebab_explain import markdown

    def errors(x):
        return {"L2": x, "cosine": x, "NormDiff": x}

    def explainer(x):
        return {"all": errors(x), **{f"concept {c}": errors(x) for c in ("food", "ambiance", "service", "noise")}}

    concept = {"model": "runs/cbm-s0", "kind": "cbm", "pairs": 3, "mean_icace_norm": 0.5,
               "explainers": {"what-if": explainer(0.1), "approx": explainer(0.2), "s-learner": explainer(0.3)}}
    standard = {"model": "runs/standard-s0", "kind": "standard", "pairs": 3, "mean_icace_norm": 0.5,
                "explainers": {"approx": explainer(0.4), "s-learner": explainer(0.5)}}
    text = markdown({"a": concept, "b": standard})
    assert "| runs/standard-s0 (standard, T 1.00) | 3 | 0.500 | - | 0.400 / 0.400 / 0.400 | 0.500 / 0.500 / 0.500 |" in text
    assert "| runs/standard-s0 | approx | 0.400" in text and "| runs/standard-s0 | what-if" not in text
    assert "| runs/cbm-s0 | concepts won | 4 of 4" in text
