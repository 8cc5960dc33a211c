"""``lvt ingest``: DICOM folders, zip files and NIfTI/NRRD volumes into the store."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from app.cli.common import console, print_json, require_current_schema, track
from app.services.ingest import IngestOptions, IngestReport, ingest_paths
from app.services.ingest.phase import PHASE_NAMES, load_rules
from app.services.ingest.service import new_store_removed_on_failure
from db.engine import default_url, ensure_schema


def ingest(
    paths: list[Path] = typer.Argument(
        None, help="DICOM folders (searched recursively), zip files, NIfTI/NRRD files."
    ),
    manifest: Path | None = typer.Option(
        None, "--manifest", help="CSV describing NIfTI/NRRD inputs (see README)."
    ),
    patient_id: str | None = typer.Option(
        None, "--patient-id", help="Patient id for inputs that lack one (overrides one PatientID; several are refused)."
    ),
    phase: str | None = typer.Option(
        None, "--phase", help=f"Contrast phase for every series: {'|'.join(PHASE_NAMES)}."
    ),
    phase_rules: Path | None = typer.Option(
        None, "--phase-rules", help="YAML file replacing the phase rules."
    ),
    deidentify: bool = typer.Option(
        True, "--deidentify/--keep-identifiers", help="Pseudonymise ids (default) or keep them."
    ),
    skip_invalid: bool = typer.Option(
        False,
        "--skip-invalid",
        help="Skip broken files and series (reported) instead of refusing the whole ingest.",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Report what would be ingested; write nothing."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Ingest CT series. All or nothing: any problem leaves the store untouched.

    Re-ingesting a series adds nothing; changed content under a known UID is a conflict.
    """
    if phase is not None and phase not in PHASE_NAMES:
        raise typer.BadParameter(f"--phase must be one of {', '.join(PHASE_NAMES)}")
    rules = load_rules(phase_rules) if phase_rules else None
    options = IngestOptions(
        manifest=manifest,
        patient_id=patient_id,
        phase=phase,
        deidentify=deidentify,
        dry_run=dry_run,
        skip_invalid=skip_invalid,
        phase_rules=rules,
    )
    with new_store_removed_on_failure(default_url()):  # a refused first ingest leaves no store
        if dry_run:  # a dry run writes nothing, not even a new or migrated database
            require_current_schema(default_url())
        else:
            ensure_schema()
        report = ingest_paths(list(paths or []), options, track=track)
    if json_out:
        print_json(report.to_json())
    else:
        _print_summary(report)


def _print_summary(report: IngestReport) -> None:
    verb = "would add" if report.dry_run else "added"
    table = Table(title="Ingest summary" + (" (dry run)" if report.dry_run else ""))
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("patients", f"{len(report.patients)} ({report.patients_added} new)")
    table.add_row("studies", f"{len(report.studies)} ({report.studies_added} new)")
    table.add_row(f"series {verb}", str(len(report.added)))
    table.add_row("series already present", str(len(report.already_present)))
    table.add_row("skipped", str(len(report.skipped)))
    console.print(table)
    for item in report.added:
        console.print(
            f"  + {item['patient']} {item['study_date'] or '-'} {item['phase']:<11} {item['source']}"
        )
    for item in report.already_present:
        console.print(f"  = already present: {item['source']}")
    for item in report.skipped:
        console.print(f"  - skipped {item['source']}: {item['reason']}")
    for item in report.warnings:
        console.print(f"  [yellow]! {item['source']}: {item['warning']}[/]")
    for note in report.notes:
        console.print(f"  note: {note}")


def register(app: typer.Typer) -> None:
    """Add the ``ingest`` command."""
    app.command("ingest")(ingest)
