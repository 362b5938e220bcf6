"""Concept annotation without human concept labels, scored against CEBaB's human labels.

    python -m benchmarks.annotation                       # MiniLM (the default annotator)
    python -m benchmarks.annotation --annotators mpnet    # all-mpnet-base-v2 (after make mpnet)
    python -m benchmarks.annotation --annotators minilm smollm2 minilm+smollm2 --rows 200 --labelled-rows 50 100

For each annotator: the zero-label agreement on the test split (the concept file
examples/cebab-concepts.toml, no labelled row); calibrated agreement on the test split with N
labelled rows drawn at random from dev (N in --labelled-rows, --draws draws each, mean +- std);
and the wall time of ``annotate`` on the first 1,000 test reviews, model load included. ``--rows N``
keeps the first N test and N dev reviews (the decoder needs about a second a review). Agreement:
the share of (review, concept) cells equal to the human majority label (unknown included), the
mean over the 4 concepts. The task label is never read. Results: annotation.json / .md in --out;
an annotator already stored is skipped (resumable; --redo to measure it again).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import machine, sole_writer, stored_runs, table_head, write_results
from sparsecbm.annotation import annotate, read_concept_file
from sparsecbm.annotation.annotators import score_with
from sparsecbm.annotation.calibration import calibrate
from sparsecbm.data import load_dataset
from sparsecbm.files import write_text

CONCEPTS = "examples/cebab-concepts.toml"
TIMED = 1000


def agreement(names: list[np.ndarray], gold: list[np.ndarray]) -> list[float]:
    return [float(np.mean(a == b)) for a, b in zip(names, gold)]


def measure(annotator: str, labelled_rows: list[int], draws: int, rows: int | None = None) -> dict:
    data, concept_file = load_dataset("cebab"), read_concept_file(CONCEPTS)
    schema = data.schema
    order = [schema.concepts.index(c) for c in concept_file.names]

    def gold(split) -> list[np.ndarray]:
        return [np.asarray(schema.concept_values[j])[split.concepts[:, j]] for j in order]

    def names(k: int, values: np.ndarray) -> np.ndarray:
        return np.asarray(concept_file.values(k))[values]

    test, dev = data["test"].head(rows or len(data["test"])), data["dev"].head(rows or len(data["dev"]))
    timed_rows = min(TIMED, len(test))
    start = time.perf_counter()
    ann = annotate(list(test.texts[:timed_rows]), concept_file, annotator=annotator, progress=True)
    timed = time.perf_counter() - start
    # Scored together, as annotate() scores a file with its labelled rows (the same medians).
    both = score_with(list(test.texts) + list(dev.texts), concept_file, annotator, progress=True)
    test_scores = [s.take(slice(0, len(test))) for s in both]
    dev_scores = [s.take(slice(len(test), None)) for s in both]
    mentioned = [spec.mentioned for spec in concept_file.concepts]
    test_gold, dev_gold = gold(test), gold(dev)
    train = data["train"].concepts
    majority = [np.asarray(schema.concept_values[j])[np.bincount(train[:, j]).argmax()] for j in order]
    record = {
        "annotator": annotator, "concepts": list(concept_file.names), "test_rows": len(test),
        "zero_label": agreement([names(k, s.values) for k, s in enumerate(test_scores)], test_gold),
        "majority": agreement([np.full(len(test), m) for m in majority], test_gold),
        "timed_rows": timed_rows, "seconds": round(timed, 1),
        # The values are read against medians over the texts scored together: the share of the first
        # 1,000 reviews' cells that differ between annotating them alone and with the rest of test and dev.
        "cells_changed_by_other_texts": float(np.mean([ann.values[:, k] != test_scores[k].values[:timed_rows]
                                                       for k in range(len(order))])),
        "calibrated": {},
        "machine": machine(),
    }
    for n in labelled_rows:
        runs = []
        for draw in range(draws):
            rows = np.random.default_rng(draw).choice(len(dev), size=n, replace=False)
            labels = np.stack([[concept_file.values(k).index(v) for v in dev_gold[k][rows]]
                               for k in range(len(order))], 1)
            # annotate()'s rule: per concept, whichever held out best on the N rows
            predicted, _, chosen = calibrate([s.take(rows) for s in dev_scores], labels, test_scores, mentioned, seed=draw)
            runs.append({"draw": draw, "test": [float(np.mean(names(k, predicted[:, k]) == test_gold[k]))
                                                for k in range(len(order))],
                         "cross_validated": [max(a for a in (c["calibrated_cross_validated"],
                                                             c["clause_polarity_cross_validated"], c["zero_label"])
                                                 if a is not None) for c in chosen.values()],
                         "calibrated_used": [c["used"] != "zero-label" for c in chosen.values()],
                         "used": [c["used"] for c in chosen.values()]})
        record["calibrated"][str(n)] = runs
    return record


def _pct(values: list[float]) -> str:
    return f"{100 * statistics.mean(values):.1f}"


def markdown(results: dict) -> str:
    lines = table_head(
        "CEBaB test (all 1,685 reviews unless the annotator says), agreement with the human concept labels in % "
        "(unknown counts as a value): "
        "per concept, then the mean. Calibrated rows: N labelled dev rows drawn at random, the mean over draws "
        "(+- std of the mean agreement). As `annotate` does, each concept keeps whichever of the zero-label rule, "
        "the feature classifier and the clause-polarity classifier agrees best with the N rows (the classifiers "
        "5-fold cross-validated); `cv` is that best agreement, which is what a user sees, and `calibrated` counts "
        "the concepts x draws that took a classifier. Command: `python -m benchmarks.annotation --annotators NAME`.",
        ["annotator", "labelled rows", "food", "ambiance", "service", "noise", "mean", "cv (on the N rows)",
         "calibrated"])
    for key, r in results.items():
        name = key if r["test_rows"] == 1685 else f"{key.split('@')[0]} (first {r['test_rows']} test reviews)"
        lines.append(f"| {name} | none (always the training majority) | "
                     + " | ".join(f"{100 * a:.1f}" for a in r["majority"]) + f" | {_pct(r['majority'])} | - | - |")
        lines.append(f"| {name} | 0 (zero-label) | " + " | ".join(f"{100 * a:.1f}" for a in r["zero_label"])
                     + f" | {_pct(r['zero_label'])} | - | - |")
        for n, runs in r["calibrated"].items():
            per = [statistics.mean(run["test"][k] for run in runs) for k in range(len(r["concepts"]))]
            means = [statistics.mean(run["test"]) for run in runs]
            spread = f" +- {100 * statistics.stdev(means):.1f}" if len(means) > 1 else ""
            cv = [statistics.mean(c for c in run["cross_validated"] if c is not None) for run in runs]
            lines.append(f"| {name} | {n} ({len(runs)} draws) | " + " | ".join(f"{100 * a:.1f}" for a in per)
                         + f" | {_pct(means)}{spread} | {_pct(cv)} "
                         f"| {sum(sum(run['calibrated_used']) for run in runs)} / {sum(map(len, (run['test'] for run in runs)))} |")
    lines += ["", "Wall time of `annotate` on the first 1,000 test reviews, or all those measured (model load included):", ""]
    lines += [f"- {name}: {r.get('seconds', r.get('seconds_for_1000'))} s for {r.get('timed_rows', TIMED)} reviews "
              f"({r['machine']})" for name, r in results.items()]
    lines += ["", "Cells of those reviews whose value differs between annotating them alone and together with the "
              "rest of test and dev (values are read against medians over the texts scored together):", ""]
    lines += [f"- {name}: {100 * r['cells_changed_by_other_texts']:.1f} %" for name, r in results.items()
              if "cells_changed_by_other_texts" in r]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotators", nargs="*", default=["minilm"])
    parser.add_argument("--labelled-rows", nargs="*", type=int, default=[50, 100, 200])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--redo", action="store_true")
    parser.add_argument("--rows", type=int, help="the first N test and N dev reviews only (default: all)")
    args = parser.parse_args()
    path = Path(args.out) / "annotation.json"
    with sole_writer(path):
        results = stored_runs(path)
        for annotator in args.annotators:
            key = annotator if args.rows is None else f"{annotator}@{args.rows}"  # row-limited runs apart
            if key in results and not args.redo:
                continue
            results[key] = measure(annotator, args.labelled_rows, args.draws, args.rows)
            write_results(path, {"runs": results})
            write_text(path.with_suffix(".md"), markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
