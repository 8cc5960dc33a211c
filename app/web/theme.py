"""Label colours and the short texts every page shares (one place, so views agree)."""

from __future__ import annotations

import re

LIVER_RGB = (176, 84, 62)
"""Brown-red, drawn translucent."""
VESSEL_RGB = (52, 120, 220)
TUMOR_RGB = (236, 200, 40)
TRACK_COLOURS = [
    "#e6c229", "#3bb273", "#ffa62b", "#8ac926", "#217a3c", "#f3e37c", "#b08a00", "#98e2b5",
]
"""One colour per lesion track, reused in tables, charts, slices and 3D: yellows, greens and an
orange (ARCHITECTURE: tumors are yellow/green), told apart by hue and lightness. In 3D the colour
is the only cue, so none is near the vessels' blue, the hepatic veins' purple or the liver's
brown-red (a blue track read as a vessel, a crimson one vanished in the liver)."""
RESPONSE_COLOURS = {"CR": "#2a9d8f", "PR": "#8ab17d", "SD": "#9aa5b1", "PD": "#e76f51", "NE": "#cccccc"}
RESPONSE_TEXT_COLOUR = "#111111"
"""Text on every RECIST badge: at least 6 : 1 against each of the colours above (WCAG AA is 4.5)."""
DISCLAIMER = (
    "Research software. The shipped model was trained on synthetic data and is "
    "**not for clinical decisions**."
)
WINDOWS = {
    "Liver (W150 L90)": (150.0, 90.0),
    "Abdomen (W400 L40)": (400.0, 40.0),
    "Bone (W1800 L400)": (1800.0, 400.0),
    "Lung (W1500 L-600)": (1500.0, -600.0),
}

FOUND_BY = {"network": "network", "faint_search": "faint search", "other_phase": "other phase"}
"""Who drew a lesion (``lesions.found_by``), as the tables say it."""
FOUND_BY_HELP = (
    "network: the segmentation network drew it. faint search: the faint-lesion search, a "
    "matched filter run after the network, drew it (in part or whole); it finds faint lesions "
    "the network misses and is wrong more often, so look twice. other phase: the network was "
    "unsure here or drew nothing, and a lesion at the same place in another contrast phase of "
    "the same day confirmed it or was carried over, where this phase's CT is darker than the "
    "liver around it; compare the phases. unknown: an imported label map or an older run."
)


def found_by_label(value: object) -> str:
    """``found_by`` for a table cell (``unknown`` where it was not recorded)."""
    return FOUND_BY.get(value, "unknown") if isinstance(value, str) else "unknown"


TARGETS_HELP = (
    "The target lesions and their longest axial diameters at this study: the model's tracks, or "
    "the radiologist's lesion labels. \"not drawn (missed)\": the target is not drawn here but "
    "is seen again later, so this study is not evaluable (NE) unless it shows progression."
)
NADIR_HELP = (
    "Change from the smallest earlier sum, baseline included (a study with a missed target sets "
    "none): progression is measured from it."
)
NEW_LESION_HELP = (
    "Lesions first seen at this study. A radiologist's count at once. One the model drew counts "
    "once a later study shows it again (RECIST 1.1 asks for an unequivocal new lesion), and then "
    "from this study: \"awaits confirmation\" at the latest study, \"not seen again\" where the "
    "following studies did not show it."
)
RECIST_RULES = (
    "RECIST 1.1 on the liver: up to 2 targets ≥ 10 mm at baseline, the largest first (one the "
    "scan's edge cuts is never a target). CR: every target gone. PR: sum ≥ 30 % below baseline. "
    "PD: sum ≥ 20 % and ≥ 5 mm above the nadir, or a new lesion (one the model drew once a later study "
    "shows it again). SD: otherwise. Non-target "
    "lesions and lymph nodes are not assessed."
)
SCAN_EDGE_HELP = (
    "cut: the lesion reaches the edge of the scan, so part of it may lie outside: its sizes are "
    "lower bounds, and it is never a RECIST target. unknown: stored before LVT recorded this "
    "(the next refresh fills it)."
)


SCAN_EDGE_LABELS = {True: "cut", False: ""}
"""``cut_by_scan_edge`` for a table cell; a value not recorded shows as ``unknown``."""


def literal(text: str) -> str:
    """``text`` as a Markdown code span, shown letter for letter: a value from an address or a
    file (a patient id in a shared link) must never become a link, an image or emphasis.
    Backslash escapes are not enough: the browser still turned an escaped URL into a link."""
    text = str(text)
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if text.startswith("`") or text.endswith("`") else f"{fence}{text}{fence}"


def track_colour(track_number: int) -> str:
    """The hex colour of a track (stable for the patient across pages)."""
    return TRACK_COLOURS[(int(track_number) - 1) % len(TRACK_COLOURS)]


def rgb_to_hex(rgb: tuple[int, int, int]) -> str:
    """(r, g, b) → ``#rrggbb``."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    """``#rrggbb`` → (r, g, b)."""
    colour = colour.lstrip("#")
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)


def short_id(pseudo_id: str) -> str:
    """A readable label for a pseudonym: ``P-8b0d0c319ddf253d`` → ``P-8b0d0c31``.

    Eight hex digits stay unique far beyond a 1,000-patient cohort; the full id is shown
    beside it where it is needed (search, copy).
    """
    text = str(pseudo_id)
    return text[:10] if text.startswith("P-") and len(text) > 12 else text


def overlay_legend_html(tracks: list[int] | None = None) -> str:
    """Colour swatches of the CT overlay (liver, vessels, tumors by track) as inline HTML."""

    def swatch(rgb: str, label: str) -> str:
        return (f'<span style="display:inline-block;width:0.9em;height:0.9em;border-radius:2px;'
                f'background:{rgb};margin:0 0.35em 0 0.9em;vertical-align:-0.1em"></span>{label}')

    items = [swatch(f"rgb{LIVER_RGB}", "liver"), swatch(f"rgb{VESSEL_RGB}", "vessels")]
    if tracks:
        items += [swatch(track_colour(t), f"tumor, track {t}") for t in tracks]
    else:
        items.append(swatch(f"rgb{TUMOR_RGB}", "tumor"))
    return '<div style="font-size:0.85rem;color:#444;margin-left:-0.9em">' + "".join(items) + "</div>"
