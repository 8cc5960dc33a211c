"""Model-vs-radiologist linking for the pages, on the frames of :mod:`app.web.queries`.

The linking and the earlier-detection rule are :mod:`lvt_core.agreement`'s; this module
only converts rows to its records and back.
"""

from __future__ import annotations

import pandas as pd

from lvt_core.agreement import (
    DAYS_PER_MONTH,
    ModelLesion,
    RadiologistMeasurement,
    earlier_detection,
    link_measurements,
)
from lvt_core.tracking import FLUID_WARNING_START


def _model(lesions: pd.DataFrame, patient: str | None = None) -> list[ModelLesion]:
    """Records as the stored links are made from: the slice span included, or a measurement
    the store links by its slice would be linked by size here, to another track."""
    patients = [patient] * len(lesions) if patient is not None else lesions["patient"].tolist()
    ids = lesions["lesion_id"].tolist() if "lesion_id" in lesions else [0] * len(lesions)
    spans = lesions["z_range"].tolist() if "z_range" in lesions else [None] * len(lesions)
    return [
        ModelLesion(str(pid), str(sid), date, int(track), int(lid or 0), float(d), (float(x), float(y), float(z)),
                    _span(span))
        for pid, sid, date, track, lid, d, x, y, z, span in zip(
            patients, lesions["study_id"], lesions["study_date"], lesions["track"], ids,
            lesions["diameter_mm"], lesions["x"], lesions["y"], lesions["z"], spans, strict=True,
        )
    ]


def _span(value: object) -> tuple[int, int] | None:
    """A ``z_range`` cell as a pair of slice indices (None when the lesion has no box)."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        return None
    return (int(value[0]), int(value[1]))


def _reader(measurements: pd.DataFrame, patient: str | None = None) -> list[RadiologistMeasurement]:
    out = []
    for r in measurements.to_dict("records"):
        if "location_mm" in r:
            location = tuple(r["location_mm"]) if r["location_mm"] is not None else None
        else:
            location = None if pd.isna(r["x"]) else (float(r["x"]), float(r["y"]), float(r["z"]))
        out.append(
            RadiologistMeasurement(
                patient_id=str(patient if patient is not None else r["patient"]),
                study_id=str(r["study_id"]),
                study_date=r["study_date"],
                diameter_mm=float(r["diameter_mm"]),
                slice_index=None if pd.isna(r["slice_index"]) else int(r["slice_index"]),
                location_mm=location,  # type: ignore[arg-type]
                lesion=None if pd.isna(r["lesion"]) else str(r["lesion"]),
                reader=str(r.get("reader") or ""),
            )
        )
    return out


def earlier_badges(pseudo_id: str, lesions: pd.DataFrame, measurements: pd.DataFrame,
                   shown: pd.DataFrame | None = None) -> list[dict[str, object]]:
    """Tracks the model saw before the radiologist first measured them (paper Figure 2),
    linked over every lesion; with ``shown``, only the tracks a size filter shows."""
    if lesions.empty or measurements.empty:
        return []
    model = _model(lesions, pseudo_id)
    links = link_measurements(_reader(measurements, pseudo_id), model)
    badges = [e.to_dict() for e in earlier_detection(model, links)]
    if shown is None:
        return badges
    tracks = set(shown["track"]) if not shown.empty else set()
    return [b for b in badges if b["track_id"] in tracks]


def lead_phrase(days: int) -> str:
    """A badge's lead time: in days under two months (whole months read a 12-day lead as
    "0 months"), else in months to one decimal."""
    if days < 2 * DAYS_PER_MONTH:
        return f"{days} day" + ("" if days == 1 else "s")
    return f"{days / DAYS_PER_MONTH:.1f} months"


def first_found_by_search(lesions: pd.DataFrame, track: int) -> bool:
    """True when a second look, not the network alone, drew ``track`` at its first study: the
    faint-lesion search, or another phase of the day confirming an unsure candidate or carrying
    its lesion over."""
    rows = lesions[lesions["track"] == track]
    if rows.empty:
        return False
    first = rows[rows["study_date"] == rows["study_date"].min()]
    return bool(first["found_by"].isin(["faint_search", "other_phase"]).any())


def earlier_lines(badges: list[dict[str, object]], lesions: pd.DataFrame) -> list[str]:
    """The page's and the report's sentence for each track seen before the radiologist."""
    lines = []
    for b in badges:
        searched = first_found_by_search(lesions, int(str(b["track_id"])))
        lines.append(
            f"Track {b['track_id']}: seen by the model {lead_phrase(int(str(b['lead_days'])))} before the "
            f"radiologist ({b['model_first_date']} vs {b['radiologist_first_date']})"
            + (": first drawn by a second look (the faint-lesion search, or another phase of the day), "
               "not the network alone; look twice." if searched else "."))
    return lines


def warning_lines(tracking_warnings: list[str]) -> list[str]:
    """The last tracking's warnings as sentences: a track gone where the reading left fluid out
    reads as it is stored; a registration replaced by the scanner frame says what to check."""
    return [
        warning[0].upper() + warning[1:] + "." if warning.startswith(FLUID_WARNING_START)
        else f"Tracks matched without registration here: check their links. ({warning})"
        for warning in tracking_warnings
    ]


def measurement_tracks(pseudo_id: str, lesions: pd.DataFrame, measurements: pd.DataFrame) -> list[int | None]:
    """The track each measurement links to (None where nothing fits), in row order."""
    if lesions.empty or measurements.empty:
        return [None] * len(measurements)
    links = link_measurements(_reader(measurements, pseudo_id), _model(lesions, pseudo_id))
    return [lk.track_id for lk in links]


def unlinked_measurements_line(pseudo_id: str, lesions: pd.DataFrame, measurements: pd.DataFrame) -> str | None:
    """The page's sentence on the radiologist's measurements no track links to (the model's
    possible misses), or None when every one links."""
    tracks = measurement_tracks(pseudo_id, lesions, measurements)
    unlinked = [f"{row.lesion} on {row.study_date} ({row.diameter_mm:.1f} mm)"
                for track, row in zip(tracks, measurements.itertuples(), strict=True) if track is None]
    if not unlinked:
        return None
    return ("Measured by the radiologist and linked to no model lesion: " + ", ".join(unlinked)
            + ". The model may have missed them: look at them on the images (the downloaded report "
              "pictures each one).")


def tracks_at_least(lesions: pd.DataFrame, min_diameter_mm: float) -> pd.DataFrame:
    """The rows of tracks whose largest longest-diameter reaches ``min_diameter_mm``.

    A display filter only: stored lesions, tracks, links and responses are untouched.
    """
    if lesions.empty or min_diameter_mm <= 0:
        return lesions
    largest = lesions.groupby("track")["diameter_mm"].transform("max")
    return lesions[largest >= min_diameter_mm]
