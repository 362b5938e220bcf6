"""Writes that never leave a half-written file behind (temporary name, then rename),
a per-folder lock so that a folder is never read while it is half rewritten, and
a lock that lets only one training run write a folder at a time.

The locks are files inside the model folder (``.sparsecbm.lock``,
``.sparsecbm-train.lock``), never beside it: reading a model leaves nothing
in the folder around it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from filelock import FileLock, Timeout

from .settings import SettingError

LOCK_TIMEOUT = 120.0  # seconds to wait for another process's save or load of a folder
FOLDER_LOCK = ".sparsecbm.lock"  # inside a model folder: held while it is saved or loaded
TRAIN_LOCK = ".sparsecbm-train.lock"  # inside a training run's --out: held for the whole run


@contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success it replaces ``path``.

    On any error the temporary is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # mkstemp/mkdtemp create private (0600/0700) entries; give the usual umask modes.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod((0o777 if is_dir else 0o666) & ~umask)
        if is_dir and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as JSON at ``path``, atomically; NumPy scalars and arrays are written as numbers and lists,
    so a result computed with NumPy is not lost to a ``TypeError`` at the very end."""
    text = json.dumps(obj, indent=2, default=_numpy_to_json)  # before the file is touched: a failure leaves it as it was
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def _numpy_to_json(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON: {value!r:.80}")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def folder_lock(path: str | os.PathLike, *, create: bool = True) -> Iterator[None]:
    """Hold the lock of a model folder (``FOLDER_LOCK`` inside it) while reading or
    writing it, so that no load sees a save half done and two saves never mix.
    Temporaries left in the folder by a killed save are removed once the lock is
    held (no live writer can own them then). A read-only folder is read without
    a lock (nobody can write it either)."""
    path = Path(path)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path / FOLDER_LOCK), timeout=LOCK_TIMEOUT)
    try:
        lock.acquire()
    except Timeout:
        raise TimeoutError(f"{path}: another process has held this model folder for over {LOCK_TIMEOUT:g} s") from None
    except (PermissionError, FileNotFoundError):
        if create:
            raise
        yield  # read-only parent: nobody can write the folder
        return
    try:
        remove_orphans(path)
        yield
    finally:
        lock.release()


@contextmanager
def sole_training_run(out: str | os.PathLike) -> Iterator[None]:
    """Hold ``out``'s training lock for a whole run; a second run started on the same folder
    is refused at once (instead of both training and one failing at the end)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SettingError("out", f" {out}: exists and is not a folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / TRAIN_LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SettingError("out", f" {out}: another training run is writing this folder now; wait for it to end "
                           "or choose another out", also=["out"]) from None
    try:
        yield
    finally:
        lock.release()
        if created and [p.name for p in out.iterdir()] == [TRAIN_LOCK]:  # refused before writing anything
            shutil.rmtree(out, ignore_errors=True)


def remove_orphans(path: Path) -> list[Path]:
    """Delete temporaries (``.*.tmp``) that a killed save left in ``path`` (call with the lock held)."""
    removed = []
    if path.is_dir():
        for tmp in path.glob(".*.tmp"):
            try:
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass  # e.g. read-only: harmless, it is only wasted space
    return removed
