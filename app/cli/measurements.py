"""``lvt measurements import CSV``: radiologist measurements into the store."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from app.cli.common import console, print_json
from app.services.measurements import import_measurements
from db.engine import ensure_schema

measurements_app = typer.Typer(help="Radiologist measurements.", no_args_is_help=True)


@measurements_app.command("import")
def import_csv(
    csv_path: Path = typer.Argument(..., help="CSV with one measurement per row (see README)."),
    deidentify: bool = typer.Option(
        True, "--deidentify/--keep-identifiers", help="Match ids as `lvt ingest` stored them."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Import measurements, every row linked to an ingested study; all rows or none."""
    ensure_schema()
    report = import_measurements(csv_path, deidentify=deidentify)
    if json_out:
        print_json(report.to_json())
    else:
        console.print(
            f"{escape(str(csv_path))}: {report.added} measurement(s) added, {report.already_present} already "
            f"present, {len(report.studies)} stud(ies) of {len(report.patients)} patient(s)"
            + (f"; new_lesion filled in {report.flags_filled} stored row(s)" if report.flags_filled else "")
        )


def register(app: typer.Typer) -> None:
    """Add the ``measurements`` command group."""
    app.add_typer(measurements_app, name="measurements")
