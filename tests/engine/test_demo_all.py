"""`demo --methods all`: every method's recipe in one run and one table (tiny generator)."""

from ldmdetect import methods
from ldmdetect.engine.demo import RECIPES, SUMMARY_COLUMNS, DemoConfig, run_demo
from ldmdetect.engine.report import markdown_table

TINY = "mobilenetv3_small_050"


def test_every_method_lands_in_one_table(tmp_path):
    assert set(RECIPES) == set(methods.list_methods())  # a registered method has a recipe
    config = DemoConfig(
        generator="tiny",
        methods=tuple(RECIPES),
        backbone=TINY,
        pretrained=False,
        input_size=32,
        train_crops_per_image=2,
        eval_size=64,
        eval_crops_per_image=2,
        generated_images=4,
        generation_steps=2,
        epochs=1,
        batch_size=8,
        perturbations=(),
        format_control=None,
        lare_backbone=f"timm:{TINY}",
        lare_pretrained=False,
        lare_input_size=48,
        lare_ensemble=2,
        lare_train_crops_per_image=2,
        lare_train_generated=6,
        lare_epochs=1,
        vfm_backbone=f"timm:{TINY}",
        vfm_input_size=48,
        fakeinversion_backbone=TINY,
        fakeinversion_pretrained=False,
        fakeinversion_input_size=48,
        fakeinversion_steps=2,
        fakeinversion_epochs=1,
        dire_backbone=TINY,
        dire_pretrained=False,
        dire_input_size=48,
        dire_steps=2,
        dire_epochs=1,
        threads=None,
    )
    result = run_demo(tmp_path, config, log=lambda _: None)
    assert set(result.evaluations) == set(RECIPES)
    table = markdown_table(result.table, SUMMARY_COLUMNS, label="method / test set / inference")
    for name in RECIPES:
        assert f"| {name}" in table, name
    # every method also gets its SynRIS rows
    assert sum("SynRIS-matched reals" in row for row in result.table) == len(RECIPES)
