"""Table 2's rows: which runs it may adopt, and a SparseCBM row per sparsity."""

import json

from benchmarks.distill import SETTINGS
from benchmarks.table2 import DATA, adopt, flag_settings, plan, settings_differ, tables


def test_distills_half_sparsity_runs_are_the_default_sparsecbm_rows_and_the_papers_are_not():
    planned = dict(plan({"table"}, [0]))["cebab-sparsecbm-obs-s0"]
    distill = ["--data", "cebab", *DATA["cebab"], "--model", "sparsecbm", "--seed", "0",
               "--init-from", "runs/distill/cebab-cbm-s0"]
    assert settings_differ(planned, flag_settings([*distill, *SETTINGS["s0.5"]])) == []
    assert settings_differ(planned, flag_settings([*distill, *SETTINGS["none"]])) == ["pruning.sparsity 0.75 (now 0.5)"]


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


def _distill_record(seed: int, task: float) -> dict:
    flags = ["--data", "imdbc", *DATA["imdbc"], "--model", "sparsecbm", "--seed", str(seed),
             "--init-from", f"runs/distill/imdbc-cbm-s{seed}", *SETTINGS["s0.5"]]
    return {"test": {"task": {"accuracy": task}}, "flags": flags}


def test_a_rows_seeds_are_adopted_together_even_when_their_folders_are_gone(tmp_path):
    planned = dict(plan({"table"}, [0, 1, 2]))
    old = {f"imdbc-sparsecbm-obs-s{s}": {"test": {"task": {"accuracy": 0.7}}, "settings": flag_settings(
        planned[f"imdbc-sparsecbm-obs-s{s}"][:-2] + ["--sparsity", "0.75"])} for s in range(3)}
    runs = {f"imdbc-s0.5-s{s}": _distill_record(s, 0.6 + s / 100) for s in range(2)}
    (tmp_path / "distill-imdbc.json").write_text(json.dumps({"runs": runs}))
    results = dict(old)
    adopt(results, planned, tmp_path, tmp_path / "table2")
    assert results == old  # seed 2 has not run: the 0.75 row stays whole

    runs["imdbc-s0.5-s2"] = _distill_record(2, 0.62)
    (tmp_path / "distill-imdbc.json").write_text(json.dumps({"runs": runs}))
    adopt(results, planned, tmp_path, tmp_path / "table2")
    assert [results[f"imdbc-sparsecbm-obs-s{s}"]["test"]["task"]["accuracy"] for s in range(3)] == [0.6, 0.61, 0.62]
    assert {results[f"imdbc-sparsecbm-obs-s{s}"]["settings"]["pruning"]["sparsity"] for s in range(3)} == {0.5}
    assert not (tmp_path / "table2").exists()  # no folder to link to
    assert json.loads((tmp_path / "table2.json").read_text())["runs"] == results
