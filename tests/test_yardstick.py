"""How far one correction carries (interventions/yardstick.py): families, grading, undo."""

import numpy as np
import pytest
import torch

from sparsecbm.cli import main
from sparsecbm.data import Split
from sparsecbm.interventions.yardstick import draw_corrections, family_edits

from .conftest import train_tiny_sparsecbm

# Three families of three reviews each, and two single reviews.
TEXTS = ("the food was awful and the staff lovely", "the food was awful, the staff kind", "food awful, staff lovely",
         "a quiet room and a fine meal", "quiet room, fine meal", "the room was quiet and the meal fine",
         "noisy and slow", "slow and noisy", "very noisy, very slow", "prices fine", "ok")
GROUPS = ("a", "a", "a", "b", "b", "b", "c", "c", "c", "d", "e")


def _split(seed=0):
    g = torch.Generator().manual_seed(seed)
    concepts = torch.randint(3, (len(TEXTS), 3), generator=g).numpy()
    concepts[:3, 0] = 0  # family a agrees on concept 0, family b on concept 1
    concepts[3:6, 1] = 2
    return Split(TEXTS, torch.randint(3, (len(TEXTS),), generator=g).numpy(), concepts, "families", GROUPS)


def test_corrections_are_wrong_concepts_with_siblings_of_the_same_gold_value_one_per_family():
    split = _split()
    predicted = (split.concepts + 1) % 3  # every concept wrong
    drawn = draw_corrections(split, predicted, n=10, seed=0)
    families = [split.groups[i] for i, _, _ in drawn]
    assert len(families) == len(set(families)) and set(families) <= {"a", "b", "c"}  # d and e have no siblings
    for i, k, siblings in drawn:
        assert siblings and i not in siblings
        assert all(split.groups[j] == split.groups[i] and split.concepts[j, k] == split.concepts[i, k] for j in siblings)
    assert draw_corrections(split, split.concepts, n=10, seed=0) == []  # nothing wrong, nothing to correct
    with pytest.raises(ValueError, match="no families"):
        draw_corrections(Split(TEXTS, split.labels, split.concepts, "flat"), predicted, n=3, seed=0)


def test_family_edits_grade_each_kept_edit_then_undo_it(sparse_clf):
    split = _split()
    masks = {c: {n: m.clone() for n, m in per.items()} for c, per in sparse_clf.model.masks.items()}
    before = sparse_clf.forward_texts(split.texts).predicted_values()
    # keep_unfixed (as the paper's rule): this random tiny model's edits seldom fix, every one is graded.
    result = family_edits(sparse_clf, split, n=3, unrelated=4, ratio=0.05, keep_unfixed=True, progress=False)
    # The model ends as it began.
    assert all(torch.equal(masks[c][n], sparse_clf.model.masks[c][n]) for c in masks for n in masks[c])
    assert sparse_clf.interventions == []
    assert result.corrections == len(result.edits) > 0 and result.kept == sum(e.kept for e in result.edits) > 0
    for e in result.edits:
        k = sparse_clf.schema.concepts.index(e.concept)
        siblings = [j for j in range(len(split)) if j != e.row and split.groups[j] == split.groups[e.row]
                    and split.concepts[j, k] == split.concepts[e.row, k]]
        assert e.siblings == len(siblings)
        assert e.siblings_wrong_before == int(np.sum(before[siblings, k] != split.concepts[siblings, k]))
        assert e.siblings_wrong_before + e.siblings_right_before == e.siblings
        assert 0 <= e.siblings_fixed <= e.siblings_wrong_before and 0 <= e.siblings_broken <= e.siblings_right_before
        assert e.unrelated == 4 and 0 <= e.unrelated_changed <= 4
        if not e.kept:  # a refused edit changes nothing
            assert e.siblings_fixed == e.siblings_broken == e.unrelated_changed == 0
    kept = [e for e in result.edits if e.kept]
    assert result.reliability == pytest.approx(sum(e.fixed for e in kept) / max(1, len(kept)))
    assert 0 <= result.locality <= 1 and result.to_dict()["edits"][0]["row"] == result.edits[0].row


def test_cli_edits_mode_needs_a_split_with_families(tmp_path, capsys, reviews, tiny_bert):
    data, out = train_tiny_sparsecbm(tmp_path / "m", reviews, tiny_bert)
    capsys.readouterr()
    assert main(["-q", "intervene", str(out), *data, "--mode", "edits"]) == 2
    assert "no families" in capsys.readouterr().err


def test_another_editor_is_graded_the_same_way_a_memory_that_reaches_exactly_the_family(sparse_clf):
    """benchmarks/edits.py's retrieval memory with embeddings that are one-hot per family: every sibling
    takes the corrected value (generalisation 100 %), no other review does (locality 100 %)."""
    from benchmarks.edits import MemoryEditor

    split = _split()
    families = sorted(set(GROUPS))
    embeddings = {t: np.eye(len(families))[families.index(g)] for t, g in zip(TEXTS, GROUPS)}
    result = family_edits(sparse_clf, split, n=3, unrelated=4, editor=MemoryEditor(sparse_clf, embeddings, 0.5),
                          progress=False)
    assert result.method == "retrieval memory" and result.kept == result.corrections > 0
    assert result.generalisation == 1.0 and result.sibling_harm == 0.0 and result.locality == 1.0
    assert sparse_clf.interventions == []  # the model itself never changed


def test_the_replay_baseline_fine_tunes_then_puts_every_weight_back(sparse_clf):
    """benchmarks/edits.py's alternative (b): a few steps of the joint loss on the corrected review and
    replayed training reviews change the weights; undo restores them bit for bit."""
    from benchmarks.edits import ReplayEditor

    split = _split()
    before = {n: p.detach().clone() for n, p in sparse_clf.model.state_dict().items()}
    editor = ReplayEditor(sparse_clf, split, lr=1e-2, steps=2, replay=4)
    r = editor.apply(TEXTS[0], 0, "P", None, seed=0)
    assert r.persisted and r.bits_flipped == 0 and "2 fine-tuning steps" in r.outcome
    assert any(not torch.equal(p, before[n]) for n, p in sparse_clf.model.state_dict().items())
    values, task = editor.predict(list(TEXTS[:2]), np.arange(2), None, None)
    assert values.shape == (2, 3) and task.shape == (2,)
    editor.undo()
    assert all(torch.equal(p, before[n]) for n, p in sparse_clf.model.state_dict().items())
    result = family_edits(sparse_clf, split, n=2, unrelated=3, editor=ReplayEditor(sparse_clf, split, lr=1e-3, steps=1,
                                                                                   replay=2), progress=False)
    assert result.method == "fine-tuning with replay" and result.kept == result.corrections
    assert all(torch.equal(p, before[n]) for n, p in sparse_clf.model.state_dict().items())


def test_the_replay_stream_fine_tunes_for_each_wrong_concept_then_puts_every_weight_back(sparse_clf):
    """benchmarks/edits.py's alternative (b) on the stream: every wrong concept still wrong when reached
    gets fine-tuning steps, the counts add up, the scores before are the model's, and the weights come back."""
    from benchmarks.edits import replay_stream

    split = _split()
    before = {n: p.detach().clone() for n, p in sparse_clf.model.state_dict().items()}
    wrong = int((sparse_clf.forward_texts(split.texts).predicted_values() != split.concepts).sum())
    r = replay_stream(sparse_clf, split, split, split, lr=1e-2)
    assert r["wrong_concepts"] == wrong and r["edits"] + r["outcomes"]["already right"] == wrong
    assert 0 <= r["still_fixed_at_end"] <= r["fixed_when_edited"] <= r["edits"]
    assert r["eval_split"]["before"]["concept_accuracy"] == pytest.approx(sparse_clf.evaluate(split)["concepts"]["mean"]["accuracy"])
    assert r["eval_split"]["after"] != r["eval_split"]["before"]
    assert all(torch.equal(p, before[n]) for n, p in sparse_clf.model.state_dict().items())


def test_the_memory_stream_gives_each_text_its_nearest_stored_correction_within_the_threshold(sparse_clf):
    """benchmarks/edits.py's stream with a memory, keys one-hot per text: every wrong concept stored,
    each text takes exactly its own corrections (all its concepts right, its label the oracle's with
    them set); above a similarity of 1 nothing is taken."""
    from benchmarks.edits import memory_stream

    split = _split()
    embeddings = {t: row for t, row in zip(TEXTS, np.eye(len(TEXTS)))}
    predicted = sparse_clf.forward_texts(split.texts).predicted_values()
    wrong = predicted != split.concepts
    assert wrong.any()
    results = memory_stream(sparse_clf, split, split, embeddings, (0.5, 1.01))
    taken, none = results[0.5], results[1.01]
    assert taken["edits"] == taken["wrong_concepts"] == int(wrong.sum()) == taken["still_fixed_at_end"]
    assert taken["eval_split"]["after"]["concept_accuracy"] == 1.0
    assert taken["texts_changed"] == int(wrong.any(1).sum())
    assert none["still_fixed_at_end"] == none["texts_changed"] == 0
    assert none["eval_split"]["after"] == none["eval_split"]["before"] == taken["eval_split"]["before"]


def test_the_evidence_editor_fits_the_edit_on_the_review_and_its_surest_wrong_clause(sparse_clf):
    from benchmarks.edits import EvidenceEditor, parts

    text, k = TEXTS[1], 0  # "the food was awful, the staff kind": two clauses
    clauses = parts(text)
    assert clauses == ["the food was awful,", "the staff kind"] and parts(TEXTS[0]) == []
    out = sparse_clf.forward_texts([text, *clauses])
    read = out.predicted_values()[:, k]
    surest = out.concept_logits[k].softmax(-1)[:, read[0]]
    same = [i for i in (1, 2) if read[i] == read[0]]
    assert same == [1, 2]  # this tiny model reads both clauses as the review: the surer one is the evidence
    value = next(v for v in sparse_clf.schema.concept_values[k] if sparse_clf.schema.concept_values[k].index(v) != read[0])
    r = EvidenceEditor(sparse_clf, ratio=0.05, keep_unfixed=True).apply(text, k, value, None, seed=0)
    assert r.persisted
    expected = [text] + ([clauses[max(same, key=lambda i: float(surest[i])) - 1]] if same else [])
    assert list(sparse_clf.interventions[-1].texts) == expected
    sparse_clf.undo()
