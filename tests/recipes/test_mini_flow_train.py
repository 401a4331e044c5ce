"""The mini flow recipe (recipes/mini_flow/train.py): its defaults are the shipped model's, it
writes a StableDiffusion3Pipeline that diffusers and ldmdetect load, and it resumes."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusion3Pipeline
from safetensors import safe_open

from ldmdetect.generative.families import pipeline_family
from ldmdetect.generative.mini import mini_flow_dir, mini_flow_training_log

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "mini_flow" / "train.py"
# The model card states this target, the mini LDM's.
PSNR_TARGET_DB = 24.0


@pytest.fixture(scope="module")
def recipe(import_script) -> ModuleType:
    """The recipe script imported as a module (it is not part of the installed package)."""
    return import_script(RECIPE, "mini_flow_train_recipe")


def tiny_config(recipe: ModuleType, **overrides):
    settings = dict(
        ae_block_out_channels=(32, 32),
        ae_steps=2,
        ae_batch_size=2,
        ae_eval_every=2,
        eval_patches=2,
        text_hidden_size=16,
        text_layers=1,
        text_heads=2,
        t5_width=32,
        text_length=8,
        transformer_layers=1,
        transformer_heads=2,
        transformer_head_dim=8,
        transformer_steps=2,
        transformer_batch_size=2,
        latent_pool_size=4,
        warmup_steps=1,
        log_every=1,
    )
    return recipe.MiniFlowConfig(**(settings | overrides))


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


def test_recipe_defaults_are_the_shipped_models_logged_config(recipe: ModuleType) -> None:
    logged = mini_flow_training_log()["config"]
    # JSON has lists where the dataclass has tuples.
    assert json.loads(json.dumps(recipe.MiniFlowConfig().to_dict())) == logged
    assert recipe.MiniFlowConfig.from_dict(logged) == recipe.MiniFlowConfig()


def test_config_rejects_shapes_the_architecture_cannot_take(recipe: ModuleType) -> None:
    with pytest.raises(ValueError, match="multiple of the autoencoder's downsampling factor 4"):
        recipe.MiniFlowConfig(patch_size=62)
    with pytest.raises(ValueError, match="not a multiple of the 2x2 patches"):
        recipe.MiniFlowConfig(patch_size=36, ae_small_patch_size=36)
    with pytest.raises(ValueError, match="narrower than the two CLIP towers"):
        recipe.MiniFlowConfig(t5_width=64, text_hidden_size=64)
    with pytest.raises(ValueError, match="unknown MiniFlowConfig field 'unet_steps'"):
        recipe.MiniFlowConfig.from_dict({"unet_steps": 1})


def test_autoencoder_has_sd3s_latent_layout(recipe: ModuleType) -> None:
    vae = recipe.build_autoencoder(recipe.MiniFlowConfig())
    assert vae.config.latent_channels == 16
    assert vae.quant_conv is None and vae.post_quant_conv is None
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert latents.shape == (1, 16, 16, 16)


def test_shipped_autoencoder_is_faithful_on_heldout_photos(recipe: ModuleType) -> None:
    config = recipe.MiniFlowConfig.from_dict(mini_flow_training_log()["config"])
    heldout = recipe.heldout_patches(config, 32)
    vae = AutoencoderKL.from_pretrained(mini_flow_dir() / "vae", torch_dtype=torch.float32)
    trained = recipe.psnr(heldout, recipe.reconstruct(vae, heldout)).mean().item()
    torch.manual_seed(0)
    random_vae = recipe.build_autoencoder(config).eval()
    untrained = recipe.psnr(heldout, recipe.reconstruct(random_vae, heldout)).mean().item()
    assert trained > untrained + 10
    assert trained >= PSNR_TARGET_DB


def test_train_mini_flow_writes_an_sd3_pipeline(recipe: ModuleType, tmp_path: Path) -> None:
    out = recipe.train_mini_flow(tiny_config(recipe), tmp_path / "flow", progress=False)
    log = json.loads((out / "training_log.json").read_text())
    assert log["config"]["transformer_steps"] == 2
    assert len(log["transformer"]["loss"]) == 2
    assert not (out / "_checkpoints").exists()
    assert _stored_dtypes(out) == {
        "vae": {"F16"},
        "transformer": {"F16"},
        "text_encoder": {"F32"},
        "text_encoder_2": {"F32"},
        "text_encoder_3": {"F32"},
    }
    vae_config = json.loads((out / "vae" / "config.json").read_text())
    assert vae_config["scaling_factor"] == pytest.approx(log["transformer"]["scaling_factor"])
    assert vae_config["shift_factor"] == pytest.approx(log["transformer"]["shift_factor"])
    assert (vae_config["use_quant_conv"], vae_config["use_post_quant_conv"]) == (False, False)
    assert pipeline_family(out).name == "sd3"
    # No dtype argument: every component must agree on fp32 and generate.
    pipeline = StableDiffusion3Pipeline.from_pretrained(out)
    pipeline.set_progress_bar_config(disable=True)
    models = ("vae", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
    assert {getattr(pipeline, name).dtype for name in models} == {torch.float32}
    image = pipeline(
        "a photo of a cat",
        num_inference_steps=2,
        guidance_scale=3.0,
        max_sequence_length=8,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    # factor 2 here: the pipeline derives the output size from the transformer and VAE configs.
    assert image.shape == (1, 3, 64, 64)
    assert torch.isfinite(image).all()

    recipe.write_sample_grid(out, out / "samples.png", per_prompt=1, num_inference_steps=1)
    recipe.write_model_card(out)
    card = (out / "README.md").read_text()
    assert f"{log['heldout_psnr_db']:.2f} dB" in card
    assert "StableDiffusion3Pipeline" in card


def test_prompt_embeddings_are_the_pipelines_own(recipe: ModuleType, tmp_path: Path) -> None:
    # Training conditions on what a plain pipeline call feeds the transformer: 77 CLIP tokens,
    # then text_length T5 tokens, at the T5 width; pooled: both CLIP projections.
    config = tiny_config(recipe)
    text = recipe.build_text_encoders(config, tmp_path)
    torch.manual_seed(0)
    pipeline = recipe.make_pipeline(
        recipe.build_autoencoder(config), recipe.build_transformer(config), text
    )
    tokens, pooled = recipe.encode_prompts(pipeline, ["a photo of a cat", ""], config.text_length)
    assert tokens.shape == (2, 77 + config.text_length, config.t5_width)
    assert pooled.shape == (2, 2 * config.text_hidden_size)
    assert not torch.equal(tokens[0], tokens[1])


def test_an_interrupted_run_resumes_to_the_same_weights(recipe: ModuleType, tmp_path: Path) -> None:
    config = tiny_config(
        recipe,
        ae_steps=4,
        transformer_steps=4,
        checkpoint_every=2,
        ae_eval_every=2,
        bf16_autocast=False,
    )
    whole = recipe.train_mini_flow(config, tmp_path / "whole", progress=False)

    def crash_at(phase: str, step: int):
        def on_step(current_phase: str, current_step: int) -> None:
            if (current_phase, current_step) == (phase, step):
                raise recipe.Interrupted(f"{phase} step {step}")

        return on_step

    resumed = tmp_path / "resumed"
    # Crash after the autoencoder's step-2 checkpoint, then after the transformer's, then finish.
    for phase in ("autoencoder", "transformer"):
        with pytest.raises(recipe.Interrupted):
            recipe.train_mini_flow(config, resumed, progress=False, on_step=crash_at(phase, 3))
        assert (resumed / "_checkpoints" / phase / "recipe.json").is_file()
    recipe.train_mini_flow(config, resumed, progress=False)

    expected, actual = _tensors(whole), _tensors(resumed)
    assert expected.keys() == actual.keys()
    for key, tensor in expected.items():
        assert torch.equal(tensor, actual[key]), key
    log_whole = json.loads((whole / "training_log.json").read_text())
    log_resumed = json.loads((resumed / "training_log.json").read_text())
    for phase, key in (
        ("autoencoder", "loss"),
        ("autoencoder", "heldout_psnr"),
        ("transformer", "loss"),
    ):
        assert log_resumed[phase][key] == log_whole[phase][key], (phase, key)


def test_card_only_needs_a_finished_run(recipe: ModuleType, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        recipe.main(["--output", str(tmp_path), "--card-only"])
    assert "training_log.json does not exist" in capsys.readouterr().err


def test_plain_attention_is_sdpas_maths(recipe: ModuleType) -> None:
    # A speed-only setting: the training processor computes what the shipped one does.
    config = tiny_config(recipe)
    torch.manual_seed(0)
    transformer = recipe.build_transformer(config).eval()
    inputs = dict(
        hidden_states=torch.randn(2, 16, 32, 32),
        encoder_hidden_states=torch.randn(2, 77 + config.text_length, config.t5_width),
        pooled_projections=torch.randn(2, 2 * config.text_hidden_size),
        timestep=torch.tensor([100.0, 900.0]),
    )
    with torch.no_grad():
        expected = transformer(**inputs).sample
        transformer.set_attn_processor(recipe.PlainJointAttnProcessor())
        actual = transformer(**inputs).sample
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)
    assert torch.nn.functional.scaled_dot_product_attention is not recipe._plain_attention
    assert "transformer_plain_attention" not in recipe._transformer_recipe(config)
