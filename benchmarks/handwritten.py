"""What a trained CEBaB model does on 20 restaurant reviews written for this check (not from CEBaB).

benchmarks/data/handwritten_reviews.csv holds the reviews with the stars and
concept values their author meant. Prints (and saves to
benchmarks/results/handwritten.md / .json) each review's true and predicted
stars and concepts, and the accuracies.

    python -m benchmarks.handwritten [--model runs/pipeline/cebab-sparsecbm]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import sparsecbm
from benchmarks.harness import write_results
from sparsecbm.files import write_text

SHORT = {"Negative": "-", "Positive": "+", "unknown": "?"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/pipeline/cebab-sparsecbm")
    parser.add_argument("--reviews", default="benchmarks/data/handwritten_reviews.csv")
    parser.add_argument("--out", default="benchmarks/results/handwritten")
    args = parser.parse_args()
    clf = sparsecbm.load(args.model)
    with open(args.reviews, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    preds = clf.predict([r["text"] for r in rows])
    concepts = list(clf.schema.concepts)
    lines = ["| review | stars (true / predicted) | " + " | ".join(concepts) + " |",
             "|---|---|" + "---|" * len(concepts)]
    right = {"stars": 0, "within_one_star": 0, **{c: 0 for c in concepts}}
    records = []
    for r, p in zip(rows, preds):
        right["stars"] += p.label == r["stars"]
        right["within_one_star"] += abs(int(p.label) - int(r["stars"])) <= 1
        cells = []
        for c in concepts:
            got = p.concepts[c].value
            right[c] += got == r[c]
            cells.append(f"{SHORT[r[c]]} / {SHORT[got]}" + ("" if got == r[c] else " ✗"))
        lines.append(f"| {r['text']} | {r['stars']} / {p.label} | " + " | ".join(cells) + " |")
        records.append({"text": r["text"], "true": {k: r[k] for k in ("stars", *concepts)}, "predicted": p.to_dict()})
    n = len(rows)
    summary = {k: v / n for k, v in right.items()}
    lines.append("")
    lines.append(f"{n} reviews: stars exact {right['stars']}/{n}, within one star {right['within_one_star']}/{n}; "
                 + ", ".join(f"{c} {right[c]}/{n}" for c in concepts)
                 + " (concept cells: true / predicted; + Positive, - Negative, ? unknown).")
    text = "\n".join(lines) + "\n"
    write_text(Path(args.out + ".md"), text)
    write_results(Path(args.out + ".json"), {"model": args.model, "summary": summary, "reviews": records,
                                         "command": f"python -m benchmarks.handwritten --model {args.model}"})
    print(text)


if __name__ == "__main__":
    main()
