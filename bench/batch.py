"""Batch throughput: studies per hour of ``lvt batch`` and its scaling with workers.

Builds a throw-away store (SQLite + data dir in a temp folder) holding phantom patients with
two timepoints each (portal phase, or portal and arterial with ``--phases 2``, so a model's
cross-phase rule reads each day's two phases together), so every batch run segments, extracts
lesions, registers and tracks like a real cohort does. Uses the shipped model unless
``--model`` is given (several: each in turn on the same store, the first as the baseline):
a network with random weights labels noise as thousands of "lesions" and then measures the
analytics of garbage, not the batch path (that is why an earlier version of this bench never
finished). Phantom generation and ingest happen before the clock starts.

    .venv/bin/python bench/batch.py --size demo --studies 6 --workers 1 2
    .venv/bin/python bench/batch.py --size clinical --studies 4 --workers 1 2
    .venv/bin/python bench/batch.py --size demo --studies 6 --phases 2 --workers 1 --model OLD.pt NEW.pt
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

PHANTOM_SEED = 777


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "demo", "clinical"), default="demo")
    parser.add_argument("--studies", type=int, default=6, help="Studies (2 per patient).")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", type=Path, nargs="+", default=None,
                        help="Checkpoints, each timed in turn (default: the shipped one).")
    parser.add_argument("--phases", type=int, choices=(1, 2), default=1, help="Phases per study.")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lvt-bench-"))
    os.environ["LVT_VAR_DIR"] = str(tmp / "var")
    os.environ.setdefault("LVT_SECRET_KEY", "bench-key")
    from app.services.batch import BatchOptions, run_batch
    from app.services.ingest.service import IngestOptions, ingest_paths
    from app.settings import get_settings
    from db.engine import default_url, ensure_schema

    manifest, shape = _write_phantoms(tmp / "in", args.size, args.studies, args.phases)
    url = default_url()
    ensure_schema(url)
    ingest_paths([], IngestOptions(manifest=manifest), url=url)
    models = args.model or [get_settings().model_path]
    print(f"size={args.size} (first scan {shape[0]}×{shape[1]}×{shape[2]}), studies={args.studies}, "
          f"phases={args.phases}, cpus={os.cpu_count()}", flush=True)
    for model in models:
        for workers in args.workers:
            start = time.perf_counter()
            summary = run_batch(BatchOptions(all=True, model=model, workers=workers, force=True))
            wall = time.perf_counter() - start
            print(f"model={model} workers={workers}: {summary.done} done, {summary.failed} failed, "
                  f"{wall:.1f} s wall, {args.studies / wall * 3600:.0f} studies/h ({summary.engine})", flush=True)


def _write_phantoms(folder: Path, size: str, studies: int, phases: int = 1) -> tuple[Path, tuple[int, ...]]:
    """Phantom scans as NIfTI with an ingest manifest; two timepoints per patient."""
    import SimpleITK as sitk

    from lvt_core.phantom import phantom_scan

    folder.mkdir(parents=True)
    lines = ["patient_id,image,study_date,phase"]
    shape: tuple[int, ...] = ()
    for i in range(studies):
        for phase in ("portal", "arterial")[:phases]:
            scan = phantom_scan(PHANTOM_SEED, size, phase, timepoint=i % 2, patient_index=i // 2)
            name = f"p{i // 2}_t{i % 2}_{phase}.nii.gz"
            sitk.WriteImage(scan.image, str(folder / name))
            lines.append(f"{scan.patient_id},{name},{scan.study_date.isoformat()},{phase}")
            shape = shape or scan.image.GetSize()
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, shape


if __name__ == "__main__":
    main()
