"""Label probabilities that mean what they say (calibration.py, Classifier.calibrate, sparsecbm calibrate)."""

import json

import numpy as np
import pytest
import torch

from sparsecbm import load
from sparsecbm.calibration import expected_calibration_error, fit_temperature
from sparsecbm.cli import main


def test_the_fitted_temperature_undoes_a_known_overconfidence():
    g = torch.Generator().manual_seed(0)
    true_logits = torch.randn(20000, 5, generator=g)
    labels = torch.multinomial(true_logits.softmax(-1), 1, generator=g).squeeze(1)
    assert fit_temperature(3 * true_logits, labels) == pytest.approx(3.0, rel=0.05)  # 3x too sharp: T = 3
    assert fit_temperature(true_logits / 2, labels) == pytest.approx(0.5, rel=0.05)  # too soft: T < 1


def test_expected_calibration_error_by_hand():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    # bins of 1/15: 0.9 -> bin 13 (2 texts, accuracy 0.5, confidence 0.9), 0.6 -> bin 9, 0.7 -> bin 10 (right)
    expected = 0.5 * abs(0.5 - 0.9) + 0.25 * abs(1 - 0.6) + 0.25 * abs(1 - 0.7)
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)


def test_training_calibrates_on_dev_and_the_temperature_changes_probabilities_not_predictions(model_dir, data):
    clf = load(model_dir)
    saved = json.loads((model_dir / "config.json").read_text())["calibration"]
    assert saved["temperature"] == clf.temperature > 0 and saved["after"]["nll"] <= saved["before"]["nll"] + 1e-6
    texts = list(data["test"].texts)
    logits = clf.forward_texts(texts).task_logits
    preds = clf.predict(texts)
    for p, row in zip(preds, (logits / clf.temperature).softmax(-1)):
        assert list(p.label_probs.values()) == pytest.approx(row.tolist(), abs=1e-6)
        assert p.label == clf.schema.labels[int(row.argmax())]
    clf.meta["calibration"]["temperature"] = 1.0
    assert [p.label for p in clf.predict(texts)] == [p.label for p in preds]  # the argmax never moves
    assert main(["-q", "calibrate", str(model_dir), "--split", "test"]) == 0
    assert json.loads((model_dir / "config.json").read_text())["calibration"]["fitted_on"].endswith(
        f"({len(texts)} texts)")


def test_calibrate_gives_a_folder_from_before_value_shifts_its_shifts(tiny_bert, reviews, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from sparsecbm.heads import PROTOTYPES

    from .conftest import train_tiny_sparsecbm

    _, out = train_tiny_sparsecbm(tmp_path / "m", reviews, tiny_bert)  # the default head: prototypes and shifts
    fitted = load_file(str(out / PROTOTYPES))
    save_file({"value_prototypes": fitted["value_prototypes"]}, str(out / PROTOTYPES))  # as an older sparsecbm saved it
    assert load(out).model.head.value_shifts is None
    capsys.readouterr()
    assert main(["calibrate", str(out)]) == 0
    assert "fitted the value shifts (and value prototypes) on" in capsys.readouterr().out
    shifts = load(out).model.head.value_shifts
    for j in range(len(shifts.means)):  # the same training texts give the same shifts as training did
        torch.testing.assert_close(shifts.means[j], fitted[f"shift_means.{j}"], atol=1e-5, rtol=1e-4)
    assert main(["calibrate", str(out)]) == 0 and "value shifts" not in capsys.readouterr().out  # once
