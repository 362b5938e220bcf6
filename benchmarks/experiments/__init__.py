"""One-off experiments whose findings chose a default (docs/decisions.md): run from the repository root as
``python -m benchmarks.experiments.NAME``."""
