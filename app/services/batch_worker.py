"""Worker side of ``lvt batch``: segment the series of one day and measure them; files only,
no database.

The series of one study (its contrast phases) are segmented together, so a lesion in one phase
can confirm an unsure candidate in another (:meth:`lvt_core.inference.Predictor.predict_day`).
Runs inside Dask worker processes (or in-process for one worker). The predictor is loaded
once per process and reused. Label maps are written to the content-addressed store by an
atomic rename, so a killed worker never leaves a half-written file at a published path; the
client alone writes database rows, after the file exists.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from app.settings import get_settings
from db import storage
from lvt_core import __version__ as lvt_version
from lvt_core.coverage import liver_coverage
from lvt_core.lesions import extract_lesions
from lvt_core.volumetry import liver_volumes_ml

_PREDICTORS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def get_predictor(checkpoint: str, device: str = "auto") -> Any:
    """The process-wide predictor for ``checkpoint`` (loaded on first use), in the precision
    of this worker's settings (``LVT_PRECISION``)."""
    from lvt_core.inference import Predictor

    key = (str(checkpoint), device)
    with _LOCK:
        if key not in _PREDICTORS:
            _PREDICTORS[key] = Predictor(checkpoint, device=device, precision=get_settings().precision)
        return _PREDICTORS[key]


def measure_labels(
    labels: sitk.Image, image: sitk.Image | None = None,
    faint_points_mm: list[list[float]] | None = None,
    other_phase_points_mm: list[list[float]] | None = None,
) -> dict[str, Any]:
    """Lesions and liver volumes of one label map, as plain JSON-ready values; with the
    segmenter's ``faint_points_mm`` (and ``other_phase_points_mm``) each lesion says who found
    it (``found_by``)."""
    total_ml, functional_ml = liver_volumes_ml(labels)
    lesions = [
        {
            "lesion_index": lesion.id,
            "voxels": lesion.voxels,
            "volume_ml": lesion.volume_ml,
            "longest_axial_diameter_mm": lesion.longest_axial_diameter_mm,
            "short_axis_mm": lesion.short_axis_mm,
            "centroid_mm": list(lesion.centroid_mm),
            "bbox": list(lesion.bbox_index),
            "mean_hu": lesion.mean_hu,
            "found_by": lesion.found_by,
            "cut_by_scan_edge": lesion.cut_by_scan_edge,
        }
        for lesion in extract_lesions(labels, image, faint_points_mm=faint_points_mm,
                                      other_phase_points_mm=other_phase_points_mm or ())
    ]
    return {"total_ml": total_ml, "functional_ml": functional_ml, "lesions": lesions,
            "liver_cut_at": ",".join(liver_coverage(labels).cut_at)}


def segment_day(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Segment the series of ``task["series"]`` (one day's phases; store-relative
    ``image_path`` and ``phase`` each) together and return, per series, what the client stores.

    Never raises for a bad series: its error comes back as ``{"error": ...}`` so the client
    records it and the batch goes on. When the day cannot be segmented together (one image
    unreadable or refused), each readable series is segmented alone.
    """
    start = time.perf_counter()
    outs = [{"series_id": item["series_id"], "worker_pid": os.getpid()} for item in task["series"]]
    images: list[sitk.Image | None] = []
    try:
        threads = int(task.get("threads") or 0)
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        root = Path(task["data_root"])
        predictor = get_predictor(task["checkpoint"], task.get("device", "auto"))
    except Exception as exc:
        return [_failed(out, exc, start) for out in outs]
    for out, item in zip(outs, task["series"], strict=True):
        try:
            images.append(storage.read_stored(item["image_path"], root))
        except Exception as exc:
            _failed(out, exc, start)
            images.append(None)
    readable = [i for i, image in enumerate(images) if image is not None]
    try:
        phases = [task["series"][i].get("phase") or "unknown" for i in readable]
        predicted = dict(zip(readable, predictor.predict_day([images[i] for i in readable], phases), strict=True))
    except Exception:  # one refused image: the others are still segmented, alone
        predicted = {}
        for i in readable:
            try:
                predicted[i] = predictor.predict_day([images[i]])[0]
            except Exception as exc:
                _failed(outs[i], exc, start)
    for i, (labels, info) in predicted.items():
        try:
            rel, sha = storage.store_image(labels, root)
            outs[i].update(measure_labels(labels, images[i], info.get("faint_lesion_points_mm", []),
                                          info.get("cross_phase_points_mm", [])))
            outs[i].update(label_map_path=rel, label_map_hash=sha, precision=predictor.precision,
                           lvt_version=lvt_version, fluid_places=info.get("fluid_places", []))
        except Exception as exc:
            _failed(outs[i], exc, start)
    delay = float(task.get("test_delay_s") or 0.0)
    if delay:  # lets crash tests hit a batch mid-run; never set in production
        time.sleep(delay * len(outs))
    for out in outs:
        out.setdefault("runtime_s", (time.perf_counter() - start) / len(outs))
    return outs


def _failed(out: dict[str, Any], exc: Exception, start: float) -> dict[str, Any]:
    out["error"] = f"{type(exc).__name__}: {exc}"
    out["traceback"] = traceback.format_exc(limit=5)
    out["runtime_s"] = time.perf_counter() - start
    return out
