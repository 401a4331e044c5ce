"""benchmarks/fakeinversion_ablation.py: every variant trains, is scored on both families'
images with its reference on the same images, and the variants really differ (a tiny SD
pipeline as A, a tiny SD3 one as B)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench(import_script) -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))  # it reads cross_family.py beside it
        yield import_script(BENCHMARKS / "fakeinversion_ablation.py", "fi_ablation_benchmark")


def test_variant_config_changes_only_the_fakeinversion_recipe(bench) -> None:
    cfg = bench.variant_config(bench.BASE, {"steps": 10, "residual": True})
    recipe = cfg.recipe("fakeinversion")
    assert (recipe.steps, recipe.residual) == (10, True)
    assert cfg.methods == ("fakeinversion",)
    assert cfg.recipe("ae") == bench.BASE.recipe("ae")
    fields = recipe.train_fields(cfg)
    assert fields["feature"]["residual"] is True
    assert fields["feature"]["inversion"]["steps"] == 10
    assert "residual" not in bench.BASE.recipe("fakeinversion").train_fields(cfg)["feature"]


def test_every_variant_is_scored_against_its_reference(
    bench, tiny_pipeline_dir: Path, tiny_family_dir, tmp_path: Path
) -> None:
    bench.VARIANTS["tiny-steps"] = {
        "steps": 2,
        "epochs": 1,
        "backbone": "resnet10t",
        "pretrained": False,
        "input_size": 32,
    }
    bench.VARIANTS["tiny-residual"] = bench.VARIANTS["tiny-steps"] | {"residual": True}
    cfg = replace(
        bench.QUICK,
        eval_size=32,
        generated_images=4,
        generated_train_images=4,
        generation_steps=2,
        real_train_crops_per_image=1,
        batch_size=4,
    )
    try:
        result = bench.run(
            tmp_path,
            cfg,
            ["tiny-steps", "tiny-residual"],
            str(tiny_pipeline_dir),
            str(tiny_family_dir("sd3")),
            heldout_crops=2,
            n_boot=20,
            log=lambda _: None,
        )
    finally:
        del bench.VARIANTS["tiny-steps"], bench.VARIANTS["tiny-residual"]
    assert result["n_fake"] == {"same family": 4, "other family": 4}
    rows = result["variants"]
    assert set(rows) == {"tiny-steps", "tiny-residual"}
    for row in rows.values():
        for part in ("learned", "reference"):
            assert set(row[part]) == {"same family", "other family"}
            for metrics in row[part].values():
                assert 0.0 <= metrics["auc"] <= 1.0
                assert metrics["n_real"] == result["n_real"] > 0
        for test, diff in row["learned_minus_reference"].items():
            expected = row["learned"][test]["auc"] - row["reference"][test]["auc"]
            assert diff["auc_difference"] == pytest.approx(expected, abs=2e-4)
    # Same steps: one reference; the residual variant's detector has 12 input channels.
    assert rows["tiny-steps"]["reference"] == rows["tiny-residual"]["reference"]
    config = (tmp_path / "detectors" / "tiny-residual" / "config.json").read_text()
    assert '"residual": true' in config
