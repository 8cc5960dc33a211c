"""Shared fixtures: isolated settings per test, the real-data folder, database URLs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["db_fixtures"]  # tests/ is on sys.path (no __init__.py)

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "real"


@pytest.fixture()
def real_data() -> Path:
    """The real CT samples beside the checkout; skip with a reason when absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real CT samples not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture()
def lvt_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point every LVT setting at a fresh temporary var dir (SQLite + data store)."""
    from app.settings import get_settings

    var = tmp_path / "var"
    monkeypatch.setenv("LVT_VAR_DIR", str(var))
    monkeypatch.delenv("LVT_DATABASE_URL", raising=False)
    monkeypatch.delenv("LVT_DATA_DIR", raising=False)
    monkeypatch.setenv("LVT_SECRET_KEY", "test-secret-key")
    get_settings.cache_clear()
    yield var
    get_settings.cache_clear()


def postgres_url() -> str | None:
    """The PostgreSQL server URL for database tests, when CI or the developer provides one."""
    return os.environ.get("LVT_TEST_POSTGRES_URL") or None
