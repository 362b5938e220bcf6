"""The paper's Table 2 for our backbones, the pruner comparison and the sparsity sweep (Fig. 5).

Every run is the real CLI in a child process (see foundation.py). SparseCBM
runs after the first reuse the dense CBM of the same data set and seed
(``--init-from``), so pruners and sparsities are compared from one starting
point.

    python benchmarks/table2.py                         # everything (hours on 2 cores)
    python benchmarks/table2.py --only table            # Standard / CBM / SparseCBM on CEBaB and IMDB-C
    python benchmarks/table2.py --only pruners sweep    # CEBaB: obs vs magnitude vs wanda; s in {.5,.75,.9,.95}
    python benchmarks/table2.py --only decoder          # SparseCBM on SmolLM2-135M (CEBaB subset)
    python benchmarks/table2.py --only modes            # CEBaB CBM trained sequential / independent (Koh et al.)
    python benchmarks/table2.py --seeds 0 1 2           # mean over seeds

Writes table2.json / table2.md, and sparsity_sweep.png / .md, to --out.
Results already in table2.json are kept; a run is redone only when asked.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from foundation import run_one  # benchmarks/ is on sys.path when run as a script

from sparsecbm.files import atomic_path, write_json, write_text

DATA = {
    "cebab": [],
    "imdbc": ["--max-length", "512", "--epochs", "10", "--batch-size", "8"],
}
# IMDB-C: K = 4 concepts, texts of 512 tokens: a SparseCBM epoch costs ~5 dense ones on 2 cores, so its
# mining and fine-tuning are shortened (stated in the table).
IMDBC_SPARSE = ["--max-length", "512", "--batch-size", "8", "--epochs", "2", "--fisher-grads", "16",
                "--fisher-batch-size", "4", "--prune-steps", "2", "--finetune-epochs", "0.5"]
SWEEP = (0.5, 0.75, 0.9, 0.95)
# The sweep uses the pruner comparison's short protocol: 3 cubic steps, no fine-tuning between, 1 final epoch.
SHORT = ["--finetune-epochs", "0", "--epochs", "1"]
DECODER = ["--backbone", "smollm2-135m", "--max-train", "300", "--max-eval", "300", "--batch-size", "8"]
# SmolLM2 has 106M prunable weights: m = 16 gradients, so blocks of B = 8 (m > B keeps each block's
# empirical Fisher full rank; with B = 50 and m = 16 the damped Fisher was not positive definite at
# damp 1e-7), one mining step, and the Fisher then fits in one 3.2 GiB group.
DECODER_SPARSE = [*DECODER, "--epochs", "2", "--fisher-grads", "16", "--block-size", "8", "--prune-steps", "1",
                  "--finetune-epochs", "0"]
# Runs that an earlier benchmark already made with exactly the arguments planned here (seed 0 is the default).
ADOPT = {
    "cebab-standard-s0": ("foundation.json", "cebab-standard", "runs/foundation/cebab-standard"),
    "cebab-cbm-s0": ("foundation.json", "cebab-cbm", "runs/foundation/cebab-cbm"),
    "imdbc-standard-s0": ("foundation.json", "imdbc-standard", "runs/foundation/imdbc-standard"),
    "imdbc-cbm-s0": ("foundation.json", "imdbc-cbm", "runs/foundation/imdbc-cbm"),
    "cebab-cbm-smollm2-s0": ("foundation.json", "cebab-cbm-smollm2", "runs/foundation/cebab-cbm-smollm2"),
    "cebab-sparsecbm-obs-s0": ("pipeline.json", None, "runs/pipeline/cebab-sparsecbm"),
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
                sparse_extra = IMDBC_SPARSE if data == "imdbc" else []
                runs.append((f"{data}-sparsecbm-obs-s{seed}", _sparse(data, sparse_extra, s, "obs", None, seed)))
        if "modes" in parts:
            for mode in ("sequential", "independent"):
                runs.append((f"cebab-cbm-{mode}-s{seed}", ["--data", "cebab", "--model", "cbm", "--cbm-mode", mode, *s]))
        if "pruners" in parts:
            for pruner in ("magnitude", "wanda"):
                runs.append((f"cebab-sparsecbm-{pruner}-s{seed}", _sparse("cebab", [], s, pruner, None, seed)))
        if "sweep" in parts:
            for sparsity in SWEEP:
                runs.append((f"cebab-sweep-{sparsity}-s{seed}", _sparse("cebab", SHORT, s, "obs", sparsity, seed)))
        if "decoder" in parts:
            runs.append((f"cebab-cbm-smollm2-s{seed}", ["--data", "cebab", "--model", "cbm", *DECODER, "--epochs", "2", *s]))
            runs.append((f"cebab-sparsecbm-smollm2-s{seed}",
                         ["--data", "cebab", "--model", "sparsecbm", *DECODER_SPARSE, *s,
                          "--init-from", f"runs/table2/cebab-cbm-smollm2-s{seed}"]))
    return runs


def adopt(results: dict, out: Path, runs_dir: Path) -> None:
    """Take runs an earlier benchmark already made (same arguments) instead of training them again."""
    for name, (source, key, model_dir) in ADOPT.items():
        if name in results or not (out / source).exists() or not Path(model_dir).is_dir():
            continue
        record = json.loads((out / source).read_text())
        record = record["runs"][key] if key else record
        results[name] = {**record, "adopted_from": f"{source} ({model_dir})"}
        link = runs_dir / name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path(model_dir).resolve(), target_is_directory=True)


def _sparse(data: str, extra: list[str], seed_args: list[str], pruner: str, sparsity: float | None, seed: int) -> list[str]:
    args = ["--data", data, "--model", "sparsecbm", *extra, *seed_args, "--pruner", pruner,
            "--init-from", f"runs/table2/{data}-cbm-s{seed}"]
    return args + (["--sparsity", str(sparsity)] if sparsity is not None else [])


def _mean(runs: list[dict], path: tuple[str, ...]) -> float | None:
    if not runs:
        return None
    values = []
    for r in runs:
        v = r["test"]
        for key in path:
            if key not in v:
                return None
            v = v[key]
        values.append(v)
    return statistics.mean(values)


def _cell(runs: list[dict], *path: str) -> str:
    acc, f1 = _mean(runs, (*path, "accuracy")), _mean(runs, (*path, "macro_f1"))
    return "-" if acc is None else f"{100 * acc:.1f} / {100 * f1:.1f}"


def tables(results: dict) -> str:
    def group(prefix: str) -> list[dict]:
        return [r for name, r in results.items() if name.rsplit("-s", 1)[0] == prefix]

    lines = [
        "Test split, accuracy / macro-F1 in % (standard macro-F1), mean over the seeds that ran.",
        "",
        "| backbone | model | CEBaB concept | CEBaB task | IMDB-C concept | IMDB-C task |",
        "|---|---|---|---|---|---|",
    ]
    for label, model in (("Standard", "standard"), ("CBM", "cbm"), ("CBM, sequential", "cbm-sequential"),
                         ("CBM, independent", "cbm-independent"), ("SparseCBM", "sparsecbm-obs")):
        c, i = group(f"cebab-{model}"), group(f"imdbc-{model}")
        if c or i:
            lines.append(f"| MiniLM | {label} | {_cell(c, 'concepts', 'mean')} | {_cell(c, 'task')} "
                         f"| {_cell(i, 'concepts', 'mean')} | {_cell(i, 'task')} |")
    for label, model in (("CBM", "cbm-smollm2"), ("SparseCBM", "sparsecbm-smollm2")):
        d = group(f"cebab-{model}")
        if d:
            lines.append(f"| SmolLM2-135M (4-bit GGUF -> fp32), 300 CEBaB train rows | {label} "
                         f"| {_cell(d, 'concepts', 'mean')} | {_cell(d, 'task')} | - | - |")
    lines += [
        "",
        "Protocols: SparseCBM starts from the CBM row above it (`--init-from`) and prunes each concept to "
        "1 - 1/K. CEBaB MiniLM: 3 cubic OBS steps (m = 64), 1 fine-tuning epoch between steps, 5 final epochs. "
        f"IMDB-C (K = 4, 512 tokens) is shortened: `{' '.join(IMDBC_SPARSE)}`. "
        f"SmolLM2 is shortened: `{' '.join(DECODER_SPARSE)}`. "
        "The exact command of every cell is in table2.json.",
    ]
    pruners = [(p, group(f"cebab-sparsecbm-{p}")) for p in ("obs", "magnitude", "wanda")]
    if sum(bool(g) for _, g in pruners) > 1:
        lines += ["", "CEBaB, sparsity 1 - 1/K = 0.75, same dense CBM:", "",
                  "| pruner | concept | task |", "|---|---|---|"]
        lines += [f"| {p} | {_cell(g, 'concepts', 'mean')} | {_cell(g, 'task')} |" for p, g in pruners if g]
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--only", nargs="*", choices=("table", "pruners", "sweep", "decoder", "modes"))
    parser.add_argument("--seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--redo", action="store_true", help="rerun runs already in table2.json")
    args = parser.parse_args()
    out = Path(args.out)
    json_path = out / "table2.json"
    results = json.loads(json_path.read_text())["runs"] if json_path.exists() else {}
    adopt(results, out, Path("runs/table2"))
    for name, run_args in plan(set(args.only or ("table", "pruners", "sweep", "decoder", "modes")), args.seeds):
        if name in results and not args.redo:
            continue
        results[name] = run_one(name, run_args, Path("runs/table2"))
        write_json(json_path, {"runs": results})
        write_text(out / "table2.md", tables(results))
        sweep(results, out)
    print((out / "table2.md").read_text())


if __name__ == "__main__":
    main()
