"""Shared CLI helpers: JSON output, user errors with exit status 1, progress bars."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lvt_core import atomic_files

console = Console(stderr=True)
"""Messages, warnings and progress: stderr, so stdout carries only what a command lists."""
stdout = Console()
"""A listing's table (`lvt patients list > file` got an empty file when it went to stderr)."""
T = TypeVar("T")


class UserError(Exception):
    """A problem with the user's input: reported as one clear message, exit status 1."""


def check_output_folder(folder: Path) -> None:
    """Refuse, before any work, an output folder that is a file or lies below one."""
    try:
        atomic_files.check_output_folder(folder)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def check_only_files_of_this_export(folder: Path, names: set[str]) -> None:
    """Refuse an output folder holding files other than ``names`` (an older or unrelated file
    would read as part of this export)."""
    try:
        atomic_files.check_only_files_of_this_export(folder, names)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def check_output_file(file: Path) -> None:
    """Refuse, before any work, an output file that is a folder or lies below a file."""
    if file.is_dir():
        raise UserError(f"{file}: is a folder; give a file name for the output")
    check_output_folder(file.parent)


def require_store(url: str) -> None:
    """Refuse a SQLite store that does not exist instead of creating an empty one (a listing run
    in the wrong folder printed "no patients" from a new ``var/``)."""
    from sqlalchemy.engine import make_url

    from db.engine import store_exists

    if not store_exists(url):
        raise UserError(f"no LVT store at {make_url(url).database or url}: set LVT_VAR_DIR (or LVT_DATABASE_URL) "
                        "to the store, or ingest into this one first")


def open_existing_store() -> None:
    """For commands that only read: refuse a store that does not exist (:func:`require_store`),
    then bring it to the newest schema as every command does."""
    from db.engine import default_url, ensure_schema

    url = default_url()
    require_store(url)
    ensure_schema(url)


def require_current_schema(url: str) -> None:
    """For commands that must write nothing, not even a migration (``lvt ingest --dry-run``):
    refuse a store whose schema is not this code's, which failed as a raw SQL error
    ("no such column") on a store behind it. A store that does not exist is left alone (not
    created) for the caller to handle."""
    from db import migrate
    from db.engine import store_exists

    if not store_exists(url):
        return
    at, head = migrate.current(url), migrate.head()
    if at == head:
        return
    if at is not None and at > head:  # revisions are zero-padded numbers
        raise UserError(f"the store {redacted_url(url)} is at schema revision {at}, newer than this "
                        f"LVT's {head}: use the LVT version that upgraded it")
    raise UserError(f"the store {redacted_url(url)} is at schema revision {at or 'none (empty)'}, "
                    f"this LVT needs {head}: run `lvt db upgrade` first")


def setting_choice(value: str | None, option: str, setting: str) -> str:
    """``value`` of a choice option (``--device``, ``--precision``), or, when not given, the
    ``LVT_*`` setting it defaults to (documented, but the options hard-coded "auto"). A value
    outside the setting's choices is bad usage (exit 2) before any work, as for every option."""
    from typing import get_args

    from app.settings import Settings, get_settings

    if value is None:
        return str(getattr(get_settings(), setting))
    allowed = get_args(Settings.model_fields[setting].annotation)
    if value not in allowed:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}", param_hint=option)
    return value


def open_current_store(url: str) -> None:
    """For commands that must write nothing (``--dry-run``): refuse a store that does not
    exist (:func:`require_store`) or whose schema is not this code's
    (:func:`require_current_schema`), instead of creating or migrating it."""
    require_store(url)
    require_current_schema(url)


def redacted_url(url: str) -> str:
    """A database URL fit to print: its password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def report_error(message: str) -> None:
    """Print a user error on stderr; with ``--json`` stdout still gets its one JSON document,
    ``{"error": ..., "exit_code": 1}``, so a script reading it learns why."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)  # a path may hold [brackets]
    if "--json" in sys.argv[1:]:
        print_json({"error": message, "exit_code": 1})


@contextmanager
def usage_errors_as_json() -> Iterator[None]:
    """With ``--json``, let a usage error (exit 2: an unknown option, a bad value) also print
    its one JSON document, ``{"error": ..., "exit_code": 2}``: Typer printed only its box on
    stderr and stdout stayed empty. The error then goes on to Typer, which prints that box."""
    try:
        yield
    except typer.exceptions.TyperException as exc:  # Typer's own (vendored) click's ClickException
        if "--json" in sys.argv[1:]:
            print_json({"error": exc.format_message(), "exit_code": exc.exit_code})
        raise


def fail(message: str) -> NoReturn:
    """Report ``message`` (:func:`report_error`) and exit with status 1 (a user error)."""
    report_error(message)
    raise typer.Exit(code=1)


def print_json(document: Any) -> None:
    """Write one JSON document to stdout (logs go to stderr)."""
    sys.stdout.write(json.dumps(document, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def progress_bar() -> Progress:
    """A rich progress bar with ETA that is silent when stderr is not a terminal."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a progress bar on a terminal, quietly otherwise."""
    with progress_bar() as progress:
        yield from progress.track(items, total=total, description=description)
