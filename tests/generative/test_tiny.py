import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file
from transformers import CLIPTokenizer

from ldmdetect.generative.tiny import (
    build_tiny_autoencoder,
    build_tiny_scheduler,
    build_tiny_text_encoder,
    build_tiny_unet,
    byte_level_special_ids,
    write_tiny_pipeline,
)

COMPONENTS = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")


def _weights(directory):
    return {
        f"{path.parent.name}/{name}": tensor
        for path in sorted(directory.glob("*/*.safetensors"))
        for name, tensor in load_file(path).items()
    }


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline_dir):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate(pipe, seed, output_type="np"):
    return pipe(
        "a photo of a cat",
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(seed),
        output_type=output_type,
    ).images


def test_pipeline_directory_has_sd_layout_safetensors_and_is_small(tiny_pipeline_dir):
    index = json.loads((tiny_pipeline_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None]
    assert index["feature_extractor"] == [None, None]
    assert index["requires_safety_checker"] is False
    for name in COMPONENTS:
        assert (tiny_pipeline_dir / name).is_dir(), name
    assert len(list(tiny_pipeline_dir.glob("*/*.safetensors"))) == 3
    assert not list(tiny_pipeline_dir.rglob("*.bin"))
    total = sum(p.stat().st_size for p in tiny_pipeline_dir.rglob("*") if p.is_file())
    assert total < 2_000_000


def test_pipeline_loads_offline_and_generates_64px_deterministically(pipeline):
    assert isinstance(pipeline.tokenizer, CLIPTokenizer)
    first = _generate(pipeline, seed=0)
    assert first.shape == (1, 64, 64, 3)
    assert np.isfinite(first).all() and first.min() >= 0 and first.max() <= 1
    np.testing.assert_array_equal(first, _generate(pipeline, seed=0))


def test_pipeline_output_depends_on_the_seed(pipeline):
    first = _generate(pipeline, seed=0, output_type="latent")
    other = _generate(pipeline, seed=1, output_type="latent")
    assert first.shape == (1, 4, 8, 8)
    assert not torch.equal(first, other)


def test_same_seed_writes_same_weights_and_other_seed_differs(tmp_path, tiny_pipeline_dir):
    same = _weights(write_tiny_pipeline(tmp_path / "same", seed=0))
    reference = _weights(tiny_pipeline_dir)
    assert same.keys() == reference.keys()
    assert all(torch.equal(same[k], reference[k]) for k in same)
    other = _weights(write_tiny_pipeline(tmp_path / "other", seed=1))
    assert not all(torch.equal(other[k], reference[k]) for k in other)


def test_rewriting_a_directory_overwrites_it(tmp_path):
    write_tiny_pipeline(tmp_path, seed=1)
    files_before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    write_tiny_pipeline(tmp_path, seed=0)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == files_before
    seed0 = build_tiny_unet(seed=0).state_dict()
    written = load_file(tmp_path / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(written[k], seed0[k]) for k in seed0)


def test_builders_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_autoencoder(seed=5)
    build_tiny_unet(seed=5)
    build_tiny_text_encoder(seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_tiny_components_have_sd_shapes():
    vae = build_tiny_autoencoder()
    latents = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert latents.shape == (1, 4, 8, 8)
    unet = build_tiny_unet(cross_attention_dim=24)
    assert unet.config.sample_size * 8 == 64
    text_encoder = build_tiny_text_encoder(hidden_size=24)
    ids = torch.tensor([[*byte_level_special_ids()]])
    hidden = text_encoder(ids).last_hidden_state
    assert hidden.shape == (1, 2, 24)
    noise = unet(latents, 10, encoder_hidden_states=hidden).sample
    assert noise.shape == latents.shape


def test_tiny_scheduler_matches_sd_config():
    config = build_tiny_scheduler().config
    assert (config.beta_start, config.beta_end) == (0.00085, 0.012)
    assert config.beta_schedule == "scaled_linear"
    assert config.num_train_timesteps == 1000
    assert (config.clip_sample, config.set_alpha_to_one) == (False, False)
    assert (config.steps_offset, config.prediction_type) == (1, "epsilon")


def test_tokenizer_and_text_encoder_agree_on_special_ids(pipeline):
    bos, eos = byte_level_special_ids()
    ids = pipeline.tokenizer("a cat").input_ids
    assert ids[0] == bos and ids[-1] == eos
    config = pipeline.text_encoder.config
    assert (config.bos_token_id, config.eos_token_id, config.vocab_size) == (bos, eos, 514)
    assert config.max_position_embeddings == pipeline.tokenizer.model_max_length == 77


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_each_family_loads_in_its_diffusers_pipeline_and_generates_64px(family, tiny_family_dir):
    from ldmdetect.generative.families import get_family

    directory = tiny_family_dir(family)
    cls = get_family(family).pipeline_class()
    assert json.loads((directory / "model_index.json").read_text())["_class_name"] == cls.__name__
    assert not list(directory.rglob("*.bin"))
    total = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    assert total < 3_000_000
    pipe = cls.from_pretrained(directory)
    pipe.set_progress_bar_config(disable=True)

    def generate(seed):
        return pipe(
            "a photo of a cat",
            num_inference_steps=2,
            height=64,
            width=64,
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
        ).images

    first = generate(0)
    assert first.shape == (1, 64, 64, 3) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, generate(0))
    assert not np.array_equal(first, generate(1))


def test_t5_tokenizer_round_trips_and_ends_with_eos(tiny_family_dir):
    from transformers import T5TokenizerFast

    from ldmdetect.generative.tiny import t5_vocab_size

    tokenizer = T5TokenizerFast.from_pretrained(tiny_family_dir("flux") / "tokenizer_2")
    ids = tokenizer("a photo of a cat!").input_ids
    assert ids[-1] == tokenizer.eos_token_id == 1
    assert tokenizer.unk_token_id not in ids
    assert max(ids) < t5_vocab_size()
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a photo of a cat!"


def test_unknown_tiny_family_is_refused(tmp_path):
    from ldmdetect.generative.tiny import write_tiny_family_pipeline

    with pytest.raises(ValueError, match="unknown tiny family 'kandinsky'"):
        write_tiny_family_pipeline(tmp_path, "kandinsky")
