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


def test_the_full_size_components_are_sd15s(lare_batched, tmp_path: Path) -> None:
    """The path the GPU check runs (no --tiny): SD v1.5's architectures, built on the meta
    device here so that nothing is allocated."""
    import torch

    components = lare_batched.sd15_components(torch.device("meta"), torch.float32, tmp_path)
    assert components.unet.config.cross_attention_dim == 768
    assert components.vae.config.latent_channels == 4
    unet_parameters = sum(p.numel() for p in components.unet.parameters())
    assert 855e6 < unet_parameters < 866e6  # SD v1.5's UNet: 859.5 M
    assert components.tokenizer.model_max_length == 77
