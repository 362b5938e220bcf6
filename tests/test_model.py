import math

import pytest
import torch

from sparsecbm.backbones import load_backbone
from sparsecbm.data import Schema
from sparsecbm.model import CBMOutput, ConceptBottleneckModel, ModelConfig, joint_loss

SCHEMA = Schema(
    labels=("1", "2", "3"),
    concepts=("food", "service"),
    concept_values=(("Negative", "Positive", "unknown"), ("Negative", "Positive")),
)


def _model(folder, kind="cbm", pooling="mean"):
    backbone, tokenizer = load_backbone(str(folder))
    model = ConceptBottleneckModel(backbone, ModelConfig(kind=kind, backbone=str(folder), pooling=pooling, schema=SCHEMA))
    return model, tokenizer


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_llama"])
def test_cbm_forward_backward(request, fixture):
    model, tokenizer = _model(request.getfixturevalue(fixture))
    batch = tokenizer(["good food", "the waiter was rude and slow"], padding=True, return_tensors="pt")
    out = model(batch["input_ids"], batch["attention_mask"])
    assert out.task_logits.shape == (2, 3)
    assert [t.shape for t in out.concept_logits] == [(2, 3), (2, 2)]
    assert torch.allclose(out.activations, torch.sigmoid(torch.cat(out.concept_logits, 1)))
    # Hidden size comes from the backbone's config (32 for BERT, 48 for Llama here).
    assert model.projector.in_features == model.backbone.config.hidden_size
    loss, parts = joint_loss(out, torch.tensor([0, 2]), torch.tensor([[0, 1], [2, 0]]), gamma=5.0)
    loss.backward()
    for name, p in model.named_parameters():
        if "pooler" in name:
            continue  # BERT's pooler is not used by mean pooling
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert set(parts) == {"task", "concepts"}


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_llama"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_pooling_ignores_padding(request, fixture, pooling):
    model, tokenizer = _model(request.getfixturevalue(fixture), pooling=pooling)
    model.eval()
    short, long = "nice", "a much longer review that forces padding of the short one"
    alone = tokenizer([short], return_tensors="pt")
    both = tokenizer([short, long], padding=True, return_tensors="pt")
    assert both["attention_mask"][0].sum() < both["attention_mask"].shape[1]  # really padded
    assert tokenizer.padding_side == "right"
    with torch.no_grad():
        z_alone = model.encode(alone["input_ids"], alone["attention_mask"])
        z_both = model.encode(both["input_ids"], both["attention_mask"])
    torch.testing.assert_close(z_both[0], z_alone[0], atol=1e-5, rtol=1e-4)


def test_standard_model_has_no_concepts(tiny_bert):
    model, tokenizer = _model(tiny_bert, kind="standard")
    batch = tokenizer(["good food"], return_tensors="pt")
    out = model(batch["input_ids"], batch["attention_mask"])
    assert out.concept_logits == () and out.activations is None
    loss, parts = joint_loss(out, torch.tensor([1]), None, gamma=5.0)
    assert set(parts) == {"task"}


def test_joint_loss_hand_checked():
    # Task logits [0, ln 3] with label 1: CE = -ln(3/4). Concept 0 logits [0, 0, 0]
    # with value 2: CE = ln 3. Concept 1 logits [ln 4, 0] with value 1: CE = ln 5.
    out = CBMOutput(
        task_logits=torch.tensor([[0.0, math.log(3)]]),
        concept_logits=(torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[math.log(4), 0.0]])),
    )
    loss, parts = joint_loss(out, torch.tensor([1]), torch.tensor([[2, 1]]), gamma=5.0)
    expected = -math.log(3 / 4) + 5.0 * (math.log(3) + math.log(5))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert parts["task"] == pytest.approx(-math.log(3 / 4), rel=1e-6)
    assert parts["concepts"] == pytest.approx(math.log(3) + math.log(5), rel=1e-6)


def test_cbm_without_concepts_is_rejected():
    with pytest.raises(ValueError, match="needs concept annotations"):
        ModelConfig(kind="cbm", schema=Schema(labels=("a", "b")))
    with pytest.raises(ValueError, match="model kind must be one of"):
        ModelConfig(kind="sparse", schema=SCHEMA)
