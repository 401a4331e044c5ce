"""The mini LDM recipe (recipes/mini_ldm/train.py): its defaults are the shipped model's, it
reproduces the shipped autoencoder's quality bar, writes the shipped layout, and resumes."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline
from safetensors import safe_open

from ldmdetect.generative.mini import mini_ldm_dir, mini_ldm_training_log

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "mini_ldm" / "train.py"
# The model card states this target; SD's own VAE scores ~24.5 dB on COCO at 256 px.
PSNR_TARGET_DB = 24.0


@pytest.fixture(scope="module")
def recipe(import_script) -> ModuleType:
    """The recipe script imported as a module (it is not part of the installed package)."""
    return import_script(RECIPE, "mini_ldm_train_recipe")


def tiny_config(recipe: ModuleType, **overrides):
    settings = dict(
        ae_block_out_channels=(32, 32),
        ae_steps=2,
        ae_batch_size=2,
        ae_eval_every=2,
        eval_patches=2,
        text_hidden_size=32,
        text_layers=1,
        text_heads=2,
        unet_block_out_channels=(32, 32),
        unet_cross_attention=(False, True),
        unet_attention_head_dim=8,
        unet_steps=2,
        unet_batch_size=2,
        latent_pool_size=4,
        warmup_steps=1,
        log_every=1,
    )
    return recipe.MiniLDMConfig(**(settings | overrides))


def test_recipe_defaults_are_the_shipped_models_logged_config(recipe: ModuleType) -> None:
    logged = mini_ldm_training_log()["config"]
    defaults = recipe.MiniLDMConfig().to_dict()
    # Speed-only fields are logged when the run knew them, and may differ without changing
    # the model; every other field must be the shipped model's.
    speed_only = set(recipe.SPEED_ONLY_FIELDS)
    # JSON has lists where the dataclass has tuples.
    as_logged = json.loads(json.dumps({k: v for k, v in defaults.items() if k not in speed_only}))
    assert as_logged == {k: v for k, v in logged.items() if k not in speed_only}
    assert recipe.MiniLDMConfig.from_dict(logged) == recipe.MiniLDMConfig()


def test_schedule_warms_up_then_decays_to_a_tenth(recipe: ModuleType) -> None:
    config = recipe.MiniLDMConfig(warmup_steps=10)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = recipe._lr_schedule(optimizer, config, total=110)
    rates = []
    for _ in range(110):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[5] == pytest.approx(0.5)
    assert max(rates) == pytest.approx(1.0)
    assert rates[60] == pytest.approx(0.55, abs=0.01)  # half-way down the cosine
    assert rates[-1] == pytest.approx(0.1, abs=0.001)
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))


def test_shipped_autoencoder_is_faithful_on_heldout_photos(recipe: ModuleType) -> None:
    config = recipe.MiniLDMConfig.from_dict(mini_ldm_training_log()["config"])
    heldout = recipe.heldout_patches(config, 32)
    vae = AutoencoderKL.from_pretrained(mini_ldm_dir() / "vae", torch_dtype=torch.float32)
    trained = recipe.psnr(heldout, recipe.reconstruct(vae, heldout)).mean().item()
    torch.manual_seed(0)
    random_vae = recipe.build_autoencoder(config).eval()
    untrained = recipe.psnr(heldout, recipe.reconstruct(random_vae, heldout)).mean().item()
    assert trained > untrained + 10
    assert trained >= PSNR_TARGET_DB


def _stored_dtypes(pipeline_dir: Path) -> dict[str, set[str]]:
    out = {}
    for path in pipeline_dir.glob("*/*.safetensors"):
        with safe_open(path, "pt") as f:
            out[path.parent.name] = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    return out


def _tensors(pipeline_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for path in sorted(pipeline_dir.glob("*/*.safetensors")):
        with safe_open(path, "pt") as f:
            out |= {f"{path.parent.name}/{k}": f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    return out


def test_train_mini_ldm_writes_the_shipped_layout(recipe: ModuleType, tmp_path: Path) -> None:
    out = recipe.train_mini_ldm(tiny_config(recipe), tmp_path / "mini", progress=False)
    log = json.loads((out / "training_log.json").read_text())
    assert log["config"]["ae_steps"] == 2
    assert len(log["unet"]["loss"]) == 2
    assert not (out / "_checkpoints").exists()
    # Big components in fp16, the text encoder in fp32, as the shipped copy.
    assert _stored_dtypes(out) == {"vae": {"F16"}, "unet": {"F16"}, "text_encoder": {"F32"}}
    vae_config = json.loads((out / "vae" / "config.json").read_text())
    assert vae_config["scaling_factor"] == pytest.approx(log["unet"]["scaling_factor"])
    # No dtype argument: every component must agree on fp32 and generate.
    pipeline = StableDiffusionPipeline.from_pretrained(out)
    pipeline.set_progress_bar_config(disable=True)
    assert {pipeline.vae.dtype, pipeline.unet.dtype, pipeline.text_encoder.dtype} == {torch.float32}
    image = pipeline(
        "a photo of a cat",
        num_inference_steps=1,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    # factor 2 here: the pipeline derives the output size from the UNet and VAE configs.
    assert image.shape == (1, 3, 64, 64)
    assert torch.isfinite(image).all()


def test_an_interrupted_run_resumes_to_the_same_weights(recipe: ModuleType, tmp_path: Path) -> None:
    config = tiny_config(
        recipe, ae_steps=4, unet_steps=4, checkpoint_every=2, ae_eval_every=2, bf16_autocast=False
    )
    whole = recipe.train_mini_ldm(config, tmp_path / "whole", progress=False)

    def crash_at(phase: str, step: int):
        def on_step(current_phase: str, current_step: int) -> None:
            if (current_phase, current_step) == (phase, step):
                raise recipe.Interrupted(f"{phase} step {step}")

        return on_step

    resumed = tmp_path / "resumed"
    # Crash after the autoencoder's step-2 checkpoint, then after the UNet's, then finish.
    for phase in ("autoencoder", "unet"):
        with pytest.raises(recipe.Interrupted):
            recipe.train_mini_ldm(config, resumed, progress=False, on_step=crash_at(phase, 3))
        assert (resumed / "_checkpoints" / phase / "recipe.json").is_file()
    recipe.train_mini_ldm(config, resumed, progress=False)

    expected, actual = _tensors(whole), _tensors(resumed)
    assert expected.keys() == actual.keys()
    for key, tensor in expected.items():
        assert torch.equal(tensor, actual[key]), key
    log_whole = json.loads((whole / "training_log.json").read_text())
    log_resumed = json.loads((resumed / "training_log.json").read_text())
    for phase, key in (("autoencoder", "loss"), ("autoencoder", "heldout_psnr"), ("unet", "loss")):
        assert log_resumed[phase][key] == log_whole[phase][key], (phase, key)


@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
    reason="torch.compile on CPU needs a C++ compiler",
)
def test_compiled_steps_train_the_same_model(recipe: ModuleType, tmp_path: Path) -> None:
    # --compile is a way of running the recipe: same noise, same maths, rounding apart.
    config = tiny_config(recipe, bf16_autocast=False)
    eager = recipe.train_mini_ldm(config, tmp_path / "eager", progress=False)
    compiled = recipe.train_mini_ldm(
        config, tmp_path / "compiled", progress=False, torch_compile=True
    )
    log_eager = json.loads((eager / "training_log.json").read_text())
    log_compiled = json.loads((compiled / "training_log.json").read_text())
    assert (log_eager["torch_compile"], log_compiled["torch_compile"]) == (False, True)
    assert log_compiled["config"] == log_eager["config"]
    for phase, key in (("autoencoder", "loss"), ("autoencoder", "kl"), ("unet", "loss")):
        assert log_compiled[phase][key] == pytest.approx(log_eager[phase][key], rel=1e-3), key
    expected, actual = _tensors(eager), _tensors(compiled)
    assert expected.keys() == actual.keys()
    for key, tensor in expected.items():
        torch.testing.assert_close(actual[key], tensor, atol=2e-3, rtol=1e-2, msg=key)


def test_a_changed_recipe_does_not_resume(recipe: ModuleType, tmp_path: Path) -> None:
    config = tiny_config(recipe, ae_steps=4, checkpoint_every=2, ae_eval_every=2)

    def crash(phase: str, step: int) -> None:
        if (phase, step) == ("autoencoder", 3):
            raise recipe.Interrupted

    with pytest.raises(recipe.Interrupted):
        recipe.train_mini_ldm(config, tmp_path / "run", progress=False, on_step=crash)
    steps: list[int] = []
    changed = tiny_config(recipe, ae_steps=4, checkpoint_every=2, ae_eval_every=2, ae_lr=1e-3)
    recipe.train_mini_ldm(
        changed,
        tmp_path / "run",
        progress=False,
        on_step=lambda phase, step: steps.append(step) if phase == "autoencoder" else None,
    )
    assert steps == [1, 2, 3, 4]  # started over: the checkpoint was another recipe's
