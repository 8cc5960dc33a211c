"""Batch throughput: studies per hour of ``lvt batch`` and its scaling with workers.

Builds a throw-away store (SQLite + data dir in a temp folder) with synthetic one-phase
studies, a checkpoint of the default network (random weights: throughput does not depend on
the weights) unless --model is given, and times ``run_batch`` for each worker count.

    .venv/bin/python bench/batch.py --size demo --studies 4 --workers 1 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"tiny": ((24, 24, 16), 4.0), "demo": ((128, 128, 64), 2.5), "clinical": ((512, 512, 120), 0.8)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="demo")
    parser.add_argument("--studies", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--tiny-model", action="store_true", help="Use the 3-level test network.")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lvt-bench-"))
    os.environ["LVT_VAR_DIR"] = str(tmp / "var")
    os.environ.setdefault("LVT_SECRET_KEY", "bench-key")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import SimpleITK as sitk
    from model_fixtures import save_tiny_checkpoint, tiny_ct

    from app.services.batch import BatchOptions, run_batch
    from app.services.ingest.service import IngestOptions, ingest_paths
    from db.engine import default_url, ensure_schema

    size, spacing = SIZES[args.size]
    folder = tmp / "in"
    folder.mkdir(parents=True)
    lines = ["patient_id,image,study_date,phase"]
    for i in range(args.studies):
        sitk.WriteImage(tiny_ct(i, size, spacing), str(folder / f"s{i}.nii.gz"))
        lines.append(f"B{i:03d},s{i}.nii.gz,2024-01-{i % 28 + 1:02d},portal")
    (folder / "m.csv").write_text("\n".join(lines) + "\n")
    url = default_url()
    ensure_schema(url)
    ingest_paths([], IngestOptions(manifest=folder / "m.csv"), url=url)
    model = args.model or _checkpoint(tmp / "model.pt", args.tiny_model, save_tiny_checkpoint)
    print(f"size={args.size} {size} @ {spacing} mm, studies={args.studies}, cpus={os.cpu_count()}")
    for workers in args.workers:
        start = time.perf_counter()
        summary = run_batch(BatchOptions(all=True, model=model, workers=workers, force=True))
        wall = time.perf_counter() - start
        print(f"workers={workers}: {summary.done} done, {summary.failed} failed, {wall:.1f} s, "
              f"{args.studies / wall * 3600:.0f} studies/h ({summary.engine})", flush=True)


def _checkpoint(path: Path, tiny: bool, save_tiny) -> Path:  # type: ignore[no-untyped-def]
    if tiny:
        return save_tiny(path)
    from lvt_core.checkpoint import default_meta, save_checkpoint
    from lvt_core.network import build_network

    meta = default_meta(name="bench-random", version="0")
    return save_checkpoint(path, build_network(meta["network"]).state_dict(), meta)


if __name__ == "__main__":
    main()
