"""Contrast phase from DICOM tags and descriptions, by ordered, configurable rules.

Rules are tried in order against the series and study descriptions (case-insensitive);
the first match wins, so ``late arterial`` is caught by the arterial rule before the late
one. Without a textual match, the delay between ``ContrastBolusStartTime`` and
``AcquisitionTime`` decides when both are present. Otherwise the phase stays ``unknown``.
A YAML file can replace the rules: ``rules: [{phase: portal, pattern: "\\bpv\\b"}, ...]``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from app.cli.common import UserError

PHASE_NAMES = ("noncontrast", "arterial", "portal", "late", "unknown")


@dataclass(frozen=True)
class PhaseRule:
    """One rule: a regular expression that, when found, names the phase."""

    phase: str
    pattern: re.Pattern[str]


DEFAULT_RULES: tuple[tuple[str, str], ...] = (
    (
        "noncontrast",
        r"\b(non[ _-]?contrast|non[ _-]?con|nativ|native|plain|pre[ _-]?contrast|unenhanced|ohne\s*km|w/?o\s+contrast|nc)\b",
    ),
    ("arterial", r"\b(arterial|arteriell|late[ _-]?arterial|early[ _-]?arterial|art|ha|hap)\b"),
    ("portal", r"\b(portal|portal[ _-]?venous|porto[ _-]?venous|venous|pv|pvp|venös|venoes)\b"),
    ("late", r"\b(delayed|late|equilibrium|equ|eq|spät|spaet|transitional)\b"),
)

# Delay after contrast start (seconds) -> phase, used when no description matches.
DELAY_BOUNDS = (("arterial", 10.0, 45.0), ("portal", 45.0, 100.0), ("late", 100.0, 900.0))


def default_rules() -> list[PhaseRule]:
    """The built-in rules (English and German wording, common abbreviations)."""
    return [PhaseRule(p, re.compile(rx, re.IGNORECASE)) for p, rx in DEFAULT_RULES]


def load_rules(path: Path) -> list[PhaseRule]:
    """Rules from a YAML file with a ``rules`` list of ``{phase, pattern}``."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        entries = document["rules"]
        rules = []
        for i, entry in enumerate(entries, start=1):
            phase = str(entry["phase"])
            if phase not in PHASE_NAMES:
                raise UserError(f"{path}: rule {i}: unknown phase {phase!r} (one of {PHASE_NAMES})")
            rules.append(PhaseRule(phase, re.compile(str(entry["pattern"]), re.IGNORECASE)))
        return rules
    except (OSError, yaml.YAMLError, KeyError, TypeError, re.error) as exc:
        raise UserError(f"{path}: not a valid phase rules file ({exc})") from None


def _seconds(value: str | None) -> float | None:
    if not value:
        return None
    text = str(value).strip()
    for fmt in ("%H%M%S.%f", "%H%M%S", "%H:%M:%S.%f", "%H:%M:%S"):
        try:
            t = dt.datetime.strptime(text, fmt).time()
            return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6
        except ValueError:
            continue
    return None


def detect_phase(
    descriptions: list[str | None],
    contrast_agent: str | None = None,
    contrast_start_time: str | None = None,
    acquisition_time: str | None = None,
    rules: list[PhaseRule] | None = None,
) -> tuple[str, str]:
    """Return (phase, reason) from descriptions and contrast timing tags."""
    text = " ".join(d for d in descriptions if d)
    for rule in rules if rules is not None else default_rules():
        match = rule.pattern.search(text)
        if match:
            return rule.phase, f"description matches {match.group(0)!r}"
    start, acquired = _seconds(contrast_start_time), _seconds(acquisition_time)
    if start is not None and acquired is not None:
        delay = acquired - start
        for phase, low, high in DELAY_BOUNDS:
            if low <= delay < high:
                return phase, f"{delay:.0f} s after contrast start"
    if contrast_agent is not None and not str(contrast_agent).strip() and start is None:
        return "unknown", "no contrast tags"
    return "unknown", "no rule matched"
