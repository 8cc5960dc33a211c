"""``lvt segment``: one CT scan in, ``labels.nii.gz`` (input geometry) and ``summary.json`` out."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import typer
from rich.markup import escape

from app.cli.common import (
    UserError,
    check_output_folder,
    console,
    print_json,
    progress_bar,
    setting_choice,
)
from app.settings import get_settings
from lvt_core import __version__ as lvt_version
from lvt_core.atomic_files import write_text_atomically


def volumes_ml(labels: sitk.Image) -> dict[str, float]:
    """Volumes in ml per class; total liver counts labels 1–3, functional liver leaves out tumors."""
    counts = np.bincount(sitk.GetArrayViewFromImage(labels).ravel(), minlength=4)
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
    return {
        "liver_parenchyma": round(float(counts[1]) * voxel_ml, 3),
        "vessel": round(float(counts[2]) * voxel_ml, 3),
        "tumor": round(float(counts[3]) * voxel_ml, 3),
        "liver_total": round(float(counts[1:4].sum()) * voxel_ml, 3),
        "liver_functional": round(float(counts[1:3].sum()) * voxel_ml, 3),
    }


def intensities_hu(labels: sitk.Image, image: sitk.Image) -> dict[str, dict[str, float] | None]:
    """Each class's CT values (mean, median, standard deviation, 5th and 95th percentile, HU),
    statistics a study reports without running the model again: the parenchyma's mean tells
    fatty liver (unenhanced) or how it enhanced, a tumor's whether it is hypo- or hyperdense.
    None for a class the label map does not hold."""
    classes = {"liver_parenchyma": 1, "vessel": 2, "tumor": 3}
    values = sitk.GetArrayViewFromImage(image)
    drawn = sitk.GetArrayViewFromImage(labels)
    stats: dict[str, dict[str, float] | None] = {}
    for name, label in classes.items():
        inside = values[drawn == label].astype(np.float64)
        if inside.size == 0:
            stats[name] = None
            continue
        p5, median, p95 = np.percentile(inside, [5, 50, 95])
        stats[name] = {"mean": round(float(inside.mean()), 1), "median": round(float(median), 1),
                       "sd": round(float(inside.std()), 1), "p5": round(float(p5), 1), "p95": round(float(p95), 1)}
    return stats


def lesion_list(
    labels: sitk.Image, image: sitk.Image, faint_points_mm: list[list[float]] | None = None
) -> list[dict[str, Any]]:
    """The lesions as ``lvt lesions`` reports them, each saying who found it (``found_by``)
    when the faint-lesion search's points are given (imported lazily: optional at import time)."""
    from lvt_core.lesions import extract_lesions

    return [lesion.to_dict()
            for lesion in extract_lesions(labels, image, faint_points_mm=faint_points_mm)]


def write_source_seg(labels: sitk.Image, input_dir: Path, out: Path, algorithm: str, version: str) -> dict[str, Any]:
    """``seg.dcm``: the label map as a DICOM SEG over the input's own slices (their UIDs, so a
    viewer or PACS overlays it on the series it came from), checked in world space and by
    ``dciodvfy``; ``{"skipped": why}`` where no SEG can be made (an empty label map, an
    enhanced CT). One that fails its checks is not written, and the command fails."""
    import hashlib

    from app.services import dicom_seg
    from lvt_core.atomic_files import replaced_on_success
    from lvt_core.imageio import dicom_series_files

    content_key = hashlib.sha256(sitk.GetArrayViewFromImage(labels).tobytes()).hexdigest()
    try:
        sources = dicom_seg.source_slices_in_order(labels, dicom_series_files(input_dir))
        seg = dicom_seg.build_segmentation(labels, sources, algorithm, version, content_key, lvt_version)
    except ValueError as exc:
        return {"skipped": str(exc)}
    with replaced_on_success(out) as tmp:  # the SEG export's checks; one that fails is not left behind
        seg.save_as(tmp)
        validation = dicom_seg.validated(tmp, labels, out)
    return {"path": str(out), "frames": int(seg.NumberOfFrames),
            "segments": [str(item.SegmentLabel) for item in seg.SegmentSequence],
            "referenced_series_uid": str(sources[0].SeriesInstanceUID), "dciodvfy": validation["dciodvfy"]}


def segment_scan(
    input_path: Path,
    output_dir: Path,
    model: Path | None = None,
    device: str = "auto",
    tta: bool | None = None,
    fast: bool = False,
    faint_search: bool = True,
    precision: str | None = None,
    dicom_seg: bool = True,
) -> dict[str, Any]:
    """Run the whole command and return the summary document (also written to disk); for a
    DICOM folder, also ``seg.dcm`` over its slices unless ``dicom_seg`` is False."""
    from lvt_core.checkpoint import CheckpointError
    from lvt_core.coverage import liver_coverage
    from lvt_core.imageio import ImageReadError, read_image, write_image
    from lvt_core.inference import InputImageError, Predictor, windows_to_meta

    start = time.perf_counter()
    model_path = Path(model) if model is not None else get_settings().model_path
    check_output_folder(output_dir)  # before minutes of inference, not after
    with progress_bar() as progress:
        task = progress.add_task("segment", total=4)
        try:
            progress.update(task, description="loading model")
            predictor = Predictor(model_path, device=device, tta=tta, fast=fast,
                                  precision=precision or get_settings().precision, faint_search=faint_search)
            progress.advance(task)
            progress.update(task, description=f"reading {input_path.name}")
            t_read = time.perf_counter()
            image = read_image(input_path)
            read_s = time.perf_counter() - t_read
            progress.advance(task)
            progress.update(task, description="segmenting")
            labels, timings = predictor.predict_with_timings(image)
            progress.advance(task)
        except (CheckpointError, ImageReadError) as exc:
            raise UserError(str(exc)) from None
        except InputImageError as exc:
            raise UserError(f"{input_path}: {exc}") from None
        except ValueError as exc:  # e.g. --device cuda without a GPU
            raise UserError(str(exc)) from None
        progress.update(task, description="writing results")
        output_dir.mkdir(parents=True, exist_ok=True)
        labels_path = write_image(labels, output_dir / "labels.nii.gz")
        lesions = lesion_list(labels, image, predictor.last_info.get("faint_lesion_points_mm", []))
        coverage = liver_coverage(labels)
        summary: dict[str, Any] = {
            "input": str(input_path),
            "labels": str(labels_path),
            "model": {
                "name": predictor.name,
                "version": predictor.version,
                "sha256": predictor.checksum,
                "path": str(model_path),
            },
            "lvt_version": lvt_version,
            "device": predictor.device.type,
            "precision": predictor.precision,
            "tta": predictor.tta,
            "extra_windows": windows_to_meta(predictor.extra_windows),
            "fast": predictor.fast,
            "faint_search": predictor.faint_search.to_meta() if predictor.faint_search.enabled else None,
            "size": list(labels.GetSize()),
            "spacing_mm": list(labels.GetSpacing()),
            "volumes_ml": volumes_ml(labels),
            "intensity_hu": intensities_hu(labels, image),
            "liver_coverage": coverage.to_dict(),
            "warnings": coverage.warnings(),
            "n_lesions": len(lesions),
            "lesions": lesions,
            "runtime_s": {"read_s": round(read_s, 3), **timings},
            "regions": predictor.last_info,
        }
        if dicom_seg and input_path.is_dir():
            progress.update(task, description="writing the DICOM SEG")
            summary["dicom_seg"] = write_source_seg(labels, input_path, output_dir / "seg.dcm",
                                                    predictor.name, predictor.version)
            if "skipped" in summary["dicom_seg"]:
                summary["warnings"].append(f"no DICOM SEG written: {summary['dicom_seg']['skipped']}")
        summary["runtime_s"]["total_s"] = round(time.perf_counter() - start, 3)
        write_text_atomically(output_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        progress.advance(task)
    return summary


def register(app: typer.Typer) -> None:
    """Add ``lvt segment`` to the root app."""

    @app.command("segment")
    def segment(
        input_path: Path = typer.Option(
            ..., "--input", "-i", help="CT volume (NIfTI, NRRD) or a DICOM series folder."
        ),
        output_dir: Path = typer.Option(..., "--output", "-o", help="Folder for the results."),
        model: Path | None = typer.Option(
            None, "--model", "-m", help="Checkpoint (.pt); default: the shipped model."
        ),
        device: str | None = typer.Option(
            None, "--device", help="auto, cpu or cuda; default LVT_DEVICE, else auto."),
        tta: bool | None = typer.Option(
            None, "--tta/--no-tta", help="Mirroring TTA (default: on for GPU, off for CPU)."
        ),
        fast: bool = typer.Option(False, "--fast", help="Coarse pass only: faster, coarser."),
        faint_search: bool = typer.Option(
            True, "--faint-search/--no-faint-search",
            help="After the network, search the liver for faint lesions, as the model's "
            "checkpoint says (default); --no-faint-search keeps the network's lesions alone.",
        ),
        precision: str | None = typer.Option(
            None, "--precision", help="auto (default: LVT_PRECISION, else the model's qualified one), "
            "fp32, or bf16 on CPUs with AMX or AVX-512 BF16."),
        dicom_seg: bool = typer.Option(
            True, "--dicom-seg/--no-dicom-seg",
            help="For a DICOM series folder, also write seg.dcm: a DICOM SEG over the input's own slices "
            "(default)."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Segment liver, vessels and tumors of one scan: labels.nii.gz + summary.json (+ seg.dcm
        for a DICOM series)."""
        device = setting_choice(device, "--device", "device")  # bad usage (exit 2) before any work
        precision = setting_choice(precision, "--precision", "precision")
        summary = segment_scan(input_path, output_dir, model, device, tta, fast, faint_search, precision, dicom_seg)
        for warning in summary["warnings"]:
            console.print(f"[yellow]warning:[/yellow] {escape(str(input_path))}: {escape(warning)}")
        if as_json:
            print_json(summary)
            return
        vol = summary["volumes_ml"]
        searched = sum(lesion["found_by"] == "faint_search" for lesion in summary["lesions"])
        console.print(
            f"{escape(str(summary['labels']))}: total liver {vol['liver_total']:.1f} ml "
            f"(functional {vol['liver_functional']:.1f} ml), vessels {vol['vessel']:.1f} ml, "
            f"tumors {vol['tumor']:.1f} ml in {summary['n_lesions']} lesions"
            + (f" ({searched} found by the faint-lesion search, not the network)" if searched else "")
            + f"; {summary['runtime_s']['total_s']:.1f} s"
        )
        if "path" in summary.get("dicom_seg", {}):
            seg = summary["dicom_seg"]
            console.print(f"{escape(seg['path'])}: DICOM SEG of {seg['frames']} frames ({', '.join(seg['segments'])}) "
                          f"over series {seg['referenced_series_uid']}")
