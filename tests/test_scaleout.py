"""Scale-out (issue 8): PostgreSQL + a real Dask scheduler and two workers on loopback.

Skips with a reason when ``LVT_TEST_POSTGRES_URL`` is unset. Starts ``dask scheduler`` on a
free port and two ``dask worker`` processes, runs ``lvt batch --scheduler`` against a fresh
PostgreSQL database, and checks exactly-once segmentation, equality with an in-process run,
and that killing one worker mid-batch loses nothing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import model_fixtures
import pytest
from model_fixtures import write_tiny_cohort
from sqlalchemy import func, select

from db.engine import ensure_schema, make_session_factory
from db.models import Lesion, Segmentation

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
tiny_checkpoint = model_fixtures.tiny_checkpoint  # the shared fixture
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def pg_url(lvt_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from db_fixtures import use_database

    server = os.environ.get("LVT_TEST_POSTGRES_URL")
    if not server:
        pytest.skip("scale-out tests need PostgreSQL: set LVT_TEST_POSTGRES_URL")
    with use_database(server, lvt_env / "unused.db", monkeypatch) as url:
        yield url


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[dict]:
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "dask.log", "wb")  # noqa: SIM115 - closed below
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"], stdout=log, stderr=log,
                              env=env)]
    address = f"tcp://127.0.0.1:{port}"
    for _ in range(2):
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1",
             "--no-dashboard", "--no-nanny"],
            stdout=log, stderr=log, env=env))
    from distributed import Client

    with Client(address, timeout="60s") as client:
        client.wait_for_workers(2, timeout=60)
    try:
        yield {"address": address, "workers": procs[1:]}
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def _done(url: str) -> int:
    with make_session_factory(url)() as s:
        return int(s.scalar(select(func.count()).where(Segmentation.status == "done")) or 0)


def _state(url: str) -> tuple[dict[int, str], int]:
    """Finished state: every segmentation row done (asserted); hashes and lesion count."""
    with make_session_factory(url)() as s:
        rows = s.execute(select(Segmentation.series_id, Segmentation.label_map_hash)
                         .where(Segmentation.status == "done")).all()
        assert s.scalar(select(func.count(Segmentation.id))) == len(rows)
        return dict(rows), int(s.scalar(select(func.count(Lesion.id))) or 0)


def test_batch_on_dask_cluster_with_postgres(
    pg_url: str, cluster: dict, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from app.services.batch import BatchOptions, run_batch
    from app.services.ingest.service import IngestOptions, ingest_paths

    ensure_schema(pg_url)
    ingest_paths([], IngestOptions(manifest=write_tiny_cohort(tmp_path / "in", 3, 3)), url=pg_url)
    env = {**os.environ, "LVT_DATABASE_URL": pg_url, "LVT_BATCH_THROTTLE_S": "0.8"}
    proc = subprocess.Popen(
        [str(BIN / "lvt"), "batch", "--all", "--json", "--model", str(tiny_checkpoint),
         "--scheduler", cluster["address"]],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while _done(pg_url) == 0:  # first result stored: kill one worker mid-batch
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    cluster["workers"][0].send_signal(signal.SIGKILL)
    assert _done(pg_url) < 9, "the batch finished before a worker could be killed"
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["done"] == 9 and summary["failed"] == 0
    assert summary["engine"] == f"dask {cluster['address']}"
    cluster_hashes, cluster_lesions = _state(pg_url)
    assert len(cluster_hashes) == 9  # every series exactly once (one row each, all done)

    again = run_batch(BatchOptions(all=True, model=tiny_checkpoint, force=True), url=pg_url)
    assert again.engine == "in-process" and again.done == 9
    assert _state(pg_url) == (cluster_hashes, cluster_lesions)
