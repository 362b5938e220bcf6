"""Config fields that carry their own help, so that each default and its
explanation is written once: in the config dataclass, read by the command line.

    @dataclass(frozen=True)
    class TrainConfig:
        epochs: int = setting(5, "training epochs")

:func:`add_flags` turns a dataclass's settings into ``--flag`` options of an
argparse parser (the default shown in the help); :func:`from_flags` builds the
config from the parsed flags. Values are checked once, by the config's
``__post_init__``; a flag's type only turns its text into a number.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import Any, Callable, Sequence


def flag(name: str) -> str:
    """The command line's spelling of a parameter: ``mining_gamma`` -> ``--mining-gamma``."""
    return "--" + name.replace("_", "-")


class SettingError(ValueError):
    """A refused setting. The message starts with the parameter as the Python API spells it
    (``mining_gamma must not be negative``); :meth:`as_flags` spells it, and the ``also``
    parameters the message names, as the command line does (``--mining-gamma must ...``)."""

    def __init__(self, name: str, rest: str, *, also: Sequence[str] = ()) -> None:
        self.name, self.rest, self.also = name, rest, tuple(also)
        super().__init__(name + rest)

    def as_flags(self) -> str:
        rest = self.rest
        for other in self.also:
            rest = re.sub(rf"\b{other}\b", flag(other), rest)
        return flag(self.name) + rest


def setting(default: Any, help: str, *, flag: bool = True, choices: Sequence[str] | None = None,
            metavar: str | None = None, kind: type | None = None, check: Callable[[Any], Any] | None = None,
            off: bool = False) -> Any:
    """A dataclass field with its help text. ``flag=False``: not a command-line option;
    ``kind``: the type of the flag's value when the default does not say (a None default);
    ``check``: the library's check of a value, run on the flag as it is parsed too;
    ``off``: the flag also takes ``off``, for None."""
    return dataclasses.field(default=default, metadata={
        "help": help, "flag": flag, "choices": choices, "metavar": metavar, "kind": kind, "check": check, "off": off})


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def checked(check: Callable[[Any], Any], parse: Callable[[str], Any] = number) -> Callable[[str], Any]:
    """An argparse type: ``parse`` the text, then the library's own ``check`` (a ValueError
    becomes argparse's error), so a flag is refused before any work with the message the
    Python API gives."""
    def convert(text: str) -> Any:
        value = parse(text)
        try:
            return check(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return convert


def flag_settings(config_class: type) -> list[dataclasses.Field]:
    """The settings of ``config_class`` that are command-line options, in field order."""
    return [f for f in dataclasses.fields(config_class) if "help" in f.metadata and f.metadata["flag"]]


def add_flags(parser, config_class: type) -> None:
    """One ``--name`` option per setting of ``config_class`` (argparse parser or group)."""
    for f in flag_settings(config_class):
        add_flag(parser, config_class, f.name)


def add_flag(parser, config_class: type, name: str) -> None:
    """The ``--name`` option of one setting of ``config_class``."""
    [f] = [f for f in dataclasses.fields(config_class) if f.name == name]
    meta = f.metadata
    kind = meta["kind"] or type(f.default)
    options: dict[str, Any] = {"default": f.default, "help": _with_default(meta["help"], f.default)}
    if kind is bool:  # --name / --no-name
        options["action"] = argparse.BooleanOptionalAction
    elif meta["choices"]:
        options["choices"] = list(meta["choices"])
    elif kind in (int, float):
        parse = whole_number if kind is int else number
        parse = checked(meta["check"], parse) if meta["check"] else parse
        options["type"] = (lambda text, parse=parse: None if text == "off" else parse(text)) if meta["off"] else parse
    if meta["metavar"]:
        options["metavar"] = meta["metavar"]
    parser.add_argument(flag(f.name), **options)


def _with_default(help: str, default: Any) -> str:
    return help if "default" in help else f"{help} (default {default})" if default is not None else help


def from_flags(config_class: type, args: argparse.Namespace) -> Any:
    """``config_class`` from the parsed flags of the same names (the others keep their defaults)."""
    names = {f.name for f in dataclasses.fields(config_class)}
    return config_class(**{k: v for k, v in vars(args).items() if k in names})
