"""Benchmark: ingest of one 300-slice 512×512 CT series (goal: 10 s or less).

Writes a synthetic uncompressed DICOM series with pydicom into a temporary folder, then
times ``ingest_paths`` (header scan, checks, decode, hash, compressed store, database) into
a fresh SQLite store, or into ``--url`` (e.g. PostgreSQL).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
GOAL_S = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--url", default=None, help="database URL (default: temporary SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lvt-bench-") as tmp:
        root = Path(tmp)
        os.environ["LVT_VAR_DIR"] = str(root / "var")
        os.environ.setdefault("LVT_SECRET_KEY", "bench-key")
        if args.url:
            os.environ["LVT_DATABASE_URL"] = args.url
        from db_fixtures import write_ct_series

        from app.services.ingest import ingest_paths
        from db.engine import default_url, ensure_schema

        t0 = time.perf_counter()
        write_ct_series(root / "series", n_slices=args.slices, size=args.size, spacing=1.0)
        print(
            f"wrote {args.slices} slices of {args.size}x{args.size} in {time.perf_counter() - t0:.1f} s"
        )
        ensure_schema(default_url())
        t0 = time.perf_counter()
        report = ingest_paths([root / "series"])
        elapsed = time.perf_counter() - t0
        assert len(report.added) == 1, report.to_json()
        t0 = time.perf_counter()
        again = ingest_paths([root / "series"])
        repeat = time.perf_counter() - t0
        assert len(again.already_present) == 1
    verdict = "OK" if elapsed <= GOAL_S else "SLOWER THAN GOAL"
    print(f"ingest_300_slices_s={elapsed:.2f} (goal <= {GOAL_S:.0f} s: {verdict})")
    print(f"reingest_same_series_s={repeat:.2f} (already present, nothing added)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
