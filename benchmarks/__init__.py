"""Scripts that back the statements in docs/ (docs/benchmarks.md): run from the repository root as
``python -m benchmarks.NAME``; each prints its numbers and saves them to benchmarks/results/."""
