"""Commands that train, score and read a model: train, evaluate, masks, predict, explain, convert-gguf."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from dataclasses import asdict

from tqdm.auto import tqdm

from .. import calibration, masks
from ..backbones import convert_gguf
from ..classifier import load
from ..data import held_out_note, is_blank
from ..explanations import explain, explain_many
from ..files import atomic_path, write_json
from ..interventions.curves import concept_share, hard_concepts_accuracy, single_fixes
from ..metrics import concept_ceiling, format_table
from ..parallel import processes
from ..training import fit_missing_value_shifts, train
from .inputs import configs_from_args, load_data, masks_file, predict_inputs, recorded_data, truncation_notice

log = logging.getLogger("sparsecbm")


def cmd_train(args: argparse.Namespace) -> None:
    config, prune = configs_from_args(args)
    dataset = load_data(args)
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out; --overwrite would start it again: give one")
    if not processes().main:  # one of several processes (accelerate launch): the first one reports
        logging.getLogger("sparsecbm").setLevel(logging.WARNING)
    clf = train(dataset, config, prune=prune, init_from=args.init_from, out=args.out,
                overwrite=args.overwrite, progress=not args.quiet, resume=args.resume)
    if not processes().main:
        return
    print(f"saved the best epoch ({clf.meta['best_epoch']}) to {args.out}")
    print(format_table(clf.meta["best_dev"], title=f"dev scores of the saved model ({dataset.name})"))
    if clf.model.masks is not None:
        sparsity = ", ".join(f"{c} {100 * masks.sparsity(m):.1f}%" for c, m in clf.model.masks.items())
        print(f"subnetwork sparsity: {sparsity}")
    print(f"wall time {clf.meta['wall_seconds']:.0f} s, peak memory {clf.meta['peak_memory_mb']:.0f} MB")


def cmd_calibrate(args: argparse.Namespace) -> None:
    clf = load(args.model_dir)
    dataset = recorded_data(args, clf)
    clf.check_schema(dataset.schema, dataset.name)
    before = clf.temperature
    c = clf.calibrate(dataset[args.split], progress=not args.quiet)
    # a folder saved before value shifts existed: its what-ifs were plain interventions
    shifts = "train" in dataset.splits and fit_missing_value_shifts(clf, dataset["train"], progress=not args.quiet)
    clf.save_config(args.model_dir, prototypes=shifts)
    print(f"temperature {before:.3f} -> {c['temperature']:.3f}, fitted on {dataset.name} {args.split}: "
          f"ECE {100 * c['before']['ece']:.1f} -> {100 * c['after']['ece']:.1f} %, "
          f"NLL {c['before']['nll']:.3f} -> {c['after']['nll']:.3f} (saved in {args.model_dir})")
    if shifts:
        print(f"fitted the value shifts (and value prototypes) on {dataset.name} train: a what-if now reads a text "
              "that said the other value (docs/explanations.md)")


def cmd_evaluate(args: argparse.Namespace) -> None:
    clf = load(args.model_dir, device=args.device)
    dataset = recorded_data(args, clf)
    clf.check_schema(dataset.schema, dataset.name)
    split = dataset[args.split]
    out = clf.forward_texts(split.texts, batch_size=args.batch_size, progress=not args.quiet, desc="evaluate")
    result = clf.evaluate_outputs(split, out)
    note = held_out_note(dataset, args.split)
    if note:
        result["note"] = note
        print(f"note: {note}")
    if clf.unfinished:
        result["unfinished"] = clf.unfinished
        print(f"sparsecbm: warning: {args.model_dir}: {clf.unfinished}", file=sys.stderr)
    ceiling = None
    if clf.config.has_concepts and "train" in dataset.splits:
        ceiling = concept_ceiling(dataset["train"], dataset[args.split], dataset.schema)
    annotated = bool(dataset.annotated)  # the ceiling and gap then rest on annotations, not human labels
    if annotated:
        result["concepts_from"] = "annotations"
    print(format_table(result, title=f"{dataset.name} {args.split}: {clf.config.kind} model, {clf.config.backbone}",
                       ceiling=ceiling, annotated=annotated))
    result["calibration"] = {"temperature": clf.temperature, **calibration.scores(out.task_logits, split.labels,
                                                                                  clf.temperature)}
    print(f"label probabilities: expected calibration error {100 * result['calibration']['ece']:.1f} % "
          f"(temperature {clf.temperature:.2f}; sparsecbm calibrate fits it)")
    if clf.config.has_concepts:
        result["hard_concepts_task_accuracy"] = hard_concepts_accuracy(clf, split, out)
        result["concept_share"] = concept_share(clf, out)
        fixes = single_fixes(clf, split, out)
        result["single_fixes"] = asdict(fixes)
        print(f"task accuracy with the predicted concept values as 0/1: {100 * result['hard_concepts_task_accuracy']:.1f} %; "
              f"the concepts' share of the winning label's logit: {100 * result['concept_share']:.1f} %")
        print(fixes.line("set to its true value"))
        if ceiling is not None:
            result["leakage_gap"] = result["task"]["accuracy"] - ceiling["accuracy"]
            print(f"leakage gap (task accuracy minus the {'annotated' if annotated else 'gold'}-concept ceiling): "
                  f"{100 * result['leakage_gap']:+.1f} points")
    if args.json_out:
        write_json(args.json_out, result)
        print(f"wrote {args.json_out} (scores as fractions)")
    if args.pathway and clf.config.has_concepts:
        print()
        print(explain(clf, dataset[args.split].texts[0], subnetwork_level=False).describe())


def diff_masks(args: argparse.Namespace) -> None:
    a, b = (masks.load_masks(masks_file(d)) for d in (args.model_dir, args.diff))
    result = masks.diff(a, b)
    for concept, d in result["concepts"].items():
        print(f"{concept}: {d['dropped']} weights dropped, {d['grown']} grown")
        for layer, n in d["layers"].items():
            print(f"  {layer}: -{n['dropped']} +{n['grown']}")
    if args.json_out:
        write_json(args.json_out, result)
        print(f"wrote {args.json_out}")


def cmd_masks(args: argparse.Namespace) -> None:
    if args.diff:
        return diff_masks(args)
    clf = load(args.model_dir)
    clf.require_masks("to summarise")
    summary = masks.summary(clf.model.masks)
    concepts = list(summary["concepts"])
    layers = list(next(iter(summary["concepts"].values()))["layers"])
    width = max(len(n) for n in layers)
    print(f"{'sparsity %':<{width}}  " + "  ".join(f"{c:>10}" for c in concepts))
    for layer in layers:
        print(f"{layer:<{width}}  " + "  ".join(f"{100 * summary['concepts'][c]['layers'][layer]:>10.1f}" for c in concepts))
    print(f"{'all':<{width}}  " + "  ".join(f"{100 * summary['concepts'][c]['sparsity']:>10.1f}" for c in concepts))
    print("\noverlap of kept weights (Jaccard):")
    for pair, j in summary["jaccard"].items():
        print(f"  {pair.replace('|', ' & ')}: {j:.3f}")
    for e in clf.interventions:
        print(f"intervention: {e.describe()}")
    if args.json_out:
        write_json(args.json_out, summary)
        print(f"wrote {args.json_out}")


PREDICT_CHUNK = 256  # texts predicted, printed and written at a time: output starts at once, memory stays flat


def cmd_predict(args: argparse.Namespace) -> None:
    texts, where = predict_inputs(args)
    clf = load(args.model_dir)
    cut = []
    bar = tqdm(total=len(texts), desc="predict", unit="text", disable=args.quiet or len(texts) <= PREDICT_CHUNK,
               file=sys.stderr)
    with contextlib.ExitStack() as stack:
        out = None
        if args.json_out:  # one JSON list, written as it goes under a temporary name, renamed at the end
            out = open(stack.enter_context(atomic_path(args.json_out)), "w", encoding="utf-8")
            stack.callback(out.close)
            out.write("[")
        for start in range(0, len(texts), PREDICT_CHUNK):
            chunk = texts[start: start + PREDICT_CHUNK]
            for i, (text, p) in enumerate(zip(chunk, clf.predict(chunk)), start=start):
                pred = {"index": i, "text": text, **where[i], **p.to_dict()}
                if out is not None:
                    out.write(("\n" if i == 0 else ",\n") + json.dumps(pred))
                bar.clear()
                print(_prediction_line(text, pred), flush=True)
                bar.refresh()
                cut.append(pred["truncated"])
            bar.update(len(chunk))
        if out is not None:
            out.write("\n]\n")
    bar.close()
    if args.json_out:
        print(f"wrote {args.json_out}")
    truncation_notice(clf, cut, [" ".join(f"{k} {v}" for k, v in w.items()) or f"text {i + 1}"
                                 for i, w in enumerate(where)])


def _prediction_line(text: str, pred: dict) -> str:
    """'label (p%)  concept=value, ...  [concepts s%]  <- text' for one prediction."""
    concepts = ", ".join(f"{n}={c['value']}" for n, c in pred["concepts"].items())
    p = pred["label_probs"][pred["label"]]
    decides = ""
    if pred["concept_share"] is not None:
        decides = f"  [concepts {100 * pred['concept_share']:.0f}%"
        if pred["values_label"] != pred["label"]:
            decides += f"; values alone: {pred['values_label']}"
        decides += "]"
    return (f"{pred['label']} ({100 * p:.0f}%){'  ' + concepts if concepts else ''}{decides}  <- {text[:60]!r}"
            + ("  [cut]" if pred["truncated"] else ""))


def cmd_explain(args: argparse.Namespace) -> None:
    batch = args.data is not None or args.jsonl is not None
    if batch:
        if args.text is not None:
            raise ValueError("give either a text or --data/--jsonl (batch mode), not both")
        if not (args.data and args.jsonl):
            raise ValueError("batch mode needs both --data and --jsonl FILE")
        if args.json_out or args.html or args.png:
            raise ValueError("--json, --html and --png explain one text; batch mode writes --jsonl")
    elif args.text is None:
        raise ValueError("give a text to explain, or --data NAME --jsonl FILE for a whole split")
    elif is_blank(args.text):
        raise ValueError("the text to explain is empty (nothing but spaces or invisible characters)")
    clf = load(args.model_dir)
    if batch:
        dataset = load_data(args)
        clf.check_schema(dataset.schema, dataset.name)
        texts = dataset[args.split].texts[: args.max_examples]
        n = explain_many(clf, texts, args.jsonl, args.method, steps=args.steps, progress=not args.quiet)
        print(f"wrote {n} explanations ({dataset.name} {args.split}, {args.method}) to {args.jsonl}")
        return
    from .. import report

    e = explain(clf, args.text, args.method, steps=args.steps, heatmaps=bool(args.json_out or args.html))
    print(e.describe())
    for path, write in ((args.json_out, lambda p: write_json(p, e.to_dict())),
                        (args.html, lambda p: report.save_html(e, p)), (args.png, lambda p: report.save_png(e, p))):
        if path:
            write(path)
            print(f"wrote {path}")


def cmd_convert_gguf(args: argparse.Namespace) -> None:
    out = convert_gguf(args.out, args.gguf)
    print(f"converted backbone in {out}; train with --backbone {out}" + (
        "" if args.out else " or --backbone smollm2-135m"))
