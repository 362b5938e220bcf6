"""The paper's Table 2 for our backbones, the pruner comparison and the sparsity sweep (Fig. 5).

Every run is the real CLI in a child process (see foundation.py). SparseCBM
runs after the first reuse the dense CBM of the same data set and seed
(``--init-from``), so pruners and sparsities are compared from one starting
point.

    python -m benchmarks.table2                         # everything (hours on 2 cores)
    python -m benchmarks.table2 --only table            # Standard / CBM / SparseCBM on CEBaB and IMDB-C
    python -m benchmarks.table2 --only pruners sweep    # CEBaB: obs vs magnitude vs wanda; s in {.5,.75,.9,.95}
    python -m benchmarks.table2 --only decoder          # CBM and SparseCBM on SmolLM2-135M (whole CEBaB train split; hours)
    python -m benchmarks.table2 --only decoder-short    # the same CBM, and a SparseCBM of 1 OBS step + 1 sparse epoch (~1 h)
    python -m benchmarks.table2 --only modes            # CEBaB CBM trained sequential / independent (Koh et al.)
    python -m benchmarks.table2 --seeds 0 1 2           # mean over seeds
    python -m benchmarks.table2 --seeds 0 1 2 --adopt-only   # take other benchmarks' runs (ADOPT), train nothing

Writes table2.json / table2.md, and sparsity_sweep.png / .md, to --out.
Results already in table2.json are kept when their model was trained with the
settings the run's command means today (read from its config.json); a run
trained under other defaults (an older recipe) is redone, and ``--redo``
redoes every run it selects. ``--data cebab`` limits a sitting to one data set.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from benchmarks.harness import run_one, sole_writer, stored_runs, write_results
from sparsecbm.cli import build_parser, configs_from_args
from sparsecbm.data import load_dataset
from sparsecbm.files import atomic_path, write_text
from sparsecbm.metrics import concept_ceiling
from sparsecbm.training import SPEED_ONLY, TrainConfig, acting_settings

# IMDB-C has CEBaB's protocol (recipe, epochs, mining) with two differences: 512 tokens, since its
# reviews are long (CEBaB's 128 would cut most of them), and batches of 8, as in the first IMDB-C runs:
# at 512 tokens a SparseCBM batch runs K = 4 backbone passes, and the first (shortened) SparseCBM run
# with batches of 8 already peaked at 13.5 GB of this machine's 24.
DATA = {
    "cebab": [],
    "imdbc": ["--max-length", "512", "--batch-size", "8"],
}
NAMES = {"cebab": "CEBaB", "imdbc": "IMDB-C"}
SWEEP = (0.5, 0.75, 0.9, 0.95)
# The sweep uses the pruner comparison's short protocol: 3 cubic steps, no fine-tuning between, 1 final epoch.
SHORT = ["--finetune-epochs", "0", "--epochs", "1"]
DECODER = ["--backbone", "smollm2-135m", "--batch-size", "8"]
# The decoder rows train on the whole CEBaB training split with CEBaB's protocol (5 epochs, 3 OBS steps
# with m = 64, a fine-tuning epoch between, 5 sparse epochs), except: batches of 8 (memory); Fisher
# blocks of B = 8, since SmolLM2's 106M prunable weights with B = 50 would need a 42 GB float64 Gram
# (with B = 8: 6.8 GB, scored in two groups within --fisher-memory-gb 4); gradient chunks of 4 (a chunk
# of 16 gradients of 106M weights is itself 6.8 GB). Hours per run on 2 cores: stop the script any time;
# the next sitting resumes the interrupted run from its last epoch or pruning step.
DECODER_SPARSE = [*DECODER, "--block-size", "8", "--grad-chunk", "4"]
# That SparseCBM needs about 6 hours on 2 cores (measured: a mining step 22.7 min, an epoch under the
# masks 39.4 min): more than a session, whose new checkout has no runs/ to resume from. The one-sitting
# protocol (about an hour) mines the masks in one OBS step (m = 64, as above) with no fine-tuning after
# it, then trains 1 epoch under the final masks (MiniLM's 'fast' recipe in fast_pipeline.py, which has 3,
# lost 1.3 concept and 1.8 task points to the full protocol).
DECODER_SHORT = ["--prune-steps", "1", "--finetune-epochs", "0", "--sparse-epochs", "1"]
# all-mpnet-base-v2 (BERT-base size, 85M prunable weights): CEBaB's protocol with the decoder's Fisher
# blocks and gradient chunks (memory, as above); batches of 16 as MiniLM.
MPNET = ["--backbone", "mpnet"]
MPNET_SPARSE = [*MPNET, "--block-size", "8", "--grad-chunk", "4"]
PARTS = ("table", "pruners", "sweep", "decoder", "decoder-short", "modes", "mpnet")
EVERYTHING = set(PARTS) - {"decoder-short"}  # no --only: every part at its full protocol
# Runs that an earlier benchmark already made; each is taken only when its saved settings are those
# planned here (adopt() checks), so the entries of an older recipe are skipped (and a stored result of an
# older recipe is replaced by an adoptable run). The CBMs are bottlenecks.py's runs of today's default head
# (embedding, intervention probability 0.5); the SparseCBMs are distill.py's runs at today's sparsity (0.5),
# each started from a CBM of that recipe and seed (distill.py's own, identical to bottlenecks.py's). A row's
# seeds are adopted together, once every one has its record: adopting one alone would mix two recipes in a row.
ADOPT = {
    **{f"cebab-cbm-s{seed}": ("bottlenecks.json", f"embedding-p0.5-s{seed}",
                              f"runs/bottlenecks/cbm-embedding-p0.5-s{seed}") for seed in range(3)},
    **{f"imdbc-cbm-s{seed}": ("bottlenecks.json", f"imdbc-embedding-p0.5-s{seed}",
                              f"runs/bottlenecks/cbm-imdbc-embedding-p0.5-s{seed}") for seed in range(3)},
    **{f"{data}-sparsecbm-obs-s{seed}": (source, f"{data}-s0.5-s{seed}", f"runs/distill/{data}-s0.5-s{seed}")
       for data, source in (("cebab", "distill.json"), ("imdbc", "distill-imdbc.json")) for seed in range(3)},
}


def plan(parts: set[str], seeds: list[int]) -> list[tuple[str, list[str]]]:
    """(run name, CLI args) in an order where every --init-from target comes first."""
    runs = []
    for seed in seeds:
        s = ["--seed", str(seed)]
        for data, extra in DATA.items():
            if "table" in parts or (data == "cebab" and parts & {"pruners", "sweep"}):
                runs.append((f"{data}-cbm-s{seed}", ["--data", data, "--model", "cbm", *extra, *s]))
            if "table" in parts:
                runs.append((f"{data}-standard-s{seed}", ["--data", data, "--model", "standard", *extra, *s]))
                runs.append((f"{data}-sparsecbm-obs-s{seed}", _sparse(data, extra, s, "obs", None, seed)))
        if "modes" in parts:
            for mode in ("sequential", "independent"):
                runs.append((f"cebab-cbm-{mode}-s{seed}", ["--data", "cebab", "--model", "cbm", "--cbm-mode", mode, *s]))
        if "pruners" in parts:
            for pruner in ("magnitude", "wanda"):
                runs.append((f"cebab-sparsecbm-{pruner}-s{seed}", _sparse("cebab", [], s, pruner, None, seed)))
        if "sweep" in parts:
            for sparsity in SWEEP:
                runs.append((f"cebab-sweep-{sparsity}-s{seed}", _sparse("cebab", SHORT, s, "obs", sparsity, seed)))
        if parts & {"decoder", "decoder-short"}:
            runs.append((f"cebab-cbm-smollm2-s{seed}", ["--data", "cebab", "--model", "cbm", *DECODER, *s]))
            sparse = ["--data", "cebab", "--model", "sparsecbm", *DECODER_SPARSE, *s,
                      "--init-from", f"runs/table2/cebab-cbm-smollm2-s{seed}"]
            if "decoder" in parts:
                runs.append((f"cebab-sparsecbm-smollm2-s{seed}", sparse))
            if "decoder-short" in parts:
                runs.append((f"cebab-sparsecbm-smollm2-short-s{seed}", [*sparse, *DECODER_SHORT]))
        if "mpnet" in parts:
            runs.append((f"cebab-cbm-mpnet-s{seed}", ["--data", "cebab", "--model", "cbm", *MPNET, *s]))
            runs.append((f"cebab-sparsecbm-mpnet-s{seed}", ["--data", "cebab", "--model", "sparsecbm", *MPNET_SPARSE, *s,
                                                            "--init-from", f"runs/table2/cebab-cbm-mpnet-s{seed}"]))
    return runs


def saved_settings(record: dict | None, model_dir: Path) -> dict | None:
    """The training and pruning settings a result was made with: from its model folder, else
    from the record, else from the flags the record says it ran with, read as today's CLI reads
    them (a benchmark's record of a folder a new checkout no longer has); None: unknown."""
    config_path = model_dir / "config.json"
    if config_path.exists():
        saved = json.loads(config_path.read_text())
        return {"training": saved.get("training"), "pruning": saved.get("pruning")}
    record = record or {}
    return record.get("settings") or (flag_settings(record["flags"]) if "flags" in record else None)


def flag_settings(args: list[str]) -> dict:
    """The settings ``sparsecbm train ARGS`` means today, as a run saves them."""
    train_config, prune = configs_from_args(build_parser().parse_args(["train", *args, "--out", "unused"]))
    return {"training": asdict(train_config), "pruning": asdict(prune) if prune is not None else None}


def settings_differ(args: list[str], saved: dict) -> list[str]:
    """How ``saved`` settings differ from those ``sparsecbm train ARGS`` means now ([] when
    equal; those that change only speed, ``SPEED_ONLY``, are not compared). Values are compared as
    they acted (``acting_settings``); any other key an older version did not save is taken at
    today's default."""
    now = acting_settings(flag_settings(args))
    saved = acting_settings(saved)
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    diffs = []
    for part, values in now.items():
        for key, value in (values or {}).items():
            then = (saved.get(part) or {}).get(key, defaults.get(key) if part == "training" else value)
            if key not in SPEED_ONLY and json.loads(json.dumps(then)) != value:
                diffs.append(f"{part}.{key} {then!r} (now {value!r})")
    return diffs


def adopt(results: dict, planned: dict[str, list[str]], out: Path, runs_dir: Path) -> None:
    """Take runs an earlier benchmark already made with the settings planned here instead of
    training them again; saved to table2.json at once, so that the records there always
    describe the runs (and the folders runs/table2/NAME links to, where the folder is still here)."""
    records = {source: json.loads((out / source).read_text())["runs"] for source, _, _ in ADOPT.values()
               if (out / source).exists()}

    def row(name: str) -> str:
        return name.rsplit("-s", 1)[0]

    complete = {row(n) for n in ADOPT} - {row(n) for n, (source, key, _) in ADOPT.items()
                                          if key not in records.get(source, {})}
    for name, (source, key, model_dir) in ADOPT.items():
        if name not in planned or row(name) not in complete:
            continue  # not planned, or a seed of its row has not stored its scores yet
        link, record, folder = runs_dir / name, records[source][key], Path(model_dir)
        stored = saved_settings(results.get(name), link)
        if name in results and stored is not None and not settings_differ(planned[name], stored):
            continue  # the stored result is today's (one of unknown settings gives way to a checked run)
        made = saved_settings(record, folder)
        if made is None or settings_differ(planned[name], made):
            continue  # made under other defaults
        if link.exists() and not link.is_symlink():
            raise SystemExit(f"{link}: a run of older settings is in the way of adopting {model_dir}; move it")
        results[name] = {**record, "adopted_from": f"{source} ({model_dir})", "settings": made}
        if link.is_symlink():
            link.unlink()
        if folder.is_dir():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(folder.resolve(), target_is_directory=True)
        write_results(out / "table2.json", {"runs": results})


def missing_starts(planned: dict[str, list[str]], results: dict, runs_dir: Path) -> dict[str, str]:
    """Stored runs whose model folder is gone while a run still to do starts from it
    (``--init-from``), e.g. IMDB-C's CBM in a new checkout before its SparseCBM ran: name ->
    the run that needs it. They are trained again (the same command and seed) before it."""
    needed = {}
    for name, run_args in planned.items():
        if name in results or "--init-from" not in run_args:
            continue
        start = Path(run_args[run_args.index("--init-from") + 1])
        if start.parent == runs_dir and start.name in results and not (start / "config.json").exists():
            needed.setdefault(start.name, name)
    return needed


def _sparse(data: str, extra: list[str], seed_args: list[str], pruner: str, sparsity: float | None, seed: int) -> list[str]:
    args = ["--data", data, "--model", "sparsecbm", *extra, *seed_args, "--pruner", pruner,
            "--init-from", f"runs/table2/{data}-cbm-s{seed}"]
    return args + (["--sparsity", str(sparsity)] if sparsity is not None else [])


def _values(runs: list[dict], path: tuple[str, ...]) -> list[float]:
    values = []
    for r in runs:
        v = r["test"]
        for key in path:
            if key not in v:
                return []
            v = v[key]
        values.append(v)
    return values


def _mean(runs: list[dict], path: tuple[str, ...]) -> float | None:
    values = _values(runs, path)
    return statistics.mean(values) if values else None


def _cell(runs: list[dict], *path: str) -> str:
    """``accuracy [+- std over seeds] / macro-F1`` in %, or - ."""
    acc, f1 = _values(runs, (*path, "accuracy")), _values(runs, (*path, "macro_f1"))
    if not acc:
        return "-"
    spread = f" +- {100 * statistics.stdev(acc):.1f}" if len(acc) > 1 else ""
    return f"{100 * statistics.mean(acc):.1f}{spread} / {100 * statistics.mean(f1):.1f}"


def _gap(runs: list[dict], ceiling: dict | None) -> str:
    """Task accuracy minus the gold-concept ceiling: what the label gets past the named concepts."""
    task = _mean(runs, ("task", "accuracy"))
    return "-" if task is None or ceiling is None else f"{100 * (task - ceiling['accuracy']):+.1f}"


def _head(record: dict) -> str:
    """The label head a run was trained with (results saved before the choice existed: soft)."""
    return ((record.get("settings") or {}).get("training") or {}).get("bottleneck", "soft")


def _sparsity(record: dict) -> str:
    """The sparsity per concept a SparseCBM was mined to (saved as None: the paper's 1 - 1/K, 0.75 for
    these data sets' 4 concepts, the default before 0.5)."""
    pruning = (record.get("settings") or {}).get("pruning") or {}
    value = pruning.get("sparsity")
    return "?" if not pruning else f"{0.75 if value is None else value:g}"


def _share(runs: list[dict]) -> str:
    """The concepts' mean share of the winning logit, in %, when every run measured it."""
    shares = _values(runs, ("concept_share",))
    return f"{100 * statistics.mean(shares):.1f}" if shares and len(shares) == len(runs) else "-"


def tables(results: dict, ceilings: dict | None = None, prompting: dict | None = None) -> str:
    """``prompting``: prompting.py's runs, shown as the paper's prompting row."""
    ceilings = ceilings or {}

    def group(prefix: str) -> list[dict]:
        return [r for name, r in results.items() if name.rsplit("-s", 1)[0] == prefix]

    lines = [
        "Test split, accuracy / macro-F1 in % (standard macro-F1): the mean over the seeds that ran, "
        "+- the standard deviation of the accuracy when more than one did. Leakage gap: task accuracy "
        "minus that of a logistic regression fed the gold concepts (the concepts' ceiling"
        + "".join(f"; {NAMES[d]} {100 * c['accuracy']:.1f}" for d, c in ceilings.items()) + "). "
        "Always answering the training split's most frequent class scores"
        + "".join(f"{'' if i == 0 else ';'} {NAMES[d]} task {100 * c['majority_task']:.1f}, concepts "
                  f"{100 * c['majority_concepts']:.1f}" for i, (d, c) in enumerate(ceilings.items())) + ".",
        "",
        "Concepts' share: the mean share of the winning label's logit that comes from the named concepts' "
        "terms (the rest is the side channel and the bias; docs/interventions.md, Label heads); - where the run "
        "was made before it was measured.",
        "",
        "| backbone | model | label head | seeds | CEBaB concept | CEBaB task | CEBaB leakage gap | CEBaB concepts' share "
        "| IMDB-C concept | IMDB-C task | IMDB-C leakage gap | IMDB-C concepts' share |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, model in (("Standard", "standard"), ("CBM", "cbm"), ("CBM, sequential", "cbm-sequential"),
                         ("CBM, independent", "cbm-independent"), ("SparseCBM", "sparsecbm-obs")):
        concept_model = model != "standard"
        by_head = {}
        for data in ("cebab", "imdbc"):
            for r in group(f"{data}-{model}"):
                key = (_head(r) if concept_model else "-", _sparsity(r) if model.startswith("sparsecbm") else "")
                by_head.setdefault(key, {}).setdefault(data, []).append(r)
        for (head, sparsity), runs in sorted(by_head.items(), key=lambda item: (item[0][0] != "embedding", item[0][1])):
            c, i = runs.get("cebab", []), runs.get("imdbc", [])
            name = f"{label}, sparsity {sparsity}" if sparsity else label
            lines.append(f"| MiniLM | {name} | {head} | {len(c)} / {len(i)} | {_cell(c, 'concepts', 'mean')} "
                         f"| {_cell(c, 'task')} | {_gap(c, ceilings.get('cebab')) if concept_model else '-'} "
                         f"| {_share(c)} | {_cell(i, 'concepts', 'mean')} | {_cell(i, 'task')} "
                         f"| {_gap(i, ceilings.get('imdbc')) if concept_model else '-'} | {_share(i)} |")
    smollm2, mpnet = "SmolLM2-135M (4-bit GGUF -> fp32)", "MPNet (all-mpnet-base-v2)"
    for backbone, label, model in ((smollm2, "CBM", "cbm-smollm2"), (smollm2, "SparseCBM", "sparsecbm-smollm2"),
                                   (smollm2, "SparseCBM, one-sitting protocol", "sparsecbm-smollm2-short"),
                                   (mpnet, "CBM", "cbm-mpnet"), (mpnet, "SparseCBM", "sparsecbm-mpnet")):
        d = group(f"cebab-{model}")
        if d:
            if model.startswith("sparsecbm"):
                label += f", sparsity {'/'.join(sorted({_sparsity(r) for r in d}))}"
            lines.append(f"| {backbone} | {label} | {'/'.join(sorted({_head(r) for r in d}))} "
                         f"| {len(d)} / 0 | {_cell(d, 'concepts', 'mean')} | {_cell(d, 'task')} "
                         f"| {_gap(d, ceilings.get('cebab'))} | {_share(d)} | - | - | - | - |")
    if prompting:
        c, i = prompting.get("cebab"), prompting.get("imdbc")

        def cell(r: dict | None, part: dict | None) -> str:
            return "-" if r is None else f"{100 * part['accuracy']:.1f} / {100 * part['macro_f1']:.1f}"
        lines.append(f"| SmolLM2-135M-Instruct | Prompting, no training (benchmarks/prompting.py; test reviews: "
                     f"{c['test_rows'] if c else 0} / {i['test_rows'] if i else 0}) | - | - "
                     f"| {cell(c, c and c['concepts_mean'])} | {cell(c, c and c['task'])} | - | - "
                     f"| {cell(i, i and i['concepts_mean'])} | {cell(i, i and i['task'])} | - | - |")
    lines += [
        "",
        "Protocols: SparseCBM starts from the CBM row above it (`--init-from`; the MiniLM rows adopted from "
        "distill.py start from its CBMs of the same recipe and seed) and prunes each concept to the sparsity "
        "its row names: 0.5, today's default, or 0.75, the paper's 1 - 1/K for K = 4 and the default before. "
        "CEBaB MiniLM: 3 cubic OBS steps (m = 64), 1 fine-tuning epoch between steps, 5 final epochs. "
        f"IMDB-C (K = 4): the same protocol with `{' '.join(DATA['imdbc'])}` (long reviews; memory). "
        f"SmolLM2: the same protocol with `{' '.join(DECODER_SPARSE)}` (memory); its one-sitting protocol "
        f"adds `{' '.join(DECODER_SHORT)}` (1 OBS step, 1 epoch under the final masks: about an hour). "
        f"MPNet: the same protocol with `{' '.join(MPNET_SPARSE[2:])}` (memory). "
        "The exact command of every cell is in table2.json.",
    ]
    pruners = [(p, group(f"cebab-sparsecbm-{p}")) for p in ("obs", "magnitude", "wanda")]
    if sum(bool(g) for _, g in pruners) > 1:
        lines += ["", "CEBaB, sparsity 1 - 1/K = 0.75, same dense CBM:", "",
                  "| pruner | concept | task |", "|---|---|---|"]
        lines += [f"| {p} | {_cell(g, 'concepts', 'mean')} | {_cell(g, 'task')} |" for p, g in pruners if g]
    return "\n".join(lines) + "\n"


def ceilings(results: dict) -> dict:
    """The gold-concept ceiling of every data set with a result, and the test accuracy of always
    answering the training split's most frequent label and concept values (the floor)."""
    return {data: _ceiling(data) for data in DATA if any(name.startswith(f"{data}-") for name in results)}


@functools.cache
def _ceiling(data: str) -> dict:
    """Loaded and fitted once per sitting (the table is rewritten after every run)."""
    d = load_dataset(data)
    train, test = d["train"], d["test"]

    def majority(train_values, test_values) -> float:
        values, counts = np.unique(train_values, return_counts=True)
        return float(np.mean(test_values == values[counts.argmax()]))

    concepts = [majority(train.concepts[:, k], test.concepts[:, k]) for k in range(len(d.schema.concepts))]
    return {**concept_ceiling(train, test, d.schema), "majority_task": majority(train.labels, test.labels),
            "majority_concepts": float(np.mean(concepts))}


def sweep(results: dict, out: Path) -> None:
    points = [(s, group) for s in SWEEP if (group := [r for n, r in results.items() if n.startswith(f"cebab-sweep-{s}-")])]
    if not points:
        return
    rows = ["| sparsity | concept acc | task acc |", "|---|---|---|"]
    for s, g in points:
        rows.append(f"| {s} | {100 * _mean(g, ('concepts', 'mean', 'accuracy')):.1f} | {100 * _mean(g, ('task', 'accuracy')):.1f} |")
    write_text(out / "sparsity_sweep.md", "CEBaB test, SparseCBM (obs) from one dense CBM (the CBM row of table2.md), "
               f"short protocol (`{' '.join(SHORT)}`: 3 cubic steps, no fine-tuning between them, 1 final epoch):\n\n"
               + "\n".join(rows) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    xs = [s for s, _ in points]
    ax.plot(xs, [100 * _mean(g, ("concepts", "mean", "accuracy")) for _, g in points], "o-", label="concept accuracy")
    ax.plot(xs, [100 * _mean(g, ("task", "accuracy")) for _, g in points], "s-", label="task accuracy")
    ax.set_xlabel("sparsity per concept (short protocol)")
    ax.set_ylabel("CEBaB test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "sparsity_sweep.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=PARTS)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--data", nargs="*", choices=tuple(DATA), help="only runs on these data sets")
    parser.add_argument("--redo", action="store_true", help="rerun runs already in table2.json")
    parser.add_argument("--adopt-only", action="store_true",
                        help="take the runs other benchmarks made (ADOPT) and rewrite the tables; train nothing")
    args = parser.parse_args()
    out, runs_dir = Path(args.out), Path("runs/table2")
    json_path = out / "table2.json"
    with sole_writer(json_path):
        results = stored_runs(json_path)
        planned = {name: run_args for name, run_args in
                   plan(set(args.only or EVERYTHING), args.seeds)
                   if name.split("-", 1)[0] in (args.data or DATA)}
        adopt(results, planned, out, runs_dir)
        regrow = missing_starts(planned, results, runs_dir)
        for name, run_args in planned.items() if not args.adopt_only else ():
            model_dir = runs_dir / name
            if name in regrow and not args.redo:
                print(f"== {name}: its folder is gone (a new checkout has no runs/) and {regrow[name]} starts from it; "
                      "training it again (its record is replaced by the new run's)", flush=True)
            elif name in results and not args.redo:
                saved = saved_settings(results[name], model_dir)
                diffs = settings_differ(run_args, saved) if saved is not None else []
                if "concept_share" not in results[name]["test"] and "standard" not in name:
                    diffs.append("made before the concepts' share was measured")
                if not diffs:
                    continue
                print(f"== {name}: made with other settings ({'; '.join(diffs)}); training it again", flush=True)
            if model_dir.is_symlink():  # an adopted run's folder belongs to the benchmark that made it
                model_dir.unlink()
            results[name] = run_one(name, run_args, runs_dir)
            results[name]["settings"] = saved_settings(None, model_dir)
            write_results(json_path, {"runs": results})
            write_text(out / "table2.md", tables(results, ceilings(results), stored_runs(out / "prompting.json")))
            sweep(results, out)
        write_text(out / "table2.md", tables(results, ceilings(results), stored_runs(out / "prompting.json")))
        sweep(results, out)
    print((out / "table2.md").read_text())


if __name__ == "__main__":
    main()
