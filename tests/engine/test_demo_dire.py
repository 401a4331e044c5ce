"""The demo's dire recipe (not in the default methods), on the tiny generator."""

import json

from ldmdetect.engine.demo import DemoConfig, run_demo


def test_dire_recipe_runs_the_demo_chain(tmp_path):
    config = DemoConfig(
        generator="tiny",
        backbone="mobilenetv3_small_050",
        pretrained=False,
        input_size=32,
        train_crops_per_image=2,
        eval_size=64,
        eval_crops_per_image=2,
        generated_images=4,
        generation_steps=2,
        batch_size=8,
        methods=("dire",),
        perturbations=("jpeg:75",),
        dire_backbone="mobilenetv3_small_050",
        dire_pretrained=False,
        dire_input_size=48,
        dire_steps=2,
        lare_train_crops_per_image=2,
        lare_train_generated=8,
        dire_epochs=1,
        synris=False,
        threads=None,
    )
    assert "dire" not in DemoConfig().methods  # opt-in: it reconstructs every image
    result = run_demo(tmp_path, config, log=lambda _: None)
    assert set(result.evaluations) == {"dire"}
    label = "dire (2+2 DDIM steps)"  # the table names the steps it ran
    row = result.table[f"{label} / generated / 1-try"]
    assert 0.0 <= row["auc"] <= 1.0 and row["seconds_per_image"] > 0
    assert f"{label} / generated / jpeg:75, 1-try" in result.table  # its JPEG rows are kept
    saved = json.loads((tmp_path / "detectors" / "dire" / "config.json").read_text())
    # The official resize is recorded; on the demo's eval_size squares it changes no pixel.
    assert saved["feature"]["dire"] == {"image_size": 64, "steps": 2, "fit_short_side": True}
    assert saved["feature"]["space"] == "latent"  # the tiny generator is an LDM
    assert (tmp_path / "features" / "dire-train" / "cache.json").is_file()
