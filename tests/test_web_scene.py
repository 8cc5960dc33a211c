"""The 3D page's choices without a browser: which series opens, how tumors are named and
coloured, the distance table, and track colours that never read as a vessel or the liver."""

from __future__ import annotations

import colorsys
import datetime as dt

import pytest

pytest.importorskip("streamlit")

from app.web import scene3d, theme
from app.web.scene3d import LesionFacts
from db.queries import SeriesInfo, StudyInfo


def _series(series_id: int, phase: str) -> SeriesInfo:
    return SeriesInfo(series_id, f"1.2.{series_id}", phase, "CT", None, (1.0, 1.0, 1.0), (8, 8, 8), 1.0,
                      f"ct/{series_id}.nii.gz", "0" * 64)


def _study(study_id: int, date: dt.date, *series: SeriesInfo) -> StudyInfo:
    return StudyInfo(study_id, f"1.2.{study_id}", date, None, None, list(series))


def test_the_latest_study_opens_on_its_tracked_phase_even_without_lesions() -> None:
    """A complete response (no lesions in the latest study) opened an older study instead:
    "tracked" was taken to mean "has lesions"."""
    studies = [
        _study(1, dt.date(2011, 6, 5), _series(10, "arterial"), _series(9, "portal")),
        _study(2, dt.date(2011, 11, 26), _series(11, "arterial"), _series(12, "portal")),
    ]
    choices = scene3d.series_choices(studies, {s: f"{s}.nii.gz" for s in (9, 10, 11, 12)}, {9, 12})
    opened = choices[scene3d.default_choice(choices)]
    assert (opened.study_date, opened.phase, opened.tracked) == (dt.date(2011, 11, 26), "portal", True)
    assert [c.label for c in choices if c.tracked] == ["2011-06-05 · portal (tracked phase)",
                                                       "2011-11-26 · portal (tracked phase)"]


def test_a_days_tracked_phase_is_found_across_its_studies() -> None:
    """A day whose phases are separate studies: its arterial study's tracked phase is the
    portal series of the other study (the per-study rule marked the arterial one tracked)."""
    day = dt.date(2020, 1, 1)
    studies = [_study(1, day, _series(1, "arterial")), _study(2, day, _series(2, "portal")),
               _study(3, None, _series(3, "portal"))]
    choices = scene3d.series_choices(studies, {1: "a", 2: "b", 3: "c"}, {2})  # undated: never tracked
    assert [(c.phase, c.tracked) for c in choices] == [("arterial", False), ("portal", True), ("portal", False)]
    assert scene3d.tracked_choice(choices, choices[0]) == choices[1]
    assert scene3d.tracked_choice(choices, choices[2]) is None
    assert choices[2].label == "undated study 3 · portal"  # read "None · portal"


def test_untracked_lesions_are_numbered_alike_in_legend_table_and_files() -> None:
    """In a phase tracks do not follow every table row read track "–" while the legend said
    "untracked lesion 1..4": now a row and a legend entry share the lesion number."""
    keys = ["liver", "vessels", "tumor_1", "tumor_2"]
    parts = scene3d.structures(keys, track_of={})
    assert [p.legend for p in parts] == ["liver", "vessels", "lesion 1", "lesion 2"]
    assert [p.file_name for p in parts] == keys  # as `lvt export mesh` names them
    facts = [LesionFacts(2, 31.04, 0.0), LesionFacts(1, 12.26, 9.04)]
    rows = scene3d.lesion_rows(facts, track_of={})
    assert rows == [{"lesion": 1, "⌀ (mm)": 12.3, "distance (mm)": 9.0},
                    {"lesion": 2, "⌀ (mm)": 31.0, "distance (mm)": 0.0}]


def test_tracked_tumors_are_named_and_coloured_by_track_without_repeating_a_file_name() -> None:
    parts = scene3d.structures(["liver", "tumor_1", "tumor_2", "tumor_3", "tumor_4"],
                               track_of={1: 5, 2: 1, 3: 2, 4: 2})
    assert [p.file_name for p in parts] == ["liver", "tumor_track_5", "tumor_track_1",
                                            "tumor_track_2_lesion_3", "tumor_track_2_lesion_4"]
    assert [p.legend for p in parts[1:3]] == ["track 5", "track 1"]
    assert parts[1].colour == theme.track_colour(5) and parts[0].opacity < 1.0
    rows = scene3d.lesion_rows([LesionFacts(1, 20.0, None), LesionFacts(2, 8.0, 3.0)], {1: 5})
    assert [(r["lesion"], r["track"]) for r in rows] == [(1, 5), (2, None)]


def _hue(colour: str | tuple[int, int, int]) -> float:
    rgb = theme.hex_to_rgb(colour) if isinstance(colour, str) else colour
    return colorsys.rgb_to_hsv(*(v / 255 for v in rgb))[0] * 360


def _hue_gap(a: float, b: float) -> float:
    return min(abs(a - b), 360 - abs(a - b))


HEPATIC_VEIN_PURPLE_HUE = 275.0
"""ARCHITECTURE draws hepatic veins purple (the app draws every vessel blue for now)."""


def _lab(colour: str) -> tuple[float, float, float]:
    """CIE L*a*b* (D65) of an sRGB colour, where a distance of about 20 is plainly a different colour."""
    linear = [(v / 255) / 12.92 if v / 255 <= 0.04045 else ((v / 255 + 0.055) / 1.055) ** 2.4
              for v in theme.hex_to_rgb(colour)]
    rows = ((0.4124, 0.3576, 0.1805), (0.2126, 0.7152, 0.0722), (0.0193, 0.1192, 0.9505))
    xyz = [sum(m * c for m, c in zip(row, linear, strict=True)) / white
           for row, white in zip(rows, (0.95047, 1.0, 1.08883), strict=True)]
    f = [t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in xyz]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def test_track_colours_are_told_apart_and_never_read_as_a_vessel_or_the_liver() -> None:
    """Track 6 was vessel blue, track 7 hepatic-vein purple, track 5 a crimson lost in the liver."""
    for colour in theme.TRACK_COLOURS:
        hue = _hue(colour)
        assert _hue_gap(hue, _hue(theme.VESSEL_RGB)) >= 60, colour
        assert _hue_gap(hue, HEPATIC_VEIN_PURPLE_HUE) >= 60, colour
        assert _hue_gap(hue, _hue(theme.LIVER_RGB)) >= 20, colour
        assert 25 <= hue <= 160, colour  # orange, yellow or green, as ARCHITECTURE says
    labs = [_lab(c) for c in theme.TRACK_COLOURS]
    closest = min(sum((a - b) ** 2 for a, b in zip(x, y, strict=True)) ** 0.5
                  for i, x in enumerate(labs) for y in labs[i + 1:])
    assert closest >= 20  # the nearest pair: a green and its darker shade
