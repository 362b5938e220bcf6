"""Interventions change one concept's mask and nothing else, by exactly 2n bits, and can be undone."""

import json

import numpy as np
import pytest
import torch

from sparsecbm import load
from sparsecbm.cli import main
from sparsecbm.data import Split
from sparsecbm.interventions.protocols import per_example, persistent, stream_groups
from sparsecbm.interventions.ranking import pick
from sparsecbm.masks import kept, total

from .conftest import train_tiny_sparsecbm

TEXT = "the food was awful and the service lovely"


def _snapshot(clf):
    weights = {k: v.clone() for k, v in clf.model.weights_only().state_dict().items()}  # theta, psi, phi
    masks = {c: {n: m.clone() for n, m in per.items()} for c, per in clf.model.masks.items()}
    return weights, masks


def _same_masks(a, b, concepts=None):
    return all(torch.equal(a[c][n], b[c][n]) for c in (concepts or a) for n in a[c])


def _flipped(a, b, concept):
    return sum(int((a[concept][n] != b[concept][n]).sum()) for n in a[concept])


def _wrong_value(clf, concept):
    """A value the model does not predict for TEXT (so the intervention has work to do)."""
    predicted = clf.predict([TEXT])[0].concepts[concept].value
    return next(v for v in ("N", "P", "u") if v != predicted)


def test_only_mask_k_changes_by_exactly_2n_bits(sparse_clf):
    weights, masks = _snapshot(sparse_clf)
    value = _wrong_value(sparse_clf, "service")
    r = sparse_clf.intervene(TEXT, "service", value, ratio=0.03, selection="paper", steps=1, persist=True,
                             keep_unfixed=True)
    n = round(0.03 * total(masks["service"]))
    assert r.steps == 1 and r.n == n and r.persisted
    assert all(torch.equal(v, sparse_clf.model.weights_only().state_dict()[k]) for k, v in weights.items())  # theta, psi, phi
    now = sparse_clf.model.masks
    assert _same_masks(masks, now, ["food", "noise"])
    assert _flipped(masks, now, "service") == 2 * n
    assert kept(now["service"]) == kept(masks["service"])  # sparsity unchanged
    assert sum(v["dropped"] for v in r.per_layer.values()) == sum(v["grown"] for v in r.per_layer.values()) == n
    assert r.before["value"] != value


def test_one_step_raises_the_target_log_probability(sparse_clf):
    """A small signed drop/grow step moves every concept toward its corrected value
    (swapping drop and grow anywhere in the code would lower it)."""
    from sparsecbm.interventions.gradients import concept_k_outputs, tokenize

    batches = tokenize(sparse_clf, [TEXT])
    raised = 0
    for k, concept in enumerate(sparse_clf.schema.concepts):
        value = _wrong_value(sparse_clf, concept)
        target = sparse_clf.schema.concept_values[k].index(value)
        before = concept_k_outputs(sparse_clf, batches, k).logits.log_softmax(-1)[0, target]
        sparse_clf.intervene(TEXT, concept, value, ratio=0.002, selection="taylor", steps=1, persist=True,
                             keep_unfixed=True)
        after = concept_k_outputs(sparse_clf, batches, k).logits.log_softmax(-1)[0, target]
        raised += int(after > before)
        sparse_clf.undo()
    assert raised == 3


def test_transient_intervention_restores_the_mask(sparse_clf):
    _, masks = _snapshot(sparse_clf)
    r = sparse_clf.intervene(TEXT, "food", _wrong_value(sparse_clf, "food"), ratio=0.05, steps=3)
    assert r.steps >= 1 and not r.persisted
    assert _same_masks(masks, sparse_clf.model.masks) and sparse_clf.interventions == []


def test_ratio_zero_changes_nothing(sparse_clf):
    _, masks = _snapshot(sparse_clf)
    r = sparse_clf.intervene(TEXT, "food", _wrong_value(sparse_clf, "food"), ratio=0.0, persist=True)
    assert r.n == 0 and r.per_layer == {} and not r.fixed and not r.persisted
    assert _same_masks(masks, sparse_clf.model.masks)


def test_undo_restores_the_masks_bit_for_bit(sparse_clf):
    _, masks = _snapshot(sparse_clf)
    for concept in ("food", "food", "noise"):
        sparse_clf.intervene(TEXT, concept, _wrong_value(sparse_clf, concept), ratio=0.04, steps=3, persist=True,
                             keep_unfixed=True)
    assert len(sparse_clf.interventions) == 3
    for _ in range(3):
        sparse_clf.undo()
    assert _same_masks(masks, sparse_clf.model.masks)
    with pytest.raises(ValueError, match="no intervention to undo"):
        sparse_clf.undo()


@pytest.mark.parametrize("kwargs, message", [
    (dict(concept="price", value="P"), "unknown concept 'price'"),
    (dict(concept="food", value="Great"), "unknown value 'Great' for concept 'food'"),
    (dict(concept="food", value="P", ratio=0.7), "ratio must be 'auto' or a fraction"),
    (dict(concept="food", value="P", ratio="most"), "ratio must be 'auto' or a fraction"),
    (dict(concept="food", value="P", label="z"), "unknown label 'z'"),
    (dict(concept="food", value="P", selection="greedy"), "selection must be one of"),
    (dict(concept="food", value="P", max_ratio=0.0), "max_ratio must be"),
])
def test_bad_intervention_is_refused_and_changes_nothing(sparse_clf, kwargs, message):
    weights, masks = _snapshot(sparse_clf)
    with pytest.raises(ValueError, match=message):
        sparse_clf.intervene(TEXT, persist=True, **kwargs)
    assert _same_masks(masks, sparse_clf.model.masks) and sparse_clf.interventions == []


def test_persisted_log_reloads_with_the_model(sparse_clf, tmp_path):
    _, original = _snapshot(sparse_clf)
    sparse_clf.intervene(TEXT, "noise", _wrong_value(sparse_clf, "noise"), ratio=0.02, steps=2, persist=True, label="b",
                         keep_unfixed=True)
    sparse_clf.save(tmp_path / "m")
    loaded = load(tmp_path / "m")
    assert [e.to_json() for e in loaded.interventions] == [e.to_json() for e in sparse_clf.interventions]
    assert _same_masks(sparse_clf.model.masks, loaded.model.masks)
    loaded.undo()
    loaded.save()  # back to the folder it came from
    assert _same_masks(original, load(tmp_path / "m").model.masks) and load(tmp_path / "m").interventions == []


@pytest.mark.parametrize("largest", [False, True])
def test_pick_is_exact_with_ties_and_only_allowed_positions(largest):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 50, 200_000).astype(np.float32)  # many ties
    allowed = rng.random(200_000) < 0.3
    for n in (0, 1, 777, 30_000, int(allowed.sum())):
        idx = pick(values, allowed, n, largest=largest)
        assert idx.size == n and np.unique(idx).size == n and bool(allowed[idx].all())
        if n:
            chosen = np.zeros_like(allowed)
            chosen[idx] = True
            rest = values[allowed & ~chosen]
            if rest.size:
                assert (values[chosen].min() >= rest.max()) if largest else (values[chosen].max() <= rest.min())
    with pytest.raises(ValueError, match="cannot choose"):
        pick(values, allowed, int(allowed.sum()) + 1, largest=largest)


def test_per_example_protocol_restores_masks_and_counts_its_fixes(sparse_clf):
    g = torch.Generator().manual_seed(1)
    texts = tuple(f"{TEXT} {w}" for w in ("today", "again", "twice", "sadly", "once", "later"))
    split = Split(texts, torch.randint(3, (6,), generator=g).numpy(), torch.randint(3, (6, 3), generator=g).numpy())
    _, masks = _snapshot(sparse_clf)
    result = per_example(sparse_clf, split, [0.05, "auto"], max_ratio=0.2, steps=2, progress=False)
    assert _same_masks(masks, sparse_clf.model.masks)
    for key in ("0.05", "auto"):
        si = result.rewired[key]
        assert si.fixed > 0
        # Only wrong concepts are edited, so each fix adds exactly one right concept prediction.
        gained = (si.concept_accuracy - result.no_intervention.concept_accuracy) * 6 * 3
        assert gained == pytest.approx(si.fixed)
        # The rewiring curve runs from no concept rewired (NI) to every wrong one rewired (SI).
        assert si.curve[0] == pytest.approx(result.no_intervention.task_accuracy)
        assert si.curve[-1] == pytest.approx(si.task_accuracy)
        fixes = si.single_fixes
        assert fixes.pairs == result.wrong_concepts and fixes.fixed + fixes.broken <= fixes.pairs
    # The JSON keeps the names results files have always had.
    d = result.to_dict()
    assert list(d)[-3:] == ["NI", "oracle", "SI"] and d["SI"]["auto"]["single_fixes"]["pairs"] == result.wrong_concepts


def test_stream_groups_take_each_wrong_concept_once_in_order():
    wrong = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 1], [1, 0, 0]], bool)
    assert stream_groups(wrong, 1) == [([0], 0), ([0], 2), ([2], 1), ([2], 2), ([3], 0)]  # row by row, as corrected alone
    # Runs of 2 reviews that have a wrong concept (0 and 2, then 3), each corrected concept by concept.
    assert stream_groups(wrong, 2) == [([0], 0), ([2], 1), ([0, 2], 2), ([3], 0)]
    assert stream_groups(wrong, 10) == [([0, 3], 0), ([2], 1), ([0, 2], 2)]


def test_a_batched_stream_counts_every_wrong_concept_once_and_keeps_sparsity(sparse_clf):
    g = torch.Generator().manual_seed(2)
    texts = tuple(f"{TEXT} {w}" for w in ("today", "again", "twice", "sadly", "once", "later"))
    split = Split(texts, torch.randint(3, (6,), generator=g).numpy(), torch.randint(3, (6, 3), generator=g).numpy())
    before = {c: kept(per) for c, per in sparse_clf.model.masks.items()}
    result = persistent(sparse_clf, split, split, 0.05, selection="paper", batch=4, keep_unfixed=True, progress=False)
    assert result.batch == 4 and sum(result.outcomes.values()) == result.wrong_concepts > 0
    # One edit per (run of reviews, concept) at most, each covering all of its run's wrong readings: fewer edits than corrections.
    assert 0 < result.edits == len(sparse_clf.interventions) < result.corrections_kept
    assert result.corrections_kept == sum(len(e.texts) for e in sparse_clf.interventions) == result.outcomes.get("kept", 0)
    assert result.kept_counts_unchanged and {c: kept(per) for c, per in sparse_clf.model.masks.items()} == before
    with pytest.raises(ValueError, match="batch: expected a whole number of reviews per edit"):
        persistent(sparse_clf, split, split, 0.05, batch=0, progress=False)


def test_cli_intervene_per_example_persistent_and_mask_diff(tmp_path, capsys, reviews, tiny_bert):
    data, out = train_tiny_sparsecbm(tmp_path / "m", reviews, tiny_bert)
    capsys.readouterr()
    j, png = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["-q", "intervene", str(out), *data, "--ratio", "0.01", "0.05", "--max-examples", "6",
                 "--json", str(j), "--png", str(png)]) == 0
    assert "oracle" in capsys.readouterr().out
    result = json.loads(j.read_text())
    assert set(result["SI"]) == {"0.01", "0.05"} and png.read_bytes()[:4] == b"\x89PNG"

    edited = tmp_path / "edited"
    assert main(["-q", "intervene", str(out), *data, "--mode", "persistent", "--ratio", "0.02", "--selection", "paper",
                 "--max-examples", "6", "--batch", "2", "--save-to", str(edited), "--json", str(j)]) == 0
    streamed = json.loads(j.read_text())
    assert streamed["kept_counts_unchanged"] and streamed["eval_split"]["n"] == 16 and streamed["batch"] == 2
    assert sum(streamed["outcomes"].values()) == streamed["wrong_concepts"]
    capsys.readouterr()
    assert main(["-q", "masks", str(out), "--diff", str(edited), "--json", str(j)]) == 0
    diff = json.loads(j.read_text())["concepts"]
    assert sum(d["dropped"] for d in diff.values()) == sum(d["grown"] for d in diff.values())
    assert 2 * sum(d["dropped"] for d in diff.values()) == streamed["bits_changed"]
    assert len(load(edited).interventions) == streamed["edits"]

    with pytest.raises(SystemExit):  # argparse refuses it before anything loads
        main(["-q", "intervene", str(out), *data, "--ratio", "0.9"])
    assert "ratio must be 'auto' or a fraction in [0, 0.5), got 0.9" in capsys.readouterr().err


def test_patched_masked_weight_cache_equals_a_rebuild(sparse_clf):
    model = sparse_clf.model
    sparse_clf.predict([TEXT])  # fills the cache of masked weights
    sparse_clf.intervene(TEXT, "food", _wrong_value(sparse_clf, "food"), ratio=0.05, steps=2, persist=True,
                         keep_unfixed=True)
    sparse_clf.undo()
    sparse_clf.intervene(TEXT, "food", _wrong_value(sparse_clf, "food"), ratio=0.02, persist=True, keep_unfixed=True)
    assert sparse_clf.interventions
    params = dict(model.backbone.named_parameters())
    cached = model.encoder.masked_weights("food", trainable=False)
    assert all(torch.equal(cached[n], params[n].detach() * m) for n, m in model.masks["food"].items())
