"""``lvt batch``: segment every series without a current segmentation, then refresh analytics."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from app.cli.common import console, print_json, progress_bar, report_error, setting_choice


def batch(
    patient: list[str] = typer.Option([], "--patient", "-p", help="Patient id (repeatable)."),
    all_patients: bool = typer.Option(False, "--all", help="Every patient in the store."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Checkpoint (.pt); default LVT_MODEL_PATH."),
    workers: int | None = typer.Option(
        None, "--workers", "-w", min=1, help="Worker processes (1: in-process); default LVT_WORKERS, else 1."),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Existing Dask scheduler, e.g. tcp://host:8786; default LVT_DASK_SCHEDULER."),
    force: bool = typer.Option(False, "--force", help="Re-segment series that are already done."),
    outdated: bool = typer.Option(
        False, "--outdated", help="Also re-segment series whose segmentation another LVT version "
        "drew (or one from before versions were recorded), after an upgrade changed the pipeline."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would run; change nothing."),
    run_id: int | None = typer.Option(None, "--run-id", help="Run (or resume) this prepared batch run."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda; default LVT_DEVICE, else auto."),
    refresh: bool = typer.Option(
        False, "--refresh", help="Also refresh tracks, volumetry and responses of every selected "
        "patient with results, even with nothing to segment (e.g. after `lvt db upgrade`)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Segment series with the model (Dask), store lesions and volumes, update tracks and responses.

    Exit status 1 when a series failed: the others are stored, the failed ones listed."""
    from app.services.batch import BatchOptions, run_batch
    from app.settings import get_settings

    options = BatchOptions(
        patients=list(patient), all=all_patients, model=model,
        workers=workers if workers is not None else get_settings().workers,
        scheduler=scheduler or get_settings().dask_scheduler, force=force, dry_run=dry_run, run_id=run_id,
        device=setting_choice(device, "--device", "device"),  # bad usage before anything is written
        refresh=refresh, outdated=outdated,
    )
    with progress_bar() as progress:
        task = progress.add_task("segmenting", total=None)

        def on_progress(done: int, total: int, result: dict) -> None:
            progress.update(task, completed=done, total=total)

        summary = run_batch(options, on_progress=on_progress)
    error = _failure_message(summary.failed, summary.series_total)
    if as_json:
        # one document: the summary, with the failure document's "error" and "exit_code" when a series failed
        print_json(summary.to_json() | ({"error": error, "exit_code": 1} if error else {}))
        if error:
            raise typer.Exit(code=1)
        return
    verb = "would segment" if summary.dry_run else "segmented"
    console.print(
        f"{verb} {summary.series_total} series with {summary.model['name']} "
        f"{summary.model['version']} ({summary.engine}): {summary.done} done, "
        f"{summary.failed} failed, {summary.patients_refreshed} patient(s) refreshed"
        + (f", {summary.studies_per_hour} studies/h" if summary.studies_per_hour else ""),
        highlight=False,
    )
    for failure in summary.failures:
        console.print(f"  series {failure['series_id']}: {escape(failure['error'])}", highlight=False)
    for item in summary.analytics_warnings:
        warning = escape(item["warning"])
        console.print(f"  [yellow]! patient {item['patient_id']}: {warning}[/]", highlight=False)
    if error:
        report_error(error)
        raise typer.Exit(code=1)


def _failure_message(failed: int, total: int) -> str | None:
    """The error of a batch where series failed (a script saw exit status 0 for a batch whose
    every series failed), or None when none did."""
    if not failed:
        return None
    stored = f"; the other {total - failed} are stored" if total > failed else ""
    return f"{failed} of {total} series failed (listed in failures){stored}"


def register(app: typer.Typer) -> None:
    """Add ``lvt batch`` to the root app."""
    app.command("batch")(batch)
