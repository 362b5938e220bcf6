"""Table 2's rows: which runs it may adopt, and a SparseCBM row per sparsity."""

from dataclasses import asdict

from benchmarks.distill import SETTINGS
from benchmarks.table2 import DATA, plan, settings_differ, tables
from sparsecbm.cli import build_parser, configs_from_args


def _settings(args: list[str]) -> dict:
    train, prune = configs_from_args(build_parser().parse_args(["train", *args, "--out", "unused"]))
    return {"training": asdict(train), "pruning": asdict(prune)}


def test_distills_half_sparsity_runs_are_the_default_sparsecbm_rows_and_the_papers_are_not():
    planned = dict(plan({"table"}, [0]))["cebab-sparsecbm-obs-s0"]
    distill = ["--data", "cebab", *DATA["cebab"], "--model", "sparsecbm", "--seed", "0",
               "--init-from", "runs/distill/cebab-cbm-s0"]
    assert settings_differ(planned, _settings([*distill, *SETTINGS["s0.5"]])) == []
    assert settings_differ(planned, _settings([*distill, *SETTINGS["none"]])) == ["pruning.sparsity 0.75 (now 0.5)"]


def _run(sparsity, task: float) -> dict:
    return {"test": {"task": {"accuracy": task, "macro_f1": task}, "concepts": {"mean": {"accuracy": 0.8, "macro_f1": 0.7}}},
            "settings": {"training": {"bottleneck": "embedding"}, "pruning": {"sparsity": sparsity}}}


def test_sparsecbm_runs_of_different_sparsity_get_rows_of_their_own():
    text = tables({"cebab-sparsecbm-obs-s0": _run(0.5, 0.66), "cebab-sparsecbm-obs-s1": _run(0.5, 0.68),
                   "imdbc-sparsecbm-obs-s0": _run(None, 0.74)})
    rows = [line for line in text.splitlines() if "| SparseCBM" in line]
    assert rows[0].startswith("| MiniLM | SparseCBM, sparsity 0.5 | embedding | 2 / 0 | 80.0 +- 0.0 / 70.0 | 67.0 +- 1.4 / 67.0 |")
    assert rows[1].startswith("| MiniLM | SparseCBM, sparsity 0.75 | embedding | 0 / 1 | - | - |")  # saved null: 1 - 1/K
    assert len(rows) == 2
