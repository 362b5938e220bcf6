"""matplotlib for the figures sparsecbm writes: one owner of its setup."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files only, no display), imported on first
    use: a command that draws nothing never loads matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
