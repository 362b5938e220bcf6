"""The one versioned-cache helper: a kept value lives until a tensor it came from changes."""

import torch

from sparsecbm.cache import VersionedCache
from sparsecbm.interventions import SplitLogits
from sparsecbm.interventions.gradients import concept_k_outputs, tokenize

from .conftest import TINY_SCHEMA


def test_a_value_is_recomputed_only_when_its_tensors_change():
    cache, calls = VersionedCache(), []
    a, b = torch.zeros(3), torch.ones(3)

    def compute():
        calls.append(1)
        return float(a.sum() + b.sum())

    assert cache.get("k", [a, b], compute) == 3.0 and cache.get("k", [a, b], compute) == 3.0 and len(calls) == 1
    a.add_(1)  # in place: its version moves on
    assert cache.get("k", [a, b], compute) == 6.0 and len(calls) == 2
    assert cache.get("k", [a.clone(), b], compute) == 6.0 and len(calls) == 3  # another tensor, equal values
    assert cache.get("k", [a, b], compute, "other extra") == 6.0 and len(calls) == 4
    cache.put("k", [a, b], -1.0)
    assert cache.get("k", [a, b], compute) == -1.0 and len(calls) == 4
    cache.pop("k")
    assert cache.get("k", [a, b], compute) == 6.0 and len(calls) == 5


def test_split_logits_follow_concept_k_masks_only(sparse_clf):
    texts = ["the food was awful", "service lovely , prices some .", "ok"]
    logits = SplitLogits(texts)
    first = logits.all(sparse_clf)
    for k in range(len(TINY_SCHEMA["concepts"])):  # rows in the given order, equal to a fresh pass
        assert torch.allclose(first[k].logits, concept_k_outputs(sparse_clf, tokenize(sparse_clf, texts), k).logits, atol=1e-6)
    mask = next(iter(sparse_clf.model.masks["food"].values()))
    mask.logical_not_()  # concept 0's subnetwork changes in place
    again = logits.all(sparse_clf)
    assert again[1] is first[1] and again[2] is first[2]  # the other concepts' logits are kept
    assert again[0] is not first[0]
    assert torch.allclose(again[0].logits, concept_k_outputs(sparse_clf, tokenize(sparse_clf, texts), 0).logits, atol=1e-6)
