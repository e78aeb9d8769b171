from pathlib import Path

import pytest

from img2mesh.errors import UsageError
from img2mesh.pipeline.inputs import assign_run_dirs, check_output_dir, collect_images

from helpers.images import write_rgba


def test_folder_expands_to_sorted_images_only(tmp_path):
    folder = tmp_path / "in"
    for name in ("b.png", "a.JPG", "c.webp", "d.gif", ".hidden.png"):
        write_rgba(folder / "x.png").rename(folder / name)
    (folder / "notes.txt").write_text("x")
    (folder / "sub").mkdir()
    images, batch = collect_images([folder])
    assert [p.name for p in images] == ["a.JPG", "b.png", "c.webp", "d.gif"]  # a GIF, as when named alone
    assert batch  # a folder always means OUT/<stem>/, even with one image


def test_single_file_is_not_a_batch(image):
    assert collect_images([image]) == ([image], False)


def test_run_dirs(tmp_path):
    out = tmp_path / "out"
    one = assign_run_dirs([Path("x/cat.png")], out, batch=False)
    assert one[0].run_dir == out
    many = assign_run_dirs([Path("x/cat.png"), Path("y/cat.jpg"), Path("z/dog.png"), Path("w/cat.png")], out, True)
    assert [r.run_dir.name for r in many] == ["cat", "cat-2", "dog", "cat-3"]


def test_output_checks(tmp_path):
    check_output_dir(tmp_path / "new" / "deeper")  # creatable: fine
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is not a folder"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(UsageError, match="is not a folder"):
        check_output_dir(tmp_path / "f" / "sub")
    assert not (tmp_path / "new").exists()

