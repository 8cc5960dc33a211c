"""Plotly figures of the app (trajectories, volumetry, cohort agreement), one style throughout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.web import theme
from lvt_core.coverage import MIN_LIVER_ML
from lvt_core.volumetry import ROUNDING_PCT

LAYOUT = {
    "template": "simple_white",
    "margin": {"l": 50, "r": 20, "t": 40, "b": 40},
    "height": 360,
    "legend": {"orientation": "h", "y": -0.2},
    "font": {"size": 13},
}


DATE_CHART_MARGIN = {"l": 90, "r": 80, "t": 40, "b": 40}
"""One plot area for the follow-up's date charts (timeline, diameters, volumes): the volume
chart's right axis took room the others left to their plot, so a study's date sat at another
x in each."""

BARS_BELOW_LIVER_FRACTION = 0.75
"""Share of the volume chart's height the stacked tumor bars may reach, under the liver line."""

BADGE_FREE_FRACTION = 0.7
"""Share of the trajectory chart's height, from the bottom, that holds data and no RECIST badge."""


def reference_line(fig: go.Figure, y: float, colour: str, dash: str = "solid", label: str | None = None) -> None:
    """A horizontal line across the plot at ``y``, drawn whatever the template says: simple_white
    gives shapes no line (width 0, opacity 0.3), and a figure cannot override that default."""
    labelled = {"annotation_text": label} if label else {}  # None would print plotly's "new text"
    fig.add_hline(y=y, line={"color": colour, "dash": dash, "width": 1.5}, opacity=1.0, **labelled)


SINGLE_DATE_SPAN = pd.Timedelta(days=30)
"""Either side of the one date of a patient seen once."""
DATE_MARGIN_FRACTION = 0.06
MIN_DATE_MARGIN = pd.Timedelta(days=12)
"""Either side of a patient's first and last study: room for the last RECIST badge."""


def fit_dates(fig: go.Figure, *dates: pd.Series) -> None:
    """Give a date axis the span of ``dates`` with a margin either side.

    The follow-up charts pass every study date of the patient, so the timeline, the diameter
    and the volume charts share one axis and a study sits at one place in each; the margin
    keeps the last study's RECIST badge off the edge. One date gets a month either side:
    plotly zooms such an axis to a millisecond and labels it "23:59:59.999".
    """
    days = pd.to_datetime(pd.concat([pd.Series(d, dtype=object) for d in dates]).dropna()).unique()
    if len(days) == 0:
        return
    first, last = pd.Timestamp(min(days)), pd.Timestamp(max(days))
    if first == last:
        fig.update_xaxes(range=[first - SINGLE_DATE_SPAN, first + SINGLE_DATE_SPAN], tickformat="%Y-%m-%d")
        return
    margin = max((last - first) * DATE_MARGIN_FRACTION, MIN_DATE_MARGIN)
    fig.update_xaxes(range=[first - margin, last + margin])


def timeline(studies: pd.DataFrame) -> go.Figure:
    """Studies on a date axis, one marker per series, labelled by phase."""
    fig = go.Figure(
        go.Scatter(
            x=studies["study_date"],
            y=studies["phase"],
            mode="markers",
            marker={"size": 14, "color": "#5b7083", "symbol": "square"},
            hovertemplate="%{x|%Y-%m-%d} · %{y}<extra></extra>",
        )
    )
    fig.update_layout(**{**LAYOUT, "height": 170, "margin": {**DATE_CHART_MARGIN, "t": 10, "b": 30}})
    fig.update_yaxes(title=None, categoryorder="category descending")
    fit_dates(fig, studies["study_date"])
    return fig


def trajectory(lesions: pd.DataFrame, measurements: pd.DataFrame, responses: pd.DataFrame,
               study_dates: pd.Series | None = None) -> go.Figure:
    """Model longest diameter per track over dates, reader measurements, RECIST per timepoint;
    the date axis spans ``study_dates`` when given (every study of the patient)."""
    fig = go.Figure()
    for track, rows in lesions.groupby("track"):
        rows = rows.sort_values("study_date")
        fig.add_trace(
            go.Scatter(
                x=rows["study_date"],
                y=rows["diameter_mm"],
                mode="lines+markers",
                name=f"track {track} (model)",
                line={"color": theme.track_colour(int(track)), "width": 3},
                marker={"size": 9},
                hovertemplate="%{x|%Y-%m-%d}: %{y:.1f} mm<extra>track " + str(track) + "</extra>",
            )
        )
    if not measurements.empty:
        fig.add_trace(
            go.Scatter(
                x=measurements["study_date"],
                y=measurements["diameter_mm"],
                mode="markers",
                name="radiologist",
                marker={"symbol": "x", "size": 11, "color": "#333333"},
                text=measurements["lesion"],
                hovertemplate="%{x|%Y-%m-%d}: %{y:.1f} mm (%{text})<extra>radiologist</extra>",
            )
        )
    for _, r in responses.iterrows():
        label = f"{'M' if r['source'] == 'model' else 'R'}: {r['category']}"
        fig.add_annotation(
            x=r["study_date"],
            y=1.0 if r["source"] == "model" else 0.92,
            yref="paper",
            yanchor="top",
            text=label,
            showarrow=False,
            bgcolor=theme.RESPONSE_COLOURS.get(r["category"], "#dddddd"),
            font={"size": 11, "color": theme.RESPONSE_TEXT_COLOUR},
            borderpad=2,
        )
    fig.update_layout(**{**LAYOUT, "margin": DATE_CHART_MARGIN},
                      title="Longest axial diameter per lesion track (RECIST: M model, R radiologist)")
    fig.update_layout(title_font_size=14)
    fig.update_yaxes(title="diameter (mm)", rangemode="tozero")
    if not responses.empty:
        # the RECIST badges take the top 17 % or so of the plot: keep every diameter below them
        largest = pd.concat([lesions.get("diameter_mm", pd.Series(dtype=float)),
                             measurements.get("diameter_mm", pd.Series(dtype=float))]).max()
        if pd.notna(largest) and largest > 0:
            fig.update_yaxes(range=[0, float(largest) / BADGE_FREE_FRACTION])
    fig.update_xaxes(title=None)
    fit_dates(fig, *([study_dates] if study_dates is not None else
                     [lesions.get("study_date", pd.Series(dtype=object)),
                      measurements.get("study_date", pd.Series(dtype=object))]))
    return fig


def volume_trajectory(lesions: pd.DataFrame, volumes: pd.DataFrame,
                      study_dates: pd.Series | None = None) -> go.Figure:
    """Tumor volume per track and total liver volume over time (the date axis as in
    :func:`trajectory`)."""
    fig = go.Figure()
    width_ms = bar_width_ms(pd.concat([lesions["study_date"], volumes.get("study_date", pd.Series(dtype=object))]))
    for track, rows in lesions.groupby("track"):
        rows = rows.sort_values("study_date")
        fig.add_trace(
            go.Bar(x=rows["study_date"], y=rows["volume_ml"], name=f"track {track}", width=width_ms,
                   marker_color=theme.track_colour(int(track)),
                   hovertemplate="%{x|%Y-%m-%d}: %{y:.2f} ml<extra>track " + str(track) + "</extra>")
        )
    if not volumes.empty:
        found = volumes[volumes["total_ml"] >= MIN_LIVER_ML]  # a scan without a liver is no volume of it
        liver = found.groupby("study_date", as_index=False)["total_ml"].mean()
        fig.add_trace(
            go.Scatter(x=liver["study_date"], y=liver["total_ml"], name="total liver (mean of phases)",
                       yaxis="y2", mode="lines+markers", line={"color": "#{:02x}{:02x}{:02x}".format(*theme.LIVER_RGB)},
                       hovertemplate="%{x|%Y-%m-%d}: %{y:.0f} ml<extra>total liver</extra>")
        )
    fig.update_layout(**{**LAYOUT, "margin": DATE_CHART_MARGIN}, barmode="stack",
                      title="Tumor volume per track (ml) and total liver volume")
    # ticks of its own (synced to the tumor axis they fell on 225, 450, 675 ml), no second grid
    fig.update_layout(title_font_size=14, yaxis2={"overlaying": "y", "side": "right", "title": "liver (ml)",
                                                   "rangemode": "tozero", "tickmode": "auto", "nticks": 6,
                                                   "showgrid": False, "automargin": False})
    fig.update_layout(yaxis={"title": "tumor (ml)", "rangemode": "tozero"})
    stacked = lesions.groupby("study_date")["volume_ml"].sum().max() if not lesions.empty else None
    if not volumes.empty and stacked is not None and pd.notna(stacked) and stacked > 0:
        # bars in the lower part, the liver line (near its axis' top) above them: it hid bar tops
        fig.update_yaxes(range=[0, float(stacked) / BARS_BELOW_LIVER_FRACTION])
        fig.update_layout(yaxis2={"range": [0, float(volumes["total_ml"].max()) * 1.05]})
    fit_dates(fig, *([study_dates] if study_dates is not None else
                     [lesions.get("study_date", pd.Series(dtype=object)),
                      volumes.get("study_date", pd.Series(dtype=object))]))
    return fig


def bar_width_ms(dates: pd.Series) -> float:
    """Bar width on a date axis, in milliseconds: 60 % of the shortest gap between studies.

    Plotly sizes date bars from the gaps within one trace, so a track seen at a single study
    gets a bar a few pixels wide; one width for every track keeps each bar visible."""
    day_ms = 86_400_000.0
    days = pd.to_datetime(pd.Series(dates).dropna()).drop_duplicates().sort_values()
    gaps = days.diff().dropna()
    shortest = gaps.min() / pd.Timedelta(days=1) if len(gaps) else 30.0
    return 0.6 * min(max(float(shortest), 1.0), 60.0) * day_ms


def volumetry_deviation(rows: pd.DataFrame, threshold_pct: float = 2.0) -> go.Figure:
    """Paper Figure 5: relative deviation of each phase from its study's mean, with the band."""
    fig = go.Figure()
    for phase, part in rows.groupby("phase"):
        if len(part) <= 2000:
            fig.add_trace(
                go.Box(y=part["deviation_pct"], name=str(phase), boxpoints="all", jitter=0.4, pointpos=0,
                       marker={"size": 5}, line={"color": "#5b7083"},
                       text=part["patient"].map(theme.short_id), hovertemplate="%{text}: %{y:.2f} %<extra></extra>")
            )
            continue
        # cohort scale: send the box statistics and the studies outside the band, not 10,000 points
        dev = part["deviation_pct"]
        q1, median, q3 = (float(v) for v in dev.quantile([0.25, 0.5, 0.75]))
        iqr = q3 - q1
        inside = dev[(dev >= q1 - 1.5 * iqr) & (dev <= q3 + 1.5 * iqr)]
        fig.add_trace(go.Box(x=[str(phase)], q1=[q1], median=[median], q3=[q3], lowerfence=[float(inside.min())],
                             upperfence=[float(inside.max())], name=str(phase), line={"color": "#5b7083"},
                             boxpoints=False, hoverinfo="skip"))
        out = part[dev.abs() > threshold_pct + ROUNDING_PCT]  # as lvt_core.volumetry.beyond_threshold
        fig.add_trace(go.Scatter(x=[str(phase)] * len(out), y=out["deviation_pct"], mode="markers",
                                 marker={"size": 5, "color": "#e76f51"}, name=f"{phase} flagged",
                                 text=out["patient"].map(theme.short_id),
                                 hovertemplate="%{text}: %{y:.2f} %<extra></extra>"))
    for y in (threshold_pct, -threshold_pct):
        reference_line(fig, y, dash="dash", colour="#e76f51", label=f"{y:+g} %")
    fig.update_layout(**LAYOUT, showlegend=False, title="Relative deviation of liver volume per phase (%)")
    fig.update_layout(title_font_size=14)
    span = float(rows["deviation_pct"].abs().max()) if len(rows) else 0.0
    limit = max(1.5 * threshold_pct, 1.1 * span)  # the ±threshold band always visible
    fig.update_yaxes(title="deviation from same-day mean (%)", range=[-limit, limit])
    return fig


def response_distribution(responses: pd.DataFrame) -> go.Figure:
    """Counts of RECIST categories by source (rows of assessments, or counts with a column ``n``)."""
    counts = responses if "n" in responses else responses.groupby(["source", "category"]).size().reset_index(name="n")
    fig = go.Figure()
    for category in ("CR", "PR", "SD", "PD", "NE"):
        part = counts[counts["category"] == category]
        fig.add_trace(go.Bar(x=part["source"], y=part["n"], name=category,
                             marker_color=theme.RESPONSE_COLOURS[category]))
    fig.update_layout(**LAYOUT, barmode="stack", title="RECIST response distribution")
    fig.update_layout(title_font_size=14)
    fig.update_yaxes(title="assessments (count)")
    return fig


def agreement_scatter(pairs: pd.DataFrame) -> go.Figure:
    """Model against radiologist longest diameter, with the identity line."""
    top = float(max(pairs["model_mm"].max(), pairs["radiologist_mm"].max(), 1.0)) * 1.1
    scatter = go.Scattergl if len(pairs) > 2000 else go.Scatter  # WebGL keeps 20,000 points fluid
    fig = go.Figure(
        scatter(x=pairs["radiologist_mm"], y=pairs["model_mm"], mode="markers",
                   marker={"color": "#3b7dd8", "size": 7}, text=pairs["patient"].map(theme.short_id),
                   hovertemplate="%{text}: reader %{x:.1f}, model %{y:.1f} mm<extra></extra>")
    )
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", line={"dash": "dot", "color": "#999"},
                             showlegend=False))
    fig.update_layout(**LAYOUT, showlegend=False, title="Model vs radiologist (mm)")
    fig.update_layout(title_font_size=14)
    fig.update_xaxes(title="radiologist (mm)", range=[0, top])
    fig.update_yaxes(title="model (mm)", range=[0, top])
    return fig


def bland_altman(pairs: pd.DataFrame) -> go.Figure:
    """Difference (model − radiologist) against mean, with bias and 95 % limits of agreement."""
    mean = (pairs["model_mm"] + pairs["radiologist_mm"]) / 2
    diff = pairs["model_mm"] - pairs["radiologist_mm"]
    bias, sd = float(diff.mean()), float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    scatter = go.Scattergl if len(pairs) > 2000 else go.Scatter
    fig = go.Figure(scatter(x=mean, y=diff, mode="markers", marker={"color": "#3b7dd8", "size": 7},
                            text=pairs["patient"].map(theme.short_id),
                            hovertemplate="%{text}: mean %{x:.1f} mm, model − reader %{y:+.1f} mm<extra></extra>"))
    reference_line(fig, bias, colour="#333333", label=f"bias {bias:.1f} mm")
    for y, side in ((bias + 1.96 * sd, "upper"), (bias - 1.96 * sd, "lower")):
        reference_line(fig, y, dash="dash", colour="#e76f51", label=f"{side} limit of agreement {y:.1f} mm")
    fig.update_layout(**LAYOUT, showlegend=False, title="Bland–Altman (model − radiologist)")
    fig.update_layout(title_font_size=14)
    fig.update_xaxes(title="mean of both (mm)")
    fig.update_yaxes(title="difference (mm)")
    return fig


SLAB_FRACTION = 0.25
"""A scene whose head–foot extent is under this share of its widest side is a slab."""
SLAB_CAMERA_EYE = {"x": -0.3, "y": -0.65, "z": 0.75}
"""Where the camera looks at a slab from: above it, a little in front and to the patient's right
(as :data:`ORGAN_CAMERA_EYE`), close enough to fill the frame."""
ORGAN_CAMERA_EYE = {"x": -0.45, "y": -1.45, "z": 0.55}
"""A whole liver seen as surgeons and radiologists face the patient: from the front (LPS -y),
a little to the patient's right (-x, where the liver lies) and above, the head up (plotly's up is
+z, superior), so the patient's right is on the screen's left. Plotly's default eye (+x, +y,
+z) looked from behind and from the left, the liver's far side; this one is nearer than it
(1.25 each), where the organ was a small figure in an empty frame."""


def scene_axes(vertices: list[np.ndarray]) -> tuple[dict, float | None]:
    """Plotly's ``scene`` for meshes in physical mm, and the head–foot extent (mm) when the
    scene is a slab (None otherwise). ``aspectmode="data"`` scales a scene to unit volume, so a
    series of three slices becomes a sheet metres wide seen from its edge, far past the frame; a
    slab keeps its true proportions with its widest side as the unit, seen from above."""
    scene: dict = {"aspectmode": "data", "xaxis_visible": False, "yaxis_visible": False, "zaxis_visible": False}
    if not vertices:
        return scene, None
    points = np.concatenate(vertices)
    extent = np.ptp(points, axis=0)
    widest = float(extent.max())
    if widest <= 0 or extent[2] >= SLAB_FRACTION * widest:
        return {**scene, "camera": {"eye": ORGAN_CAMERA_EYE}}, None
    ratio = extent / widest
    scene.update(aspectmode="manual", aspectratio={"x": float(ratio[0]), "y": float(ratio[1]), "z": float(ratio[2])},
                 camera={"eye": SLAB_CAMERA_EYE})
    return scene, float(extent[2])
