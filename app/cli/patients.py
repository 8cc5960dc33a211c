"""``lvt patients list`` and ``lvt studies list PATIENT``: what the store holds;
``lvt studies set-phase SERIES PHASE`` corrects a series' contrast phase, ``set-date`` dates a
study, and ``remove-series SERIES`` removes a series stored by mistake."""

from __future__ import annotations

from dataclasses import asdict

import typer
from rich.table import Table

from app.cli.common import UserError, console, open_existing_store, print_json, stdout
from app.services.patient_lookup import require_patient
from db import queries
from db.engine import session_scope

patients_app = typer.Typer(help="Patients in the store.", no_args_is_help=True)
studies_app = typer.Typer(help="Studies of a patient.", no_args_is_help=True)


@patients_app.command("list")
def list_patients(
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many rows."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Patients with study/series counts, most recent study first."""
    open_existing_store()
    with session_scope() as session:
        rows = queries.list_patients(session, limit=limit)
    if json_out:
        print_json({"patients": [asdict(r) for r in rows]})
        return
    table = Table(title=f"{len(rows)} patient(s)")
    for column in ("patient", "studies", "series", "first study", "last study"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.pseudo_id,
            str(r.studies),
            str(r.series),
            str(r.first_study_date or "-"),
            str(r.last_study_date or "-"),
        )
    stdout.print(table)


@studies_app.command("list")
def list_studies(
    patient: str = typer.Argument(
        ..., help="Pseudonymous patient id (as `lvt patients list` shows), or the source id."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """A patient's studies, oldest first, with their series."""
    open_existing_store()
    with session_scope() as session:
        patient = require_patient(session, patient).pseudo_id
        studies = queries.list_studies(session, patient)
    if studies is None:
        raise UserError(f"patient {patient!r} is not in the store (see `lvt patients list`)")
    if json_out:
        print_json({"patient": patient, "studies": [asdict(s) for s in studies]})
        return
    table = Table(title=f"patient {patient}: {len(studies)} stud(ies)")
    for column in ("study id", "date", "accession", "series", "series id: phase", "study uid"):
        table.add_column(column, overflow="fold")  # ids folded, not cut short at 80 columns
    for s in studies:
        phases = "\n".join(f"{x.id}: {x.phase}" for x in s.series)
        table.add_row(
            str(s.id),
            str(s.study_date or "undated: not tracked"),
            s.accession or "-",
            str(len(s.series)),
            phases,
            s.study_instance_uid,
        )
    stdout.print(table)


@studies_app.command("set-phase")
def set_phase(
    series_id: int = typer.Argument(..., help="Series id (`lvt studies list PATIENT` shows it)."),
    phase: str = typer.Argument(..., help="noncontrast, arterial, portal, late or unknown."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Correct a series' contrast phase (audited); the day's segmentations are to be redone."""
    from app.services import audit
    from app.services.corrections import set_series_phase

    open_existing_store()
    report = set_series_phase(series_id, phase, audit.command_line_actor("lvt studies set-phase"))
    if json_out:
        print_json(report)
        return
    if not report["changed"]:
        console.print(f"series {series_id} is already {phase}: nothing changed")
        return
    console.print(f"series {series_id} of patient {report['patient']} ({report['study_date'] or 'no date'}): "
                  f"{report['from']} -> {report['to']}; volumetry, tracks and responses refreshed")
    if report["redo"]:
        console.print(f"{report['segmentations_to_redo']} segmentation(s) of that day were drawn with the old "
                      f"phase; redo them with `{report['redo']}`")


@studies_app.command("set-date")
def set_date(
    study_id: int = typer.Argument(..., help="Study id (`lvt studies list PATIENT --json` shows it)."),
    date: str = typer.Argument(..., help="The study date as its source says it: YYYY-MM-DD."),
    patient_id: str = typer.Option(..., "--patient-id", help="The source patient id (the files' PatientID)."),
    dates_shifted: bool | None = typer.Option(
        None, "--dates-shifted/--dates-kept",
        help="How this patient's dates were stored, for a patient from before LVT recorded it (migration 0008)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Date a study stored without a date (audited); undated studies are left out of tracking."""
    from app.services import audit
    from app.services.corrections import set_study_date
    from app.services.deid import parse_date

    open_existing_store()
    try:
        source_date = parse_date(date)
    except ValueError as exc:
        raise UserError(f"date {date!r}: {exc}") from None
    if source_date is None:
        raise UserError("give the study date as YYYY-MM-DD")
    report = set_study_date(study_id, source_date, patient_id, audit.command_line_actor("lvt studies set-date"),
                            dates_shifted=dates_shifted)
    if json_out:
        print_json(report)
        return
    how = "shifted as the patient's other dates" if report["dates_shifted"] else "as given, as the patient's other dates"
    console.print(f"study {study_id} of patient {report['patient']} is stored as dated {report['stored_date']} "
                  f"({how}); tracks and responses refreshed")
    if report["redo"]:
        console.print(f"it joins a day with other scans: redraw the day with `{report['redo']}`")


@studies_app.command("remove-series")
def remove_series(
    series_id: int = typer.Argument(..., help="Series id (`lvt studies list PATIENT` shows it)."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask before removing."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Remove a series stored by mistake (half a series, another patient's scan), with what was
    drawn from it (audited); then the whole series can be ingested."""
    from app.services import audit, series_removal

    open_existing_store()
    if not yes and not typer.confirm(f"Remove series {series_id}, its segmentations and lesions from the store?"):
        raise UserError("nothing removed")
    report = series_removal.remove_series(series_id, audit.command_line_actor("lvt studies remove-series"))
    if json_out:
        print_json(report)
        return
    gone = [f"{report['segmentations_removed']} segmentation(s)", f"{report['lesions_removed']} lesion(s)"]
    if report["study_removed"]:
        gone.append(f"study {report['study_id']}, left empty")
    if report["patient_removed"]:
        gone.append(f"patient {report['patient']}, left without studies")
    console.print(f"series {series_id} ({report['phase']}, {report['study_date'] or 'no date'}) of patient "
                  f"{report['patient']} removed with {', '.join(gone)}"
                  + ("" if report["patient_removed"] else "; volumetry, tracks and responses refreshed"))
    if report["redo"]:
        console.print(f"{report['segmentations_to_redo']} segmentation(s) of that day were drawn beside it; "
                      f"redo them with `{report['redo']}`")


def register(app: typer.Typer) -> None:
    """Add the ``patients`` and ``studies`` command groups."""
    app.add_typer(patients_app, name="patients")
    app.add_typer(studies_app, name="studies")
