"""The follow-up charts stay readable: every tumor bar is wide enough to see, every RECIST
badge's text contrasts with its colour."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from app.web import charts, theme

DAY_MS = 86_400_000


def _relative_luminance(hex_colour: str) -> float:
    channels = [int(hex_colour.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


@pytest.mark.parametrize("category", sorted(theme.RESPONSE_COLOURS))
def test_recist_badge_text_meets_wcag_aa(category: str) -> None:
    lighter, darker = sorted((_relative_luminance(theme.RESPONSE_COLOURS[category]),
                              _relative_luminance(theme.RESPONSE_TEXT_COLOUR)), reverse=True)
    assert (lighter + 0.05) / (darker + 0.05) >= 4.5


def test_trajectory_badges_use_the_readable_text_colour() -> None:
    responses = pd.DataFrame({"study_date": [dt.date(2021, 7, 1), dt.date(2021, 7, 1)],
                              "source": ["model", "radiologist"], "category": ["PD", "SD"]})
    empty = pd.DataFrame(columns=["track", "study_date", "diameter_mm"])
    fig = charts.trajectory(empty, pd.DataFrame(), responses)
    assert [a.text for a in fig.layout.annotations] == ["M: PD", "R: SD"]
    assert {a.font.color for a in fig.layout.annotations} == {theme.RESPONSE_TEXT_COLOUR}


def test_recist_badges_never_cover_a_diameter() -> None:
    """The badges hang from the top of the plot (paper y 1.0 and 0.92, about 8 % tall each):
    the largest diameter, model's or radiologist's, must stay below them."""
    day = dt.date(2022, 1, 23)
    lesions = pd.DataFrame({"track": [1], "study_date": [day], "diameter_mm": [15.8]})
    measurements = pd.DataFrame({"study_date": [day], "diameter_mm": [21.5], "lesion": ["L1"]})
    responses = pd.DataFrame({"study_date": [day, day], "source": ["model", "radiologist"], "category": ["PD", "PD"]})
    fig = charts.trajectory(lesions, measurements, responses)
    low, high = fig.layout.yaxis.range
    assert low == 0 and 21.5 / high <= 0.92 - 0.2  # a badge is ~20 px of a ~250 px plot, plus the marker
    assert all(a.yanchor == "top" for a in fig.layout.annotations)


def test_a_track_seen_once_gets_a_visible_bar() -> None:
    """Plotly sizes date bars from gaps within a trace: a lone study got a sliver before."""
    dates = [dt.date(2021, 7, 1), dt.date(2021, 11, 2), dt.date(2022, 1, 23)]
    lesions = pd.DataFrame({"track": [1, 2, 2], "study_date": [dates[2], dates[1], dates[2]],
                            "volume_ml": [0.3, 1.0, 1.3]})
    volumes = pd.DataFrame({"study_date": dates, "total_ml": [1480.0, 1470.0, 1490.0]})
    fig = charts.volume_trajectory(lesions, volumes)
    bars = [t for t in fig.data if t.type == "bar"]
    shortest_gap_days = (dates[2] - dates[1]).days  # 82 days: capped at 60
    assert [b.width for b in bars] == [pytest.approx(0.6 * min(shortest_gap_days, 60) * DAY_MS)] * 2
    assert fig.layout.yaxis.title.text == "tumor (ml)"


def test_bar_width_follows_the_closest_studies() -> None:
    close = pd.Series([dt.date(2021, 7, 1), dt.date(2021, 7, 11), dt.date(2022, 1, 1)])
    assert charts.bar_width_ms(close) == pytest.approx(0.6 * 10 * DAY_MS)
    assert charts.bar_width_ms(pd.Series([dt.date(2021, 7, 1)])) == pytest.approx(0.6 * 30 * DAY_MS)
    same_day = pd.Series([dt.date(2021, 7, 1), dt.date(2021, 7, 1)])  # two phases, one study
    assert charts.bar_width_ms(same_day) == pytest.approx(0.6 * 30 * DAY_MS)


def _drawn(fig: go.Figure, shape: go.layout.Shape) -> tuple[float, float]:
    """(line width, opacity) that plotly.js draws: the shape's own, else the template's default."""
    defaults = fig.layout.template.layout.shapedefaults
    width = shape.line.width if shape.line.width is not None else defaults.line.width
    opacity = shape.opacity if shape.opacity is not None else defaults.opacity
    return (2.0 if width is None else float(width)), (1.0 if opacity is None else float(opacity))


def test_reference_lines_are_drawn() -> None:
    """The ±2 % volumetry band and the Bland–Altman bias and limits must be visible lines
    (the simple_white template alone draws them with width 0)."""
    pairs = pd.DataFrame({"model_mm": [10.0, 20.0, 30.0, 25.0], "radiologist_mm": [12.0, 18.0, 29.0, 20.0],
                          "patient": ["P-1", "P-1", "P-2", "P-3"]})
    deviation = pd.DataFrame({"phase": ["portal", "arterial"], "deviation_pct": [0.5, -0.5],
                              "patient": ["P-1", "P-1"]})
    for fig, lines in ((charts.bland_altman(pairs), 3), (charts.volumetry_deviation(deviation), 2)):
        assert len(fig.layout.shapes) == lines
        assert all(_drawn(fig, s) == (1.5, 1.0) for s in fig.layout.shapes)
        assert all(a.text for a in fig.layout.annotations)  # an empty one shows plotly's "new text"
    assert [a.text for a in charts.volumetry_deviation(deviation).layout.annotations] == ["+2 %", "-2 %"]
    labels = [a.text for a in charts.bland_altman(pairs).layout.annotations]
    assert labels[0] == "bias 1.5 mm"
    assert labels[1].startswith("upper limit of agreement") and labels[2].startswith("lower limit of agreement")
    assert all(label.endswith(" mm") for label in labels)  # the limits were bare numbers


def test_a_patient_seen_once_gets_a_month_either_side_not_milliseconds() -> None:
    """Plotly zooms a one-date axis to a millisecond ("23:59:59.999"); every follow-up chart
    of a patient with one study shows the month around it, and leaves longer follow-up alone."""
    day = dt.date(2023, 7, 22)
    studies = pd.DataFrame({"study_date": [day, day], "phase": ["arterial", "portal"]})
    lesions = pd.DataFrame({"track": [1, 2], "study_date": [day, day], "diameter_mm": [27.5, 12.0],
                            "volume_ml": [3.0, 0.8]})
    volumes = pd.DataFrame({"study_date": [day], "total_ml": [1404.0]})
    month = [pd.Timestamp(2023, 6, 22), pd.Timestamp(2023, 8, 21)]
    for fig in (charts.timeline(studies), charts.trajectory(lesions, pd.DataFrame(), pd.DataFrame()),
                charts.volume_trajectory(lesions, volumes)):
        assert [pd.Timestamp(v) for v in fig.layout.xaxis.range] == month
        assert fig.layout.xaxis.tickformat == "%Y-%m-%d"



def test_the_follow_up_charts_share_one_date_axis() -> None:
    """The diameter and volume charts spanned their own dates: one study sat at two places."""
    dates = [dt.date(2019, 5, 2), dt.date(2019, 11, 20), dt.date(2020, 4, 16)]
    studies = pd.DataFrame({"study_date": dates, "phase": ["portal"] * 3})
    lesions = pd.DataFrame({"track": [1, 1], "study_date": dates[1:], "diameter_mm": [14.0, 12.0],
                            "volume_ml": [1.2, 0.9]})  # no lesion at the first study
    volumes = pd.DataFrame({"study_date": dates, "total_ml": [1500.0, 1480.0, 1490.0]})
    figures = (charts.timeline(studies),
               charts.trajectory(lesions, pd.DataFrame(), pd.DataFrame(), studies["study_date"]),
               charts.volume_trajectory(lesions, volumes, studies["study_date"]))
    ranges = [[pd.Timestamp(v) for v in fig.layout.xaxis.range] for fig in figures]
    assert ranges[0] == ranges[1] == ranges[2]
    # and one plot area: the volume chart's liver axis narrowed its plot, so dates did not line up
    assert len({(fig.layout.margin.l, fig.layout.margin.r) for fig in figures}) == 1
    assert figures[2].layout.yaxis2.automargin is False and figures[2].layout.yaxis2.tickmode == "auto"
    # the stacked bars stay under the liver line, which hid their tops
    bars_top = figures[2].layout.yaxis.range[1] * charts.BARS_BELOW_LIVER_FRACTION
    assert bars_top == pytest.approx(1.2) and figures[2].layout.yaxis2.range[1] < 1500.0 / 0.9
    assert ranges[0][0] < pd.Timestamp(dates[0]) and ranges[0][1] > pd.Timestamp(dates[-1]) + pd.Timedelta(days=11)


def _box_corners(x_mm: float, y_mm: float, z_mm: float) -> np.ndarray:
    return np.array([[x, y, z] for x in (0, x_mm) for y in (0, y_mm) for z in (0, z_mm)], float) + np.array([-80.0, 20.0, 1200.0])


def test_a_three_slice_scene_keeps_its_proportions_and_is_seen_from_above() -> None:
    scene, slab_mm = charts.scene_axes([_box_corners(200, 160, 3), _box_corners(20, 20, 3)])
    assert slab_mm == pytest.approx(3.0)
    assert scene["aspectmode"] == "manual"
    assert scene["aspectratio"] == pytest.approx({"x": 1.0, "y": 0.8, "z": 0.015})
    assert scene["camera"]["eye"]["z"] > 0


def test_a_whole_liver_scene_is_drawn_to_scale_as_before() -> None:
    scene, slab_mm = charts.scene_axes([_box_corners(200, 160, 150)])
    assert slab_mm is None and scene["aspectmode"] == "data"
    eye = scene["camera"]["eye"]
    assert np.linalg.norm(list(eye.values())) < np.linalg.norm([1.25, 1.25, 1.25])  # nearer than plotly's
    empty, none = charts.scene_axes([])
    assert none is None and empty["aspectmode"] == "data"


@pytest.mark.parametrize("height_mm", [150, 3])
def test_a_scene_is_seen_from_the_front_the_right_and_above(height_mm: float) -> None:
    """The camera sat behind the patient, on the left: the liver was seen from its far side.
    In LPS the front is -y, the patient's right -x and the head +z (plotly's up)."""
    scene, _slab = charts.scene_axes([_box_corners(200, 160, height_mm)])
    eye = scene["camera"]["eye"]
    assert eye["y"] < 0 and abs(eye["y"]) > abs(eye["x"])  # mostly anterior
    assert eye["x"] < 0 and eye["z"] > 0  # a little to the right, from above
