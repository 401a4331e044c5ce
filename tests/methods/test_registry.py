import dataclasses
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from ldmdetect import methods
from ldmdetect.config import DetectorConfig
from ldmdetect.features.cache import FeatureCache
from ldmdetect.io.identity import image_id
from ldmdetect.io.images import pil_to_uint8, uint8_to_pil
from ldmdetect.methods.ae import AEReconstruction
from ldmdetect.methods.batch import view_windows
from ldmdetect.methods.defaults import MethodDefaults
from ldmdetect.methods.registry import FeatureStep, register_method


def test_get_returns_the_registered_method():
    assert isinstance(methods.get("ae"), AEReconstruction)
    assert "ae" in methods.list_methods()


def test_unknown_method_lists_known_ones_and_suggests():
    with pytest.raises(ValueError, match=r"unknown method 'aee'.*Did you mean 'ae'.*Known"):
        methods.get("aee")


def test_defaults_are_typed_frozen_and_validated():
    defaults = methods.get("lare2").default_cfg
    assert (defaults.optimizer, defaults.lr, defaults.weight_decay, defaults.grad_clip) == (
        "adam",
        1e-4,
        0.0,
        5.0,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        defaults.lr = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError, match="learning_rate"):
        MethodDefaults(learning_rate=1e-4)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="optimizer must be one of"):
        MethodDefaults(optimizer="sgd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lr must be > 0"):
        MethodDefaults(lr=0.0)
    assert MethodDefaults().learning_rate(pretrained=True) == 1e-4
    assert MethodDefaults().learning_rate(pretrained=False) == 1e-3
    assert MethodDefaults(lr=3e-4).learning_rate(pretrained=False) == 3e-4


def test_the_former_defaults_dict_is_a_deprecated_view_of_default_cfg():
    method = methods.get("dire")
    with pytest.deprecated_call():
        defaults = method.defaults()
    assert defaults["training"] == {"optimizer": "adam", "lr": 1e-4, "wd": 0.0, "grad_clip": 0.0}
    assert (defaults["backbone"], defaults["input_size"]) == ("resnet50", 224)
    assert defaults["feature"] == method.Settings().to_feature()


def test_a_method_declaring_the_old_default_config_dict_still_registers_typed():
    class Legacy(methods.Method):
        name = "legacy-defaults-probe"
        summary = "probe"
        default_config: ClassVar[dict] = {
            "backbone": "resnet18",
            "input_size": 96,
            "pretrained": True,
            "training": {"optimizer": "adam", "lr": 2e-4, "wd": 0.01, "grad_clip": 3.0},
        }

    try:
        with pytest.warns(DeprecationWarning, match="default_cfg = MethodDefaults"):
            methods.register_method(Legacy)
        assert Legacy.default_cfg == MethodDefaults(
            backbone="resnet18",
            input_size=96,
            pretrained=True,
            optimizer="adam",
            lr=2e-4,
            weight_decay=0.01,
            grad_clip=3.0,
        )
    finally:
        methods.unregister_method("legacy-defaults-probe")

    class Misspelt(methods.Method):
        name = "misspelt-defaults-probe"
        summary = "probe"
        default_config: ClassVar[dict] = {"training": {"learning_rate": 1e-4}}

    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="misspelt"):
        methods.register_method(Misspelt)
    assert "misspelt-defaults-probe" not in methods.list_methods()


@pytest.mark.parametrize("name", ["lare2", "fakeinversion"])
def test_a_feature_step_without_generator_components_names_the_method(name):
    config = DetectorConfig(method=name)
    with pytest.raises(ValueError, match=rf"{name} needs generator components \(--pipeline"):
        methods.get(name).build_features(config)
    given = {"unet": {"id": "local/unet"}}
    assert methods.get(name).generator_sources(given) == given


def test_cost_specs_and_demo_recipe_are_found_beside_the_method():
    for name in methods.list_methods():
        method = methods.get(name)
        package = type(method).__module__.rpartition(".")[0]
        assert method.cost_specs()[0].method == name
        recipe = method.demo_recipe()
        assert type(recipe).__module__ == f"{package}.demo"


def _package(root, name, files):
    (root / name).mkdir()
    for file, text in {"__init__.py": "", **files}.items():
        (root / name / file).write_text(text)


METHOD_MODULE = """
from ldmdetect.methods.registry import Method


class Bare(Method):
    name = "bare"
    summary = "a method package with nothing beside its method module"

    def build_model(self, config, *, pretrained=False):
        raise NotImplementedError

    def transform(self, config, *, tries=1, train=False, augment=None):
        raise NotImplementedError

    def logits(self, model, batch, config):
        raise NotImplementedError
"""

TWO_RECIPES = """
from dataclasses import dataclass

from ldmdetect.methods.demo_recipe import DemoRecipe


@dataclass(frozen=True)
class First(DemoRecipe):
    pass


@dataclass(frozen=True)
class Second(DemoRecipe):
    pass
"""


def test_a_package_without_cost_or_demo_has_none_and_two_recipes_are_an_error(
    tmp_path, monkeypatch
):
    monkeypatch.syspath_prepend(str(tmp_path))
    _package(tmp_path, "bare_method_pkg", {"method.py": METHOD_MODULE})
    _package(tmp_path, "two_recipes_pkg", {"method.py": METHOD_MODULE, "demo.py": TWO_RECIPES})
    import importlib

    bare = importlib.import_module("bare_method_pkg.method").Bare()
    assert bare.cost_specs() == ()
    assert bare.demo_recipe() is None
    doubled = importlib.import_module("two_recipes_pkg.method").Bare()
    with pytest.raises(TypeError, match=r"two_recipes_pkg\.demo must define exactly one .*First"):
        doubled.demo_recipe()


def test_a_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="already registered"):
        register_method(AEReconstruction)


def _gradient(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height))
    image.putdata([(x % 256, y % 256, (x + y) % 256) for y in range(height) for x in range(width)])
    return image


def test_ae_prepare_one_try_is_the_center_crop():
    config = DetectorConfig(input_size=32)
    crops = methods.get("ae").prepare(config, tries=1)(_gradient(100, 60))["crops"]
    assert crops.shape == (1, 3, 32, 32) and crops.dtype == torch.uint8
    # center box of a 100x60 image: left 34, top 14
    assert crops[0, 0, 0, 0].item() == 34 and crops[0, 1, 0, 0].item() == 14


def test_ae_prepare_ten_tries_are_seeded_random_crops():
    config = DetectorConfig(input_size=32)
    method = methods.get("ae")
    first = method.prepare(config, tries=10)(_gradient(100, 60))["crops"]
    again = method.prepare(config, tries=10)(_gradient(100, 60))["crops"]
    assert first.shape == (10, 3, 32, 32)
    assert torch.equal(first, again)
    assert len({(c[0, 0, 0].item(), c[1, 0, 0].item()) for c in first}) > 1


def test_ae_prepare_upscales_images_smaller_than_the_input():
    sample = methods.get("ae").prepare(DetectorConfig(input_size=32))(_gradient(20, 10))
    crops = sample["crops"]
    assert crops.shape == (1, 3, 32, 32)


def test_uint8_conversions_are_exact_inverses():
    image = _gradient(17, 9)
    assert list(uint8_to_pil(pil_to_uint8(image)).getdata()) == list(image.getdata())


def test_samples_carry_a_content_id_and_the_prompt(tmp_path):
    config = DetectorConfig(input_size=16, feature={"prompt_template": "a photo of a {class}"})
    prepare = methods.get("ae").prepare(config, content_id=True)
    image = _gradient(40, 30)
    assert prepare(image)["id"] == image_id(image)
    # The id hashes pixels: the same picture under two names shares it; other pixels do not.
    assert prepare(image)["id"] == prepare(image.copy())["id"]
    assert prepare(image)["id"] != prepare(_gradient(41, 30))["id"]
    assert prepare(image, class_name="tench")["prompt"] == "a photo of a tench"
    assert prepare(image)["prompt"] == ""
    (tmp_path / "x.txt").write_text("  a caption \n")
    assert prepare(image, path=tmp_path / "x.png", class_name="tench")["prompt"] == "a caption"


def test_view_windows_cut_and_flip_each_views_window_image_major():
    maps = torch.arange(2 * 2 * 8 * 8, dtype=torch.float32).view(2, 2, 8, 8)
    batch = {
        "offsets": torch.tensor([[[0, 0], [4, 2]], [[2, 4], [0, 0]]]),
        "flips": torch.tensor([[False, True], [False, False]]),
    }
    windows = view_windows(maps, batch, 4)
    assert windows.shape == (4, 2, 4, 4)
    torch.testing.assert_close(windows[0], maps[0, :, 0:4, 0:4])
    torch.testing.assert_close(windows[1], maps[0, :, 4:8, 2:6].flip(-1))
    torch.testing.assert_close(windows[2], maps[1, :, 2:6, 4:8])
    # Offsets are in pixels; on a grid `factor` times coarser they are divided by it.
    coarse = view_windows(maps, batch, 2, factor=2)
    torch.testing.assert_close(coarse[1], maps[0, :, 2:4, 1:3].flip(-1))
    torch.testing.assert_close(coarse[2], maps[1, :, 1:3, 2:4])


@pytest.mark.parametrize(
    ("name", "feature", "uncached", "cached"),
    [
        ("ae", {}, False, False),  # pixels only: nothing reads an id
        ("vfm-probe", {}, False, True),  # an id only keys the cache
        ("dire", {}, False, True),
        ("fakeinversion", {}, False, True),
        ("lare2", {}, True, True),  # the UNet's noise is seeded by the id
        ("lare2", {"guidance": "none"}, False, False),  # no feature step at all
        ("aeroblade", {}, True, True),  # the autoencoders' noise is seeded by the id
    ],
)
def test_content_id_only_where_a_feature_step_reads_it(name, feature, uncached, cached):
    method = methods.get(name)
    config = DetectorConfig(method=name, feature=feature)
    assert method.needs_content_id(config, cached=False) is uncached
    assert method.needs_content_id(config, cached=True) is cached
    # With no say, a sample carries what a cached run (extraction, training) needs.
    sample = method.prepare(config)(_gradient(96, 96))
    assert ("id" in sample) is cached


def test_a_method_overriding_build_features_itself_still_keys_its_cache():
    """Methods from other packages written before ``feature_step`` override
    ``build_features``: their cached features still need the content id."""

    class OwnBuild(AEReconstruction):
        def build_features(self, config, *, device="auto", components=None):
            return None

    config = DetectorConfig(method="ae")
    assert OwnBuild().needs_content_id(config, cached=True)
    assert not OwnBuild().needs_content_id(config, cached=False)
    assert not AEReconstruction().needs_content_id(config, cached=True)


def test_pixel_only_samples_skip_the_hash():
    sample = methods.get("ae").prepare(DetectorConfig(input_size=16))(_gradient(40, 30))
    assert set(sample) == {"crops", "prompt"}


class _MeanColour(FeatureStep):
    """A feature step small enough to write out: each image's mean colour."""

    keys = ("mean",)

    def settings(self) -> dict:
        return {"feature": "mean colour"}

    def __call__(self, batch):
        return {"mean": batch["crops"].float().mean(dim=(1, 3, 4))}


def test_features_without_ids_are_computed_but_never_cached(tmp_path):
    images = [_gradient(40, 30), _gradient(30, 40)]
    config = DetectorConfig(input_size=16)
    ae = methods.get("ae")
    with_ids = ae.collate([ae.prepare(config, content_id=True)(i) for i in images])
    without = ae.collate([ae.prepare(config, content_id=False)(i) for i in images])
    step = _MeanColour()
    expected = step.add_to(with_ids)["mean"]
    assert torch.equal(step.add_to(without)["mean"], expected)
    cache = FeatureCache(tmp_path / "cache", settings=step.settings())
    with pytest.raises(ValueError, match="no content id"):
        step.add_to(without, cache)
    assert torch.equal(step.add_to(with_ids, cache)["mean"], expected)
    assert set(cache.keys()) == {image_id(i) for i in images}


def test_binary_scores_are_unchanged_and_probabilities_cover_both_classes():
    """One logit: the score is sigmoid(logit) in float64, exactly as before; the per-class
    probabilities are (1 - p, p). Two logits (lare2): the softmax's second column."""
    assert all(methods.get(n).classes == ("real", "generated") for n in methods.list_methods())
    ae, lare2 = methods.get("ae"), methods.get("lare2")
    one = torch.randn(4, 3) * 20
    assert torch.equal(ae.scores(one), torch.sigmoid(one.double()))
    assert torch.equal(ae.scores(one[..., None]), ae.scores(one))  # (B, T, 1) reads as (B, T)
    probabilities = ae.probabilities(one)
    assert probabilities.shape == (4, 3, 2) and probabilities.dtype == torch.float64
    assert torch.equal(probabilities[..., 1], ae.scores(one))
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(4, 3, dtype=torch.float64))
    two = torch.randn(4, 3, 2)
    assert torch.equal(lare2.scores(two), two.double().softmax(dim=-1)[..., 1])
    # aeroblade's score is a distance: no probabilities
    with pytest.raises(NotImplementedError, match="distance"):
        methods.get("aeroblade").probabilities(torch.zeros(2, 1))


def test_a_family_heads_classes_come_from_its_config_and_its_score_is_one_minus_p_real():
    ae = methods.get("ae")
    assert ae.attributes_families and not methods.get("lare2").attributes_families
    assert ae.classes_for(DetectorConfig()) == ("real", "generated")
    families = DetectorConfig(families=("sd-4ch", "flux-16ch"))
    assert ae.classes_for(families) == ("real", "sd-4ch", "flux-16ch")
    assert methods.get("lare2").classes_for(families) == ("real", "generated")
    three = torch.randn(4, 2, 3)
    p = three.double().softmax(dim=-1)
    torch.testing.assert_close(ae.probabilities(three), p)
    torch.testing.assert_close(ae.scores(three), 1 - p[..., 0])  # not P(classes[1])
    labels = torch.tensor([0.0, 1.0, 2.0, 1.0])
    torch.testing.assert_close(
        ae.loss(three[:, 0], labels),
        torch.nn.functional.cross_entropy(three[:, 0], labels.long()),
    )


def test_explain_is_one_hook_with_nothing_to_show_by_default():
    """aeroblade, lare2 and ae show evidence through ``Method.explain``; the others inherit
    its None, which callers (the detector, the service) read instead of asking which method."""
    showing = {n for n in methods.list_methods() if methods.get(n).explains}
    assert {"aeroblade", "lare2", "ae"} <= showing and "dire" not in showing
    dire = methods.get("dire")
    assert dire.explain(None, {}, DetectorConfig(), None) is None


def test_no_module_outside_methods_imports_a_method_package():
    """Method knowledge stays in the method's package: the engine, CLI, service and detector
    reach a method through the registry only (a default naming one is a string, not an
    import), so adding or removing a method package edits nothing there."""
    import ast
    from pathlib import Path

    import ldmdetect

    root = Path(ldmdetect.__file__).parent
    packages = {p.parent.name for p in (root / "methods").glob("*/__init__.py")}
    found = []
    for path in root.rglob("*.py"):
        if path.is_relative_to(root / "methods"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                parts = name.split(".")
                if parts[:2] == ["ldmdetect", "methods"] and parts[2:3] and parts[2] in packages:
                    found.append(f"{path.relative_to(root)}: {name}")
    assert packages >= {"ae", "aeroblade"}
    assert found == []


def test_a_method_that_cannot_judge_autoencoders_says_so():
    with pytest.raises(ValueError, match="'ae' cannot judge which autoencoder"):
        methods.get("ae").judge_sources([{"id": "x"}], 64)


def test_prepare_refuses_an_augmentation_the_transform_would_not_apply() -> None:
    """Training views and pixel augmentation are two settings: an augmentation asked outside
    training, or of a method whose features come from the un-augmented image, is an error."""
    from ldmdetect.io.augment import AugmentConfig

    config = DetectorConfig(input_size=32)
    with pytest.raises(ValueError, match="training views only"):
        methods.get("ae").prepare(config, augment=AugmentConfig())
    with pytest.raises(ValueError, match="'lare2' does not augment pixels"):
        methods.get("lare2").prepare(config, train=True, augment=AugmentConfig())


def test_ae_training_views_are_random_crops_with_or_without_augmentation() -> None:
    """train=True draws one random view from the rng whether or not pixels are augmented;
    without train the view is the deterministic center crop."""
    rng_image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    image = Image.fromarray(rng_image)
    ae = methods.get("ae")
    config = DetectorConfig(input_size=32)
    plain = ae.transform(config, train=True)
    views = {plain(image, np.random.default_rng(s))["crops"].numpy().tobytes() for s in range(6)}
    assert len(views) > 1  # random: the rng moves the crop
    center = ae.transform(config)
    assert all(
        torch.equal(center(image, np.random.default_rng(s))["crops"], center(image)["crops"])
        for s in range(3)
    )
