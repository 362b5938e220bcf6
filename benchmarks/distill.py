"""The sparse model beside its dense parent: SparseCBM with and without distillation from that CBM.

For each seed, the dense CBM is trained once (``cebab-cbm-s<seed>``), then every
SparseCBM setting starts from it (``--init-from``), so the settings differ in
their sparse phases alone, and each is compared with the very model it was pruned
from. Settings are chosen on dev (``dev`` in each record: the best epoch's dev
scores), reported on test.

    python -m benchmarks.distill                                 # every setting, seeds 0-2
    python -m benchmarks.distill --only none kd0.5 --seeds 0     # a part of it
    python -m benchmarks.distill --data imdbc                    # IMDB-C (512 tokens, batches of 8)

Each finished run is saved in ``distill[-DATA].json`` at once and skipped when the
command is run again; a sitting stopped inside a run resumes it. Models are kept
in ``runs/distill``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.harness import PAPER_SPARSITY, run_missing, run_one, table_head
from benchmarks.table2 import DATA

# name -> the flags of the SparseCBM's sparse phases (the dense CBM row is "cbm"); all but s0.5* at the paper's sparsity.
KD = [*PAPER_SPARSITY, "--distill-weight", "0.5", "--distill-temperature", "2"]
SETTINGS = {
    "none": [*PAPER_SPARSITY, "--distill-weight", "0"],
    # The teacher's plain label distribution (the first distillation; its runs predate the flag).
    "kd0.5": [*KD, "--no-distill-interventions"],
    # The teacher answering the random interventions the student trains under (the default once W > 0).
    "kd0.5-int": [*KD, "--distill-interventions"],
    # The concepts' distributions alone: the label head learns from the hard labels only.
    "kd0.5-concepts": [*KD, "--no-distill-label", "--no-distill-interventions"],
    # kd0.5-int with a transfer set: 30 % of each batch read as a copy with about half its sentences dropped.
    "kd0.5-int-tr0.3": [*KD, "--distill-interventions", "--distill-transfer", "0.3"],
    # Undistilled, each concept keeping half the weights instead of the paper's 1 - 1/K (3 of 4 pruned on CEBaB).
    "s0.5": ["--distill-weight", "0", "--sparsity", "0.5"],
    # The default's sparsity, distilled as kd0.5-int: for IMDB-C's 100 training reviews, where the undistilled
    # SparseCBM trails its CBM most.
    "s0.5-kd0.5-int": ["--sparsity", "0.5", "--distill-weight", "0.5", "--distill-temperature", "2",
                       "--distill-interventions"],
    # Undistilled, the sparse phases at a third of the dense phase's backbone learning rate (1e-4): they start
    # from a trained CBM, not from the pretrained backbone.
    "lr3e-5": [*PAPER_SPARSITY, "--distill-weight", "0", "--lr", "3e-5"],
}


def record(name: str, args: list[str], runs_dir: Path) -> dict:
    result = run_one(name, args, runs_dir)
    saved = json.loads((runs_dir / name / "config.json").read_text())
    return {**result, "dev": saved["best_dev"], "flags": args, "phase_seconds": phase_seconds(runs_dir / name),
            "settings": {"training": saved["training"], "pruning": saved["pruning"]}}


def phase_seconds(folder: Path) -> dict[str, list[float]]:
    """Seconds of each pruning step (with its fine-tuning) and each epoch, from the run's
    ``train_log.jsonl``: the medians compare settings even when another job slowed some steps."""
    log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    out: dict[str, list[float]] = {}
    previous = 0.0
    for entry in log:
        if "seconds" in entry and entry["phase"] in ("dense", "cbm", "prune", "sparsecbm"):
            out.setdefault("prune steps" if entry["phase"] == "prune" else "epochs", []).append(
                round(entry["seconds"] - previous, 1))
            previous = entry["seconds"]
    return out


def scores(result: dict) -> tuple[float, float]:
    """(concept accuracy, task accuracy) in %."""
    return 100 * result["concepts"]["mean"]["accuracy"], 100 * result["task"]["accuracy"]


def markdown(results: dict) -> str:
    lines = table_head("SparseCBM against the dense CBM it was pruned from (`python -m benchmarks.distill`): "
                       "concept / task accuracy %, each cell a mean over the seeds run (their number in brackets); "
                       "gap = SparseCBM - its CBM, seed by seed.",
                       ["setting", "dev", "test", "test gap", "train min", "median s: pruning step / epoch"])
    rows = sorted({key.rsplit("-s", 1)[0] for key in results})
    for row in rows:
        seeds = sorted(int(k.rsplit("-s", 1)[1]) for k in results if k.rsplit("-s", 1)[0] == row)
        runs = [results[f"{row}-s{s}"] for s in seeds]
        dev = [scores(r["dev"]) for r in runs]
        test = [scores(r["test"]) for r in runs]
        gaps = [(t[0] - c[0], t[1] - c[1]) for s, t in zip(seeds, test)
                if (c := _cbm_test(results, row, s)) is not None]
        lines.append(f"| {row} | {_pair(dev)} ({len(runs)}) | {_pair(test)} | {_pair(gaps, signed=True) if gaps else ''} "
                     f"| {statistics.mean(r['train_seconds_all_sittings'] for r in runs) / 60:.1f} | {_medians(runs)} |")
    return "\n".join(lines) + "\n"


def _cbm_test(results: dict, row: str, seed: int) -> tuple[float, float] | None:
    cbm = results.get(f"{row.split('-')[0]}-cbm-s{seed}")
    return None if cbm is None or row.endswith("-cbm") else scores(cbm["test"])


def _medians(runs: list[dict]) -> str:
    """The median seconds of a pruning step and of an epoch over the runs' phases (the first
    step holds the teacher's pass and the first scores, so it counts as one of them)."""
    def median(part: str) -> str:
        values = [v for r in runs for v in r.get("phase_seconds", {}).get(part, [])]
        return f"{statistics.median(values):.0f}" if values else "-"
    return f"{median('prune steps')} / {median('epochs')}"


def _pair(values: list[tuple[float, float]], signed: bool = False) -> str:
    fmt = "+.1f" if signed else ".1f"
    return " / ".join(format(statistics.mean(v[i] for v in values), fmt) for i in range(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--data", choices=list(DATA), default="cebab")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--runs-dir", default="runs/distill")
    args = parser.parse_args()
    runs_dir, base = Path(args.runs_dir), ["--data", args.data, *DATA[args.data]]
    planned = {}
    for seed in args.seeds:
        cbm = f"{args.data}-cbm-s{seed}"
        planned[cbm] = lambda cbm=cbm, seed=seed: record(cbm, [*base, "--model", "cbm", "--seed", str(seed)], runs_dir)
        for setting in args.only or SETTINGS:
            name = f"{args.data}-{setting}-s{seed}"
            flags = [*base, "--model", "sparsecbm", "--seed", str(seed), "--init-from", str(runs_dir / cbm),
                     *SETTINGS[setting]]
            planned[name] = lambda name=name, flags=flags: record(name, flags, runs_dir)
    # Records saved before phase_seconds existed get them from their run's log.
    again = {name: lambda saved, name=name: saved if "phase_seconds" in saved else
             {**saved, "phase_seconds": phase_seconds(runs_dir / name)}
             for name in planned if (runs_dir / name / "train_log.jsonl").exists()}
    run_missing(Path(args.out), "distill" if args.data == "cebab" else f"distill-{args.data}", planned, markdown, again)


if __name__ == "__main__":
    main()
