"""Small helpers shared by the importers: volume names and case ids."""

from __future__ import annotations

import re
from pathlib import Path

from lvt_core.imageio import is_volume_file

_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def stem(path: Path) -> str:
    """File name without its volume suffix (``liver_3.nii.gz`` → ``liver_3``)."""
    name = path.name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def volumes(folder: Path) -> list[Path]:
    """Volume files directly in ``folder``, sorted, without macOS ``._`` resource forks."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_volume_file(p) and not p.name.startswith("._"))


def case_number(name: str) -> int | None:
    """The last integer in a name (``hepaticvessel_007`` → 7), used to match cases."""
    numbers = re.findall(r"\d+", name)
    return int(numbers[-1]) if numbers else None
