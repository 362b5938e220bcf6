"""Model folders of every earlier save format load with today's code and predict what the
code that wrote them predicted (tests/golden/write_format1.py made the format-1 folders)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open

import sparsecbm
from sparsecbm.classifier import FORMAT_VERSION

from .conftest import same_tree

FORMAT1 = Path(__file__).parent / "golden" / "format1"
TEXTS = ["the food was awful and the service lovely , prices some .",
         "the food was lovely and the service lovely , prices awful ."]


def _fields_of(predictions, expected):
    """The predictions as the writing code's version reported them (later versions add fields, e.g. what_if)."""
    return [{k: p.to_dict()[k] for k in e} for p, e in zip(predictions, expected, strict=True)]


@pytest.mark.parametrize("name", ["sparsecbm-embedding-side", "cbm-soft", "standard"])
def test_a_format_1_folder_loads_predicts_as_before_and_saves_as_today(tmp_path, name):
    folder = shutil.copytree(FORMAT1 / name, tmp_path / name)
    expected = json.loads((folder / "expected.json").read_text())
    clf = sparsecbm.load(folder)
    same_tree(_fields_of(clf.predict(TEXTS), expected["predictions"]), expected["predictions"])
    if expected["oracle"] is not None:
        same_tree(clf.oracle(TEXTS[0], {"food": "Positive"}), expected["oracle"])
    clf.save(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["format_version"] == FORMAT_VERSION == 2
    with safe_open(str(tmp_path / "again" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert all(k.startswith(("encoder.backbone.", "projector.", "head.")) for k in keys)
    same_tree(_fields_of(sparsecbm.load(tmp_path / "again").predict(TEXTS), expected["predictions"]), expected["predictions"])


def test_a_format_1_folder_with_format_2_keys_is_refused_by_name(tmp_path):
    folder = shutil.copytree(FORMAT1 / "cbm-soft", tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "format_version": 2}))
    with pytest.raises(ValueError, match=r"model.safetensors: does not match config.json"):
        sparsecbm.load(folder)


def test_rewriting_the_config_of_a_format_1_folder_keeps_its_format(tmp_path):
    """sparsecbm calibrate rewrites only config.json: the folder must stay loadable as the format its weights have."""
    folder = shutil.copytree(FORMAT1 / "cbm-soft", tmp_path / "m")
    expected = json.loads((folder / "expected.json").read_text())
    clf = sparsecbm.load(folder)
    clf.meta["calibration"] = {"temperature": 2.0}
    clf.save_config(folder)
    assert json.loads((folder / "config.json").read_text())["format_version"] == 1
    again = sparsecbm.load(folder)
    assert again.temperature == 2.0
    assert [p.label for p in again.predict(TEXTS)] == [p["label"] for p in expected["predictions"]]
