"""Entry point of the ``lvt`` command: builds the Typer app from the command modules.

Each module in ``COMMAND_MODULES`` exposes ``register(app: typer.Typer) -> None``.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from sqlalchemy.exc import DBAPIError
from typer.core import TyperGroup

from app.cli.common import UserError, redacted_url, report_error, usage_errors_as_json
from app.logging_setup import configure_logging
from app.settings import SettingsError, get_settings
from db.engine import DatabaseURLError
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

class _RootGroup(TyperGroup):
    """The ``lvt`` group: every sub-command is parsed and run inside it, so its usage errors
    are reported in one place (:func:`usage_errors_as_json`)."""

    # Any: the context is of the click that Typer vendors privately (typer._click)
    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        with usage_errors_as_json():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with usage_errors_as_json():
            return super().invoke(ctx)


app = typer.Typer(
    cls=_RootGroup,
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
    """Run the CLI; a :class:`UserError` (or a missing or damaged stored image, a bad ``LVT_*``
    value, a database URL SQLAlchemy cannot use) becomes a clear message and exit status 1."""
    try:
        app()
    except (UserError, StoredImageError, SettingsError, DatabaseURLError) as exc:
        _fail(str(exc))
    except DBAPIError as exc:  # an unreachable server, a read-only store, a value the database refuses
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        _fail(f"database {redacted_url(get_settings().resolved_database_url)}: {reason}")
    except OSError as exc:  # a path that cannot be written (permissions, a full disk, a missing mount)
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{where}{exc.strerror or exc}")
