"""Checkpoints that know how they were trained: weights plus metadata (nnU-Net's plans idea).

A checkpoint is one ``torch.save`` file ``{"format_version", "meta", "state_dict"}`` that
loads with ``weights_only=True`` (no pickled code). ``meta`` says the label space, spacing,
window, patch size, network config, training data, version and metrics, so the predictor
needs nothing else. The file's SHA-256 (:func:`checkpoint_checksum`) identifies a model in
results and the database.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
REQUIRED_META = (
    "format_version",
    "name",
    "version",
    "label_space",
    "channels",
    "spacing_mm",
    "window",
    "patch_size",
    "network",
    "training_data",
    "created",
    "metrics",
)


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or lacks required metadata; names the path."""


def default_meta(**overrides: Any) -> dict[str, Any]:
    """Metadata with sensible defaults (1 mm, the liver window, 128×128×96 patches)."""
    from lvt_core.labels import CHANNELS
    from lvt_core.network import network_config
    from lvt_core.transforms import DEFAULT_WINDOW

    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": "lvt",
        "version": "0.0.0",
        "label_space": "multilabel",
        "channels": list(CHANNELS),
        "spacing_mm": [1.0, 1.0, 1.0],
        "window": dict(DEFAULT_WINDOW),
        "patch_size": [128, 128, 96],
        "network": network_config(),
        "training_data": [],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "metrics": {},
        "orientation": "LPS",
    }
    meta.update(overrides)
    return meta


def is_antialiased(meta: Mapping[str, Any]) -> bool:
    """Whether the model was trained on anti-aliased resampling (older checkpoints: no)."""
    return bool(dict(meta.get("preprocessing", {})).get("antialiased", False))


def save_checkpoint(
    path: str | Path,
    model_state: Mapping[str, torch.Tensor],
    meta: dict[str, Any],
    fp16: bool = False,
) -> Path:
    """Write weights and metadata atomically; ``fp16`` halves the file (floats stored as half)."""
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise CheckpointError(f"{path}: checkpoint metadata lacks {missing}")
    state = {
        key: (
            value.detach().cpu().half()
            if fp16 and value.is_floating_point()
            else value.detach().cpu()
        )
        for key, value in model_state.items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format_version": FORMAT_VERSION, "meta": dict(meta), "state_dict": state}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(state_dict, meta)``; half-precision weights come back as float32."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: model checkpoint not found. Train one with `lvt train CONFIG` "
            "or point --model / LVT_MODEL_PATH at an existing .pt file."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable LVT checkpoint ({exc})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "meta" not in payload:
        raise CheckpointError(f"{path}: not an LVT checkpoint (no state_dict/meta)")
    meta = dict(payload["meta"])
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise CheckpointError(f"{path}: checkpoint metadata lacks {missing}")
    state = {
        key: value.float() if value.dtype == torch.float16 else value
        for key, value in payload["state_dict"].items()
    }
    return state, meta


def checkpoint_checksum(path: str | Path) -> str:
    """SHA-256 of the checkpoint file (hex), read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
