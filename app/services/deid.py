"""De-identification: a basic-profile subset of DICOM PS3.15 Annex E.

Direct identifiers (patient id, accession number, study/series UIDs) become stable
pseudonyms from HMAC-SHA256 under a secret key that lives outside the database
(``LVT_SECRET_KEY``, or ``<var_dir>/secret.key`` created with mode 0600 on first use).
Names, birth dates, addresses, institution and physician names are simply never stored.

Dates: with ``LVT_DEID_SHIFT_DATES=true`` (the default) every date of a patient moves back
by one offset of 1–365 days derived from the key and the source patient id, so intervals
between studies stay true while calendar dates are hidden. With ``false`` dates are kept.
The same policy and key applied to a measurements CSV give the same patient ids and
dates, which is how imported measurements find their studies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from app.cli.common import UserError

KEY_FILE_NAME = "secret.key"
MAX_SHIFT_DAYS = 365


def key_file_path() -> Path:
    """Where the key file lives when ``LVT_SECRET_KEY`` is not set."""
    from app.settings import get_settings

    return get_settings().var_dir / KEY_FILE_NAME


def key_exists() -> bool:
    """Whether a key is configured or its file exists (so loading it creates nothing)."""
    from app.settings import get_settings

    return bool(get_settings().secret_key) or key_file_path().exists()


def load_secret_key() -> bytes:
    """The de-identification key: ``LVT_SECRET_KEY``, else the 0600 key file (created once).

    A key file readable by group or others is refused, as ssh does with private keys.
    """
    from app.settings import get_settings

    configured = get_settings().secret_key
    if configured:
        return configured.encode()
    path = key_file_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: read theirs
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise UserError(
            f"{path}: key file permissions are {oct(mode)}; run `chmod 600 {path}` "
            "(the key must not be readable by other users)"
        )
    key = path.read_text().strip()
    if not key:
        raise UserError(f"{path}: key file is empty")
    return key.encode()


@dataclass(frozen=True)
class Deidentifier:
    """Maps source identifiers and dates to the values stored in the database."""

    key: bytes
    enabled: bool = True
    shift_dates: bool = True

    @classmethod
    def from_settings(cls, enabled: bool = True) -> Deidentifier:
        """The installation's policy: key from the environment or key file."""
        from app.settings import get_settings

        if not enabled:
            return cls(key=b"", enabled=False, shift_dates=False)
        return cls(load_secret_key(), True, get_settings().deid_shift_dates)

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self.key, f"{kind}:{value.strip()}".encode(), hashlib.sha256).digest()

    def patient_id(self, source_id: str) -> str:
        """Stable pseudonym of a source patient id (``P-`` + 16 hex digits)."""
        if not self.enabled:
            return source_id.strip()
        return "P-" + self._digest("patient", source_id).hex()[:16]

    def accession(self, source: str | None) -> str | None:
        """Stable pseudonym of an accession number (None stays None)."""
        if not source or not source.strip():
            return None
        if not self.enabled:
            return source.strip()
        return "A-" + self._digest("accession", source).hex()[:16]

    def uid(self, source_uid: str) -> str:
        """A replacement DICOM UID under the UUID root ``2.25`` (at most 44 characters)."""
        if not self.enabled:
            return source_uid.strip()
        return "2.25." + str(int.from_bytes(self._digest("uid", source_uid)[:16], "big"))

    def date_offset_days(self, source_patient_id: str) -> int:
        """The patient's date shift in days (0 when dates are kept)."""
        if not (self.enabled and self.shift_dates):
            return 0
        digest = self._digest("dateshift", source_patient_id)
        return -(1 + int.from_bytes(digest[:8], "big") % MAX_SHIFT_DAYS)

    def date(self, source_patient_id: str, value: dt.date | None) -> dt.date | None:
        """``value`` shifted by the patient's offset."""
        if value is None:
            return None
        return value + dt.timedelta(days=self.date_offset_days(source_patient_id))


FIRST_CT_DATE = dt.date(1971, 10, 1)
"""The first clinical CT scan: a study dated before it is a typing error."""


FUTURE_DATE_GRACE = dt.timedelta(days=1)
"""A study dated tomorrow may be today somewhere east of here; later is a typing error."""


def implausible_study_date(value: dt.date | None, today: dt.date | None = None) -> str | None:
    """Why ``value`` cannot be the date of a CT study, or None: before CT existed, or in the
    future (2062 typed for 2026 put a study at the end of every timeline). Checked on the
    source date, before de-identification shifts it back."""
    if value is None:
        return None
    if value < FIRST_CT_DATE:
        return f"{value} is before the first CT scan ({FIRST_CT_DATE})"
    today = today or dt.date.today()
    if value > today + FUTURE_DATE_GRACE:
        return f"{value} is in the future (today is {today})"
    return None


def parse_date(text: str | None) -> dt.date | None:
    """Parse DICOM ``YYYYMMDD`` or ISO ``YYYY-MM-DD``; empty means None; else ValueError."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"{text!r} is not a date (expected YYYY-MM-DD or YYYYMMDD)")
