"""Label heads (heads.py): soft, hard and embedding bottlenecks, with and without a side
channel. The decision is always concept terms + side channel + bias, every reader of the
head (forward, per-concept outputs, interventions, explanations) agrees on it, and a
concept's correction moves only that concept's parts."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

import sparsecbm
from sparsecbm import Classifier, backbones
from sparsecbm.data import Schema, Split
from sparsecbm.model import ConceptBottleneckModel, ModelConfig
from sparsecbm.training import TrainConfig

from .conftest import TINY_SCHEMA, copy_masks, random_masks, same_masks

TEXTS = ["the food was awful and the service lovely", "great prices , slow waiters", "noisy room , fine soup"]
HEADS = list(itertools.product(("soft", "hard", "embedding"), (0, 3)))


def tiny(tiny_bert, kind: str, bottleneck: str, residual: int) -> Classifier:
    torch.manual_seed(0)
    backbone, tokenizer = backbones.load_backbone(str(tiny_bert))
    config = ModelConfig(kind=kind, schema=Schema(**TINY_SCHEMA), bottleneck=bottleneck, residual=residual,
                         embedding_dim=4)
    model = ConceptBottleneckModel(backbone, config).eval()
    with torch.no_grad():  # a head that is not near zero, so every part matters
        for p in model.head_parameters():
            p.normal_(0, 1.0)
    if kind == "sparsecbm":
        model.masks = random_masks(model, seed=0)
    return Classifier(model, tokenizer, max_length=32)


@pytest.mark.parametrize("kind", ["cbm", "sparsecbm"])
@pytest.mark.parametrize("bottleneck,residual", HEADS)
def test_the_decision_is_concept_terms_plus_side_channel_plus_bias(tiny_bert, kind, bottleneck, residual):
    clf = tiny(tiny_bert, kind, bottleneck, residual)
    model = clf.model
    out = clf.forward_texts(TEXTS)
    assert len(out.features) == (3 if model.head.has_features else 0)
    with torch.no_grad():
        terms = model.head.concept_terms(out.activations, out.features).sum(1)
        side = model.head.side_term(out.features)
    assert (side is None) == (residual == 0)
    expected = terms + model.head.linear.bias + (0 if side is None else side)
    torch.testing.assert_close(out.task_logits, expected.detach(), rtol=1e-5, atol=1e-5)
    # the per-concept outputs the interventions cache read the same label
    from sparsecbm.interventions.gradients import concept_k_outputs, tokenize

    batches = tokenize(clf, TEXTS)
    outputs = [concept_k_outputs(clf, batches, k) for k in range(3)]
    torch.testing.assert_close(clf.task_logits(outputs), out.task_logits, rtol=1e-5, atol=1e-5)
    # the explanation's logit is the model's logit of its label, taken apart
    for i, text in enumerate(TEXTS):
        e = clf.explain(text, method=None, subnetwork_level=False)
        y = clf.schema.labels.index(e.label)
        assert e.logit == pytest.approx(float(out.task_logits[i, y]), abs=1e-4)
        for c in e.concepts:
            assert sum(c.contributions.values()) == pytest.approx(c.contribution, abs=1e-5)
        assert (e.side is None) == (residual == 0)
        with torch.no_grad():
            values = model.head.values_only(out.activations[i:i + 1], tuple(f[i:i + 1] for f in out.features))
        assert e.values_label == clf.schema.labels[int(values.argmax())]
        assert 0 <= e.concept_share <= 1
        assert e.to_dict()["logit"] == pytest.approx(e.logit)


def test_an_embedding_intervention_swaps_in_the_true_values_embedding(tiny_bert):
    clf = tiny(tiny_bert, "cbm", "embedding", 0)
    model = clf.model
    out = clf.forward_texts(TEXTS)
    concepts = torch.tensor([[0, 1, 2]] * len(TEXTS))
    chosen = torch.tensor([[True, False, False]] * len(TEXTS))
    with torch.no_grad():
        new = model.intervened(out, chosen, concepts)
        terms_new = model.head.concept_terms(new.activations, out.features)
        terms_old = model.head.concept_terms(out.activations, out.features)
    f0 = out.features[0][:, :3 * 4].reshape(len(TEXTS), 3, 4)
    true_input = torch.nn.functional.leaky_relu(f0[:, 0])  # value 0's embedding, alone
    weight = model.head.linear.weight[:, model.head.linear_columns(0)]
    torch.testing.assert_close(terms_new[:, 0], (true_input @ weight.T).detach())
    torch.testing.assert_close(terms_new[:, 1:], terms_old[:, 1:])  # concepts not chosen keep their terms


@pytest.mark.parametrize("kind", ["cbm", "sparsecbm"])
def test_an_intervention_moves_the_true_values_embedding_toward_its_prototype(tiny_bert, tmp_path, kind):
    from sparsecbm.heads import PROTOTYPE_MIX, PROTOTYPES
    from sparsecbm.interventions import oracle
    from sparsecbm.training import fit_value_prototypes

    clf = tiny(tiny_bert, kind, "embedding", 0)
    model = clf.model
    out = clf.forward_texts(TEXTS)
    food = model.head.concept_slice(0)
    other = (int(out.activations[0, food].argmax()) + 1) % 3  # a food value the model did not predict for text 0
    plain = oracle(clf, TEXTS[0], {"food": clf.schema.concept_values[0][other]})  # no prototypes: the text's own
    truth = np.array([[0, 1, 2], [1, 1, 0], [0, 2, 2]])
    prototypes = fit_value_prototypes(clf, Split(tuple(TEXTS), np.array([0, 1, 2]), truth))
    e = [f[:, :3 * 4].reshape(3, 3, 4) for f in out.features]
    # food's value N: the mean of its embedding over the two texts whose food is N
    torch.testing.assert_close(prototypes[0], e[0][[0, 2], 0].mean(0))
    torch.testing.assert_close(prototypes[4], e[1][[0, 1], 1].mean(0))  # service P: texts 0 and 1
    values = torch.tensor([[1, 0, 0]] * 3)
    chosen = torch.tensor([[True, False, False]] * 3)
    a = out.activations.clone()
    a[:, food] = torch.tensor([[0.1, 0.2, 0.9], [0.1, 0.9, 0.2], [0.9, 0.1, 0.2]])
    moved = model.head.true_features(out.features, values, a, chosen)
    m0 = moved[0][:, :12].reshape(3, 3, 4)
    for i in (0, 2):  # predicted u and N, set to P: P's embedding moves toward its prototype
        torch.testing.assert_close(m0[i, 1], e[0][i, 1] + PROTOTYPE_MIX * (prototypes[1] - e[0][i, 1]))
    torch.testing.assert_close(m0[1], e[0][1])  # P confirmed: nothing moves
    torch.testing.assert_close(m0[:, [0, 2]], e[0][:, [0, 2]])  # only the true value's embedding moves
    torch.testing.assert_close(moved[1], out.features[1])  # concepts not chosen keep theirs
    # the oracle reads it: its label probabilities are those of the moved features
    values[0, 0] = other
    moved = model.head.true_features(out.features, values, out.activations, chosen)
    a = out.activations[:1].clone()
    a[0, food] = torch.nn.functional.one_hot(torch.tensor(other), 3).float()
    expected = clf.read_label(a, tuple(f[:1] for f in moved)).softmax(-1)[0]
    now = oracle(clf, TEXTS[0], {"food": clf.schema.concept_values[0][other]})
    assert now["probabilities"] == pytest.approx(dict(zip(clf.schema.labels, expected.tolist())), abs=1e-5)
    assert now["probabilities"] != pytest.approx(plain["probabilities"], abs=1e-5)
    # saved beside the weights and loaded back; a file that does not fit is refused by name
    clf.save(tmp_path / "m")
    torch.testing.assert_close(sparsecbm.load(tmp_path / "m").model.head.value_prototypes, prototypes)
    from safetensors.torch import save_file
    save_file({"value_prototypes": torch.zeros(2, 4)}, str(tmp_path / "m" / PROTOTYPES))
    with pytest.raises(ValueError, match=r"prototypes.safetensors: prototypes of shape \(2, 4\) do not fit"):
        sparsecbm.load(tmp_path / "m")


def test_a_hard_head_reads_values_and_passes_gradients_straight_through(tiny_bert):
    clf = tiny(tiny_bert, "cbm", "hard", 0)
    model = clf.model
    out = clf.forward_texts(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(out.task_logits, model.head.read_label(model.head.hard_values(out.activations)))
    model.train()
    batch = clf.tokenizer(TEXTS, return_tensors="pt", padding=True)
    loss = model(batch["input_ids"], batch["attention_mask"]).task_logits.sum()
    loss.backward()
    assert model.projector.weight.grad is not None and model.projector.weight.grad.abs().sum() > 0


def test_values_alone_and_the_side_channel_are_said_in_the_pathway(tiny_bert):
    clf = tiny(tiny_bert, "cbm", "soft", 3)
    model = clf.model
    with torch.no_grad():  # a side channel that outweighs everything, voting for another label than the concepts
        model.head.linear.weight.zero_()
        model.head.linear.weight[0] = 1.0
        model.head.linear.bias.zero_()
        model.head.side_out.weight.zero_()
        model.head.side.weight.zero_()
        model.head.side.bias.fill_(1.0)
        model.head.side_out.weight[2] = 100.0
    e = clf.explain(TEXTS[0], method=None, subnetwork_level=False)
    assert e.label == "c" and e.values_label == "a"
    text = e.describe()
    assert "not explained by the concepts (side channel): +300.00" in text
    assert "the concept values alone would give label 'a'" in text
    assert e.concept_share < 0.05


@pytest.mark.parametrize("bottleneck,residual", [("embedding", 3), ("soft", 3), ("hard", 0)])
def test_a_correction_rewires_one_concept_under_any_head(tiny_bert, bottleneck, residual):
    clf = tiny(tiny_bert, "sparsecbm", bottleneck, residual)
    before = copy_masks(clf)
    kept = {c: sum(int(m.sum()) for m in per.values()) for c, per in before.items()}
    out = clf.forward_texts(TEXTS[:1])
    wrong = next(v for v in ("N", "P", "u") if v != clf.schema.concept_values[0][int(out.concept_logits[0].argmax())])
    r = clf.correct(TEXTS[:1], "food", wrong, persist=True, max_ratio=0.2, keep_unfixed=True)
    assert r.n > 0
    after = copy_masks(clf)
    assert same_masks({c: after[c] for c in ("service", "noise")}, {c: before[c] for c in ("service", "noise")})
    assert {c: sum(int(m.sum()) for m in per.values()) for c, per in after.items()} == kept  # sparsity unchanged
    now = clf.forward_texts(TEXTS[:1])
    for k in (1, 2):  # the other concepts' logits and features did not move
        torch.testing.assert_close(now.concept_logits[k], out.concept_logits[k])
        if out.features:
            torch.testing.assert_close(now.features[k], out.features[k])
    assert r.after[0]["label"] == clf.schema.labels[int(now.task_logits.argmax())]


def test_heads_are_saved_and_old_configs_load_as_soft(tiny_bert, tmp_path):
    clf = tiny(tiny_bert, "sparsecbm", "embedding", 3)
    clf.save(tmp_path / "m")
    again = sparsecbm.load(tmp_path / "m")
    assert (again.config.bottleneck, again.config.residual, again.config.embedding_dim) == ("embedding", 3, 4)
    torch.testing.assert_close(again.forward_texts(TEXTS).task_logits, clf.forward_texts(TEXTS).task_logits)
    d = clf.config.to_dict()
    for key in ("bottleneck", "residual", "embedding_dim"):
        d.pop(key)
    assert ModelConfig.from_dict(d).bottleneck == "soft"


@pytest.mark.parametrize("kwargs,message", [
    (dict(model="standard", residual=4), "apply to concept models"),
    (dict(bottleneck="fuzzy"), "bottleneck must be one of"),
    (dict(residual=-1), "residual must be >= 0"),
    (dict(side_dropout=0.5), "needs residual"),
    (dict(residual=2, side_dropout=1.0), "side_dropout must be in"),
    (dict(cbm_mode="sequential", bottleneck="embedding"), "cbm_mode joint"),
])
def test_bad_head_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_the_pipeline_trains_mines_and_explains_with_a_new_head(tmp_path, reviews, tiny_bert, capsys):
    from sparsecbm.cli import main

    from .conftest import train_tiny_sparsecbm

    data, out = train_tiny_sparsecbm(tmp_path / "m", reviews, tiny_bert,
                                     extra=["--bottleneck", "embedding", "--residual", "2", "--embedding-dim", "3",
                                            "--intervention-prob", "0.5", "--side-dropout", "0.5"])
    clf = sparsecbm.load(out)
    assert (clf.config.kind, clf.config.bottleneck, clf.config.residual) == ("sparsecbm", "embedding", 2)
    assert clf.model.head.embedder.out_features == 9 * 3 and clf.model.head.side.out_features == 2
    capsys.readouterr()
    assert main(["-q", "explain", str(out), "the food was awful", "--method", "grad"]) == 0
    text = capsys.readouterr().out
    assert "not explained by the concepts (side channel)" in text and "the concept values carry" in text
    assert main(["-q", "evaluate", str(out), "--split", "test"]) == 0
    assert "labels fixed" in capsys.readouterr().out
    # --mode curve on a SparseCBM adds the rewiring curve: from no concept rewired to every wrong one
    j = tmp_path / "curve.json"
    assert main(["-q", "intervene", str(out), "--mode", "curve", "--max-examples", "6", "--max-ratio", "0.2",
                 "--json", str(j)]) == 0
    printed = capsys.readouterr().out
    assert "rewired: one wrong concept corrected alone" in printed and "set true: one wrong concept" in printed
    result = json.loads(j.read_text())
    rewired = result["curves"]["rewired/taylor auto"]
    assert len(rewired) == 4 and rewired[0] == pytest.approx(result["task_accuracy"])
