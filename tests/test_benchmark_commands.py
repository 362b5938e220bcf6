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
