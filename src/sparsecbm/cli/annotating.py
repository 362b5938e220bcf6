"""``sparsecbm annotate``: concept values for a file of texts, from a concept file of example phrases."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..annotation import annotate, read_concept_file
from ..annotation.annotate import check_no_clash, check_out
from ..annotation.annotators import split_annotator
from ..data.reading import TABLE_SUFFIXES, iter_rows
from ..files import write_json

METHODS = {"zero-label": "zero-label", "calibrated": "similarity features", "clause polarity": "clause polarity"}


def default_out(data: str) -> Path:
    path = Path(data)
    suffix = path.suffix if path.suffix.lower() in TABLE_SUFFIXES else ".csv"
    return path.with_name(f"{path.stem}.annotated{suffix}")


def cmd_annotate(args: argparse.Namespace) -> None:
    split_annotator(args.annotator)  # a bad name is refused before any file is read
    out = Path(args.out) if args.out else default_out(args.data)
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out} exists; pass --overwrite to replace it, or choose another --out")
    check_out(out, "--out ")  # checked before the minutes of scoring, not after
    if out.resolve() == Path(args.data).resolve():
        raise ValueError(f"--out {out} is the input file; write the annotations to another file")
    concepts = read_concept_file(args.concepts)
    if Path(args.data).suffix.lower() in TABLE_SUFFIXES:  # a clash found now, not after the scoring
        _, first = next(iter_rows(Path(args.data)), (None, {}))
        check_no_clash(first, concepts, args.prefix, args.data)
    ann = annotate(args.data, concepts, text_column=args.text_column, annotator=args.annotator,
                   labelled=args.labelled, progress=not args.quiet)
    ann.write(out, prefix=args.prefix)
    summary = ann.summary(least=args.least)
    if args.summary:
        write_json(args.summary, summary)
    print(f"annotated {summary['rows']:,} texts with {len(summary['concepts'])} concepts ({ann.method}, "
          f"{summary['seconds']:.1f} s) -> {out}")
    for name, c in summary["concepts"].items():
        counts = ", ".join(f"{value} {n:,}" for value, n in c["counts"].items())
        print(f"  {name}: {counts} (mean confidence {c['mean_confidence']:.2f})")
    if ann.agreement:
        print("agreement with the labelled rows (classifiers: 5-fold cross-validated, never on rows they were fitted to):")
        for name, a in ann.agreement.items():
            held = ", ".join(f"{METHODS[method]} " + ("too few rows to hold out" if a[key] is None
                                                      else f"{100 * a[key]:.1f} %")
                             for method, key in (("calibrated", "calibrated_cross_validated"),
                                                 ("clause polarity", "clause_polarity_cross_validated")))
            print(f"  {name}: zero-label {100 * a['zero_label']:.1f} %, {held}; using {METHODS[a['used']]}")
    unit = "item" if Path(args.data).suffix.lower() == ".json" else "row" if Path(args.data).suffix.lower() in (
        ".csv", ".tsv") else "line"
    print(f"least confident (check these first; {unit}s numbered as in {args.data}"
          + (", the header being row 1)" if unit == "row" else ")") + ":")
    for w in summary["least_confident"]:
        said = f' from "{w["evidence"]}"' if w["evidence"] else " (no clause about it)"
        rows = ", ".join(map(str, w["rows"][:8])) + (f" and {len(w['rows']) - 8} more" if len(w["rows"]) > 8 else "")
        print(f"  {w['concept']} = {w['value']} ({w['confidence']:.2f}){said}: {unit}{'s' if len(w['rows']) > 1 else ''} "
              f"{rows}")
