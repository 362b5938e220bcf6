"""One entry point for every data set: a name, a file, a config, or the spec a saved model recorded."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from .corpora import CEBAB_TEST_ROWS, load_cebab, load_imdbc
from .reading import read_file_text
from .schema import DataError, Dataset
from .tables import load_config_file, load_table


def load_dataset(
    name_or_path: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    **options: Any,
) -> Dataset:
    """Load ``"cebab"``, ``"imdbc"``, a data config (``.toml``, or ``.json`` with a
    ``train`` key) or a training file (``.csv``/``.tsv``/``.jsonl``/``.json``; then
    ``text_column``, ``label_column`` and ``concept_columns`` are needed).
    Extra keyword options go to :func:`load_cebab` or :func:`load_table`.
    """
    name = str(name_or_path)
    if name == "cebab":
        return load_cebab(data_dir, **options)
    if name == "imdbc":
        _no_options("imdbc", options)
        return load_imdbc(data_dir)
    path = Path(name)
    if path.suffix.lower() == ".toml" or (path.suffix.lower() == ".json" and is_data_config(path)):
        _no_options(name, options)
        return load_config_file(path)
    if path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        return load_table(path, **options)
    raise ValueError(
        f"unknown data {name!r}: expected 'cebab', 'imdbc', a .csv/.tsv/.jsonl/.json file "
        "or a .toml data config"
    )


def is_data_config(path: str | os.PathLike) -> bool:
    """A .json data config is one JSON object with a ``train`` key; anything else (a list of
    records, JSON Lines) is a table."""
    try:
        text = read_file_text(Path(path))
        # A list of records starts with '['; only an object (a config, or JSON Lines, which
        # fails at its second line) is parsed.
        conf = json.loads(text) if text.lstrip().startswith("{") else None
    except (OSError, DataError, ValueError):
        return False
    return isinstance(conf, dict) and "train" in conf


def _no_options(name: str, options: Mapping[str, Any]) -> None:
    given = {k for k, v in options.items() if v not in (None, (), [])}
    if given:
        raise ValueError(f"{name} takes no {', '.join(sorted(given))} option(s)")


def dataset_from_spec(spec: Mapping[str, Any], data_dir: str | os.PathLike | None = None) -> Dataset:
    """Reload the data set a model was trained on (its saved ``spec``)."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name == "cebab":
        return load_cebab(data_dir, test_rows=spec.get("test_rows", CEBAB_TEST_ROWS), source=spec.get("source", "local"))
    if name == "imdbc":
        return load_imdbc(data_dir)
    if name == "table":
        return load_table(**spec)
    raise ValueError(f"cannot reload data from spec {dict(spec, name=name)}; load the data and pass it "
                     "(--data on the command line)")
