"""The demo's fakeinversion recipe (not in the default methods), on the tiny generator."""

import json

from ldmdetect.engine.demo import DemoConfig, run_demo


def test_fakeinversion_recipe_runs_the_demo_chain(tmp_path):
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
        methods=("fakeinversion",),
        perturbations=(),
        fakeinversion_backbone="mobilenetv3_small_050",
        fakeinversion_pretrained=False,
        fakeinversion_input_size=48,
        fakeinversion_steps=2,
        lare_train_crops_per_image=2,
        lare_train_generated=8,
        fakeinversion_epochs=1,
        synris=False,
        threads=None,
    )
    assert "fakeinversion" in DemoConfig().methods
    result = run_demo(tmp_path, config, log=lambda _: None)
    assert set(result.evaluations) == {"fakeinversion"}
    label = "fakeinversion (2+2 DDIM steps)"  # the table names the steps it ran
    row = result.table[f"{label} / generated / 1-try"]
    assert 0.0 <= row["auc"] <= 1.0 and row["seconds_per_image"] > 0
    # robustness rows would invert every image again; the demo leaves them to evaluate
    assert not [k for k in result.table if k.startswith(label) and "jpeg" in k]
    saved = json.loads((tmp_path / "detectors" / "fakeinversion" / "config.json").read_text())
    assert saved["feature"]["inversion"] == {"image_size": 64, "steps": 2, "guidance": 1.0}
    assert saved["feature"]["captioner"] == "fixed:a photo"
    assert (tmp_path / "features" / "fakeinversion-train" / "cache.json").is_file()
