"""Concept models trained on annotated concepts, scored against CEBaB's *human* test labels.

    python -m benchmarks.annotated_training                          # CBM, MiniLM annotator, seed 0
    python -m benchmarks.annotated_training --models cbm sparsecbm --seeds 0 1 2
    python -m benchmarks.annotated_training --models sparsecbm --concepts annotated   # the annotated row only

The training and dev splits of CEBaB are annotated by ``sparsecbm annotate`` (examples/cebab-concepts.toml,
no labelled row; their human concept columns are never read), written as CSV files with the task label,
and a model is trained on them with today's default recipe. The same model is trained on the same rows
with the human concept labels (``supervised``), and both are scored on the test split with its human
concept labels. Every run is the real CLI in a child process (harness.run_one); the data files and
models are under runs/annotated_training/. Results: annotated_training.json / .md (resumable: a stored
run is skipped).
"""

from __future__ import annotations

import argparse
import csv
import functools
import statistics
from pathlib import Path

from benchmarks.harness import run_missing, run_one, table_head
from sparsecbm.annotation import annotate
from sparsecbm.data import load_dataset
from sparsecbm.files import atomic_path

RUNS = Path("runs/annotated_training")
CONCEPTS = "examples/cebab-concepts.toml"


def write_split(path: Path, split, schema, concepts: dict[str, list[str]] | None) -> Path:
    """A CSV of a split's texts and task labels, with the given concept columns (None: the human ones)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", *schema.concepts])
        for i, text in enumerate(split.texts):
            values = ([concepts[c][i] for c in schema.concepts] if concepts is not None else
                      [schema.concept_values[k][split.concepts[i, k]] for k in range(len(schema.concepts))])
            w.writerow([text, schema.labels[split.labels[i]], *values])
    return path


@functools.cache
def data_files(annotator: str) -> dict[str, Path]:
    """The CSV files: annotated train/dev, human train/dev, and the human test split."""
    data = load_dataset("cebab")
    folder = RUNS / "data"
    files = {"test": write_split(folder / "test.csv", data["test"], data.schema, None)}
    for split in ("train", "dev"):
        files[f"human-{split}"] = write_split(folder / f"human-{split}.csv", data[split], data.schema, None)
        ann = annotate(list(data[split].texts), CONCEPTS, annotator=annotator, progress=True)
        columns = {name: ann.column(k) for k, name in enumerate(ann.concept_file.names)}
        files[f"{annotator}-{split}"] = write_split(folder / f"{annotator}-{split}.csv", data[split], data.schema, columns)
    return files


def run_name(model: str, concepts: str, annotator: str, seed: int) -> str:
    return f"{model}-{'human' if concepts == 'supervised' else annotator}-s{seed}"


def run_row(model: str, concepts: str, annotator: str, seed: int) -> dict:
    files = data_files(annotator)
    source = "human" if concepts == "supervised" else annotator
    args = ["--data", str(files[f"{source}-train"]), "--dev", str(files[f"{source}-dev"]), "--test", str(files["test"]),
            "--text-column", "text", "--label-column", "label", "--concept-columns", "food,ambiance,service,noise",
            "--labels", "1,2,3,4,5", "--model", model, "--seed", str(seed)]
    dense = RUNS / run_name("cbm", concepts, annotator, seed)
    if model == "sparsecbm" and (dense / "config.json").exists():
        args += ["--init-from", str(dense)]  # the CBM row of the same labels and seed is its dense phase
    record = run_one(run_name(model, concepts, annotator, seed), args, RUNS)
    record.update(model=model, concepts=concepts, annotator=annotator, seed=seed)
    return record


def markdown(results: dict) -> str:
    lines = table_head(
        "CEBaB test (1,685 reviews, human concept labels), accuracy in %, mean over seeds: models trained on "
        "concepts annotated by `sparsecbm annotate` (no human concept label seen) against the same model trained "
        "on the human labels of the same rows. Command: `python -m benchmarks.annotated_training`.",
        ["model", "training concepts", "seeds", "task", "concepts (vs human)", "food", "ambiance", "service", "noise"])
    groups: dict[tuple, list[dict]] = {}
    for r in results.values():
        groups.setdefault((r["model"], r["concepts"], r["annotator"]), []).append(r)
    for (model, concepts, annotator), runs in groups.items():
        def pct(*path: str) -> str:
            values = []
            for r in runs:
                v = r["test"]
                for key in path:
                    v = v[key]
                values.append(v)
            return f"{100 * statistics.mean(values):.1f}"
        what = "human" if concepts == "supervised" else f"annotated ({annotator}, zero-label)"
        lines.append(f"| {model} | {what} | {len(runs)} | {pct('task', 'accuracy')} | {pct('concepts', 'mean', 'accuracy')} | "
                     + " | ".join(pct("concepts", c, "accuracy") for c in ("food", "ambiance", "service", "noise")) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["cbm"], choices=("cbm", "sparsecbm"))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--annotator", default="minilm")
    parser.add_argument("--concepts", nargs="*", default=["annotated", "supervised"], choices=("annotated", "supervised"),
                        help="which concept labels to train on (default both)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    planned = {run_name(model, concepts, args.annotator, seed): functools.partial(run_row, model, concepts, args.annotator, seed)
               for seed in args.seeds for model in args.models for concepts in args.concepts}
    run_missing(Path(args.out), "annotated_training", planned, markdown)


if __name__ == "__main__":
    main()
