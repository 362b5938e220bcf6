"""Corrections that stick: signed selection, the smallest sufficient edit, batch edits, the guard."""

import json

import numpy as np
import pytest
import torch

from sparsecbm import load
from sparsecbm.cli import main
from sparsecbm.data import Split
from sparsecbm.interventions import Guard
from sparsecbm.interventions.gradients import concept_k_outputs, saliency, tokenize
from sparsecbm.interventions.guard import LOSS_BUDGET
from sparsecbm.interventions.ranking import auto_ladder, flip, rank
from sparsecbm.masks import kept, total

from .conftest import POISED_TEXT as TEXT
from .conftest import copy_masks, predicted_of, same_masks, train_tiny_sparsecbm, wrong_of

TEXTS = [TEXT, "the food was lovely , prices some", "service awful , food some today"]


def split_scores(clf, k, text, value, selection="taylor"):
    return saliency(clf, k, tokenize(clf, [text]), torch.tensor([value]), None, selection=selection).copy()


def test_signed_selection_flips_only_bits_that_lower_the_first_order_loss(sparse_clf):
    k, concept = 0, "food"
    value = "NPu".index(wrong_of(sparse_clf, [TEXT], concept)[0])
    s = split_scores(sparse_clf, k, TEXT, value)  # G * theta, before the edit
    before = copy_masks(sparse_clf)
    kept_bits = np.concatenate([m.numpy().reshape(-1) for m in before[concept].values()])
    r = sparse_clf.intervene(TEXT, concept, "NPu"[value], ratio=0.05, persist=True, keep_unfixed=True)
    after = np.concatenate([m.numpy().reshape(-1) for m in sparse_clf.model.masks[concept].values()])
    dropped, grown = np.flatnonzero(kept_bits & ~after), np.flatnonzero(~kept_bits & after)
    assert dropped.size == grown.size == r.n > 0
    assert (s[dropped] > 0).all() and (s[grown] < 0).all()  # each flip lowers -G theta (drop) / +G theta (grow)
    # ... and they are the best such bits: no kept weight left has a larger G theta, no pruned one a smaller.
    assert s[dropped].min() >= s[kept_bits & after].max()
    assert s[grown].max() <= s[~kept_bits & ~after].min()


@pytest.mark.parametrize("selection, raises", [("taylor", True), ("paper", None)])
def test_a_small_signed_step_raises_the_target_log_probability(sparse_clf, selection, raises):
    """Swapping drop and grow (or dropping the sign) must fail this for the taylor rule."""
    k, concept = 1, "service"
    target = wrong_of(sparse_clf, [TEXT], concept)[0]
    batches = tokenize(sparse_clf, [TEXT])
    v = "NPu".index(target)
    logp = lambda: float(concept_k_outputs(sparse_clf, batches, k).logits.log_softmax(-1)[0, v])
    start = logp()
    for ratio in (0.001, 0.005, 0.02):
        r = sparse_clf.intervene(TEXT, concept, target, ratio=ratio, selection=selection, persist=True, keep_unfixed=True)
        if raises:
            assert r.n > 0 and logp() > start
        sparse_clf.undo() if r.persisted else None
        assert logp() == start


@pytest.mark.parametrize("selection", ["taylor", "paper"])
@pytest.mark.parametrize("ratio", [0.01, "auto"])
def test_every_rule_keeps_sparsity_and_changes_only_mask_k(sparse_clf, selection, ratio):
    before = copy_masks(sparse_clf)
    r = sparse_clf.correct(TEXTS, "noise", wrong_of(sparse_clf, TEXTS, "noise"), ratio=ratio, selection=selection,
                           max_ratio=0.1, steps=2, persist=True, keep_unfixed=True)
    now = sparse_clf.model.masks
    assert r.n > 0 and all(kept(now[c]) == kept(before[c]) for c in now)
    assert all(torch.equal(now[c][n], before[c][n]) for c in ("food", "service") for n in now[c])
    assert sum(int((now["noise"][n] != before["noise"][n]).sum()) for n in now["noise"]) <= r.bits_flipped


def test_auto_returns_the_smallest_rung_that_fixes_and_zero_when_right(poised):
    sparse_clf = poised
    k, concept = 0, "food"
    target = wrong_of(sparse_clf, [TEXT], concept)[0]
    v = "NPu".index(target)
    before = copy_masks(sparse_clf)
    r = sparse_clf.intervene(TEXT, concept, target, ratio="auto", max_ratio=0.3, confidence=None)  # argmax alone
    assert r.fixed and r.n > 0 and not r.persisted and same_masks(before, sparse_clf.model.masks)
    # Replay the search by hand: the rung below r.n does not fix, r.n does.
    masks_k = sparse_clf.model.masks[concept]
    n_total = total(masks_k)
    s = split_scores(sparse_clf, k, TEXT, v)
    drop, grow = rank(sparse_clf, masks_k, s, round(0.3 * n_total), "taylor", seed=0)
    ladder = auto_ladder(n_total, drop.size)
    assert r.n in ladder and ladder[0] == 1
    batches = tokenize(sparse_clf, [TEXT])
    for n, fixes in ((ladder[ladder.index(r.n) - 1], False) if r.n != ladder[0] else (None, None), (r.n, True)):
        if n is None:
            continue
        flip(sparse_clf.model, concept, drop[:n], grow[:n])
        assert (int(concept_k_outputs(sparse_clf, batches, k).values()[0]) == v) == fixes
        flip(sparse_clf.model, concept, drop[:n], grow[:n], undo=True)
    assert same_masks(before, sparse_clf.model.masks)
    # Already right: nothing to do, nothing flipped.
    right = predicted_of(sparse_clf, [TEXT], concept)[0]
    r = sparse_clf.intervene(TEXT, concept, right, persist=True)
    assert r.n == 0 and r.fixed and not r.persisted and r.outcome.startswith("nothing flipped")


def test_a_confidence_makes_auto_climb_until_the_value_is_that_sure(poised):
    target = wrong_of(poised, [TEXT], "food")[0]
    plain = poised.intervene(TEXT, "food", target, ratio="auto", max_ratio=0.3, confidence=None)
    assert poised.intervene(TEXT, "food", target, ratio="auto", max_ratio=0.3, confidence=0).n == plain.n  # 0: off
    sure = poised.intervene(TEXT, "food", target, ratio="auto", max_ratio=0.3, confidence=0.8)
    assert plain.fixed and plain.after["probability"] < 0.8  # barely right at the smallest rung
    assert sure.fixed and sure.after["probability"] >= 0.8 and sure.n > plain.n
    with pytest.raises(ValueError, match="confidence must be a probability"):
        poised.intervene(TEXT, "food", target, confidence=1.0)


def test_the_command_line_passes_its_confidence_to_the_correction(tmp_path, monkeypatch, reviews, tiny_bert):
    from sparsecbm.classifier import Classifier

    _, out = train_tiny_sparsecbm(tmp_path / "m", reviews, tiny_bert)
    seen = {}
    real = Classifier.correct
    monkeypatch.setattr(Classifier, "correct", lambda self, *a, **kw: seen.update(kw) or real(self, *a, **kw))
    assert main(["-q", "correct", str(out), "the food was awful", "--concept", "food", "--value", "Positive",
                 "--confidence", "0.8", "--dry-run"]) == 0
    assert seen["confidence"] == 0.8


def test_batch_correction_is_one_log_entry_that_undoes_bit_for_bit(sparse_clf, tmp_path):
    before = copy_masks(sparse_clf)
    values = wrong_of(sparse_clf, TEXTS, "food")
    r = sparse_clf.correct(TEXTS, "food", values, ["a", "b", "c"], ratio="auto", max_ratio=0.3, steps=3, persist=True,
                           keep_unfixed=True)
    assert r.persisted and len(sparse_clf.interventions) == 1 and r.n > 0
    e = sparse_clf.interventions[0]
    assert e.texts == TEXTS and e.values == values and e.labels == ["a", "b", "c"] and sum(e.step_sizes) == r.n
    assert [p == v for p, v in zip(predicted_of(sparse_clf, TEXTS, "food"), values)] == r.fixed
    sparse_clf.save(tmp_path / "m")
    loaded = load(tmp_path / "m")
    assert [x.to_json() for x in loaded.interventions] == [e.to_json()]
    loaded.undo()
    assert same_masks(before, loaded.model.masks)
    sparse_clf.undo()
    assert same_masks(before, sparse_clf.model.masks)


def _guard_against(clf, concept, texts, gold_values):
    """A guard of ``texts`` whose gold value of ``concept`` is ``gold_values`` (labels as predicted)."""
    k = clf.schema.concepts.index(concept)
    preds = clf.predict(texts)
    concepts = np.array([[clf.schema.concept_values[j].index(p.concepts[c].value) for j, c in enumerate(clf.schema.concepts)]
                         for p in preds])
    concepts[:, k] = ["NPu".index(v) for v in gold_values]
    labels = np.array([clf.schema.labels.index(p.label) for p in preds])
    return Split(tuple(texts), labels, concepts)


def test_a_rejected_guarded_edit_leaves_masks_and_log_unchanged(poised):
    sparse_clf = poised
    sparse_clf.intervene(TEXT, "service", wrong_of(sparse_clf, [TEXT], "service")[0], ratio=0.02, persist=True,
                         keep_unfixed=True)  # a log entry that must survive
    log = [e.to_json() for e in sparse_clf.interventions]
    before = copy_masks(sparse_clf)
    predicted = predicted_of(sparse_clf, [TEXT], "food")[0]
    # The guard holds the same text with the model's current value as gold: fixing it breaks the guard.
    guard = Guard(_guard_against(sparse_clf, "food", [TEXT, TEXT + " ."], [predicted] * 2), caution=0)
    r = sparse_clf.intervene(TEXT, "food", wrong_of(sparse_clf, [TEXT], "food")[0], max_ratio=0.3, persist=True,
                             guard=guard)
    assert r.fixed and not r.persisted and not r.guard["accepted"]
    assert r.guard["concept_accuracy"][0] > r.guard["concept_accuracy"][1] and "food accuracy" in r.guard["reason"]
    # It says which guard texts the edit would break, in words a user can act on.
    broken = r.guard["broken"]
    assert broken and set(broken) <= {0, 1} and r.guard["fixed"] == []
    assert f"make {len(broken)} of the 2 guard texts' food value wrong" in r.guard["reason"]
    assert guard.split.texts[broken[0]][:30] in r.guard["reason"]  # the first such text, shortened
    quoted = r.guard["texts"]  # and quotes them whole, with what the edit would do to each
    assert [t["row"] for t in quoted] == broken
    assert all(t["effect"] == "broken" and t["before"] == t["truth"] == predicted != t["after"]
               and t["text"] == guard.split.texts[t["row"]] for t in quoted)
    assert r.outcome.startswith("rolled back by the guard")
    assert same_masks(before, sparse_clf.model.masks) and [e.to_json() for e in sparse_clf.interventions] == log
    # The guard's cached logits still match the model after the rollback.
    kept, fresh = guard.concept_logits(sparse_clf)[0], concept_k_outputs(sparse_clf, tokenize(sparse_clf, guard.split.texts), 0)
    assert torch.equal(kept.logits, fresh.logits) and torch.equal(kept.features, fresh.features)


def test_an_accepted_guarded_edit_is_logged_with_its_verdict(poised):
    sparse_clf = poised
    target = wrong_of(sparse_clf, [TEXT], "food")[0]
    guard = Guard(_guard_against(sparse_clf, "food", [TEXT, TEXT + " ."], [target] * 2), task_tolerance=1.0,
                  caution=0)
    r = sparse_clf.intervene(TEXT, "food", target, max_ratio=0.3, persist=True, guard=guard)
    assert r.fixed and r.persisted and r.guard["accepted"]
    assert r.guard["concept_accuracy"][1] >= r.guard["concept_accuracy"][0]
    assert sparse_clf.interventions[-1].guard == r.guard


def test_the_loss_tolerance_refuses_an_edit_that_flips_no_guard_text_but_shifts_the_concept(poised):
    """A guard whose gold food value is the one the edit moves away from, with tolerances that pass any change of
    accuracy: without a loss tolerance the edit is kept; at 0 nats it is refused for the loss it adds, named."""
    sparse_clf = poised
    target = wrong_of(sparse_clf, [TEXT], "food")[0]
    now = predicted_of(sparse_clf, [TEXT], "food")[0]
    guard_split = _guard_against(sparse_clf, "food", [TEXT + " ."], [now])
    verdicts = []
    for loss_tolerance in (None, 0.0):
        log, before = [e.to_json() for e in sparse_clf.interventions], copy_masks(sparse_clf)
        guard = Guard(guard_split, tolerance=1.0, task_tolerance=1.0, loss_tolerance=loss_tolerance, loss_budget=None,
                      caution=0)
        r = sparse_clf.intervene(TEXT, "food", target, max_ratio=0.3, persist=True, guard=guard)
        assert r.fixed
        verdicts.append(r)
        if r.persisted:
            sparse_clf.undo()
        assert same_masks(before, sparse_clf.model.masks) and [e.to_json() for e in sparse_clf.interventions] == log
    kept, refused = verdicts
    loss_before, loss_after = kept.guard["concept_loss"]
    assert loss_after > loss_before and kept.persisted and kept.guard["accepted"]
    assert not refused.persisted and refused.guard["concept_loss"] == [loss_before, loss_after]
    assert "food loss on the guard rose" in refused.outcome and "loss tolerance 0" in refused.guard["reason"]


def test_the_loss_budget_counts_from_before_the_guards_first_edit_of_the_concept(poised):
    """Kept edits spend the budget: after one that raised the food loss, a budget of 0 refuses even a change that adds
    no loss of its own (the model as it now is), naming the loss before the first edit; the per-edit tolerance does not."""
    sparse_clf = poised
    target = wrong_of(sparse_clf, [TEXT], "food")[0]
    now = predicted_of(sparse_clf, [TEXT], "food")[0]
    guard = Guard(_guard_against(sparse_clf, "food", [TEXT + " ."], [now]), tolerance=1.0, task_tolerance=1.0, caution=0,
                  loss_budget=None)
    first = sparse_clf.intervene(TEXT, "food", target, max_ratio=0.3, persist=True, guard=guard)
    start, spent = first.guard["concept_loss"]
    assert first.persisted and spent > start and first.guard["first_concept_loss"] == start
    k = sparse_clf.schema.concepts.index("food")
    guard.loss_tolerance, guard.loss_budget = 0.0, 0.0
    verdict = guard.judge(sparse_clf, k, guard.concept_logits(sparse_clf))
    assert verdict["concept_loss"] == [spent, spent] and verdict["first_concept_loss"] == start
    assert not verdict["accepted"] and "loss tolerance" not in verdict["reason"]
    assert f"above its {start:.4f} before this guard's first edit of it (loss budget 0)" in verdict["reason"]
    guard.loss_budget = spent - start + 1e-3
    assert guard.judge(sparse_clf, k, guard.concept_logits(sparse_clf))["accepted"]
    sparse_clf.undo()
    # The default guard has a budget: the same first edit, on the model as it was, is refused for it.
    fresh = Guard(guard.split, tolerance=1.0, task_tolerance=1.0, caution=0)
    r = sparse_clf.intervene(TEXT, "food", target, max_ratio=0.3, persist=True, guard=fresh)
    assert fresh.loss_budget == LOSS_BUDGET > 0 and r.fixed and not r.persisted
    assert f"(loss budget {LOSS_BUDGET:g})" in r.guard["reason"]


def test_a_guarded_edit_may_not_undo_an_earlier_logged_correction(poised):
    sparse_clf = poised
    first, second = [v for v in ("N", "P", "u") if v != predicted_of(sparse_clf, [TEXT], "food")[0]]
    assert sparse_clf.intervene(TEXT, "food", first, max_ratio=0.3, persist=True).persisted
    log, before = [e.to_json() for e in sparse_clf.interventions], copy_masks(sparse_clf)
    # Tolerances that accept anything: only the logged correction can stop the second edit.
    guard = Guard(_guard_against(sparse_clf, "food", [TEXTS[1], TEXT], [first] * 2), tolerance=1.0, task_tolerance=1.0,
                  caution=0)
    r = sparse_clf.intervene(TEXT, "food", second, max_ratio=0.3, persist=True, guard=guard)
    assert r.fixed and not r.persisted and r.guard["corrections_undone"] == 1
    assert "undo 1 earlier correction(s) of food" in r.outcome
    # the verdict quotes the guard's own texts (the logged ones are another list, of another length)
    assert {"row": 1, "text": TEXT, "effect": "broken", "before": first, "after": second, "truth": first} in r.guard["texts"]
    assert same_masks(before, sparse_clf.model.masks) and [e.to_json() for e in sparse_clf.interventions] == log


def test_curvature_is_half_theta_squared_times_the_mean_squared_per_text_gradient(sparse_clf):
    from sparsecbm.interventions.gradients import curvature

    k, concept = 1, "service"
    values, labels = torch.tensor([0, 2, 1]), torch.tensor([1, 0, 2])
    got = curvature(sparse_clf, k, TEXTS, values, labels)
    model = sparse_clf.model
    params = dict(model.backbone.named_parameters())
    names = list(model.masks[concept])
    want = [torch.zeros_like(params[n]) for n in names]
    for i, text in enumerate(TEXTS):  # an independent loop: plain autograd through the masked forward
        enc = sparse_clf.tokenizer([text], return_tensors="pt")
        weights = {n: w.detach().requires_grad_(True) for n, w in model.encoder.masked_weights(concept, trainable=False).items()}
        with model.evaluating():
            loss = model.concept_loss(enc["input_ids"], enc["attention_mask"], k, values[i : i + 1], labels[i : i + 1],
                                      gamma=sparse_clf.gamma, weights=weights)
        for w, g in zip(want, torch.autograd.grad(loss, [weights[n] for n in names])):
            w.add_(g * g)
    want = torch.cat([(0.5 * w / len(TEXTS) * params[n].detach() ** 2).reshape(-1) for w, n in zip(want, names)])
    assert (got >= 0).all() and got.max() > 0
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-12)


def test_a_penalty_flips_only_bits_whose_gain_exceeds_their_cost(sparse_clf):
    k, concept = 0, "food"
    masks_k = sparse_clf.model.masks[concept]
    g_theta = split_scores(sparse_clf, k, TEXT, 1)
    cost = np.abs(g_theta) * np.random.default_rng(0).uniform(0, 2, g_theta.size).astype(np.float32)
    drop, grow = rank(sparse_clf, masks_k, g_theta.copy(), 200, "taylor", 0, penalty=cost)
    assert drop.size > 0
    assert (g_theta[drop] - cost[drop] > 0).all() and (-g_theta[grow] - cost[grow] > 0).all()
    kept_bits = np.concatenate([m.numpy().reshape(-1) for m in masks_k.values()]).astype(bool)
    net_drop = np.where(kept_bits, g_theta - cost, -np.inf)
    assert (g_theta[drop] - cost[drop]).min() >= np.sort(net_drop)[-drop.size] - 1e-6  # the best ones
    with pytest.raises(ValueError, match="applies to selection=.taylor. only"):
        rank(sparse_clf, masks_k, g_theta.copy(), 10, "paper", 0, penalty=cost)


def test_saliency_uses_gamma_of_the_model(sparse_clf):
    """L_k = CE(task share) + gamma CE(concept): the saliency is affine in gamma."""
    batches = tokenize(sparse_clf, [TEXT])
    s = {}
    for gamma in (1.0, 2.0, 3.0):
        sparse_clf.meta = {"training": {"gamma": gamma}}
        s[gamma] = saliency(sparse_clf, 0, batches, torch.tensor([1]), torch.tensor([2])).astype(np.float64)
    assert not np.allclose(s[2.0], s[1.0])
    np.testing.assert_allclose(s[3.0] - s[1.0], 2 * (s[2.0] - s[1.0]), rtol=1e-3, atol=1e-9)
    # Masks mined at another gamma than the training one: a correction rewires with the mining L_k.
    sparse_clf.meta = {"training": {"gamma": 0.5}, "pruning": {"mining_gamma": 2.0}}
    np.testing.assert_array_equal(saliency(sparse_clf, 0, batches, torch.tensor([1]), torch.tensor([2])), s[2.0])


@pytest.mark.parametrize("call, error, message", [
    (lambda c: c.correct([], "food", "P"), ValueError, "texts: no corrections given"),
    (lambda c: c.correct(TEXTS, "food", ["P", "N"]), ValueError, "values: 2 given for 3 texts"),
    (lambda c: c.correct(TEXTS, "food", "P", ["a"]), ValueError, "labels: 1 given for 3 texts"),
    (lambda c: c.correct(TEXTS, "food", "P", selection="abs"), ValueError, "selection must be one of"),
    (lambda c: c.correct(TEXTS, "food", "P", confidence=-0.1), ValueError, "confidence must be a probability"),
    (lambda c: c.correct(TEXT, "food", "P"), TypeError, "expected a list of texts"),
    (lambda c: c.correct(TEXTS, "food", ["P", "P", "Great"]), ValueError, "unknown value 'Great'"),
    (lambda c: Guard(Split((TEXT,), np.zeros(1, int), np.zeros((1, 3), int)), tolerance=-0.1), ValueError,
     "tolerance must be a fraction"),
    (lambda c: Guard(Split((TEXT,), np.zeros(1, int), np.zeros((1, 3), int)), task_tolerance=2), ValueError,
     "task_tolerance must be a fraction"),
    (lambda c: Guard(Split((TEXT,), np.zeros(1, int), np.zeros((1, 3), int)), loss_tolerance=-1), ValueError,
     "loss_tolerance must be a finite number of nats"),
    (lambda c: Guard(Split((TEXT,), np.zeros(1, int), np.zeros((1, 3), int)), loss_budget=float("nan")), ValueError,
     "loss_budget must be a finite number of nats"),
    (lambda c: Guard(Split((), np.zeros(0, int), np.zeros((0, 3), int))), ValueError, "guard set is empty"),
    (lambda c: Guard(Split((TEXT,), np.zeros(1, int), np.zeros((1, 3), int)), repairs=1.5), ValueError,
     "repairs must be a whole number"),
    (lambda c: Guard(Split((TEXT,), np.zeros(1, int), np.zeros((1, 3), int)), caution=-1), ValueError,
     "caution must be a finite number >= 0"),
])
def test_bad_corrections_are_refused_naming_the_argument(sparse_clf, call, error, message):
    before = copy_masks(sparse_clf)
    with pytest.raises(error, match=message):
        call(sparse_clf)
    assert same_masks(before, sparse_clf.model.masks) and sparse_clf.interventions == []


def test_cli_correct_from_a_file_with_a_guard_then_undo(tmp_path, capsys, reviews, tiny_bert):
    data, out = train_tiny_sparsecbm(tmp_path / "m", reviews, tiny_bert)
    clf = load(out)
    texts = ["the food was awful today", "food awful and service some"]
    wrong = [next(v for v in ("Negative", "Positive", "unknown") if v != p.concepts["food"].value) for p in clf.predict(texts)]
    corrections = tmp_path / "c.csv"
    corrections.write_text("text,value\n" + "".join(f"{t},{v}\n" for t, v in zip(texts, wrong)), encoding="utf-8")
    j = tmp_path / "r.json"
    capsys.readouterr()
    code = main(["-q", "correct", str(out), "--concept", "food", "--file", str(corrections), "--max-ratio", "0.2",
                 "--steps", "3", "--keep-unfixed", "--guard", "dev:8", "--tolerance", "1", "--task-tolerance", "1",
                 "--loss-budget", "off", "--json", str(j)])
    assert code == 0
    result = json.loads(j.read_text())
    assert result["guard"]["loss_budget"] is None
    printed = capsys.readouterr().out
    assert result["persisted"] and result["guard"]["n"] == 8 and "guard (8 texts)" in printed
    assert len(load(out).interventions) == 1
    assert main(["-q", "undo", str(out)]) == 0
    assert load(out).interventions == [] and same_masks(clf.model.masks, load(out).model.masks)
    assert main(["-q", "undo", str(out)]) == 2
    assert "no intervention to undo" in capsys.readouterr().err
    # Bad input: one clear line, exit 2, nothing saved.
    bad = tmp_path / "bad.csv"
    bad.write_text("text,value\nfine text,Negative\n ,Positive\n", encoding="utf-8")
    assert main(["-q", "correct", str(out), "--concept", "food", "--file", str(bad)]) == 2
    assert "bad.csv: row 3: column 'text' is empty" in capsys.readouterr().err
    assert main(["-q", "correct", str(out), "some text", "--concept", "food", "--value", "Positive", "--guard", "nope:3"]) == 2
    assert "--guard 'nope:3': neither a file nor a split" in capsys.readouterr().err
    assert main(["-q", "correct", str(out), "some text", "--concept", "food", "--value", "Positive", "--repairs", "2"]) == 2
    assert "--repairs apply to a --guard" in capsys.readouterr().err
    assert main(["-q", "correct", str(out), "some text", "--concept", "food", "--value", "Positive", "--loss-tolerance",
                 "0.01"]) == 2
    assert "--loss-tolerance, --loss-budget, --caution and --repairs apply to a --guard" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # the library's check, as the flag is parsed
        main(["-q", "correct", str(out), "some text", "--concept", "food", "--value", "Positive", "--guard", "train",
              "--loss-tolerance", "-1"])
    assert refused.value.code == 2 and "loss_tolerance must be a finite number of nats" in capsys.readouterr().err
    assert main(["-q", "correct", str(out), "some text", "--concept", "food", "--value", "Positive", "--nearby", "dev:x"]) == 2
    assert "--nearby 'dev:x': N must be a whole number" in capsys.readouterr().err
    # --nearby: which of the texts most like the corrected one the edit changes (a dry run saves nothing).
    assert main(["-q", "correct", str(out), texts[0], "--concept", "food", "--value", wrong[0], "--nearby", "test",
                 "--nearest", "5", "--dry-run", "--json", str(j)]) == 0
    near = json.loads(j.read_text())["nearby"]
    assert near["n"] == 5 and near["changed"] == len(near["texts"])
    assert f"the edit changes food on {near['changed']} of the 5 nearest texts" in capsys.readouterr().out
    assert main(["-q", "correct", str(out), "some text", "--concept", "food"]) == 2
    assert "--value" in capsys.readouterr().err
    assert load(out).interventions == []


def test_a_log_written_before_batch_corrections_still_loads_and_undoes(sparse_clf, tmp_path):
    before = copy_masks(sparse_clf)
    sparse_clf.intervene(TEXT, "food", wrong_of(sparse_clf, [TEXT], "food")[0], ratio=0.02, selection="paper", steps=2,
                         persist=True, keep_unfixed=True)
    sparse_clf.save(tmp_path / "m")
    log = tmp_path / "m" / "interventions.json"
    meta = json.loads(log.read_text())
    e = meta["edits"][0]
    meta["edits"][0] = {"concept": e["concept"], "value": e["values"][0], "ratio": e["ratio"], "steps": e["steps"],
                        "text": e["texts"][0], "label": None, "time": e["time"], "per_layer": e["per_layer"],
                        "bits_flipped": e["bits_flipped"]}  # the layout of sparsecbm 0.1's first logs
    log.write_text(json.dumps(meta))
    old = load(tmp_path / "m")
    assert old.interventions[0].texts == [TEXT] and old.interventions[0].step_sizes == e["step_sizes"]
    old.undo()
    assert same_masks(before, old.model.masks)


def test_the_guard_reads_its_texts_shortest_first_and_answers_in_its_own_order(sparse_clf):
    texts = [TEXTS[0], "ok", TEXTS[2], "the food"]
    guard = Guard(Split(tuple(texts), np.zeros(4, int), np.zeros((4, 3), int)), caution=0)
    alone = torch.cat([concept_k_outputs(sparse_clf, tokenize(sparse_clf, [t]), 1).logits for t in texts])
    assert not torch.allclose(alone[0], alone[1])  # rows that a wrong order would swap
    assert torch.allclose(guard.concept_logits(sparse_clf)[1].logits, alone, atol=1e-5)



# Texts the tiny poised model reads near TEXT: correcting TEXT's food changes some of them.
NEAR = ["the food was awful", "food awful", "the service lovely", "the food was awful and the prices some",
        "the food was awful and the service awful", "the food was lovely and the service lovely",
        "food was awful , service lovely", "the food awful and the service lovely",
        "the food was some and the service lovely", "awful food , lovely service",
        "the service was lovely and the food awful", "prices awful", "the food was awful and the service some"]


@pytest.mark.parametrize("repairs, tolerance, kept_after", [(0, 0.25, None), (2, 0.0, None), (3, 0.25, 4)])
def test_a_guard_repairs_a_refused_edit_with_more_steps_or_rolls_it_back(poised, repairs, tolerance, kept_after):
    sparse_clf = poised
    target = wrong_of(sparse_clf, [TEXT], "food")[0]
    guard = Guard(_guard_against(sparse_clf, "food", NEAR, predicted_of(sparse_clf, NEAR, "food")), caution=0,
                  tolerance=tolerance, task_tolerance=1.0, repairs=repairs, loss_budget=None)  # gold: the values read now
    before, kept_before = copy_masks(sparse_clf), {c: kept(m) for c, m in sparse_clf.model.masks.items()}
    # confidence=None: the step counts below are the plain search's (argmax right).
    r = sparse_clf.intervene(TEXT, "food", target, max_ratio=0.3, persist=True, guard=guard, confidence=None)
    assert r.fixed
    if kept_after is None:  # refused: the plain edit breaks 4 of the 13 (a fall of 0.31); 2 repairs keep 5 broken
        assert r.steps == 1 + repairs and not r.persisted and r.outcome.startswith("rolled back by the guard")
        assert same_masks(before, sparse_clf.model.masks) and not sparse_clf.interventions
        cached, fresh = guard.concept_logits(sparse_clf)[0], concept_k_outputs(sparse_clf, tokenize(sparse_clf, NEAR), 0)
        assert torch.equal(cached.logits, fresh.logits)
        return
    # The third repair step leaves 3 broken (a fall of 0.23, within the tolerance): kept, as one log entry.
    assert r.steps == kept_after and r.persisted and r.guard["accepted"] and len(r.guard["broken"]) == 3
    assert len(sparse_clf.interventions) == 1 and len(sparse_clf.interventions[0].step_sizes) == kept_after
    assert {c: kept(m) for c, m in sparse_clf.model.masks.items()} == kept_before  # sparsity unchanged
    assert predicted_of(sparse_clf, [TEXT], "food") == [target]
    sparse_clf.undo()
    assert same_masks(before, sparse_clf.model.masks)
