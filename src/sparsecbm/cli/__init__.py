"""The ``sparsecbm`` command line: flags become configs; errors become one line.

User mistakes (bad data, bad flags, missing files) print ``sparsecbm: error: ...``
and exit with status 2, never a traceback.

Only the command being run is built and imported: ``sparsecbm --help`` lists the
commands without loading torch, and ``sparsecbm train ...`` loads what train needs.

The package: ``args`` (the parser), ``inputs`` (data, guard and texts from
the flags), ``commands``, ``editing`` and ``annotating`` (one function per command).
"""

from __future__ import annotations

import importlib
import logging
import sys
from contextlib import contextmanager
from typing import Sequence

from ..settings import SettingError
from .args import COMMAND_NAMES, build_parser

__all__ = ["COMMANDS", "build_parser", "configs_from_args", "main"]


class _TqdmHandler(logging.Handler):
    """Log lines that do not tear progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


@contextmanager
def _transformers_bars(shown: bool):
    """-q hides transformers' own bars too ("Loading weights"); the previous setting comes back after."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    if not shown:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if before:
            hf_logging.enable_progress_bar()


COMMANDS = {  # command -> (module of this package, its function), imported when the command runs
    "train": ("commands", "cmd_train"), "evaluate": ("commands", "cmd_evaluate"),
    "predict": ("commands", "cmd_predict"), "masks": ("commands", "cmd_masks"),
    "explain": ("commands", "cmd_explain"), "intervene": ("editing", "cmd_intervene"),
    "correct": ("editing", "cmd_correct"), "undo": ("editing", "cmd_undo"),
    "convert-gguf": ("commands", "cmd_convert_gguf"), "annotate": ("annotating", "cmd_annotate"),
    "serve": ("editing", "cmd_serve"), "calibrate": ("commands", "cmd_calibrate"),
}


def __getattr__(name: str):
    if name == "configs_from_args":  # imported on use: it needs the training and pruning configs (torch)
        from .inputs import configs_from_args

        return configs_from_args
    raise AttributeError(f"module 'sparsecbm.cli' has no attribute {name!r}")


def _command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs (the first word that names one), or None (``--help``, ``--version``,
    nothing): then the parser lists the commands without building their flags."""
    for word in argv:
        if word in ("-h", "--help", "--version"):
            return None
        if word in COMMAND_NAMES:
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(only=_command_in(argv)).parse_args(argv)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("sparsecbm")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        from .inputs import check_output_files

        check_output_files(args)
        module, function = COMMANDS[args.command]
        command = getattr(importlib.import_module(f".{module}", __name__), function)
        with _transformers_bars(not args.quiet):
            command(args)
    except (ValueError, OSError, FloatingPointError) as e:  # a refused setting is named by its flag
        print(f"sparsecbm: error: {e.as_flags() if isinstance(e, SettingError) else e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = (f"; the best checkpoint so far is in {args.out}; continue with the same command and --resume"
                if args.command == "train" else "")
        print(f"sparsecbm: interrupted{hint}", file=sys.stderr)
        return 130
    return 0
