import csv
import json

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
    assert set(rows[0]) == {
        *("path", "label", "pair_id", "source", "left", "top", "right", "bottom"),
        *("scale", "jpeg_quality", "family"),
    }
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


def _tree_bytes(root) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "dataset.json"  # dataset.json records the run, not pixels
    }


RESUME_CONFIG = ReconstructConfig(crop_size=32, crops_per_image=2, batch_size=5, seed=3)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, vae, photo_dir):
    out = tmp_path_factory.mktemp("uninterrupted")
    summary = build_aligned_dataset([photo_dir], out, autoencoder=vae, config=RESUME_CONFIG)
    assert summary.written == 12
    return _tree_bytes(out)


def test_resume_after_losing_half_the_outputs_writes_the_same_bytes(
    tmp_path, vae, photo_dir, uninterrupted
):
    build_aligned_dataset([photo_dir], tmp_path, autoencoder=vae, config=RESUME_CONFIG)
    fakes = sorted((tmp_path / "reconstructed").glob("*.png"))
    for i, fake in enumerate(fakes):
        if i % 2:  # every other pair, so each resumed batch mixes done and missing pairs
            fake.unlink()
            if i % 4 == 1:
                (tmp_path / "real" / fake.name).unlink()
    summary = build_aligned_dataset([photo_dir], tmp_path, autoencoder=vae, config=RESUME_CONFIG)
    assert (summary.written, summary.resumed) == (6, 6)
    assert _tree_bytes(tmp_path) == uninterrupted


def test_resume_after_a_crash_writes_the_same_bytes(
    tmp_path, vae, photo_dir, uninterrupted, monkeypatch
):
    import ldmdetect.engine.reconstruct as reconstruct_module

    real_save = reconstruct_module.save_png
    calls = {"n": 0}

    def crash_after_seven(image, path):
        calls["n"] += 1
        if calls["n"] > 7:  # mid-batch, between a pair's real and its reconstruction
            raise KeyboardInterrupt
        return real_save(image, path)

    monkeypatch.setattr(reconstruct_module, "save_png", crash_after_seven)
    with pytest.raises(KeyboardInterrupt):
        build_aligned_dataset([photo_dir], tmp_path, autoencoder=vae, config=RESUME_CONFIG)
    monkeypatch.setattr(reconstruct_module, "save_png", real_save)
    assert len(list((tmp_path / "reconstructed").glob("*.png"))) == 3
    summary = build_aligned_dataset([photo_dir], tmp_path, autoencoder=vae, config=RESUME_CONFIG)
    assert (summary.written, summary.resumed) == (9, 3)
    assert _tree_bytes(tmp_path) == uninterrupted


def test_pair_seed_is_stable_and_distinct() -> None:
    from ldmdetect.engine.reconstruct import pair_seed

    assert pair_seed(0, "cat_c000") == pair_seed(0, "cat_c000")
    seeds = {pair_seed(s, f"{name}_c{k:03d}") for s in (0, 1) for name in "ab" for k in range(3)}
    assert len(seeds) == 12  # run seed, source and crop index all change the noise
    assert all(0 <= s < 2**64 for s in seeds)
    # Additive seeding would collide here (seed + hash); mixing does not.
    assert pair_seed(1, "x") != pair_seed(0, "x") + 1


def test_aligned_pairs_through_a_flux_autoencoder(tmp_path, tiny_family_dir, photo_dir):
    cfg = ReconstructConfig(crop_size=32, crops_per_image=1, seed=0)
    summary = build_aligned_dataset(
        [photo_dir], tmp_path, autoencoder=tiny_family_dir("flux"), config=cfg, device="cpu"
    )
    assert summary.errors == {} and summary.pairs == 6
    pair = read_aligned_dataset(tmp_path)[0]
    real, fake = np.asarray(Image.open(pair.real)), np.asarray(Image.open(pair.reconstructed))
    assert real.shape == fake.shape == (32, 32, 3)
    assert not np.array_equal(real, fake)


def test_crops_at_several_scales_and_frequency_aligned_jpeg_pairs(tmp_path, vae):
    from ldmdetect.io.jpeg import read_jpeg_settings, reencode_like
    from ldmdetect.io.samples import sample_photos

    photo = Image.open(dict(sample_photos())["chelsea"]).convert("RGB")  # 451 x 300
    source = tmp_path / "photos" / "cat.jpg"
    source.parent.mkdir()
    photo.save(source, quality=70)
    out = tmp_path / "data"
    config = ReconstructConfig(crop_size=64, crops_per_image=2, scales=(1.0, 0.5), align_jpeg=True)
    build_aligned_dataset([source.parent], out, autoencoder=vae, config=config, device="cpu")
    rows = [r for r in csv.DictReader((out / "manifest.csv").open()) if r["label"] == "real"]
    assert sorted(r["pair_id"] for r in rows) == [
        "cat_c000",
        "cat_c001",
        "cat_x0.5_c000",
        "cat_x0.5_c001",
    ]
    assert {r["scale"] for r in rows} == {"1", "0.5"} and {r["jpeg_quality"] for r in rows} == {
        "70"
    }
    settings = read_jpeg_settings(source)
    decoded = Image.open(source).convert("RGB")
    half = decoded.resize((226, 150), Image.Resampling.LANCZOS)
    for row in rows:
        box = tuple(int(row[k]) for k in ("left", "top", "right", "bottom"))
        native = row["scale"] == "1"
        if native:  # cut on the JPEG's 16-pixel grid, so both members share its blocks
            assert box[0] % 16 == 0 and box[1] % 16 == 0
        real = Image.open(out / row["path"])
        expected = (decoded if native else half).crop(box)
        np.testing.assert_array_equal(np.asarray(real), np.asarray(expected))
        # The reconstruction went through the real's own quantisation tables: coding it again
        # with them changes it little, unlike the raw decoder output would.
        fake = Image.open(out / "reconstructed" / f"{row['pair_id']}.png")
        again = np.asarray(reencode_like(fake, settings), dtype=float)
        assert np.abs(again - np.asarray(fake, dtype=float)).mean() < 1.5
    unaligned = tmp_path / "plain"
    plain = ReconstructConfig(crop_size=64, crops_per_image=2, scales=(1.0, 0.5))
    build_aligned_dataset([source.parent], unaligned, autoencoder=vae, config=plain, device="cpu")
    fake = Image.open(unaligned / "reconstructed" / "cat_c000.png")
    again = np.asarray(reencode_like(fake, settings), dtype=float)
    assert np.abs(again - np.asarray(fake, dtype=float)).mean() > 1.5


def test_scales_outside_the_unit_interval_are_refused():
    with pytest.raises(ValueError, match="scales"):
        ReconstructConfig(scales=(2.0,))
    with pytest.raises(ValueError, match="scales"):
        ReconstructConfig(scales=())


def test_two_named_autoencoders_give_each_crop_two_tagged_reconstructions(tmp_path, vae, photo_dir):
    from ldmdetect.generative.tiny import build_tiny_autoencoder

    other = build_tiny_autoencoder(seed=1, latent_channels=8)
    cfg = ReconstructConfig(crop_size=32, crops_per_image=1, seed=0)
    summary = build_aligned_dataset(
        [photo_dir], tmp_path, autoencoder=[("first", vae), ("second", other)], config=cfg
    )
    assert summary.pairs == summary.written == 6
    rows = list(csv.DictReader((tmp_path / "manifest.csv").open()))
    assert len(rows) == 6 * 3
    assert {r["family"] for r in rows if r["label"] == "real"} == {""}
    assert sorted(r["family"] for r in rows if r["label"] == "reconstructed") == [
        *["first"] * 6,
        *["second"] * 6,
    ]
    pairs = read_aligned_dataset(tmp_path)
    assert len(pairs) == 6
    for pair in pairs:
        assert pair.families == ("first", "second")
        (_, a), (_, b) = pair.reconstructions
        assert a.parent.name == "first" and b.parent.name == "second"
        assert a.name == b.name == pair.real.name  # same names: only the autoencoder differs
        assert not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    # Each family's reconstruction is what that autoencoder alone writes, byte for byte.
    alone = build_aligned_dataset(
        [photo_dir], tmp_path / "alone", autoencoder=vae, family="first", config=cfg
    )
    assert alone.pairs == 6
    for pair, single in zip(pairs, read_aligned_dataset(tmp_path / "alone"), strict=True):
        assert single.families == ("first",)
        assert pair.reconstructions[0][1].read_bytes() == single.reconstructed.read_bytes()
    info = json.loads((tmp_path / "dataset.json").read_text())
    assert list(info["families"]) == ["first", "second"]


def test_untagged_autoencoders_are_tagged_by_family_and_latent_channels(
    tmp_path, tiny_family_dir, photo_dir
):
    cfg = ReconstructConfig(crop_size=32, crops_per_image=1)
    sources = [(None, tiny_family_dir("sd")), (None, tiny_family_dir("flux"))]
    build_aligned_dataset([photo_dir], tmp_path, autoencoder=sources, config=cfg, device="cpu")
    assert read_aligned_dataset(tmp_path)[0].families == ("sd-4ch", "flux-16ch")


def test_two_untagged_autoencoders_with_one_derived_tag_must_be_named(tmp_path, vae, photo_dir):
    from ldmdetect.generative.tiny import build_tiny_autoencoder

    twin = build_tiny_autoencoder(seed=5)  # another 4-channel autoencoder: "vae-4ch" as well
    with pytest.raises(ValueError, match=r"'vae-4ch'.*--autoencoder NAME=SRC"):
        build_aligned_dataset([photo_dir], tmp_path, autoencoder=[(None, vae), (None, twin)])
    with pytest.raises(ValueError, match=r"'a'.*a name of its own"):
        build_aligned_dataset([photo_dir], tmp_path, autoencoder=[("a", vae), ("a", twin)])


def test_parse_autoencoder_splits_a_family_name_from_its_source(tmp_path):
    from ldmdetect.engine.reconstruct import parse_autoencoder

    assert parse_autoencoder("sd21=stabilityai/stable-diffusion-2-1") == (
        "sd21",
        "stabilityai/stable-diffusion-2-1",
    )
    assert parse_autoencoder("stabilityai/sd-vae-ft-mse") == (None, "stabilityai/sd-vae-ft-mse")
    odd = tmp_path / "a=b"
    odd.mkdir()
    assert parse_autoencoder(str(odd)) == (None, str(odd))  # an existing path stays a path


def test_datasets_written_before_family_tags_still_read(aligned_dir, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(aligned_dir, old)
    rows = list(csv.DictReader((old / "manifest.csv").open()))
    fields = [f for f in rows[0] if f != "family"]
    with (old / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    info = json.loads((old / "dataset.json").read_text())
    info.pop("families")
    (old / "dataset.json").write_text(json.dumps(info))
    pairs = read_aligned_dataset(old)
    assert len(pairs) == 24 and {p.families for p in pairs} == {("",)}
