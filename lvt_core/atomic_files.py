"""Files written whole or not at all.

A batch worker can be killed, a disk can fill, a writer can raise half-way: a reader must then
still find the previous file (or none), never half of a new one. Every file LVT publishes is
written beside its path and renamed over it, which is atomic on one file system.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced_on_success(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to: it replaces ``path`` when the block ends
    without an error and is removed when it raises. ``suffix`` ends the temporary name, for
    writers that choose the format by it (``.nii.gz``). The process id in the name keeps two
    writers of one path from sharing a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all."""
    return write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all."""
    path = Path(path)
    with replaced_on_success(path) as tmp:
        tmp.write_bytes(data)
    return path


@contextmanager
def published_folder(folder: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``folder`` to fill: renamed to ``folder`` when the block ends
    without an error, removed when it raises. For caches whose content is the same whoever
    computes it: when another process published ``folder`` first, theirs is kept."""
    folder = Path(folder)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        tmp.rename(folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not folder.is_dir():  # not a lost race: say what went wrong
            raise


def check_output_folder(folder: Path) -> None:
    """Refuse (``ValueError``), before any work, an output folder that is a file or lies below one."""
    for path in (folder, *folder.parents):
        if path.exists() and not path.is_dir():
            raise ValueError(f"{folder}: cannot write results there, {path} is a file, not a folder")
        if path.exists():
            return


def check_only_files_of_this_export(folder: Path, names: set[str]) -> None:
    """Refuse (``ValueError``) an output folder holding files other than ``names``: mixed with
    this export, an older or unrelated file would read as part of it (another study's tumor
    beside this one's)."""
    stale = sorted(p.name for p in folder.iterdir() if p.name not in names) if folder.is_dir() else []
    if stale:
        raise ValueError(f"{folder}: holds file(s) this export would not write ({', '.join(stale[:3])}"
                         f"{' …' if len(stale) > 3 else ''}); export into an empty folder or remove them")
