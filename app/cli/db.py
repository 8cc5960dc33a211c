"""``lvt db upgrade|downgrade|current``: schema migrations of the configured database."""

from __future__ import annotations

from collections.abc import Callable

import typer
from alembic.util.exc import CommandError

from app.cli.common import UserError, console, print_json, redacted_url, require_store
from db import migrate
from db.engine import default_url

db_app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)


def _migrated(step: Callable[[str, str], str | None], url: str, revision: str) -> str | None:
    """Run ``step``; Alembic's refusal of an unknown or unreachable revision is one line naming it."""
    try:
        return step(url, revision)
    except CommandError as exc:
        raise UserError(f"revision {revision!r}: {exc} (`lvt db current` shows where the database is)") from None


@db_app.command("upgrade")
def upgrade(
    revision: str = typer.Argument("head", help="Target revision."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Upgrade the database to REVISION (default: the newest)."""
    url = default_url()
    before = migrate.current(url)
    after = _migrated(migrate.upgrade, url, revision)
    if revision != "head" and after != revision and before == after and before is not None:
        raise UserError(f"{redacted_url(url)} is at {before}, past {revision}; "
                        f"`lvt db downgrade {revision}` goes back")
    refresh = "lvt batch --all --refresh" if migrate.results_predate_rules(before, after) else None
    if json_out:
        print_json({"database": redacted_url(url), "from": before, "to": after, "head": migrate.head(),
                    "next": refresh})
        return
    console.print(f"{redacted_url(url)}: {before or 'empty'} -> {after}")
    if refresh:
        console.print(f"[yellow]results stored before {migrate.RESULTS_REDONE_AT} follow earlier rules or lack what is "
                      f"new (response rules, lesions cut by the scan edge, tracking warnings) until `{refresh}` "
                      "(and `--model M` for each other model) redoes them[/]")


@db_app.command("downgrade")
def downgrade(
    revision: str = typer.Argument(None, help="Target revision; 'base' drops every table. Default: one step back."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Go back this many revisions (instead of REVISION)."),
    yes: bool = typer.Option(False, "--yes", help="Confirm dropping what the undone revisions stored (at base: every table, the audit log too)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Downgrade the database to REVISION, or back by --steps (default: one step back)."""
    if revision is not None and steps is not None:
        raise typer.BadParameter(f"give a revision ({revision}) or --steps ({steps}), not both",
                                 param_hint="REVISION / --steps")  # bad usage: exit 2
    target = revision if revision is not None else f"-{steps or 1}"
    url = default_url()
    require_store(url)  # connecting would create an empty SQLite file
    before = migrate.current(url)
    if before is not None and migrate.downgrade_lands_at(url, target) is None and not yes:
        what = "downgrading to base" if target == "base" else f"going back {target[1:]} steps from {before} reaches base: it"
        raise UserError(f"{what} drops every table, patients, results and the audit log included; "
                        "add --yes to do it")
    undone = migrate.undone_by_downgrade(url, target) if before is not None else []
    if undone and not yes:  # e.g. 0008's de-identification policies: an upgrade brings back NULLs
        dropped = "; ".join(f"{rev}: {doc}" for rev, doc in undone)
        raise UserError(f"going back from {before} drops what these revisions stored, and an upgrade "
                        f"does not bring it back ({dropped}); add --yes to do it")
    after = _migrated(migrate.downgrade, url, target)
    if json_out:
        print_json({"database": redacted_url(url), "from": before, "to": after})
    else:
        console.print(f"{redacted_url(url)}: {before or 'empty'} -> {after or 'base'}")


@db_app.command("current")
def current(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Show the revision the database is at and the newest one this code ships."""
    url = default_url()
    require_store(url)  # a mistyped LVT_VAR_DIR created an empty store there
    rev, head = migrate.current(url), migrate.head()
    if json_out:
        print_json(
            {"database": redacted_url(url), "current": rev, "head": head, "up_to_date": rev == head}
        )
    else:
        state = "up to date" if rev == head else f"behind (head is {head}; run `lvt db upgrade`)"
        console.print(f"{redacted_url(url)}: {rev or 'empty'} — {state}")
        typer.echo(rev or "")


def register(app: typer.Typer) -> None:
    """Add the ``db`` command group."""
    app.add_typer(db_app, name="db")
