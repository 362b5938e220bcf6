"""A "what if" for a text that said another value: the other concepts' features move as they do
on the training texts (sparsecbm.counterfactuals, LabelHead.counterfactual_features)."""

import numpy as np
import pytest
import torch

import sparsecbm
from sparsecbm import heads
from sparsecbm.counterfactuals import MIN_TEXTS, ValueShifts
from sparsecbm.data import Split
from sparsecbm.interventions import oracle_labels, what_if
from sparsecbm.training import fit_value_prototypes

from .test_heads import TEXTS, tiny

SIZES = (3, 3)


def _training(n: int = 300, seed: int = 0):
    """Features of two concepts where concept 1's features carry concept 0's value (leakage)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, size=(n, 2))
    f0 = torch.randn(n, 4)
    f1 = torch.randn(n, 5) + torch.from_numpy(truth[:, :1] * 2.0).float()  # +2 per value index of concept 0
    return (f0, f1), truth


def test_fitted_means_are_the_cell_means_and_a_shift_moves_only_the_other_concepts():
    features, truth = _training()
    shifts = ValueShifts.fit(features, truth, SIZES)
    rows = (truth[:, 1] == 2) & (truth[:, 0] == 1)
    torch.testing.assert_close(shifts.means[1][2, 1], features[1][torch.from_numpy(rows)].mean(0))
    assert shifts.counts[1][2, 1] == rows.sum()
    # one text: concept 0 predicted 0 (N), set to 2; concept 1 predicted 1
    predicted, values = torch.tensor([[0, 1]]), torch.tensor([[2, 1]])
    chosen = torch.tensor([[True, False]])
    one = (features[0][:1], features[1][:1])
    moved = shifts.shifted(one, predicted, values, chosen)
    torch.testing.assert_close(moved[0], one[0])  # the chosen concept is left to the intervention
    expected = one[1] + shifts.means[1][1, 2] - shifts.means[1][1, 0]
    torch.testing.assert_close(moved[1], expected)
    assert float((moved[1] - one[1]).mean()) == pytest.approx(4.0, abs=1.0)  # the leakage planted: 2 per value step
    torch.testing.assert_close(shifts.shifted(one, predicted, values, chosen, scale=0.5)[1], one[1] + (expected - one[1]) / 2)
    # a value kept, or nothing chosen: no move
    for v, c in ((torch.tensor([[0, 1]]), chosen), (values, torch.tensor([[False, False]]))):
        torch.testing.assert_close(shifts.shifted(one, predicted, v, c)[1], one[1])


def test_a_cell_with_too_few_training_texts_moves_nothing():
    features, truth = _training()
    truth[:, 0] = np.where(truth[:, 0] == 2, 1, truth[:, 0])  # no training text has concept 0 = 2
    truth[: MIN_TEXTS - 1, 0] = 2  # but for a few (all with their own concept 1 value)
    shifts = ValueShifts.fit(features, truth, SIZES)
    u = int(truth[0, 1])
    assert shifts.counts[1][u, 2] < MIN_TEXTS
    moved = shifts.shifted((features[0][:1], features[1][:1]), torch.tensor([[0, u]]), torch.tensor([[2, u]]),
                           torch.tensor([[True, False]]))
    torch.testing.assert_close(moved[1], features[1][:1])


def test_what_if_reads_the_shifted_features_and_the_oracle_does_not(tiny_bert, tmp_path):
    clf = tiny(tiny_bert, "cbm", "embedding", 0)
    out = clf.forward_texts(TEXTS)
    truth = np.array([[0, 1, 2], [1, 1, 0], [0, 2, 2]])
    fit_value_prototypes(clf, Split(tuple(TEXTS), np.array([0, 1, 2]), truth))  # fitted with the prototypes
    head = clf.model.head
    assert head.value_shifts is not None and head.value_shifts.counts[1].sum() == 3 * len(clf.schema.concepts)
    # three texts fill no cell: shifts from 300 made-up training rows instead, so that every cell counts
    rng = np.random.default_rng(0)
    head.value_shifts = ValueShifts.fit([torch.randn(300, w) for w in head.feature_sizes],
                                        rng.integers(0, 3, size=(300, 3)), head.sizes)
    food = head.concept_slice(0)
    other = (int(out.activations[0, food].argmax()) + 1) % 3
    value = clf.schema.concept_values[0][other]
    said = what_if(clf, out.activations[:1], tuple(f[:1] for f in out.features))[0]["food"][value]
    setting = oracle_labels(clf, out.activations[:1], [{"food": value}], tuple(f[:1] for f in out.features))[0]
    cf = oracle_labels(clf, out.activations[:1], [{"food": value}], tuple(f[:1] for f in out.features), counterfactual=True)[0]
    assert said.probabilities == pytest.approx(cf["probabilities"])
    assert cf["probabilities"] != pytest.approx(setting["probabilities"], abs=1e-6)  # the other concepts moved
    # by hand: the other concepts' features moved by the fitted shifts, then the head
    values = torch.zeros(1, 3, dtype=torch.long)
    values[0, 0] = other
    chosen = torch.tensor([[True, False, False]])
    features = head.true_features(tuple(f[:1] for f in out.features), values, out.activations[:1], chosen)
    predicted = torch.stack([out.activations[:1, head.concept_slice(k)].argmax(-1) for k in range(3)], 1)
    features = head.value_shifts.shifted(features, predicted, values, chosen, heads.WHAT_IF_SHIFT)
    a = out.activations[:1].clone()
    a[0, food] = torch.nn.functional.one_hot(torch.tensor(other), 3).float()
    logits = clf.read_label(a, features)[0]
    expected = clf.label_probabilities(logits / heads.WHAT_IF_SPREAD)  # read less sure than the text itself
    assert heads.WHAT_IF_SPREAD > 1 and expected.max() < clf.label_probabilities(logits).max()
    assert cf["probabilities"] == pytest.approx(dict(zip(clf.schema.labels, expected.tolist())), abs=1e-5)
    assert cf["label"] == clf.schema.labels[int(logits.argmax())]
    fitted, head.value_shifts = head.value_shifts, None  # a folder from before value shifts: an intervention
    plain = what_if(clf, out.activations[:1], tuple(f[:1] for f in out.features))[0]["food"][value]
    intervened = head.true_features(tuple(f[:1] for f in out.features), values, out.activations[:1], chosen)
    spread = clf.label_probabilities(clf.read_label(a, intervened)[0] / heads.WHAT_IF_SPREAD)
    assert plain.probabilities == pytest.approx(dict(zip(clf.schema.labels, spread.tolist())), abs=1e-5)
    assert plain.label == setting["label"]
    head.value_shifts = fitted
    # saved with the prototypes and loaded back
    clf.save(tmp_path / "m")
    loaded = sparsecbm.load(tmp_path / "m").model.head.value_shifts
    for j in range(3):
        torch.testing.assert_close(loaded.means[j], head.value_shifts.means[j])
        torch.testing.assert_close(loaded.counts[j], head.value_shifts.counts[j])


def test_shifts_of_another_shape_are_refused_by_name(tiny_bert, tmp_path):
    from safetensors.torch import load_file, save_file

    clf = tiny(tiny_bert, "cbm", "embedding", 0)
    fit_value_prototypes(clf, Split(tuple(TEXTS), np.array([0, 1, 2]), np.array([[0, 1, 2], [1, 1, 0], [0, 2, 2]])))
    clf.save(tmp_path / "m")
    path = tmp_path / "m" / heads.PROTOTYPES
    tensors = load_file(str(path))
    tensors["shift_counts.1"] = torch.zeros(2, 2)
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match="prototypes.safetensors: damaged or not a prototypes file .*do not fit"):
        sparsecbm.load(tmp_path / "m")
    tensors["shift_counts.1"] = torch.zeros(3, 9)
    tensors["shift_means.1"] = torch.zeros(3, 9, 5)  # features of width 5, where concept 1 has 12
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match=r"value shifts of feature widths \(12, 5, 12\) do not fit"):
        sparsecbm.load(tmp_path / "m")
