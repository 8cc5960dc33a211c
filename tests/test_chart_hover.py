"""What a clinician reads when hovering the follow-up and cohort charts, rendered by plotly.js
in Debian's Chromium: dates as days (not timestamps), units, and which track or patient a
point belongs to. The figures' hover templates are only text until plotly.js formats them."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from app.web import charts

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium"),
]
DATES = [dt.date(2023, 3, 14), dt.date(2023, 9, 2)]
PATIENT = "P-8b0d0c319ddf253d"


def _hover_texts(figure: go.Figure, tmp_path: Path) -> list[set[str]]:
    """For each trace, the texts of the hover label plotly.js draws for its first point (the
    point's line and, in its own box, the trace's name)."""
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "chart.html"
    figure.write_html(page_file, include_plotlyjs=True, full_html=True, div_id="chart")
    labels = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(page_file.as_uri())
        page.wait_for_selector("#chart .main-svg")
        for curve in range(len(figure.data)):
            page.evaluate("Plotly.Fx.unhover('chart')")
            page.wait_for_timeout(100)  # plotly.js throttles hover events
            page.evaluate(f"Plotly.Fx.hover('chart', [{json.dumps({'curveNumber': curve, 'pointNumber': 0})}])")
            page.wait_for_timeout(100)
            labels.append(set(page.locator("#chart .hoverlayer .hovertext text").all_text_contents()))
        browser.close()
    return labels


def test_follow_up_charts_hover_with_day_unit_and_track(tmp_path: Path) -> None:
    lesions = pd.DataFrame({"track": [3, 3], "study_date": DATES, "diameter_mm": [21.46, 17.0],
                            "volume_ml": [4.318, 2.5]})
    measurements = pd.DataFrame({"study_date": [DATES[0]], "diameter_mm": [22.0], "lesion": ["L1"]})
    trajectory = charts.trajectory(lesions, measurements, pd.DataFrame())
    assert _hover_texts(trajectory, tmp_path) == [{"2023-03-14: 21.5 mm", "track 3"},
                                                  {"2023-03-14: 22.0 mm (L1)", "radiologist"}]
    volumes = pd.DataFrame({"study_date": DATES, "total_ml": [1482.4, 1450.0]})
    volume = charts.volume_trajectory(lesions, volumes)  # the liver line said "(Mar 14, 2023, 1,482.4)"
    assert _hover_texts(volume, tmp_path) == [{"2023-03-14: 4.32 ml", "track 3"},
                                              {"2023-03-14: 1482 ml", "total liver"}]


def test_cohort_charts_hover_with_the_short_patient_id(tmp_path: Path) -> None:
    pairs = pd.DataFrame({"patient": [PATIENT], "radiologist_mm": [18.04], "model_mm": [16.96]})
    assert _hover_texts(charts.agreement_scatter(pairs), tmp_path)[0] == {"P-8b0d0c31: reader 18.0, model 17.0 mm"}
    # the Bland–Altman points said "(17.5, −1.08)": no patient, no unit
    assert _hover_texts(charts.bland_altman(pairs), tmp_path)[0] == {"P-8b0d0c31: mean 17.5 mm, model − reader -1.1 mm"}
