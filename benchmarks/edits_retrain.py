"""Alternative (a) to the stream of corrections: train again with the corrections added.

The stream of ``benchmarks.edits`` corrects every wrong concept of the first 300 dev reviews
in order. A user with the training recipe at hand could instead add those reviews to the
training split, with their corrected concepts (every concept then holds its true value) and
their stars, and train again, choosing epochs on the rest of dev: the dense CBM's recipe
(``--model cbm``) or the whole SparseCBM pipeline (``--model sparsecbm``, its dense phase
retrained too), with the saved model's own settings and seed. Scored as the stream is: how
many of the saved model's wrong concepts on those reviews are right after, and the test
split's concept and task accuracy before -> after, beside the training time.

    python -m benchmarks.edits_retrain --models runs/distill/cebab-kd0.5-int-s0 [--recipes cbm sparsecbm]

Every run is the real CLI in a child process (``harness.run_one``). Results in
``edits_retrain.json`` / ``.md`` (a finished run is skipped when rerun); data files and models in
runs/edits_retrain/.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

import sparsecbm
from benchmarks.annotated_training import write_split
from benchmarks.edits import STREAM_ROWS
from benchmarks.harness import run_missing, run_one, table_head
from sparsecbm.data import Split, dataset_from_spec
from sparsecbm.pruning import PruneConfig
from sparsecbm.settings import flag
from sparsecbm.training import TrainConfig

RUNS = Path("runs/edits_retrain")
SKIP = {"model", "device", "max_train", "max_eval"}  # set by the benchmark, or no part of the recipe


def recipe_flags(saved: dict, config_class: type) -> list[str]:
    """The command-line flags that give a saved run's settings of ``config_class`` (those that
    differ from today's defaults)."""
    flags = []
    for f in dataclasses.fields(config_class):
        if f.name in SKIP or f.name not in saved or not f.metadata.get("flag") or saved[f.name] == f.default:
            continue
        value = saved[f.name]
        if isinstance(value, bool):
            flags.append(flag(f.name) if value else "--no-" + f.name.replace("_", "-"))
        elif value is not None:
            flags += [flag(f.name), str(value)]
    return flags


def joined(a: Split, b: Split) -> Split:
    return Split(a.texts + b.texts, np.concatenate([a.labels, b.labels]), np.concatenate([a.concepts, b.concepts]))


def wrong_concepts(clf, split: Split) -> np.ndarray:
    """(n, K) bool: where ``clf`` misreads a concept of ``split``."""
    return clf.forward_texts(list(split.texts), progress=True, desc="stream reviews").predicted_values() != split.concepts


def run_row(model: str, recipe: str) -> dict:
    clf = sparsecbm.load(model)
    data, meta = dataset_from_spec(clf.data_spec), clf.meta
    schema, dev = data.schema, data["dev"]
    stream, rest = dev.head(STREAM_ROWS), dev.rows(range(STREAM_ROWS, len(dev)))
    folder = RUNS / "data" / data.name
    files = {name: write_split(folder / f"{name}.csv", split, schema, None)
             for name, split in (("train", joined(data["train"], stream)), ("dev", rest), ("test", data["test"]))}
    args = ["--data", str(files["train"]), "--dev", str(files["dev"]), "--test", str(files["test"]),
            "--text-column", "text", "--label-column", "label", "--concept-columns", ",".join(schema.concepts),
            "--labels", ",".join(schema.labels), "--model", recipe,
            *recipe_flags(meta["training"], TrainConfig)]
    if recipe == "sparsecbm":
        args += recipe_flags(meta.get("pruning", {}), PruneConfig)
    wrong = wrong_concepts(clf, stream)
    before = clf.evaluate(data["test"])
    name = f"{Path(model).name}-{recipe}"
    record = run_one(name, args, RUNS)
    after = wrong_concepts(sparsecbm.load(RUNS / name), stream)
    return {**record, "model": model, "recipe": recipe, "wrong_concepts": int(wrong.sum()),
            "right_after": int((wrong & ~after).sum()),
            "test_before": {"concept_accuracy": before["concepts"]["mean"]["accuracy"],
                            "task_accuracy": before["task"]["accuracy"]},
            "test_after": {"concept_accuracy": record["test"]["concepts"]["mean"]["accuracy"],
                           "task_accuracy": record["test"]["task"]["accuracy"]}}


def markdown(results: dict) -> str:
    lines = table_head("Retraining with the stream's corrections added (`python -m benchmarks.edits_retrain`): the first "
                       "300 CEBaB dev reviews with their true concepts and stars joined to the training split; test "
                       "before -> after (concept / task accuracy %).",
                       ["model", "recipe", "wrong concepts right after", "test concepts", "test task", "train min"])
    for r in results.values():
        b, a = r["test_before"], r["test_after"]
        lines.append(f"| {r['model']} | {r['recipe']} | {r['right_after']}/{r['wrong_concepts']} | "
                     f"{100 * b['concept_accuracy']:.2f} -> {100 * a['concept_accuracy']:.2f} | "
                     f"{100 * b['task_accuracy']:.2f} -> {100 * a['task_accuracy']:.2f} | "
                     f"{r['train_seconds_all_sittings'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="model folders trained on CEBaB")
    parser.add_argument("--recipes", nargs="*", choices=["cbm", "sparsecbm"], default=["cbm", "sparsecbm"])
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    planned = {f"{model}:{recipe}": (lambda m=model, r=recipe: run_row(m, r)) for model in args.models for recipe in args.recipes}
    run_missing(Path(args.out), "edits_retrain", planned, markdown)


if __name__ == "__main__":
    main()
