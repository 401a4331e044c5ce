"""`demo --methods all`: every method's recipe in one run and one table (tiny generator)."""

from ldmdetect import methods
from ldmdetect.engine.demo import SUMMARY_COLUMNS, DemoConfig, demo_recipes, run_demo
from ldmdetect.engine.report import markdown_table
from ldmdetect.methods.ae.demo import AEDemo
from ldmdetect.methods.aeroblade.demo import AerobladeDemo
from ldmdetect.methods.dire.demo import DireDemo
from ldmdetect.methods.fakeinversion.demo import FakeInversionDemo
from ldmdetect.methods.lare2.demo import LaRE2Demo
from ldmdetect.methods.vfm_probe.demo import VFMProbeDemo

TINY = "mobilenetv3_small_050"
# Each recipe's type, so that a method's tiny settings below are its own recipe's.
SETTINGS = {
    "ae": AEDemo(backbone=TINY, pretrained=False, epochs=1),
    "lare2": LaRE2Demo(
        backbone=f"timm:{TINY}", pretrained=False, input_size=48, ensemble=2, epochs=1
    ),
    "aeroblade": AerobladeDemo(),
    "vfm-probe": VFMProbeDemo(backbone=f"timm:{TINY}", input_size=48),
    "fakeinversion": FakeInversionDemo(
        backbone=TINY, pretrained=False, input_size=48, steps=2, epochs=1
    ),
    "dire": DireDemo(backbone=TINY, pretrained=False, input_size=48, steps=2, epochs=1),
}


def test_every_method_lands_in_one_table(tmp_path):
    recipes = demo_recipes()
    assert set(recipes) == set(methods.list_methods())  # a registered method has a recipe
    assert {name: type(recipe) for name, recipe in recipes.items()} == {
        name: type(recipe) for name, recipe in SETTINGS.items()
    }
    config = DemoConfig(
        generator="tiny",
        methods=tuple(recipes),
        method_settings=SETTINGS,
        input_size=32,
        train_crops_per_image=2,
        eval_size=64,
        eval_crops_per_image=2,
        generated_images=4,
        generation_steps=2,
        batch_size=8,
        perturbations=(),
        format_control=None,
        real_train_crops_per_image=2,
        generated_train_images=6,
        threads=None,
        # Enough shipped photo crops to resolve the 1% threshold (99), not all 1,384.
        photo_limit=100,
        costly_photo_limit=100,
    )
    result = run_demo(tmp_path, config, log=lambda _: None)
    assert set(result.evaluations) == set(recipes)
    table = markdown_table(result.table, SUMMARY_COLUMNS, label="method / test set / inference")
    for name in recipes:
        assert f"| {name}" in table, name
    # every method also gets its SynRIS rows
    assert sum("SynRIS-matched reals" in row for row in result.table) == len(recipes)
