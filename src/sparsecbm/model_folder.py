"""A model folder's config.json: its save format, reading and checking it, and what a save finds on disk."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "sparsecbm"
FORMAT_VERSION = 2  # CHANGELOG.md says what each version changed; every earlier one still loads


@dataclass(frozen=True)
class DiskState:
    """What a save finds in a folder's config.json."""

    revision: int | None  # None without a config; 0 for folders written before revisions (or a damaged config)
    format_version: int  # the save format of the weights there (today's when there is none to read)


def disk_state(path: Path) -> DiskState:
    """The revision and save format in ``path``/config.json, read once. A damaged config: loading
    it names the problem; saving over it is allowed."""
    config = path / "config.json"
    if not config.exists():
        return DiskState(revision=None, format_version=FORMAT_VERSION)
    try:
        saved = json.loads(config.read_text(encoding="utf-8"))
        return DiskState(revision=int(saved.get("revision", 0)),
                         format_version=int(saved.get("format_version", FORMAT_VERSION)))
    except (OSError, ValueError, TypeError, AttributeError, UnicodeDecodeError):
        return DiskState(revision=0, format_version=FORMAT_VERSION)


def read_config(config_path: Path) -> dict[str, Any]:
    """A model folder's config.json, checked: JSON, sparsecbm's, a format this version reads,
    the keys every folder has; else one ValueError naming the file and what is wrong."""
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{config_path}: not valid JSON ({e}); the model folder is damaged") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{config_path}: expected a JSON object, got {type(meta).__name__}; the model folder is damaged")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{config_path}: not a sparsecbm model (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{config_path}: format_version {version!r} is not one sparsecbm wrote (it writes "
                         f"{FORMAT_VERSION}); the model folder is damaged or was edited by hand")
    if version > FORMAT_VERSION:
        raise ValueError(f"{config_path}: written by a newer sparsecbm (format {version}); upgrade sparsecbm")
    missing = [key for key in ("model", "backbone_config", "max_length") if key not in meta]
    if missing:
        raise ValueError(f"{config_path}: missing key(s) {missing}; the model folder is damaged")
    return meta
