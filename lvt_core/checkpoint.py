"""Checkpoints that know how they were trained: weights plus metadata (nnU-Net's plans idea).

A checkpoint is one ``torch.save`` file ``{"format_version", "meta", "state_dict"}`` that
loads with ``weights_only=True`` (no pickled code). An ensemble (``lvt ensemble``, e.g. the
paper's five cross-validation folds) adds ``"members"``: the weights of its further networks,
which share the first one's metadata; readers that want one network just see the first. ``meta`` says the label space, spacing,
window, patch size, network config, training data, version and metrics, so the predictor
needs nothing else. The file's SHA-256 (:func:`checkpoint_checksum`) identifies a model in
results and the database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from lvt_core.atomic_files import replaced_on_success

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


def _require_meta(path: str | Path, meta: Mapping[str, Any]) -> None:
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise CheckpointError(f"{path}: checkpoint metadata lacks {missing}")


def _stored(state: Mapping[str, torch.Tensor], fp16: bool) -> dict[str, torch.Tensor]:
    return {
        key: value.detach().cpu().half() if fp16 and value.is_floating_point() else value.detach().cpu()
        for key, value in state.items()
    }


def torch_save_atomically(path: str | Path, payload: dict[str, Any]) -> Path:
    """``torch.save`` of ``payload`` to ``path`` whole or not at all: a checkpoint or a training
    state killed mid-write leaves the previous one loadable."""
    path = Path(path)
    with replaced_on_success(path) as tmp:
        torch.save(payload, tmp)
    return path


def save_checkpoint(
    path: str | Path,
    model_state: Mapping[str, torch.Tensor],
    meta: dict[str, Any],
    fp16: bool = False,
    members: Sequence[Mapping[str, torch.Tensor]] = (),
) -> Path:
    """Write weights and metadata atomically; ``fp16`` halves the file (floats stored as half).

    ``members`` are the weights of an ensemble's further networks (same architecture)."""
    _require_meta(path, meta)
    payload: dict[str, Any] = {"format_version": FORMAT_VERSION, "meta": dict(meta),
                               "state_dict": _stored(model_state, fp16)}
    if members:
        payload["members"] = [_stored(member, fp16) for member in members]
    return torch_save_atomically(path, payload)


def _read_payload(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(
            f"{path}: model checkpoint not found. Train one with `lvt train CONFIG` "
            "or point --model / LVT_MODEL_PATH at an existing .pt file."
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty (an interrupted copy?)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types; a bare one says little on its own
        reason = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path}: not a readable LVT checkpoint, not a PyTorch file or a damaged one "
            f"({type(exc).__name__}{': ' + reason if reason else ''})"
        ) from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "meta" not in payload:
        raise CheckpointError(f"{path}: not an LVT checkpoint (no state_dict/meta)")
    _require_meta(path, payload["meta"])
    return payload


def _as_float32(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.float() if value.dtype == torch.float16 else value for key, value in state.items()}


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(state_dict, meta)``; half-precision weights come back as float32.

    For an ensemble this is its first network (enough to start training from)."""
    payload = _read_payload(Path(path))
    return _as_float32(payload["state_dict"]), dict(payload["meta"])


def load_member_states(path: str | Path) -> tuple[list[dict[str, torch.Tensor]], dict[str, Any]]:
    """Read every network's weights (one for a plain checkpoint, all for an ensemble) and meta."""
    payload = _read_payload(Path(path))
    states = [payload["state_dict"], *payload.get("members", [])]
    return [_as_float32(state) for state in states], dict(payload["meta"])


def copy_with_meta(source: str | Path, out: str | Path, meta: dict[str, Any]) -> Path:
    """Copy a checkpoint with new metadata (calibrated decisions, a filter): every network's
    weights are kept exactly as stored, fp16 or not."""
    payload = _read_payload(Path(source))
    _require_meta(out, meta)
    return torch_save_atomically(out, {**payload, "meta": dict(meta)})


def checkpoint_checksum(path: str | Path) -> str:
    """SHA-256 of the checkpoint file (hex), read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
