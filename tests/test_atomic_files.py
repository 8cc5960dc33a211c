"""A published file is replaced whole or left as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lvt_core.atomic_files import published_folder, replaced_on_success, write_text_atomically
from lvt_core.imageio import read_image, write_image


def test_success_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "summary.json"
    write_text_atomically(target, "old")
    write_text_atomically(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["summary.json"]


def test_a_writer_that_fails_leaves_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    target.write_text("a,b\n1,2\n")
    with pytest.raises(RuntimeError, match="disk full"), replaced_on_success(target) as tmp:
        tmp.write_text("a,b\n3")
        raise RuntimeError("disk full")
    assert target.read_text() == "a,b\n1,2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_an_interrupted_image_write_keeps_the_published_image(tmp_path: Path) -> None:
    """The temporary name ends like the target, so SimpleITK picks the NIfTI writer."""
    target = tmp_path / "labels.nii.gz"
    write_image(sitk.GetImageFromArray(np.ones((2, 3, 4), np.uint8)), target)
    with pytest.raises(KeyboardInterrupt), replaced_on_success(target, ".nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4), np.uint8)), str(tmp))
        raise KeyboardInterrupt
    assert sitk.GetArrayFromImage(read_image(target)).sum() == 24
    assert [p.name for p in tmp_path.iterdir()] == ["labels.nii.gz"]


def test_a_published_folder_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "case-1"
    with pytest.raises(OSError, match="no space"), published_folder(cache) as tmp:
        (tmp / "image.npy").write_bytes(b"half")
        raise OSError("no space left on device")
    assert not cache.parent.exists() or list(cache.parent.iterdir()) == []
    with published_folder(cache) as tmp:
        (tmp / "meta.json").write_text("{}")
    assert sorted(p.name for p in cache.iterdir()) == ["meta.json"]
    assert [p.name for p in cache.parent.iterdir()] == ["case-1"]


def test_a_folder_published_first_by_another_process_is_kept(tmp_path: Path) -> None:
    """Two workers caching one scene: the loser's copy is dropped, not merged in."""
    cache = tmp_path / "scene"
    with published_folder(cache) as tmp:
        (tmp / "manifest.json").write_text("theirs")
        (cache / "manifest.json").parent.mkdir()
        (cache / "manifest.json").write_text("first")
    assert (cache / "manifest.json").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["scene"]
