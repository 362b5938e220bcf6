"""Intervention curves and how much the concepts decide, checked against independent
computations: the oracle's own one-concept intervention, the explanation's exact
logit decomposition, and the classifier fed one-hot activations."""

import itertools
import json

import numpy as np
import pytest
import torch

from sparsecbm import heads
from sparsecbm.cli import main
from sparsecbm.data import Split
from sparsecbm.interventions import oracle, oracle_labels
from sparsecbm.interventions.curves import concept_share, curve, hard_concepts_accuracy, intervention_curves, true_activations

from .conftest import TINY_SCHEMA

TEXTS = ["the food was awful and the service lovely", "the food was lovely , prices some", "service awful , food some",
         "lovely lovely food", "awful prices and noise", "some service , some food", "the noise was lovely"]


@pytest.fixture
def split():
    rng = np.random.default_rng(0)
    n, k = len(TEXTS), len(TINY_SCHEMA["concepts"])
    return Split(tuple(TEXTS), rng.integers(0, 3, n), rng.integers(0, 3, (n, k)), "synthetic")


def test_curve_points_match_the_oracle_and_the_plain_prediction(sparse_clf, split):
    schema = sparse_clf.schema
    result = intervention_curves(sparse_clf, split, split)
    out = sparse_clf.forward_texts(split.texts)
    labels = np.asarray(split.labels)
    plain = float(np.mean(out.task_logits.argmax(-1).numpy() == labels))
    true_names = [{c: schema.concept_values[k][split.concepts[i, k]] for k, c in enumerate(schema.concepts)}
                  for i in range(len(split))]
    for name, points in result.curves.items():
        assert len(points) == len(schema.concepts) + 1 and points[0] == pytest.approx(plain), name
    # j = 1, random order: the mean over concepts of the oracle setting that one concept true.
    one = [np.mean([schema.labels.index(r["label"]) == y for r, y in zip(
        oracle_labels(sparse_clf, out.activations, [{c: t[c]} for t in true_names]), labels)])
        for c in schema.concepts]
    assert result.curves["random/onehot"][1] == pytest.approx(float(np.mean(one)))
    # j = K: every concept true, whatever the order.
    every = oracle_labels(sparse_clf, out.activations, true_names)
    full = float(np.mean([schema.labels.index(r["label"]) == y for r, y in zip(every, labels)]))
    assert result.curves["random/onehot"][-1] == result.curves["uncertainty/onehot"][-1] == pytest.approx(full)
    assert result.task_accuracy == pytest.approx(plain)


def test_uncertainty_order_sets_the_least_certain_concept_first(sparse_clf, split):
    out = sparse_clf.forward_texts(split.texts)
    certainty = torch.stack([logits.softmax(-1).max(-1).values for logits in out.concept_logits], dim=1)
    true = true_activations(sparse_clf, split)
    first = certainty.argmin(1)
    expected = []
    for i in range(len(split)):
        a = out.activations[i:i + 1].clone()
        cols = sparse_clf.model.head.concept_slice(int(first[i]))
        a[:, cols] = true[i:i + 1, cols]
        expected.append(int(sparse_clf.model.head.linear(a).argmax(-1)) == split.labels[i])
    points = curve(sparse_clf, split, out, true, certainty, "uncertainty")
    assert points[1] == pytest.approx(float(np.mean(expected)))
    with pytest.raises(ValueError, match="order must be one of"):
        curve(sparse_clf, split, out, true, certainty, "alphabetical")


def test_percentile_values_and_the_concepts_share(sparse_clf, split):
    train = sparse_clf.forward_texts(split.texts).activations
    high_low = true_activations(sparse_clf, split, "percentile", train, split)
    assert ((high_low >= 0) & (high_low <= 1)).all()
    with pytest.raises(ValueError, match="needs the training texts"):
        true_activations(sparse_clf, split, "percentile")
    out = sparse_clf.forward_texts(split.texts)
    share = concept_share(sparse_clf, out)
    by_explanation = []
    for text in split.texts:  # the explanation's exact decomposition: logit = sum of contributions + bias
        e = sparse_clf.explain(text, method=None)
        values = [c.contributions[c.value] / c.activations[c.value] for c in e.concepts]  # phi of the value
        nuance = [c.contribution - v for c, v in zip(e.concepts, values)]
        part = sum(abs(v) for v in values)
        by_explanation.append(part / (part + sum(abs(x) for x in nuance) + abs(e.bias)))
    assert share == pytest.approx(float(np.mean(by_explanation)), rel=1e-5)
    hard = torch.cat([torch.nn.functional.one_hot(logits.argmax(-1), 3).float() for logits in out.concept_logits], dim=1)
    expected = float(np.mean(sparse_clf.model.head.linear(hard).argmax(-1).numpy() == split.labels))
    assert hard_concepts_accuracy(sparse_clf, split, out) == pytest.approx(expected)


def test_cli_curve_and_evaluate_report_leakage(tmp_path, capsys, reviews, tiny_bert):
    from .conftest import CONCEPTS

    data = ["--data", str(reviews["train"]), "--dev", str(reviews["dev"]), "--test", str(reviews["test"]),
            "--text-column", "text", "--label-column", "stars", "--concept-columns", ",".join(CONCEPTS)]
    out = tmp_path / "cbm"
    assert main(["-q", "train", *data, "--model", "cbm", "--backbone", str(tiny_bert), "--out", str(out),
                 "--epochs", "1", "--max-length", "32"]) == 0
    capsys.readouterr()
    j, png = tmp_path / "c.json", tmp_path / "c.png"
    assert main(["-q", "intervene", str(out), "--mode", "curve", "--json", str(j), "--png", str(png)]) == 0
    result = json.loads(j.read_text())
    assert set(result["curves"]) == {f"{o}/{v}" for o, v in itertools.product(("random", "uncertainty"),
                                                                               ("onehot", "percentile"))}
    assert result["j"] == [0, 1, 2, 3] and result["n"] == 16 and png.stat().st_size > 10_000
    assert "random/onehot" in capsys.readouterr().out
    assert main(["-q", "intervene", str(out), "--mode", "curve", "--guard", "train:5"]) == 2
    assert "--mode curve changes no mask" in capsys.readouterr().err
    assert main(["-q", "evaluate", str(out), "--json", str(j)]) == 0
    scores = json.loads(j.read_text())
    assert 0 <= scores["hard_concepts_task_accuracy"] <= 1 and 0 < scores["concept_share"] <= 1
    assert "leakage gap" in capsys.readouterr().out and "leakage_gap" in scores


def test_what_if_is_the_oracle_for_each_other_value_in_predictions_and_explanations(sparse_clf, split):
    """Each concept's other values: the label the oracle gives with that one concept set (its probabilities read
    ``WHAT_IF_SPREAD`` times less sure; this tiny model's value shifts trust no cell), everywhere it is shown."""
    texts = list(split.texts[:3])
    predictions = sparse_clf.predict(texts)
    for text, p in zip(texts, predictions):
        assert set(p.what_if) == set(sparse_clf.schema.concepts)
        for concept, values in zip(sparse_clf.schema.concepts, sparse_clf.schema.concept_values):
            assert set(p.what_if[concept]) == set(values) - {p.concepts[concept].value}
            for value, w in p.what_if[concept].items():
                expected = oracle(sparse_clf, text, {concept: value})
                assert w.label == expected["label"]
                spread = {y: q ** (1 / heads.WHAT_IF_SPREAD) for y, q in expected["probabilities"].items()}
                assert w.probabilities == pytest.approx({y: q / sum(spread.values()) for y, q in spread.items()}, abs=1e-5)
        e = sparse_clf.explain(text, method=None, subnetwork_level=False)
        for concept, alternatives in e.what_if.items():
            for value, w in alternatives.items():
                assert w.label == p.what_if[concept][value].label
                assert w.probability == pytest.approx(p.what_if[concept][value].probability, abs=1e-5)
        assert "had the text said another value" in e.describe()
        assert e.to_dict()["what_if"].keys() == p.to_dict()["what_if"].keys()
