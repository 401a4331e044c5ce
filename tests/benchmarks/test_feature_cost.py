"""benchmarks/feature_cost.py: every registered method has a cost spec, FLOPs are counted per
stage on the meta device, and a timed run writes the JSON and the README table."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ldmdetect import methods
from ldmdetect.generative.tiny import build_tiny_autoencoder, build_tiny_unet
from ldmdetect.methods.cost import (
    BLIP2_QUERY_TOKENS,
    CostSpec,
    Model,
    Pipeline,
    Stage,
    encode,
    greedy_caption,
    images,
    unet,
)
from ldmdetect.methods.dire.cost import DIRE_STEPS
from ldmdetect.methods.family_costs import FAMILY_COSTS, FLUX1_DEV_TRANSFORMER
from ldmdetect.methods.registry import _REGISTRY

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "feature_cost.py"


@pytest.fixture(scope="module")
def cost(import_script) -> ModuleType:
    """The benchmark script imported as a module (it is not part of the installed package)."""
    return import_script(SCRIPT, "feature_cost_benchmark")


def test_every_registered_method_has_a_cost_spec(cost: ModuleType) -> None:
    assert cost.missing_specs() == []
    covered = {spec.method for spec in cost.COST_SPECS.values()}
    assert set(methods.list_methods()) <= covered
    cost.check_specs()  # does not raise


def test_a_method_without_a_cost_spec_stops_the_benchmark(cost: ModuleType) -> None:
    ae = type(methods.get("ae"))
    unnamed = type("Unpriced", (ae,), {"name": "unpriced-method"})
    _REGISTRY[unnamed.name] = unnamed
    try:
        assert cost.missing_specs() == ["unpriced-method"]
        with pytest.raises(SystemExit, match="unpriced-method"):
            cost.check_specs()
        with pytest.raises(SystemExit, match="unpriced-method"):
            cost.main(["--flops-only", "--method", "ae", "--sizes", "64"])
    finally:
        del _REGISTRY[unnamed.name]


def test_a_method_from_a_new_package_brings_its_cost_spec(cost: ModuleType, throwaway_method):
    """The benchmark finds a third-party method package's spec through the registry alone."""
    name = throwaway_method()
    assert name in methods.list_methods()
    cost.check_specs()  # does not raise: the package's spec is found
    try:
        report = cost.main(["--flops-only", "--method", name, "--sizes", "64"])
        assert report["methods"][name]["sizes"]["64"]["flops_per_image"] > 0
    finally:
        cost.COST_SPECS.pop(name, None)


def test_flops_per_stage_on_meta(cost: ModuleType) -> None:
    """FLOPs follow the stages' calls and rows, and the LaRE / DIRE ratio is the stages'."""
    meta: dict = {}
    lare = cost.flops_report(cost.COST_SPECS["lare2"], 128, meta)
    stages = lare["stages"]
    assert set(stages) == {"vae_encode", "unet", "text_encoder", "classifier"}
    # The text encoder runs once per prompt: listed, not in the image's total.
    assert stages["text_encoder"]["flops_per_image"] is None
    assert stages["text_encoder"]["flops_per_prompt"] > 0
    per_image = [s["flops_per_image"] for s in stages.values() if s["per_image"]]
    assert lare["flops_per_image"] == sum(per_image)
    assert sum(s["flops_share"] for s in stages.values() if s["per_image"]) == pytest.approx(
        1, abs=1e-3
    )
    # The 4-draw ensemble is one UNet call on 4 rows: four times a single-row call.
    spec = cost.COST_SPECS["lare2"]
    pipeline = spec.pipeline(128)
    unet_stage = next(s for s in pipeline.stages if s.name == "unet")
    one_row = cost.stage_flops(pipeline, replace(unet_stage, rows=1), meta)
    assert stages["unet"]["flops_per_call"] == 4 * one_row
    # A sampling loop multiplies a pass by its steps (DIRE: 20 + 20 DDIM passes).
    dire = cost.flops_report(cost.COST_SPECS["dire"], 128)
    passes = dire["stages"]["unet_ddim_inversion"]
    assert passes["calls_per_image"] == DIRE_STEPS
    assert passes["flops_per_image"] == DIRE_STEPS * passes["flops_per_call"]
    assert (
        dire["stages"]["unet_ddim_reconstruction"]["flops_per_image"] == (passes["flops_per_image"])
    )
    methods_json = {
        "lare2": {"sizes": {"128": lare}},
        "dire": {"sizes": {"128": dire}},
    }
    ratio = cost.ratios(methods_json)["dire_over_lare2_128"]["flops"]
    expected = methods_json["dire"]["sizes"]["128"]["flops_per_image"] / lare["flops_per_image"]
    assert ratio == pytest.approx(expected, rel=1e-2)
    assert ratio > 10


def test_peak_flops_table(cost: ModuleType) -> None:
    assert cost.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989.4e12
    assert cost.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert cost.peak_bf16_flops("NVIDIA H200") == 989.4e12
    assert cost.peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert cost.peak_bf16_flops("Tesla T4", environ={}) is None
    # A GPU the table does not know takes its peak from the environment; the table wins.
    stated = {cost.PEAK_ENV: "362e12"}
    assert cost.peak_bf16_flops("NVIDIA L40S", environ=stated) == 362e12
    assert cost.peak_bf16_flops("NVIDIA H200", environ=stated) == 989.4e12
    with pytest.raises(SystemExit, match="LDMDETECT_PEAK_BF16_FLOPS='fast'"):
        cost.peak_bf16_flops("NVIDIA L40S", environ={cost.PEAK_ENV: "fast"})


@pytest.fixture
def tiny_spec(cost: ModuleType):
    """A spec of tiny SD-shaped models with every stage kind: rows, calls, a copied stage, a
    per-prompt stage and one estimated from another's FLOP rate under --quick."""

    def latents(rows, device, dtype):
        x = torch.randn(rows, 4, 8, 8, device=device, dtype=dtype)
        t = torch.full((rows,), 500, device=device, dtype=torch.long)
        return x, t, torch.randn(rows, 77, 32, device=device, dtype=dtype)

    vae_model = Model("tiny_vae", lambda: build_tiny_autoencoder(0), compile=("encoder",))
    unet_model = Model("tiny_unet", lambda: build_tiny_unet(0))

    def pipeline(size: int):
        stages = (
            Stage("vae_encode", vae_model.name, images(size), encode),
            Stage("unet_a", unet_model.name, latents, unet, rows=2, calls=3),
            Stage("unet_b", unet_model.name, latents, unet, rows=2, calls=3, same_as="unet_a"),
            Stage("unet_per_prompt", unet_model.name, latents, unet, per_image=False),
            Stage(
                "unet_estimated",
                unet_model.name,
                latents,
                unet,
                estimate_quick_cpu_from="unet_a",
            ),
        )
        return Pipeline((vae_model, unet_model), stages, "tiny")

    spec = CostSpec("tiny", "ae", "tiny SD-shaped models", "image side", 64, pipeline)
    cost.COST_SPECS[spec.name] = spec
    yield spec
    del cost.COST_SPECS[spec.name]


@pytest.mark.parametrize("quick", [False, True])
def test_timed_run_writes_json_and_table(
    cost: ModuleType, tiny_spec, tmp_path: Path, quick: bool, capsys
) -> None:
    output = tmp_path / "cost.json"
    args = ["--method", "tiny", "--sizes", "64", "--device", "cpu", "--batch", "2"]
    args += ["--output", str(output), "--markdown"] + (["--quick"] if quick else [])
    # The GPU path's channels-last models and inputs and bf16 autocast, here on the CPU.
    args += ["--channels-last", "on", "--autocast", "on"] if not quick else []
    report = cost.main(args)
    assert json.loads(output.read_text()) == json.loads(json.dumps(report))
    for key in ("device_name", "generator_dtype", "torch", "threads", "batch_sizes", "timing"):
        assert key in report
    assert report["batch_sizes"] == [1, 2]
    entry = report["methods"]["tiny"]
    assert entry["models"]["tiny_unet"]["parameters"] > 0
    assert "attention_processors" in entry["models"]["tiny_unet"]
    figures = entry["sizes"]["64"]
    stages = figures["stages"]
    for batch in ("1", "2"):
        assert figures["images_per_s"][batch] > 0
        assert figures["peak_memory_bytes"][batch] >= 0
        seconds = [stages[s]["seconds_per_image"][batch] for s in stages if s != "unet_per_prompt"]
        assert 1 / figures["images_per_s"][batch] == pytest.approx(sum(seconds), rel=1e-3)
        assert (
            stages["unet_b"]["seconds_per_image"][batch]
            == (stages["unet_a"]["seconds_per_image"][batch])
        )
    assert ("estimated" in stages["unet_estimated"]) == quick
    assert "mfu" not in stages["unet_a"]  # no GPU peak on a CPU
    assert entry["models"]["tiny_unet"].get("channels_last", False) == (not quick)
    assert report["autocast"] == (None if quick else "bfloat16")
    table = capsys.readouterr().out.split("| method |", 1)[1]
    assert "| tiny | 64 |" in table
    # --table prints the same table from the JSON (several files merge into one table).
    cost.main(["--table", str(output), str(output)])
    merged = capsys.readouterr().out
    assert merged.count("| tiny | 64 |") == 2
    # A GPU report names each stage's model-FLOP utilisation under the table.
    report["peak_bf16_flops"] = 1e12
    report["methods"]["tiny"]["sizes"]["64"]["stages"]["unet_a"]["mfu"] = {"1": 0.1, "2": 0.25}
    assert "tiny at 64 px (" in cost.markdown([report])
    assert "unet_a 25%" in cost.markdown([report])


def test_flops_only_covers_both_sizes_without_timing(cost: ModuleType, capsys) -> None:
    report = cost.main(["--flops-only", "--method", "ae", "--sizes", "64", "128"])
    sizes = report["methods"]["ae"]["sizes"]
    assert set(sizes) == {"64", "128"}
    assert sizes["128"]["flops_per_image"] == pytest.approx(
        4 * sizes["64"]["flops_per_image"], rel=0.05
    )
    assert "images_per_s" not in sizes["64"]
    assert report["methods"]["ae"]["timing"] == "FLOPs only"


def test_greedy_caption_decodes_with_the_cache(cost: ModuleType) -> None:
    """The captioning stage's decode loop (estimated, not run, by --quick on a CPU)."""
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        ffn_dim=32,
        num_attention_heads=2,
        word_embed_proj_dim=16,
        max_position_embeddings=128,
    )
    config._attn_implementation = "sdpa"
    lm = OPTForCausalLM(config).eval()
    prefix = torch.randn(2, BLIP2_QUERY_TOKENS + 1, 16)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        token = greedy_caption(lm, prefix)
    assert token.shape == (2, 1)
    # 1 prefill + 19 cached steps: the head runs on every position of the prefill and once
    # per step, so the loop's matmuls grow with the caption length.
    head = 2 * 16 * 64  # FLOPs of the output projection per position
    assert counter.get_total_flops() > head * 2 * (BLIP2_QUERY_TOKENS + 1 + 19)


FAMILIES = ("sdxl", "sd3.5-medium", "flux.1-dev")
GENERATOR_METHODS = ("lare2", "fakeinversion", "dire", "aeroblade")


def test_every_generator_method_has_a_row_per_family(cost: ModuleType) -> None:
    for family in FAMILIES:
        for method in GENERATOR_METHODS:
            spec = cost.COST_SPECS[f"{method}:{family}"]
            assert spec.method == method
            assert spec.sizes == (512, 1024)  # the families' native 1024 px, and 512
            assert not spec.time_cpu  # FLUX.1-dev alone is 48 GB in float32
    # The inversions walk the family's sampler: the methods' steps each way.
    stages = cost.COST_SPECS["fakeinversion:flux.1-dev"].pipeline(512).stages
    calls = {s.name: s.calls for s in stages}
    assert calls["denoiser_inversion"] == calls["denoiser_regeneration"] == 50
    stages = cost.COST_SPECS["dire:sd3.5-medium"].pipeline(512).stages
    calls = {s.name: s.calls for s in stages}
    assert calls["denoiser_inversion"] == calls["denoiser_reconstruction"] == DIRE_STEPS


def _flux_pass_estimate(config: dict, size: int) -> float:
    """FLOPs of one FLUX.1 transformer pass by hand: every token (2x2 latent patches and the
    512 T5 tokens) through each block's per-token weights (attention projections and the 4x
    MLP; the adaLN modulations run once per image), plus attention's two matmuls."""
    width = config["num_attention_heads"] * config["attention_head_dim"]
    double = 4 * width**2 + 2 * 4 * width**2  # q, k, v, out + the MLP, per stream
    single = width * (3 * width + 4 * width) + (width + 4 * width) * width
    tokens = (size // 16) ** 2 + 512
    blocks = config["num_layers"] + config["num_single_layers"]
    per_token = config["num_layers"] * double + config["num_single_layers"] * single
    return 2 * tokens * per_token + 4 * tokens**2 * width * blocks


def test_family_rows_scale_with_the_image_and_the_model(cost: ModuleType) -> None:
    """The denoiser's FLOPs per pass, counted on meta at the published sizes: about 4x from
    512 to 1024 px, FLUX.1-dev > SD3.5-medium > SDXL, and FLUX's pass as counted by hand."""
    meta: dict = {}
    per_pass: dict[tuple[str, int], int] = {}
    per_encode: dict[tuple[str, int], int] = {}
    for family in FAMILY_COSTS:
        spec = cost.COST_SPECS[f"lare2:{family.name}"]
        for size in (512, 1024):
            pipeline = spec.pipeline(size)
            stages = {s.name: s for s in pipeline.stages}
            one = replace(stages["denoiser"], rows=1)  # one row, not the 4-draw ensemble
            per_pass[family.name, size] = cost.stage_flops(pipeline, one, meta)
            per_encode[family.name, size] = cost.stage_flops(pipeline, stages["vae_encode"], meta)
    for name in FAMILIES:
        # 4x the latent cells; attention grows faster, FLUX's fixed 512 text tokens slower.
        assert 3.3 < per_pass[name, 1024] / per_pass[name, 512] < 5, name
        assert 4 <= per_encode[name, 1024] / per_encode[name, 512] < 4.6, name
    for size in (512, 1024):
        # FLUX: 11.9 B parameters on every token; SD3.5-medium: 2.24 B on every token; the
        # SDXL UNet's 2.57 B sit mostly at its two coarse levels (1/2 and 1/4 of the latent).
        assert per_pass["flux.1-dev", size] > 5 * per_pass["sd3.5-medium", size]
        assert per_pass["sd3.5-medium", size] > 1.3 * per_pass["sdxl", size]
        expected = _flux_pass_estimate(FLUX1_DEV_TRANSFORMER, size)
        assert per_pass["flux.1-dev", size] == pytest.approx(expected, rel=0.05)
    # The SD3.5 and FLUX.1 autoencoders are one architecture (16 latent channels).
    assert per_encode["sd3.5-medium", 512] == per_encode["flux.1-dev", 512]
    # SDXL's UNet pass costs more than SD 1.5's at the same size.
    sd15 = cost.COST_SPECS["lare2"].pipeline(512)
    sd15_unet = replace(next(s for s in sd15.stages if s.name == "unet"), rows=1)
    assert per_pass["sdxl", 512] > 1.5 * cost.stage_flops(sd15, sd15_unet, meta)


def test_family_rows_come_at_their_own_sizes_unless_sizes_are_given(cost: ModuleType) -> None:
    report = cost.main(["--flops-only", "--method", "aeroblade:sdxl"])
    assert set(report["methods"]["aeroblade:sdxl"]["sizes"]) == {"512", "1024"}
    report = cost.main(["--flops-only", "--method", "aeroblade:sdxl", "--sizes", "64"])
    assert set(report["methods"]["aeroblade:sdxl"]["sizes"]) == {"64"}
    # A CPU run counts them but does not time them (the models do not fit in float32).
    report = cost.main(
        ["--quick", "--method", "aeroblade:sdxl", "--sizes", "64", "--device", "cpu"]
    )
    entry = report["methods"]["aeroblade:sdxl"]
    assert "not timed on a CPU" in entry["timing"] and "images_per_s" not in entry["sizes"]["64"]
    assert "| aeroblade:sdxl | 64 |" in cost.markdown([report])
    assert "| FLOPs only |" in cost.markdown([report])
