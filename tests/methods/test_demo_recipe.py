import dataclasses

import numpy as np
import pytest
from PIL import Image

from ldmdetect import methods
from ldmdetect.engine.demo import DemoConfig, demo_train_config
from ldmdetect.engine.train_config import TrainConfig
from ldmdetect.io.augment import AugmentConfig
from ldmdetect.io.images import load_image, save_png
from ldmdetect.methods.demo_recipe import (
    PASSED_TRAIN_FIELDS,
    DemoRecipe,
    real_vs_generated_dir,
    write_crops,
)


@pytest.mark.parametrize("name", sorted(methods.list_methods()))
def test_every_method_ships_a_frozen_recipe_whose_fields_train(name):
    """Each built-in method's recipe is its own frozen settings, and what it trains with is
    a valid TrainConfig (a misspelt field fails here, not minutes into a demo)."""
    recipe = methods.get(name).demo_recipe()
    assert isinstance(recipe, DemoRecipe) and recipe.calibration_tries >= 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.calibration_tries = 3  # type: ignore[misc]
    train = demo_train_config(DemoConfig(), name)
    assert train.method == name and train.seed == DemoConfig().seed
    assert recipe.label(name).startswith(name)


@pytest.mark.parametrize("name", sorted(methods.list_methods()))
def test_a_recipe_field_named_like_a_train_config_field_is_what_the_demo_trains_with(name):
    """The passed names are TrainConfig's, and none of a recipe's fields named like a
    TrainConfig field is dropped on the way (ae's augment spec is converted, not passed)."""
    train_config = {f.name for f in dataclasses.fields(TrainConfig)}
    assert PASSED_TRAIN_FIELDS.issubset(train_config)
    recipe = methods.get(name).demo_recipe()
    train = demo_train_config(DemoConfig(), name)
    for field in dataclasses.fields(recipe):
        if field.name in train_config:
            value = getattr(recipe, field.name)
            if field.name == "augment":
                value = AugmentConfig.from_spec(value)
            assert getattr(train, field.name) == value, field.name


def test_a_recipe_must_say_how_it_trains():
    with pytest.raises(TypeError, match="training"):
        DemoRecipe()  # type: ignore[abstract]


def test_write_crops_is_seeded_and_keeps_what_is_written(tmp_path):
    rng = np.random.default_rng(0)
    photo = tmp_path / "cat.png"
    save_png(Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)), photo)
    first = write_crops([photo], tmp_path / "a", 32, 3, seed=1)
    again = write_crops([photo], tmp_path / "b", 32, 3, seed=1)
    crops = sorted(first.glob("*.png"))
    assert [p.name for p in crops] == ["cat_00.png", "cat_01.png", "cat_02.png"]
    assert all(load_image(p).size == (32, 32) for p in crops)
    for a, b in zip(crops, sorted(again.glob("*.png")), strict=True):
        assert np.array_equal(np.asarray(load_image(a)), np.asarray(load_image(b)))
    other = write_crops([photo], tmp_path / "c", 32, 3, seed=2)
    kept = np.asarray(load_image(crops[0]))
    assert not np.array_equal(kept, np.asarray(load_image(other / "cat_00.png")))
    # Written once: a second run into the same folder (a resumed demo) leaves the crops be.
    write_crops([photo], first, 32, 3, seed=2)
    assert np.array_equal(kept, np.asarray(load_image(crops[0])))


def test_the_shared_real_vs_generated_folder_is_named_for_what_it_holds(tmp_path):
    assert real_vs_generated_dir(tmp_path) == tmp_path / "data" / "real-vs-generated"
    legacy = tmp_path / "data" / "lare2-train"
    legacy.mkdir(parents=True)  # an output folder from before the rename: reused, not redone
    assert real_vs_generated_dir(tmp_path) == legacy
