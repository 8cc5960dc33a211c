"""Entry point of the ``lvt`` command: builds the Typer app from the command modules.

Each module in ``COMMAND_MODULES`` exposes ``register(app: typer.Typer) -> None``.
"""

from __future__ import annotations

import importlib

import typer
from sqlalchemy.exc import DBAPIError

from app.cli.common import UserError, redacted_url, report_error
from app.logging_setup import configure_logging
from app.settings import get_settings
from db.storage import StoredImageError

COMMAND_MODULES: list[str] = [
    "segment",
    "evaluate",
    "db",
    "ingest",
    "measurements",
    "patients",
    "train",
    "export",
    "analysis",
    "batch",
    "app_cmd",
    "users",
    "phantom",
]

app = typer.Typer(
    name="lvt",
    help="LVT: liver, vessel and tumor segmentation and follow-up for contrast-enhanced CT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging on stderr."),
) -> None:
    configure_logging("DEBUG" if verbose else get_settings().log_level)


for _name in COMMAND_MODULES:
    importlib.import_module(f"app.cli.{_name}").register(app)


def _fail(message: str) -> None:
    report_error(message)
    raise SystemExit(1)


def main() -> None:
    """Run the CLI; a :class:`UserError` (or a missing or damaged stored image) becomes a clear
    message and exit status 1."""
    try:
        app()
    except (UserError, StoredImageError) as exc:
        _fail(str(exc))
    except DBAPIError as exc:  # an unreachable server, a read-only store, a value the database refuses
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        _fail(f"database {redacted_url(get_settings().resolved_database_url)}: {reason}")
    except OSError as exc:  # a path that cannot be written (permissions, a full disk, a missing mount)
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{where}{exc.strerror or exc}")
