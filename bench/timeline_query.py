"""Benchmark: patient-timeline query with 1,000 patients × 10 studies (goal: 50 ms or less).

Fills a fresh SQLite store (or ``--url``) with 1,000 patients, 10 studies each and two
series per study, then times ``db.queries.patient_timeline`` for random patients and
``list_patients`` for the whole list.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
GOAL_MS = 50.0


def fill(url: str, patients: int, studies: int) -> None:
    from sqlalchemy import insert

    from db.engine import get_engine
    from db.models import Patient, Series, Study

    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(
            insert(Patient), [{"id": p + 1, "pseudo_id": f"P-{p:06d}"} for p in range(patients)]
        )
        study_rows, series_rows = [], []
        for p in range(patients):
            for k in range(studies):
                sid = p * studies + k + 1
                study_rows.append(
                    {
                        "id": sid,
                        "patient_id": p + 1,
                        "study_instance_uid": f"2.25.{sid}",
                        "study_date": dt.date(2015, 1, 1) + dt.timedelta(days=90 * k + p % 30),
                    }
                )
                for j, phase in enumerate(("arterial", "portal")):
                    series_rows.append(
                        {
                            "study_id": sid,
                            "series_instance_uid": f"2.25.{sid}.{j}",
                            "phase": phase,
                            "spacing_x": 0.7,
                            "spacing_y": 0.7,
                            "spacing_z": 2.0,
                            "size_x": 512,
                            "size_y": 512,
                            "size_z": 200,
                            "image_path": f"00/{sid}{j}.nii.gz",
                            "content_hash": f"{sid:032d}{j:032d}",
                        }
                    )
        conn.execute(insert(Study), study_rows)
        conn.execute(insert(Series), series_rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--url", default=None, help="an EMPTY database URL (default: temporary SQLite)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lvt-bench-") as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        os.environ["LVT_VAR_DIR"] = tmp
        from db import queries
        from db.engine import ensure_schema, session_scope

        ensure_schema(url)
        t0 = time.perf_counter()
        fill(url, args.patients, args.studies)
        print(
            f"filled {args.patients} patients x {args.studies} studies x 2 series in {time.perf_counter() - t0:.1f} s"
        )
        rng = random.Random(0)
        timings = []
        with session_scope(url) as s:
            queries.patient_timeline(s, "P-000000")  # warm-up
        for _ in range(args.queries):
            pid = f"P-{rng.randrange(args.patients):06d}"
            with session_scope(url) as s:
                t0 = time.perf_counter()
                timeline = queries.patient_timeline(s, pid)
                timings.append((time.perf_counter() - t0) * 1000)
            assert timeline is not None and len(timeline.studies) == args.studies
        with session_scope(url) as s:
            t0 = time.perf_counter()
            rows = queries.list_patients(s)
            list_ms = (time.perf_counter() - t0) * 1000
        assert len(rows) == args.patients
    median = statistics.median(timings)
    p95 = sorted(timings)[int(0.95 * len(timings)) - 1]
    verdict = "OK" if p95 <= GOAL_MS else "SLOWER THAN GOAL"
    print(
        f"patient_timeline_ms median={median:.2f} p95={p95:.2f} (goal <= {GOAL_MS:.0f} ms: {verdict})"
    )
    print(f"list_patients_ms={list_ms:.1f} ({args.patients} patients)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
