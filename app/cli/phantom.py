"""``lvt phantom``: write a synthetic CT cohort with ground truth (see :mod:`lvt_core.phantom`)."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import typer

from app.cli.common import UserError, print_json, progress_bar


def phantom(
    out: Path = typer.Argument(..., help="Output folder for the cohort (created if missing)."),
    patients: int = typer.Option(3, "--patients", "-n", min=1, help="Number of patients."),
    timepoints: int = typer.Option(3, "--timepoints", "-t", min=1, max=12,
                                   help="Studies per patient, months apart."),
    phases: int = typer.Option(1, "--phases", "-p", min=1, max=4,
                               help="Phases per study: first P of portal, arterial, late, noncontrast."),
    seed: int = typer.Option(0, "--seed", "-s", help="Random seed; the same seed gives the same files."),
    size: str = typer.Option("demo", "--size", help="tiny (tests) | demo | clinical (512², 0.7–0.8 mm)."),
    dicom: bool = typer.Option(False, "--dicom", help="Also write each scan as a DICOM CT series."),
    preview: bool = typer.Option(False, "--preview", help="Write axial and coronal preview PNGs."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace an existing cohort in OUT (a folder with manifest.csv)."),
    near_vessel: float = typer.Option(
        0.3, "--near-vessel", min=0.0, max=1.0,
        help="Share of lesions placed against a vessel at least 5 mm wide (a stress cohort for "
             "lesions the network may draw as vessel)."),
    subcapsular: float = typer.Option(
        0.0, "--subcapsular", min=0.0, max=1.0,
        help="Share of lesions placed at the liver's surface, cut flat by it (a stress cohort for "
             "lesions whose surroundings are partly outside the organ)."),
    cystic: float = typer.Option(
        0.0, "--cystic", min=0.0, max=1.0,
        help="Share of lesions that turn to fluid at their second study, in every phase (a "
             "metastasis turned cystic under treatment; still a lesion in the truth)."),
    kinds: str = typer.Option(
        "hypo=0.5,hyper=0.25,rim=0.25", "--kinds",
        help="Weights of the lesion kinds: hypo (metastasis-like), hyper (arterial enhancement "
             "with washout), rim (necrotic core, enhancing rim)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1,
                                help="Patients rendered side by side in separate processes "
                                     "(same files; a clinical-size scan needs about 2 GB)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Generate a synthetic contrast-enhanced abdominal CT cohort with liver/vessel/tumor truth."""
    from lvt_core.phantom import SIZES, CohortConfig, LesionMix, generate_cohort

    if size not in SIZES:
        raise typer.BadParameter(f"{size!r} is not one of {', '.join(SIZES)}", param_hint="--size")
    try:
        mix = LesionMix(near_vessel=near_vessel, subcapsular=subcapsular, cystic=cystic, **parse_kind_weights(kinds))
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--kinds") from error
    _prepare(out, overwrite)
    config = CohortConfig(patients=patients, timepoints=timepoints, phases=phases, seed=seed,
                          size=size, dicom=dicom, preview=preview, lesion_mix=mix)
    total = patients * timepoints * phases
    started = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task(f"phantom {size}", total=total)
        manifest = generate_cohort(out, config, lambda done, _total: bar.update(task, completed=done),
                                   workers=workers)
    seconds = time.perf_counter() - started
    summary = {
        "out": str(out), "manifest": str(manifest), "lesions": str(out / "lesions.csv"),
        "measurements": str(out / "measurements.csv"), "patients": patients,
        "timepoints": timepoints, "phases": list(config.phase_names), "scans": total,
        "size": size, "seed": seed, "dicom": dicom, "preview": preview,
        "lesion_mix": dataclasses.asdict(mix),
        "workers": workers, "seconds": round(seconds, 2),
    }
    if as_json:
        print_json(summary)
    else:
        typer.echo(f"wrote {total} scans of {patients} patients to {out} ({seconds:.1f} s); "
                   f"manifest: {manifest}")


def parse_kind_weights(text: str) -> dict[str, float]:
    """``hypo=0.5,hyper=0.25,rim=0.25`` as weights; a kind left out weighs 0."""
    from lvt_core.phantom import LESION_KINDS

    weights = dict.fromkeys(LESION_KINDS, 0.0)
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, value = item.partition("=")
        if not sep or kind.strip() not in weights:
            raise ValueError(f"{item!r} is not KIND=WEIGHT with KIND one of {', '.join(LESION_KINDS)}")
        try:
            weights[kind.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{item!r}: weight {value!r} is not a number") from None
    return weights


def _prepare(out: Path, overwrite: bool) -> None:
    """Refuse to mix a new cohort into a non-empty folder unless asked to replace a cohort."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise UserError(f"{out}: folder is not empty; choose a new folder or pass --overwrite "
                        "to replace the cohort in it")
    if not (out / "manifest.csv").is_file():
        raise UserError(f"{out}: not a phantom cohort (no manifest.csv); refusing to delete it")
    for child in out.iterdir():
        if child.is_dir() and child.name.startswith("LVT-"):
            shutil.rmtree(child)
        elif child.name in ("cohort.json", "manifest.csv", "lesions.csv", "measurements.csv"):
            child.unlink()


def register(app: typer.Typer) -> None:
    """Add ``lvt phantom`` to the root app."""
    app.command("phantom")(phantom)
