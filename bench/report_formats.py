"""What a follow-up report costs in each format, and what each part of it costs.

Times, twice, the parts of ``lvt export report`` in one process: the key images, the latest
day's 3D view (the first run meshes the label map unless the store's mesh cache has it), the
HTML, the PDF/A layout of that HTML, and the DICOM Encapsulated PDF with its ``dciodvfy``
check; then the whole export per format. The HTML without pictures is the baseline.

    .venv/bin/python bench/report_formats.py                    # a tiny demo store, built once
    LVT_VAR_DIR=var/demo .venv/bin/python bench/report_formats.py --patient P-…

Without ``--patient`` it builds ``lvt demo --no-serve --size tiny`` (ground-truth label maps,
no inference) under ``.cache/bench/report_formats`` once and reports its first patient.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = ROOT / ".cache" / "bench" / "report_formats"


def _tiny_store() -> None:
    """Point LVT at a tiny demo store, built the first time."""
    var = CACHE / "var"
    os.environ.update(LVT_VAR_DIR=str(var), LVT_SECRET_KEY="bench", LVT_MODEL_PATH=str(var / "no-model.pt"))
    if (var / "lvt.db").exists():
        return
    print("building a tiny demo store once (about a minute)…", flush=True)
    subprocess.run([str(Path(sys.executable).with_name("lvt")), "demo", "--no-serve", "--patients", "1",
                    "--timepoints", "3", "--size", "tiny"], check=True, capture_output=True)


def _timed(label: str, work: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = work()
    print(f"  {label:<34} {time.perf_counter() - start:6.2f} s", flush=True)
    return result


def _one_run(info: Any, data_dir: Path, out: Path) -> None:
    """Each part once, then each format's whole export."""
    from app.services.export import export_report
    from app.services.report_dicom import ReportStudy, encapsulated_pdf
    from app.web import analysis, key_images, report, report_pdf, report_scene

    lines = analysis.earlier_lines([], info.lesions)
    _timed("HTML, no pictures (baseline)", lambda: report.followup_report(info, info.lesions, lines, "m", "bench"))
    pictures = _timed("key images", lambda: key_images.key_images(info, info.lesions, data_dir))
    scene = _timed("3D view", lambda: report_scene.latest_scene(info, data_dir))
    html = _timed("HTML with both", lambda: report.followup_report(
        info, info.lesions, lines, "m", "bench", pictures=pictures, scene=scene))
    pdf = _timed("PDF/A layout of that HTML", lambda: report_pdf.report_pdf(html))
    latest = info.studies[-1]
    study = ReportStudy(info.pseudo_id, latest.study_instance_uid, latest.study_date, latest.accession, None)
    _timed("DICOM wrap of that PDF", lambda: encapsulated_pdf(pdf, study, dt.datetime.now(dt.UTC)))
    for suffix in (".html", ".pdf", ".dcm"):
        target = out / f"report{suffix}"
        _timed(f"whole export, {suffix}", lambda target=target: export_report(info.pseudo_id, target))
        print(f"  {'':<34} {target.stat().st_size / 1024:6.0f} KB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patient", help="a patient of the store LVT_VAR_DIR names")
    args = parser.parse_args()
    if args.patient is None:
        _tiny_store()
    from app.settings import get_settings
    from app.web import queries
    from db.engine import default_url, make_session_factory

    with make_session_factory(default_url())() as session:
        patient = args.patient or str(queries.patient_rows(session, limit=1)["patient"].iloc[0])
        info = queries.followup(session, patient)
    assert info is not None, f"patient {patient} is not in the store"
    print(f"patient {info.pseudo_id}: {len(info.studies)} studies, {info.lesions['track'].nunique()} tracks")
    out = Path(tempfile.mkdtemp(prefix="lvt-bench-report-"))
    for run in (1, 2):
        print(f"run {run}")
        _one_run(info, get_settings().resolved_data_dir, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
