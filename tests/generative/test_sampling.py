import csv

import numpy as np
import pytest

from ldmdetect.generative.loading import ComponentLoadError
from ldmdetect.generative.sampling import generate_images, load_pipeline, write_generated


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline_dir):
    return load_pipeline(tiny_pipeline_dir, device="cpu")


def test_an_image_depends_on_its_seed_not_its_batch(pipeline):
    prompts = ["a photo of a cat", "a photo of a dog", "a photo of a cat"]
    together = generate_images(pipeline, prompts, [1, 2, 3], steps=2, batch_size=3)
    alone = generate_images(pipeline, prompts[1:2], [2], steps=2, batch_size=1)
    assert [im.size for im in together] == [(64, 64)] * 3
    np.testing.assert_array_equal(np.asarray(together[1]), np.asarray(alone[0]))
    assert not np.array_equal(np.asarray(together[0]), np.asarray(together[2]))


def test_write_generated_records_prompts_and_resumes(pipeline, tmp_path):
    paths = write_generated(pipeline, ["a", "b"], [5, 6], tmp_path, steps=2)
    assert [p.name for p in paths] == ["00000_seed5.png", "00001_seed6.png"]
    rows = list(csv.DictReader((tmp_path / "prompts.csv").open()))
    assert rows == [
        {"path": "00000_seed5.png", "prompt": "a", "seed": "5"},
        {"path": "00001_seed6.png", "prompt": "b", "seed": "6"},
    ]
    stamp = paths[0].stat().st_mtime_ns
    write_generated(pipeline, ["a", "b"], [5, 6], tmp_path, steps=2)
    assert paths[0].stat().st_mtime_ns == stamp


def test_mismatched_lengths_and_missing_pipelines_are_errors(pipeline, tmp_path):
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        generate_images(pipeline, ["a", "b"], [1])
    with pytest.raises(ComponentLoadError):
        load_pipeline(tmp_path / "nothing-here", device="cpu")


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_every_family_generates_through_its_own_pipeline_class(family, tiny_family_dir, tmp_path):
    from ldmdetect.generative.families import get_family

    pipe = load_pipeline(tiny_family_dir(family), device="cpu")
    assert type(pipe) is get_family(family).pipeline_class()
    paths = write_generated(pipe, ["a cat", "a dog"], [0, 1], tmp_path, size=64, steps=2)
    assert [p.is_file() for p in paths] == [True, True]
