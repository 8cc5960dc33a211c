"""Users, argon2 hashes, throttled sign-in, expiry, and the ``lvt users`` commands."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from app.cli.common import UserError
from app.services import auth
from app.services.audit import command_line_actor as audit_actor
from db.engine import session_scope
from db.models import AuditEvent, User


def test_hash_is_argon2_and_login_works(migrated_db: str) -> None:
    with session_scope(migrated_db) as s:
        auth.add_user(s, "dr.a", "clinician", "correct-horse")
    with session_scope(migrated_db) as s:
        row = s.scalar(select(User).where(User.username == "dr.a"))
        assert row.password_hash.startswith("$argon2id$") and "correct-horse" not in row.password_hash
        user = auth.authenticate(s, "dr.a", "correct-horse")
        assert user is not None and user.role == "clinician" and not user.expired()
        assert auth.authenticate(s, "dr.a", "wrong-password") is None
        assert auth.authenticate(s, "nobody", "correct-horse") is None
    with session_scope(migrated_db) as s:
        actions = [e.action for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
        assert actions.count("login") == 1 and actions.count("login_failed") == 2


def test_throttle_disable_roles_and_expiry(migrated_db: str) -> None:
    with session_scope(migrated_db) as s:
        auth.add_user(s, "res", "researcher", "long-enough-1")
        with pytest.raises(UserError, match="already exists"):
            auth.add_user(s, "res", "admin", "long-enough-2")
        with pytest.raises(UserError, match="too short"):
            auth.add_user(s, "short", "admin", "abc")
        with pytest.raises(UserError, match="unknown role"):
            auth.add_user(s, "x", "surgeon", "long-enough-3")
    for _ in range(auth.MAX_FAILED_LOGINS):
        with session_scope(migrated_db) as s:
            assert auth.authenticate(s, "res", "guess") is None
    with session_scope(migrated_db) as s, pytest.raises(auth.LoginThrottled):
        auth.authenticate(s, "res", "long-enough-1")  # even the right password waits
    later = dt.datetime.now(dt.UTC) + auth.THROTTLE_WINDOW + dt.timedelta(seconds=1)
    with session_scope(migrated_db) as s:
        user = auth.authenticate(s, "res", "long-enough-1", now=later)
        assert user is not None
        assert user.has_role("clinician") and user.has_role("researcher") and not user.has_role("admin")
        assert user.expired(later + auth.SESSION_TTL + dt.timedelta(seconds=1))
        auth.set_active(s, "res", False)
    with session_scope(migrated_db) as s:
        assert auth.authenticate(s, "res", "long-enough-1", now=later) is None


def _lvt(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "lvt"), *args],
        input=stdin, capture_output=True, text=True, env=os.environ.copy(), timeout=120,
    )


def test_users_cli(migrated_db: str) -> None:
    added = _lvt("users", "add", "nurse", "--role", "clinician", "--password-stdin", "--json", stdin="s3cret-pass\n")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout) == {"username": "nurse", "role": "clinician", "active": True}
    again = _lvt("users", "add", "nurse", "--role", "clinician", "--password-stdin", stdin="s3cret-pass\n")
    assert again.returncode == 1 and "already exists" in again.stderr
    bad_role = _lvt("users", "add", "x", "--role", "boss", "--password-stdin", stdin="s3cret-pass\n")
    assert bad_role.returncode == 2
    assert _lvt("users", "passwd", "nurse", "--password-stdin", stdin="new-pass-123\n").returncode == 0
    with session_scope(migrated_db) as s:
        assert auth.authenticate(s, "nurse", "new-pass-123") is not None
    assert _lvt("users", "disable", "nurse").returncode == 0
    listed = json.loads(_lvt("users", "list", "--json").stdout)
    assert listed["users"][0]["username"] == "nurse" and listed["users"][0]["active"] is False
    with session_scope(migrated_db) as s:  # who did it: the command and the OS account
        actors = set(s.scalars(select(AuditEvent.actor).where(AuditEvent.action == "user_change")))
    assert actors == {audit_actor("lvt users")} and "(" in actors.pop()
    missing = _lvt("users", "disable", "ghost")
    assert missing.returncode == 1 and "ghost" in missing.stderr


def test_a_password_without_a_terminal_is_one_json_error(migrated_db: str) -> None:
    """Without --password-stdin and without a terminal, `users add --json </dev/null` printed
    click's "Aborted." and an empty stdout, and `users passwd --json` read one piped line as
    the password and wanted its confirmation."""
    assert _lvt("users", "add", "nurse", "--role", "admin", "--password-stdin", stdin="s3cret-pass\n").returncode == 0
    for args, stdin in ((["add", "qa3", "--role", "admin"], ""), (["passwd", "nurse"], "new-pass-123\n")):
        done = _lvt("users", *args, "--json", stdin=stdin)
        assert done.returncode == 1 and "Aborted" not in done.stderr, done.stderr
        doc = json.loads(done.stdout)
        assert doc["exit_code"] == 1 and "--password-stdin" in doc["error"] and "standard input" in doc["error"]
    with session_scope(migrated_db) as s:  # nothing changed: no qa3, nurse keeps her password
        assert [u.username for u in auth.list_users(s)] == ["nurse"]
        assert auth.authenticate(s, "nurse", "s3cret-pass") is not None


@pytest.mark.parametrize(
    ("password", "said"),
    [
        ("        ", "too short"),
        ("  abc   ", "too short"),
        ("12345678", "too easy"),
        ("Password", "too easy"),
        ("aaaaaaaaaa", "too easy"),
        ("abababab", "too easy"),
        ("abcdefghij", "too easy"),
        ("carol.m", "too short"),
        ("carol.m.b", "too easy"),
        ("\udcff\udcfeabcdefgh", "not valid UTF-8"),
    ],
)
def test_weak_passwords_are_refused(migrated_db: str, password: str, said: str) -> None:
    with session_scope(migrated_db) as s, pytest.raises(UserError, match=said):
        auth.add_user(s, "carol.m.b", "admin", password)
    with session_scope(migrated_db) as s:
        assert auth.list_users(s) == []


def test_user_names_are_unique_in_any_case_and_cannot_pass_for_paths(migrated_db: str) -> None:
    with session_scope(migrated_db) as s:
        auth.add_user(s, "dave", "clinician", "correct-horse")
    for name, said in (("Dave", "already exists as 'dave'"), ("hé llo/../x", "letters, digits")):
        with session_scope(migrated_db) as s, pytest.raises(UserError, match=said):
            auth.add_user(s, name, "clinician", "correct-horse")
    with session_scope(migrated_db) as s:
        assert [u.username for u in auth.list_users(s)] == ["dave"]
        auth.add_user(s, "dr.kim_2@ward-3", "clinician", "correct-horse")


def test_names_differing_only_in_case_are_one_user_on_every_backend(migrated_db: str) -> None:
    """SQLite's lower() folds ASCII only: "Ärztin" and "ärztin" became two accounts there."""
    with session_scope(migrated_db) as s:
        auth.add_user(s, "Ärztin", "clinician", "correct-horse")
        auth.add_user(s, "dr.ß", "clinician", "correct-horse")
    for other in ("ärztin", "ÄRZTIN", "DR.SS"):
        with session_scope(migrated_db) as s, pytest.raises(UserError, match="already exists as"):
            auth.add_user(s, other, "clinician", "correct-horse")


def test_the_demo_leaves_an_existing_account_as_it_is(migrated_db: str) -> None:
    """It re-enabled a disabled "clinician", changed its role and reset its password to the
    public demo one, without an audit entry."""
    from app.services import demo

    with session_scope(migrated_db) as s:
        auth.add_user(s, "clinician", "admin", "our-own-secret-9")
        auth.set_active(s, "clinician", False)
    with session_scope(migrated_db) as s:
        users, kept = demo.ensure_demo_users(s)
    assert kept == ["clinician"] and set(users.values()) == {"clinician", "researcher", "admin"}
    with session_scope(migrated_db) as s:
        row = s.scalar(select(User).where(User.username == "clinician"))
        assert (row.role, row.active) == ("admin", False)
        assert auth.verify_password(row.password_hash, "our-own-secret-9")
    with session_scope(migrated_db) as s:  # a second demo run: its own accounts still sign in
        assert demo.ensure_demo_users(s)[1] == ["clinician"]


def test_sign_in_takes_the_name_in_any_case_and_throttles_it_as_one(migrated_db: str) -> None:
    """A phone keyboard's "Clinician" was refused (and counted as a failure), though names are
    unique in any case; varying the case must not dodge the throttle either."""
    with session_scope(migrated_db) as s:
        auth.add_user(s, "clinician", "clinician", "correct-horse")
    with session_scope(migrated_db) as s:
        user = auth.authenticate(s, "Clinician", "correct-horse")
        assert user is not None and user.username == "clinician"
    for name in ("CLINICIAN", "Clinician", "clinicIAN", "clinician", "CliniCian"):
        with session_scope(migrated_db) as s:
            assert auth.authenticate(s, name, "wrong-guess") is None
    with session_scope(migrated_db) as s, pytest.raises(auth.LoginThrottled):
        auth.authenticate(s, "clinician", "correct-horse")
