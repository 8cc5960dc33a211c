"""``lvt lesions``, ``lvt track`` and ``lvt volumetry``: lesion analytics on label-map files.

Standalone commands for researchers and scripts: no database, just files in and one JSON
document (``--json``) or a table out. Shapes follow ARCHITECTURE.md.
"""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import typer
from rich.markup import escape
from rich.table import Table

from app.cli.common import UserError, console, fail, print_json, stdout, track


def _read(path: Path, what: str) -> sitk.Image:
    from lvt_core.imageio import ImageReadError, read_image

    try:
        return read_image(path)
    except ImageReadError as exc:
        raise UserError(f"{exc} ({what})") from None


def read_labelmap(path: Path) -> sitk.Image:
    """Read an LVT label map, refusing values other than the integers 0..3 with a clear message."""
    image = _read(path, "label map")
    array = sitk.GetArrayViewFromImage(image)
    bad = (array < 0) | (array > 3) | (np.mod(array, 1) != 0)
    if bad.any():
        values = np.unique(np.asarray(array)[bad])[:5].tolist()
        raise UserError(
            f"{path}: not an LVT label map (values must be 0..3: 0 background, 1 liver, "
            f"2 vessel, 3 tumor; found {values})"
        )
    return sitk.Cast(image, sitk.sitkUInt8)


def read_ct_of(path: Path, labels: sitk.Image, labelmap: Path, what: str) -> sitk.Image:
    """Read the CT a label map was drawn on, refusing a CT of another grid: resampled, a CT
    that missed the lesion gave a mean HU of -1024 (the fill) and another study's CT a
    plausible wrong one, without a word. ``lvt segment`` writes labels on its input's grid."""
    from lvt_core.metrics import check_same_grid

    ct = _read(path, what)
    try:
        check_same_grid(ct, labels, what="CT", against="label map")
    except ValueError as exc:
        raise UserError(f"{path} ({what}) is not the CT of {labelmap}: {exc}") from None
    return ct


def _split_paths(values: list[str] | None) -> list[Path]:
    """``--images a --images b`` or ``--images a,b``."""
    out: list[Path] = []
    for value in values or []:
        out.extend(Path(part) for part in value.split(",") if part)
    return out


def _parse_dates(values: list[str] | None, n: int) -> list[date | None]:
    parts = [p for value in values or [] for p in value.split(",") if p]
    if not parts:
        return [None] * n
    if len(parts) != n:
        raise UserError(f"--dates: got {len(parts)} dates for {n} label maps")
    try:
        dates = [date.fromisoformat(p) for p in parts]
    except ValueError as exc:
        raise UserError(f"--dates: {exc} (use YYYY-MM-DD)") from None
    for i, (earlier, later) in enumerate(itertools.pairwise(dates)):
        if later < earlier:  # the label maps are the timepoints in time order; a swap says "new"
            raise UserError(f"--dates: label map {i + 2} is dated {later}, before label map {i + 1} "
                            f"({earlier}); give the label maps oldest first")
    return dates


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def lesions_command(labelmap: Path, image: Path | None, min_voxels: int) -> dict[str, Any]:
    """The ``lvt lesions`` document for one label map."""
    from lvt_core.lesions import extract_lesions, lesions_document

    labels = read_labelmap(labelmap)
    ct = read_ct_of(image, labels, labelmap, "--image") if image is not None else None
    lesions = extract_lesions(labels, ct, min_voxels=min_voxels)
    document = lesions_document(labelmap, labels, lesions)
    document["ct"] = str(image) if image is not None else None
    return document


def track_command(
    labelmaps: list[Path],
    images: list[Path],
    dates: list[date | None],
    registration: str,
    min_overlap: float,
    max_distance_mm: float,
    min_voxels: int,
    max_gap: int = 1,
) -> dict[str, Any]:
    """The ``lvt track`` document for label maps given in time order."""
    from lvt_core.registration import RegistrationConfig
    from lvt_core.tracking import TimepointInput, TrackingConfig, track_lesions

    if images and len(images) != len(labelmaps):
        raise UserError(f"--images: got {len(images)} CT images for {len(labelmaps)} label maps")
    timepoints = []
    for i, path in enumerate(track(labelmaps, "reading lesions", total=len(labelmaps))):
        labels = read_labelmap(path)
        ct = read_ct_of(images[i], labels, path, "--images") if images else None
        timepoints.append(TimepointInput.from_labels(labels, ct, dates[i], min_voxels=min_voxels))
    config = TrackingConfig(
        min_overlap=min_overlap,
        max_distance_mm=max_distance_mm,
        min_voxels=min_voxels,
        max_gap=max_gap,
        registration=RegistrationConfig(
            kind=registration,  # type: ignore[arg-type]
            on="both" if images else "mask",
        ),
    )
    result = track_lesions(timepoints, config)
    return result.to_document([str(p) for p in labelmaps])


def volumetry_command(labelmaps: list[Path], threshold_pct: float) -> dict[str, Any]:
    """The ``lvt volumetry`` document for same-day phases."""
    from lvt_core.volumetry import volumetry

    if len(labelmaps) < 2:
        raise UserError("volumetry compares two or more same-day phases: give at least 2 label maps")
    images = [read_labelmap(p) for p in labelmaps]
    try:
        result = volumetry(images, threshold_pct=threshold_pct, names=[str(p) for p in labelmaps])
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return result.to_document()


def _print_lesions(document: dict[str, Any]) -> None:
    table = Table(title=f"{document['image']}: {document['n_lesions']} lesion(s)")
    for column in ("id", "volume ml", "longest axial mm", "short axis mm", "slice", "centroid mm",
                   "to vessel mm", "to surface mm", "mean HU"):
        table.add_column(column, justify="right")
    for les in document["lesions"]:
        at_edge = "≥ " if les.get("cut_by_scan_edge") else ""  # the scan cuts it: a lower bound
        table.add_row(
            str(les["id"]), at_edge + _fmt(les["volume_ml"], 2), at_edge + _fmt(les["longest_axial_diameter_mm"]),
            _fmt(les["short_axis_mm"]), str(les["axial_slice"]),
            ", ".join(f"{c:.1f}" for c in les["centroid_mm"]), _fmt(les["distance_to_vessel_mm"]),
            _fmt(les["distance_to_liver_surface_mm"]), _fmt(les["mean_hu"]),
        )
    stdout.print(table)
    if any(les.get("cut_by_scan_edge") for les in document["lesions"]):
        console.print("[yellow]warning:[/] ≥: the lesion reaches the scan's edge, so its size is a lower bound")


def _print_tracks(document: dict[str, Any]) -> None:
    names = document["timepoints"]
    diameters = {
        (t, les["id"]): les["longest_axial_diameter_mm"]
        for t, lesions in enumerate(document["lesions"])
        for les in lesions
    }
    table = Table(title=f"{len(document['tracks'])} track(s) over {len(names)} timepoint(s)")
    table.add_column("track", justify="right")
    table.add_column("status")
    for t, name in enumerate(names):
        table.add_column(f"t{t}: {Path(name).name}\nlesion (mm)", justify="right")
    for tr in document["tracks"]:
        cells = ["—"] * len(names)
        for m in tr["members"]:
            key = (m["timepoint"], m["lesion_id"])
            cells[m["timepoint"]] = f"#{m['lesion_id']} ({diameters[key]:.1f})"
        status = tr["status"]
        if tr.get("merged_into"):
            status += f" → {tr['merged_into']}"
        if tr.get("split_from"):
            status += f" ← {tr['split_from']}"
        table.add_row(str(tr["track_id"]), status, *cells)
    stdout.print(table)
    for warning in document["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(str(warning))}")


def _print_volumetry(document: dict[str, Any]) -> None:
    table = Table(title=f"liver volumetry, threshold ±{document['threshold_pct']:g} %")
    table.add_column("series", overflow="fold")  # folded, not cut: two long paths read alike
    for column in ("slice mm", "total ml", "Δ total %", "functional ml", "Δ functional %", "flag"):
        table.add_column(column, justify="right")
    for i, name in enumerate(document["series"]):
        table.add_row(
            name, _fmt(document["slice_thickness_mm"][i], 2), _fmt(document["volumes_ml"][i]),
            _fmt(document["deviation_pct"][i], 2), _fmt(document["functional_volumes_ml"][i]),
            _fmt(document["functional_deviation_pct"][i], 2), "⚑" if document["flags"][i] else "",
        )
    stdout.print(table)
    stdout.print(
        f"mean total liver volume {document['mean_ml']:.1f} ml, "
        f"max |deviation| {document['max_abs_deviation_pct']:.2f} %"
        + (" — FLAGGED" if document["flag"] else "")
    )
    for warning in document["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(str(warning))}")


def register(app: typer.Typer) -> None:
    """Add ``lesions``, ``track`` and ``volumetry`` to the ``lvt`` app."""

    @app.command("lesions")
    def lesions(
        labelmap: Path = typer.Argument(..., help="Label map (0 bg, 1 liver, 2 vessel, 3 tumor)."),
        image: Path | None = typer.Option(None, "--image", help="CT of the label map, for mean HU."),
        min_voxels: int = typer.Option(10, "--min-voxels", min=1, help="Smallest lesion kept."),
        json_: bool = typer.Option(False, "--json", help="Print one JSON document."),
    ) -> None:
        """Lesions of one label map: volume, diameters, centroid, distances."""
        try:
            document = lesions_command(labelmap, image, min_voxels)
        except UserError as exc:
            fail(str(exc))
        if json_:
            print_json(document)
        else:
            _print_lesions(document)

    @app.command("track")
    def track_cmd(
        labelmaps: list[Path] = typer.Argument(..., help="Label maps in time order."),
        images: list[str] | None = typer.Option(
            None, "--images", help="CT per label map, same order (repeat, or comma-separated)."
        ),
        dates: list[str] | None = typer.Option(
            None, "--dates", help="Study dates YYYY-MM-DD, same order (repeat, or comma-separated)."
        ),
        registration: str = typer.Option(
            "rigid", "--registration", help="rigid, affine or none (on liver masks, plus CT if given)."
        ),
        min_overlap: float = typer.Option(0.1, "--min-overlap", min=0.0, max=1.0),
        max_distance_mm: float = typer.Option(15.0, "--max-distance", min=0.0),
        min_voxels: int = typer.Option(10, "--min-voxels", min=1),
        max_gap: int = typer.Option(
            1, "--max-gap", min=0,
            help="Studies a lesion may be missing from and still continue its track (0: never).",
        ),
        json_: bool = typer.Option(False, "--json", help="Print one JSON document."),
    ) -> None:
        """Lesion tracks across timepoints: new, persisting, disappeared, merged, split."""
        if registration not in ("rigid", "affine", "none"):
            raise typer.BadParameter("choose rigid, affine or none", param_hint="--registration")
        try:
            document = track_command(
                labelmaps,
                _split_paths(images),
                _parse_dates(dates, len(labelmaps)),
                registration,
                min_overlap,
                max_distance_mm,
                min_voxels,
                max_gap,
            )
        except UserError as exc:
            fail(str(exc))
        if json_:
            print_json(document)
        else:
            _print_tracks(document)

    @app.command("volumetry")
    def volumetry_cmd(
        labelmaps: list[Path] = typer.Argument(..., help="Label maps of same-day phases."),
        threshold: float = typer.Option(2.0, "--threshold", min=0.0, help="Flag above this |%|."),
        json_: bool = typer.Option(False, "--json", help="Print one JSON document."),
    ) -> None:
        """Total and functional liver volume per phase and the deviation from their mean."""
        try:
            document = volumetry_command(labelmaps, threshold)
        except UserError as exc:
            fail(str(exc))
        if json_:
            print_json(document)
        else:
            _print_volumetry(document)
