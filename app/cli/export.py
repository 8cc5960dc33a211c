"""``lvt export``: the export sub-commands (nnU-Net datasets here; others add theirs)."""

from __future__ import annotations

from pathlib import Path

import typer

from app.cli.common import UserError, open_existing_store, print_json, progress_bar

export_app = typer.Typer(help="Export cohorts, segmentations and datasets.", no_args_is_help=True)


@export_app.command("nnunet")
def nnunet(
    out: Path = typer.Argument(..., help="nnU-Net raw dataset folder to write, e.g. Dataset501_LVT."),
    input_path: Path = typer.Option(..., "--input", "-i", help="Phantom cohort folder or a source's folder."),
    source: str = typer.Option("synthetic", "--source", help="Registered dataset source of --input."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Write imagesTr/, labelsTr/ and a region-based dataset.json for nnU-Net v2."""
    from training.datasets import DatasetError, get_source
    from training.export_nnunet import export_nnunet

    try:
        get_source(source)
        with progress_bar() as progress:
            task = progress.add_task("exporting", total=None)
            summary = export_nnunet(input_path, out, source,
                                    on_case=lambda _: progress.advance(task))
    except (DatasetError, ValueError, OSError) as exc:
        raise UserError(str(exc)) from None
    if as_json:
        print_json(summary)
    else:
        typer.echo(f"wrote {summary['cases']} cases to {summary['out']}")


def register(app: typer.Typer) -> None:
    """Add ``lvt export`` to the root app."""
    app.add_typer(export_app, name="export")


@export_app.command("cohort")
def cohort(
    out: Path = typer.Argument(..., help="Folder to write one file per table into."),
    fmt: str = typer.Option("csv", "--format", "-f", help="csv or parquet."),
    patient: list[str] = typer.Option([], "--patient", "-p", help="Only these patients."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Patients, studies, series, lesions, tracks, measurements, agreement, volumetry, response."""
    from app.services.export import FORMATS, export_cohort

    if fmt not in FORMATS:  # bad usage (exit 2), before the database is touched
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}, not {fmt!r}", param_hint="--format")
    open_existing_store()  # a mistyped LVT_VAR_DIR exported an empty cohort from a new store
    summary = export_cohort(out, fmt, {"patients": patient} if patient else None)
    if as_json:
        print_json(summary)
    else:
        for name, info in summary["tables"].items():
            typer.echo(f"{info['rows']:6d} rows  {name:13s} {info['path']}")


@export_app.command("seg")
def seg(
    series: int = typer.Argument(..., help="Series id (see `lvt studies list PATIENT`)."),
    out: Path = typer.Argument(..., help="DICOM SEG file to write, e.g. seg.dcm."),
    ct_dir: Path | None = typer.Option(None, "--ct-dir", help="Where the referenced CT series goes (default OUT_ct/)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """DICOM SEG (BINARY, SNOMED CT) of a series' segmentation, validated after writing."""
    from app.services.export import export_seg

    open_existing_store()
    report = export_seg(series, out, ct_dir)
    dcio = report["validation"]["dciodvfy"]
    if as_json:
        print_json(report)
    else:
        typer.echo(f"wrote {out} ({report['frames']} frames; {', '.join(report['segments'])}) "
                   f"referencing {report['ct_slices']} CT slices in {report['ct_dir']}")
        typer.echo(f"dciodvfy: {dcio.get('skipped') or str(len(dcio['errors'])) + ' error(s)'}")


@export_app.command("mesh")
def mesh(
    patient: str = typer.Argument(..., help="Patient id."),
    study: str = typer.Argument(..., help="Study id, StudyInstanceUID or date YYYY-MM-DD."),
    out: Path = typer.Argument(..., help="Folder for STL/OBJ/VTP files and scene.glb."),
    fmt: list[str] = typer.Option(["stl", "obj", "vtp", "glb"], "--format", "-f", help="Repeatable."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Liver, vessel and tumor surface meshes of one study (mm, LPS; open in 3D Slicer)."""
    from app.services.export import export_mesh
    from lvt_core.scene import SUPPORTED_FORMATS

    unknown = sorted(set(fmt) - set(SUPPORTED_FORMATS))
    if unknown:
        raise typer.BadParameter(f"choose from {', '.join(SUPPORTED_FORMATS)}, not {', '.join(unknown)}",
                                 param_hint="--format")
    open_existing_store()
    summary = export_mesh(patient, study, out, tuple(fmt))
    if as_json:
        print_json(summary)
    else:
        typer.echo(f"wrote {len(summary['files'])} files ({', '.join(summary['structures'])}) to {out}")


@export_app.command("report")
def report(
    patient: str = typer.Argument(..., help="Patient id (pseudonym or source id)."),
    out: Path = typer.Argument(..., help="File to write: a PDF/A document when it ends in .pdf (P-1234-followup.pdf), a DICOM Encapsulated "
                           "PDF in the patient's latest study for a PACS when it ends in .dcm, HTML otherwise."),
    min_diameter: float | None = typer.Option(
        None, "--min-diameter", min=0.0,
        help="Leave out tracks whose largest diameter stays under this (mm); default the web page's."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """The follow-up report the web page downloads: studies, RECIST with its targets, lesion
    tracks with a key image of each lesion per day, liver volumes, measurements, warnings; one
    HTML file that prints on A4, a PDF/A document for the record when OUT ends in .pdf, or that
    PDF as a DICOM Encapsulated PDF for a PACS when OUT ends in .dcm."""
    from app.services.audit import command_line_actor
    from app.services.export import export_report

    open_existing_store()
    summary = export_report(patient, out, min_diameter, actor=command_line_actor("lvt export report"))
    if as_json:
        print_json(summary)
    else:
        typer.echo(f"wrote {out}: patient {summary['patient']}, {summary['tracks']} track(s), "
                   f"{summary['key_images']} key image(s), {summary['responses']} response(s), "
                   f"results of {summary['results']}")
        if summary["format"] == "dicom":
            typer.echo(f"filed in the study of {summary['study_date'] or 'no date'} ({summary['study_uid']}); "
                       f"dciodvfy: {summary['dciodvfy'].get('skipped') or 'no errors'}")
        if summary["scene_not_drawn"]:
            typer.echo(f"3D view not drawn: {summary['scene_not_drawn']}", err=True)
        for why in summary["not_pictured"]:
            typer.echo(f"not pictured: {why}", err=True)
