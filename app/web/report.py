"""A patient's follow-up as one self-contained HTML file, for a tumor board or the chart.

The page is interactive and lives behind a sign-in; a board meeting needs a document that
opens anywhere, prints on A4 and says what it is. The report holds the page's tables (studies,
response with its targets, lesion tracks, liver volumes, radiologist measurements) and its
notes (lesions seen first by the model, tracking and coverage warnings), with the pseudonym,
the model, who made it and when, and the research-use disclaimer at the top and the bottom.
A size-over-time chart (:mod:`app.web.report_chart`, SVG), key images
(:mod:`app.web.key_images`, small PNGs of each track's lesion day by day) and the latest day's
3D view (:mod:`app.web.report_scene`) are embedded; the report has no script, so it opens
offline and prints as shown, and :mod:`app.web.report_pdf` lays the same HTML out as PDF/A.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections.abc import Iterable

import pandas as pd

from app.web import analysis, key_images, queries, report_scene, response_table, theme
from lvt_core import __version__ as lvt_version
from lvt_core.coverage import ends_phrase

_STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 10.5pt; margin: 2em; color: #1b1b1b; }
h1 { font-size: 17pt; margin-bottom: 0.2em; }
h2 { font-size: 12.5pt; margin-top: 1.4em; border-bottom: 1px solid #999; }
h3 { font-size: 11pt; margin: 0.8em 0 0.2em; }
table { border-collapse: collapse; margin: 0.4em 0; }
th, td { border: 1px solid #bbb; padding: 2px 7px; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
td:first-child { white-space: nowrap; }
.meta { color: #444; }
.disclaimer { border: 2px solid #b00020; padding: 0.5em 0.8em; margin: 0.8em 0; font-weight: bold; }
.note { color: #444; font-size: 9.5pt; }
ul.warn li { color: #7a4b00; }
.track { margin: 0.5em 0 0.9em; break-inside: avoid; }
.track-name { font-weight: bold; padding-left: 6px; margin-bottom: 3px; }
figure { display: inline-block; vertical-align: top; margin: 0 6px 6px 0; width: 36mm; }
figure img { width: 36mm; height: 36mm; display: block; }
figcaption { font-size: 8pt; color: #333; }
img.chart { width: 100%; max-width: 175mm; }
figure.scene { width: 84mm; }
figure.scene img { width: 84mm; height: 84mm; }
@page { size: A4; margin: 14mm 14mm 16mm; font-family: "DejaVu Sans", Arial, sans-serif;
  @bottom-right { content: "page " counter(page) " of " counter(pages); font-size: 8pt; color: #555; } }
@media print { body { margin: 0; } h2 { break-after: avoid; } table { break-inside: auto; } }
"""

_DATES = {
    True: "study dates shifted by de-identification (the intervals between them are true)",
    False: "study dates as the scanner recorded them",
    None: "study dates as stored (the store did not record whether they were shifted)",
}

NOT_FOR_CLINICAL_USE = (
    "Research software, not for clinical decisions: the model was trained on synthetic CT only. "
    "Every figure here is a segmentation's, to be checked on the images."
)


def _page_footer(pseudo_id: str) -> str:
    """CSS naming the patient and the research use at the foot of every printed page, since a
    page of a printed report is often read apart from the first one."""
    text = f"LVT follow-up · patient {pseudo_id} · research use, not for clinical decisions"
    quoted = text.replace("\\", "\\\\").replace('"', '\\"').replace("<", "\\3c ")
    return f'@page {{ @bottom-left {{ content: "{quoted}"; font-size: 8pt; color: #555; }} }}'


def _table(frame: pd.DataFrame) -> str:
    """An escaped HTML table without the index."""
    return frame.to_html(index=False, escape=True, border=0, na_rep="—")


def _note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def _paragraphs(lines: Iterable[str], css: str = "") -> str:
    items = [f"<li>{html.escape(line)}</li>" for line in lines]
    return f'<ul class="{css}">' + "".join(items) + "</ul>" if items else _note("None.")


def _studies(info: queries.FollowUp) -> pd.DataFrame:
    return pd.DataFrame(
        [{"day": str(s.study_date) if s.study_date else f"undated study {s.id} (not tracked)",
          "phases": ", ".join(se.phase for se in s.series),
          "slice thickness (mm)": ", ".join(f"{se.spacing_mm[2]:.2f}" for se in s.series)}
         for s in info.studies],
        columns=["day", "phases", "slice thickness (mm)"])


def _tracks(lesions: pd.DataFrame) -> pd.DataFrame:
    """Track × day longest axial diameter (mm) of the tracked phase; "≥" where the scan's edge
    cuts the lesion, so its size is a lower bound."""
    if lesions.empty:
        return pd.DataFrame(columns=["track"])
    shown = lesions.assign(
        day=lesions["study_date"].astype(str),
        size=[f"≥ {d:.1f}" if cut is True else f"{d:.1f}"
              for d, cut in zip(lesions["diameter_mm"], lesions["cut_by_scan_edge"], strict=True)],
    )
    table = shown.pivot_table(index="track", columns="day", values="size", aggfunc="first").reset_index()
    first = shown.sort_values("study_date").groupby("track")["found_by"].first().map(theme.found_by_label)
    table.insert(1, "first found by", table["track"].map(first))
    table.columns.name = None
    return table.fillna("—")


def _volumes(volumes: pd.DataFrame) -> pd.DataFrame:
    if volumes.empty:
        return volumes
    return pd.DataFrame({
        "day": volumes["study_date"].astype(str),
        "phase": volumes["phase"],
        "total liver (ml)": volumes["total_ml"].map("{:.0f}".format),
        "functional (ml)": volumes["functional_ml"].map("{:.0f}".format),
        "deviation from the day's mean": volumes["deviation_pct"].map(
            lambda v: f"{v:+.1f} %".replace("-", "−") if pd.notna(v) else "—"),
        "over 2 %": volumes["flagged"].map({True: "yes", False: "no"}),
        "scan stops inside the liver": volumes["liver_cut_at"].map(lambda c: ends_phrase(c) if c else "no"),
    })


def _measurements(info: queries.FollowUp) -> pd.DataFrame:
    """The reader's measurements with the model's track each links to, as the page lists them:
    "none" is a lesion the radiologist measured and the model did not draw (or drew elsewhere)."""
    measurements = info.measurements
    if measurements.empty:
        return measurements
    tracks = analysis.measurement_tracks(info.pseudo_id, info.lesions, measurements)
    return pd.DataFrame({
        "study": measurements["study_date"].astype(str),
        "lesion": measurements["lesion"],
        "⌀ (mm)": measurements["diameter_mm"],
        "short axis (mm)": measurements["short_axis_mm"],
        "reader": measurements["reader"],
        "model's track": ["none" if t is None else str(t) for t in tracks],
    })


def _figure(png: bytes, alt: str, caption_lines: list[str], css: str = "") -> str:
    return (f"<figure class='{css}'><img src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}' "
            f"alt='{html.escape(alt)}'><figcaption>{'<br>'.join(map(html.escape, caption_lines))}</figcaption></figure>")


def _missed_images(pictures: key_images.KeyImages) -> str:
    """The places the radiologist measured and no track links to: the model's possible misses."""
    if not pictures.missed:
        return _note("None: every measurement with a position links to a track.")
    figures = "".join(_figure(p.png, f"reader {p.lesion}, {p.study_date}", p.caption_lines) for p in pictures.missed)
    return f"<div class='strip'>{figures}</div>" + _note(key_images.MISSED_CAPTION)


def _key_images(pictures: key_images.KeyImages, targets: set[int]) -> str:
    """A strip of pictures per track, oldest day first, with what each shows and what is missing;
    ``targets`` are the tracks the model's response measures, named so in their headings."""
    tracks: dict[int, list[key_images.KeyImage]] = {}
    for picture in pictures.images:
        tracks.setdefault(picture.track, []).append(picture)
    parts = []
    for track, shown in tracks.items():
        figures = "".join(_figure(p.png, f"track {track}, {p.study_date}", p.caption_lines) for p in shown)
        parts.append(f"<div class='track'><div class='track-name' style='border-left: 6px solid "
                     f"{theme.track_colour(track)}'>Track {track}{' · RECIST target' if track in targets else ''}</div><div class='strip'>{figures}</div></div>")
    notes = [key_images.CAPTION]
    if pictures.tracks_left_out:
        notes.append("Smaller tracks not pictured, to keep the report readable: tracks "
                     + ", ".join(map(str, pictures.tracks_left_out)) + ".")
    notes += [f"Not pictured: {why}." for why in pictures.unreadable]
    body = "".join(parts) if parts else _note("No lesion to picture.")
    return body + "".join(_note(line) for line in notes)


def _scene(view: report_scene.SceneView) -> str:
    """The latest day's 3D view from the front and the right (or why it is missing), and each
    tumor's gap to the nearest vessel, as the 3D page lists them."""
    day = str(view.study_date) if view.study_date else "an undated study"
    head = _note(f"{day}, {view.phase} phase: the latest day, in the phase the tracks follow.")
    if view.not_drawn:
        body = _note(f"Not drawn: {view.not_drawn}.")
    else:
        figures = "".join(_figure(png, f"3D view {caption}", [caption], "scene") for caption, png in view.pictures)
        body = f"<div class='strip'>{figures}</div>" + _note(report_scene.CAPTION)
    if view.distances:
        body += ("<h3>Tumor to vessel distance</h3>" + _table(pd.DataFrame(view.distances).rename(
            columns={"distance (mm)": "gap to the nearest vessel (mm)"})) + _note(report_scene.DISTANCE_CAPTION))
    return head + body


def followup_report(
    info: queries.FollowUp,
    lesions: pd.DataFrame,
    earlier: list[str],
    model_label: str,
    author: str,
    min_diameter_mm: float = 0.0,
    now: dt.datetime | None = None,
    pictures: key_images.KeyImages | None = None,
    scene: report_scene.SceneView | None = None,
) -> str:
    """The report of one patient as an HTML document: ``lesions`` are the tracked lesions the
    page shows (tracks reaching ``min_diameter_mm``), ``earlier`` its lines on lesions the
    model saw before the radiologist, ``model_label`` the model whose results these are,
    ``author`` who made the report, ``pictures`` the lesions' key images and ``scene`` the
    latest day's 3D view (sections of their own, each left out where None)."""
    now = now or dt.datetime.now(dt.UTC)
    pseudo = html.escape(info.pseudo_id)
    warnings = analysis.warning_lines(info.tracking_warnings)
    if not info.volumes.empty:
        cut = info.volumes[info.volumes["liver_cut_at"].fillna("") != ""]
        warnings += [f"The scan stops inside the liver at {r.study_date} {r.phase} ({ends_phrase(r.liver_cut_at)}): "
                     "its liver volume is a lower bound." for r in cut.itertuples()]
    if info.responses.empty:
        responses = _note("No response yet.")
    else:
        responses = _table(response_table.response_table(info.responses)) + _note(theme.RECIST_RULES)
        if response_table.any_unrecorded(info.responses):
            responses += _note(response_table.REFRESH_HINT)
    from app.web import report_chart  # matplotlib: loaded when a report is made, not with the page

    tracks = _tracks(lesions)
    chart = report_chart.size_chart_svg(lesions, info.measurements)
    volumes = _volumes(info.volumes)
    measurements = _measurements(info)
    sections = [
        ("Studies", _table(_studies(info))),
        ("Response (RECIST 1.1)", responses),
        ("Lesion tracks: longest axial diameter (mm)",
         (_table(tracks) if len(tracks) else _note("No lesion tracks."))
         + (_note(f"Tracks whose largest diameter stays under {min_diameter_mm:g} mm are left out, as on the page.")
            if min_diameter_mm > 0 else "")),
        ("Size over time",
         f"<img class='chart' alt='longest diameter per track over time, with the radiologist's measurements' "
         f"src='data:image/svg+xml;base64,{base64.b64encode(chart.encode()).decode('ascii')}'>"
         if chart else _note("Nothing measured yet.")),
        *([("Key images", _key_images(pictures, response_table.model_target_tracks(info.responses))),
           ("Measured by the radiologist, not linked to a model lesion", _missed_images(pictures))]
          if pictures is not None else []),
        *([("3D view", _scene(scene))] if scene is not None else []),
        ("Seen by the model before the radiologist", _paragraphs(earlier)),
        ("Liver volume per contrast phase", _table(volumes) if not volumes.empty else _note("No volumes yet.")),
        ("Radiologist measurements", _table(measurements) if not measurements.empty else _note("None imported.")),
        ("Warnings", _paragraphs(warnings, "warn")),
    ]
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>LVT follow-up · {pseudo}</title><meta name='author' content='{html.escape(author)}'>"
        f"<meta name='generator' content='LVT {lvt_version}'>"
        f"<style>{_STYLE}{_page_footer(info.pseudo_id)}</style></head><body>"
        f"<h1>LVT follow-up report · patient {pseudo}</h1>"
        f"<p class='meta'>Results: {html.escape(model_label)} · LVT {lvt_version} · made by "
        f"{html.escape(author)} on {now:%Y-%m-%d %H:%M} UTC · {_DATES[info.dates_shifted]}</p>"
        f"<div class='disclaimer'>{html.escape(NOT_FOR_CLINICAL_USE)}</div>"
        f"{body}<div class='disclaimer'>{html.escape(NOT_FOR_CLINICAL_USE)}</div></body></html>"
    )
