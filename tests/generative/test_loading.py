import time
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from ldmdetect.generative.loading import (
    ComponentLoadError,
    ComponentSource,
    default_dtype,
    load_component,
    resolve_device,
)

MISSING_HUB_ID = "ldmdetect-tests/no-such-model"


def test_component_source_round_trips_through_a_dict():
    source = ComponentSource(Path("/models/sd"), subfolder="vae", revision="main")
    assert source.id == "/models/sd"
    assert source.to_dict() == {"id": "/models/sd", "subfolder": "vae", "revision": "main"}
    assert ComponentSource.from_dict(source.to_dict()) == source
    assert ComponentSource.from_dict({"id": "owner/name"}) == ComponentSource("owner/name")
    with pytest.raises(ValueError, match="subfodler"):
        ComponentSource.from_dict({"id": "owner/name", "subfodler": "vae"})


def test_component_source_tells_paths_from_hub_ids(tmp_path):
    assert not ComponentSource("stabilityai/stable-diffusion-2-1").is_local
    assert not ComponentSource("gpt2").is_local
    assert ComponentSource(str(tmp_path)).is_local
    assert ComponentSource("./models/sd").is_local
    assert ComponentSource("/does/not/exist").is_local
    assert ComponentSource("C:/models/sd").is_local


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_picks_cuda_where_it_is_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")  # an explicit choice is kept
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_resolve_device_rejects_cuda_without_cuda(device):
    with pytest.raises(ValueError, match="CUDA is not available; use device='cpu' or 'auto'"):
        resolve_device(device)


def test_default_dtype_on_cpu_is_float32():
    assert default_dtype(torch.device("cpu")) == torch.float32


@pytest.mark.parametrize(
    ("cls", "subfolder"),
    [(UNet2DConditionModel, "unet"), (CLIPTextModel, "text_encoder"), (AutoencoderKL, "vae")],
)
def test_models_load_frozen_on_device_in_the_requested_dtype(tiny_pipeline_dir, cls, subfolder):
    source = ComponentSource(str(tiny_pipeline_dir), subfolder=subfolder)
    model = load_component(cls, source, device="cpu")
    assert isinstance(model, cls)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.device for p in model.parameters()} == {torch.device("cpu")}
    # diffusers takes ``torch_dtype`` and transformers ``dtype``: both must be honoured.
    half = load_component(cls, source, device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}


def test_tokenizer_and_scheduler_load_through_the_same_call(tiny_pipeline_dir):
    root = str(tiny_pipeline_dir)
    tokenizer = load_component(CLIPTokenizer, ComponentSource(root, subfolder="tokenizer"))
    assert len(tokenizer) == 514
    scheduler = load_component(DDIMScheduler, ComponentSource(root, subfolder="scheduler"))
    assert scheduler.config.beta_schedule == "scaled_linear"


@pytest.mark.parametrize(
    ("cls", "subfolder"),
    [(AutoencoderKL, "vae"), (CLIPTextModel, None), (CLIPTokenizer, "tokenizer")],
)
def test_unreachable_hub_id_raises_a_clear_error_fast(cls, subfolder, source_error):
    start = time.monotonic()
    with pytest.raises(ComponentLoadError) as info:
        load_component(cls, ComponentSource(MISSING_HUB_ID, subfolder=subfolder))
    assert time.monotonic() - start < 5
    message = source_error(info, MISSING_HUB_ID, local=False)
    assert cls.__name__ in message and "local directory" in message
    if subfolder:
        assert f"subfolder '{subfolder}'" in message


def test_missing_local_directory_is_not_sent_to_the_hub(tmp_path, source_error):
    missing = tmp_path / "nope"
    with pytest.raises(ComponentLoadError, match="no such directory") as info:
        load_component(AutoencoderKL, ComponentSource(str(missing)))
    source_error(info, missing, local=True)


def test_wrong_subfolder_or_missing_config_names_the_problem(tiny_pipeline_dir):
    root = str(tiny_pipeline_dir)
    with pytest.raises(ComponentLoadError, match="no subfolder 'vea'"):
        load_component(AutoencoderKL, ComponentSource(root, subfolder="vea"))
    # The pipeline root holds model_index.json, not a model config.
    with pytest.raises(ComponentLoadError, match=r"local path .*config\.json"):
        load_component(UNet2DConditionModel, ComponentSource(root))
    with pytest.raises(ComponentLoadError, match="config is for UNet2DConditionModel, not Auto"):
        load_component(AutoencoderKL, ComponentSource(root, subfolder="unet"))


def test_tokenizer_without_files_raises_instead_of_loading_empty(tiny_pipeline_dir):
    with pytest.raises(ComponentLoadError, match="no tokenizer files"):
        load_component(CLIPTokenizer, ComponentSource(str(tiny_pipeline_dir), subfolder="vae"))
