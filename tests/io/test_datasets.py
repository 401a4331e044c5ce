import os
from pathlib import Path

import pytest

from ldmdetect.io.datasets import find_images, read_manifest, resolve_sources


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    _touch(
        tmp_path,
        "b.png",
        "a.JPG",
        "notes.txt",
        ".hidden.png",
        "sub/c.webp",
        "sub/deeper/d.TIFF",
        "sub/readme.md",
        ".git/e.png",
        ".cache/f.jpg",
    )
    return tmp_path


def _names(paths: list[Path], root: Path) -> list[str]:
    return [path.relative_to(root).as_posix() for path in paths]


def test_find_images_walks_recursively_and_skips_hidden(tree):
    assert _names(find_images([tree]), tree) == [
        "a.JPG",
        "b.png",
        "sub/c.webp",
        "sub/deeper/d.TIFF",
    ]


def test_find_images_non_recursive(tree):
    assert _names(find_images([tree], recursive=False), tree) == ["a.JPG", "b.png"]


def test_files_given_directly_are_kept_whatever_their_extension(tree):
    found = find_images([tree / "notes.txt", tree / ".hidden.png"])
    assert _names(found, tree) == [".hidden.png", "notes.txt"]


def test_a_hidden_folder_given_directly_is_searched(tree):
    assert _names(find_images([tree / ".cache"]), tree) == [".cache/f.jpg"]


def test_results_are_sorted_and_deduplicated(tree):
    found = find_images([tree / "sub", tree / "b.png", tree, tree / "sub" / "c.webp"])
    assert _names(found, tree) == ["a.JPG", "b.png", "sub/c.webp", "sub/deeper/d.TIFF"]


def test_missing_path_is_named(tree):
    with pytest.raises(FileNotFoundError, match="nothere"):
        find_images([tree, tree / "nothere"])


def test_symlinked_folders_are_followed_without_looping(tree):
    os.symlink(tree, tree / "sub" / "loop")  # points back up the tree
    found = find_images([tree])
    assert _names(found, tree) == ["a.JPG", "b.png", "sub/c.webp", "sub/deeper/d.TIFF"]


def test_read_manifest_resolves_relative_paths_against_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "list.csv").write_text(
        "\ufeffpath,label,generator\n"  # a spreadsheet's byte-order mark
        "imgs/a.png,1,sd15\n"
        "../b.jpg,0,\n"
        f"{tmp_path / 'c.png'},1,sdxl\n"
        "\n"
    )
    monkeypatch.chdir(tmp_path.parent)  # the working directory must not matter
    rows = read_manifest(folder / "list.csv")
    assert rows == [
        {"path": str(folder / "imgs" / "a.png"), "label": "1", "generator": "sd15"},
        {"path": str(tmp_path / "b.jpg"), "label": "0", "generator": ""},
        {"path": str(tmp_path / "c.png"), "label": "1", "generator": "sdxl"},
    ]


def test_read_manifest_needs_a_path_column(tmp_path):
    manifest = tmp_path / "bad.csv"
    manifest.write_text("file,label\na.png,1\n")
    with pytest.raises(ValueError, match=r"bad\.csv.*'path'.*'file', 'label'"):
        read_manifest(manifest)


def test_read_manifest_refuses_ragged_rows(tmp_path):
    manifest = tmp_path / "ragged.csv"
    manifest.write_text("path,label\na.png,1\nb.png,0,extra\n")
    with pytest.raises(ValueError, match=r"ragged\.csv, line 3"):
        read_manifest(manifest)


def test_resolve_sources(tree):
    manifest = tree / "list.CSV"
    manifest.write_text("path\nsub/c.webp\nb.png\n")
    assert resolve_sources(manifest) == [tree / "sub" / "c.webp", tree / "b.png"]
    assert _names(resolve_sources(tree / "sub"), tree) == ["sub/c.webp", "sub/deeper/d.TIFF"]
    assert resolve_sources(tree / "b.png") == [tree / "b.png"]
