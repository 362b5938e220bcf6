"""The command a benchmark saves beside its results reruns it: parsed again, it gives the same flags."""

import argparse
import shlex

from benchmarks.harness import command_line


def test_a_saved_command_parses_back_to_the_same_flags():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", nargs="*")
    parser.add_argument("--guarded-only", action="store_true")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--redo", nargs="*", default=[])
    parser.add_argument("--caution", type=float, default=1e4)
    parser.add_argument("--out")
    args = parser.parse_args(["--rules", "taylor r=auto", "paper r=1%", "--guarded-only", "--caution", "0",
                              "--out", "a dir/x"])
    command = command_line("benchmarks.intervention", args)
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "benchmarks.intervention"]
    assert "True" not in words and "--redo" not in words  # a switch is its flag alone; empty lists are left out
    assert parser.parse_args(words[3:]) == args


def test_a_results_file_records_its_command_commit_and_versions(tmp_path, monkeypatch):
    import json
    import sys

    from benchmarks.harness import write_results

    monkeypatch.setattr(sys, "argv", ["benchmarks/throughput.py", "--out", "x y"])
    write_results(tmp_path / "r.json", {"runs": {"a": 1}})
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["runs"] == {"a": 1}
    p = saved["provenance"]
    assert p["command"].endswith("--out 'x y'")  # quoted for a shell
    assert len(p["commit"].split("+")[0]) == 40 and set(p["versions"]) == {"python", "sparsecbm", "torch", "transformers"}


def test_a_saved_runs_settings_become_flags_that_train_it_again():
    from dataclasses import asdict

    from benchmarks.edits_retrain import recipe_flags
    from sparsecbm.cli import build_parser, configs_from_args
    from sparsecbm.pruning import PruneConfig
    from sparsecbm.training import TrainConfig

    train = TrainConfig(model="sparsecbm", epochs=3, lr=2e-4, bottleneck="soft", seed=2, intervention_prob=0.0)
    prune = PruneConfig(distill_weight=0.3, distill_interventions=False, sparsity=0.6)
    flags = recipe_flags(asdict(train), TrainConfig) + recipe_flags(asdict(prune), PruneConfig)
    assert "--no-distill-interventions" in flags and "--model" not in flags
    args = build_parser().parse_args(["train", "--data", "cebab", "--out", "o", "--model", "sparsecbm", *flags])
    assert configs_from_args(args) == (train, prune)


def test_every_distill_setting_is_a_valid_sparsecbm_command():
    from benchmarks.distill import SETTINGS
    from sparsecbm.cli import build_parser, configs_from_args

    for name, flags in SETTINGS.items():
        args = build_parser().parse_args(["train", "--data", "cebab", "--out", "o", "--model", "sparsecbm", *flags])
        _, prune = configs_from_args(args)  # a flag the CLI does not know, or a bad value, fails here
        assert prune.distill_weight == float(flags[flags.index("--distill-weight") + 1]), name


def test_edit_results_are_averaged_over_the_seeds_of_a_folder_and_checked_against_the_targets():
    from benchmarks.edits import seed_means

    def single(model, kept, locality):
        return {"model": model, "setting": "default", "edits": [], "kept": kept, "corrections": 60, "kept_share": kept / 60,
                "reliability": 1.0, "generalisation": 0.7, "sibling_harm": 0.0, "locality": locality,
                "unrelated_concept_accuracy_change": -0.1}

    results = {"a": single("runs/m-s0", 50, 0.992), "b": single("runs/m-s1", 44, 0.990), "c": single("runs/other", 60, 1.0),
               "d": {"model": "runs/m-s2", "setting": "stream", "eval_split": {}}}  # a stream record is not a single correction
    header, row = seed_means(results)[2], seed_means(results)[-1]
    assert "kept (>= 80)" in header and row.startswith("| runs/m-s* | default | 2 |")
    assert "78.3 (73.3 - 83.3) unmet" in row and "99.1 (99.0 - 99.2) |" in row  # 47 of 60 kept on average
    assert seed_means({"a": results["a"], "c": results["c"]}) == []  # no setting with two seeds


def test_a_chosen_setting_reads_the_dev_runs_and_names_the_command_for_those_missing(tmp_path):
    """benchmarks/edits.py's replay and stream-replay choose among runs saved on dev, one per learning rate."""
    import json

    import pytest

    from benchmarks.edits import chosen_run

    path = tmp_path / "edits-dev.json"
    single = {"m:a": {"generalisation": 0.9, "locality": 0.98}, "m:b": {"generalisation": 0.5, "locality": 0.995},
              "m:c": {"generalisation": 0.4, "locality": 0.999}}
    stream = {f"m:{name}": {"eval_split": {"after": {"concept_accuracy": acc}}} for name, acc in (("x", 0.85), ("y", 0.86))}
    path.write_text(json.dumps({"runs": {**single, **stream}}))
    assert chosen_run("m", ("a", "b", "c"), path) == "b"  # the most general of those local enough
    assert chosen_run("m", ("a",), path) == "a"  # none local enough: the most local
    assert chosen_run("m", ("x", "y"), path) == "y"
    with pytest.raises(SystemExit, match="--split dev --models m --only d"):
        chosen_run("m", ("a", "d"), path)
