"""What the 3D page shows: which series opens, and each structure's legend, colour and file name.

Plain functions of the follow-up data, so they are tested without a browser.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import SimpleITK as sitk

from app.web import theme
from db.queries import StudyInfo

LIVER_OPACITY = 0.18
VESSEL_OPACITY = 0.9


@dataclass(frozen=True)
class SeriesChoice:
    """A segmented series the page can show; ``tracked`` for the one its study's tracks follow."""

    study_id: int
    study_date: dt.date | None
    series_id: int
    phase: str
    tracked: bool

    @property
    def label(self) -> str:
        """``2011-11-26 · portal (tracked phase)``."""
        day = str(self.study_date) if self.study_date else f"undated study {self.study_id}"  # as the follow-up page
        return f"{day} · {self.phase}" + (" (tracked phase)" if self.tracked else "")


def series_choices(
    studies: Iterable[StudyInfo], label_maps: Mapping[int, str], tracked: Collection[int]
) -> list[SeriesChoice]:
    """Every segmented series, studies oldest first, the series the tracks follow marked
    (``tracked``: one per day, from :func:`app.services.analytics.tracked_series_ids`)."""
    return [SeriesChoice(study.id, study.study_date, se.id, se.phase, se.id in tracked)
            for study in studies for se in study.series if se.id in label_maps]


def default_choice(choices: Sequence[SeriesChoice]) -> int:
    """The latest day's tracked series. Taking "tracked" as "has lesions" opened an older study
    when the latest had none (a complete response), the very study to look at."""
    tracked = [i for i, c in enumerate(choices) if c.tracked]
    return tracked[-1] if tracked else len(choices) - 1


def tracked_choice(choices: Sequence[SeriesChoice], choice: SeriesChoice) -> SeriesChoice | None:
    """The series tracks follow on ``choice``'s day (its study alone when undated): a day's
    phases may be separate studies."""
    def same_day(c: SeriesChoice) -> bool:
        return c.study_id == choice.study_id if choice.study_date is None else c.study_date == choice.study_date

    return next((c for c in choices if c.tracked and same_day(c)), None)


@dataclass(frozen=True)
class Structure:
    """One mesh of the scene as the page shows and names it."""

    key: str
    """:mod:`lvt_core.scene`'s name: ``liver``, ``vessels``, ``tumor_<lesion index>``."""
    file_name: str
    """In the downloads: ``tumor_track_<n>`` for a tracked tumor, else ``key``."""
    legend: str
    colour: str
    opacity: float


def structures(keys: Sequence[str], track_of: Mapping[int, int]) -> list[Structure]:
    """How the page draws and names the meshes ``keys``: a tumor by its track where it has one
    (in the track's colour), else by its lesion number, the number the distance table gives.
    Two lesions of one track (merged) keep their lesion numbers too, so no file name repeats."""
    tracks = [track_of.get(_lesion(key)) for key in keys if key.startswith("tumor_")]
    shared = {t for t in tracks if t is not None and tracks.count(t) > 1}
    return [_structure(key, track_of, shared) for key in keys]


def _lesion(key: str) -> int:
    return int(key.removeprefix("tumor_"))


def _structure(key: str, track_of: Mapping[int, int], shared: set[int]) -> Structure:
    if key == "liver":
        return Structure(key, key, "liver", theme.rgb_to_hex(theme.LIVER_RGB), LIVER_OPACITY)
    if key == "vessels":
        return Structure(key, key, "vessels", theme.rgb_to_hex(theme.VESSEL_RGB), VESSEL_OPACITY)
    lesion = _lesion(key)
    track = track_of.get(lesion)
    if track is None:
        return Structure(key, key, f"lesion {lesion}", theme.rgb_to_hex(theme.TUMOR_RGB), 1.0)
    if track in shared:
        return Structure(key, f"tumor_track_{track}_lesion_{lesion}", f"track {track} (lesion {lesion})",
                         theme.track_colour(track), 1.0)
    return Structure(key, f"tumor_track_{track}", f"track {track}", theme.track_colour(track), 1.0)


@dataclass(frozen=True)
class LesionFacts:
    """A lesion of a label map as the 3D page and the report's 3D view list it."""

    lesion: int
    """Its index (the stored lesion numbering)."""
    diameter_mm: float
    """Longest axial diameter."""
    distance_mm: float | None
    """Shortest gap from the tumor to a vessel (0 where they touch; None without vessels)."""


def lesion_facts(labels: sitk.Image) -> list[LesionFacts]:
    """The lesions of a label map, numbered as stored, with their gap to the nearest vessel."""
    from lvt_core.lesions import extract_lesions

    return [LesionFacts(les.id, les.longest_axial_diameter_mm, les.distance_to_vessel_mm)
            for les in extract_lesions(labels)]


def lesion_rows(facts: Iterable[LesionFacts], track_of: Mapping[int, int]) -> list[dict[str, object]]:
    """The distance table: one row per lesion with the number (and track, where the series has
    tracks) the 3D legend names it by, and its size, so a row can be matched to a tumor in a
    phase tracks do not follow (every row read track "–" there)."""
    rows: list[dict[str, object]] = [
        {"lesion": f.lesion, "track": track_of.get(f.lesion), "⌀ (mm)": round(f.diameter_mm, 1),
         "distance (mm)": None if f.distance_mm is None else round(f.distance_mm, 1)}
        for f in sorted(facts, key=lambda f: f.lesion)
    ]
    if not any(row["track"] is not None for row in rows):
        for row in rows:
            del row["track"]
    return rows
