"""``lvt app`` serves the web app; ``lvt demo`` builds the demo cohort and then serves it."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path

import typer

from app.cli.common import console, print_json, progress_bar

APP_FILE = Path(__file__).resolve().parent.parent / "web" / "server.py"
"""Streamlit's pages plus the HttpOnly sign-in cookie route (:mod:`app.web.server`)."""


def streamlit_command(port: int, host: str) -> list[str]:
    """The ``streamlit run`` command line of the app (headless, no telemetry)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_FILE),
        "--server.port", str(port), "--server.address", host, "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
        # a failure shows its type in the browser; the traceback (server paths, code) goes to the log only
        "--client.showErrorDetails", "type",
        "--theme.base", "light", "--theme.primaryColor", "#2f6f9f",
    ]


def serve(port: int, host: str) -> None:
    """Replace this process with the Streamlit server (Ctrl-C stops it)."""
    from db.engine import ensure_schema

    ensure_schema()
    console.print(f"Serving LVT at [bold]http://{host}:{port}[/] (Ctrl-C to stop)")
    os.execv(sys.executable, streamlit_command(port, host))


def app_command(
    port: int = typer.Option(8501, "--port", min=1, max=65535, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 for a server)."),
) -> None:
    """Serve the web app (login, patients, follow-up, volumetry, 3D, cohort, admin)."""
    serve(port, host)


def demo_command(
    serve_app: bool = typer.Option(True, "--serve/--no-serve", help="Serve the app afterwards."),
    patients: int = typer.Option(2, "--patients", min=1, max=50, help="Synthetic patients."),
    timepoints: int = typer.Option(3, "--timepoints", min=1, max=8, help="Studies per patient."),
    size: str = typer.Option("demo", "--size", help="demo (phantom 'demo' size) or tiny (tests)."),
    port: int = typer.Option(8501, "--port", min=1, max=65535, help="Port of the served app."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address of the served app."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document (implies --no-serve)."),
) -> None:
    """Build or refresh the demo cohort (idempotent), print how to sign in, then serve the app."""
    from app.services.demo import DEMO_USERS, DemoConfig, build_demo

    config = DemoConfig(patients=patients, timepoints=timepoints, size=size)
    with progress_bar() as bar:
        tasks: dict[str, int] = {}
        logged: dict[str, int] = {}

        def progress(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=total or None)
            bar.update(tasks[step], completed=done, total=total or None)
            if not bar.console.is_terminal and logged.get(step) != done:  # log lines, never silent
                logged[step] = done
                console.print(f"… {step}" + (f" {done}/{total}" if total else ""))

        report = build_demo(config, progress)
    url = f"http://{host}:{port}"
    if json_out:
        print_json({**asdict(report), "url": url, "passwords": {r: pw for r, (_n, pw) in DEMO_USERS.items()}})
        return
    console.print(f"[bold green]Demo ready[/]: {report.patients} patients, "
                  f"{report.series_added} series added, {report.series_present} already present.")
    console.print(f"[bold red]{report.model_note}[/]" if report.ground_truth else report.model_note)
    console.print(f"Open [bold]{url}[/] and sign in as one of:")
    for role, (name, password) in DEMO_USERS.items():
        if name in report.users_kept:
            console.print(f"  {role:<11} user [bold]{name}[/]  (an existing account, left as it was: "
                          "its own password and role)")
        else:
            console.print(f"  {role:<11} user [bold]{name}[/]  password [bold]{password}[/]")
    if serve_app:
        serve(port, host)
    else:
        console.print("Serve it with: [bold]lvt app[/]")


def register(app: typer.Typer) -> None:
    """Add ``lvt app`` and ``lvt demo``."""
    app.command("app")(app_command)
    app.command("demo")(demo_command)
