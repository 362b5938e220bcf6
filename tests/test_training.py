import json

import numpy as np
import pytest
import torch

import sparsecbm
from sparsecbm import TrainConfig, load, train
from sparsecbm import training as training_module
from sparsecbm.classifier import Classifier
from sparsecbm.training import epochs as training_epochs
from sparsecbm.training import pipeline as training_pipeline

from .conftest import CONCEPTS


def _config(backbone, **kw):
    return TrainConfig(**{"backbone": str(backbone), "epochs": 1, "batch_size": 8, "lr": 1e-3, "max_length": 32, **kw})


def test_save_load_round_trip_gives_identical_predictions(tmp_path, data, tiny_bert):
    clf = train(data, _config(tiny_bert), out=tmp_path / "m", progress=False)
    loaded = load(tmp_path / "m")
    texts = list(data["test"].texts)
    a, b = clf.forward_texts(texts), loaded.forward_texts(texts)
    assert torch.equal(a.task_logits, b.task_logits)
    assert all(torch.equal(x, y) for x, y in zip(a.concept_logits, b.concept_logits))
    assert [p.to_dict() for p in clf.predict(texts)] == [p.to_dict() for p in loaded.predict(texts)]
    assert loaded.evaluate(data, "test") == clf.evaluate(data, "test")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["model"]["schema"]["concepts"] == {c: ["Negative", "Positive", "unknown"] for c in CONCEPTS}
    assert saved["training"]["max_length"] == 32 and saved["best_epoch"] == 1
    assert not list((tmp_path / "m").glob(".*tmp"))  # no temporary files left behind
    # the default (embedding) head's value prototypes, from the training texts, saved with it
    assert (tmp_path / "m" / "prototypes.safetensors").is_file()
    assert torch.equal(loaded.model.head.value_prototypes, clf.model.head.value_prototypes)
    assert clf.model.head.value_prototypes.shape == (3 * len(CONCEPTS), 16)


def test_predictions_have_the_documented_shape(data, tiny_llama):
    clf = train(data, _config(tiny_llama), progress=False)
    [pred] = clf.predict(["the food was lovely and the service awful , prices some ."])
    d = pred.to_dict()
    assert set(d) == {"label", "label_probs", "concepts", "truncated", "concept_share", "values_label", "side", "what_if"}
    for concept, alternatives in d["what_if"].items():  # every other value, the label it would give
        assert set(alternatives) == {"Negative", "Positive", "unknown"} - {d["concepts"][concept]["value"]}
        assert all(w["label"] in ("bad", "good") and w["probability"] == w["probabilities"][w["label"]]
                   for w in alternatives.values())
    assert d["truncated"] is False and 0 <= d["concept_share"] <= 1 and d["values_label"] in ("bad", "good")
    assert d["label"] in ("bad", "good") and set(d["label_probs"]) == {"bad", "good"}
    assert sum(d["label_probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert list(d["concepts"]) == list(CONCEPTS)
    for c in d["concepts"].values():
        assert set(c) == {"value", "probs"}
        assert c["value"] == max(c["probs"], key=c["probs"].get)
        assert sum(c["probs"].values()) == pytest.approx(1.0, abs=1e-5)


def test_evaluate_shapes_for_cbm_and_standard(data, tiny_bert):
    cbm = train(data, _config(tiny_bert), progress=False).evaluate(data, "test")
    assert set(cbm) == {"task", "concepts", "n"} and cbm["n"] == 16
    assert set(cbm["concepts"]) == {"mean", *CONCEPTS}
    for scores in [cbm["task"], *cbm["concepts"].values()]:
        assert set(scores) == {"accuracy", "macro_f1"} and 0 <= scores["accuracy"] <= 1
    standard = train(data, _config(tiny_bert, model="standard"), progress=False).evaluate(data, "test")
    assert set(standard) == {"task", "n"}


def test_a_cbm_learns_the_concepts(data, tiny_bert):
    # The paper's gamma 5: this tiny model on 48 synthetic rows needs the concept-heavy loss
    # (the default 0.5 was chosen on CEBaB, where it lifts the task and keeps the concepts), and
    # the paper's head: on 16 test rows, random interventions move the concepts by 0.48-0.65
    # from run to run with either head (the default head is trained in test_heads.py).
    clf = train(data, _config(tiny_bert, epochs=20, lr=3e-3, head_lr=3e-2, gamma=5.0, bottleneck="soft",
                              intervention_prob=0.0), progress=False)
    result = clf.evaluate(data, "test")
    # Concepts are spelled out by one word each: far above the ~33 % of chance.
    assert result["concepts"]["mean"]["accuracy"] > 0.6, result


def test_keeps_the_best_epoch_not_the_last(tmp_path, data, tiny_bert, monkeypatch):
    """Scripted dev scores 0.2, 0.9, 0.5: epoch 2's weights must be the ones saved."""
    scripted = iter([0.2, 0.9, 0.5])
    snapshots = []
    real_evaluate = Classifier.evaluate_outputs  # what training scores the dev split with

    def evaluate_and_snapshot(self, *args, **kwargs):
        snapshots.append({k: v.clone() for k, v in self.model.state_dict().items()})
        return real_evaluate(self, *args, **kwargs)

    monkeypatch.setattr(Classifier, "evaluate_outputs", evaluate_and_snapshot)
    monkeypatch.setattr(training_epochs, "dev_score", lambda result, selection: next(scripted))
    clf = train(data, _config(tiny_bert, epochs=3), out=tmp_path / "m", progress=False)
    monkeypatch.undo()

    log = [json.loads(line) for line in (tmp_path / "m" / "train_log.jsonl").read_text().splitlines()]
    assert [r["best"] for r in log] == [True, True, False]
    assert clf.meta["best_epoch"] == 2
    saved = load(tmp_path / "m").model.state_dict()
    for name, value in snapshots[1].items():
        assert torch.equal(saved[name], value), name
    assert any(not torch.equal(snapshots[2][n], v) for n, v in snapshots[1].items())


def test_out_folder_with_a_model_is_not_overwritten(tmp_path, data, tiny_bert):
    train(data, _config(tiny_bert), out=tmp_path / "m", progress=False)
    with pytest.raises(ValueError, match="out .*: already holds a model; pass overwrite"):
        train(data, _config(tiny_bert), out=tmp_path / "m", progress=False)
    train(data, _config(tiny_bert), out=tmp_path / "m", overwrite=True, progress=False)


def test_same_seed_same_model(data, tiny_bert):
    a = train(data, _config(tiny_bert), progress=False).forward_texts(["the food was lovely"])
    b = train(data, _config(tiny_bert), progress=False).forward_texts(["the food was lovely"])
    assert torch.equal(a.task_logits, b.task_logits)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"model": "sparse"}, "model must be one of"),
        ({"lr": 0}, "lr must be positive"),
        ({"warmup": 1.5}, "warmup must be in"),
        ({"length_groups": -1}, "length_groups must be 0"),
    ],
)
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_predict_rejects_bad_texts(data, tiny_bert):
    clf = train(data, _config(tiny_bert), progress=False)
    with pytest.raises(TypeError, match="wrap it in a list"):
        clf.predict("one text")
    with pytest.raises(ValueError, match="text 1: empty text"):
        clf.predict(["fine", "   "])


def test_evaluate_rejects_data_of_another_schema(data, tiny_bert, shared_data):
    clf = train(data, _config(tiny_bert), progress=False)
    with pytest.raises(ValueError, match="does not match the model"):
        clf.evaluate(sparsecbm.load_dataset("imdbc", data_dir=shared_data), "test")


def test_public_api_is_small_and_pinned():
    assert sorted(sparsecbm.__all__) == [
        "Annotations", "CBMOutput", "Classifier", "ConceptBottleneckModel", "ConceptPrediction", "DataError",
        "Dataset", "Explanation", "ModelConfig", "Prediction", "PruneConfig", "Schema", "Split", "TrainConfig",
        "annotate", "convert_gguf", "explain", "load", "load_dataset", "train",
    ]


# ---------------------------------------------------------------- CBM training modes (Koh et al. 2020)


def _relabelled(data):
    """The same data with the labels permuted: only a model that reads labels can tell."""
    import dataclasses

    rng = np.random.default_rng(5)
    splits = {name: dataclasses.replace(s, labels=rng.permutation(s.labels)) for name, s in data.splits.items()}
    return dataclasses.replace(data, splits=splits)


def _concept_model(clf):
    return {k: v for k, v in clf.model.state_dict().items() if not k.startswith("head.linear.")}


@pytest.mark.parametrize("kind", ["cbm", "sparsecbm"])
def test_sequential_and_independent_concept_models_never_see_the_label(data, tiny_bert, kind):
    from sparsecbm.pruning import PruneConfig

    prune = PruneConfig(fisher_grads=4, fisher_batch_size=4, block_size=8, damp=1e-4, prune_steps=1,
                        finetune_epochs=0.5) if kind == "sparsecbm" else None
    runs = {}
    for mode, d in (("sequential", data), ("sequential-relabelled", _relabelled(data)), ("independent", data)):
        runs[mode] = train(d, _config(tiny_bert, model=kind, cbm_mode=mode.split("-")[0], epochs=2), prune=prune,
                           progress=False)
    a, b, c = (_concept_model(runs[m]) for m in ("sequential", "sequential-relabelled", "independent"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # labels changed, concept model (and masks) identical
    assert all(torch.equal(a[k], c[k]) for k in a)  # both modes train the same concept model
    heads = [runs[m].model.head.linear.weight for m in runs]
    assert not torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])
    assert runs["sequential"].meta["head"]["phase"].endswith("head (sequential)")
    joint = train(data, _config(tiny_bert, model=kind, epochs=2), prune=prune, progress=False)
    assert not all(torch.equal(a[k], v) for k, v in _concept_model(joint).items())  # joint does read labels


def test_cbm_mode_needs_a_concept_model():
    with pytest.raises(ValueError, match="cbm_mode applies to concept models"):
        TrainConfig(model="standard", cbm_mode="sequential")
    with pytest.raises(ValueError, match="cbm_mode must be one of"):
        TrainConfig(cbm_mode="hybrid")


def test_length_groups_batch_texts_of_similar_length_and_keep_every_row():
    rng = np.random.default_rng(0)
    texts = ["x" * int(n) for n in rng.integers(1, 200, size=103)]
    order = rng.permutation(len(texts))
    grouped = training_module.group_by_length(order, texts, 8, 4, np.random.default_rng(1))
    assert sorted(grouped.tolist()) == list(range(len(texts)))  # a permutation: every row once
    assert grouped[-7:].tolist() == order[-7:][np.argsort([len(texts[i]) for i in order[-7:]], kind="stable")].tolist()

    def padding(o):  # padded characters over real ones, in batches of 8
        batches = [[len(texts[i]) for i in o[s : s + 8]] for s in range(0, len(o), 8)]
        return sum(max(b) * len(b) for b in batches) / sum(map(sum, batches))

    assert padding(grouped) < 0.8 * padding(order)
    again = training_module.group_by_length(order, texts, 8, 4, np.random.default_rng(1))
    other = training_module.group_by_length(order, texts, 8, 4, np.random.default_rng(2))
    assert np.array_equal(grouped, again) and not np.array_equal(grouped, other)


def test_training_with_length_groups_is_reproducible_and_changes_the_batches(data, tiny_bert):
    config = _config(tiny_bert, length_groups=2, epochs=2)
    a = train(data, config, progress=False)
    b = train(data, config, progress=False).forward_texts(["the food was lovely"])
    assert torch.equal(a.forward_texts(["the food was lovely"]).task_logits, b.task_logits)
    plain = train(data, _config(tiny_bert, length_groups=0, epochs=2), progress=False).forward_texts(["the food was lovely"])
    assert not torch.equal(plain.task_logits, b.task_logits)  # the grouping really changed the batches


def test_bf16_precision_trains_under_autocast_and_evaluates_in_float32(data, tiny_bert, monkeypatch):
    """--precision bf16: the backbone's matrix products run in bfloat16 while training (dense
    and sparse phases), in float32 while scoring the dev split; the weights stay float32."""
    from sparsecbm.pruning import PruneConfig

    seen = {"train": set(), "eval": set()}

    def record(module, args, output):
        seen["train" if module.training else "eval"].add(output.dtype)

    real = training_pipeline.new_classifier

    def hooked(*args, **kwargs):
        clf = real(*args, **kwargs)
        for module in clf.model.backbone.modules():
            if isinstance(module, torch.nn.Linear):
                module.register_forward_hook(record)
        return clf

    monkeypatch.setattr(training_pipeline, "new_classifier", hooked)
    clf = train(data, _config(tiny_bert, model="sparsecbm", precision="bf16"),
                prune=PruneConfig(pruner="magnitude", prune_steps=1, finetune_epochs=0), progress=False)
    assert seen == {"train": {torch.bfloat16}, "eval": {torch.float32}}
    assert {p.dtype for p in clf.model.parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp16")


def test_random_interventions_feed_the_head_true_values_during_training(tmp_path, data, tiny_bert, sparse_clf):
    """--intervention-prob: the chosen concepts' activations become their true 0/1 values
    before the label head, and only theirs; p = 0 trains exactly as before."""
    out = sparse_clf.forward_texts(["the food was awful", "service lovely , prices some"])
    concepts = torch.tensor([[0, 1, 2], [1, 1, 0]])
    chosen = torch.tensor([[True, False, True], [False, False, False]])
    model = sparse_clf.model
    new = model.intervened(out, chosen, concepts)
    for k in range(3):
        cols = model.head.concept_slice(k)
        expected = torch.nn.functional.one_hot(concepts[0, k], 3).float() if chosen[0, k] else out.activations[0, cols]
        assert torch.equal(new.activations[0, cols], expected)
    assert torch.equal(new.activations[1], out.activations[1])
    assert torch.allclose(new.task_logits, model.head.linear(new.activations))
    plain = train(data, _config(tiny_bert, model="cbm", bottleneck="soft", intervention_prob=0.0), progress=False)
    randint = train(data, _config(tiny_bert, model="cbm", bottleneck="soft", intervention_prob=0.5), out=tmp_path / "m",
                    progress=False)
    weights = lambda c: torch.cat([p.detach().flatten() for p in c.model.head.linear.parameters()])  # noqa: E731
    assert not torch.equal(weights(plain), weights(randint))
    assert json.loads((tmp_path / "m" / "config.json").read_text())["training"]["intervention_prob"] == 0.5
    # the default for a joint concept model (docs/interventions.md#label-heads); none for the others
    assert (TrainConfig().intervention_prob, TrainConfig().bottleneck) == (0.5, "embedding")
    assert (TrainConfig(model="standard").intervention_prob, TrainConfig(cbm_mode="sequential").bottleneck) == (0.0, "soft")
    with pytest.raises(ValueError, match="intervention_prob must be in"):
        TrainConfig(intervention_prob=1.0)
    with pytest.raises(ValueError, match="not model standard"):
        TrainConfig(model="standard", intervention_prob=0.2)
