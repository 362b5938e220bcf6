"""What the benchmark scripts share: a training run as the real CLI in a child
process (its own time and memory), results saved at once and skipped when
rerun, one sitting per results file, and the seed-by-seed sweeps.

    from benchmarks.harness import run_one, run_missing

Scripts run from the repository root as modules: ``python -m benchmarks.table2``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from filelock import FileLock, Timeout

from sparsecbm.files import write_json, write_text


def _child(argv: list[str]) -> float:
    """Run ``sparsecbm ARGV`` in a child process; its wall time in seconds.

    (Peak memory comes from the training process itself: config.json's peak_memory_mb.)
    """
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sparsecbm.cli", "-q", *argv], check=True)
    return time.perf_counter() - start


@contextlib.contextmanager
def sole_writer(path: Path):
    """Hold ``path``'s lock (``.NAME.lock`` beside it) while a benchmark keeps its results there:
    a second sitting of the same benchmark would keep an older copy in memory and overwrite the
    first one's records, so it stops at once, saying so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.parent / f".{path.name}.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SystemExit(f"{path}: another sitting of this benchmark is writing it; wait for it to end") from None
    try:
        yield
    finally:
        lock.release()


def stored_runs(path: Path) -> dict:
    """The runs a resumable benchmark saved in ``path`` (JSON ``{"runs": ...}``), or none yet."""
    return json.loads(path.read_text())["runs"] if path.exists() else {}


# The paper's sparsity per concept, 1 - 1/K for CEBaB's and IMDB-C's 4 concepts: the default until 0.5
# replaced it, pinned by the benchmark settings that ran at it so that their resumed seeds stay comparable.
PAPER_SPARSITY = ["--sparsity", "0.75"]


def run_missing(out: Path, name: str, planned: dict, markdown, again: dict | None = None) -> dict:
    """Run each ``planned`` entry (key -> a function returning its record) that
    ``out/NAME.json`` lacks, saving NAME.json and NAME.md (``markdown(results)``) after
    each, so a stopped sitting loses at most the run it was in, and NAME.md again at the end
    (a sitting that ran nothing rewrites the tables from the results); prints and returns all.
    ``again``: key -> a function of a stored record returning it measured again."""
    path = out / f"{name}.json"
    with sole_writer(path):
        results = stored_runs(path)
        for key, run in planned.items():
            if key in results:
                if again is None or key not in again:
                    continue
                results[key] = again[key](results[key])
            else:
                results[key] = run()
            write_results(path, {"runs": results})
            write_text(out / f"{name}.md", markdown(results))
        tables = markdown(results)
        write_text(out / f"{name}.md", tables)  # also when nothing ran: the tables follow the results
    print(tables)
    return results


def settings_by_seed(doc: str, name: str, settings: dict, run_row, markdown, remeasure=None) -> dict:
    """The command line of a benchmark that runs each setting (``--only``, default all of
    ``settings``) for each seed (``--seeds``, default 0-2): ``run_row(setting, seed)`` for
    every pair ``<out>/NAME.json`` lacks (:func:`run_missing`). With ``remeasure``,
    ``--remeasure`` measures the stored runs again: ``remeasure(setting, seed, record)``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=list(settings))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="benchmarks/results")
    if remeasure is not None:
        parser.add_argument("--remeasure", action="store_true",
                            help="measure the stored runs again from their saved models (no training)")
    args = parser.parse_args()
    pairs = [(setting, seed) for seed in args.seeds for setting in args.only or settings]
    planned = {f"{setting}-s{seed}": functools.partial(run_row, setting, seed) for setting, seed in pairs}
    again = ({f"{setting}-s{seed}": functools.partial(remeasure, setting, seed) for setting, seed in pairs}
             if remeasure is not None and args.remeasure else None)
    return run_missing(Path(args.out), name, planned, markdown, again)


def command_line(module: str, args: argparse.Namespace) -> str:
    """The command that reruns a benchmark with these parsed flags, quoted for a shell: a true
    switch is its flag alone; false, unset and empty flags are left out."""
    words = ["python", "-m", module]
    for key, value in vars(args).items():
        if value is None or value is False or value == []:  # not `in`: 0 == False
            continue
        words.append(f"--{key.replace('_', '-')}")
        if value is not True:
            words += [str(v) for v in (value if isinstance(value, list) else [value])]
    return shlex.join(words)


def machine() -> str:
    """The machine a result was measured on, as every results file records it."""
    import torch  # here, not at the top: a driver that only starts CLI children never loads torch

    return f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def provenance() -> dict:
    """What every results file records of the sitting that wrote it: the command that reruns
    it, the commit (``+dirty`` with uncommitted changes), the package versions and the machine."""
    import torch
    import transformers

    import sparsecbm

    main = sys.modules.get("__main__")
    module = getattr(getattr(main, "__spec__", None), "name", None)
    command = shlex.join(["python", "-m", module, *sys.argv[1:]] if module else [sys.executable, *sys.argv])
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown (not a git checkout)"
    return {"command": command, "commit": commit, "machine": machine(),
            "versions": {"python": platform.python_version(), "sparsecbm": sparsecbm.__version__,
                         "torch": torch.__version__, "transformers": transformers.__version__}}


def write_results(path: Path, data: dict) -> None:
    """Write a results file (atomically), with the :func:`provenance` of this sitting."""
    write_json(path, {**data, "provenance": provenance()})


def table_head(intro: str, columns: list[str]) -> list[str]:
    """The first lines of a results table: a sentence saying what it shows, then the header."""
    return [intro, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def run_one(name: str, args: list[str], runs_dir: Path) -> dict:
    model_dir = runs_dir / name
    # A sitting stopped inside this run continues it (same model as an uninterrupted run).
    again = "--resume" if (model_dir / "resume" / "state.json").exists() else "--overwrite"
    train_argv = ["train", *args, "--out", str(model_dir), again]
    scores_path = model_dir / "test_scores.json"
    eval_argv = ["evaluate", str(model_dir), "--split", "test", "--json", str(scores_path)]
    print(f"== {name}: sparsecbm {shlex.join(train_argv)}", flush=True)
    train_wall = _child(train_argv)
    saved = json.loads((model_dir / "config.json").read_text())
    eval_wall = _child(eval_argv)
    return {
        "commands": [f"sparsecbm {shlex.join(train_argv)}", f"sparsecbm {shlex.join(eval_argv)}"],
        "test": json.loads(scores_path.read_text()),
        "best_epoch": saved["best_epoch"],
        "train_wall_seconds": round(train_wall, 1),  # this sitting's only when the command says --resume
        "train_seconds_all_sittings": saved["wall_seconds"],  # the run's own clock, carried across resumes
        "train_peak_memory_mb": saved["peak_memory_mb"],
        "evaluate_wall_seconds": round(eval_wall, 1),
    }
