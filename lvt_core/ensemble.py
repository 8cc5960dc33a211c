"""Ensembles of checkpoints: several networks of one architecture whose probabilities are averaged.

The paper's final model is the ensemble of its five cross-validation folds (``fold: 0`` … ``4``
in a training config); averaging also quiets the false positives one network alone fires on.
An ensemble is one checkpoint file (:mod:`lvt_core.checkpoint`), so everything that takes
``--model`` takes it. The members must see the scan the same way, so every field that changes
the input or the output must match; the decisions (thresholds, peak, smallest tumor) come from
the first member until ``lvt calibrate`` chooses them for the average.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lvt_core.checkpoint import (
    CheckpointError,
    checkpoint_checksum,
    load_member_states,
    save_checkpoint,
)

# metadata that must agree between members: the network and how a scan becomes its input
MUST_MATCH = ("label_space", "channels", "spacing_mm", "window", "patch_size", "network",
              "orientation", "preprocessing")


def _stored_half(path: Path) -> bool:
    raw = torch.load(path, map_location="cpu", weights_only=True)
    return any(value.dtype == torch.float16 for value in raw["state_dict"].values())


def build_ensemble(
    checkpoints: Sequence[str | Path], out: str | Path, version: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Write one checkpoint holding every network of ``checkpoints`` (ensembles are flattened).

    Raises :class:`CheckpointError` naming the file and the field that differs from the first.
    """
    paths = [Path(p) for p in checkpoints]
    if len(paths) < 2:
        raise CheckpointError("an ensemble needs at least two checkpoints")
    out = Path(out)
    if out.resolve() in {p.resolve() for p in paths}:
        raise CheckpointError(f"{out}: the ensemble would overwrite one of its members; choose another --out")
    states: list[dict[str, torch.Tensor]] = []
    sources: list[dict[str, Any]] = []
    first_meta: dict[str, Any] = {}
    for path in paths:
        member_states, meta = load_member_states(path)
        if not first_meta:
            first_meta = meta
        for key in MUST_MATCH:
            if meta.get(key) != first_meta.get(key):
                raise CheckpointError(
                    f"{path}: {key} is {meta.get(key)!r}, but {paths[0]} has {first_meta.get(key)!r}; "
                    "an ensemble's members must share the network and the input they see"
                )
        states.extend(member_states)
        sources.append({"path": str(path), "name": meta["name"], "version": meta["version"],
                        "checksum": checkpoint_checksum(path), "networks": len(member_states)})
    meta = {
        **first_meta,
        "name": name or f"{first_meta['name']}_ensemble",
        "version": version or f"{first_meta['version']}+ensemble{len(states)}",
        "ensemble": {"networks": len(states), "members": sources,
                     "decisions_from": str(paths[0])},
    }
    fp16 = all(_stored_half(path) for path in paths)
    written = save_checkpoint(out, states[0], meta, fp16=fp16, members=states[1:])
    return {"out": str(written), "networks": len(states), "members": sources,
            "version": meta["version"], "fp16": fp16,
            "size_mb": round(written.stat().st_size / 1e6, 2)}
