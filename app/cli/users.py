"""``lvt users add|disable|enable|passwd|list``: accounts of the web app."""

from __future__ import annotations

import sys
from dataclasses import asdict

import click
import typer
from rich.table import Table

from app.cli.common import UserError, console, open_existing_store, print_json, stdout
from app.services import audit, auth
from db.engine import ensure_schema, session_scope

users_app = typer.Typer(help="Web app users (argon2-hashed passwords, roles).", no_args_is_help=True)


NO_PROMPT = ("a password is needed: give it as the first line of standard input with --password-stdin "
             "(it is asked for, twice, only on a terminal)")


def _read_password(from_stdin: bool) -> str:
    """One line from stdin (scripts), or a hidden prompt asked twice (people).

    Without a terminal there is no one to ask: a piped line was read as the password and then
    its confirmation, and end of input ended in click's bare "Aborted." instead of the one
    error (one JSON document under ``--json``) that says what to do."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UserError("no password on stdin (give it as the first line)")
        return password
    if not sys.stdin.isatty():
        raise UserError(f"standard input is not a terminal: {NO_PROMPT}")
    try:  # the prompt goes to stderr: stdout stays JSON
        return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True))
    except click.exceptions.Abort:  # end of input or Ctrl-C at the prompt
        raise UserError(f"no password was typed: {NO_PROMPT}") from None


@users_app.command("add")
def add(
    name: str = typer.Argument(..., help="User name used to sign in."),
    role: str = typer.Option(..., "--role", help="clinician | researcher | admin."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of stdin."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Create a user with ROLE (clinicians see patients, researchers also the cohort)."""
    if role not in auth.ROLE_RANK:
        raise typer.BadParameter(f"choose one of {', '.join(auth.ROLE_RANK)}", param_hint="--role")
    password = _read_password(password_stdin)
    ensure_schema()
    with session_scope() as session:
        user = auth.add_user(session, name, role, password, actor=audit.command_line_actor("lvt users"))
        result = {"username": user.username, "role": user.role, "active": True}
    _done(result, f"added {name} ({role})", json_out)


@users_app.command("disable")
def disable(
    name: str = typer.Argument(..., help="User name."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Stop a user from signing in (the account and its audit trail are kept)."""
    ensure_schema()
    with session_scope() as session:
        auth.set_active(session, name, False, actor=audit.command_line_actor("lvt users"))
    _done({"username": name, "active": False}, f"disabled {name}", json_out)


@users_app.command("enable")
def enable(
    name: str = typer.Argument(..., help="User name."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Allow a disabled user to sign in again."""
    ensure_schema()
    with session_scope() as session:
        auth.set_active(session, name, True, actor=audit.command_line_actor("lvt users"))
    _done({"username": name, "active": True}, f"enabled {name}", json_out)


@users_app.command("passwd")
def passwd(
    name: str = typer.Argument(..., help="User name."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of stdin."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Set a new password for NAME."""
    ensure_schema()
    with session_scope() as session:
        auth._require(session, name)
    password = _read_password(password_stdin)
    with session_scope() as session:
        auth.set_password(session, name, password, actor=audit.command_line_actor("lvt users"))
    _done({"username": name, "password_changed": True}, f"password of {name} changed", json_out)


@users_app.command("list")
def list_users(json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Every user with role, state and last sign-in."""
    open_existing_store()
    with session_scope() as session:
        users = auth.list_users(session)
    if json_out:
        print_json({"users": [asdict(u) for u in users]})
        return
    table = Table(title=f"{len(users)} user(s)")
    for column in ("user", "role", "active", "last sign-in"):
        table.add_column(column)
    for u in users:
        table.add_row(u.username, u.role, "yes" if u.active else "no", str(u.last_login or "-"))
    stdout.print(table)


def _done(result: dict[str, object], message: str, json_out: bool) -> None:
    if json_out:
        print_json(result)
    else:
        console.print(message)


def register(app: typer.Typer) -> None:
    """Add the ``users`` command group."""
    app.add_typer(users_app, name="users")
