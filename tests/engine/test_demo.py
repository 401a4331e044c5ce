from pathlib import Path

import pytest

from conftest import LEARNING_BACKBONE
from ldmdetect.detector import Detector
from ldmdetect.engine.demo import (
    DemoConfig,
    demo_recipes,
    demo_train_config,
    run_demo,
    split_photos,
)
from ldmdetect.io.augment import AugmentConfig
from ldmdetect.methods.ae.demo import AEDemo
from ldmdetect.methods.lare2.demo import LaRE2Demo


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
    cfg = DemoConfig(method_settings={"ae": AEDemo(augment="jpeg_prob=0.25,jpeg_quality=70-90")})
    expected = AugmentConfig(jpeg_prob=0.25, jpeg_quality=(70, 90))
    assert demo_train_config(cfg, "ae").augment == expected
    assert demo_train_config(DemoConfig(), "ae").augment != AugmentConfig()


def test_each_method_runs_with_its_recipes_defaults_unless_given_settings():
    """A method missing from ``method_settings`` keeps its recipe's defaults; a method with
    no recipe is refused by name."""
    cfg = DemoConfig(method_settings={"ae": AEDemo(epochs=1)})
    assert demo_train_config(cfg, "ae").epochs == 1
    assert cfg.recipe("lare2") == LaRE2Demo() == DemoConfig().recipe("lare2")
    assert demo_train_config(cfg, "lare2").feature["lare"]["image_size"] == cfg.eval_size
    with pytest.raises(ValueError, match="no recipe for 'nonexistent'"):
        cfg.recipe("nonexistent")


# The tiny generator's random weights make its images and reconstructions lose the photos'
# colours and textures, so a detector that learns anything separates them from held-out reals.
# Both CNNs are ResNet-10t on the whole 64 px crop, and lare2 sees 16 generated images: with
# mobilenetv3 or 8 generated images the rows passed by seed luck (lare2 on generated images
# 0.5-1.0 over seeds 0-2), with these settings every row was 1.0 at seeds 0, 1 and 2.
MIN_AUC = 0.9


def test_the_whole_chain_on_the_tiny_generator(tmp_path, tiny_family_dir):
    other = tiny_family_dir("sd3")
    config = DemoConfig(
        generator="tiny",
        other_generator=str(other),
        input_size=64,
        train_crops_per_image=4,
        eval_size=64,
        eval_crops_per_image=2,
        generated_images=6,
        generation_steps=2,
        batch_size=8,
        real_train_crops_per_image=2,
        generated_train_images=16,
        method_settings={
            "ae": AEDemo(backbone=LEARNING_BACKBONE, pretrained=False, epochs=3),
            "lare2": LaRE2Demo(
                backbone=f"timm:{LEARNING_BACKBONE}",
                pretrained=False,
                input_size=64,
                ensemble=2,
                epochs=5,
            ),
        },
        methods=("ae", "lare2"),
        threads=None,
        photo_limit=150,
        costly_photo_limit=100,
    )
    result = run_demo(tmp_path, config, log=lambda _: None)
    assert set(result.evaluations) == {"ae", "lare2"}
    # Thresholds from 150 crops of every calibration source (100 for lare2, whose features run
    # the generator on every image); the test split's unseen sources counted at them, as
    # shipped and recompressed, beside the generated images.
    for name, n in (("ae", 150), ("lare2", 100)):
        calibration = Detector.from_pretrained(result.detector_dirs[name]).config.calibration
        assert calibration["n_real"] == n and calibration["n_sources"] >= 3
        native = next(k for k in result.photo_table if k.startswith(f"{name} / real photos"))
        assert "unseen sources, native" in native and result.photo_table[native]["n"] == n
        row = result.photo_table[f"{name} / generated (unseen prompts)"]
        assert row["n"] == 6 and 0 <= row["flagged@fpr=0.01"] <= 1
        counts = result.flagged[name]
        photos = next(v for k, v in counts.items() if k.endswith("native"))["fpr_0.01"]
        assert sum(f for f, _ in photos["per_source"].values()) == photos["flagged"]
    # The recompressed photos are a second pass over new pixels: kept for ae, left to evaluate
    # for lare2, whose every image costs a LaRE pass (as its JPEG rows in the first table).
    assert [k for k in result.photo_table if k.startswith("ae /") and k.endswith("jpeg:85")]
    assert not [k for k in result.photo_table if k.startswith("lare2 /") and "jpeg" in k]
    assert not [k for k in result.table if k.startswith("lare2 /") and "jpeg" in k]
    # Held-out fakes score above held-out reals, for both methods and both kinds of fake.
    for row in (
        "ae / generated / 1-try",
        "ae / reconstructed (held-out) / 1-try",
        "lare2 / generated / 1-try",
        "lare2 / reconstructed (held-out) / 1-try",
    ):
        assert result.table[row]["auc"] >= MIN_AUC, (row, result.table[row]["auc"])
    # SynRIS: the generated images against the held-out reals a reverse image search matched
    matched = result.table["lare2 / generated / 1-try / SynRIS-matched reals"]
    assert matched["auc"] >= MIN_AUC
    assert "ae / generated / 1-try / unmatched reals" in result.table
    assert (tmp_path / "synris" / "ae" / "synris" / "pairs.csv").is_file()
    # The other family's images (same prompts and seeds, an SD3-format generator no detector
    # trained on) get their own rows in both tables.
    other_set = f"generated by {other.name} (other family)"
    for name in ("ae", "lare2"):
        assert 0 <= result.table[f"{name} / {other_set} / 1-try"]["auc"] <= 1
        assert result.photo_table[f"{name} / {other_set} (unseen prompts)"]["n"] == 6
    ours = sorted((tmp_path / "data" / "generated").glob("*.png"))
    theirs = sorted((tmp_path / "data" / "generated-other").glob("*.png"))
    assert [p.name for p in theirs] == [p.name for p in ours]
    assert theirs[0].read_bytes() != ours[0].read_bytes()
    assert "lare2 / generated / 1-try" in result.table
    assert "ae / generated / 10-try" in result.table
    assert "ae / reconstructed (held-out) / format control jpeg:90" in result.table
    assert result.table["ae / generated / 1-try"]["seconds_per_image"] > 0
    train = {p.stem.split("_")[0] for p in (tmp_path / "photos" / "train").glob("*.png")}
    held = {p.stem.split("_")[0] for p in (tmp_path / "photos" / "heldout").glob("*.png")}
    assert held and not train & held
    rows = (tmp_path / "scan.csv").read_text().splitlines()
    assert len(rows) == 1 + 7 and any("corrupt.jpg" in r for r in rows)
    assert (tmp_path / "reports" / "ae" / "metrics.json").is_file()


def test_a_method_from_a_new_package_joins_the_demo(throwaway_method, tmp_path):
    """A package outside ldmdetect that ships a demo recipe runs in the demo, end to end,
    with no edit elsewhere: its recipe trains it, the demo calibrates it with the recipe's
    views per image, evaluates it and names it in the tables as the recipe says."""
    name = throwaway_method()
    assert name in demo_recipes()
    config = DemoConfig(
        generator="tiny",
        input_size=32,
        train_crops_per_image=1,
        eval_size=64,
        eval_crops_per_image=2,
        generated_images=4,
        generation_steps=2,
        batch_size=8,
        real_train_crops_per_image=2,
        generated_train_images=4,
        perturbations=(),
        format_control=None,
        methods=(name,),
        synris=False,
        photo_limit=100,
        threads=None,
    )
    result = run_demo(tmp_path, config, log=lambda _: None)
    assert set(result.evaluations) == {name}
    label = f"{name} (1 epoch)"
    assert result.table[f"{label} / generated / 1-try"]["seconds_per_image"] > 0
    assert f"{label} / generated (unseen prompts)" in result.photo_table
    detector = Detector.from_pretrained(result.detector_dirs[name])
    assert len(detector.config.training["history"]) == 1
    assert detector.config.calibration["tries"] == 2 == detector.config.default_tries
    assert detector.config.calibration["n_real"] == 100
