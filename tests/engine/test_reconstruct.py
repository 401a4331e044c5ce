import csv

import numpy as np
import pytest
from PIL import Image

from ldmdetect.engine.reconstruct import (
    ReconstructConfig,
    build_aligned_dataset,
    read_aligned_dataset,
)
from ldmdetect.generative.autoencoder import load_autoencoder


@pytest.fixture(scope="module")
def vae(tiny_pipeline_dir):
    return load_autoencoder(tiny_pipeline_dir, device="cpu")


def test_pairs_have_matching_names_and_the_real_crop_is_the_source_pixels(aligned_dir, photo_dir):
    pairs = read_aligned_dataset(aligned_dir)
    assert len(pairs) == 6 * 4
    rows = list(csv.DictReader((aligned_dir / "manifest.csv").open()))
    assert set(rows[0]) == {"path", "label", "pair_id", "source", "left", "top", "right", "bottom"}
    for pair in pairs:
        assert pair.real.name == pair.reconstructed.name
        assert pair.real.parent.name == "real" and pair.reconstructed.parent.name == "reconstructed"
    row = rows[0]
    box = tuple(int(row[k]) for k in ("left", "top", "right", "bottom"))
    source = np.asarray(Image.open(row["source"]).convert("RGB").crop(box))
    np.testing.assert_array_equal(np.asarray(Image.open(aligned_dir / row["path"])), source)


def test_reconstructions_are_lossless_png_and_differ_from_the_real(aligned_dir):
    pair = read_aligned_dataset(aligned_dir)[0]
    real, fake = Image.open(pair.real), Image.open(pair.reconstructed)
    assert real.format == fake.format == "PNG"
    assert real.size == fake.size == (64, 64)
    assert not np.array_equal(np.asarray(real), np.asarray(fake))


def test_rerun_resumes_without_rewriting(tmp_path, vae, photo_dir):
    cfg = ReconstructConfig(crop_size=32, crops_per_image=2)
    first = build_aligned_dataset([photo_dir], tmp_path, autoencoder=vae, config=cfg)
    assert first.written == first.pairs == 12
    victim = sorted((tmp_path / "reconstructed").glob("*.png"))[0]
    victim.unlink()
    second = build_aligned_dataset([photo_dir], tmp_path, autoencoder=vae, config=cfg)
    assert (second.written, second.resumed, second.pairs) == (1, 11, 12)
    assert victim.is_file()


def test_a_bad_file_is_reported_and_the_rest_completes(tmp_path, vae, photo_dir):
    source = tmp_path / "src"
    source.mkdir()
    for photo in sorted(photo_dir.glob("*.png"))[:2]:
        (source / photo.name).write_bytes(photo.read_bytes())
    (source / "empty.jpg").write_bytes(b"")
    summary = build_aligned_dataset(
        [source], tmp_path / "out", autoencoder=vae, config=ReconstructConfig(crop_size=32)
    )
    assert summary.pairs == 2
    assert list(summary.errors) == [str(source / "empty.jpg")]
    assert "empty" in summary.errors[str(source / "empty.jpg")]


def test_csv_manifest_source_and_whole_image_mode(tmp_path, vae, photo_dir):
    photos = sorted(photo_dir.glob("*.png"))[:3]
    manifest = tmp_path / "list.csv"
    manifest.write_text("path\n" + "\n".join(str(p) for p in photos) + "\n")
    summary = build_aligned_dataset(
        [manifest],
        tmp_path / "out",
        autoencoder=vae,
        config=ReconstructConfig(crop_size=0, batch_size=4),
    )
    assert summary.pairs == 3
    for pair in read_aligned_dataset(tmp_path / "out"):
        w, h = Image.open(pair.real).size
        assert w % 8 == 0 and h % 8 == 0  # rounded down to the AE's factor
        assert Image.open(pair.reconstructed).size == (w, h)


def test_crop_size_must_fit_the_autoencoder(tmp_path, vae, photo_dir):
    with pytest.raises(ValueError, match="multiple of the autoencoder's downsampling factor 8"):
        build_aligned_dataset(
            [photo_dir], tmp_path, autoencoder=vae, config=ReconstructConfig(crop_size=36)
        )
