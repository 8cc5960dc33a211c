"""``lvt lesions``, ``lvt track`` and ``lvt volumetry`` on label-map files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import typer
from typer.testing import CliRunner

from app.cli.analysis import register
from lvt_core.imageio import write_image

try:  # the analytic scan builder lives in test_lesions.py
    from test_lesions import Anatomy, Ellipsoid, Pose, render_scan
except ModuleNotFoundError:  # tests/ imported as a package
    from tests.test_lesions import Anatomy, Ellipsoid, Pose, render_scan

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two timepoints (repositioned, different spacing) plus the CT of the first."""
    folder = tmp_path_factory.mktemp("scans")
    a = Ellipsoid((-25.0, -15.0, -5.0), (9.0, 6.0, 6.0))
    b = Ellipsoid((30.0, -20.0, 10.0), (6.0, 6.0, 6.0))
    paths = []
    for t, (lesions, spacing, pose) in enumerate(
        [((a, b), (2.0, 2.0, 3.0), Pose()), ((a,), (1.5, 1.5, 2.5), Pose(5.0, (6.0, -4.0, 3.0)))]
    ):
        labels, ct, _ = render_scan(Anatomy(lesions=lesions), spacing=spacing, pose=pose)
        paths.append(write_image(labels, folder / f"t{t}.nii.gz"))
        if t == 0:
            ct_path = write_image(ct, folder / "ct0.nii.gz")
    return [*paths, ct_path]


def test_lesions_json(cli, scans) -> None:
    result = CliRunner().invoke(cli, ["lesions", str(scans[0]), "--image", str(scans[2]), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["image"] == str(scans[0]) and doc["spacing_mm"] == [2.0, 2.0, 3.0]
    assert len(doc["lesions"]) == 2
    big = max(doc["lesions"], key=lambda les: les["volume_ml"])
    assert abs(big["longest_axial_diameter_mm"] - 18.0) <= 2.0
    assert big["mean_hu"] == pytest.approx(40.0)
    for key in ("id", "volume_ml", "longest_axial_diameter_mm", "short_axis_mm", "centroid_mm", "voxels"):
        assert key in big


def test_lesions_refuse_a_ct_of_another_grid(cli, scans, tmp_path: Path) -> None:
    """A CT that did not cover the lesion was resampled and gave it a mean HU of -1024 (the
    fill); another study's CT a plausible wrong one. Both are refused, naming both files."""
    ct = sitk.ReadImage(str(scans[2]))
    top = write_image(ct[:, :, ct.GetSize()[2] // 2:], tmp_path / "ct_top.nii.gz")  # half the slices
    moved = sitk.Image(ct)
    moved.SetOrigin(tuple(o + 20.0 for o in ct.GetOrigin()))  # same size and spacing, shifted
    shifted = write_image(moved, tmp_path / "ct_moved.nii.gz")
    runner = CliRunner()
    for other, why in ((top, "size"), (shifted, "origin")):
        result = runner.invoke(cli, ["lesions", str(scans[0]), "--image", str(other), "--json"])
        assert result.exit_code == 1 and result.stdout == ""
        message = " ".join(result.output.split())
        assert f"{other} (--image) is not the CT of {scans[0]}" in message and f"CT {why}" in message
    on_grid = runner.invoke(cli, ["lesions", str(scans[0]), "--image", str(scans[2]), "--json"])
    assert on_grid.exit_code == 0, on_grid.output


def test_lesions_table(cli, scans) -> None:
    result = CliRunner().invoke(cli, ["lesions", str(scans[0])])
    assert result.exit_code == 0, result.output
    assert "2 lesion(s)" in result.stdout and "longest" in result.stdout



def test_lesions_say_unknown_where_the_scan_cuts_nearer_than_the_capsule(cli, tmp_path: Path) -> None:
    """The scan stops 6 mm from the lesion inside a liver whose nearest capsule found is 15 mm
    away: the cut slice read as capsule (4.0 mm); now JSON null and a dash in the table."""
    array = np.zeros((32, 60, 60), np.uint8)
    array[:27, 5:55, 5:55] = 1  # liver from the scan's first slice on
    array[2:6, 25:35, 20:30] = 3
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 2.0))
    path = write_image(image, tmp_path / "cut.nii.gz")
    runner = CliRunner()
    doc = json.loads(runner.invoke(cli, ["lesions", str(path), "--json"]).stdout)
    assert doc["lesions"][0]["distance_to_liver_surface_mm"] is None
    table = runner.invoke(cli, ["lesions", str(path)], terminal_width=200)
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if line.strip("│ ").startswith("1 "))
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[7] == "—"  # the "to surface mm" column

def test_track_json_and_table(cli, scans) -> None:
    result = CliRunner().invoke(
        cli, ["track", str(scans[0]), str(scans[1]), "--dates", "2020-01-01,2020-06-01", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["timepoints"] == [str(scans[0]), str(scans[1])]
    assert doc["dates"] == ["2020-01-01", "2020-06-01"]
    statuses = sorted(t["status"] for t in doc["tracks"])
    assert statuses == ["disappeared", "persisting"]
    persisting = next(t for t in doc["tracks"] if t["status"] == "persisting")
    assert [m["timepoint"] for m in persisting["members"]] == [0, 1]
    table = CliRunner().invoke(cli, ["track", str(scans[0]), str(scans[1])])
    assert table.exit_code == 0 and "persisting" in table.stdout
    swapped = CliRunner().invoke(
        cli, ["track", str(scans[0]), str(scans[1]), "--dates", "2020-06-01,2020-01-01", "--json"]
    )  # the later scan would become the baseline and every lesion of the earlier one "new"
    assert swapped.exit_code == 1 and swapped.stdout == ""
    assert "oldest first" in " ".join(swapped.output.split())


def test_volumetry_json(cli, scans) -> None:
    result = CliRunner().invoke(cli, ["volumetry", str(scans[0]), str(scans[1]), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    volumes = []
    for path in scans[:2]:
        image = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(image)
        volumes.append(np.isin(array, (1, 2, 3)).sum() * np.prod(image.GetSpacing()) / 1000)
    assert doc["volumes_ml"] == pytest.approx(volumes)
    mean = np.mean(volumes)
    assert doc["deviation_pct"] == pytest.approx([(v - mean) / mean * 100 for v in volumes])
    assert doc["flag"] == (doc["max_abs_deviation_pct"] > 2.0)
    assert any("slice thicknesses differ" in w for w in doc["warnings"])


def test_user_errors_exit_1_naming_the_file(cli, scans, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["lesions", str(tmp_path / "nope.nii.gz")])
    assert missing.exit_code == 1 and "nope.nii.gz" in missing.output
    bad = sitk.GetImageFromArray(np.full((4, 4, 4), 7, dtype=np.uint8))
    bad_path = write_image(bad, tmp_path / "bad.nii.gz")
    wrong = runner.invoke(cli, ["volumetry", str(bad_path), str(scans[0])])
    assert wrong.exit_code == 1 and "bad.nii.gz" in wrong.output and "0..3" in wrong.output
    one = runner.invoke(cli, ["volumetry", str(scans[0])])
    assert one.exit_code == 1 and "at least 2" in one.output
    images = runner.invoke(cli, ["track", str(scans[0]), str(scans[1]), "--images", str(scans[2])])
    assert images.exit_code == 1 and "1 CT images for 2 label maps" in images.output
    usage = runner.invoke(cli, ["track", str(scans[0]), "--registration", "elastic"])
    assert usage.exit_code == 2


def test_lvt_entry_point_prints_only_json(scans) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = "from app.cli.main import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, "lesions", str(scans[0]), "--json"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )
    if done.returncode != 0 and "analysis" not in done.stderr and "Traceback" in done.stderr:
        pytest.skip(f"the lvt app does not import right now: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["lesions"]) == 2


@pytest.mark.parametrize(
    "args",
    [
        ["lesions", "missing[v2].nii.gz", "--json"],  # caught in the command
        ["evaluate", "--pred", "missing[v2].nii.gz", "--ref", "missing[v2].nii.gz", "--json"],  # caught in main()
    ],
)
def test_a_json_command_that_fails_still_prints_one_json_document(tmp_path: Path, args: list[str]) -> None:
    """A script reading stdout got nothing to parse when a command failed; the message lost
    bracketed parts of file names (read as console markup)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LVT_VAR_DIR": str(tmp_path / "var")}
    done = subprocess.run(
        [sys.executable, "-c", "from app.cli.main import main; main()", *args],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert done.returncode == 1
    document = json.loads(done.stdout)
    assert document["exit_code"] == 1 and "missing[v2].nii.gz" in document["error"]
    assert "missing[v2].nii.gz" in done.stderr


def test_evaluate_counts_the_lesions_that_lesions_lists(tmp_path: Path) -> None:
    """`lvt evaluate` counted every tumor component, `lvt lesions` only those of 10 voxels or
    more: a 4-voxel speck made one scan hold two lesions in one command and one in the other."""
    labels = np.zeros((20, 30, 30), np.uint8)
    labels[2:18, 2:28, 2:28] = 1
    labels[5:10, 5:10, 5:10] = 3
    labels[15, 20:22, 20:22] = 3  # a speck of 4 voxels
    path = tmp_path / "labels.nii.gz"
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((1.0, 1.0, 2.0))
    write_image(image, path)
    runner = CliRunner()
    root = typer.Typer()
    register(root)
    from app.cli.evaluate import register as register_evaluate

    register_evaluate(root)
    listed = json.loads(runner.invoke(root, ["lesions", str(path), "--json"]).stdout)["lesions"]
    evaluated = json.loads(runner.invoke(root, ["evaluate", "--pred", str(path), "--ref", str(path), "--json"]).stdout)
    assert len(listed) == evaluated["lesions"]["n_reference"] == evaluated["lesions"]["n_predicted"] == 1
    every = json.loads(runner.invoke(root, ["evaluate", "--pred", str(path), "--ref", str(path), "--json",
                                            "--min-voxels", "1"]).stdout)
    assert every["lesions"]["n_reference"] == 2


def test_track_keeps_the_scanner_frame_for_a_badly_drawn_liver_and_says_so(cli, tmp_path: Path) -> None:
    """Registered on a follow-up liver drawn as a 6 mm blob, both unchanged lesions moved: one
    "disappeared" and one "new" each, which RECIST reads as progression."""
    lesions = (Ellipsoid((-25.0, -15.0, -5.0), (9.0, 6.0, 6.0)),
               Ellipsoid((30.0, -20.0, 10.0), (6.0, 6.0, 6.0)))
    blob = (Ellipsoid((50.0, 30.0, 20.0), (3.0, 3.0, 3.0)),)
    before, _, _ = render_scan(Anatomy(lesions=lesions))
    after, _, _ = render_scan(Anatomy(lesions=lesions, liver=blob, vessel=None))
    paths = [str(write_image(labels, tmp_path / name)) for name, labels in (("a.nii.gz", before), ("b.nii.gz", after))]
    result = CliRunner().invoke(cli, ["track", *paths, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [t["status"] for t in doc["tracks"]] == ["persisting", "persisting"]
    assert len(doc["warnings"]) == 1 and "the scanner frame is used" in doc["warnings"][0]
    assert doc["registrations"][0]["offset_mm"] == [0.0, 0.0, 0.0]
    table = CliRunner().invoke(cli, ["track", *paths])
    assert table.exit_code == 0 and "warning:" in table.output and "scanner frame" in table.output


def test_track_runs_on_a_three_slice_series(cli, tmp_path: Path) -> None:
    """A 3-slice, 5 mm series made the registration raise: a traceback and no JSON."""
    lesion = (Ellipsoid((-25.0, -15.0, 0.0), (9.0, 6.0, 9.0)),)
    thin = {"spacing": (2.0, 2.0, 5.0), "extent_mm": (200.0, 180.0, 15.0), "center_mm": (10.0, -5.0, 0.0)}
    paths = []
    for name in ("a", "b"):
        labels, _, _ = render_scan(Anatomy(lesions=lesion), **thin)
        paths.append(str(write_image(labels, tmp_path / f"{name}.nii.gz")))
    result = CliRunner().invoke(cli, ["track", *paths, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [t["status"] for t in doc["tracks"]] == ["persisting"]
    assert "3 slice(s), too few to register" in doc["warnings"][0]
