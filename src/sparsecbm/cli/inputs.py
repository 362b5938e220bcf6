"""What the commands share: the data, the guard, the texts to predict, and where to save."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from ..data import (
    TABLE_SUFFIXES,
    Dataset,
    Split,
    dataset_from_spec,
    is_blank,
    is_data_config,
    load_dataset,
    load_table,
    read_texts,
)
from ..interventions import Guard, Nearby
from ..pruning import PruneConfig
from ..settings import flag as spelled
from ..settings import flag_settings, from_flags
from ..training import TrainConfig

log = logging.getLogger("sparsecbm")


def load_data(args: argparse.Namespace) -> Dataset:
    name = args.data
    if name == "cebab":
        return load_dataset("cebab", data_dir=args.data_dir, test_rows=args.cebab_test_rows, source=args.data_source)
    suffix = Path(name).suffix.lower()
    is_table = suffix in TABLE_SUFFIXES and not is_data_config(name)
    if not is_table:  # imdbc, or a .toml / .json data config
        return load_dataset(name, data_dir=args.data_dir)
    for flag in ("text_column", "label_column"):
        if not getattr(args, flag):
            raise ValueError(f"--data {name}: a data file needs --{flag.replace('_', '-')}")
    return load_dataset(
        name, text_column=args.text_column, label_column=args.label_column,
        concept_columns=args.concept_columns, labels=args.labels, dev=args.dev, test=args.test,
    )


def recorded_data(args: argparse.Namespace, clf) -> Dataset:
    """--data when given, else the data set the model was trained on (recorded in its config.json)."""
    if args.data:
        return load_data(args)
    try:
        return dataset_from_spec(clf.data_spec, data_dir=args.data_dir)
    except FileNotFoundError as e:
        where = clf.path / "config.json" if clf.path else "the model's config"
        raise FileNotFoundError(f"the data recorded in {where} is missing ({e}); pass --data (and its column "
                                "flags) to say where it is now") from None


def split_from_spec(flag: str, spec: str, args: argparse.Namespace, clf, dataset: Dataset | None) -> Split:
    """SPLIT or SPLIT:N (its first N rows) of --data, else of the data the model was trained on."""
    name, _, n = spec.partition(":")
    dataset = dataset if dataset is not None else recorded_data(args, clf)
    if name not in dataset.splits:
        raise ValueError(f"{flag} {spec!r}: neither a file nor a split of {dataset.name!r} "
                         f"({sorted(dataset.splits)}, optionally :N)")
    if n and not (n.isdigit() and int(n) > 0):
        raise ValueError(f"{flag} {spec!r}: N must be a whole number of at least 1, got {n!r}")
    return dataset[name].head(int(n) if n else None)


def guard_from_args(args: argparse.Namespace, clf, dataset: Dataset | None) -> Guard | None:
    """The --guard set: a split of the data (SPLIT or SPLIT:N) or a file in the model's schema."""
    fields = flag_settings(Guard)
    settings = {f.name: getattr(args, f.name) for f in fields}
    if not args.guard:
        if any(settings[f.name] != f.default for f in fields):
            names = [spelled(f.name) for f in fields]
            raise ValueError(f"{', '.join(names[:-1])} and {names[-1]} apply to a --guard; name one")
        return None
    path = Path(args.guard)
    if path.exists():
        schema = clf.schema
        split = load_table(path, dev=path, text_column=args.text_column or "text",
                           label_column=args.label_column or "label", concept_columns=schema.concepts,
                           labels=schema.labels, concept_values=dict(zip(schema.concepts, schema.concept_values)))["train"]
    else:
        split = split_from_spec("--guard", args.guard, args, clf, dataset)
    return Guard(split, progress=not args.quiet, **settings)


def nearby_from_args(args: argparse.Namespace, clf, dataset: Dataset | None) -> Nearby | None:
    """--nearby: the texts whose reading of the concept an edit may change, searched for the --nearest N most like
    the corrected ones: a split of the data (SPLIT or SPLIT:N, its first N rows) or a file of texts."""
    if not args.nearby:
        return None
    path = Path(args.nearby)
    if path.exists():
        texts = read_texts(path, args.text_column, skip_blank=True)[0]
    else:
        texts = split_from_spec("--nearby", args.nearby, args, clf, dataset).texts
    if not texts:
        raise ValueError(f"--nearby {args.nearby!r}: no texts in it")
    return Nearby(texts, count=args.nearest)


def configs_from_args(args: argparse.Namespace) -> tuple[TrainConfig, PruneConfig | None]:
    train_config = from_flags(TrainConfig, args)
    return train_config, from_flags(PruneConfig, args) if train_config.model == "sparsecbm" else None


def masks_file(model_dir: str) -> Path:
    path = Path(model_dir) / "masks.safetensors"
    if not path.exists():
        raise ValueError(f"{model_dir}: no masks.safetensors (not a SparseCBM model folder)")
    return path


def predict_inputs(args: argparse.Namespace) -> tuple[list[str], list[dict[str, int]]]:
    """The texts to predict and, per text, where it came from in --file ({"line": n}
    or {"row": n}; {} for an argument)."""
    texts, where = list(args.texts), [{} for _ in args.texts]
    for i, text in enumerate(texts):
        if is_blank(text):
            raise ValueError(f"text argument {i + 1} is empty (nothing but spaces or invisible characters)")
    if args.text_column and not args.file:
        raise ValueError("--text-column names the text column of a CSV/TSV/JSONL --file")
    if args.file:
        path = Path(args.file)
        found, numbers, skipped = read_texts(path, args.text_column, skip_blank=args.skip_blank)
        unit = "row" if path.suffix.lower() in TABLE_SUFFIXES else "line"
        texts += found
        where += [{unit: n} for n in numbers]
        if skipped:
            log.warning("--file %s: skipped %d blank text(s): %s", path, len(skipped),
                        ", ".join(map(str, skipped[:20])) + (" ..." if len(skipped) > 20 else ""))
    elif args.skip_blank:
        raise ValueError("--skip-blank applies to --file")
    if not texts:
        raise ValueError("no texts given: pass them as arguments or with --file")
    return texts, where


def truncation_notice(clf, flags: Sequence[bool], names: Sequence[str]) -> None:
    """One line naming the texts that were cut to the model's maximum length."""
    cut = [name for name, flag in zip(names, flags) if flag]
    if cut:
        shown = ", ".join(cut[:10]) + (f" and {len(cut) - 10} more" if len(cut) > 10 else "")
        print(f"note: {len(cut)} text(s) longer than the model reads ({clf.max_length} tokens) were cut; "
              f"later words were not read: {shown}", file=sys.stderr)


OUTPUT_FLAGS = {"json_out": "--json", "html": "--html", "png": "--png", "jsonl": "--jsonl", "summary": "--summary"}


def check_output_files(args: argparse.Namespace) -> None:
    """Refuse at once (not after the work) an output file flag that names a folder."""
    for dest, flag in OUTPUT_FLAGS.items():
        value = getattr(args, dest, None)
        if value and Path(value).is_dir():
            raise ValueError(f"{flag} {value}: is a folder; give a file name, e.g. {Path(value) / 'out'}"
                             f"{'.json' if 'json' in flag else '.' + flag.lstrip('-')}")


def check_save_to(args: argparse.Namespace) -> None:
    """Refuse at once (not after the work) a --save-to that would replace another model."""
    out = Path(args.save_to) if args.save_to else None
    if (out is not None and (out / "config.json").exists() and not args.overwrite
            and not (Path(args.model_dir).exists() and out.samefile(args.model_dir))):
        raise ValueError(f"--save-to {out}: already holds a model; pass --overwrite or choose another folder")
