"""``lvt evaluate``: DSC, NSD, precision, recall and lesion detection of predictions vs references."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import typer

from app.cli.common import UserError, console, print_json, track
from lvt_core.labels import MIN_LESION_VOXELS

CSV_CLASSES = ("liver", "vessel", "tumor")
CSV_METRICS = ("dsc", "nsd", "precision", "recall")


def _read_labels(path: Path) -> sitk.Image:
    from lvt_core.imageio import ImageReadError, read_image

    try:
        image = read_image(path)
    except ImageReadError as exc:
        raise UserError(str(exc)) from None
    array = sitk.GetArrayViewFromImage(image)
    if array.size and (array.min() < 0 or array.max() > 3 or not np.all(np.mod(array, 1) == 0)):
        raise UserError(
            f"{path}: not an LVT label map (values must be 0..3, found {array.min()}..{array.max()})"
        )
    return sitk.Cast(image, sitk.sitkUInt8)


def _case_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def pair_files(pred: Path, ref: Path) -> list[tuple[str, Path, Path]]:
    """Match a file with a file, or the volumes of one folder with same-named ones in another
    (every reference needs its prediction)."""
    for path, role in ((pred, "--pred"), (ref, "--ref")):
        if not path.exists():
            raise UserError(f"{path}: no such file or folder ({role})")
    if pred.is_file() and ref.is_file():
        return [(_case_name(pred), pred, ref)]
    if pred.is_dir() != ref.is_dir():
        raise UserError(f"{pred} and {ref}: give two files or two folders")
    preds, refs = _volumes_by_case(pred), _volumes_by_case(ref)
    if not preds:
        raise UserError(f"{pred}: no label volumes (.nii.gz, .nrrd, ...) found")
    for name, path in preds.items():
        if name not in refs:
            raise UserError(f"{path}: no reference named {name}.* in {ref}")
    unpredicted = [str(path) for name, path in refs.items() if name not in preds]
    if unpredicted:  # a mean over the predicted cases alone would hide the missing ones
        raise UserError(f"{pred}: no prediction for {len(unpredicted)} reference(s): "
                        + ", ".join(unpredicted[:5]) + (" …" if len(unpredicted) > 5 else ""))
    return [(name, preds[name], refs[name]) for name in sorted(preds)]


def _volumes_by_case(folder: Path) -> dict[str, Path]:
    """The label volumes of a folder by case name; two files of one case are refused."""
    from lvt_core.imageio import is_volume_file

    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not (path.is_file() and is_volume_file(path)):
            continue
        name = _case_name(path)
        if name in found:
            raise UserError(f"{folder}: two files for case {name!r} ({found[name].name}, {path.name}); keep one")
        found[name] = path
    return found


def evaluate_files(pred: Path, ref: Path, min_lesion_voxels: int = 10) -> dict[str, Any]:
    """The evaluation document: the pair's metrics, or the mean plus ``cases`` for folders.
    Lesions are counted as ``lvt lesions`` counts them: ``min_lesion_voxels`` or more."""
    from lvt_core.metrics import evaluate_pair, mean_metrics

    pairs = pair_files(pred, ref)
    cases = []
    for name, p, r in track(pairs, "evaluating", total=len(pairs)):
        try:
            result = evaluate_pair(_read_labels(p), _read_labels(r), min_lesion_voxels)
        except ValueError as exc:
            raise UserError(f"{p} vs {r}: {exc}") from None
        cases.append({"case": name, "pred": str(p), "ref": str(r), **result})
    if pred.is_file():
        return cases[0]
    return {**mean_metrics(cases), "n_cases": len(cases), "cases": cases}


def write_csv(document: dict[str, Any], path: Path) -> None:
    """One row per case (and a ``mean`` row for folders)."""
    rows = document.get("cases", [document])
    header = ["case"] + [f"{c}_{m}" for c in CSV_CLASSES for m in CSV_METRICS]
    header += ["lesion_sensitivity", "lesion_precision"]

    def row(case: str, values: dict[str, Any]) -> list[Any]:
        cells: list[Any] = [case] + [values[c][m] for c in CSV_CLASSES for m in CSV_METRICS]
        return [*cells, values["lesion_sensitivity"], values["lesion_precision"]]

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for case in rows:
            writer.writerow(row(case.get("case", ""), case))
        if "cases" in document:
            writer.writerow(row("mean", document))


def register(app: typer.Typer) -> None:
    """Add ``lvt evaluate`` to the root app."""

    @app.command("evaluate")
    def evaluate(
        pred: Path = typer.Option(..., "--pred", help="Predicted label map, or a folder of them."),
        ref: Path = typer.Option(
            ..., "--ref", help="Reference label map, or a folder (same names)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
        csv_out: Path | None = typer.Option(
            None, "--csv", help="Also write a CSV, one row per case."
        ),
        min_voxels: int = typer.Option(
            MIN_LESION_VOXELS, "--min-voxels", min=1,
            help="Smallest tumor component counted as a lesion, as in `lvt lesions` (1: every one).",
        ),
    ) -> None:
        """Compare label maps: DSC, NSD, precision, recall per class; lesion detection."""
        document = evaluate_files(pred, ref, min_voxels)
        if csv_out is not None:
            write_csv(document, csv_out)
        if as_json:
            print_json(document)
            return
        for name in CSV_CLASSES:
            m = document[name]
            console.print(
                f"{name:7s} DSC {m['dsc']:.3f}  NSD {m['nsd']:.3f}  "
                f"precision {m['precision']:.3f}  recall {m['recall']:.3f}"
            )
        console.print(
            f"lesions (≥ {min_voxels} voxels) sensitivity {document['lesion_sensitivity']:.3f}  "
            f"precision {document['lesion_precision']:.3f}"
        )
