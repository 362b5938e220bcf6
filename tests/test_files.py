"""Writing results (files.py): atomic, and NumPy values written as plain JSON."""

import json

import numpy as np
import pytest

from sparsecbm.files import write_json


def test_numpy_values_are_written_as_numbers_and_lists(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"fixed": np.bool_(True), "n": np.int64(3), "x": np.float32(0.5), "rows": np.arange(2)})
    assert json.loads(path.read_text()) == {"fixed": True, "n": 3, "x": 0.5, "rows": [0, 1]}


def test_a_value_json_cannot_write_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError, match="cannot write set as JSON"):
        write_json(path, {"a": {1, 2}})
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["r.json"]
