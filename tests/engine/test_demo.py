from pathlib import Path

import pytest

from ldmdetect.detector import Detector
from ldmdetect.engine.demo import DemoConfig, ae_train_config, run_demo, split_photos
from ldmdetect.io.augment import AugmentConfig


def test_split_is_by_subject():
    photos = [Path(f"{n}.png") for n in ("motorcycle_left", "motorcycle_right", "cat", "rocket")]
    split = split_photos(photos, ("motorcycle_left",), 0, seed=0)
    assert [p.stem for p in split["heldout"]] == ["motorcycle_left", "motorcycle_right"]
    drawn = split_photos(photos, None, 2, seed=1)
    held = {p.stem.split("_")[0] for p in drawn["heldout"]}
    assert len(held) == 2
    assert not held & {p.stem.split("_")[0] for p in drawn["train"]}
    with pytest.raises(ValueError, match="giraffe"):
        split_photos(photos, ("giraffe",), 0, seed=0)


def test_ae_trains_with_the_demos_augmentation_not_the_library_default():
    cfg = DemoConfig(augment="jpeg_prob=0.25,jpeg_quality=70-90")
    assert ae_train_config(cfg).augment == AugmentConfig(jpeg_prob=0.25, jpeg_quality=(70, 90))
    assert ae_train_config(DemoConfig()).augment != AugmentConfig()


def test_the_whole_chain_on_the_tiny_generator(tmp_path):
    config = DemoConfig(
        generator="tiny",
        backbone="mobilenetv3_small_050",
        pretrained=False,
        input_size=32,
        train_crops_per_image=4,
        eval_size=64,
        eval_crops_per_image=2,
        generated_images=6,
        generation_steps=2,
        epochs=3,
        batch_size=8,
        lare_backbone="timm:mobilenetv3_small_050",
        lare_pretrained=False,
        lare_input_size=48,
        lare_ensemble=2,
        lare_train_crops_per_image=2,
        lare_train_generated=8,
        lare_epochs=1,
        methods=("ae", "lare2"),
        threads=None,
        photo_limit=150,
    )
    result = run_demo(tmp_path, config, log=lambda _: None)
    assert set(result.evaluations) == {"ae", "lare2"}
    # Thresholds from 150 crops of every calibration source; the test split's unseen sources
    # counted at them, as shipped and recompressed, beside the generated images.
    for name in ("ae", "lare2"):
        calibration = Detector.from_pretrained(result.detector_dirs[name]).config.calibration
        assert calibration["n_real"] == 150 and calibration["n_sources"] >= 3
        native = next(k for k in result.photo_table if k.startswith(f"{name} / real photos"))
        assert "unseen sources, native" in native and result.photo_table[native]["n"] == 150
        row = result.photo_table[f"{name} / generated (unseen prompts)"]
        assert row["n"] == 6 and 0 <= row["flagged@fpr=0.01"] <= 1
        counts = result.flagged[name]
        photos = next(v for k, v in counts.items() if k.endswith("native"))["fpr_0.01"]
        assert sum(f for f, _ in photos["per_source"].values()) == photos["flagged"]
    # SynRIS: the generated images against the held-out reals a reverse image search matched
    matched = result.table["lare2 / generated / 1-try / SynRIS-matched reals"]
    assert (
        0.0 <= matched["auc"] <= 1.0 and "ae / generated / 1-try / unmatched reals" in result.table
    )
    assert (tmp_path / "synris" / "ae" / "synris" / "pairs.csv").is_file()
    assert "lare2 / generated / 1-try" in result.table
    assert "ae / generated / 10-try" in result.table
    assert "ae / reconstructed (held-out) / format control jpeg:90" in result.table
    row = result.table["ae / generated / 1-try"]
    assert 0.0 <= row["auc"] <= 1.0 and row["seconds_per_image"] > 0
    train = {p.stem.split("_")[0] for p in (tmp_path / "photos" / "train").glob("*.png")}
    held = {p.stem.split("_")[0] for p in (tmp_path / "photos" / "heldout").glob("*.png")}
    assert held and not train & held
    rows = (tmp_path / "scan.csv").read_text().splitlines()
    assert len(rows) == 1 + 7 and any("corrupt.jpg" in r for r in rows)
    assert (tmp_path / "reports" / "ae" / "metrics.json").is_file()
