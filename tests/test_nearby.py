"""What an edit does to the texts most like the corrected one (interventions.nearby)."""

import numpy as np
import pytest
import torch

from sparsecbm.cli.args import NEAREST
from sparsecbm.interventions import Nearby
from sparsecbm.interventions.nearby import COUNT, describe

from .conftest import POISED_TEXT as TEXT
from .conftest import copy_masks, predicted_of, same_masks, wrong_of

SPLIT = [
    "the food was awful and the service lovely",  # the corrected text itself: left out
    "the food was awful and the service was lovely",
    "food awful , service lovely",
    "prices some today",
    "the room was quiet",
    "the food was awful",
    "service lovely and food awful and the room quiet",
]


def test_the_nearest_are_rewordings_most_alike_first_and_not_the_text_itself():
    rows, similarity = Nearby(SPLIT, count=3).nearest([SPLIT[0]])
    assert rows[0] == 1 and not {3, 4} & set(rows.tolist())  # the closest rewording first; unrelated texts last
    assert 0 not in rows and len(rows) == 3 and (np.diff(similarity) <= 0).all() and similarity[0] > 0.5
    assert Nearby(SPLIT, count=50).nearest([SPLIT[0]])[0].tolist() == [1, 5, 6, 2, 4]  # all that share a word
    assert Nearby(SPLIT, count=5).nearest(["zebra"])[0].size == 0  # no shared word: nothing is near
    # Several corrected texts: a row counts as near when it is near any of them.
    assert 4 in Nearby(SPLIT, count=1).nearest(["nothing alike", "the room was quiet ."])[0]


@pytest.mark.parametrize("make, message", [
    (lambda: Nearby([]), "nearby: the split to search is empty"),
    (lambda: Nearby(SPLIT, count=0), "count must be a whole number of at least 1"),
    (lambda: Nearby(SPLIT, count=2.5), "count must be a whole number of at least 1"),
])
def test_bad_nearby_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_nearby_must_be_a_nearby(sparse_clf):
    with pytest.raises(TypeError, match="nearby: expected a sparsecbm.interventions.Nearby"):
        sparse_clf.intervene(TEXT, "food", "P", nearby=list(SPLIT))


def test_the_cli_default_is_the_library_default():
    assert NEAREST == COUNT


def test_a_preview_lists_exactly_the_nearest_texts_whose_value_the_edit_changes(poised):
    clf, concept = poised, "food"
    nearby = Nearby(SPLIT + [TEXT + " !", TEXT + " today"], count=6)
    before = copy_masks(clf)
    r = clf.intervene(TEXT, concept, wrong_of(clf, [TEXT], concept)[0], ratio=0.05, nearby=nearby)  # a broad edit
    assert r.fixed and not r.persisted and same_masks(before, clf.model.masks)
    rows, _ = nearby.nearest([TEXT])
    texts = [nearby.texts[i] for i in rows]
    was = predicted_of(clf, texts, concept)
    clf.intervene(TEXT, concept, r.value, persist=True, plan=r.plan)  # the very edit previewed, kept
    now = predicted_of(clf, texts, concept)
    expected = [(int(i), a, b) for i, a, b in zip(rows, was, now) if a != b]
    assert expected, "the edit must change a near text for this test to mean anything"
    assert [(t["row"], t["before"], t["after"]) for t in r.nearby["texts"]] == expected
    assert r.nearby["n"] == 6 and r.nearby["changed"] == len(expected)
    assert r.to_dict()["nearby"] == r.nearby
    line = describe(r.nearby, concept, shown=1)
    assert line.startswith(f"the edit changes food on {len(expected)} of the 6 nearest texts")
    assert nearby.texts[expected[0][0]][:20] in line


def test_an_edit_that_flips_nothing_changes_no_near_text(sparse_clf):
    value = predicted_of(sparse_clf, [TEXT], "food")[0]  # already right: nothing to flip
    r = sparse_clf.intervene(TEXT, "food", value, nearby=Nearby(SPLIT, count=3))
    assert r.n == 0 and r.nearby == {"n": 3, "changed": 0, "texts": []}


def test_the_pass_before_an_edit_comes_from_the_callers_outputs_when_it_has_them(sparse_clf):
    from sparsecbm.outputs import ConceptOutputs

    known = ConceptOutputs(torch.arange(len(SPLIT) * 3, dtype=torch.float32).reshape(-1, 3), torch.zeros(len(SPLIT), 0))
    nearby = Nearby(SPLIT, count=3, cached=lambda clf, k: known if k == 0 else None)
    rows = np.array([2, 5])
    torch.testing.assert_close(nearby.read(sparse_clf, 0, rows).logits, known.logits[[2, 5]])  # no pass
    fresh = nearby.read(sparse_clf, 0, rows, edited=True)  # with the edit in place: always read
    assert not torch.equal(fresh.logits, known.logits[[2, 5]])
    torch.testing.assert_close(nearby.read(sparse_clf, 1, rows).logits, fresh_read(sparse_clf, 1, rows))


def fresh_read(clf, k, rows):
    from sparsecbm.interventions.gradients import concept_k_outputs, tokenize

    return concept_k_outputs(clf, tokenize(clf, [SPLIT[i] for i in rows]), k).logits
