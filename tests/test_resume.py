"""train --resume: an interrupted run continues to the same model as an uninterrupted one."""

import json
from dataclasses import replace

import pytest
import torch

from sparsecbm import load, train
from sparsecbm.pruning import PruneConfig
from sparsecbm.training import TrainConfig, checkpoint


def _settings(tiny_bert, **kw):
    # Dropout is on (BertConfig's default 0.1), so a resumed run must also restore the RNG.
    config = TrainConfig(**{"model": "sparsecbm", "backbone": str(tiny_bert), "epochs": 2, "batch_size": 16,
                            "lr": 1e-3, "max_length": 32, **kw})
    # Distilling: a run resumed after its dense phase takes the teacher from out/dense.
    return config, PruneConfig(pruner="magnitude", prune_steps=2, finetune_epochs=0.5, distill_weight=0.5)


@pytest.fixture(scope="module")
def uninterrupted(data, tiny_bert, tmp_path_factory):
    config, prune = _settings(tiny_bert)
    out = tmp_path_factory.mktemp("full") / "m"
    return train(data, config, prune=prune, out=out, progress=False), out


def _interrupt_after(monkeypatch, n_points: int) -> None:
    """Stop the run (as Ctrl-C would) right after its n-th resume point is written."""
    real, written = checkpoint.save, []

    def save_then_stop(out, point):
        real(out, point)
        written.append(point.phase)
        if len(written) == n_points:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_stop)


# Resume points of this run: dense epochs 1-2, pruning steps 1-2, sparse epochs 1-2.
@pytest.mark.parametrize("stop_after, phase", [(1, "dense"), (3, "prune"), (5, "sparsecbm")])
def test_resumed_run_equals_the_uninterrupted_one(data, tiny_bert, tmp_path, monkeypatch, uninterrupted, stop_after, phase):
    full, full_out = uninterrupted
    config, prune = _settings(tiny_bert)
    out = tmp_path / "m"
    _interrupt_after(monkeypatch, stop_after)
    with pytest.raises(KeyboardInterrupt):
        train(data, config, prune=prune, out=out, progress=False)
    assert checkpoint.load(out).phase == phase
    unfinished = out / "dense" if phase == "dense" else out
    if phase != "prune":
        assert "--resume" in load(unfinished).unfinished  # the saved best-so-far says it is not done
    monkeypatch.undo()

    resumed = train(data, config, prune=prune, out=out, progress=False, resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and any(k.startswith("encoder.concept_masks.") for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []
    assert resumed.meta["best_epoch"] == full.meta["best_epoch"]
    assert load(out).unfinished is None and load(out / "dense").unfinished is None
    assert not (out / "resume").exists()  # removed once the run finished
    assert (out / "train_log.jsonl").read_text().count("\n") == (full_out / "train_log.jsonl").read_text().count("\n")


def test_resume_refuses_other_settings_and_missing_points(data, tiny_bert, tmp_path, monkeypatch):
    config, prune = _settings(tiny_bert, epochs=1)
    out = tmp_path / "m"
    with pytest.raises(ValueError, match="nothing to resume"):
        train(data, config, prune=prune, out=out, progress=False, resume=True)
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train(data, config, prune=prune, out=out, progress=False)
    monkeypatch.undo()
    other, _ = _settings(tiny_bert, epochs=1, lr=2e-3)
    with pytest.raises(ValueError, match=r"training.lr: 0.001 then, 0.002 now"):
        train(data, other, prune=prune, out=out, progress=False, resume=True)
    with pytest.raises(ValueError, match="resume needs out"):
        train(data, config, prune=prune, progress=False, resume=True)
    (out / "resume" / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match="damaged resume point"):
        train(data, config, prune=prune, out=out, progress=False, resume=True)


def test_resume_accepts_other_speed_only_settings(data, tiny_bert, tmp_path, monkeypatch):
    """A run may be resumed with another evaluation batch size or Fisher chunk (SPEED_ONLY)."""
    config, prune = _settings(tiny_bert, epochs=1)
    out = tmp_path / "m"
    _interrupt_after(monkeypatch, 2)  # after the dense epoch and the first pruning step
    with pytest.raises(KeyboardInterrupt):
        train(data, config, prune=prune, out=out, progress=False)
    monkeypatch.undo()
    clf = train(data, replace(config, eval_batch_size=7), prune=replace(prune, grad_chunk=3), out=out,
                progress=False, resume=True)
    assert load(out).meta["finished"] and clf.model.masks is not None


def _interrupted_without(monkeypatch, out, save_points, setting, run):
    """Stops ``run()`` after ``save_points`` resume points, then deletes ``setting``
    (section, key) from the saved run settings, as a version before that setting wrote them."""
    _interrupt_after(monkeypatch, save_points)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.undo()
    state = out / "resume" / "state.json"
    saved = json.loads(state.read_text())
    section, key = setting
    del saved["run"][section][key]
    state.write_text(json.dumps(saved))


def test_resume_compares_the_mining_gamma_as_it_acted(data, tiny_bert, tmp_path, monkeypatch):
    """A run started before --mining-gamma existed (not saved: mining at the training gamma) is
    refused under today's default, naming the setting, and resumes with --mining-gamma equal to
    its training gamma."""
    config, prune = _settings(tiny_bert, epochs=1)  # training gamma 0.5, mining gamma 5 by default
    out = tmp_path / "m"
    _interrupted_without(monkeypatch, out, 2, ("pruning", "mining_gamma"),
                         lambda: train(data, config, prune=replace(prune, mining_gamma=None), out=out, progress=False))
    with pytest.raises(ValueError, match=r"pruning.mining_gamma: 0.5 then, 5.0 now"):
        train(data, config, prune=prune, out=out, progress=False, resume=True)
    train(data, config, prune=replace(prune, mining_gamma=config.gamma), out=out, progress=False, resume=True)
    assert load(out).meta["finished"]


@pytest.mark.parametrize("key, other, message", [
    ("precision", "bf16", r"training.precision: 'fp32' then, 'bf16' now"),
    ("intervention_prob", 0.3, r"training.intervention_prob: 0.0 then, 0.3 now"),
])
def test_resume_reads_a_run_saved_before_a_setting_as_its_old_behaviour(data, tiny_bert, tmp_path, monkeypatch,
                                                                        key, other, message):
    """Runs started before --precision trained in float32, and before --intervention-prob
    without interventions: they resume as that and are refused otherwise, naming the setting."""
    config, prune = _settings(tiny_bert, epochs=1)
    config = replace(config, intervention_prob=0.0)  # what such a run did (today's default is 0.5)
    out = tmp_path / "m"
    _interrupted_without(monkeypatch, out, 1, ("training", key),
                         lambda: train(data, config, prune=prune, out=out, progress=False))
    with pytest.raises(ValueError, match=message):
        train(data, replace(config, **{key: other}), prune=prune, out=out, progress=False, resume=True)
    train(data, config, prune=prune, out=out, progress=False, resume=True)
    assert load(out).meta["finished"]


def test_a_fresh_run_drops_the_resume_point_of_an_older_run(data, tiny_bert, tmp_path, monkeypatch):
    config, prune = _settings(tiny_bert)
    out = tmp_path / "m"
    _interrupt_after(monkeypatch, 3)  # an older run, stopped in its pruning phase
    with pytest.raises(KeyboardInterrupt):
        train(data, config, prune=prune, out=out, progress=False)
    assert checkpoint.load(out).phase == "prune"
    monkeypatch.undo()

    def stop(out, point):  # a fresh run in the same folder, stopped before its first resume point
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", stop)
    with pytest.raises(KeyboardInterrupt):
        train(data, config, prune=prune, out=out, overwrite=True, progress=False)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="nothing to resume"):  # not the older run's point
        train(data, config, prune=prune, out=out, progress=False, resume=True)


def test_sparse_epochs_set_the_sparse_phase_apart_from_the_dense_one(data, tiny_bert, tmp_path, monkeypatch):
    """--sparse-epochs N: the dense phase runs --epochs, the sparse phase N; a run stopped after
    sparse epoch 1 of 2 says so, resumes to the end, and a run saved before the setting existed
    (the sparse phase ran --epochs) resumes under the default."""
    config, prune = _settings(tiny_bert, epochs=1)  # resume points: dense 1, pruning 1-2, sparse 1-2
    prune = replace(prune, sparse_epochs=2)
    out = tmp_path / "m"
    _interrupt_after(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        train(data, config, prune=prune, out=out, progress=False)
    assert "after epoch 1 of 2" in load(out).unfinished
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"pruning.sparse_epochs: 2 then, None now"):
        train(data, config, prune=replace(prune, sparse_epochs=None), out=out, progress=False, resume=True)
    train(data, config, prune=prune, out=out, progress=False, resume=True)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    epochs = [(r["phase"], r["epoch"]) for r in log if "epoch" in r]
    assert epochs == [("dense", 1), ("sparsecbm", 1), ("sparsecbm", 2)]
    saved = load(out)
    assert saved.meta["finished"] and saved.meta["epochs_done"] == 2 and saved.unfinished is None
    assert load(out / "dense").meta["epochs_done"] == 1

    older = tmp_path / "older"
    _interrupted_without(monkeypatch, older, 1, ("pruning", "sparse_epochs"),
                         lambda: train(data, config, prune=replace(prune, sparse_epochs=None), out=older, progress=False))
    train(data, config, prune=replace(prune, sparse_epochs=None), out=older, progress=False, resume=True)
    assert load(older).meta["finished"] and load(older).meta["epochs_done"] == 1
    with pytest.raises(ValueError, match="sparse_epochs must be at least 1"):
        PruneConfig(sparse_epochs=0)
