import shutil

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from ldmdetect.generative.components import (
    COMPONENT_NAMES,
    SDComponents,
    load_sd_components,
    vae_scale_factor,
)
from ldmdetect.generative.loading import ComponentLoadError, ComponentSource

MISSING_HUB_ID = "ldmdetect-tests/no-such-model"


@pytest.fixture(scope="module")
def components(tiny_pipeline_dir) -> SDComponents:
    return load_sd_components(tiny_pipeline_dir, device="cpu")


def test_loads_every_component_and_records_its_source(components, tiny_pipeline_dir):
    assert isinstance(components.vae, AutoencoderKL)
    assert isinstance(components.unet, UNet2DConditionModel)
    assert isinstance(components.text_encoder, CLIPTextModel)
    assert isinstance(components.tokenizer, CLIPTokenizer)
    assert isinstance(components.scheduler, DDPMScheduler)
    assert components.device == torch.device("cpu")
    assert components.dtype == torch.float32
    assert not components.unet.training
    assert not any(p.requires_grad for p in components.unet.parameters())
    assert components.sources == {
        name: ComponentSource(str(tiny_pipeline_dir), subfolder=name).to_dict()
        for name in COMPONENT_NAMES
    }


def test_scheduler_is_the_pipelines_forward_process(components, tiny_pipeline_dir):
    shipped = DDIMScheduler.from_pretrained(tiny_pipeline_dir, subfolder="scheduler")
    torch.testing.assert_close(components.scheduler.alphas_cumprod, shipped.alphas_cumprod)
    assert components.scheduler.config.prediction_type == shipped.config.prediction_type


def test_only_requested_components_load(tiny_pipeline_dir):
    loaded = load_sd_components(
        tiny_pipeline_dir, device="cpu", dtype=torch.bfloat16, names=("vae", "scheduler")
    )
    assert loaded.unet is None and loaded.text_encoder is None and loaded.tokenizer is None
    assert set(loaded.sources) == {"vae", "scheduler"}
    assert loaded.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="tokenizer and text_encoder"):
        loaded.encode_prompts(["a photo"])
    with pytest.raises(ValueError, match="unknown component"):
        load_sd_components(tiny_pipeline_dir, device="cpu", names=("vae", "safety_checker"))


def test_encode_prompts_matches_the_pipelines_prompt_encoding(components):
    prompts = ["a photo of a cat", "", "a photo of a dog"]
    embeddings = components.encode_prompts(prompts)
    tokenizer, text_encoder = components.tokenizer, components.text_encoder
    assert embeddings.shape == (3, tokenizer.model_max_length, text_encoder.config.hidden_size)
    ids = tokenizer(
        prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        expected = text_encoder(ids)[0]
    torch.testing.assert_close(embeddings, expected)


def test_each_distinct_prompt_runs_through_the_text_encoder_once(tiny_pipeline_dir):
    components = load_sd_components(
        tiny_pipeline_dir, device="cpu", names=("text_encoder", "tokenizer")
    )
    encoded_rows: list[int] = []

    def count_rows(module, args, kwargs):
        input_ids = args[0] if args else kwargs["input_ids"]
        encoded_rows.append(input_ids.shape[0])

    components.text_encoder.register_forward_pre_hook(count_rows, with_kwargs=True)
    first = components.encode_prompts(["a cat", "a dog", "a cat", "a cat"])
    assert sum(encoded_rows) == 2
    torch.testing.assert_close(first[0], first[2], rtol=0, atol=0)
    assert not torch.equal(first[0], first[1])
    second = components.encode_prompts(["a dog", "a bird", "a cat"])
    assert sum(encoded_rows) == 3  # only "a bird" is new
    torch.testing.assert_close(second[0], first[1], rtol=0, atol=0)
    assert components.encode_prompts([]).shape[0] == 0
    with pytest.raises(TypeError, match="single string"):
        components.encode_prompts("a cat")


def test_unreachable_hub_id_raises_component_load_error(source_error):
    with pytest.raises(ComponentLoadError) as info:
        load_sd_components(MISSING_HUB_ID, device="cpu", names=("vae",))
    source_error(info, MISSING_HUB_ID, local=False)
    with pytest.raises(ComponentLoadError, match="VAE config") as info:
        vae_scale_factor(ComponentSource(MISSING_HUB_ID, subfolder="vae").to_dict())
    source_error(info, MISSING_HUB_ID, local=False)


def test_missing_pipeline_directory_raises_component_load_error(tmp_path, source_error):
    missing = tmp_path / "no-pipeline"
    with pytest.raises(ComponentLoadError, match="no such directory") as info:
        load_sd_components(missing, device="cpu", names=("vae",))
    source_error(info, missing, local=True)
    with pytest.raises(ComponentLoadError, match="VAE config") as info:
        vae_scale_factor(ComponentSource(str(missing), subfolder="vae").to_dict())
    source_error(info, missing, local=True)


def test_pipeline_directory_without_a_component_names_it(tiny_pipeline_dir, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(tiny_pipeline_dir, partial)
    shutil.rmtree(partial / "unet")
    with pytest.raises(ComponentLoadError, match=r"UNet2DConditionModel.*unet"):
        load_sd_components(partial, device="cpu")


FAMILY_CLASSES = {
    "sdxl": {
        "unet": "UNet2DConditionModel",
        "text_encoder": "CLIPTextModel",
        "text_encoder_2": "CLIPTextModelWithProjection",
        "scheduler": "DDPMScheduler",
    },
    "sd3": {
        "transformer": "SD3Transformer2DModel",
        "text_encoder": "CLIPTextModelWithProjection",
        "text_encoder_2": "CLIPTextModelWithProjection",
        "text_encoder_3": "T5EncoderModel",
        "tokenizer_3": "T5Tokenizer",
        "scheduler": "FlowMatchEulerDiscreteScheduler",
    },
    "flux": {
        "transformer": "FluxTransformer2DModel",
        "text_encoder": "CLIPTextModel",
        "text_encoder_2": "T5EncoderModel",
        "tokenizer_2": "T5Tokenizer",
        "scheduler": "FlowMatchEulerDiscreteScheduler",
    },
}


@pytest.mark.parametrize("family", list(FAMILY_CLASSES))
def test_every_family_loads_its_classes_through_the_one_loader(family, family_components):
    components = family_components(family)
    assert components.family == family
    for name, class_name in FAMILY_CLASSES[family].items():
        assert type(getattr(components, name)).__name__ == class_name, name
    assert components.vae.config.latent_channels == (4 if family == "sdxl" else 16)
    assert not any(p.requires_grad for p in components.denoiser.parameters())


def _pipeline(family, directory):
    from ldmdetect.generative.families import get_family

    pipe = get_family(family).pipeline_class().from_pretrained(directory)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("family", list(FAMILY_CLASSES))
def test_conditioning_matches_the_family_pipelines_prompt_encoding(
    family, family_components, tiny_family_dir
):
    components = family_components(family)
    prompts = ["a photo of a cat", ""]
    conditioning = components.condition(prompts)
    pipe = _pipeline(family, tiny_family_dir(family))
    with torch.no_grad():
        if family == "sdxl":
            hidden, _, pooled, _ = pipe.encode_prompt(
                prompts, device="cpu", do_classifier_free_guidance=False
            )
        elif family == "sd3":
            hidden, _, pooled, _ = pipe.encode_prompt(
                prompts, None, None, device="cpu", do_classifier_free_guidance=False
            )
        else:
            hidden, pooled, _ = pipe.encode_prompt(prompts, device="cpu")
    torch.testing.assert_close(conditioning.hidden, hidden)
    torch.testing.assert_close(conditioning.pooled, pooled)
    assert not torch.equal(conditioning.hidden[0], conditioning.hidden[1])


def test_flux_packing_and_position_ids_are_the_pipelines():
    from diffusers import FluxPipeline

    from ldmdetect.generative.components import latent_image_ids, pack_latents, unpack_latents

    latents = torch.randn(2, 16, 8, 6)
    packed = pack_latents(latents)
    torch.testing.assert_close(packed, FluxPipeline._pack_latents(latents, 2, 16, 8, 6))
    torch.testing.assert_close(unpack_latents(packed, 16, 8, 6), latents, rtol=0, atol=0)
    expected = FluxPipeline._prepare_latent_image_ids(2, 4, 3, "cpu", torch.float32)
    got = latent_image_ids(8, 6, device=torch.device("cpu"), dtype=torch.float32)
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="odd"):
        pack_latents(torch.randn(1, 16, 7, 8))


def test_sdxl_unet_gets_the_pooled_embedding_and_size_ids_its_pipeline_gives(
    family_components, tiny_family_dir
):
    components = family_components("sdxl")
    pipe = _pipeline("sdxl", tiny_family_dir("sdxl"))
    conditioning = components.condition(["a cat", "a dog"])
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    timesteps = torch.tensor([500, 500])
    ours = components.predict(latents, timesteps, conditioning)
    time_ids = pipe._get_add_time_ids(
        (64, 64), (0, 0), (64, 64), dtype=torch.float32, text_encoder_projection_dim=32
    ).repeat(2, 1)
    with torch.no_grad():
        expected = pipe.unet(
            latents,
            timesteps,
            encoder_hidden_states=conditioning.hidden,
            added_cond_kwargs={"text_embeds": conditioning.pooled, "time_ids": time_ids},
        ).sample
        other_size = pipe.unet(
            latents,
            timesteps,
            encoder_hidden_states=conditioning.hidden,
            added_cond_kwargs={"text_embeds": conditioning.pooled, "time_ids": time_ids * 2},
        ).sample
    torch.testing.assert_close(ours, expected)
    assert not torch.allclose(ours, other_size)  # the size ids do condition the UNet


def test_sd3_without_t5_pads_with_zeros_as_its_pipeline_does(tiny_family_dir, tmp_path):
    import json

    from diffusers import StableDiffusion3Pipeline

    no_t5 = tmp_path / "sd3-no-t5"
    shutil.copytree(tiny_family_dir("sd3"), no_t5)
    index = json.loads((no_t5 / "model_index.json").read_text())
    index["text_encoder_3"] = index["tokenizer_3"] = [None, None]
    (no_t5 / "model_index.json").write_text(json.dumps(index))
    components = load_sd_components(no_t5, device="cpu")
    assert components.text_encoder_3 is None and "text_encoder_3" not in components.sources
    conditioning = components.condition(["a cat"])
    pipe = StableDiffusion3Pipeline.from_pretrained(no_t5, text_encoder_3=None, tokenizer_3=None)
    with torch.no_grad():
        hidden, _, pooled, _ = pipe.encode_prompt(
            ["a cat"], None, None, device="cpu", do_classifier_free_guidance=False
        )
    torch.testing.assert_close(conditioning.hidden, hidden)
    torch.testing.assert_close(conditioning.pooled, pooled)
    assert not conditioning.hidden[:, 77:].any()  # T5's place holds zeros
