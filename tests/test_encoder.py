"""The subnetwork encoder and its masks: every concept reads its own mask (the authors' code did not)."""

import json

import pytest
import torch

from sparsecbm.backbones import load_backbone
from sparsecbm.data import Schema
from sparsecbm.masks import load_masks, prunable_names, save_masks, summary
from sparsecbm.model import ConceptBottleneckModel, ModelConfig

from .conftest import TINY_SCHEMA, random_masks

SCHEMA = Schema(**TINY_SCHEMA)


@pytest.fixture
def sparse(tiny_bert):
    torch.manual_seed(0)  # the heads' initialisation
    backbone, tokenizer = load_backbone(str(tiny_bert))
    model = ConceptBottleneckModel(backbone, ModelConfig(kind="sparsecbm", schema=SCHEMA)).eval()
    model.masks = random_masks(model, seed=0)
    batch = tokenizer(["the food was cold", "a quiet room and kind staff"], padding=True, return_tensors="pt")
    return model, batch


def _concept_logits(model, batch):
    with torch.no_grad():
        return [model.concept_outputs(batch["input_ids"], batch["attention_mask"], k).logits for k in range(3)]


def test_concept_k_reads_mask_k_and_only_mask_k(sparse):
    model, batch = sparse
    before = _concept_logits(model, batch)
    # The last block's output matrix: flipping its mask moves the hidden states
    # well beyond rounding (a query matrix at init barely moves near-uniform attention).
    name = prunable_names(model.backbone)[-1]
    model.masks["service"][name] = ~model.masks["service"][name]  # change M_service only
    after = _concept_logits(model, batch)
    assert torch.equal(before[0], after[0]) and torch.equal(before[2], after[2])
    assert (before[1] - after[1]).abs().max() > 1e-5  # rounding differences are ~1e-7


def test_in_place_mask_edits_reach_prediction(sparse):
    model, batch = sparse
    before = _concept_logits(model, batch)  # fills the masked-weight cache
    for mask in model.masks["noise"].values():
        mask.zero_()  # an experiment: concept "noise" keeps nothing
    after = _concept_logits(model, batch)
    assert torch.equal(before[0], after[0])
    assert not torch.allclose(before[2], after[2])


def test_task_logits_are_the_sum_of_concept_terms(sparse):
    model, batch = sparse
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"])
        terms = model.head.concept_terms(out.activations)  # (n, K, C_y)
    assert terms.shape == (2, 3, 3)
    torch.testing.assert_close(out.task_logits, terms.sum(1) + model.head.linear.bias)
    # Eq. 3 term by term: phi_k . sigmoid(psi_k . z_k) with z_k from subnetwork k.
    for k, logits in enumerate(_concept_logits(model, batch)):
        phi_k = model.head.linear.weight[:, model.head.concept_slice(k)]
        torch.testing.assert_close(terms[:, k], torch.sigmoid(logits) @ phi_k.T)


def test_gradients_reach_weights_only_through_kept_positions(sparse):
    model, batch = sparse
    model.train()
    params = dict(model.backbone.named_parameters())
    for k, concept in enumerate(SCHEMA.concepts):
        model.zero_grad()
        model.concept_outputs(batch["input_ids"], batch["attention_mask"], k).logits.pow(2).sum().backward()
        for name, mask in model.masks[concept].items():
            grad = params[name].grad
            assert torch.all(grad[~mask] == 0), name
        assert any(params[n].grad[m].abs().sum() > 0 for n, m in model.masks[concept].items())
    # The joint loss: theta receives the sum over concepts, zero where no concept keeps a weight.
    model.zero_grad()
    out = model(batch["input_ids"], batch["attention_mask"])
    out.task_logits.sum().backward()
    for name in prunable_names(model.backbone):
        union = torch.zeros_like(model.masks["food"][name])
        for c in SCHEMA.concepts:
            union |= model.masks[c][name]
        assert torch.all(params[name].grad[~union] == 0), name


def test_mask_file_round_trip_and_summary(tmp_path, sparse):
    model, _ = sparse
    save_masks(model.masks, tmp_path / "masks.safetensors")
    again = load_masks(tmp_path / "masks.safetensors")
    assert all(torch.equal(model.masks[c][n], again[c][n]) for c in model.masks for n in model.masks[c])
    s = summary(model.masks)
    assert set(s["concepts"]) == set(SCHEMA.concepts)
    assert s["concepts"]["food"]["sparsity"] == pytest.approx(0.6, abs=0.02)
    assert set(s["jaccard"]) == {"food|service", "food|noise", "service|noise"}
    json.dumps(s)  # JSON-ready
