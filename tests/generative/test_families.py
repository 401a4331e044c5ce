import json
import shutil

import pytest

from ldmdetect.generative.components import pipeline_override, pipeline_sources
from ldmdetect.generative.families import (
    FAMILIES,
    UnsupportedFamily,
    family_of_sources,
    pipeline_family,
)
from ldmdetect.generative.loading import ComponentLoadError

ROLES = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")
PIPELINES = {
    "sd": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
}
SUBFOLDERS = {
    "sd": ["vae", "unet", "text_encoder", "tokenizer", "scheduler"],
    "sdxl": [
        "vae",
        "unet",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
        "scheduler",
    ],
    "sd3": [
        "vae",
        "transformer",
        "text_encoder",
        "text_encoder_2",
        "text_encoder_3",
        "tokenizer",
        "tokenizer_2",
        "tokenizer_3",
        "scheduler",
    ],
    "flux": [
        "vae",
        "transformer",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
        "scheduler",
    ],
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_is_read_from_model_index_and_roles_become_its_subfolders(family, tiny_family_dir):
    directory = tiny_family_dir(family)
    index = json.loads((directory / "model_index.json").read_text())
    assert index["_class_name"] == PIPELINES[family]
    assert pipeline_family(directory).name == family
    sources = pipeline_sources(directory, ROLES)
    assert list(sources) == SUBFOLDERS[family]
    assert all(s["id"] == str(directory) and s["subfolder"] == n for n, s in sources.items())
    # Reloading a detector's recorded sources finds the family from the denoiser's config.
    assert family_of_sources(sources).name == family


def test_an_autoencoder_alone_needs_no_family(tmp_path):
    # Any family's vae is an AutoencoderKL, so the pipeline is not read at all.
    sources = pipeline_sources(tmp_path / "anything", ["vae"])
    assert list(sources) == ["vae"]
    assert family_of_sources(sources).name == "sd"


def test_unknown_pipeline_class_is_refused_in_one_line_naming_it(tiny_pipeline_dir, tmp_path):
    other = tmp_path / "kandinsky"
    shutil.copytree(tiny_pipeline_dir, other)
    index = json.loads((other / "model_index.json").read_text())
    index["_class_name"] = "KandinskyV22Pipeline"
    (other / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UnsupportedFamily) as info:
        pipeline_sources(other, ROLES)
    message = str(info.value)
    assert "KandinskyV22Pipeline" in message and "\n" not in message
    assert "FluxPipeline" in message  # and what is supported


def test_sd3_without_t5_leaves_the_optional_encoder_out(tiny_family_dir, tmp_path):
    no_t5 = tmp_path / "sd3-no-t5"
    shutil.copytree(tiny_family_dir("sd3"), no_t5)
    index = json.loads((no_t5 / "model_index.json").read_text())
    index["text_encoder_3"] = index["tokenizer_3"] = [None, None]
    (no_t5 / "model_index.json").write_text(json.dumps(index))
    assert "text_encoder_3" not in pipeline_sources(no_t5, ROLES)
    assert "tokenizer_3" not in pipeline_sources(no_t5, ROLES)


def test_a_directory_without_model_index_is_a_clear_error(tmp_path, tiny_pipeline_dir):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_pipeline_dir / "unet", bare / "unet")
    with pytest.raises(ComponentLoadError, match=r"model_index\.json"):
        pipeline_sources(bare, ROLES)


def test_a_pipeline_override_names_the_methods_components_there_or_nothing(tiny_family_dir):
    sdxl = tiny_family_dir("sdxl")
    assert pipeline_override(sdxl, ROLES) == pipeline_sources(sdxl, ROLES)
    assert set(pipeline_override(sdxl, ROLES)) == set(SUBFOLDERS["sdxl"])
    # No pipeline, or a method that drives no generator: the recorded sources stand.
    assert pipeline_override(None, ROLES) is None
    assert pipeline_override(sdxl, ()) is None
