"""Label colours and the short texts every page shares (one place, so views agree)."""

from __future__ import annotations

LIVER_RGB = (176, 84, 62)
"""Brown-red, drawn translucent."""
VESSEL_RGB = (52, 120, 220)
TUMOR_RGB = (236, 200, 40)
TRACK_COLOURS = [
    "#e6c229", "#3bb273", "#f17105", "#8ac926", "#d11149", "#1a8fe3", "#6610f2", "#c2a83e",
]
"""One colour per lesion track (yellow/green first), reused in tables, charts, slices and 3D."""
RESPONSE_COLOURS = {"CR": "#2a9d8f", "PR": "#8ab17d", "SD": "#9aa5b1", "PD": "#e76f51", "NE": "#cccccc"}
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


def track_colour(track_number: int) -> str:
    """The hex colour of a track (stable for the patient across pages)."""
    return TRACK_COLOURS[(int(track_number) - 1) % len(TRACK_COLOURS)]


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    """``#rrggbb`` → (r, g, b)."""
    colour = colour.lstrip("#")
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)
