"""Finding a stored patient by the id a user types: the pseudonym, or the source id.

The store keys patients by pseudonym, but an admin thinks in the hospital's ids. With
de-identification on, a source id becomes its pseudonym under the store's key (the same
mapping `lvt ingest` used), so either spelling finds the patient.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cli.common import UserError
from db.models import Patient


def find_patient(session: Session, given: str) -> Patient | None:
    """The patient whose pseudonym is ``given``, or whose source id pseudonymises to it."""
    patient = session.scalar(select(Patient).where(Patient.pseudo_id == given))
    if patient is not None:
        return patient
    from app.services.deid import Deidentifier

    try:
        pseudo = Deidentifier.from_settings(True).patient_id(given)
    except UserError:  # no key to pseudonymise with: only pseudonyms can be found
        return None
    return session.scalar(select(Patient).where(Patient.pseudo_id == pseudo))


def require_patient(session: Session, given: str) -> Patient:
    """:func:`find_patient`, or a UserError naming the id and where the ids are listed."""
    patient = find_patient(session, given)
    if patient is None:
        raise UserError(f"patient {given!r} is not in the store, by pseudonym or source id "
                        "(see `lvt patients list`)")
    return patient
