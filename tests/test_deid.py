"""De-identification: stable keyed pseudonyms, consistent date shifts, a private key file."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest

from app.cli.common import UserError
from app.services.deid import Deidentifier, load_secret_key, parse_date


def test_pseudonyms_are_stable_keyed_and_distinct() -> None:
    a = Deidentifier(key=b"k1")
    assert a.patient_id("PAT001") == Deidentifier(key=b"k1").patient_id("PAT001")
    assert a.patient_id("PAT001") != a.patient_id("PAT002")
    assert a.patient_id("PAT001") != Deidentifier(key=b"k2").patient_id("PAT001")
    assert "PAT001" not in a.patient_id("PAT001")
    uid = a.uid("1.2.840.1234.5")
    assert uid.startswith("2.25.") and len(uid) <= 64 and uid == a.uid("1.2.840.1234.5")
    assert a.accession("") is None and a.accession("ACC1") != "ACC1"


def test_date_shift_is_one_offset_per_patient_and_keeps_intervals() -> None:
    deid = Deidentifier(key=b"k1", shift_dates=True)
    d1, d2 = dt.date(2024, 1, 15), dt.date(2024, 7, 3)
    s1, s2 = deid.date("PAT001", d1), deid.date("PAT001", d2)
    assert s1 is not None and s2 is not None
    assert s1 != d1 and (s2 - s1) == (d2 - d1)
    assert -365 <= deid.date_offset_days("PAT001") <= -1
    offsets = {deid.date_offset_days(f"P{i}") for i in range(20)}
    assert len(offsets) > 10  # patients get different offsets
    kept = Deidentifier(key=b"k1", shift_dates=False)
    assert kept.date("PAT001", d1) == d1
    off = Deidentifier(key=b"", enabled=False)
    assert off.patient_id(" PAT001 ") == "PAT001" and off.date("PAT001", d1) == d1


def test_key_file_is_created_private_and_reused(
    lvt_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.settings import get_settings

    monkeypatch.delenv("LVT_SECRET_KEY")
    get_settings.cache_clear()
    key = load_secret_key()
    path = lvt_env / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= 32 and load_secret_key() == key
    os.chmod(path, 0o644)
    with pytest.raises(UserError, match="chmod 600"):
        load_secret_key()


def test_environment_key_wins(lvt_env: Path) -> None:
    assert load_secret_key() == b"test-secret-key"
    assert not (lvt_env / "secret.key").exists()


def test_parse_date_accepts_dicom_and_iso() -> None:
    assert parse_date("20240115") == parse_date("2024-01-15") == dt.date(2024, 1, 15)
    assert parse_date("") is None
    with pytest.raises(ValueError, match="not a date"):
        parse_date("15/01/2024")


def test_a_study_date_in_the_future_or_before_ct_is_implausible() -> None:
    """2062 typed for 2026 was stored and put the study at the end of every timeline."""
    import datetime as dt

    from app.services.deid import implausible_study_date

    today = dt.date(2026, 12, 6)
    assert implausible_study_date(dt.date(2026, 12, 7), today) is None  # tomorrow east of here
    assert "in the future" in (implausible_study_date(dt.date(2062, 12, 6), today) or "")
    assert "before the first CT" in (implausible_study_date(dt.date(1960, 1, 1), today) or "")
    assert implausible_study_date(None, today) is None
