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


def _write_formats(folder: Path) -> None:
    """One real image per container, plus a text file: what a phone/browser upload folder holds."""
    from PIL import Image

    from ldmdetect.io import images

    folder.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (40, 24), (200, 40, 30))
    image.save(folder / "photo.png")
    image.save(folder / "icon.ico")
    if images._AVIF:
        image.save(folder / "browser.avif")
    else:
        (folder / "browser.avif").write_bytes(b"\x00\x00\x00\x1cftypavif")
    if images._HEIF:
        import pillow_heif

        pillow_heif.from_pillow(image).save(folder / "phone.heic")
    else:
        (folder / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (folder / "notes.txt").write_text("not an image")


def test_search_names_skipped_files_and_decodes_avif_and_heic(tmp_path):
    from ldmdetect.io.datasets import search_images
    from ldmdetect.io.images import IMAGE_EXTENSIONS, load_image

    _write_formats(tmp_path / "uploads")
    (tmp_path / "uploads" / ".partial.png.tmp").write_bytes(b"")  # hidden: not reported
    found = search_images([tmp_path / "uploads", tmp_path / "typo"])
    decodable = {"photo.png"}
    decodable |= {"browser.avif"} if ".avif" in IMAGE_EXTENSIONS else set()
    decodable |= {"phone.heic"} if ".heic" in IMAGE_EXTENSIONS else set()
    every = {"photo.png", "icon.ico", "browser.avif", "phone.heic", "notes.txt"}
    assert {p.name for p in found.files} == decodable
    assert [p.name for p in found.skipped] == sorted(every - decodable)
    assert found.missing == [tmp_path / "typo"]
    for path in found.files:  # every file a scan picks up decodes, to the right pixels
        image = load_image(path)
        assert image.size == (40, 24)
        r, g, b = image.getpixel((20, 12))
        assert abs(r - 200) < 12 and abs(g - 40) < 12 and abs(b - 30) < 12, path.name


def test_avif_and_heic_are_scanned_where_decoders_are_installed():
    # pillow-heif is a dependency and Pillow >= 11.3 ships AVIF: both must be live here.
    from ldmdetect.io.images import DECODE_FORMATS, IMAGE_EXTENSIONS

    assert {".avif", ".heic", ".heif"} <= IMAGE_EXTENSIONS
    assert {"AVIF", "HEIF"} <= set(DECODE_FORMATS)
    assert ".ico" not in IMAGE_EXTENSIONS


def test_search_images_matches_find_images_and_keeps_named_files(tree):
    from ldmdetect.io.datasets import search_images

    found = search_images([tree, tree / "notes.txt"])
    assert found.files == find_images([tree, tree / "notes.txt"])
    assert tree / "notes.txt" in found.files  # named by the user: kept, not skipped
    assert _names(found.skipped, tree) == ["sub/readme.md"]  # named files are not skipped
    assert found.missing == []
    assert _names(search_images([tree]).skipped, tree) == ["notes.txt", "sub/readme.md"]
    assert _names(search_images([tree], recursive=False).skipped, tree) == ["notes.txt"]


def test_find_images_still_raises_on_a_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        find_images([tmp_path, tmp_path / "nope"])
