"""The ``sparsecbm`` command line: flags become configs; errors become one line.

User mistakes (bad data, bad flags, missing files) print ``sparsecbm: error: ...``
and exit with status 2, never a traceback.

The package: ``args`` (the parser), ``inputs`` (data, guard and texts from
the flags), ``commands``, ``editing`` and ``annotating`` (one function per command).
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Sequence

from tqdm.auto import tqdm

from .annotating import cmd_annotate
from .args import build_parser
from .commands import cmd_convert_gguf, cmd_evaluate, cmd_explain, cmd_masks, cmd_predict, cmd_train
from .editing import cmd_correct, cmd_intervene, cmd_serve, cmd_undo
from .inputs import check_output_files, configs_from_args

__all__ = ["COMMANDS", "build_parser", "configs_from_args", "main"]


class _TqdmHandler(logging.Handler):
    """Log lines that do not tear progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
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


COMMANDS = {
    "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "masks": cmd_masks,
    "explain": cmd_explain, "intervene": cmd_intervene, "correct": cmd_correct, "undo": cmd_undo,
    "convert-gguf": cmd_convert_gguf, "annotate": cmd_annotate,
    "serve": cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("sparsecbm")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        check_output_files(args)
        with _transformers_bars(not args.quiet):
            COMMANDS[args.command](args)
    except (ValueError, OSError, FloatingPointError) as e:
        print(f"sparsecbm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = (f"; the best checkpoint so far is in {args.out}; continue with the same command and --resume"
                if args.command == "train" else "")
        print(f"sparsecbm: interrupted{hint}", file=sys.stderr)
        return 130
    return 0
