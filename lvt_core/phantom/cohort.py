"""Writing a synthetic cohort: images, ground truth, manifest, lesion truth and reader data.

Layout under ``out_dir``::

    cohort.json  manifest.csv  lesions.csv  measurements.csv
    LVT-0001/2019-03-04_portal/image.nii.gz  labels.nii.gz  lesion_ids.nii.gz
                               [dicom/0001.dcm …] [preview_axial.png preview_coronal.png]
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from lvt_core.atomic_files import replaced_on_success, write_text_atomically
from lvt_core.imageio import write_image
from lvt_core.phantom.lesions import MAX_TIMEPOINTS, LesionMix
from lvt_core.phantom.scan import SIZES, PhantomScan, make_patient, phantom_scan, stream
from lvt_core.phantom.tables import PHASE_ORDER, PHASES

MANIFEST_COLUMNS = ("patient_id", "study_date", "study_index", "phase", "series_uid", "study_uid",
                    "spacing_x", "spacing_y", "spacing_z", "size_x", "size_y", "size_z", "image",
                    "labels", "lesion_ids", "dicom_dir")
LESION_COLUMNS = ("patient_id", "study_date", "phase", "lesion_uid", "voxels", "volume_ml",
                  "longest_axial_diameter_mm", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm")
MEASUREMENT_COLUMNS = ("patient_id", "study_date", "accession", "lesion_label",
                       "longest_diameter_mm", "short_axis_mm", "slice_index", "location_x_mm",
                       "location_y_mm", "location_z_mm", "reader", "note")
TARGET_MIN_MM = 10.0
"""Lesions the synthetic radiologist measures: longest axial diameter at least this."""


@dataclass(frozen=True)
class CohortConfig:
    """What to generate; the same config gives the same files, byte for byte."""

    patients: int = 3
    timepoints: int = 3
    phases: int = 1
    seed: int = 0
    size: str = "demo"
    dicom: bool = False
    preview: bool = False
    lesion_mix: LesionMix = field(default_factory=LesionMix)

    def __post_init__(self) -> None:
        if self.patients < 1:
            raise ValueError(f"patients must be at least 1, got {self.patients}")
        if not 1 <= self.timepoints <= MAX_TIMEPOINTS:
            raise ValueError(f"timepoints must be in 1..{MAX_TIMEPOINTS}, got {self.timepoints}")
        if not 1 <= self.phases <= len(PHASES):
            raise ValueError(f"phases must be in 1..{len(PHASES)}, got {self.phases}")
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(SIZES)}, got {self.size!r}")

    @property
    def phase_names(self) -> tuple[str, ...]:
        """The first ``phases`` of portal, arterial, late, non-contrast."""
        return PHASE_ORDER[: self.phases]


def study_uid(seed: int, patient: str, study_index: int) -> str:
    return generate_uid(entropy_srcs=["lvt-phantom", str(seed), patient, str(study_index)])


def series_uid(seed: int, patient: str, study_index: int, phase: str) -> str:
    return generate_uid(entropy_srcs=["lvt-phantom", str(seed), patient, str(study_index), phase])


def generate_cohort(out_dir: Path, config: CohortConfig,
                    progress: Callable[[int, int], None] | None = None, workers: int = 1) -> Path:
    """Render the cohort into ``out_dir`` and return the path of ``manifest.csv``.

    ``progress(done, total)`` is called after each scan (after each patient when
    ``workers`` > 1). Patients are independent draws of the seed, so ``workers`` processes
    render them side by side and the files are the same, byte for byte, as with one.
    """
    return generate_cohorts([(Path(out_dir), config)], workers, progress)[0]


def generate_cohorts(cohorts: Sequence[tuple[Path, CohortConfig]], workers: int = 1,
                     progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Render several cohorts with one pool of ``workers`` processes and return their manifests.

    The patients of all cohorts share the pool, so a small cohort does not leave cores idle
    while a large one renders. The workers are spawned, not forked: a fork copies whatever
    locks other threads hold at that moment (a CLI's progress-bar refresh thread, or one
    pool per cohort, each from its own thread), and some libraries refuse it outright
    (filelock's fork audit raised on a GPU machine). A spawned worker starts clean at the
    cost of about a second of imports.
    """
    cohorts = [(Path(out_dir), config) for out_dir, config in cohorts]
    jobs = [(index, p) for index, (_, config) in enumerate(cohorts) for p in range(config.patients)]
    total = sum(c.patients * c.timepoints * len(c.phase_names) for _, c in cohorts)
    for out_dir, _ in cohorts:
        out_dir.mkdir(parents=True, exist_ok=True)
    results: list[list[PatientRows]] = [[] for _ in cohorts]
    done = 0
    if workers > 1 and len(jobs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            rendered = pool.map(_render_patient, [cohorts[i][0] for i, _ in jobs],
                                [cohorts[i][1] for i, _ in jobs], [p for _, p in jobs])
            for (index, _), rows in zip(jobs, rendered, strict=True):
                results[index].append(rows)
                done += len(rows.manifest)
                if progress is not None:
                    progress(done, total)
    else:
        for index, p in jobs:
            each_scan = None if progress is None else partial(_report_after, progress, done, total)
            results[index].append(_render_patient(cohorts[index][0], cohorts[index][1], p, each_scan))
            done += len(results[index][-1].manifest)
    return [_write_tables(out_dir, config, rows)
            for (out_dir, config), rows in zip(cohorts, results, strict=True)]


def _report_after(progress: Callable[[int, int], None], done_before: int, total: int,
                  scans: int) -> None:
    progress(done_before + scans, total)


def _write_tables(out_dir: Path, config: CohortConfig, results: list[PatientRows]) -> Path:
    """How the cohort was drawn, its lesion, measurement and manifest tables (the manifest
    last: it marks the cohort complete)."""
    drawn = {**dataclasses.asdict(config), "phases": list(config.phase_names)}
    write_text_atomically(out_dir / "cohort.json", json.dumps(drawn, indent=2) + "\n")
    _write_csv(out_dir / "lesions.csv", LESION_COLUMNS, [r for rows in results for r in rows.lesions])
    _write_csv(out_dir / "measurements.csv", MEASUREMENT_COLUMNS,
               [r for rows in results for r in rows.measurements])
    return _write_csv(out_dir / "manifest.csv", MANIFEST_COLUMNS,
                      [r for rows in results for r in rows.manifest])


@dataclass
class PatientRows:
    """What one patient adds to the cohort's three tables."""

    manifest: list[dict]
    lesions: list[dict]
    measurements: list[dict]


def _render_patient(out_dir: Path, config: CohortConfig, p: int,
                    each_scan: Callable[[int], None] | None = None) -> PatientRows:
    """Write every scan of patient ``p`` and return its table rows (one job of the pool)."""
    rows = PatientRows([], [], [])
    first_report: dict[int, int] = {}
    for t in range(config.timepoints):
        portal_scan: PhantomScan | None = None
        for phase in config.phase_names:
            scan = phantom_scan(config.seed, config.size, phase, t, p, config.lesion_mix)
            rows.manifest.append(_write_scan(out_dir, config, scan, t))
            rows.lesions.extend(scan.lesions)
            if phase == "portal":
                portal_scan = scan
            if each_scan is not None:
                each_scan(len(rows.manifest))
        if portal_scan is not None:
            rows.measurements.extend(_read_study(config, p, t, portal_scan, first_report))
    return rows


def _write_scan(out_dir: Path, config: CohortConfig, scan: PhantomScan, t: int) -> dict:
    assert scan.study_date is not None
    rel = Path(scan.patient_id) / f"{scan.study_date.isoformat()}_{scan.phase}"
    folder = out_dir / rel
    for name, img in (("image", scan.image), ("labels", scan.labels),
                      ("lesion_ids", scan.lesion_ids)):
        write_image(img, folder / f"{name}.nii.gz")
    s_uid = study_uid(config.seed, scan.patient_id, t)
    se_uid = series_uid(config.seed, scan.patient_id, t, scan.phase)
    dicom_dir = ""
    if config.dicom:
        from lvt_core.dicom_series import SeriesInfo, write_ct_series

        patient = make_patient(config.seed, int(scan.patient_id.split("-")[1]) - 1,
                               config.lesion_mix)
        birth = dt.date(1940 + (patient.index * 7 + config.seed) % 40, 1 + patient.index % 12, 15)
        info = SeriesInfo(
            patient_id=scan.patient_id, study_uid=s_uid, series_uid=se_uid,
            frame_of_reference_uid=generate_uid(entropy_srcs=["lvt-phantom-for", s_uid]),
            study_date=scan.study_date, study_time=f"{8 + t % 9:02d}{(7 * t) % 60:02d}00",
            series_description=f"{scan.phase} phase", accession=accession(scan.patient_id, t),
            series_number=1 + PHASES.index(scan.phase), study_id=str(t + 1),
            patient_name=f"PHANTOM^{scan.patient_id}", patient_birth_date=birth,
            uid_entropy=["lvt-phantom", str(config.seed), se_uid])
        write_ct_series(scan.image, folder / "dicom", info)
        dicom_dir = (rel / "dicom").as_posix()
    if config.preview:
        from lvt_core.phantom.preview import write_previews

        write_previews(scan.image, scan.labels, folder)
    size = scan.image.GetSize()
    spacing = scan.image.GetSpacing()
    return {
        "patient_id": scan.patient_id, "study_date": scan.study_date.isoformat(),
        "study_index": t, "phase": scan.phase, "series_uid": se_uid, "study_uid": s_uid,
        "spacing_x": f"{spacing[0]:.6g}", "spacing_y": f"{spacing[1]:.6g}",
        "spacing_z": f"{spacing[2]:.6g}", "size_x": size[0], "size_y": size[1], "size_z": size[2],
        "image": (rel / "image.nii.gz").as_posix(), "labels": (rel / "labels.nii.gz").as_posix(),
        "lesion_ids": (rel / "lesion_ids.nii.gz").as_posix(), "dicom_dir": dicom_dir,
    }


def accession(patient: str, study_index: int) -> str:
    """A stable accession number per study, e.g. ``A0001T02``."""
    return f"A{patient.split('-')[1]}T{study_index:02d}"


def _read_study(config: CohortConfig, p: int, t: int, scan: PhantomScan,
                first_report: dict[int, int]) -> list[dict]:
    """The synthetic radiologist's target-lesion measurements on the portal phase.

    Reader noise ±2 mm (sd) on diameters, a few mm on locations. A small lesion (< 20 mm)
    is sometimes missed at its first visible study and only measured one study later.
    """
    seed = config.seed
    patient = make_patient(seed, p, config.lesion_mix)
    rng = stream(seed, "reader", p, t)
    reader = f"R{1 + int(stream(seed, 'reader', p).integers(0, 3))}"
    assert scan.study_date is not None
    rows = []
    for lesion in sorted(scan.lesion_details, key=lambda d: -d["longest_axial_diameter_mm"]):
        uid = lesion["lesion_uid"]
        track = patient.tracks[uid - 1]
        first_visible = next(i for i, d in enumerate(track.diameters) if d > 0)
        noise = rng.normal(0, 2.0, 5)  # drawn for every lesion: later draws do not shift
        missed = stream(seed, "reader", p, 1000 + uid).random() < 0.5
        if lesion["longest_axial_diameter_mm"] < TARGET_MIN_MM or len(rows) >= 5:
            continue
        if t == first_visible and track.diameters[t] < 20 and missed:
            continue
        note = "new" if uid not in first_report else ""
        first_report.setdefault(uid, t)
        rows.append({
            "patient_id": scan.patient_id, "study_date": scan.study_date.isoformat(),
            "accession": accession(scan.patient_id, t), "lesion_label": f"L{uid}",
            "longest_diameter_mm": round(max(1.0, lesion["longest_axial_diameter_mm"] + noise[0]), 1),
            "short_axis_mm": round(min(max(1.0, lesion["short_axis_mm"] + 0.7 * noise[1]),
                                       max(1.0, lesion["longest_axial_diameter_mm"] + noise[0])), 1),
            "slice_index": lesion["slice_index"],
            "location_x_mm": round(lesion["centroid_x_mm"] + 1.5 * noise[2], 1),
            "location_y_mm": round(lesion["centroid_y_mm"] + 1.5 * noise[3], 1),
            "location_z_mm": round(lesion["centroid_z_mm"] + 1.5 * noise[4], 1),
            "reader": reader, "note": note,
        })
    return rows


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> Path:
    with replaced_on_success(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _fmt(row[key]) for key in columns})
    return path


def _fmt(value: object) -> object:
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return value
