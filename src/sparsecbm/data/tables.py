"""The user's own data: train/dev/test files or a TOML data config, and the dev split carved when none is given."""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import tomllib

from .reading import (
    CONFIDENCE_SUFFIX,
    Columns,
    Normaliser,
    cell_text,
    check_columns,
    infer_values,
    iter_rows,
    parse_rows,
    read_file_text,
)
from .schema import DataError, Dataset, Schema, Split

log = logging.getLogger(__name__)

def load_table(
    train: str | os.PathLike,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    concept_columns: Sequence[str] = (),
    dev: str | os.PathLike | None = None,
    test: str | os.PathLike | None = None,
    labels: Sequence[str] | None = None,
    concept_values: Mapping[str, Sequence[str]] | None = None,
    dev_fraction: float = 0.1,
    seed: int = 0,
) -> Dataset:
    """The user's own CSV/TSV/JSONL/JSON files.

    Label values and each concept's values are declared (``labels``,
    ``concept_values``) or inferred from the training file; a value outside the
    set anywhere else is an error naming file, row and column. Without a ``dev``
    file, a seeded ``dev_fraction`` of the training rows is held out for model
    selection.
    """
    if not text_column or not label_column:
        missing = " and ".join(name for name, given in (("text_column", text_column), ("label_column", label_column))
                               if not given)
        raise ValueError(f"{train}: a data file needs {missing} (its text and label columns, e.g. "
                         f"load_dataset({str(train)!r}, text_column='text', label_column='label', "
                         "concept_columns=['food', 'service']); --text-column and --label-column on the command line)")
    concept_columns = tuple(concept_columns)
    if len(set(concept_columns)) != len(concept_columns):
        raise ValueError(f"concept columns repeat: {list(concept_columns)}")
    if not 0.0 < dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    paths = {"train": Path(train)}
    for split, path in (("dev", dev), ("test", test)):
        if path is not None:
            paths[split] = Path(path)
    rows = {split: list(iter_rows(path)) for split, path in paths.items()}
    train_path, train_rows = paths["train"], rows["train"]
    check_columns(train_path, train_rows, (text_column, label_column, *concept_columns))

    declared = dict(concept_values or {})
    unknown = set(declared) - set(concept_columns)
    if unknown:
        raise ValueError(f"concept_values names columns that are not concept columns: {sorted(unknown)}")
    label_set = tuple(labels) if labels else infer_values(
        cell_text(r, label_column, train_path, i) for i, r in train_rows
    )
    value_sets = tuple(
        tuple(declared[c]) if c in declared
        else infer_values(cell_text(r, c, train_path, i) for i, r in train_rows)
        for c in concept_columns
    )
    try:
        schema = Schema(labels=label_set, concepts=concept_columns, concept_values=value_sets)
    except DataError as e:
        raise DataError(f"{train_path}: {e}") from None

    # sparsecbm annotate writes a confidence column beside each concept it labelled.
    annotated = tuple(c for c in concept_columns
                      if any(r and c + CONFIDENCE_SUFFIX in r[0][1] for r in rows.values()))
    if annotated:
        log.info("%s: concept(s) %s come from sparsecbm annotate (a %r column each): the values are read, "
                 "their confidences are not", train_path, ", ".join(annotated), CONFIDENCE_SUFFIX)
    cols = Columns(text=text_column, label=label_column, concepts=concept_columns)
    norm = Normaliser()
    splits = {s: parse_rows(paths[s], r, cols, schema, norm) for s, r in rows.items()}
    norm.report()
    if "dev" not in splits:
        splits["train"], splits["dev"] = _hold_out(splits["train"], dev_fraction, seed)
    spec = {
        "name": "table",
        "train": str(paths["train"].resolve()),
        "dev": str(paths["dev"].resolve()) if "dev" in paths else None,
        "test": str(paths["test"].resolve()) if "test" in paths else None,
        "text_column": text_column,
        "label_column": label_column,
        "concept_columns": list(concept_columns),
        "labels": list(schema.labels),
        "concept_values": {c: list(v) for c, v in zip(schema.concepts, schema.concept_values)},
        "dev_fraction": dev_fraction,
        "seed": seed,
    }
    return Dataset(train_path.stem, schema, splits, spec, annotated=annotated)


def held_out_note(dataset: Dataset, split: str) -> str | None:
    """For a data file with no dev file, what ``split`` (train or dev) is made of:
    the dev split was carved out of the training file."""
    spec = dataset.spec
    if spec.get("name") != "table" or spec.get("dev") is not None or split not in ("train", "dev"):
        return None
    n_train, n_dev = len(dataset["train"]), len(dataset["dev"])
    carved = (f"{n_dev} of the {n_train + n_dev} rows of {spec['train']} (a seeded {100 * spec['dev_fraction']:g}%, "
              f"seed {spec['seed']}) are the dev split")
    if split == "train":
        return f"train is the other {n_train} rows: {carved}, held out for model selection"
    return f"dev: {carved}, held out of training for model selection"


def _hold_out(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    n_dev = max(1, round(len(split) * fraction))
    if len(split) - n_dev < 1:
        raise DataError(f"{split.source}: too few rows ({len(split)}) to hold out a dev split; pass a dev file")
    order = list(range(len(split)))
    random.Random(seed).shuffle(order)
    dev_idx, train_idx = np.sort(order[:n_dev]), np.sort(order[n_dev:])

    return split.rows(train_idx), split.rows(dev_idx)


_TABLE_KEYS = {
    "train", "dev", "test", "text_column", "label_column", "concept_columns",
    "labels", "concept_values", "dev_fraction", "seed",
}


def load_config_file(path: str | os.PathLike) -> Dataset:
    """A data set described by a small TOML or JSON file (paths relative to it).

    Keys: ``train`` (required), ``dev``, ``test``, ``text_column``, ``label_column``,
    ``concept_columns`` (list), ``labels`` (list), ``concept_values`` (table of lists),
    ``dev_fraction``, ``seed``.
    """
    path = Path(path)
    text = read_file_text(path)
    try:
        conf = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a valid data config ({e})") from None
    if not isinstance(conf, dict):
        raise DataError(f"{path}: expected a table of settings")
    unknown = set(conf) - _TABLE_KEYS
    if unknown:
        raise DataError(f"{path}: unknown key(s) {sorted(unknown)}; expected some of {sorted(_TABLE_KEYS)}")
    for key in ("train", "text_column", "label_column"):
        if key not in conf:
            raise DataError(f"{path}: missing key {key!r}")
    for key in ("train", "dev", "test"):
        if conf.get(key) is not None:
            conf[key] = path.parent / conf[key]
    return load_table(**conf)
