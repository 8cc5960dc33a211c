"""The follow-up report's size chart: each track's longest diameter over time beside the
radiologist's measurements, as the page's trajectory chart shows them, drawn as SVG.

The page's chart is Plotly, which needs a browser script to draw; the report has none, and a
vector drawing prints sharply on paper. Matplotlib's object API (no pyplot) draws it, so a
report made by a web server thread shares no global figure state.
"""

from __future__ import annotations

import io

import matplotlib as mpl
import pandas as pd
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from app.web import theme

READER_COLOUR = "#333333"
"""The page's colour for the radiologist's crosses."""


def size_chart_svg(lesions: pd.DataFrame, measurements: pd.DataFrame) -> str | None:
    """The chart as an SVG document, or None when there is nothing to draw."""
    if lesions.empty and measurements.empty:
        return None
    figure = Figure(figsize=(7.0, 2.8))
    axes = figure.add_subplot()
    for track, rows in lesions.groupby("track"):
        rows = rows.sort_values("study_date")
        axes.plot(pd.to_datetime(rows["study_date"]), rows["diameter_mm"], marker="o", linewidth=2,
                  markersize=5, color=theme.track_colour(int(track)), label=f"track {track} (model)")
    if not measurements.empty:
        axes.scatter(pd.to_datetime(measurements["study_date"]), measurements["diameter_mm"], marker="x",
                     s=36, color=READER_COLOUR, label="radiologist", zorder=3)
    locator = AutoDateLocator(maxticks=8)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes.set_ylabel("longest axial diameter (mm)")
    axes.set_ylim(bottom=0)
    axes.grid(axis="y", color="#dddddd", linewidth=0.6)
    axes.spines[["top", "right"]].set_visible(False)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    figure.tight_layout()
    buffer = io.StringIO()
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": "lvt"}):  # text stays text; stable ids
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()
