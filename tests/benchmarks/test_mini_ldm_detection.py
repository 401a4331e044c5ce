"""benchmarks/mini_ldm_detection.py: rows aggregate over seeds as mean and sample std, every
ablation of ``--budget full`` is a valid training config, and the smoke budget runs the whole
benchmark (seeds, curve, ablation, figure) on the random tiny pipeline."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from ldmdetect.engine.demo import DemoConfig, demo_train_config

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mini_ldm_detection.py"


@pytest.fixture(scope="module")
def bench(import_script) -> ModuleType:
    """The benchmark script imported as a module (it is not part of the installed package)."""
    return import_script(SCRIPT, "mini_ldm_detection_benchmark")


def _seed(auc: float, tpr: float, interval: list[float]) -> dict:
    row = {"auc": auc, "ap": auc, "tpr@fpr=0.01": tpr, "seconds_per_image": 0.01}
    return {
        "table": {"ae / generated / 1-try": row},
        "intervals": {
            "ae / generated / 1-try": {"auc": interval, "tpr@fpr=0.01": [tpr - 0.1, tpr]}
        },
    }


def test_rows_are_mean_and_sample_std_over_seeds_with_each_seeds_interval(bench) -> None:
    per_seed = {0: _seed(0.9, 0.5, [0.8, 0.95]), 1: _seed(1.0, 0.9, [0.99, 1.0])}
    row = bench.aggregate(per_seed)["ae / generated / 1-try"]
    assert row["auc"]["mean"] == pytest.approx(0.95)
    assert row["auc"]["std"] == pytest.approx(np.std([0.9, 1.0], ddof=1), abs=1e-4)
    assert row["tpr@fpr=0.01"]["per_seed"] == [0.5, 0.9]
    assert [ci["auc"] for ci in row["ci95_per_seed"]] == [[0.8, 0.95], [0.99, 1.0]]


def test_every_full_ablation_overrides_the_demos_training(bench) -> None:
    """A misspelt override key fails here (``replace`` refuses it), not 20 minutes into a run;
    and each override really changes what the demo would train."""
    cfg = bench.BUDGETS["full"].demo
    base = demo_train_config(cfg, bench.CURVE_METHOD)
    for overrides in bench.BUDGETS["full"].ablations:
        train = bench._curve_train_config(cfg, **overrides)
        assert train != base, overrides
        assert json.dumps(overrides)  # the JSON states each ablation as given


def test_full_budget_differs_from_the_demo_only_in_size(bench) -> None:
    """The full budget's numbers speak for the demo's recipe: the same method settings
    (backbone, lr, epochs...), input size and batch size."""
    full, demo = bench.BUDGETS["full"].demo, DemoConfig()
    method = bench.CURVE_METHOD
    assert full.recipe(method) == demo.recipe(method)
    same = ("input_size", "eval_size", "batch_size")
    assert {k: getattr(full, k) for k in same} == {k: getattr(demo, k) for k in same}
    assert full.train_crops_per_image > demo.train_crops_per_image


def test_smoke_budget_runs_seeds_curve_ablation_and_figure(bench, tmp_path: Path) -> None:
    smoke = bench.BUDGETS["smoke"]
    budget = replace(
        smoke, ablations=({"augment": "none"},), demo=replace(smoke.demo, synris=False)
    )
    result = bench.run(tmp_path, budget, "tiny")
    rows = result["rows"]["ae / generated / 1-try"]
    assert len(rows["auc"]["per_seed"]) == 2 and rows["auc"]["std"] is not None
    assert all(ci and "auc" in ci for ci in rows["ci95_per_seed"])
    curve = result["learning_curve"]
    assert [p["crops_per_image"] for p in curve["by_pairs"]] == [2, 4]
    assert [p["epochs"] for p in curve["by_epochs"]] == [1, 2]
    for point in curve["by_pairs"] + curve["by_epochs"] + curve["ablations"]:
        for test_set in ("generated", "reconstructed (held-out)"):
            low, high = point[test_set]["tpr_ci95"]
            assert 0.0 <= low <= high <= 1.0
    assert curve["ablations"][0]["overrides"] == {"augment": "none"}
    assert "jpeg:75" in curve["ablations"][0]
    with Image.open(result["learning_curve_png"]) as figure:
        assert figure.size == (1080, 768)  # 9 x 6.4 in at 120 dpi: two rows (AUC, TPR)
