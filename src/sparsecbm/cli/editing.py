"""Commands that correct a model, and the explorer: intervene, correct, undo, serve."""

from __future__ import annotations

import argparse
import logging
import socket
import sys

from ..access import is_loopback, is_wildcard, new_token
from ..classifier import load
from ..data import read_corrections
from ..files import write_json
from ..interventions.nearby import describe as describe_nearby
from ..interventions.reports import RatioScores
from ..metrics import concept_ceiling
from .inputs import check_save_to, guard_from_args, nearby_from_args, recorded_data

log = logging.getLogger("sparsecbm")


def cmd_intervene(args: argparse.Namespace) -> None:
    from ..interventions import protocols

    clf = load(args.model_dir)
    if args.mode == "curve":
        return _curve(args, clf)
    clf.require_masks("to rewire")
    if args.mode in ("persistent", "edits") and len(args.ratio) != 1:
        raise ValueError(f"--mode {args.mode} takes one --ratio")
    if args.save_to and args.mode != "persistent":
        raise ValueError("--save-to saves persistent edits; use it with --mode persistent")
    check_save_to(args)
    if args.png and args.mode != "per-example":
        raise ValueError("--png plots the per-example curve; use it with --mode per-example or curve")
    dataset = recorded_data(args, clf)
    clf.check_schema(dataset.schema, dataset.name)
    progress = not args.quiet
    if args.mode == "edits":
        from ..interventions.yardstick import family_edits

        result = family_edits(clf, dataset[args.split].head(args.max_examples), n=args.edits, unrelated=args.unrelated,
                              seed=args.seed, guard=guard_from_args(args, clf, dataset), ratio=args.ratio[0],
                              selection=args.selection, steps=args.steps, max_ratio=args.max_ratio,
                              confidence=args.confidence, use_label=not args.without_label, progress=progress)
        print(f"{dataset.name} {args.split}: {result.line()}")
    elif args.mode == "per-example":
        split = dataset[args.split].head(args.max_examples)
        if args.guard:
            raise ValueError("--guard judges kept edits; use it with --mode persistent")
        result = protocols.per_example(clf, split, args.ratio, selection=args.selection, steps=args.steps,
                                       max_ratio=args.max_ratio, confidence=args.confidence,
                                       use_label=not args.without_label, progress=progress)
        print(f"{dataset.name} {args.split}: {result.n} examples, {result.wrong_concepts} wrong concepts "
              f"in {result.examples_with_a_wrong_concept} examples")
        print(f"{'':<22}{'concept acc %':>14}{'task acc %':>12}{'fixed %':>9}{'median bits per fix':>21}")
        for name, r in result.rows():
            fixed = f"{100 * r.corrections_fixed:>9.1f}{r.median_bits_per_fix:>21.0f}" if isinstance(r, RatioScores) else ""
            print(f"{name:<22}{100 * r.concept_accuracy:>14.1f}{100 * r.task_accuracy:>12.1f}{fixed}")
        for name, r in result.rows()[1:]:
            print(f"{name}: {r.single_fixes.line()}"
                  + (f"; task acc % with 0..K concepts rewired: {_points(r.curve)}" if isinstance(r, RatioScores) else ""))
        if args.png:
            protocols.plot_ratios(result, args.png)
            print(f"wrote {args.png}")
    else:
        result = protocols.persistent(clf, dataset[args.edit_split].head(args.max_examples), dataset[args.eval_split],
                                      args.ratio[0], selection=args.selection, steps=args.steps,
                                      max_ratio=args.max_ratio, confidence=args.confidence, use_label=not args.without_label,
                                      guard=guard_from_args(args, clf, dataset), batch=args.batch, progress=progress)
        print(f"{result.edits} edits kept, for {result.corrections_kept} of {result.wrong_concepts} wrong concepts "
              f"on {args.edit_split} "
              f"({', '.join(f'{k}: {v}' for k, v in result.outcomes.items())}); fixed when kept "
              f"{result.fixed_when_edited}, still fixed at the end {result.still_fixed_at_end}; "
              f"{result.bits_changed} mask bits differ from the original")
        print("sparsity per concept (unchanged by edits): " + ", ".join(
            f"{c} {100 * v:.1f}%" for c, v in result.sparsity.items()))
        for split_name, change in ((args.edit_split, result.edit_split), (args.eval_split, result.eval_split)):
            b, a = change.before, change.after
            print(f"{split_name}: concept acc {100 * b.concept_accuracy:.1f} -> {100 * a.concept_accuracy:.1f} %, "
                  f"task acc {100 * b.task_accuracy:.1f} -> {100 * a.task_accuracy:.1f} %")
        if args.save_to:
            clf.save(args.save_to, overwrite=args.overwrite)
            print(f"saved the edited model to {args.save_to}")
    if args.json_out:
        write_json(args.json_out, result.to_dict())
        print(f"wrote {args.json_out}")


def _points(points: list[float]) -> str:
    return " / ".join(f"{100 * p:.1f}" for p in points)


def _curve(args: argparse.Namespace, clf) -> None:
    """``intervene --mode curve``: task accuracy as 0..K concepts are set to their true values."""
    from ..interventions import curves

    if args.save_to or args.guard:
        raise ValueError("--save-to and --guard apply to mask rewiring; --mode curve changes no mask")
    dataset = recorded_data(args, clf)
    clf.check_schema(dataset.schema, dataset.name)
    split = dataset[args.split].head(args.max_examples)
    train_split = dataset["train"] if "train" in dataset.splits else None
    result = curves.intervention_curves(clf, split, train_split, progress=not args.quiet)
    if clf.model.masks is not None:  # the same curve for rewiring: each wrong concept's mask edited alone
        from ..interventions import protocols

        rewired = protocols.per_example(clf, split, args.ratio[:1], selection=args.selection, steps=args.steps,
                                        max_ratio=args.max_ratio, confidence=args.confidence, use_label=not args.without_label,
                                        progress=not args.quiet)
        si = next(iter(rewired.rewired.values()))
        result = result.with_rewiring(f"rewired/{args.selection} {args.ratio[0]}", si.curve, si.single_fixes)
    print(f"{dataset.name} {args.split}: {result.n} texts; task accuracy % with j concepts set to their true value")
    print(f"{'':<24}" + "".join(f"{'j=' + str(j):>8}" for j in result.j))
    for name, points in result.curves.items():
        print(f"{name:<24}" + "".join(f"{100 * p:>8.1f}" for p in points))
    print(f"hard predicted concepts: {100 * result.hard_concepts_task_accuracy:.1f} %; the concepts' share of "
          f"the winning label's logit: {100 * result.concept_share:.1f} %")
    print(f"set true: {result.single_fixes.line()}")
    if result.rewiring_single_fixes is not None:
        print(f"rewired: {result.rewiring_single_fixes.line()}")
    if args.png:
        curves.plot_curves(result, args.png)
        print(f"wrote {args.png}")
    if args.json_out:
        write_json(args.json_out, result.to_dict())
        print(f"wrote {args.json_out}")


def cmd_correct(args: argparse.Namespace) -> None:
    if bool(args.texts) == bool(args.file):
        raise ValueError("give the texts to correct either as arguments or with --file, not both" if args.texts
                         else "no texts to correct: give them as arguments or with --file")
    if args.save_to and args.dry_run:
        raise ValueError("--dry-run saves nothing; leave out --save-to")
    check_save_to(args)
    if args.file:
        texts, values, labels = read_corrections(args.file, value=args.value)
        labels = labels if labels is not None else args.label
    else:
        if not args.value:
            raise ValueError("--value: the true value of the concept is required with texts given as arguments")
        texts, values, labels = args.texts, args.value, args.label
    clf = load(args.model_dir)
    clf.require_masks("to rewire")
    guard = guard_from_args(args, clf, None)
    nearby = nearby_from_args(args, clf, None)
    r = clf.correct(texts, args.concept, values, labels, ratio=args.ratio, selection=args.selection,
                    steps=args.steps, max_ratio=args.max_ratio, confidence=args.confidence, persist=not args.dry_run, guard=guard,
                    keep_unfixed=args.keep_unfixed, nearby=nearby)
    for text, b, a, ok in zip(texts, r.before, r.after, r.fixed):
        print(f"{'fixed' if ok else 'not fixed'}: {args.concept} {b['value']} -> {a['value']} "
              f"(p {a['probability']:.2f}), label {b['label']} -> {a['label']}: {text[:60]!r}")
    print(f"{sum(r.fixed)} of {len(r.fixed)} fixed; {r.bits_flipped} mask bits flipped in {r.steps} step(s) "
          f"({r.selection}, ratio {r.ratio}); {r.outcome}")
    if r.guard:
        g = r.guard
        print(f"guard ({g['n']} texts): {args.concept} accuracy {100 * g['concept_accuracy'][0]:.1f} -> "
              f"{100 * g['concept_accuracy'][1]:.1f} %, task accuracy {100 * g['task_accuracy'][0]:.1f} -> "
              f"{100 * g['task_accuracy'][1]:.1f} %")
    if r.nearby:
        print(describe_nearby(r.nearby, args.concept))
    if r.persisted:
        out = clf.save(args.save_to or args.model_dir, overwrite=args.overwrite)
        print(f"saved the corrected model to {out} ({len(clf.interventions)} logged edit(s); undo: sparsecbm undo {out})")
    if args.json_out:
        write_json(args.json_out, r.to_dict())
        print(f"wrote {args.json_out}")


def cmd_undo(args: argparse.Namespace) -> None:
    clf = load(args.model_dir)
    clf.require_masks("or edits to undo")
    edit = clf.undo()
    clf.save()
    print(f"undid {edit.describe()}; {len(clf.interventions)} edit(s) remain in {args.model_dir}")


def cmd_serve(args: argparse.Namespace) -> None:
    from ..annotation import read_concept_file
    from ..annotation.review import AnnotationFile
    from ..explorer import Explorer, serve

    if bool(args.annotations) != bool(args.concepts):
        raise ValueError("--annotations and --concepts go together: the annotated file and the concept file it was "
                         "annotated with")
    annotations = None
    if args.annotations:  # read (and checked) before the minutes of loading the model and predicting
        annotations = AnnotationFile(args.annotations, read_concept_file(args.concepts),
                                     text_column=args.text_column or "text", prefix=args.annotation_prefix)
    clf = load(args.model_dir, device=args.device)
    dataset = recorded_data(args, clf)
    clf.check_schema(dataset.schema, dataset.name)
    split = dataset[args.split]
    ceiling = concept_ceiling(dataset["train"], split, dataset.schema) if "train" in dataset.splits else None
    explorer = Explorer(clf, split.head(args.max_examples), f"{dataset.name} {args.split}", guard=guard_from_args(args, clf, dataset),
                        max_ratio=args.max_ratio, ceiling=ceiling, annotations=annotations, nearest=args.nearest)
    token = args.token or (None if is_loopback(args.host) else new_token())
    if not is_loopback(args.host):
        print(f"sparsecbm: warning: serving on {args.host}: anyone who can reach this address and has the URL "
              "below (its token) can edit and save the model", file=sys.stderr)
    if not args.quiet:
        print(f"predicting the {len(explorer.split)} rows of {explorer.split_name} once...", flush=True)
    explorer.model()  # fills the browse table's cache before the first page load
    shown = socket.gethostname() if is_wildcard(args.host) else args.host
    shown = f"[{shown}]" if ":" in shown else shown
    print(f"sparsecbm explorer on http://{shown}:{args.port}/{f'?token={token}' if token else ''} (Ctrl-C to stop)",
          flush=True)
    serve(explorer, host=args.host, port=args.port, token=token)
