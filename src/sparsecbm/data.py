"""Concept-annotated text classification data: CEBaB, IMDB-C and the user's own files.

Every loader returns a :class:`Dataset`: a :class:`Schema` (label values, concept
names and each concept's values) and named :class:`Split` objects holding texts,
label indices and an ``(n, K)`` array of concept indices.

Bad input raises :class:`DataError` (a ``ValueError``) whose message names the
file, the row and the column. Unambiguous mess (stray spaces, letter case, the
"Unkown" misspelling) is normalised and counted, never silently guessed.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import random
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
SENTIMENT = ("Negative", "Positive", UNKNOWN)  # index order of METHOD.md §1
# Misspellings seen in the real files, mapped only when the target value is declared.
_TYPOS = {"unkown": UNKNOWN, "unknwon": UNKNOWN, "unknow": UNKNOWN}

CEBAB_CONCEPTS = ("food", "ambiance", "service", "noise")
CEBAB_TEST_ROWS = 1685  # the paper's Table 1 test size: the first 1685 rows of test.json
IMDBC_CONCEPTS = ("acting", "storyline", "emotional arousal", "cinematography")
DATA_DIR_ENV = "SPARSECBM_DATA_DIR"


class DataError(ValueError):
    """Malformed or inconsistent input data; the message names file, row and column."""


@dataclass(frozen=True)
class Schema:
    """Label values, concept names and each concept's values (index = position)."""

    labels: tuple[str, ...]
    concepts: tuple[str, ...] = ()
    concept_values: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if len(self.labels) < 2:
            raise DataError(f"a task needs at least 2 label values, got {list(self.labels)}")
        if len(self.concepts) != len(self.concept_values):
            raise DataError(
                f"{len(self.concepts)} concepts but {len(self.concept_values)} value lists"
            )
        for name, values in zip(self.concepts, self.concept_values):
            if len(values) < 2:
                raise DataError(f"concept {name!r} needs at least 2 values, got {list(values)}")
        if len(set(self.concepts)) != len(self.concepts):
            raise DataError(f"concept names must be unique, got {list(self.concepts)}")

    @property
    def num_concept_values(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.concept_values)

    def concept_index(self, concept: str, value: str) -> tuple[int, int]:
        """(k, value index), or a ValueError naming the concept or value and what exists."""
        if concept not in self.concepts:
            raise ValueError(f"unknown concept {concept!r}; the model's concepts are {list(self.concepts)}")
        k = self.concepts.index(concept)
        values = self.concept_values[k]
        if value not in values:
            raise ValueError(f"unknown value {value!r} for concept {concept!r}; its values are {list(values)}")
        return k, values.index(value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "concepts": {c: list(v) for c, v in zip(self.concepts, self.concept_values)},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Schema":
        concepts = d.get("concepts", {})
        return cls(
            labels=tuple(d["labels"]),
            concepts=tuple(concepts),
            concept_values=tuple(tuple(v) for v in concepts.values()),
        )


@dataclass(frozen=True)
class Split:
    """One split: ``texts[i]`` has label ``labels[i]`` and concept values ``concepts[i, k]``."""

    texts: tuple[str, ...]
    labels: np.ndarray  # (n,) int64 label indices
    concepts: np.ndarray  # (n, K) int64 concept value indices
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int | None) -> "Split":
        """The first ``n`` examples (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return Split(self.texts[:n], self.labels[:n], self.concepts[:n], self.source)

    def sample(self, n: int | None, seed: int) -> "Split":
        """``n`` examples drawn without replacement (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return Split(
            tuple(self.texts[i] for i in idx), self.labels[idx], self.concepts[idx], self.source
        )


@dataclass(frozen=True)
class Dataset:
    """A named data set: its schema and its splits (``train``, ``dev``, ``test``)."""

    name: str
    schema: Schema
    splits: dict[str, Split]
    spec: dict[str, Any] = field(default_factory=dict)  # how to load it again (saved with models)

    def __getitem__(self, split: str) -> Split:
        if split not in self.splits:
            raise DataError(
                f"data set {self.name!r} has no split {split!r}; it has {sorted(self.splits)}"
            )
        return self.splits[split]


# --------------------------------------------------------------------------- values


class _Normaliser:
    """Maps raw cells onto declared values and counts what it had to tidy."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str, str]] = Counter()

    @staticmethod
    def key(raw: str) -> str:
        k = " ".join(raw.split()).casefold()
        return _TYPOS.get(k, k)

    def __call__(self, raw: str, allowed: Sequence[str], where: tuple[str, str]) -> str | None:
        if raw in allowed:
            return raw
        by_key = {self.key(v): v for v in allowed}
        value = by_key.get(self.key(raw))
        if value is not None:
            self.counts[(where[0], where[1], raw, value)] += 1
        return value

    def report(self) -> None:
        for (file, column, raw, value), n in sorted(self.counts.items()):
            log.info("%s: normalised %d cell(s) in column %r: %r -> %r", file, n, column, raw, value)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _infer_values(cells: Iterable[str]) -> tuple[str, ...]:
    """Distinct values of a column, spellings that differ only in case/space/typo merged."""
    spellings: dict[str, Counter[str]] = {}
    for cell in cells:
        cell = " ".join(cell.split())
        if cell:
            spellings.setdefault(_Normaliser.key(cell), Counter())[cell] += 1
    values = [c.most_common(1)[0][0] for c in spellings.values()]
    if all(v.lstrip("-").isdigit() for v in values):
        return tuple(sorted(values, key=int))
    return tuple(sorted(values))


# --------------------------------------------------------------------------- reading files


def _read_text(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a data file")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); "
            "re-save the file as UTF-8"
        ) from None


def _iter_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number as a person would count it, record) for CSV/TSV/JSONL/JSON files."""
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        if not reader.fieldnames:
            raise DataError(f"{path}: empty file, expected a header row")
        seen, dupes = set(), []
        for name in reader.fieldnames:
            if name in seen and name not in dupes:
                dupes.append(name)
            seen.add(name)
        if dupes:  # DictReader would silently keep the last one's cells
            raise DataError(f"{path}: row 1: duplicated column name(s) {dupes}; rename or remove the repeats")
        # Spreadsheet numbering (a quoted cell may span lines): the header is
        # row 1, the first example row 2.
        for row, record in enumerate(reader, start=2):
            if None in record:
                raise DataError(
                    f"{path}: row {row}: more cells than the {len(reader.fieldnames)} "
                    "header columns (an unquoted comma?)"
                )
            yield row, record
    elif suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}: line {lineno}: expected a JSON object")
            yield lineno, record
    elif suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(records, list):
            raise DataError(f"{path}: expected a JSON list of objects")
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise DataError(f"{path}: item {i}: expected a JSON object")
            yield i, record
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl or .json")


def _row_name(path: Path, row: int) -> str:
    return f"{path}: {'item' if path.suffix.lower() == '.json' else 'row' if path.suffix.lower() in ('.csv', '.tsv') else 'line'} {row}"


def _cell(record: Mapping[str, Any], column: str, path: Path, row: int) -> str:
    if column not in record:
        raise DataError(f"{_row_name(path, row)}: no column {column!r}; it has {sorted(record)}")
    value = record[column]
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)):
        raise DataError(f"{_row_name(path, row)}: column {column!r}: expected text, got {value!r}")
    return str(value)


def _check_columns(path: Path, rows: list[tuple[int, dict]], columns: Sequence[str]) -> None:
    if not rows:
        raise DataError(f"{path}: no examples")
    present = set(rows[0][1])
    missing = [c for c in columns if c not in present]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {sorted(present)}")


@dataclass(frozen=True)
class _Columns:
    text: str
    label: str
    concepts: tuple[str, ...]  # source columns, in schema order
    # Cells that mean "unknown" for a concept (CEBaB: "" and "no majority").
    concept_aliases: Mapping[str, str] = field(default_factory=dict)
    drop_labels: tuple[str, ...] = ()  # rows with these labels are dropped (CEBaB train)


def _parse(
    path: Path,
    rows: list[tuple[int, dict]],
    cols: _Columns,
    schema: Schema,
    norm: _Normaliser,
) -> Split:
    _check_columns(path, rows, (cols.text, cols.label, *cols.concepts))
    texts, labels, concepts = [], [], []
    dropped = 0
    for row, record in rows:
        where = _row_name(path, row)
        label_raw = _cell(record, cols.label, path, row)
        if label_raw.strip() in cols.drop_labels:
            dropped += 1
            continue
        text = _cell(record, cols.text, path, row).strip()
        if not text:
            raise DataError(f"{where}: column {cols.text!r}: empty text")
        label = norm(label_raw, schema.labels, (str(path), cols.label))
        if label is None:
            raise DataError(
                f"{where}: column {cols.label!r}: label {label_raw!r} is not one of {list(schema.labels)}"
            )
        values = []
        for column, allowed in zip(cols.concepts, schema.concept_values):
            raw = _cell(record, column, path, row)
            raw = cols.concept_aliases.get(raw.strip(), raw)
            value = norm(raw, allowed, (str(path), column))
            if value is None:
                hint = " (empty cell)" if not raw.strip() else ""
                raise DataError(
                    f"{where}: column {column!r}: value {raw!r}{hint} is not one of {list(allowed)}"
                )
            values.append(allowed.index(value))
        texts.append(text)
        labels.append(schema.labels.index(label))
        concepts.append(values)
    if dropped:
        log.info("%s: dropped %d row(s) labelled %s", path, dropped, " / ".join(map(repr, cols.drop_labels)))
    if not texts:
        raise DataError(f"{path}: no usable examples")
    return Split(
        texts=tuple(texts),
        labels=np.asarray(labels, dtype=np.int64),
        concepts=np.asarray(concepts, dtype=np.int64).reshape(len(texts), len(cols.concepts)),
        source=str(path),
    )


# --------------------------------------------------------------------------- locating shared data


def find_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding ``cebab/`` and ``imdbc/``.

    Looked for in order: the argument, ``$SPARSECBM_DATA_DIR``, ``../shared/data``
    from the working directory and from this source tree.
    """
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"--data-dir {path}: no such folder")
        return path
    candidates = []
    if os.environ.get(DATA_DIR_ENV):
        candidates.append(Path(os.environ[DATA_DIR_ENV]).expanduser())
    candidates.append(Path.cwd().parent / "shared" / "data")
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data")
    for path in candidates:
        if (path / "cebab").is_dir() or (path / "imdbc").is_dir():
            return path
    raise FileNotFoundError(
        "could not find the shared data folder (looked in "
        + ", ".join(str(c) for c in candidates)
        + f"); pass --data-dir or set {DATA_DIR_ENV}"
    )


# --------------------------------------------------------------------------- the data sets


def _cebab_from_records(
    records_by_split: Mapping[str, tuple[Path, list[tuple[int, dict]]]], test_rows: int | None
) -> dict[str, Split]:
    schema = _CEBAB_SCHEMA
    cols = _Columns(
        text="description",
        label="review_majority",
        concepts=tuple(f"{c}_aspect_majority" for c in CEBAB_CONCEPTS),
        concept_aliases={"": UNKNOWN, "no majority": UNKNOWN},
        drop_labels=("no majority",),
    )
    norm = _Normaliser()
    splits = {}
    for name, (path, rows) in records_by_split.items():
        if name == "test" and test_rows is not None:
            rows = rows[:test_rows]
        splits[name] = _parse(path, rows, cols, schema, norm)
    norm.report()
    return splits


_CEBAB_SCHEMA = Schema(
    labels=("1", "2", "3", "4", "5"),
    concepts=CEBAB_CONCEPTS,
    concept_values=(SENTIMENT,) * len(CEBAB_CONCEPTS),
)


def load_cebab(
    data_dir: str | os.PathLike | None = None,
    *,
    test_rows: int | None = CEBAB_TEST_ROWS,
    source: str = "local",
) -> Dataset:
    """CEBaB with the paper's protocol.

    Training rows without a majority rating are dropped; the label is the rating
    ("1".."5"); each concept is Negative/Positive/unknown with "" and "no majority"
    read as unknown; the test split is the first ``test_rows`` rows (1685 as in the
    paper; ``None`` keeps all 1689). ``source="hub"`` reads ``CEBaB/CEBaB`` through
    the ``datasets`` library instead of local files (needs internet).
    """
    if source == "hub":
        records = _cebab_hub_records()
    elif source == "local":
        folder = find_data_dir(data_dir) / "cebab"
        files = {"train": "train_exclusive.json", "dev": "dev.json", "test": "test.json"}
        records = {}
        for split, name in files.items():
            path = folder / name
            records[split] = (path, list(_iter_rows(path)))
    else:
        raise ValueError(f"source must be 'local' or 'hub', got {source!r}")
    splits = _cebab_from_records(records, test_rows)
    spec = {"name": "cebab", "test_rows": test_rows, "source": source}
    return Dataset("cebab", _CEBAB_SCHEMA, splits, spec)


def _cebab_hub_records() -> dict[str, tuple[Path, list[tuple[int, dict]]]]:
    """CEBaB from the Hugging Face hub (only for users with internet; untested here)."""
    try:
        import datasets  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise ValueError(
            "reading CEBaB from the hub needs the 'datasets' package: pip install 'sparsecbm[hub]'"
        ) from None
    hub = datasets.load_dataset("CEBaB/CEBaB")
    names = {"train": "train_exclusive", "dev": "validation", "test": "test"}
    return {
        split: (Path(f"hub:CEBaB/CEBaB/{name}"), list(enumerate(hub[name])))
        for split, name in names.items()
    }


def load_imdbc(data_dir: str | os.PathLike | None = None) -> Dataset:
    """IMDB-C's manually annotated split with its four human-labelled concepts."""
    folder = find_data_dir(data_dir) / "imdbc"
    files = {
        "train": folder / "IMDB-train-manual.csv",
        "dev": folder / "IMDB-dev-manual.csv",
        "test": folder / "IMDB-test-manual.csv",
    }
    schema = Schema(
        labels=("Negative", "Positive"),
        concepts=IMDBC_CONCEPTS,
        concept_values=(SENTIMENT,) * len(IMDBC_CONCEPTS),
    )
    cols = _Columns(text="review", label="sentiment", concepts=IMDBC_CONCEPTS)
    norm = _Normaliser()
    splits = {s: _parse(p, list(_iter_rows(p)), cols, schema, norm) for s, p in files.items()}
    norm.report()
    return Dataset("imdbc", schema, splits, {"name": "imdbc"})


def load_table(
    train: str | os.PathLike,
    *,
    text_column: str,
    label_column: str,
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
        raise ValueError("text_column and label_column are required for a data file")
    concept_columns = tuple(concept_columns)
    if len(set(concept_columns)) != len(concept_columns):
        raise ValueError(f"concept columns repeat: {list(concept_columns)}")
    if not 0.0 < dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    paths = {"train": Path(train)}
    for split, path in (("dev", dev), ("test", test)):
        if path is not None:
            paths[split] = Path(path)
    rows = {split: list(_iter_rows(path)) for split, path in paths.items()}
    train_path, train_rows = paths["train"], rows["train"]
    _check_columns(train_path, train_rows, (text_column, label_column, *concept_columns))

    declared = dict(concept_values or {})
    unknown = set(declared) - set(concept_columns)
    if unknown:
        raise ValueError(f"concept_values names columns that are not concept columns: {sorted(unknown)}")
    label_set = tuple(labels) if labels else _infer_values(
        _cell(r, label_column, train_path, i) for i, r in train_rows
    )
    value_sets = tuple(
        tuple(declared[c]) if c in declared
        else _infer_values(_cell(r, c, train_path, i) for i, r in train_rows)
        for c in concept_columns
    )
    try:
        schema = Schema(labels=label_set, concepts=concept_columns, concept_values=value_sets)
    except DataError as e:
        raise DataError(f"{train_path}: {e}") from None

    cols = _Columns(text=text_column, label=label_column, concepts=concept_columns)
    norm = _Normaliser()
    splits = {s: _parse(paths[s], r, cols, schema, norm) for s, r in rows.items()}
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
    return Dataset(train_path.stem, schema, splits, spec)


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

    def take(idx: np.ndarray) -> Split:
        return Split(tuple(split.texts[i] for i in idx), split.labels[idx], split.concepts[idx], split.source)

    return take(train_idx), take(dev_idx)


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
    text = _read_text(path)
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
    if path.suffix.lower() == ".toml" or (path.suffix.lower() == ".json" and _is_config(path)):
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


def _is_config(path: Path) -> bool:
    try:
        head = _read_text(path).lstrip()[:1]
    except (OSError, DataError):
        return False
    return head == "{"


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
    raise ValueError(f"cannot reload data from spec {dict(spec, name=name)}; pass --data")


TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


def read_texts(path: str | os.PathLike, text_column: str | None = None, *,
               skip_blank: bool = False) -> tuple[list[str], list[int], list[int]]:
    """(texts, where each was, the blank ones skipped) from a plain text file (one text
    a line; positions are line numbers) or from one column (``text_column``, default
    ``text``) of a CSV/TSV/JSONL/JSON table (positions are rows). A blank text is an
    error naming its line or row unless ``skip_blank``; so is a file with no text."""
    path = Path(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        rows = list(_iter_rows(path))
        if not rows:
            raise DataError(f"{path}: the file has no rows (only a header, or nothing)")
        column = text_column or "text"
        if column not in rows[0][1]:
            raise DataError(f"{path}: no column {column!r}; it has {sorted(rows[0][1])} (choose one with --text-column)")
        cells = [(row, _cell(record, column, path, row)) for row, record in rows]
        what = f": column {column!r}"
    else:
        if text_column:
            raise DataError(f"{path}: a text column applies to a table (.csv, .tsv, .jsonl, .json), "
                            "not to a file of lines")
        content = _read_text(path)
        if not content.strip():
            raise DataError(f"{path}: the file is empty" if not content else f"{path}: only blank lines")
        cells = list(enumerate(content.splitlines(), start=1))
        what = ""
    texts, numbers, skipped = [], [], []
    for number, text in cells:
        if text.strip():
            texts.append(text)
            numbers.append(number)
        elif skip_blank:
            skipped.append(number)
        else:
            raise DataError(f"{_row_name(path, number)}{what} is blank; remove it or pass --skip-blank")
    return texts, numbers, skipped


def read_corrections(
    path: str | os.PathLike, *, value: str | None = None, text_column: str = "text", value_column: str = "value",
    label_column: str = "label",
) -> tuple[list[str], list[str], list[str] | None]:
    """(texts, values, labels or None) from a CSV/TSV/JSONL/JSON file of corrections:
    a ``text`` column, a ``value`` column (or one ``value`` for every row) and an
    optional ``label`` column. A blank text or value is an error naming its row."""
    path = Path(path)
    rows = list(_iter_rows(path))
    _check_columns(path, rows, [text_column] + ([] if value is not None else [value_column]))
    has_labels = label_column in rows[0][1]
    texts, values, labels = [], [], []
    for row, record in rows:
        text = _cell(record, text_column, path, row).strip()
        given = value if value is not None else _cell(record, value_column, path, row).strip()
        for column, cell in ((text_column, text), (value_column, given)):
            if not cell:
                raise DataError(f"{_row_name(path, row)}: column {column!r} is empty")
        texts.append(text)
        values.append(given)
        if has_labels:
            label = _cell(record, label_column, path, row).strip()
            if not label:
                raise DataError(f"{_row_name(path, row)}: column {label_column!r} is empty (leave the column out if labels are unknown)")
            labels.append(label)
    return texts, values, labels if has_labels else None
