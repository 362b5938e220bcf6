"""The SparseCBM pipeline end to end (training/pipeline.py): dense CBM, mining, fine-tuning, saving."""

import json

import pytest
import torch

from sparsecbm import TrainConfig, load, train
from sparsecbm.masks import jaccard, kept
from sparsecbm.pruning import PruneConfig

from .conftest import CONCEPTS

QUICK = dict(epochs=1, batch_size=8, lr=1e-3, max_length=32)
PRUNE = dict(fisher_grads=6, fisher_batch_size=4, grad_chunk=4, block_size=8, damp=1e-4, prune_steps=2, finetune_epochs=0.5)


def _sparse_train(data, backbone, out=None, **prune):
    config = TrainConfig(model="sparsecbm", backbone=str(backbone), **QUICK)
    return train(data, config, prune=PruneConfig(**{**PRUNE, **prune}), out=out, progress=False)


@pytest.mark.parametrize("pruner", ["obs", "magnitude", "wanda"])
def test_pipeline_reaches_the_target_sparsity(data, tiny_bert, pruner):
    clf = _sparse_train(data, tiny_bert, pruner=pruner)
    for concept, per in clf.model.masks.items():
        total = sum(m.numel() for m in per.values())
        assert kept(per) == round(0.5 * total), concept  # the default sparsity, 0.5
    if pruner == "magnitude":  # identical scores -> identical masks, the control
        assert jaccard(clf.model.masks["food"], clf.model.masks["price"]) == 1.0
    else:  # data-dependent scores give concept-specific subnetworks
        assert jaccard(clf.model.masks["food"], clf.model.masks["price"]) < 1.0


def test_same_seed_same_masks(data, tiny_bert):
    a = _sparse_train(data, tiny_bert).model.masks
    b = _sparse_train(data, tiny_bert).model.masks
    assert all(torch.equal(a[c][n], b[c][n]) for c in a for n in a[c])


@pytest.fixture(scope="module")
def saved_sparse(tmp_path_factory, data, tiny_llama):
    out = tmp_path_factory.mktemp("sparse") / "m"
    return _sparse_train(data, tiny_llama, out=out), out


def test_saved_sparsecbm_restores_masks_and_predictions(saved_sparse, data):
    clf, out = saved_sparse
    assert (out / "dense" / "config.json").exists()  # the dense phase is kept
    loaded = load(out)
    assert loaded.config.kind == "sparsecbm"
    for c, per in clf.model.masks.items():
        assert all(torch.equal(per[n].cpu(), loaded.model.masks[c][n]) for n in per)
    texts = list(data["test"].texts)
    assert torch.equal(clf.forward_texts(texts).task_logits, loaded.forward_texts(texts).task_logits)
    # Bit-packed: an eighth of a byte per weight, plus the header.
    n_bits = sum(m.numel() for per in clf.model.masks.values() for m in per.values())
    assert (out / "masks.safetensors").stat().st_size < n_bits / 8 + 20_000


def test_init_from_a_dense_cbm(tmp_path, data, tiny_bert, saved_sparse):
    train(data, TrainConfig(model="cbm", backbone=str(tiny_bert), **QUICK), out=tmp_path / "d", progress=False)
    config = TrainConfig(model="sparsecbm", backbone=str(tiny_bert), **QUICK)
    clf = train(data, config, prune=PruneConfig(**PRUNE), init_from=tmp_path / "d", out=tmp_path / "s", progress=False)
    assert clf.config.kind == "sparsecbm"
    log = [json.loads(line) for line in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in log} == {"prune", "sparsecbm"}  # no dense phase: it started from the saved CBM
    assert [r["step"] for r in log if r["phase"] == "prune"] == [1, 2]
    assert not (tmp_path / "s" / "dense").exists()
    with pytest.raises(ValueError, match="expected a dense CBM"):
        train(data, config, init_from=saved_sparse[1], progress=False)


def test_cli_sparsecbm_train_masks_and_pathway(tmp_path, capsys, reviews, tiny_bert):
    from sparsecbm.cli import main

    out = tmp_path / "m"
    argv = ["-q", "train", "--data", str(reviews["train"]), "--dev", str(reviews["dev"]), "--test", str(reviews["test"]),
            "--text-column", "text", "--label-column", "stars", "--concept-columns", ",".join(CONCEPTS),
            "--model", "sparsecbm", "--backbone", str(tiny_bert), "--out", str(out), "--epochs", "1",
            "--batch-size", "8", "--max-length", "32", "--sparsity", "0.5", "--pruner", "obs", "--fisher-grads", "4",
            "--fisher-batch-size", "4", "--block-size", "10", "--damp", "1e-4", "--prune-steps", "2",
            "--finetune-epochs", "0.25"]
    assert main(argv) == 0
    assert "subnetwork sparsity: food 50.0%" in capsys.readouterr().out

    assert main(["-q", "masks", str(out), "--json", str(tmp_path / "masks.json")]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "masks.json").read_text())
    assert set(summary) == {"concepts", "jaccard"}
    assert summary["concepts"]["food"]["sparsity"] == pytest.approx(0.5, abs=1e-6)
    assert "encoder.layer.0.attention.self.query.weight" in summary["concepts"]["food"]["layers"]
    assert set(summary["jaccard"]) == {"food|service", "food|price", "service|price"}
    assert "overlap of kept weights (Jaccard)" in printed

    assert main(["-q", "evaluate", str(out), "--pathway"]) == 0
    printed = capsys.readouterr().out
    assert "predicted label" in printed and "pushed" in printed
    # A dense CBM has no masks: a clear error, exit 2.
    assert main(["-q", "train", *argv[2:argv.index("--model")], "--model", "cbm", "--backbone", str(tiny_bert),
                 "--out", str(tmp_path / "d"), "--epochs", "1", "--max-length", "32"]) == 0
    capsys.readouterr()
    assert main(["-q", "masks", str(tmp_path / "d")]) == 2
    assert "has no concept masks" in capsys.readouterr().err
