"""Faster settings for the whole pipeline against today's default, seed by seed (issue 13).

Each row is `make run`'s training command (``sparsecbm train --data cebab --model
sparsecbm``: dense joint CBM, three OBS mining steps with fine-tuning between them,
five sparse epochs) with the row's flags, for seeds 0-2. The default's rows are
Table 2's (benchmarks/results/table2.json): its dense CBM ``cebab-cbm-sS`` and the
SparseCBM ``cebab-sparsecbm-obs-sS`` trained from it with the default flags, which is
what `make run` trains for seed S; their times come from the two runs' training
logs (kept in results/fast_pipeline_default_minutes.json for a checkout without
runs/). A setting keeps the results when the mean of its 3 seeds is within 2 standard
deviations of the default's 3 seeds (test concept and task accuracy, each), and the
time column says whether it reaches the 10-minute target. Every run is the real CLI
(foundation.py), saved to benchmarks/results/fast_pipeline.json as soon as it ends
and skipped when the script runs again (an interrupted run is resumed). Times are
only comparable when measured on an idle machine: run nothing else meanwhile.

    python -m benchmarks.experiments.fast_pipeline [--only bf16 fast] [--seeds 0 1 2]
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from benchmarks.harness import run_one, settings_by_seed, table_head, write_results
from benchmarks.pipeline import phase_seconds

SETTINGS = {
    "bf16": ["--precision", "bf16"],  # training passes under bfloat16 autocast
    # Aimed at the 10-minute target: bf16, batches of similar length, the masks mined in one OBS step
    # (the default's three steps cost ~1.5 min each plus a fine-tuning epoch after each), and three
    # sparse epochs instead of five; the dense phase keeps its five epochs (its best epoch is the last
    # on every Table 2 seed).
    "fast": ["--precision", "bf16", "--length-groups", "8", "--prune-steps", "1", "--finetune-epochs", "0",
             "--sparse-epochs", "3"],
}
TABLE2 = Path("benchmarks/results/table2.json")
RUNS = Path("runs/fast_pipeline")
DEFAULT_MINUTES = Path("benchmarks/results/fast_pipeline_default_minutes.json")


def log_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


def phases(log: list[dict], dense_log: list[dict] | None = None) -> dict[str, float]:
    """Minutes of the dense phase, of the mining steps with their fine-tuning, and of the
    sparse epochs, from a run's training log (clock seconds at the end of each record).
    ``dense_log``: the log of the dense CBM the run started from (``--init-from``; the
    run's own clock then starts at 0)."""
    ends = phase_seconds(log)
    dense = ends["dense"] if dense_log is None else phase_seconds(dense_log)["cbm"]
    offset = 0.0 if dense_log is None else dense
    mined = offset + max(v for k, v in ends.items() if k.startswith("prune"))
    total = offset + ends["sparsecbm"]
    return {"dense": dense / 60, "mining": (mined - dense) / 60, "sparse": (total - mined) / 60, "total": total / 60}


def default_rows(seeds: list[int]) -> dict[str, dict]:
    """Table 2's default rows with their phase minutes, read from the two runs' training
    logs when ``runs/table2`` holds them (and then kept in DEFAULT_MINUTES), else from
    DEFAULT_MINUTES: a new checkout has no ``runs/``."""
    runs = json.loads(TABLE2.read_text())["runs"]
    kept = json.loads(DEFAULT_MINUTES.read_text()) if DEFAULT_MINUTES.exists() else {}
    before = dict(kept)
    rows = {}
    for seed in seeds:
        sparse, dense = Path(f"runs/table2/cebab-sparsecbm-obs-s{seed}"), Path(f"runs/table2/cebab-cbm-s{seed}")
        if (sparse / "train_log.jsonl").exists() and (dense / "train_log.jsonl").exists():
            kept[f"s{seed}"] = phases(log_of(sparse), log_of(dense))
        elif f"s{seed}" not in kept:
            raise SystemExit(f"{sparse}/train_log.jsonl is missing and {DEFAULT_MINUTES} has no seed {seed}: "
                             f"run `python -m benchmarks.table2 --only table --data cebab --seeds {seed}` first")
        rows[f"default-s{seed}"] = {"setting": "default", "seed": seed,
                                    "test": runs[f"cebab-sparsecbm-obs-s{seed}"]["test"], "minutes": kept[f"s{seed}"]}
    if kept != before:
        write_results(DEFAULT_MINUTES, kept)
    return rows


def run_row(name: str, seed: int) -> dict:
    argv = ["--data", "cebab", "--model", "sparsecbm", "--seed", str(seed), *SETTINGS[name]]
    record = run_one(f"{name}-s{seed}", argv, RUNS)
    return {"setting": name, "seed": seed, **record, "minutes": phases(log_of(RUNS / f"{name}-s{seed}"))}


def accuracies(record: dict) -> tuple[float, float]:
    t = record["test"]
    return 100 * t["concepts"]["mean"]["accuracy"], 100 * t["task"]["accuracy"]


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f} +- {statistics.stdev(values) if len(values) > 1 else 0:.1f}"


def markdown(results: dict, default: dict) -> str:
    lines = table_head(
        "CEBaB test, MiniLM, the whole pipeline (`sparsecbm train --data cebab --model sparsecbm` plus the setting's "
        "flags). Minutes from the training logs, as logged: a run that shared the machine with another job is slower "
        "(the default's from Table 2's runs).",
        ["setting", "seed", "concepts", "task", "dense min", "mining + fine-tuning min", "sparse epochs min",
         "total min"])
    rows = {**default, **results}
    groups: dict[str, list[dict]] = {}
    for r in sorted(rows.values(), key=lambda r: (r["setting"] != "default", r["setting"], r["seed"])):
        groups.setdefault(r["setting"], []).append(r)
        c, t = accuracies(r)
        m = r["minutes"]
        lines.append(f"| {r['setting']} | {r['seed']} | {c:.1f} | {t:.1f} | {m['dense']:.1f} | {m['mining']:.1f} "
                     f"| {m['sparse']:.1f} | {m['total']:.1f} |")
    base = [accuracies(r) for r in groups.get("default", [])]
    lines += ["", "| setting | seeds | concepts | task | total min (median) | within 2 std of the default | <= 10 min |",
              "|---|---|---|---|---|---|---|"]
    for name, group in groups.items():
        acc = [accuracies(r) for r in group]
        minutes = statistics.median(r["minutes"]["total"] for r in group)
        verdict = "-"
        if name != "default" and len(base) > 1:
            ok = all(abs(statistics.mean(a[i] for a in acc) - statistics.mean(b[i] for b in base))
                     <= 2 * statistics.stdev(b[i] for b in base) for i in (0, 1))
            verdict = "yes" if ok else "no"
        lines.append(f"| {name} | {len(group)} | {_mean_std([a[0] for a in acc])} | {_mean_std([a[1] for a in acc])} "
                     f"| {minutes:.1f} | {verdict} | {'yes' if minutes <= 10 else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    default = default_rows([0, 1, 2])
    settings_by_seed(__doc__, "fast_pipeline", SETTINGS, run_row, lambda results: markdown(results, default))


if __name__ == "__main__":
    main()
