"""benchmarks/lare_batched.py: the per-image loop computes batched LaRE's maps, and the
speed target is enforced."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def lare_batched(import_script, monkeypatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it reads feature_cost.py beside it
    return import_script(BENCHMARKS / "lare_batched.py", "lare_batched_benchmark")


def test_loop_and_batch_agree_and_the_report_is_written(lare_batched, tmp_path: Path) -> None:
    output = tmp_path / "lare.json"
    args = ["--tiny", "--device", "cpu", "--images", "3", "--batch", "2", "--image-size", "64"]
    report = lare_batched.main([*args, "--output", str(output)])
    assert json.loads(output.read_text()) == report
    assert report["images"] == 3 and report["batch"] == 2
    assert report["lare"]["image_size"] == 64 and report["lare"]["ensemble"] == 4
    # Same draws, same maps: only the batching differs (float32 on a CPU).
    assert report["max_relative_difference"] < 1e-5
    for path in ("batched", "loop"):
        assert report[path]["images_per_s"] > 0
    assert report["speedup"] == pytest.approx(
        report["loop"]["seconds"] / report["batched"]["seconds"], rel=0.01
    )
    with pytest.raises(SystemExit, match="below the 1e\\+09x asked for"):
        lare_batched.main([*args, "--min-speedup", "1e9"])
