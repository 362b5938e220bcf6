"""The benchmark corpora: CEBaB (local files or the hub) and IMDB-C, and where the shared data lives."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from .reading import Columns, Normaliser, iter_rows, parse_rows
from .schema import SENTIMENT, UNKNOWN, Dataset, Schema, Split

CEBAB_CONCEPTS = ("food", "ambiance", "service", "noise")
CEBAB_TEST_ROWS = 1685  # the paper's Table 1 test size: the first 1685 rows of test.json
IMDBC_CONCEPTS = ("acting", "storyline", "emotional arousal", "cinematography")
DATA_DIR_ENV = "SPARSECBM_DATA_DIR"


# --------------------------------------------------------------------------- locating shared data


def find_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding ``cebab/`` and ``imdbc/``.

    Looked for in order: the argument, ``$SPARSECBM_DATA_DIR``, ``../shared/data``
    from the working directory and from this source tree.
    """
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"data folder {path}: no such folder (data_dir, --data-dir on the command line)")
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
        + f"); name it with data_dir=... (--data-dir on the command line) or set {DATA_DIR_ENV}"
    )


# --------------------------------------------------------------------------- the data sets


def _cebab_from_records(
    records_by_split: Mapping[str, tuple[Path, list[tuple[int, dict]]]], test_rows: int | None
) -> dict[str, Split]:
    schema = _CEBAB_SCHEMA
    cols = Columns(
        text="description",
        label="review_majority",
        concepts=tuple(f"{c}_aspect_majority" for c in CEBAB_CONCEPTS),
        concept_aliases={"": UNKNOWN, "no majority": UNKNOWN},
        drop_labels=("no majority",),
        group="original_id",
    )
    norm = Normaliser()
    splits = {}
    for name, (path, rows) in records_by_split.items():
        if name == "test" and test_rows is not None:
            rows = rows[:test_rows]
        splits[name] = parse_rows(path, rows, cols, schema, norm)
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
            records[split] = (path, list(iter_rows(path)))
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
    cols = Columns(text="review", label="sentiment", concepts=IMDBC_CONCEPTS)
    norm = Normaliser()
    splits = {s: parse_rows(p, list(iter_rows(p)), cols, schema, norm) for s, p in files.items()}
    norm.report()
    return Dataset("imdbc", schema, splits, {"name": "imdbc"})
