"""Decoded scans kept between calibrations of the cross-phase rule.

Scoring a new rule grid on the validation days needs only each scan's decoded labels and tumor
probability, yet without a cache every calibration runs the network on every scan again (about
40 minutes for 90 clinical scans on 2 cores). With a cache folder, the network runs once per
checkpoint and scan; a later grid on the same cohort is scored in minutes.

An entry is keyed by the checkpoint file's SHA-256 (its weights and every decision stored in
it), the case's files (:meth:`training.datasets.Case.fingerprint`: paths, sizes, times) and the
LVT version, so a changed checkpoint or image is decoded afresh. Decoding code changed within one
version is not seen: clear the folder after changing it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from lvt_core import __version__ as lvt_version

CACHE_FORMAT = 1


def entry_path(folder: Path, checkpoint_sha256: str, case_fingerprint: str) -> Path:
    """Where the decoded scan of one case under one checkpoint is kept."""
    text = f"v{CACHE_FORMAT}|{lvt_version}|{checkpoint_sha256}|{case_fingerprint}"
    return folder / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.npz"


def load_decoded(path: Path) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Labels, tumor probability and decision threshold kept at ``path``; None when there is no
    entry or it cannot be read (a run killed while writing leaves none: writes are atomic)."""
    if not path.exists():
        return None
    try:
        with np.load(path) as entry:
            return entry["labels"], entry["tumor_probability"], float(entry["tumor_threshold"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def save_decoded(path: Path, labels: np.ndarray, tumor_probability: np.ndarray, tumor_threshold: float) -> None:
    """Keep one decoded scan at ``path``, written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".part")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez_compressed(stream, labels=labels.astype(np.uint8),
                                tumor_probability=tumor_probability.astype(np.float16),
                                tumor_threshold=np.float32(tumor_threshold))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
