"""Label heads for interventions (issue 27): which head keeps the decision going through
the concepts. Dense joint CBMs on CEBaB (MiniLM, today's recipe), one head option per
row, three seeds each, and the chosen head through the SparseCBM pipeline; every run is the real CLI (``sparsecbm train`` then ``sparsecbm
evaluate``), then the intervention curves of the trained model on the test split
(random order over every subset and least certain first, true values as 0/1). Each
finished run is saved to benchmarks/results/bottlenecks.json at once and skipped when
the script runs again; a run takes about 4.5 min on 2 CPU cores.

    python -m benchmarks.bottlenecks [--only soft residual-8-p0.5] [--seeds 0 1 2]
    python -m benchmarks.bottlenecks --only embedding-p0.5 --remeasure   # the curves again, no training
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import sparsecbm
from benchmarks.harness import PAPER_SPARSITY, machine, run_one, settings_by_seed, table_head
from sparsecbm.data import dataset_from_spec
from sparsecbm.interventions.curves import intervention_curves
from sparsecbm.training import fit_value_prototypes

RUNS = Path("runs/bottlenecks")
SPARSE = ["--model", "sparsecbm", *PAPER_SPARSITY]
SETTINGS = {
    # Every setting names its head: the defaults changed with this sweep (embedding, P = 0.5).
    "soft": ["--bottleneck", "soft", "--intervention-prob", "0"],  # the paper's head (the default until this sweep)
    "soft-p0.25": ["--bottleneck", "soft", "--intervention-prob", "0.25"],
    "hard-p0.25": ["--bottleneck", "hard", "--intervention-prob", "0.25"],
    "residual-8-p0.5": ["--bottleneck", "soft", "--residual", "8", "--intervention-prob", "0.5"],
    "embedding-p0.25": ["--bottleneck", "embedding", "--intervention-prob", "0.25"],
    "embedding-p0.5": ["--bottleneck", "embedding", "--intervention-prob", "0.5"],
    "residual-8-p0.5-drop0.5": ["--bottleneck", "soft", "--residual", "8", "--intervention-prob", "0.5",
                                "--side-dropout", "0.5"],
    "embedding-residual-8-p0.5-drop0.5": ["--bottleneck", "embedding", "--residual", "8", "--intervention-prob", "0.5",
                                          "--side-dropout", "0.5"],
    # IMDB-C, whose concepts nearly determine the label (the Table 2 protocol: 512 tokens, batches of 8).
    "imdbc-soft": ["--data", "imdbc", "--max-length", "512", "--batch-size", "8", "--bottleneck", "soft",
                   "--intervention-prob", "0"],
    "imdbc-embedding-p0.5": ["--data", "imdbc", "--max-length", "512", "--batch-size", "8", "--bottleneck", "embedding",
                             "--intervention-prob", "0.5"],
    # The chosen head through the whole SparseCBM pipeline: the default recipe (about 34 min a run), and the
    # fast recipe (docs/performance.md; about 18 min), both at the sparsity of their day, the paper's 1 - 1/K.
    "sparsecbm-embedding-p0.5": [*SPARSE, "--bottleneck", "embedding", "--intervention-prob", "0.5"],
    "sparsecbm-embedding-p0.5-fast": [*SPARSE, "--bottleneck", "embedding", "--intervention-prob", "0.5",
                                      "--precision", "bf16", "--length-groups", "8", "--prune-steps", "1",
                                      "--finetune-epochs", "0", "--sparse-epochs", "3"],
    # The default mining (3 steps) with 3 epochs under the final masks instead of 5.
    "sparsecbm-embedding-p0.5-se3": [*SPARSE, "--bottleneck", "embedding", "--intervention-prob", "0.5",
                                     "--sparse-epochs", "3"],
}


def _name(setting: str, seed: int) -> str:
    return f"{'' if setting.startswith('sparsecbm') else 'cbm-'}{setting}-s{seed}"  # a later --model or --data wins


def run_row(setting: str, seed: int) -> dict:
    record = run_one(_name(setting, seed), ["--data", "cebab", "--model", "cbm", "--seed", str(seed), *SETTINGS[setting]], RUNS)
    return remeasure(setting, seed, record)


def remeasure(setting: str, seed: int, record: dict) -> dict:
    """The intervention curves of a trained run; a model trained before value prototypes
    gets them first (from its training texts, saved in its folder)."""
    clf = sparsecbm.load(RUNS / _name(setting, seed))
    data = dataset_from_spec(clf.data_spec)
    if clf.model.head.embedding_dim and clf.model.head.value_prototypes is None:
        fit_value_prototypes(clf, data["train"], progress=True)
        clf.model.head.save_prototypes(RUNS / _name(setting, seed))
    start = time.perf_counter()
    curves = intervention_curves(clf, data["test"], progress=True).to_dict()
    curves["seconds"] = round(time.perf_counter() - start, 1)
    record.update(setting=setting, seed=seed, curves=curves,
                  machine=machine())
    return record


def summary(runs: list[dict]) -> dict[str, float]:
    """Means over seeds of the measures a row of the table shows (fractions), with the
    sample standard deviation over seeds (as Table 2) of the first four as ``<name>_std``."""
    def values(f) -> list[float]:
        return [f(r) for r in runs]

    curves = np.array([r["curves"]["curves"]["random/onehot"] for r in runs])
    curve = curves.mean(0)
    out = {
        "task": values(lambda r: r["test"]["task"]["accuracy"]),
        "concepts": values(lambda r: r["test"]["concepts"]["mean"]["accuracy"]),
        "all_true_gain": list(curves[:, -1] - curves[:, 0]),
        "net_single_fixes": values(lambda r: r["curves"]["single_fixes"]["net"]),
        "hard": values(lambda r: r["curves"]["hard_concepts_task_accuracy"]),
        "share": values(lambda r: r["curves"]["concept_share"]),
        "leakage_gap": values(lambda r: r["test"]["leakage_gap"]),
    }
    result = {key: float(np.mean(v)) for key, v in out.items()}
    result.update({f"{key}_std": float(np.std(out[key], ddof=1)) if len(runs) > 1 else 0.0 for key in ("task", "concepts", "all_true_gain",
                                                                      "net_single_fixes")})
    result.update(curve=[float(p) for p in curve], worst_step=float(np.min(np.diff(curve))))
    return result


def _pm(s: dict, key: str, signed: bool = False) -> str:
    """``s[key]`` in percent, with +- its std over seeds when there are several."""
    text = f"{100 * s[key]:+.1f}" if signed else f"{100 * s[key]:.1f}"
    return text + (f" +- {100 * s[key + '_std']:.1f}" if s["seeds"] > 1 else "")


def markdown(results: dict) -> str:
    lines = table_head(
        "Test accuracy, mean (+- std) over the seeds run, %: CEBaB, dense joint CBMs (MiniLM, today's recipe), "
        "unless the row is `imdbc-` (IMDB-C's 50 test reviews: one review is 2 points) or `sparsecbm-` (the "
        "SparseCBM pipeline). Task and concept accuracy without intervention; the random-order curve (0..4 "
        "concepts set to their true value, 0/1, the exact mean over every subset); its worst step; all concepts "
        "true minus none; one wrong concept set true alone, net labels fixed over every (text, wrong concept) pair; "
        "the head fed hard predicted values; the concepts' share of the winning logit; task accuracy minus the "
        "gold-concept ceiling.",
        ["head", "flags", "seeds", "task", "concepts", "curve 0-4 true", "worst step", "all true - none",
         "net single fixes", "hard concepts", "concepts' share", "leakage gap"])
    for setting, flags in SETTINGS.items():
        runs = [r for r in results.values() if r["setting"] == setting]
        if not runs:
            continue
        s = {**summary(runs), "seeds": len(runs)}
        lines.append(
            f"| {setting} | `{' '.join(flags) or '-'}` | {len(runs)} | {_pm(s, 'task')} | {_pm(s, 'concepts')} "
            f"| {' / '.join(f'{100 * p:.1f}' for p in s['curve'])} | {100 * s['worst_step']:+.1f} "
            f"| {_pm(s, 'all_true_gain', True)} | {_pm(s, 'net_single_fixes', True)} | {100 * s['hard']:.1f} "
            f"| {100 * s['share']:.1f} | {100 * s['leakage_gap']:+.1f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """The random-order curve of each CEBaB setting (mean over its seeds), one line each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sparsecbm.files import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for setting in SETTINGS:
        runs = [r for r in results.values() if r["setting"] == setting]
        if runs and not setting.startswith("imdbc"):
            s = summary(runs)
            ax.plot(range(len(s["curve"])), [100 * p for p in s["curve"]], "o-",
                    label=f"{setting} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
    ax.set_xlabel("concepts set to their true value (random order, every subset)")
    ax.set_ylabel("CEBaB test task accuracy (%)")
    ax.set_xticks(range(5))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main() -> None:
    results = settings_by_seed(__doc__, "bottlenecks", SETTINGS, run_row, markdown, remeasure)
    plot(results, Path("benchmarks/results/bottlenecks.png"))


if __name__ == "__main__":
    main()
