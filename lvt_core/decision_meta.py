"""Frozen decision dataclasses (the faint-lesion search, the lesion-edge rule) to and from a
checkpoint's plain-number metadata, so a checkpoint loads with ``weights_only=True``."""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


def decisions_from_meta(cls: type[T], meta: dict | None, tuple_fields: tuple[str, ...] = ()) -> T:
    """``cls`` from the fields of ``meta`` it knows (its defaults when ``meta`` is empty);
    ``tuple_fields`` come back as tuples of floats, as the dataclass is frozen and hashable."""
    if not meta:
        return cls()
    known: dict[str, Any] = {name: meta[name] for name in cls.__dataclass_fields__ if name in meta}  # type: ignore[attr-defined]
    for name in tuple_fields:
        if name in known:
            known[name] = tuple(float(v) for v in known[name])
    return cls(**known)


def decisions_to_meta(decisions: object) -> dict:
    """Plain numbers (tuples as lists) for a checkpoint's metadata."""
    return {name: (list(value) if isinstance(value, tuple) else value)
            for name, value in decisions.__dict__.items()}
