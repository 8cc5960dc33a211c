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
    path = Path(path)
    with replaced_on_success(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
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
