"""``lvt export``: the export sub-commands (nnU-Net datasets here; others add theirs)."""

from __future__ import annotations

from pathlib import Path

import typer

from app.cli.common import UserError, print_json, progress_bar

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
